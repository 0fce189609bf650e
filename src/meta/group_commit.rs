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
    /// Tickets whose caller left (its batch panicked) while another leader
    /// ran them: their results are dropped, not kept for nobody.
    forsaken: BTreeSet<u64>,
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
                forsaken: BTreeSet::new(),
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
                // A ticket whose caller already left has nobody to tell.
                if !state.forsaken.remove(&ticket) {
                    state.abandoned.insert(ticket);
                    state.wake(ticket);
                }
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
                let mut dequeued = BTreeSet::new();
                state.queue.retain(|(ticket, _, _)| {
                    let mine = own.contains(ticket);
                    if mine {
                        dequeued.insert(*ticket);
                    }
                    !mine
                });
                for ticket in own.clone() {
                    let abandoned = state.abandoned.remove(&ticket);
                    let resolved = state.results.remove(&ticket).is_some();
                    state.waiting.remove(&ticket);
                    if !abandoned && !resolved && !dequeued.contains(&ticket) {
                        // Neither queued any more nor done: in another
                        // leader's batch now.
                        state.forsaken.insert(ticket);
                    }
                }
                // The failed leader woke this caller as the oldest queued
                // one: the lead passes on to the next queued job's caller.
                if !state.leading
                    && let Some(&(next, _, _)) = state.queue.first()
                {
                    state.wake(next);
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
                if state.forsaken.remove(ticket) {
                    continue;
                }
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
/// queue, a batch (up to [`BATCH_MAX`] jobs and, past the first,
/// [`BATCH_WEIGHT_MAX`]) at a time, and ends when it finds the queue empty;
/// the caller that finds no run going starts one. The weight limit keeps
/// a put's small merge from waiting behind a whole queue of bulk
/// anti-entropy merges.
///
/// A queued job runs to its end even if its caller is gone: callers bound
/// the queue by holding a slot (a semaphore permit) in each job's `done`
/// until it runs (the store's disk write permits, the cluster's merge
/// slots).
pub struct Queued<J, R> {
    state: Mutex<QueuedState<J, R>>,
}

struct QueuedState<J, R> {
    /// Job, weight, and where its result goes.
    jobs: std::collections::VecDeque<(J, usize, Done<R>)>,
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
    /// Queue `job` (of `weight`, as for [`GroupCommit::submit`]); `done`
    /// gets its result on the thread of the run that takes it. Returns
    /// whether the caller must start [`Queued::run`] on a blocking thread
    /// (no run is going on).
    pub fn push(&self, job: J, weight: usize, done: Done<R>) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.jobs.push_back((job, weight, done));
        !std::mem::replace(&mut state.running, true)
    }

    /// Take the queued jobs a batch at a time, through `process` (one
    /// result per job (given with its weight), in order), until none is
    /// left. Blocking. A panic in `process` (a bug) fails every queued
    /// caller: their `done` is dropped (so permits they hold are freed, and
    /// they learn it at once), and the next push starts a run again.
    pub fn run(&self, process: impl Fn(Vec<(J, usize)>) -> Vec<R>) {
        struct Running<'a, J, R>(&'a Mutex<QueuedState<J, R>>);
        impl<J, R> Drop for Running<'_, J, R> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    let failed: Vec<_> = {
                        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
                        state.running = false;
                        state.jobs.drain(..).collect()
                    };
                    drop(failed);
                }
            }
        }
        let _running = Running(&self.state);
        loop {
            let (jobs, dones): (Vec<(J, usize)>, Vec<Done<R>>) = {
                let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                if state.jobs.is_empty() {
                    state.running = false;
                    return;
                }
                let mut take = 0;
                let mut weight = 0usize;
                for (_, job_weight, _) in &state.jobs {
                    if take == BATCH_MAX || (take > 0 && weight + job_weight > BATCH_WEIGHT_MAX) {
                        break;
                    }
                    take += 1;
                    weight += job_weight;
                }
                state
                    .jobs
                    .drain(..take)
                    .map(|(job, weight, done)| ((job, weight), done))
                    .unzip()
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
            queue.push(1, 1, done(&got)),
            "no run going: the first push starts one"
        );
        for job in 2..=300 {
            assert!(
                !queue.push(job, 1, done(&got)),
                "a run was asked for already"
            );
        }
        // Two heavy jobs: each past the first of a batch starts a new one.
        for job in [301, 302] {
            assert!(!queue.push(job, BATCH_WEIGHT_MAX, done(&got)));
        }
        let batches = StdMutex::new(Vec::new());
        queue.run(|jobs| {
            batches.lock().unwrap().push(jobs.len());
            jobs.iter().map(|(j, _)| j * 10).collect()
        });
        assert_eq!(*batches.lock().unwrap(), vec![256, 44, 1, 1]);
        assert_eq!(
            *got.lock().unwrap(),
            (1..=302).map(|j| j * 10).collect::<Vec<_>>()
        );
        assert!(
            queue.push(7, 1, done(&got)),
            "the run ended: the next push starts one"
        );
        // A panicking batch fails every queued caller at once (its `done`
        // dropped: here, a sender whose receiver then sees it closed).
        let (sender, receiver) = std::sync::mpsc::channel::<u64>();
        assert!(!queue.push(9, 1, Box::new(move |result| sender.send(result).unwrap())));
        let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            queue.run(|_| panic!("disk on fire"))
        }));
        assert!(failed.is_err());
        assert!(receiver.recv().is_err(), "a queued caller was left waiting");
        assert!(
            queue.push(8, 1, done(&got)),
            "a panicked run must not block the queue"
        );
        queue.run(|jobs| jobs.into_iter().map(|(j, _)| j).collect());
        assert_eq!(got.lock().unwrap().last(), Some(&8));
    }

    /// A batch that panics holding part of one caller's jobs: that caller
    /// fails, and the callers queued behind it still get a leader (they
    /// waited for good before: the lead was passed to the failed caller,
    /// which left without passing it on).
    #[test]
    #[allow(
        clippy::disallowed_methods,
        reason = "real threads make real contention"
    )]
    fn callers_behind_a_failed_caller_still_get_a_leader() {
        let group = Arc::new(GroupCommit::<u64, u64>::default());
        let queued = |group: &GroupCommit<u64, u64>| group.state.lock().unwrap().queue.len();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let released = std::sync::Mutex::new(released);
        let spawn = |jobs: Vec<u64>, panics: bool| {
            let group = group.clone();
            std::thread::spawn(move || {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    group.submit_all(jobs.into_iter().map(|j| (j, 1)).collect(), |batch| {
                        if panics {
                            panic!("disk on fire");
                        }
                        batch
                    })
                }))
                .is_ok()
            })
        };
        // The first caller leads and holds its batch until the others queue.
        let group_for_leader = group.clone();
        let leader = std::thread::spawn(move || {
            group_for_leader.submit(0, 1, |batch| {
                released.lock().unwrap().recv().unwrap();
                batch
            })
        });
        while !group.state.lock().unwrap().leading {
            std::thread::yield_now();
        }
        let failing = spawn(vec![1], true);
        while queued(&group) < 1 {
            std::thread::yield_now();
        }
        let split = spawn((100..100 + BATCH_MAX as u64 + 1).collect(), false);
        while queued(&group) < 2 + BATCH_MAX {
            std::thread::yield_now();
        }
        let behind = spawn(vec![7], false);
        while queued(&group) < 3 + BATCH_MAX {
            std::thread::yield_now();
        }
        release.send(()).unwrap();
        assert_eq!(leader.join().unwrap(), 0);
        assert!(!failing.join().unwrap(), "its batch panicked");
        assert!(
            !split.join().unwrap(),
            "part of its jobs were in the panicked batch"
        );
        // Bounded: a hang fails the test instead of stalling it.
        let deadline = std::time::Duration::from_secs(10);
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || sender.send(behind.join().unwrap()));
        assert_eq!(
            receiver.recv_timeout(deadline),
            Ok(true),
            "the caller queued behind a failed one never got its result"
        );
        let state = group.state.lock().unwrap();
        assert!(state.results.is_empty(), "results kept for nobody");
        assert!(
            state.forsaken.is_empty(),
            "tickets forsaken that no batch holds"
        );
        assert!(state.abandoned.is_empty() && state.waiting.is_empty());
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
