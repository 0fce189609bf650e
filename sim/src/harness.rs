//! Seeds, reproduction and traces.
//!
//! `SIM_SEED=n` runs one seed; otherwise `SIM_SEEDS=N` seeds (default per
//! scenario) starting at `SIM_SEED_BASE` (default 0). A failing seed prints
//! the scenario, the seed, the derived config and the line that replays it.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, UNIX_EPOCH};

use sha2::{Digest, Sha256};

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    match text.trim().parse() {
        Ok(value) => Some(value),
        Err(_) => panic!("{name}={text:?} is not a number"),
    }
}

/// The seeds this run covers.
pub fn seeds(default_count: u64) -> Vec<u64> {
    init_logging();
    if let Some(seed) = env_u64("SIM_SEED") {
        return vec![seed];
    }
    let base = env_u64("SIM_SEED_BASE").unwrap_or(0);
    let count = env_u64("SIM_SEEDS").unwrap_or(default_count);
    (base..base + count).collect()
}

/// The turmoil settings every scenario shares: the seed drives turmoil's
/// rng (and through it the hosts' order and every message's latency), the
/// clock starts at a fixed date, and messages take 1 ms to `max_latency`.
pub fn sim_builder(seed: u64, max_latency: Duration) -> turmoil::Builder {
    let mut builder = turmoil::Builder::new();
    builder
        .rng_seed(seed)
        .epoch(UNIX_EPOCH + Duration::from_secs(1_790_000_000))
        .enable_random_order()
        .simulation_duration(Duration::from_secs(24 * 3600))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(max_latency);
    builder
}

/// Everything observable in a run, in order: two runs of one seed must
/// record the same events (the determinism check), and when they do not,
/// the first difference says where the schedules parted.
#[derive(Default)]
pub struct Trace {
    events: Vec<String>,
}

impl Trace {
    pub fn record(&mut self, event: &str) {
        self.events.push(event.to_owned());
    }

    /// Append another trace's events (prefixed with `label`).
    pub fn append(&mut self, label: &str, other: Trace) {
        self.events
            .extend(other.events.into_iter().map(|e| format!("{label}: {e}")));
    }

    pub fn finish(self) -> RunTrace {
        let mut hasher = Sha256::new();
        for event in &self.events {
            hasher.update(event.as_bytes());
            hasher.update([0]);
        }
        RunTrace {
            hash: hasher.finalize().into(),
            events: self.events,
        }
    }
}

/// A finished [`Trace`]: its hash and its events.
#[derive(Debug, Clone)]
pub struct RunTrace {
    pub hash: [u8; 32],
    pub events: Vec<String>,
}

/// The determinism check: run every seed twice and panic unless both runs
/// recorded the same events, naming the first event that differs.
///
/// Between the two runs, tokio's process-wide task-id counter is moved to
/// an odd distance from where the first run started. Tokio groups a
/// runtime's tasks by the low bits of their ids when it drops them (a
/// crash does), so every task of the second run lands in another group
/// than its twin did: a run that depends on the grouping shows it here,
/// not only when another test thread happens to spawn tasks in between.
pub fn check_replays(scenario: &str, seeds: &[u64], run: impl Fn(u64) -> Result<Outcome, String>) {
    for &seed in seeds {
        let start = next_task_id();
        let first = run(seed).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        while (next_task_id() - start).is_multiple_of(2) {}
        let second = run(seed).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_same_run(scenario, seed, &first, &second);
    }
}

/// Take the id tokio gives the next task in this process.
fn next_task_id() -> u64 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime builds");
    let task = runtime.spawn(async {});
    task.id()
        .to_string()
        .parse()
        .expect("tokio task ids print as integers")
}

/// Panic unless two runs of `seed` recorded the same events; the message
/// names the first event that differs and the line that replays the seed.
fn assert_same_run(scenario: &str, seed: u64, first: &Outcome, second: &Outcome) {
    if first.trace.hash == second.trace.hash {
        return;
    }
    let (a, b) = (&first.trace.events, &second.trace.events);
    let at = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    panic!(
        "seed {seed} ran differently twice: nondeterminism. First difference at event {at} of {}/{}:\n  first:  {}\n  second: {}\nreproduce: SIM_SEED={seed} cargo test -p sim --release {scenario} -- --nocapture",
        a.len(),
        b.len(),
        a.get(at).map_or("(end)", String::as_str),
        b.get(at).map_or("(end)", String::as_str),
    );
}

/// What a passing seed reports.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub trace: RunTrace,
    /// "Sometimes" counters: across a sweep each should be non-zero, which
    /// shows the faults really happened.
    pub counters: BTreeMap<&'static str, u64>,
}

/// Run `scenario` over the selected seeds; panic listing every failing seed.
pub fn run_scenario(
    name: &str,
    default_seeds: u64,
    describe: impl Fn(u64) -> String,
    scenario: impl Fn(u64) -> Result<Outcome, String>,
) -> BTreeMap<&'static str, u64> {
    let mut failures = Vec::new();
    let mut totals: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut marks: BTreeMap<&'static str, u64> = BTreeMap::new();
    let seeds = seeds(default_seeds);
    for &seed in &seeds {
        dfs::marks::take();
        let result = catch_unwind(AssertUnwindSafe(|| scenario(seed)))
            .unwrap_or_else(|panic| Err(format!("panicked: {}", panic_message(&panic))));
        for (mark, hits) in dfs::marks::take() {
            *marks.entry(mark).or_default() += hits;
        }
        match result {
            Ok(outcome) => {
                for (counter, value) in outcome.counters {
                    *totals.entry(counter).or_default() += value;
                }
            }
            Err(reason) => {
                eprintln!(
                    "\nscenario {name} FAILED at seed {seed}: {reason}\n  config: {}\n  reproduce: SIM_SEED={seed} cargo test -p sim --release {name} -- --nocapture\n",
                    describe(seed)
                );
                failures.push(seed);
            }
        }
    }
    eprintln!(
        "scenario {name}: {} seeds, {} failed; counters over the sweep: {totals:?}; coverage marks: {marks:?}",
        seeds.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "scenario {name} failed for seeds {failures:?} (reproduce lines above)"
    );
    totals
}

/// Replay a seed that once found a bug: it must pass, and it must still go
/// through the code path of that bug (each of `marks` hit at least once, see
/// [`dfs::marks`]). A seed whose schedule drifted away from its bug fails
/// here instead of passing while testing nothing; find a new seed that hits
/// the marks (a sweep prints which marks it hit) and name it instead.
pub fn check_regression(
    scenario: &str,
    seed: u64,
    marks: &[&str],
    run: impl Fn(u64) -> Result<Outcome, String>,
) {
    dfs::marks::take();
    let result = run(seed);
    let hit = dfs::marks::take();
    if let Err(reason) = result {
        panic!(
            "regression seed {seed} fails again: {reason}\nreproduce: SIM_SEED={seed} cargo test -p sim --release {scenario} -- --nocapture"
        );
    }
    for mark in marks {
        assert!(
            hit.get(mark).copied().unwrap_or(0) > 0,
            "regression seed {seed} passed but no longer reaches the path of its bug (mark {mark} not hit; hit: {hit:?}); its schedule drifted: pick a new seed that hits it"
        );
    }
}

/// [`check_regression`] over several seeds of one bug: every seed must pass,
/// and each mark must be hit by at least one of them. Less brittle than
/// one seed where the path is reached by chance.
pub fn check_regressions(
    scenario: &str,
    seeds: &[u64],
    marks: &[&str],
    run: impl Fn(u64) -> Result<Outcome, String>,
) {
    let mut hit: BTreeMap<&'static str, u64> = BTreeMap::new();
    for &seed in seeds {
        dfs::marks::take();
        if let Err(reason) = run(seed) {
            panic!(
                "regression seed {seed} fails again: {reason}\nreproduce: SIM_SEED={seed} cargo test -p sim --release {scenario} -- --nocapture"
            );
        }
        for (mark, count) in dfs::marks::take() {
            *hit.entry(mark).or_default() += count;
        }
    }
    for mark in marks {
        assert!(
            hit.get(mark).copied().unwrap_or(0) > 0,
            "regression seeds {seeds:?} passed but none reaches the path of their bug (mark {mark} not hit; hit: {hit:?}); their schedules drifted: pick new seeds that hit it"
        );
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        text.to_string()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "non-string panic".into()
    }
}

/// With `RUST_LOG` set, node logs go to stderr (tagged by simulated host).
pub fn init_logging() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .without_time()
            .try_init();
    }
}
