//! Scenario: one node under crashes and disk faults.
//!
//! Chaos phase: a client runs puts (fresh and repeated content, empty to
//! multi-chunk), gets, removes and version listings against the node while
//! the nemesis crashes it at random points (fenced, so a crash loses exactly
//! what turmoil's fs has not synced, with torn blocks) and restarts it; the
//! disk injects EIO and transient read corruption. Then the node is
//! restarted once more with faults off and a checker verifies:
//! - integrity: no read ever returned bytes that do not match what was asked
//!   for (the client verifies; the checker also compares with the model);
//! - durability: every acknowledged put reads back byte-identical, by name
//!   and version, after the restart;
//! - no invention: every version the node reports was written by an
//!   attempted put or remove of that name, with that content.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use dfs::client::{Client, ClientError};
use dfs::env::Env;
use dfs::meta::{VersionRecord, VersionSelector};
use dfs::node::{NodeConfig, Server};
use dfs::wire::GetTarget;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use crate::env::{DiskFaults, sim_env};
use crate::harness::{Outcome, Trace, sim_builder};
use crate::workload::{Attempts, cluster_key, expected_content_id, random_content, with_timeout};

const NODE: &str = "node";
const PORT: u16 = 7400;
/// The workload must finish within this much simulated time (liveness).
const CHAOS_STEPS_MAX: u64 = 3_600_000;
/// One client operation may take this long before it counts as indeterminate.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(90);

/// Everything a seed decides (swarm testing: fault classes switch on and off).
#[derive(Debug, Clone)]
pub struct Config {
    pub operations: usize,
    pub file_bytes_max: usize,
    pub sync_probability: f64,
    pub torn_block_bytes: Option<u64>,
    pub io_error_ppm: u64,
    pub corruption_ppm: u64,
    /// Chance per simulated millisecond that the node crashes.
    pub crash_ppm: u64,
}

impl Config {
    pub fn derive(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xC0F1_6000);
        let mut pick = |n: u64| rng.next_u64() % n;
        Config {
            operations: 12 + pick(24) as usize,
            file_bytes_max: [64 * 1024, 1024 * 1024, 3 * 1024 * 1024][pick(3) as usize],
            sync_probability: [0.0, 0.1, 0.5][pick(3) as usize],
            torn_block_bytes: [None, Some(512), Some(4096)][pick(3) as usize],
            io_error_ppm: [0, 0, 2_000, 20_000][pick(4) as usize],
            corruption_ppm: [0, 20_000, 100_000][pick(3) as usize],
            crash_ppm: [0, 200, 1_000][pick(3) as usize],
        }
    }
}

pub fn describe(seed: u64) -> String {
    format!("{:?}", Config::derive(seed))
}

/// What the workload did, for the checkers.
#[derive(Default)]
struct History {
    attempts: Attempts,
    acknowledged: Vec<VersionRecord>,
    violations: Vec<String>,
    trace: Trace,
    indeterminate: u64,
}

pub fn run(seed: u64) -> Result<Outcome, String> {
    let config = Config::derive(seed);
    let mut builder = sim_builder(seed, Duration::from_millis(5));
    builder.fs().sync_probability(config.sync_probability);
    if let Some(block) = config.torn_block_bytes {
        builder.fs().block_size(block);
    }
    let mut sim = builder.build();

    let faults_on = Rc::new(Cell::new(true));
    let current_faults: Rc<RefCell<Arc<DiskFaults>>> = Rc::new(RefCell::new(DiskFaults::new(0, 0)));
    // Declared after `sim`, so dropped before it: fences the running node's
    // disk so nothing (redb commits on drop) writes while turmoil tears down.
    let _fence_at_exit = FenceOnDrop(current_faults.clone());
    let incarnation = Rc::new(Cell::new(0u64));
    let counters = Rc::new(RefCell::new(BTreeMap::<&'static str, u64>::new()));
    {
        let (faults_on, current_faults, incarnation, counters) = (
            faults_on.clone(),
            current_faults.clone(),
            incarnation.clone(),
            counters.clone(),
        );
        let config = config.clone();
        sim.host(NODE, move || {
            let n = incarnation.get();
            incarnation.set(n + 1);
            // Counters of the previous incarnation's disk, before replacing it.
            let previous = current_faults.borrow().clone();
            let mut totals = counters.borrow_mut();
            *totals.entry("injected_io_errors").or_default() +=
                previous.injected_io_errors.load(Ordering::Relaxed);
            *totals.entry("injected_corruptions").or_default() +=
                previous.injected_corruptions.load(Ordering::Relaxed);
            let faults = DiskFaults::new(config.io_error_ppm, config.corruption_ppm);
            faults.enabled.store(faults_on.get(), Ordering::Relaxed);
            *current_faults.borrow_mut() = faults.clone();
            let node_env = sim_env(seed.wrapping_mul(1_000_003).wrapping_add(n), faults);
            let env = node_env.env.clone();
            let node_config = NodeConfig {
                data_dir: "/data".into(),
                listen: format!("0.0.0.0:{PORT}"),
                bootstrap: Vec::new(),
                advertise: Some(format!("node:{PORT}")),
                cluster_key: cluster_key(seed),
                swim: Default::default(),
                replication: Default::default(),
                maintenance: Default::default(),
                disk_free_min_percent: dfs::health::DEFAULT_DISK_FREE_MIN_PERCENT,
                admin_credentials_file: None,
                provisioned_keys: crate::workload::provisioned_keys(seed),
                small_blob_bytes_max: crate::workload::small_blob_bytes_max(seed),
            };
            node_env.host_software(async move {
                // A supervisor: a start that fails (injected EIO) is retried.
                loop {
                    match Server::start(env.clone(), node_config.clone()).await {
                        Ok(server) => {
                            server.run(std::future::pending()).await;
                            return Ok(());
                        }
                        Err(error) => {
                            tracing::info!(%error, "node start failed; retrying");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    }
                }
            })
        });
    }

    let history = Rc::new(RefCell::new(History::default()));
    sim.client("client", workload(seed, config.clone(), history.clone()));

    let mut nemesis = ChaCha8Rng::seed_from_u64(seed ^ 0x4E45_4D45);
    let mut down_until: Option<u64> = None;
    let mut step = 0u64;
    let mut crashes = 0u64;
    loop {
        let done = sim.step().map_err(|e| format!("simulation error: {e}"))?;
        if done {
            break;
        }
        step += 1;
        if step > CHAOS_STEPS_MAX {
            return Err(format!(
                "liveness: the workload did not finish within {CHAOS_STEPS_MAX} ms of simulated time"
            ));
        }
        match down_until {
            Some(until) if step >= until => {
                sim.bounce(NODE);
                down_until = None;
            }
            None if config.crash_ppm > 0 && nemesis.next_u64() % 1_000_000 < config.crash_ppm => {
                current_faults.borrow().fenced.store(true, Ordering::SeqCst);
                sim.crash(NODE);
                crashes += 1;
                down_until = Some(step + 50 + nemesis.next_u64() % 3000);
            }
            _ => {}
        }
    }

    // Heal: faults off, and one more crash and restart so that everything
    // checked below has survived a restart.
    faults_on.set(false);
    current_faults
        .borrow()
        .enabled
        .store(false, Ordering::Relaxed);
    current_faults.borrow().fenced.store(true, Ordering::SeqCst);
    sim.crash(NODE);
    sim.bounce(NODE);
    sim.client("checker", check(seed, history.clone()));
    let mut check_steps = 0u64;
    while !sim
        .step()
        .map_err(|e| format!("simulation error in the check phase: {e}"))?
    {
        check_steps += 1;
        if check_steps > CHAOS_STEPS_MAX {
            return Err("liveness: the checks did not finish after healing".into());
        }
    }

    let history = Rc::try_unwrap(history)
        .map_err(|_| "history still shared")?
        .into_inner();
    if !history.violations.is_empty() {
        return Err(history.violations.join("; "));
    }
    let previous = current_faults.borrow().clone();
    let mut counters = counters.borrow().clone();
    *counters.entry("injected_io_errors").or_default() +=
        previous.injected_io_errors.load(Ordering::Relaxed);
    *counters.entry("injected_corruptions").or_default() +=
        previous.injected_corruptions.load(Ordering::Relaxed);
    counters.insert("crashes", crashes);
    counters.insert(
        "acknowledged_puts",
        history
            .acknowledged
            .iter()
            .filter(|r| !r.is_tombstone())
            .count() as u64,
    );
    counters.insert("indeterminate_operations", history.indeterminate);
    let mut trace = history.trace;
    trace.record(&format!("steps {step} {check_steps} crashes {crashes}"));
    Ok(Outcome {
        trace: trace.finish(),
        counters,
    })
}

struct FenceOnDrop(Rc<RefCell<Arc<DiskFaults>>>);

impl Drop for FenceOnDrop {
    fn drop(&mut self) {
        self.0.borrow().fenced.store(true, Ordering::SeqCst);
    }
}

fn client_env(seed: u64, salt: u64) -> Env {
    crate::env::client_env(seed ^ salt)
}

async fn connect(env: &Env, seed: u64) -> Result<Client, ClientError> {
    Client::connect(
        env,
        &format!("{NODE}:{PORT}"),
        &crate::workload::client_credentials(seed),
    )
    .await
}

async fn workload(seed: u64, config: Config, history: Rc<RefCell<History>>) -> turmoil::Result {
    let env = client_env(seed, 0xC11E_0001);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x574F_524B);
    for op in 0..config.operations {
        let name = format!("file-{}", rng.next_u64() % 4);
        match rng.next_u64() % 10 {
            0..=4 => {
                let bytes = random_content(
                    &mut rng,
                    config.file_bytes_max,
                    10,
                    history.borrow().attempts.contents(),
                );
                let content = expected_content_id(&bytes);
                history.borrow_mut().attempts.put(&name, content, &bytes);
                let result = with_timeout(OPERATION_TIMEOUT, async {
                    let mut client = connect(&env, seed).await?;
                    client.put(&name, &mut bytes.as_slice(), &mut |_| {}).await
                })
                .await;
                let mut h = history.borrow_mut();
                match result {
                    Ok(record) => {
                        if record.content != Some(content)
                            || record.name != name
                            || record.size != bytes.len() as u64
                        {
                            h.violations.push(format!(
                                "put {name} acknowledged a different record: {record:?}"
                            ));
                        }
                        h.trace
                            .record(&format!("{op} put {name} ok {}", record.vid));
                        h.acknowledged.push(record);
                    }
                    Err(error) => {
                        h.indeterminate += 1;
                        h.trace.record(&format!("{op} put {name} failed {error}"));
                    }
                }
            }
            5..=7 => {
                let mut out = Vec::new();
                let result = with_timeout(OPERATION_TIMEOUT, async {
                    let mut client = connect(&env, seed).await?;
                    client
                        .get(
                            GetTarget::Name(name.clone()),
                            None,
                            &mut out,
                            &mut |_, _| {},
                        )
                        .await
                })
                .await;
                let mut h = history.borrow_mut();
                match result {
                    Ok(fetched) => {
                        if let Some(wrong) = h.attempts.wrong_read(&name, fetched.content, &out) {
                            h.violations.push(wrong);
                        }
                        h.trace
                            .record(&format!("{op} get {name} ok {}", fetched.content));
                    }
                    Err(error) => {
                        if error.contains("verification failed") {
                            h.violations.push(format!("integrity: get {name}: {error}"));
                        }
                        h.trace.record(&format!("{op} get {name} failed {error}"));
                    }
                }
            }
            8 => {
                history.borrow_mut().attempts.remove(&name);
                let result = with_timeout(OPERATION_TIMEOUT, async {
                    let mut client = connect(&env, seed).await?;
                    client.remove(&name).await
                })
                .await;
                let mut h = history.borrow_mut();
                match result {
                    Ok(record) => {
                        h.trace.record(&format!("{op} rm {name} ok {}", record.vid));
                        h.acknowledged.push(record);
                    }
                    Err(error) => h.trace.record(&format!("{op} rm {name} failed {error}")),
                }
            }
            _ => {
                let result = with_timeout(OPERATION_TIMEOUT, async {
                    let mut client = connect(&env, seed).await?;
                    client.versions(&name).await
                })
                .await;
                let mut h = history.borrow_mut();
                match result {
                    Ok((records, _)) => {
                        check_explained(&mut h, &name, &records);
                        h.trace
                            .record(&format!("{op} versions {name} ok {}", records.len()));
                    }
                    Err(error) => h
                        .trace
                        .record(&format!("{op} versions {name} failed {error}")),
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.next_u64() % 300)).await;
    }
    Ok(())
}

/// No invention: each record is a put of content attempted under that
/// name, or a tombstone of an attempted remove.
fn check_explained(history: &mut History, name: &str, records: &[VersionRecord]) {
    let unexplained = history.attempts.unexplained(name, records);
    history.violations.extend(unexplained);
}

async fn check(seed: u64, history: Rc<RefCell<History>>) -> turmoil::Result {
    let env = client_env(seed, 0xC11E_0002);
    // The node restarts just before this: retry until it answers.
    let mut client = None;
    for _ in 0..60 {
        match connect(&env, seed).await {
            Ok(c) => {
                client = Some(c);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    let Some(mut client) = client else {
        history
            .borrow_mut()
            .violations
            .push("liveness: the healed node never answered".into());
        return Ok(());
    };
    let acknowledged = history.borrow().acknowledged.clone();
    let names = history.borrow().attempts.names();
    for name in &names {
        let result = client.versions(name).await;
        let mut h = history.borrow_mut();
        match result {
            Ok((records, _)) => {
                check_explained(&mut h, name, &records);
                let listed: BTreeSet<_> = records.iter().map(|r| r.vid).collect();
                for lost in acknowledged
                    .iter()
                    .filter(|r| &r.name == name && !listed.contains(&r.vid))
                {
                    h.violations.push(format!(
                        "durability: acknowledged version {} of {name} is gone",
                        lost.vid
                    ));
                }
                let summary: Vec<String> = records
                    .iter()
                    .map(|r| format!("{}:{:?}", r.vid, r.content))
                    .collect();
                h.trace
                    .record(&format!("final versions {name} {summary:?}"));
            }
            Err(error) if error.is_not_found() => {
                if acknowledged.iter().any(|r| &r.name == name) {
                    h.violations.push(format!(
                        "durability: {name} has acknowledged versions but the node knows none"
                    ));
                }
            }
            Err(error) => h.violations.push(format!(
                "check: versions {name} failed after healing: {error}"
            )),
        }
    }
    for record in acknowledged.iter().filter(|r| !r.is_tombstone()) {
        let selector: VersionSelector = record.vid.to_string().parse().expect("printed ids parse");
        let mut out = Vec::new();
        let result = client
            .get(
                GetTarget::Name(record.name.clone()),
                Some(selector),
                &mut out,
                &mut |_, _| {},
            )
            .await;
        let mut h = history.borrow_mut();
        match result {
            Ok(fetched) => {
                let content = record.content.expect("not a tombstone");
                if fetched.content != content || !h.attempts.holds(content, &out) {
                    h.violations.push(format!(
                        "durability: version {} of {} reads back different bytes",
                        record.vid, record.name
                    ));
                }
            }
            Err(error) => h.violations.push(format!(
                "durability: version {} of {} unreadable: {error}",
                record.vid, record.name
            )),
        }
    }
    Ok(())
}
