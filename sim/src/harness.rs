//! Seeds, reproduction and traces.
//!
//! `SIM_SEED=n` runs one seed; otherwise `SIM_SEEDS=N` seeds (default per
//! scenario) starting at `SIM_SEED_BASE` (default 0). A failing seed prints
//! the scenario, the seed, the derived config and the line that replays it.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

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

/// A running hash of everything observable in a run: two runs of one seed
/// must produce the same hash (the determinism check).
#[derive(Default)]
pub struct Trace {
    hasher: Sha256,
    pub events: u64,
}

impl Trace {
    pub fn record(&mut self, event: &str) {
        self.hasher.update(event.as_bytes());
        self.hasher.update([0]);
        self.events += 1;
    }

    pub fn finish(self) -> [u8; 32] {
        self.hasher.finalize().into()
    }
}

/// What a passing seed reports.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub trace_hash: [u8; 32],
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
    let seeds = seeds(default_seeds);
    for &seed in &seeds {
        let result = catch_unwind(AssertUnwindSafe(|| scenario(seed)))
            .unwrap_or_else(|panic| Err(format!("panicked: {}", panic_message(&panic))));
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
        "scenario {name}: {} seeds, {} failed; counters over the sweep: {totals:?}",
        seeds.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "scenario {name} failed for seeds {failures:?} (reproduce lines above)"
    );
    totals
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
