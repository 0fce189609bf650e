//! Scenario: replicated, versioned storage under faults (DESIGN §8, §9).
//!
//! 3 to 7 nodes form a cluster (R and W derived from the seed). Several
//! clients, each with a session sticky to one node (so different clients
//! go through different nodes), put, overwrite, get (sometimes with
//! `--quorum`), remove, list versions, prune and restore a few names, while
//! the [`Nemesis`] partitions, cuts one way, holds, crashes and restarts
//! nodes, links lose messages and add latency, and the disks tear writes,
//! sync early, fail with EIO and return corrupt reads. Then everything
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

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, UNIX_EPOCH};

use dfs::cas::ContentId;
use dfs::client::{Client, ClientError};
use dfs::cluster::{Cluster, ReplicationCounters};
use dfs::env::Env;
use dfs::meta::{VersionId, VersionRecord, VersionSelector};
use dfs::node::{NodeConfig, Server};
use dfs::peer::MemberView;
use dfs::placement::Replication;
use dfs::wire::GetTarget;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use crate::env::{DiskFaults, sim_env};
use crate::harness::{Outcome, Trace};
use crate::nemesis::{Crashable, Faults, Nemesis};
use crate::workload::{cluster_key, expected_content_id, random_content, with_timeout};

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
        Config {
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
            },
        }
    }
}

pub fn describe(seed: u64) -> String {
    format!("{:?}", Config::derive(seed))
}

fn host(i: usize) -> String {
    format!("node{i}")
}

/// What the harness keeps of one node: its current disk's fault switches
/// and every incarnation's replication counters.
#[derive(Default)]
struct Probe {
    faults: Option<Arc<DiskFaults>>,
    clusters: Vec<Arc<Cluster>>,
    disks: Vec<Arc<DiskFaults>>,
    view: Option<Arc<MemberView>>,
}

type Probes = Rc<RefCell<Vec<Probe>>>;

struct Nodes(Probes);

impl Crashable for Nodes {
    /// Only a node that has seen another member, so that it rejoins.
    fn may_crash(&self, i: usize) -> bool {
        self.0.borrow()[i]
            .view
            .as_ref()
            .is_some_and(|v| !v.members().is_empty())
    }

    fn before_crash(&self, i: usize) {
        if let Some(faults) = &self.0.borrow()[i].faults {
            faults.fenced.store(true, Ordering::SeqCst);
        }
    }
}

fn add_node(
    sim: &mut turmoil::Sim<'_>,
    seed: u64,
    index: usize,
    config: &Config,
    probes: &Probes,
    faults_on: &Rc<Cell<bool>>,
) {
    let probes = probes.clone();
    let faults_on = faults_on.clone();
    let config = config.clone();
    let incarnation = Rc::new(RefCell::new(0u64));
    sim.host(host(index), move || {
        let n = {
            let mut n = incarnation.borrow_mut();
            *n += 1;
            *n - 1
        };
        let faults = DiskFaults::new(config.io_error_ppm, config.corruption_ppm);
        faults.enabled.store(faults_on.get(), Ordering::Relaxed);
        let env = sim_env(
            seed.wrapping_mul(7_919)
                .wrapping_add((index as u64) << 32)
                .wrapping_add(n),
            faults.clone(),
        );
        let node_config = NodeConfig {
            data_dir: "/data".into(),
            listen: format!("0.0.0.0:{PORT}"),
            bootstrap: if index == 0 {
                Vec::new()
            } else {
                vec![format!("{}:{PORT}", host(0))]
            },
            advertise: Some(format!("{}:{PORT}", host(index))),
            cluster_key: cluster_key(seed),
            swim: Default::default(),
            replication: Replication::new(config.replicas, config.write_quorum)
                .expect("derived settings are valid"),
        };
        let probes = probes.clone();
        async move {
            {
                let mut probes = probes.borrow_mut();
                probes[index].faults = Some(faults.clone());
                probes[index].disks.push(faults);
            }
            // Like a service manager: a start that fails (an injected disk
            // error while opening the data dir) is retried.
            let server = loop {
                match Server::start(env.clone(), node_config.clone()).await {
                    Ok(server) => break server,
                    Err(error) => {
                        tracing::warn!(%error, "node failed to start; restarting it in 1 s");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            };
            {
                let mut probes = probes.borrow_mut();
                probes[index].view = Some(server.node().members().clone());
                probes[index].clusters.push(server.node().cluster().clone());
            }
            server.run(std::future::pending()).await;
            Ok(())
        }
    });
}

/// What the clients did, for the checkers.
#[derive(Default)]
struct History {
    attempted: BTreeMap<String, BTreeSet<ContentId>>,
    removes_attempted: BTreeSet<String>,
    /// Names with a prune whose outcome is unknown (it may have dropped
    /// any version but the newest).
    prunes_indeterminate: BTreeSet<String>,
    /// The highest floor an acknowledged prune set, by name.
    floors: BTreeMap<String, VersionId>,
    acknowledged: Vec<VersionRecord>,
    contents: BTreeMap<ContentId, Vec<u8>>,
    violations: Vec<String>,
    trace: Trace,
    indeterminate: u64,
    quorum_reads: u64,
    restores: u64,
    prunes: u64,
}

impl History {
    fn explained(&self, record: &VersionRecord) -> bool {
        match record.content {
            Some(content) => self
                .attempted
                .get(&record.name)
                .is_some_and(|c| c.contains(&content)),
            None => self.removes_attempted.contains(&record.name),
        }
    }

    /// No invention: each listed record was written by some operation.
    fn check_explained(&mut self, name: &str, records: &[VersionRecord]) {
        for record in records {
            if record.name != name || !self.explained(record) {
                self.violations.push(format!(
                    "no invention: versions {name} lists {record:?}, which no operation wrote"
                ));
            }
        }
    }
}

async fn connect(env: &Env, seed: u64, node: usize) -> Result<Client, ClientError> {
    Client::connect(env, &format!("{}:{PORT}", host(node)), &cluster_key(seed)).await
}

/// One client session, sticky to one node.
async fn session(
    seed: u64,
    client: usize,
    config: Config,
    history: Rc<RefCell<History>>,
) -> turmoil::Result {
    let env = sim_env(seed ^ (0xC11E_0000 + client as u64), DiskFaults::new(0, 0));
    let node = client % config.nodes;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x574F_524B ^ ((client as u64) << 40));
    // The newest version of each name this session has seen.
    let mut seen: BTreeMap<String, VersionId> = BTreeMap::new();
    let mut observe = |h: &mut History, name: &str, vid: VersionId, what: &str| {
        if let Some(previous) = seen.get(name)
            && vid < *previous
        {
            h.violations.push(format!(
                "monotonic reads: client {client} saw {name} at {previous} and then at {vid} ({what})"
            ));
        }
        let newest = seen.entry(name.to_string()).or_insert(vid);
        *newest = (*newest).max(vid);
    };
    // Let the cluster form first.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for op in 0..config.operations {
        let name = format!("file-{}", rng.next_u64() % NAMES);
        let tag = format!("c{client} {op}");
        match rng.next_u64() % 20 {
            0..=8 => {
                let bytes = random_content(
                    &mut rng,
                    config.file_bytes_max,
                    8,
                    &history.borrow().contents,
                );
                let content = expected_content_id(&bytes);
                {
                    let mut h = history.borrow_mut();
                    h.attempted.entry(name.clone()).or_default().insert(content);
                    h.contents.insert(content, bytes.clone());
                }
                let result = with_timeout(OPERATION_TIMEOUT, async {
                    let mut c = connect(&env, seed, node).await?;
                    c.put(&name, &mut bytes.as_slice(), &mut |_| {}).await
                })
                .await;
                let mut h = history.borrow_mut();
                match result {
                    Ok(record) => {
                        if record.content != Some(content) || record.name != name {
                            h.violations
                                .push(format!("put {name} acknowledged {record:?}"));
                        }
                        observe(&mut h, &name, record.vid, "its own put");
                        h.trace
                            .record(&format!("{tag} put {name} ok {}", record.vid));
                        h.acknowledged.push(record);
                    }
                    Err(error) => {
                        h.indeterminate += 1;
                        h.trace.record(&format!("{tag} put {name} failed {error}"));
                    }
                }
            }
            9..=13 => {
                let quorum = rng.next_u64().is_multiple_of(3);
                let mut out = Vec::new();
                let result = with_timeout(OPERATION_TIMEOUT, async {
                    let mut c = connect(&env, seed, node).await?;
                    c.get_with(
                        GetTarget::Name(name.clone()),
                        None,
                        quorum,
                        &mut out,
                        &mut |_, _| {},
                    )
                    .await
                })
                .await;
                let mut h = history.borrow_mut();
                if quorum {
                    h.quorum_reads += 1;
                }
                match result {
                    Ok(fetched) => {
                        let explained = h
                            .attempted
                            .get(&name)
                            .is_some_and(|c| c.contains(&fetched.content));
                        if !explained {
                            h.violations.push(format!(
                                "no invention: get {name} returned content {} never put under that name",
                                fetched.content
                            ));
                        } else if h.contents.get(&fetched.content) != Some(&out) {
                            h.violations.push(format!(
                                "integrity: get {name} returned bytes that differ from what was put"
                            ));
                        }
                        if let Some(record) = &fetched.record {
                            observe(&mut h, &name, record.vid, "a get");
                        }
                        h.trace
                            .record(&format!("{tag} get {name} ok {}", fetched.content));
                    }
                    Err(error) => {
                        if error.contains("verification failed") {
                            h.violations.push(format!("integrity: get {name}: {error}"));
                        }
                        h.trace.record(&format!("{tag} get {name} failed {error}"));
                    }
                }
            }
            14 => {
                history.borrow_mut().removes_attempted.insert(name.clone());
                let result = with_timeout(OPERATION_TIMEOUT, async {
                    let mut c = connect(&env, seed, node).await?;
                    c.remove(&name).await
                })
                .await;
                let mut h = history.borrow_mut();
                match result {
                    Ok(record) => {
                        observe(&mut h, &name, record.vid, "its own remove");
                        h.trace
                            .record(&format!("{tag} rm {name} ok {}", record.vid));
                        h.acknowledged.push(record);
                    }
                    Err(error) => h.trace.record(&format!("{tag} rm {name} failed {error}")),
                }
            }
            15..=16 => {
                let result = with_timeout(OPERATION_TIMEOUT, async {
                    let mut c = connect(&env, seed, node).await?;
                    c.versions(&name).await
                })
                .await;
                let mut h = history.borrow_mut();
                match result {
                    Ok((records, _)) => {
                        h.check_explained(&name, &records);
                        if let Some(newest) = records.first() {
                            observe(&mut h, &name, newest.vid, "versions");
                        }
                        h.trace
                            .record(&format!("{tag} versions {name} ok {}", records.len()));
                    }
                    Err(error) => h
                        .trace
                        .record(&format!("{tag} versions {name} failed {error}")),
                }
            }
            17 => {
                let keep = 2 + (rng.next_u64() % 3) as u32;
                history.borrow_mut().prunes += 1;
                let result = with_timeout(OPERATION_TIMEOUT, async {
                    let mut c = connect(&env, seed, node).await?;
                    c.prune(&name, keep).await
                })
                .await;
                let mut h = history.borrow_mut();
                match result {
                    Ok((floor, removed)) => {
                        if let Some(floor) = floor {
                            let entry = h.floors.entry(name.clone()).or_insert(floor);
                            *entry = (*entry).max(floor);
                        }
                        h.trace
                            .record(&format!("{tag} prune {name} keep {keep} ok {removed}"));
                    }
                    Err(error) => {
                        h.prunes_indeterminate.insert(name.clone());
                        h.trace
                            .record(&format!("{tag} prune {name} failed {error}"));
                    }
                }
            }
            _ => {
                // Restore a random acknowledged version of this name.
                let candidates: Vec<VersionRecord> = history
                    .borrow()
                    .acknowledged
                    .iter()
                    .filter(|r| r.name == name && !r.is_tombstone())
                    .cloned()
                    .collect();
                if candidates.is_empty() {
                    continue;
                }
                let old = candidates[(rng.next_u64() % candidates.len() as u64) as usize].clone();
                let selector: VersionSelector = old.vid.to_string().parse().expect("ids parse");
                history.borrow_mut().restores += 1;
                let result = with_timeout(OPERATION_TIMEOUT, async {
                    let mut c = connect(&env, seed, node).await?;
                    c.restore(&name, selector).await
                })
                .await;
                let mut h = history.borrow_mut();
                match result {
                    Ok(record) => {
                        if record.content != old.content {
                            h.violations.push(format!(
                                "restore of {} made {record:?}, not the old content",
                                old.vid
                            ));
                        }
                        observe(&mut h, &name, record.vid, "its own restore");
                        h.trace
                            .record(&format!("{tag} restore {name} ok {}", record.vid));
                        h.acknowledged.push(record);
                    }
                    Err(error) => h
                        .trace
                        .record(&format!("{tag} restore {name} failed {error}")),
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.next_u64() % 500)).await;
    }
    Ok(())
}

/// After healing: convergence, durability, no invention, liveness.
async fn check(seed: u64, config: Config, history: Rc<RefCell<History>>) -> turmoil::Result {
    let env = sim_env(seed ^ 0xC11E_C4EC, DiskFaults::new(0, 0));
    let names: Vec<String> = (0..NAMES).map(|i| format!("file-{i}")).collect();

    // Liveness: a put and a get through every node (membership may need a
    // moment to settle after the heal, so a few tries each).
    for node in 0..config.nodes {
        let bytes = format!("liveness probe through node {node}").into_bytes();
        let name = format!("liveness-{node}");
        let mut ok = false;
        for _ in 0..10 {
            let result = with_timeout(OPERATION_TIMEOUT, async {
                let mut c = connect(&env, seed, node).await?;
                c.put(&name, &mut bytes.as_slice(), &mut |_| {}).await?;
                let mut out = Vec::new();
                c.get(
                    GetTarget::Name(name.clone()),
                    None,
                    &mut out,
                    &mut |_, _| {},
                )
                .await?;
                Ok(out)
            })
            .await;
            if result.as_ref().is_ok_and(|out| *out == bytes) {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        if !ok {
            history.borrow_mut().violations.push(format!(
                "liveness: no put and get through node{node} succeeded after healing"
            ));
        }
    }

    // Convergence: every node lists the same versions of every name.
    let started_ms = env.clock.unix_ms();
    let listings = loop {
        let mut listings: Vec<BTreeMap<String, Vec<VersionRecord>>> = Vec::new();
        for node in 0..config.nodes {
            let mut listing = BTreeMap::new();
            for name in &names {
                let result = with_timeout(OPERATION_TIMEOUT, async {
                    let mut c = connect(&env, seed, node).await?;
                    c.versions(name).await
                })
                .await;
                match result {
                    Ok((records, _)) => {
                        listing.insert(name.clone(), records);
                    }
                    Err(error) if error.contains("no file named") => {
                        listing.insert(name.clone(), Vec::new());
                    }
                    Err(_) => {}
                }
            }
            listings.push(listing);
        }
        let complete = listings.iter().all(|l| l.len() == names.len());
        if complete && listings.windows(2).all(|w| w[0] == w[1]) {
            break Some(listings.swap_remove(0));
        }
        if env.clock.unix_ms().saturating_sub(started_ms) > QUIESCE_WITHIN.as_millis() as u64 {
            let summary: Vec<String> = listings
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    let counts: Vec<usize> = l.values().map(Vec::len).collect();
                    format!("node{i}: {counts:?}")
                })
                .collect();
            history.borrow_mut().violations.push(format!(
                "convergence: the version lists still differ {QUIESCE_WITHIN:?} after healing ({})",
                summary.join(", ")
            ));
            break None;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let Some(listing) = listings else {
        return Ok(());
    };

    // No invention and durability.
    let acknowledged = history.borrow().acknowledged.clone();
    for (name, records) in &listing {
        history.borrow_mut().check_explained(name, records);
        let listed: BTreeSet<VersionId> = records.iter().map(|r| r.vid).collect();
        let oldest = records.last().map(|r| r.vid);
        let h = history.borrow();
        let pruned_below = if h.prunes_indeterminate.contains(name) {
            oldest
        } else {
            h.floors.get(name).copied()
        };
        drop(h);
        for lost in acknowledged.iter().filter(|r| {
            &r.name == name
                && !listed.contains(&r.vid)
                && pruned_below.is_none_or(|floor| r.vid >= floor)
        }) {
            history.borrow_mut().violations.push(format!(
                "durability: acknowledged version {} of {name} is gone",
                lost.vid
            ));
        }
    }
    for (i, record) in acknowledged
        .iter()
        .filter(|r| !r.is_tombstone())
        .enumerate()
    {
        let retained = listing
            .get(&record.name)
            .is_some_and(|records| records.iter().any(|r| r.vid == record.vid));
        if !retained {
            continue;
        }
        let node = i % config.nodes;
        let selector: VersionSelector = record.vid.to_string().parse().expect("ids parse");
        let mut out = Vec::new();
        let result = with_timeout(OPERATION_TIMEOUT, async {
            let mut c = connect(&env, seed, node).await?;
            c.get(
                GetTarget::Name(record.name.clone()),
                Some(selector),
                &mut out,
                &mut |_, _| {},
            )
            .await
        })
        .await;
        let mut h = history.borrow_mut();
        match result {
            Ok(fetched) => {
                let content = record.content.expect("not a tombstone");
                if fetched.content != content || h.contents.get(&content) != Some(&out) {
                    h.violations.push(format!(
                        "durability: version {} of {} reads back different bytes through node{node}",
                        record.vid, record.name
                    ));
                }
            }
            Err(error) => h.violations.push(format!(
                "durability: version {} of {} unreadable through node{node}: {error}",
                record.vid, record.name
            )),
        }
    }
    Ok(())
}

pub fn run(seed: u64) -> Result<Outcome, String> {
    let config = Config::derive(seed);
    let mut builder = turmoil::Builder::new();
    builder
        .rng_seed(seed)
        .epoch(UNIX_EPOCH + Duration::from_secs(1_790_000_000))
        .enable_random_order()
        .simulation_duration(Duration::from_secs(24 * 3600))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(config.max_latency);
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
            session(seed, client, config.clone(), history.clone()),
        );
    }

    let names: Vec<String> = (0..config.nodes).map(host).collect();
    let mut nemesis = Nemesis::new(seed, config.faults.clone(), names, 4_000);
    if config.fail_rate > 0.0 {
        sim.set_fail_rate(config.fail_rate);
    }
    let nodes = Nodes(probes.clone());
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
    nemesis.heal(&mut sim);
    let healed_ms = sim.elapsed().as_millis() as u64;
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
                ("sync_records_received", &c.sync_records_received),
                ("sync_records_sent", &c.sync_records_sent),
                ("repair_copies", &cluster.repair.copies_made),
                ("rebalance_drops", &cluster.repair.copies_dropped),
            ] {
                *counters.entry(name).or_default() += ReplicationCounters::get(value);
            }
        }
        for disk in &probe.disks {
            *counters.entry("injected_io_errors").or_default() +=
                disk.injected_io_errors.load(Ordering::Relaxed);
            *counters.entry("injected_corruptions").or_default() +=
                disk.injected_corruptions.load(Ordering::Relaxed);
        }
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
    counters.insert("restores", history.restores);
    counters.insert("prunes", history.prunes);
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
