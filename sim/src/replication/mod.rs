//! Scenario: replicated, versioned storage under faults (DESIGN §8, §9).
//!
//! 3 to 7 nodes form a cluster (R and W derived from the seed). Several
//! clients, each with a session sticky to one node (so different clients
//! go through different nodes), put, overwrite, get (sometimes with
//! `--quorum`), remove, list versions, prune and restore a few names, while
//! the [`Nemesis`] sets clocks ahead and behind (within and beyond the
//! maximum offset), partitions, cuts one way, holds, crashes and restarts
//! nodes (some cut off from all others, some on an empty disk), rots
//! stored chunk files (at most W - 1 nodes' disks are lost or rot, fewer
//! than the copies every acknowledged write has, except a write a node
//! acknowledged while it had never had another member: one copy, which
//! that node's disk may take with it), fills disks for a few
//! seconds, slows disks down, links lose messages and add latency, and the disks tear writes,
//! sync early, fail with EIO and return corrupt reads. A client-key
//! intruder speaks as a node to random nodes (`intruder.rs`). Then everything
//! heals and the cluster quiesces, and the checkers read the history:
//!
//! 1. integrity: no read returned bytes other than what was put (clients
//!    verify every chunk; the checker compares with the model too);
//! 2. durability: every acknowledged version is still listed (unless a
//!    prune could have dropped it) and reads back byte for byte;
//! 3. convergence: every node lists the same versions of every name;
//! 4. no invention: every listed version was written by some put, remove
//!    or restore of that name;
//! 5. monotonic reads: within a session, a name's newest version never
//!    goes backwards;
//! 6. liveness: after healing, a put and a get through every node succeed.
//!
//! Code map: `nodes.rs` starts each node and keeps what the harness needs
//! of it; `session.rs` is a client session and the `History` it records;
//! `check.rs` reads the history after healing; this file derives the
//! config from the seed and runs the phases.

mod check;
mod intruder;
mod nodes;
mod session;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use dfs::cluster::{Maintenance, ReplicationCounters};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use crate::harness::{Outcome, Trace, sim_builder};
use crate::nemesis::{Faults, Nemesis};

use check::check;
use nodes::{Nodes, Probe, Probes, add_node, host};
use session::{History, session};

const PORT: u16 = 7400;
/// A client operation taking longer than this is indeterminate.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);
/// After healing, the index must converge within this simulated time.
const QUIESCE_WITHIN: Duration = Duration::from_secs(120);
/// The whole run must finish within this simulated time (liveness).
const RUN_MS_MAX: u64 = 1_800_000;
const NAMES: u64 = 4;

#[derive(Debug, Clone)]
pub struct Config {
    pub nodes: usize,
    pub replicas: usize,
    pub write_quorum: usize,
    pub clients: usize,
    pub operations: usize,
    pub file_bytes_max: usize,
    pub max_latency: Duration,
    pub fail_rate: f64,
    pub sync_probability: f64,
    pub torn_block_bytes: Option<u64>,
    pub io_error_ppm: u64,
    pub corruption_ppm: u64,
    pub faults: Faults,
    /// Anti-entropy, repair and GC periods: short, so that garbage
    /// collection runs (and races puts, prunes and partitions) in a seed.
    pub maintenance: Maintenance,
    /// How soon SWIM forgets a down member (a day in production).
    pub forget_down_after: Duration,
    /// A client-key holder speaking as a node throughout the run.
    pub intruder: bool,
}

impl Config {
    pub fn derive(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5245_504C);
        let mut pick = |n: u64| rng.next_u64() % n;
        let nodes = 3 + pick(5) as usize;
        let replicas = [3, 3, 2, 1][pick(4) as usize].min(nodes);
        let write_quorum = if replicas == 1 {
            1
        } else {
            [2, 2, 1, replicas][pick(4) as usize].min(replicas)
        };
        let mut config = Config {
            nodes,
            replicas,
            write_quorum,
            clients: 2 + pick(2) as usize,
            operations: 8 + pick(12) as usize,
            file_bytes_max: [16 * 1024, 512 * 1024, 2 * 1024 * 1024][pick(3) as usize],
            max_latency: Duration::from_millis([2, 20, 100][pick(3) as usize]),
            fail_rate: [0.0, 0.0, 0.001, 0.01][pick(4) as usize],
            sync_probability: [0.0, 0.1, 0.5][pick(3) as usize],
            torn_block_bytes: [None, Some(512), Some(4096)][pick(3) as usize],
            io_error_ppm: [0, 0, 2_000][pick(3) as usize],
            corruption_ppm: [0, 0, 20_000][pick(3) as usize],
            faults: Faults {
                every: Duration::from_millis(1_000 + pick(4_000)),
                crashes: pick(3) != 0,
                partitions: pick(3) != 0,
                one_way: pick(2) == 0,
                holds: pick(2) == 0,
                // Drawn last, so the picks above (and every older seed's
                // schedule) stay as they were before these classes existed.
                isolated_restarts: pick(2) == 0,
                disk_loss: pick(2) == 0,
                clock_jumps: false,
                bit_rot: false,
                disk_full: false,
                slow_disk: false,
            },
            maintenance: Maintenance {
                sync_interval: Duration::from_millis([500, 2_000][pick(2) as usize]),
                repair_interval: Duration::from_millis([1_000, 5_000][pick(2) as usize]),
                gc_grace: Duration::from_millis([2_000, 10_000, 60_000][pick(3) as usize]),
                scrub_interval: Duration::ZERO,
            },
            forget_down_after: Duration::ZERO,
            intruder: false,
        };
        // Drawn after everything above, which older seeds keep.
        config.faults.clock_jumps = pick(2) == 0;
        config.maintenance.scrub_interval = Duration::from_millis([500, 3_000][pick(2) as usize]);
        config.faults.bit_rot = pick(2) == 0;
        config.faults.disk_full = pick(2) == 0;
        config.faults.slow_disk = pick(2) == 0;
        config.forget_down_after = Duration::from_secs([24 * 3600, 15, 60][pick(3) as usize]);
        config.intruder = pick(2) == 0;
        config
    }
}

pub fn describe(seed: u64) -> String {
    format!("{:?}", Config::derive(seed))
}

pub fn run(seed: u64) -> Result<Outcome, String> {
    let config = Config::derive(seed);
    let mut builder = sim_builder(seed, config.max_latency);
    builder.fs().sync_probability(config.sync_probability);
    if let Some(block) = config.torn_block_bytes {
        builder.fs().block_size(block);
    }
    let mut sim = builder.build();
    let probes: Probes = Rc::new(RefCell::new(
        (0..config.nodes).map(|_| Probe::default()).collect(),
    ));
    let _fence_at_exit = FenceAll(probes.clone());
    let faults_on = Rc::new(Cell::new(true));
    for i in 0..config.nodes {
        add_node(&mut sim, seed, i, &config, &probes, &faults_on);
    }
    let history = Rc::new(RefCell::new(History::default()));
    for client in 0..config.clients {
        sim.client(
            format!("client{client}"),
            session(
                seed,
                client,
                config.clone(),
                history.clone(),
                probes.clone(),
            ),
        );
    }

    if config.intruder {
        sim.client(
            "intruder",
            intruder::intruder(seed, config.clone(), history.clone()),
        );
    }

    let names: Vec<String> = (0..config.nodes).map(host).collect();
    let mut nemesis = Nemesis::new(seed, config.faults.clone(), names, 4_000);
    if config.fail_rate > 0.0 {
        sim.set_fail_rate(config.fail_rate);
    }
    let nodes = Nodes {
        probes: probes.clone(),
        disks_lost_max: config.write_quorum - 1,
    };
    let mut trace = Trace::default();
    // Chaos: until every client session has finished.
    loop {
        let done = sim.step().map_err(|e| format!("simulation error: {e}"))?;
        let now_ms = sim.elapsed().as_millis() as u64;
        if done {
            break;
        }
        if now_ms > RUN_MS_MAX {
            return Err(format!(
                "liveness: the workload did not finish within {RUN_MS_MAX} ms"
            ));
        }
        nemesis.tick(&mut sim, now_ms, &nodes, &mut trace);
    }

    // Heal: links, message loss, disk faults (restarted nodes' new disks
    // too), crashed nodes.
    sim.set_fail_rate(0.0);
    faults_on.set(false);
    for probe in probes.borrow().iter() {
        if let Some(faults) = &probe.faults {
            faults.enabled.store(false, Ordering::Relaxed);
        }
    }
    nemesis.heal(&mut sim, &nodes, &mut trace);
    let healed_ms = sim.elapsed().as_millis() as u64;
    // Of the versions acknowledged with one copy (by a node that had
    // never had another member), only those whose node's disk rotted may
    // be unreadable, and only those whose node lost its disk may be gone.
    {
        let probes = probes.borrow();
        let mut h = history.borrow_mut();
        let writers = h.writers.clone();
        let damage = |key: &(String, dfs::meta::VersionId)| {
            writers
                .get(key)
                .map(|&node| (probes[node].rotted, probes[node].disks_lost > 0))
                .unwrap_or((false, false))
        };
        h.single_copy.retain(|key| {
            let (rotted, lost) = damage(key);
            rotted || lost
        });
        h.single_copy_disk_lost = h
            .single_copy
            .iter()
            .filter(|key| damage(key).1)
            .cloned()
            .collect();
    }
    sim.client("checker", check(seed, config.clone(), history.clone()));
    loop {
        let done = sim
            .step()
            .map_err(|e| format!("simulation error in the check phase: {e}"))?;
        if done {
            break;
        }
        if sim.elapsed().as_millis() as u64 > RUN_MS_MAX + healed_ms {
            return Err("liveness: the checks did not finish after healing".into());
        }
    }

    let history = Rc::try_unwrap(history)
        .map_err(|_| "history still shared")?
        .into_inner();
    if !history.violations.is_empty() {
        return Err(history.violations.join("; "));
    }
    let mut counters: BTreeMap<&'static str, u64> = nemesis.counters.clone();
    for probe in probes.borrow().iter() {
        for cluster in &probe.clusters {
            let c = &cluster.counters;
            for (name, value) in [
                ("read_repairs", &c.read_repairs),
                ("stand_ins", &c.stand_ins),
                ("chunks_reused", &c.chunks_reused),
                ("writes_below_write_quorum", &c.writes_below_write_quorum),
                ("sync_records_received", &c.sync_records_received),
                ("sync_records_sent", &c.sync_records_sent),
                ("repair_copies", &cluster.repair.copies_made),
                ("rebalance_drops", &cluster.repair.copies_dropped),
                ("garbage_collected", &cluster.repair.garbage_collected),
                ("sync_passes", &c.sync_passes),
                ("scrubbed", &cluster.scrub.blobs_verified),
                ("scrub_corrupt_found", &cluster.scrub.corrupt_found),
                ("digest_mismatches", &cluster.scrub.digest_mismatches),
            ] {
                *counters.entry(name).or_default() += ReplicationCounters::get(value);
            }
        }
        *counters.entry("bit_rot_files").or_default() += probe.rot.rotted.load(Ordering::Relaxed);
        *counters.entry("writes_refused_disk_full").or_default() +=
            probe.rot.refused_full.load(Ordering::Relaxed);
        *counters.entry("members_forgotten").or_default() +=
            probe.views.iter().map(|v| v.forgotten()).sum::<u64>();
        *counters.entry("disk_jobs_delayed").or_default() +=
            probe.rot.slow_jobs.load(Ordering::Relaxed);
        for disk in &probe.disks {
            *counters.entry("injected_io_errors").or_default() +=
                disk.injected_io_errors.load(Ordering::Relaxed);
            *counters.entry("injected_corruptions").or_default() +=
                disk.injected_corruptions.load(Ordering::Relaxed);
        }
    }
    // The kept anti-entropy digests must always equal the index's (each
    // scrub pass compares them); a difference would hide records from
    // anti-entropy.
    if counters.get("digest_mismatches").copied().unwrap_or(0) > 0 {
        return Err(format!(
            "the kept anti-entropy digests differed from a scan of the index {} times",
            counters["digest_mismatches"]
        ));
    }
    if config.torn_block_bytes.is_some() {
        *counters.entry("crashes_with_torn_writes").or_default() +=
            counters.get("crashes").copied().unwrap_or(0);
    }
    let acked_puts = history
        .acknowledged
        .iter()
        .filter(|r| !r.is_tombstone())
        .count() as u64;
    counters.insert("acknowledged_puts", acked_puts);
    counters.insert("indeterminate_puts", history.indeterminate);
    counters.insert("quorum_reads", history.quorum_reads);
    counters.insert("quorum_reads_checked", history.quorum_reads_checked);
    counters.insert("restores", history.restores);
    counters.insert("prunes", history.prunes);
    counters.insert("forgets", history.forgets);
    counters.insert("intruder_refusals", history.intruder_refusals);
    let mut trace_all = history.trace;
    trace_all.append("nemesis", trace);
    trace_all.record(&format!("healed at {healed_ms}"));
    Ok(Outcome {
        trace: trace_all.finish(),
        counters,
    })
}

/// Fences every node's disk before the simulation is dropped.
struct FenceAll(Probes);

impl Drop for FenceAll {
    fn drop(&mut self) {
        for probe in self.0.borrow().iter() {
            for disk in &probe.disks {
                disk.fenced.store(true, Ordering::SeqCst);
            }
        }
    }
}
