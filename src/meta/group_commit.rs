//! Group commit: merges that arrive while a commit is being made wait, and
//! the next commit takes them all in one transaction, one disk sync for
//! the lot. Each caller still returns only once its own changes are
//! durable, with its own outcome, as if it had committed alone: the batch
//! applies them in arrival order.
//!
//! No thread of its own: the first caller to find no commit running leads
//! (runs batches until its own job is done), the others wait, each on a
//! condvar of its own. A batch wakes only the callers whose results it
//! holds, and the lead passes to the oldest queued job's caller: waking
//! every waiter at every commit cost the put path a thread switch per
//! waiter per commit, for nothing.
//! Callers are blocking jobs (`Env::blocking`): in production each waits on
//! a thread of the blocking pool; in the simulation jobs run inline, one at
//! a time, so every caller finds no commit running and leads at once.
//! Written here because it is a few dozen lines over `std::sync`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Condvar, Mutex};

/// Jobs one commit takes at most.
pub const BATCH_MAX: usize = 256;

/// Weight (the caller's measure of a job's size: bytes of records) one
/// commit takes at most, past its first job: bounds a transaction's size,
/// since an anti-entropy merge may carry megabytes of records.
pub const BATCH_WEIGHT_MAX: usize = 8 << 20;

pub struct GroupCommit<J, R> {
    state: Mutex<State<J, R>>,
}

struct State<J, R> {
    next_ticket: u64,
    /// Ticket, weight, job.
    queue: Vec<(u64, usize, J)>,
    leading: bool,
    results: BTreeMap<u64, R>,
    /// Tickets of a batch whose leader panicked: their callers panic too
    /// rather than wait for good.
    abandoned: BTreeSet<u64>,
    /// The condvar each waiting caller sleeps on, by ticket (at most one
    /// per caller in `submit`).
    waiting: BTreeMap<u64, Arc<Condvar>>,
    /// Batches run and jobs done, for the metrics.
    commits: u64,
    jobs: u64,
}

impl<J, R> Default for GroupCommit<J, R> {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                next_ticket: 0,
                queue: Vec::new(),
                leading: false,
                results: BTreeMap::new(),
                abandoned: BTreeSet::new(),
                waiting: BTreeMap::new(),
                commits: 0,
                jobs: 0,
            }),
        }
    }
}

impl<J, R> std::fmt::Debug for GroupCommit<J, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GroupCommit")
    }
}

/// Leads one batch: if it unwinds, its jobs are marked abandoned and the
/// lead is given up, so no caller waits for good.
struct Lead<'a, J, R> {
    group: &'a GroupCommit<J, R>,
    tickets: Vec<u64>,
    /// The leader's own tickets: its own panic reaches it anyway.
    own: std::ops::Range<u64>,
    done: bool,
}

impl<J, R> Drop for Lead<'_, J, R> {
    fn drop(&mut self) {
        let mut state = self.group.state.lock().unwrap_or_else(|p| p.into_inner());
        if !self.done {
            let own = self.own.clone();
            for ticket in self.tickets.iter().copied().filter(|t| !own.contains(t)) {
                state.abandoned.insert(ticket);
                state.wake(ticket);
            }
            // The leader's own jobs, when a full batch ahead left them
            // queued: its caller is failing now, so nobody must apply them
            // later.
            state.queue.retain(|(ticket, _, _)| !own.contains(ticket));
            // Nor wait for them (registered if it waited before it led),
            // nor keep what earlier batches returned for them.
            for ticket in own {
                state.waiting.remove(&ticket);
                state.results.remove(&ticket);
            }
        }
        state.leading = false;
        // Jobs still queued need a leader: the oldest one's caller. (If
        // that is this leader's own job, left out of a full batch, its
        // caller is not waiting: it loops and leads again.)
        if let Some(&(next, _, _)) = state.queue.first() {
            state.wake(next);
        }
    }
}

impl<J, R> State<J, R> {
    /// Wake the caller of `ticket`, if it is waiting.
    fn wake(&self, ticket: u64) {
        if let Some(condvar) = self.waiting.get(&ticket) {
            condvar.notify_one();
        }
    }
}

impl<J, R> GroupCommit<J, R> {
    /// Run `job` (of `weight`) in a batch: `run` gets the batch's jobs in
    /// arrival order and returns one result per job, in the same order,
    /// once they are durable. Returns this job's result.
    pub fn submit(&self, job: J, weight: usize, run: impl Fn(Vec<J>) -> Vec<R>) -> R {
        self.submit_all(vec![(job, weight)], run)
            .pop()
            .expect("one result per job")
    }

    /// [`GroupCommit::submit`] of several jobs (each with its weight) at
    /// once, queued together in this order: one wait for all of them, and
    /// their results in the same order.
    pub fn submit_all(&self, jobs: Vec<(J, usize)>, run: impl Fn(Vec<J>) -> Vec<R>) -> Vec<R> {
        let mut state = self.state.lock().expect("group commit poisoned");
        let first = state.next_ticket;
        for (job, weight) in jobs {
            let ticket = state.next_ticket;
            state.next_ticket += 1;
            state.queue.push((ticket, weight, job));
        }
        let own = first..state.next_ticket;
        let mut condvar: Option<Arc<Condvar>> = None;
        loop {
            if own
                .clone()
                .all(|ticket| state.results.contains_key(&ticket))
            {
                return own
                    .map(|ticket| {
                        state.waiting.remove(&ticket);
                        state.results.remove(&ticket).expect("checked above")
                    })
                    .collect();
            }
            if own.clone().any(|ticket| state.abandoned.contains(&ticket)) {
                // Jobs of this caller a later batch would run: nobody must
                // apply them now.
                state.queue.retain(|(ticket, _, _)| !own.contains(ticket));
                for ticket in own.clone() {
                    state.abandoned.remove(&ticket);
                    state.waiting.remove(&ticket);
                    state.results.remove(&ticket);
                }
                // Not while holding the lock: that would poison it for
                // every later caller.
                drop(state);
                panic!("the group commit that held this merge panicked");
            }
            if state.leading {
                let condvar = condvar.get_or_insert_with(|| {
                    let condvar = Arc::new(Condvar::new());
                    for ticket in own.clone() {
                        state.waiting.insert(ticket, condvar.clone());
                    }
                    condvar
                });
                state = condvar.wait(state).expect("group commit poisoned");
                continue;
            }
            state.leading = true;
            let mut take = 0;
            let mut weight = 0usize;
            for (_, job_weight, _) in &state.queue {
                if take == BATCH_MAX || (take > 0 && weight + job_weight > BATCH_WEIGHT_MAX) {
                    break;
                }
                take += 1;
                weight += job_weight;
            }
            let batch: Vec<(u64, usize, J)> = state.queue.drain(..take).collect();
            drop(state);
            let (tickets, jobs): (Vec<u64>, Vec<J>) =
                batch.into_iter().map(|(t, _, j)| (t, j)).unzip();
            let mut lead = Lead {
                group: self,
                tickets,
                own: own.clone(),
                done: false,
            };
            let results = run(jobs);
            assert_eq!(
                results.len(),
                lead.tickets.len(),
                "a batch returns one result per job"
            );
            state = self.state.lock().expect("group commit poisoned");
            state.commits += 1;
            state.jobs += results.len() as u64;
            for (ticket, result) in lead.tickets.iter().zip(results) {
                state.results.insert(*ticket, result);
                state.wake(*ticket);
            }
            lead.done = true;
            drop(state);
            drop(lead);
            state = self.state.lock().expect("group commit poisoned");
        }
    }

    /// Batches run and jobs they held since start.
    pub fn counts(&self) -> (u64, u64) {
        let state = self.state.lock().expect("group commit poisoned");
        (state.commits, state.jobs)
    }
}

/// What receives a queued job's result ([`Queued::push`]).
pub type Done<R> = Box<dyn FnOnce(R) + Send>;

/// Jobs of async callers, waiting for a blocking run to take them: a
/// caller queues its job and is woken once, when its result is in, instead
/// of taking a thread of the blocking pool that then waits on the group
/// commit. On a 3-node cluster, those handoffs and waits were about 20 of
/// the 53 thread switches a small put cost. One run at a time drains the
/// queue, a batch (up to [`BATCH_MAX`] jobs) at a time, and ends when it
/// finds the queue empty; the caller that finds no run going starts one.
///
/// The queue is bounded by its callers: each job is some caller's, and the
/// callers are bounded (connection slots, disk write permits).
pub struct Queued<J, R> {
    state: Mutex<QueuedState<J, R>>,
}

struct QueuedState<J, R> {
    jobs: std::collections::VecDeque<(J, Done<R>)>,
    /// A run is going on (or was asked for): it takes what is queued.
    running: bool,
}

impl<J, R> Default for Queued<J, R> {
    fn default() -> Self {
        Self {
            state: Mutex::new(QueuedState {
                jobs: std::collections::VecDeque::new(),
                running: false,
            }),
        }
    }
}

impl<J, R> std::fmt::Debug for Queued<J, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Queued")
    }
}

impl<J, R> Queued<J, R> {
    /// Queue `job`; `done` gets its result on the thread of the run that
    /// takes it. Returns whether the caller must start [`Queued::run`] on a
    /// blocking thread (no run is going on).
    pub fn push(&self, job: J, done: Done<R>) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.jobs.push_back((job, done));
        !std::mem::replace(&mut state.running, true)
    }

    /// Take the queued jobs a batch at a time, through `process` (one
    /// result per job, in order), until none is left. Blocking. A panic
    /// in `process` (a bug) fails its batch's callers (their `done` is
    /// dropped) and lets the next push start a run again.
    pub fn run(&self, process: impl Fn(Vec<J>) -> Vec<R>) {
        struct Running<'a, J, R>(&'a Mutex<QueuedState<J, R>>);
        impl<J, R> Drop for Running<'_, J, R> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    self.0.lock().unwrap_or_else(|p| p.into_inner()).running = false;
                }
            }
        }
        let _running = Running(&self.state);
        loop {
            let (jobs, dones): (Vec<J>, Vec<Done<R>>) = {
                let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                if state.jobs.is_empty() {
                    state.running = false;
                    return;
                }
                let take = state.jobs.len().min(BATCH_MAX);
                state.jobs.drain(..take).unzip()
            };
            let results = process(jobs);
            assert_eq!(results.len(), dones.len(), "one result per job");
            for (done, result) in dones.into_iter().zip(results) {
                done(result);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn alone_a_job_is_its_own_batch() {
        let group = GroupCommit::default();
        for i in 0..3u64 {
            assert_eq!(
                group.submit(i, 1, |jobs| jobs.iter().map(|j| j * 10).collect()),
                i * 10
            );
        }
        assert_eq!(group.counts(), (3, 3));
    }

    /// Jobs arriving while a batch runs are committed together, each
    /// caller gets its own result, and none returns before its batch ran.
    #[test]
    #[allow(
        clippy::disallowed_methods,
        reason = "real threads make real contention"
    )]
    fn jobs_arriving_during_a_commit_share_the_next_one() {
        let group = Arc::new(GroupCommit::default());
        let committed = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..16u64)
            .map(|i| {
                let group = group.clone();
                let committed = committed.clone();
                std::thread::spawn(move || {
                    let result = group.submit(i, 1, |jobs| {
                        // A slow "disk sync" lets others queue up.
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        committed.fetch_add(jobs.len() as u64, Ordering::SeqCst);
                        jobs.iter().map(|j| j + 100).collect()
                    });
                    // Durable before it returns: its batch is counted.
                    assert!(committed.load(Ordering::SeqCst) > 0);
                    assert_eq!(result, i + 100);
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let (commits, jobs) = group.counts();
        assert_eq!(jobs, 16);
        assert!(commits < 16, "{commits} commits for 16 jobs: no grouping");
    }

    /// Several jobs of one caller, among other callers' jobs and across
    /// batches cut short by `BATCH_MAX`: each result comes back to its
    /// job, in order, and every job ran once.
    #[test]
    #[allow(
        clippy::disallowed_methods,
        reason = "real threads make real contention"
    )]
    fn a_caller_submits_many_jobs_at_once() {
        let group = Arc::new(GroupCommit::default());
        let ran = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..4u64)
            .map(|caller| {
                let group = group.clone();
                let ran = ran.clone();
                std::thread::spawn(move || {
                    let jobs: Vec<(u64, usize)> =
                        (0..300u64).map(|j| (caller * 1000 + j, 1)).collect();
                    let results = group.submit_all(jobs, |batch| {
                        assert!(batch.len() <= BATCH_MAX);
                        std::thread::sleep(std::time::Duration::from_millis(2));
                        ran.fetch_add(batch.len() as u64, Ordering::SeqCst);
                        batch.iter().map(|j| j * 2).collect()
                    });
                    let expected: Vec<u64> = (0..300u64).map(|j| (caller * 1000 + j) * 2).collect();
                    assert_eq!(results, expected);
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(ran.load(Ordering::SeqCst), 1200);
        assert!(
            group
                .submit_all(Vec::new(), |batch: Vec<u64>| batch)
                .is_empty()
        );
    }

    /// Jobs queued while a run goes on are taken by it; every job's
    /// result reaches its own `done`; a run ends with the queue empty and
    /// the next push asks for a new one; a panicking batch drops its
    /// callers' `done` and does not keep the queue from running again.
    #[test]
    fn queued_jobs_are_run_in_batches_by_one_run() {
        use std::sync::Mutex as StdMutex;
        let queue = Queued::<u64, u64>::default();
        let got = Arc::new(StdMutex::new(Vec::new()));
        let done = |got: &Arc<StdMutex<Vec<u64>>>| -> Done<u64> {
            let got = got.clone();
            Box::new(move |result| got.lock().unwrap().push(result))
        };
        assert!(
            queue.push(1, done(&got)),
            "no run going: the first push starts one"
        );
        for job in 2..=300 {
            assert!(!queue.push(job, done(&got)), "a run was asked for already");
        }
        let batches = AtomicU64::new(0);
        queue.run(|jobs| {
            assert!(jobs.len() <= BATCH_MAX);
            batches.fetch_add(1, Ordering::SeqCst);
            jobs.iter().map(|j| j * 10).collect()
        });
        assert_eq!(batches.load(Ordering::SeqCst), 2);
        assert_eq!(
            *got.lock().unwrap(),
            (1..=300).map(|j| j * 10).collect::<Vec<_>>()
        );
        assert!(
            queue.push(7, done(&got)),
            "the run ended: the next push starts one"
        );
        let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            queue.run(|_| panic!("disk on fire"))
        }));
        assert!(failed.is_err());
        assert!(
            queue.push(8, done(&got)),
            "a panicked run must not block the queue"
        );
        queue.run(|jobs| jobs);
        assert_eq!(got.lock().unwrap().last(), Some(&8));
    }

    #[test]
    fn a_panicking_batch_fails_its_callers_and_frees_the_lead() {
        let group = Arc::new(GroupCommit::<u64, u64>::default());
        let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            group.submit(1, 1, |_| panic!("disk on fire"))
        }));
        assert!(failed.is_err());
        assert_eq!(group.submit(2, 1, |jobs| jobs), 2);
        // Jobs of a caller whose batch panicked, more than one batch of
        // them: none is left queued for the next caller's batch to run.
        let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            group.submit_all((0..BATCH_MAX as u64 + 5).map(|j| (j, 1)).collect(), |_| {
                panic!("disk on fire")
            })
        }));
        assert!(failed.is_err());
        assert_eq!(
            group.submit(3, 1, |jobs| {
                assert_eq!(jobs, vec![3]);
                jobs
            }),
            3
        );
    }
}
