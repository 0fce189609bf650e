//! Scenario: a cluster of 3 to 9 nodes forms and heals (issue: Peers).
//!
//! Node 0 starts alone; the others join through it (`--bootstrap node0`).
//! An intruder holding another cluster key tries to join through node 0 the
//! whole time. During the chaos phase a seed-derived nemesis partitions the
//! cluster (two sides, or one way), holds links, crashes and restarts nodes,
//! raises latency and makes links flap (message loss). A restarted node gets
//! no bootstrap address: it must find the cluster from its persisted member
//! list (or from members announcing to it). Then everything heals.
//!
//! Checks:
//! - at every step, no node lists the intruder (admission);
//! - after healing, within `CONVERGE_WITHIN` of simulated time, every
//!   node lists every other node as alive (convergence of membership).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use dfs::keys::{ClusterKey, NodeId};
use dfs::node::{NodeConfig, Server};
use dfs::peer::{MemberView, SwimTiming};
use dfs::wire::MemberState;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use crate::env::{DiskFaults, sim_env};
use crate::harness::{Outcome, Trace, sim_builder};
use crate::nemesis::{Crashable, Faults, Nemesis};

const PORT: u16 = 7400;
const INTRUDER: &str = "intruder";
/// After healing, membership must converge within this simulated time. SWIM
/// needs a few probe rounds plus suspicion timeouts, and a node declared
/// down needs a periodic announce to come back.
const CONVERGE_WITHIN: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct Config {
    pub nodes: usize,
    pub chaos: Duration,
    /// Mean time between nemesis actions.
    pub nemesis_every: Duration,
    pub max_latency: Duration,
    /// Link flapping (turmoil fail rate per tick), 0 = none.
    pub fail_rate: f64,
    pub crashes: bool,
    pub partitions: bool,
    pub one_way: bool,
    pub holds: bool,
}

impl Config {
    pub fn derive(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5357_494D);
        let mut pick = |n: u64| rng.next_u64() % n;
        Config {
            nodes: 3 + pick(7) as usize,
            chaos: Duration::from_secs(20 + pick(20)),
            nemesis_every: Duration::from_millis(1_000 + pick(4_000)),
            max_latency: Duration::from_millis([2, 20, 100][pick(3) as usize]),
            fail_rate: [0.0, 0.0, 0.001, 0.01][pick(4) as usize],
            crashes: pick(3) != 0,
            partitions: pick(3) != 0,
            one_way: pick(2) == 0,
            holds: pick(2) == 0,
        }
    }
}

pub fn describe(seed: u64) -> String {
    format!("{:?}", Config::derive(seed))
}

fn host(i: usize) -> String {
    format!("node{i}")
}

fn key(seed: u64, salt: u64) -> ClusterKey {
    let mut bytes = [0u8; 32];
    ChaCha8Rng::seed_from_u64(seed ^ salt).fill_bytes(&mut bytes);
    ClusterKey::from_bytes(bytes)
}

/// What the harness can see of one node: its view, once started.
#[derive(Default, Clone)]
struct Probe {
    view: Option<Arc<MemberView>>,
    node: Option<NodeId>,
    fence: Option<Arc<DiskFaults>>,
}

type Probes = Rc<RefCell<Vec<Probe>>>;

/// How one node of a scenario starts: its SWIM timing, and how long after
/// the simulation's start its first start waits (a join storm staggers
/// starts; a restart never waits).
#[derive(Clone, Copy, Default)]
struct Start {
    swim: SwimTiming,
    delay: Duration,
}

fn add_node(
    sim: &mut turmoil::Sim<'_>,
    seed: u64,
    index: usize,
    probes: &Probes,
    name: String,
    start: Start,
) {
    let probes = probes.clone();
    let incarnation = Rc::new(RefCell::new(0u64));
    sim.host(name.clone(), move || {
        let n = {
            let mut n = incarnation.borrow_mut();
            *n += 1;
            *n - 1
        };
        let faults = DiskFaults::new(0, 0);
        let node_env = sim_env(
            seed.wrapping_mul(7_919)
                .wrapping_add((index as u64) << 32)
                .wrapping_add(n),
            faults.clone(),
        );
        // Only the first start gets a bootstrap address: a restarted node
        // must rejoin on its own.
        let bootstrap = if index != 0 && n == 0 {
            vec![format!("{}:{PORT}", host(0))]
        } else {
            Vec::new()
        };
        let config = NodeConfig {
            data_dir: "/data".into(),
            listen: format!("0.0.0.0:{PORT}"),
            bootstrap,
            advertise: Some(format!("{name}:{PORT}")),
            cluster_key: key(seed, 0x4B45_5953),
            swim: start.swim,
            replication: Default::default(),
            maintenance: Default::default(),
            disk_free_min_percent: dfs::health::DEFAULT_DISK_FREE_MIN_PERCENT,
            admin_credentials_file: None,
            provisioned_keys: crate::workload::provisioned_keys(seed),
            small_blob_bytes_max: crate::workload::small_blob_bytes_max(seed),
        };
        let probes = probes.clone();
        let env = node_env.env.clone();
        let delay = if n == 0 { start.delay } else { Duration::ZERO };
        node_env.host_software(async move {
            tokio::time::sleep(delay).await;
            let server = Server::start(env, config).await?;
            {
                let mut probes = probes.borrow_mut();
                probes[index] = Probe {
                    view: Some(server.node().members().clone()),
                    node: Some(server.node_id()),
                    fence: Some(faults),
                };
            }
            server.run(std::future::pending()).await;
            Ok(())
        })
    });
}

pub fn run(seed: u64) -> Result<Outcome, String> {
    let config = Config::derive(seed);
    let builder = sim_builder(seed, config.max_latency);
    let mut sim = builder.build();
    let mut trace = Trace::default();
    let mut counters: BTreeMap<&'static str, u64> = BTreeMap::new();

    let probes: Probes = Rc::new(RefCell::new(vec![Probe::default(); config.nodes + 1]));
    let _fence_at_exit = FenceAll(probes.clone());
    for i in 0..config.nodes {
        add_node(&mut sim, seed, i, &probes, host(i), Start::default());
    }
    // The intruder bootstraps through node 0 with the wrong key.
    {
        let probes = probes.clone();
        let index = config.nodes;
        let faults = DiskFaults::new(0, 0);
        probes.borrow_mut()[index].fence = Some(faults.clone());
        // The intruder is never crashed, so its connections need no order.
        let env = sim_env(seed ^ 0x1A7B, faults).env;
        let config = NodeConfig {
            data_dir: "/data".into(),
            listen: format!("0.0.0.0:{PORT}"),
            bootstrap: vec![format!("{}:{PORT}", host(0))],
            advertise: Some(format!("{INTRUDER}:{PORT}")),
            cluster_key: key(seed, 0xBAD),
            swim: Default::default(),
            replication: Default::default(),
            maintenance: Default::default(),
            disk_free_min_percent: dfs::health::DEFAULT_DISK_FREE_MIN_PERCENT,
            admin_credentials_file: None,
            provisioned_keys: crate::workload::provisioned_keys(seed),
            small_blob_bytes_max: crate::workload::small_blob_bytes_max(seed),
        };
        sim.host(INTRUDER, move || {
            let (env, config, probes) = (env.clone(), config.clone(), probes.clone());
            async move {
                let server = Server::start(env, config).await?;
                probes.borrow_mut()[index].node = Some(server.node_id());
                server.run(std::future::pending()).await;
                Ok(())
            }
        });
    }

    let names: Vec<String> = (0..config.nodes).map(host).collect();
    let faults = Faults {
        every: config.nemesis_every,
        crashes: config.crashes,
        partitions: config.partitions,
        one_way: config.one_way,
        holds: config.holds,
        isolated_restarts: false,
        disk_loss: false,
        clock_jumps: false,
        bit_rot: false,
        disk_full: false,
        slow_disk: false,
    };
    let mut nemesis = Nemesis::new(seed, faults, names, 5_000);
    let chaos_ms = config.chaos.as_millis() as u64;
    if config.fail_rate > 0.0 {
        sim.set_fail_rate(config.fail_rate);
    }
    let step = |sim: &mut turmoil::Sim<'_>| -> Result<(), String> {
        sim.step()
            .map(|_| ())
            .map_err(|e| format!("simulation error: {e}"))
    };
    let nodes = Nodes(probes.clone());
    let mut now_ms = 0u64;
    while now_ms < chaos_ms {
        step(&mut sim)?;
        now_ms = sim.elapsed().as_millis() as u64;
        check_admission(&probes, config.nodes)?;
        nemesis.tick(&mut sim, now_ms, &nodes, &mut trace);
    }

    // Heal: links, flapping, crashed nodes.
    sim.set_fail_rate(0.0);
    nemesis.heal(&mut sim, &nodes, &mut trace);
    counters.extend(nemesis.counters.iter().map(|(k, v)| (*k, *v)));
    let healed_ms = now_ms;
    loop {
        step(&mut sim)?;
        now_ms = sim.elapsed().as_millis() as u64;
        check_admission(&probes, config.nodes)?;
        if converged(&probes, config.nodes) {
            break;
        }
        if now_ms - healed_ms > CONVERGE_WITHIN.as_millis() as u64 {
            return Err(format!(
                "membership did not converge within {CONVERGE_WITHIN:?} of healing: {}",
                describe_views(&probes, config.nodes)
            ));
        }
    }
    let converge_ms = now_ms - healed_ms;
    trace.record(&format!("converged after {converge_ms} ms"));
    counters.insert("converge_ms_sum", converge_ms);
    counters.insert("nodes", config.nodes as u64);
    Ok(Outcome {
        trace: trace.finish(),
        counters,
    })
}

/// The nodes as the nemesis sees them.
struct Nodes(Probes);

impl Crashable for Nodes {
    /// Only a node that has seen another member: it has a member list to
    /// rejoin from, or members that will announce to it.
    fn may_crash(&self, i: usize) -> bool {
        self.0.borrow()[i]
            .view
            .as_ref()
            .is_some_and(|v| !v.members().is_empty())
    }

    /// Fence the disk, and forget the view (a restarted node publishes a
    /// new one once it is up; until then it counts as not converged).
    fn before_crash(&self, i: usize) {
        let mut probes = self.0.borrow_mut();
        if let Some(fence) = &probes[i].fence {
            fence.fenced.store(true, Ordering::SeqCst);
        }
        probes[i].view = None;
    }
}

fn check_admission(probes: &Probes, nodes: usize) -> Result<(), String> {
    let probes = probes.borrow();
    let Some(intruder) = probes[nodes].node else {
        return Ok(());
    };
    for (i, probe) in probes[..nodes].iter().enumerate() {
        if let Some(view) = &probe.view
            && view.members().iter().any(|m| m.node_id == intruder)
        {
            return Err(format!(
                "admission: node{i} lists the intruder, which lacks the cluster key"
            ));
        }
    }
    Ok(())
}

fn converged(probes: &Probes, nodes: usize) -> bool {
    let probes = probes.borrow();
    let ids: Vec<NodeId> = match probes[..nodes].iter().map(|p| p.node).collect() {
        Some(ids) => ids,
        None => return false,
    };
    probes[..nodes].iter().enumerate().all(|(i, probe)| {
        let Some(view) = &probe.view else {
            return false;
        };
        let members = view.members();
        ids.iter().enumerate().all(|(j, id)| {
            i == j
                || members
                    .iter()
                    .any(|m| m.node_id == *id && m.state == MemberState::Alive)
        })
    })
}

fn describe_views(probes: &Probes, nodes: usize) -> String {
    let probes = probes.borrow();
    let mut out = Vec::new();
    for (i, probe) in probes[..nodes].iter().enumerate() {
        let members = probe
            .view
            .as_ref()
            .map(|v| {
                v.members()
                    .iter()
                    .map(|m| format!("{}={:?}", m.addr, m.state))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_else(|| "not started".into());
        out.push(format!("node{i}[{members}]"));
    }
    out.join(" ")
}

/// Fences every node's disk before the simulation is dropped.
struct FenceAll(Probes);

impl Drop for FenceAll {
    fn drop(&mut self) {
        for probe in self.0.borrow().iter() {
            if let Some(fence) = &probe.fence {
                fence.fenced.store(true, Ordering::SeqCst);
            }
        }
    }
}

/// A join storm (issue 9, item 11: five real nodes started at once through
/// one bootstrap address once failed to see each other alive within 30 s).
/// Every node starts within a few seconds of the others, node 0 not
/// necessarily first, all bootstrapping through node 0; links are slow and
/// nodes stall while they join (all its links held: what its peers see of
/// a starved process, though its own timers run on).
/// No node crashes and nothing partitions for good, so every node must list
/// exactly the others alive, each once, within [`JOIN_WITHIN`] of the last
/// start and the last stall.
pub const JOIN_WITHIN: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct JoinConfig {
    pub nodes: usize,
    /// Starts are spread uniformly over this much time.
    pub start_spread: Duration,
    pub max_latency: Duration,
    /// The real-process tests' timing (probe 500 ms, rtt 200 ms, suspicion
    /// 1.5 s) or the default.
    pub fast_swim: bool,
    /// Stalls while joining: how many, and the longest.
    pub stalls: usize,
    pub stall_max: Duration,
}

impl JoinConfig {
    pub fn derive(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x4A4F_494E);
        let mut pick = |n: u64| rng.next_u64() % n;
        JoinConfig {
            nodes: [3, 5, 5, 5, 7, 9][pick(6) as usize],
            start_spread: Duration::from_millis(pick(3_000)),
            max_latency: Duration::from_millis([2, 20, 100, 250][pick(4) as usize]),
            fast_swim: pick(4) != 0,
            stalls: pick(8) as usize,
            stall_max: Duration::from_millis(200 + pick(2_800)),
        }
    }
}

pub fn describe_join(seed: u64) -> String {
    format!("{:?}", JoinConfig::derive(seed))
}

pub fn join_storm(seed: u64) -> Result<Outcome, String> {
    let config = JoinConfig::derive(seed);
    let builder = sim_builder(seed, config.max_latency);
    let mut sim = builder.build();
    let mut trace = Trace::default();
    let mut counters: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5354_4F52);
    let mut pick = |n: u64| rng.next_u64() % n.max(1);

    let swim = if config.fast_swim {
        SwimTiming {
            probe_period: Duration::from_millis(500),
            probe_rtt: Duration::from_millis(200),
            suspect_to_down: Duration::from_millis(1_500),
            ..SwimTiming::default()
        }
    } else {
        SwimTiming::default()
    };
    let probes: Probes = Rc::new(RefCell::new(vec![Probe::default(); config.nodes]));
    let _fence_at_exit = FenceAll(probes.clone());
    let spread_ms = config.start_spread.as_millis() as u64;
    let mut last_start_ms = 0;
    for i in 0..config.nodes {
        let delay_ms = pick(spread_ms + 1);
        last_start_ms = last_start_ms.max(delay_ms);
        trace.record(&format!("node{i} starts at {delay_ms} ms"));
        let start = Start {
            swim,
            delay: Duration::from_millis(delay_ms),
        };
        add_node(&mut sim, seed, i, &probes, host(i), start);
    }
    // Stalls: (start, end, node), within the first 10 s.
    let stall_max_ms = config.stall_max.as_millis() as u64;
    let mut stalls: Vec<(u64, u64, usize)> = (0..config.stalls)
        .map(|_| {
            let at = pick(10_000);
            (
                at,
                at + 100 + pick(stall_max_ms),
                pick(config.nodes as u64) as usize,
            )
        })
        .collect();
    stalls.sort();
    let quiet_from_ms = stalls
        .iter()
        .map(|s| s.1)
        .max()
        .unwrap_or(0)
        .max(last_start_ms);
    let deadline_ms = quiet_from_ms + JOIN_WITHIN.as_millis() as u64;

    let names: Vec<String> = (0..config.nodes).map(host).collect();
    let mut stalled: Vec<u64> = vec![0; config.nodes];
    // A link is held while either of its ends is stalled.
    let set_stall = |sim: &mut turmoil::Sim<'_>, stalled: &[u64], node: usize, on: bool| {
        for (j, other) in names.iter().enumerate() {
            if j == node {
                continue;
            }
            if on {
                sim.hold(names[node].as_str(), other.as_str());
            } else if stalled[j] == 0 {
                sim.release(names[node].as_str(), other.as_str());
            }
        }
    };
    loop {
        sim.step().map_err(|e| format!("simulation error: {e}"))?;
        let now_ms = sim.elapsed().as_millis() as u64;
        for &(from, to, node) in &stalls {
            let should = now_ms >= from && now_ms < to;
            let was = stalled[node] > 0;
            if should && stalled[node] == 0 {
                stalled[node] = to;
                set_stall(&mut sim, &stalled, node, true);
                *counters.entry("stalls").or_default() += 1;
                trace.record(&format!("{now_ms} stall node{node}"));
            } else if was && now_ms >= stalled[node] {
                stalled[node] = 0;
                set_stall(&mut sim, &stalled, node, false);
                trace.record(&format!("{now_ms} resume node{node}"));
            }
        }
        // Judged once the last node has started and the last stall ended
        // (a stall may break a membership that had formed).
        if now_ms > quiet_from_ms && joined(&probes, config.nodes) {
            counters.insert("join_ms_sum", now_ms - quiet_from_ms);
            trace.record(&format!("joined at {now_ms} ms"));
            break;
        }
        if now_ms > deadline_ms {
            return Err(format!(
                "the {} nodes did not all see each other alive within {JOIN_WITHIN:?} of the last start and stall: {}",
                config.nodes,
                describe_views(&probes, config.nodes)
            ));
        }
    }
    counters.insert("nodes", config.nodes as u64);
    Ok(Outcome {
        trace: trace.finish(),
        counters,
    })
}

/// Stricter than [`converged`], as `five_nodes_join…` counts: every node
/// lists each other node's current identity alive, and nothing else alive
/// (no stale identity of a restarted member counted twice).
fn joined(probes: &Probes, nodes: usize) -> bool {
    if !converged(probes, nodes) {
        return false;
    }
    probes.borrow()[..nodes].iter().all(|probe| {
        probe.view.as_ref().is_some_and(|view| {
            view.members()
                .iter()
                .filter(|m| m.state == MemberState::Alive)
                .count()
                == nodes - 1
        })
    })
}
