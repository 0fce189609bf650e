//! The nodes of the scenario: each host's start (retried like a service
//! manager would), and what the harness keeps of every incarnation.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use dfs::client::{Client, ClientError};
use dfs::cluster::Cluster;
use dfs::env::Env;
use dfs::node::{NodeConfig, Server};
use dfs::peer::{MemberView, SwimTiming};
use dfs::placement::Replication;

use super::{Config, PORT};
use crate::env::{DiskFaults, DiskState, sim_env_with_clock};
use crate::nemesis::Crashable;
use crate::workload::cluster_key;

pub(super) fn host(i: usize) -> String {
    format!("node{i}")
}

/// What the harness keeps of one node: its current disk's fault switches
/// and every incarnation's replication counters.
#[derive(Default)]
pub(super) struct Probe {
    pub(super) faults: Option<Arc<DiskFaults>>,
    pub(super) clusters: Vec<Arc<Cluster>>,
    pub(super) disks: Vec<Arc<DiskFaults>>,
    pub(super) view: Option<Arc<MemberView>>,
    /// Every incarnation's view (for counters).
    pub(super) views: Vec<Arc<MemberView>>,
    /// How many times this node's disk was lost: its data dir is
    /// `/data` at first, `/data<n>` (empty) after the n-th loss.
    pub(super) disks_lost: u32,
    /// How far this node's wall clock is off (the nemesis moves it).
    pub(super) clock_offset_ms: Arc<AtomicI64>,
    /// Its disk's bit rot, across incarnations.
    pub(super) rot: Arc<DiskState>,
    /// Whether the nemesis rotted files on it (which counts against the
    /// budget of damaged disks, like a loss).
    pub(super) rotted: bool,
}

pub(super) type Probes = Rc<RefCell<Vec<Probe>>>;

pub(super) struct Nodes {
    pub(super) probes: Probes,
    /// How many distinct nodes may lose their disk in one run.
    pub(super) disks_lost_max: usize,
}

impl Crashable for Nodes {
    /// Only a node that has seen another member, so that it rejoins.
    fn may_crash(&self, i: usize) -> bool {
        self.probes.borrow()[i]
            .view
            .as_ref()
            .is_some_and(|v| !v.members().is_empty())
    }

    fn before_crash(&self, i: usize) {
        if let Some(faults) = &self.probes.borrow()[i].faults {
            faults.fenced.store(true, Ordering::SeqCst);
        }
    }

    /// At most `disks_lost_max` distinct nodes lose their disk or have
    /// files rot (the same node may suffer again): every acknowledged write
    /// was on W nodes, so at least one of them keeps a good copy.
    fn lose_disk(&self, i: usize) -> bool {
        let mut probes = self.probes.borrow_mut();
        if !may_damage(&probes, i, self.disks_lost_max) {
            return false;
        }
        probes[i].disks_lost += 1;
        true
    }

    fn set_disk_slow(&self, i: usize, delay_ms: u64) {
        self.probes.borrow()[i]
            .rot
            .slow_ms
            .store(delay_ms, Ordering::Relaxed);
    }

    fn set_disk_full(&self, i: usize, full: bool) {
        self.probes.borrow()[i]
            .rot
            .full
            .store(full, Ordering::Relaxed);
    }

    fn rot_disk(&self, i: usize, files: u64) -> bool {
        let mut probes = self.probes.borrow_mut();
        if !may_damage(&probes, i, self.disks_lost_max) {
            return false;
        }
        probes[i].rotted = true;
        probes[i].rot.pending.fetch_add(files, Ordering::Relaxed);
        true
    }

    fn set_clock_offset(&self, i: usize, offset_ms: i64) {
        self.probes.borrow()[i]
            .clock_offset_ms
            .store(offset_ms, Ordering::Relaxed);
    }
}

/// Whether node `i`'s disk may be damaged: it already was, or fewer than
/// `max` distinct nodes' disks were.
fn may_damage(probes: &[Probe], i: usize, max: usize) -> bool {
    let damaged = |p: &Probe| p.disks_lost > 0 || p.rotted;
    damaged(&probes[i]) || probes.iter().filter(|p| damaged(p)).count() < max
}

pub(super) fn add_node(
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
        let faults = DiskFaults::with_rot(
            config.io_error_ppm,
            config.corruption_ppm,
            probes.borrow()[index].rot.clone(),
        );
        faults.enabled.store(faults_on.get(), Ordering::Relaxed);
        let node_env = sim_env_with_clock(
            seed.wrapping_mul(7_919)
                .wrapping_add((index as u64) << 32)
                .wrapping_add(n),
            faults.clone(),
            probes.borrow()[index].clock_offset_ms.clone(),
        );
        let disks_lost = probes.borrow()[index].disks_lost;
        let node_config = NodeConfig {
            data_dir: match disks_lost {
                0 => "/data".into(),
                n => format!("/data{n}").into(),
            },
            listen: format!("0.0.0.0:{PORT}"),
            // A node on a new disk joins through another node, as an
            // operator replacing a drive would start it.
            bootstrap: match (index, disks_lost) {
                (0, 0) => Vec::new(),
                (0, _) => vec![format!("{}:{PORT}", host(1))],
                _ => vec![format!("{}:{PORT}", host(0))],
            },
            advertise: Some(format!("{}:{PORT}", host(index))),
            cluster_key: cluster_key(seed),
            swim: SwimTiming {
                forget_down_after: config.forget_down_after,
                ..SwimTiming::default()
            },
            replication: Replication::new(config.replicas, config.write_quorum)
                .expect("derived settings are valid"),
            maintenance: config.maintenance,
            disk_free_min_percent: dfs::health::DEFAULT_DISK_FREE_MIN_PERCENT,
            admin_credentials_file: None,
            provisioned_keys: crate::workload::provisioned_keys(seed),
            small_blob_bytes_max: crate::workload::small_blob_bytes_max(seed),
        };
        let probes = probes.clone();
        let env = node_env.env.clone();
        node_env.host_software(async move {
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
                probes[index].views.push(server.node().members().clone());
                probes[index].clusters.push(server.node().cluster().clone());
            }
            server.run(std::future::pending()).await;
            Ok(())
        })
    });
}

pub(super) async fn connect(env: &Env, seed: u64, node: usize) -> Result<Client, ClientError> {
    Client::connect(
        env,
        &format!("{}:{PORT}", host(node)),
        &crate::workload::client_credentials(seed),
    )
    .await
}
