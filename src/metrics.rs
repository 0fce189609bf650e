//! What a node counts, in one Prometheus registry (prometheus-client),
//! scraped from the admin listener's `/metrics` (`dfs-node serve
//! --admin-listen`).
//!
//! Components keep the counters they own where they are (the store's,
//! replication's, repair's and scrub's atomics, which `status` reads as
//! well): [`StateCollector`] reads them at each scrape, so nothing is
//! counted twice. Requests of every frontend are counted and timed in
//! [`RequestMetrics`], by protocol, kind and outcome. Names and units
//! follow Prometheus's conventions (`dfs_` prefix, `_seconds`, `_bytes`;
//! counters get `_total` from the encoder).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::cluster::Cluster;
use crate::peer::{MemberView, Peers};
use crate::store::ChunkStore;
use crate::wire::MemberState;

/// Which request, through which protocol, and how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `native` or `s3`.
    pub protocol: &'static str,
    /// The request's kind: a native message (`PutStart`, `Get`, ...) or
    /// an HTTP method of S3 (`GET`, `PUT`, ...).
    pub kind: String,
    /// `ok`, `refused` (the client's error) or `failed` (the node's).
    pub outcome: &'static str,
}

/// How a request ended, for [`RequestLabels::outcome`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// The client's error (bad input, not found, forbidden).
    Refused,
    /// The node's (a quorum out of reach, a disk error).
    Failed,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
        }
    }
}

type Timings = Family<RequestLabels, Histogram, fn() -> Histogram>;

fn request_histogram() -> Histogram {
    // 100 µs to about 6.5 s, doubling.
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

/// Requests served, by protocol, kind and outcome; their durations; the
/// bytes of object bodies in and out. Cheap to clone (shared counters).
#[derive(Debug, Clone)]
pub struct RequestMetrics {
    requests: Family<RequestLabels, Counter>,
    seconds: Timings,
    body_bytes_received: Family<ProtocolLabel, Counter>,
    body_bytes_sent: Family<ProtocolLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabel {
    protocol: &'static str,
}

impl Default for RequestMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            seconds: Family::new_with_constructor(request_histogram),
            body_bytes_received: Family::default(),
            body_bytes_sent: Family::default(),
        }
    }
}

impl RequestMetrics {
    /// Count one request that took `micros` and moved `bytes` of object
    /// body, and log it (at debug level: one line per request).
    pub fn record(
        &self,
        protocol: &'static str,
        kind: &str,
        outcome: Outcome,
        micros: u64,
        bytes: u64,
    ) {
        tracing::debug!(
            protocol,
            kind,
            outcome = outcome.label(),
            duration_ms = micros as f64 / 1000.0,
            bytes,
            "request"
        );
        let labels = RequestLabels {
            protocol,
            kind: kind.to_string(),
            outcome: outcome.label(),
        };
        self.requests.get_or_create(&labels).inc();
        self.seconds
            .get_or_create(&labels)
            .observe(micros as f64 / 1e6);
    }

    /// Bytes of object bodies a frontend received (puts).
    pub fn received(&self, protocol: &'static str, bytes: u64) {
        self.body_bytes_received
            .get_or_create(&ProtocolLabel { protocol })
            .inc_by(bytes);
    }

    /// Bytes of object bodies a frontend sent (gets).
    pub fn sent(&self, protocol: &'static str, bytes: u64) {
        self.body_bytes_sent
            .get_or_create(&ProtocolLabel { protocol })
            .inc_by(bytes);
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "dfs_requests",
            "Requests served, by protocol, kind and outcome",
            self.requests.clone(),
        );
        registry.register_with_unit(
            "dfs_request_duration",
            "How long requests took, from their first byte to their answer",
            Unit::Seconds,
            self.seconds.clone(),
        );
        registry.register_with_unit(
            "dfs_body_received",
            "Bytes of object bodies received (puts; a chunked put counts the chunks it sent, not those it reused)",
            Unit::Bytes,
            self.body_bytes_received.clone(),
        );
        registry.register_with_unit(
            "dfs_body_sent",
            "Bytes of object bodies sent (gets)",
            Unit::Bytes,
            self.body_bytes_sent.clone(),
        );
    }
}

/// Connections open now, by kind, and connections refused, by kind and
/// reason. Cheap to clone (shared counters).
#[derive(Debug, Clone, Default)]
pub struct ConnectionMetrics {
    open: Family<ConnectionLabel, Gauge>,
    refused: Family<RefusalLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    kind: &'static str,
    reason: &'static str,
}

/// Counts one open connection until dropped.
#[derive(Debug)]
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl ConnectionMetrics {
    /// A connection of `kind` (`client`, `s3`, `admin`) opened; it counts
    /// as open while the guard lives. Peer connections are read from the
    /// peer registry instead.
    pub fn opened(&self, kind: &'static str) -> OpenConnection {
        let gauge = self.open.get_or_create(&ConnectionLabel { kind }).clone();
        gauge.inc();
        OpenConnection(gauge)
    }

    /// A connection of `kind` refused: `handshake` (its key or cluster key
    /// did not authenticate) or `busy` (the node's limit was reached).
    pub fn refused(&self, kind: &'static str, reason: &'static str) {
        self.refused
            .get_or_create(&RefusalLabels { kind, reason })
            .inc();
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "dfs_connections_open",
            "Connections open now, by kind (peer connections: dfs_peer_connections)",
            self.open.clone(),
        );
        registry.register(
            "dfs_connections_refused",
            "Connections refused, by kind and reason (handshake: not authenticated; busy: at the limit)",
            self.refused.clone(),
        );
    }
}

/// The value of a gauge that could not be read this scrape: the series is
/// left out.
pub const UNKNOWN: u64 = u64::MAX;

/// How long the disk takes to make writes durable, and how full it is.
#[derive(Debug, Clone)]
pub struct DiskMetrics {
    syncs: Family<SyncLabel, Histogram, fn() -> Histogram>,
    /// Refreshed before each scrape (see `Node::encode_metrics`);
    /// [`UNKNOWN`] where the file system cannot tell.
    pub(crate) total_bytes: Arc<AtomicU64>,
    pub(crate) free_bytes: Arc<AtomicU64>,
    pub(crate) index_bytes: Arc<AtomicU64>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SyncLabel {
    kind: &'static str,
}

fn sync_histogram() -> Histogram {
    // 50 µs to about 3.3 s, doubling: a cache-backed SSD syncs in tens of
    // microseconds, a loaded spinning disk in tens of milliseconds.
    Histogram::new(exponential_buckets(0.00005, 2.0, 17))
}

impl Default for DiskMetrics {
    fn default() -> Self {
        Self {
            syncs: Family::new_with_constructor(sync_histogram),
            total_bytes: Arc::default(),
            free_bytes: Arc::default(),
            index_bytes: Arc::default(),
        }
    }
}

impl DiskMetrics {
    /// Observe syncs for [`TimedSyncs`](crate::env::timed_syncs::TimedSyncs).
    pub fn sync_observer(&self) -> crate::env::timed_syncs::SyncObserver {
        let syncs = self.syncs.clone();
        Arc::new(move |kind, micros| {
            let kind = match kind {
                crate::env::timed_syncs::SyncKind::File => "file",
                crate::env::timed_syncs::SyncKind::Dir => "dir",
            };
            syncs
                .get_or_create(&SyncLabel { kind })
                .observe(micros as f64 / 1e6);
        })
    }

    fn register(&self, registry: &mut Registry) {
        registry.register_with_unit(
            "dfs_disk_sync_duration",
            "How long the disk took to make a file's data (fdatasync) or a directory's entries (fsync) durable",
            Unit::Seconds,
            self.syncs.clone(),
        );
    }
}

/// The counters and state the node's components keep, read at each
/// scrape.
#[derive(Debug)]
pub struct StateCollector {
    pub(crate) store: Arc<ChunkStore>,
    pub(crate) cluster: Arc<Cluster>,
    pub(crate) members: Arc<MemberView>,
    pub(crate) peers: Arc<Peers>,
    pub(crate) disk: DiskMetrics,
}

fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let usage = self.store.usage();
        let gauges: [(&str, &str, Option<&Unit>, u64); 9] = [
            (
                "dfs_disk_capacity",
                "Size of the file system holding the data dir (absent: unknown)",
                Some(&Unit::Bytes),
                read(&self.disk.total_bytes),
            ),
            (
                "dfs_disk_free",
                "Bytes of that file system still free for this node (absent: unknown)",
                Some(&Unit::Bytes),
                read(&self.disk.free_bytes),
            ),
            (
                "dfs_index",
                "Size of the version index file on disk",
                Some(&Unit::Bytes),
                read(&self.disk.index_bytes),
            ),
            (
                "dfs_peer_connections",
                "Connections to other nodes open now",
                None,
                self.peers.connected() as u64,
            ),
            (
                "dfs_store_blobs",
                "Blobs (chunks and manifests) in this node's store",
                None,
                usage.blobs,
            ),
            (
                "dfs_store",
                "Sealed bytes in this node's store",
                Some(&Unit::Bytes),
                usage.bytes,
            ),
            (
                "dfs_store_small_blob_table_distrusted",
                "1 once the small-blob table is distrusted (a failed disk sync of it, or a rotten page): its blobs are then written again as files; check the disk",
                None,
                u64::from(self.store.small_blob_table_distrusted()),
            ),
            (
                "dfs_repair_under_replicated_blobs",
                "Blobs held here that had fewer than R copies at the last repair scan",
                None,
                read(&self.cluster.repair.under_replicated),
            ),
            (
                "dfs_repair_under_replicated",
                "Their plaintext bytes",
                Some(&Unit::Bytes),
                read(&self.cluster.repair.under_replicated_bytes),
            ),
        ];
        for (name, help, unit, value) in gauges {
            if value == UNKNOWN {
                continue;
            }
            let gauge = ConstGauge::new(value as i64);
            gauge.encode(encoder.encode_descriptor(name, help, unit, gauge.metric_type())?)?;
        }
        let store = &self.store.counters;
        let replication = &self.cluster.counters;
        let repair = &self.cluster.repair;
        let scrub = &self.cluster.scrub;
        let counters: [(&str, &str, &AtomicU64); 17] = [
            (
                "dfs_membership_changes",
                "Times a member joined, changed state (alive, suspect, down) or was forgotten, as this node saw it",
                self.members.changes_counter(),
            ),
            (
                "dfs_store_quarantined_blobs",
                "Blobs found corrupt and moved to quarantine",
                &store.quarantined,
            ),
            (
                "dfs_store_transient_read_faults",
                "Reads that failed verification once and then passed",
                &store.transient_read_faults,
            ),
            (
                "dfs_read_repairs",
                "Blob copies a read found missing or corrupt and repaired",
                &replication.read_repairs,
            ),
            (
                "dfs_writes_below_write_quorum",
                "Writes acknowledged with fewer than W copies because this node had no record of another member",
                &replication.writes_below_write_quorum,
            ),
            (
                "dfs_chunks_reused",
                "Chunks puts referenced from the name's current version instead of receiving them",
                &replication.chunks_reused,
            ),
            (
                "dfs_stand_ins",
                "Blobs stored outside their R owners because an owner was down",
                &replication.stand_ins,
            ),
            (
                "dfs_sync_rounds",
                "Anti-entropy rounds completed",
                &replication.sync_rounds,
            ),
            (
                "dfs_sync_passes",
                "Anti-entropy passes completed (every key compared with one peer)",
                &replication.sync_passes,
            ),
            (
                "dfs_sync_records_sent",
                "Records sent to peers by anti-entropy",
                &replication.sync_records_sent,
            ),
            (
                "dfs_sync_records_received",
                "Records received by anti-entropy that changed this index",
                &replication.sync_records_received,
            ),
            (
                "dfs_repair_copies_made",
                "Copies sent to owners that lacked them",
                &repair.copies_made,
            ),
            (
                "dfs_repair_copies_dropped",
                "Copies dropped by this node, no longer an owner",
                &repair.copies_dropped,
            ),
            (
                "dfs_gc_blobs_collected",
                "Unreferenced blobs deleted",
                &repair.garbage_collected,
            ),
            (
                "dfs_scrub_blobs_verified",
                "Blobs the scrub read back verified",
                &scrub.blobs_verified,
            ),
            (
                "dfs_scrub_corrupt_found",
                "Blobs the scrub found corrupt",
                &scrub.corrupt_found,
            ),
            (
                "dfs_scrub_passes",
                "Complete scrub passes over the store",
                &scrub.passes,
            ),
        ];
        let (merges, commits) = self.cluster.index_merge_counts();
        let (small_commits, small_changes) = self.store.small_blob_commits();
        let values = counters
            .into_iter()
            .map(|(name, help, counter)| (name, help, read(counter)))
            .chain([
                (
                    "dfs_peer_frames_sent",
                    "Frames sent to other nodes (membership, replication, anti-entropy, repair)",
                    read(&self.peers.traffic().frames_sent),
                ),
                (
                    "dfs_peer_frames_received",
                    "Frames received from other nodes",
                    read(&self.peers.traffic().frames_received),
                ),
                (
                    "dfs_index_merges",
                    "Merges of records into the version index (puts, removals, pushes, anti-entropy)",
                    merges,
                ),
                (
                    "dfs_index_commits",
                    "Transactions that applied those merges, each one disk sync when it changed something (group commit puts several merges in one)",
                    commits,
                ),
                (
                    "dfs_small_blob_changes",
                    "Blobs written to or removed from the small-blob table",
                    small_changes,
                ),
                (
                    "dfs_small_blob_commits",
                    "Transactions of the small-blob table, each one disk sync (group commit puts several changes in one)",
                    small_commits,
                ),
            ]);
        for (name, help, value) in values {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        let mut states = [0i64; 3];
        // This node counts itself alive.
        states[0] = 1;
        for member in self.members.members() {
            states[match member.state {
                MemberState::Alive => 0,
                MemberState::Suspect => 1,
                MemberState::Down => 2,
            }] += 1;
        }
        let mut family = encoder.encode_descriptor(
            "dfs_members",
            "Cluster members as this node sees them (itself included), by state",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (state, count) in ["alive", "suspect", "down"].into_iter().zip(states) {
            let gauge = ConstGauge::new(count);
            gauge.encode(family.encode_family(&[("state", state)])?)?;
        }
        // One series per member: bounded by the cluster's size.
        let mut family = encoder.encode_descriptor(
            "dfs_sync_last_complete_pass_timestamp_seconds",
            "When the last complete anti-entropy pass with each member ended (unix time; absent: none since start)",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        let now_ms = self.cluster.unix_ms();
        for (peer, ago_ms) in self.cluster.last_complete_passes() {
            let gauge = ConstGauge::new(now_ms.saturating_sub(ago_ms) as f64 / 1000.0);
            let peer = peer.short();
            gauge.encode(family.encode_family(&[("peer", peer.as_str())])?)?;
        }
        Ok(())
    }
}

/// A node's registry: its requests' metrics and its components' state.
pub fn registry(
    requests: &RequestMetrics,
    connections: &ConnectionMetrics,
    state: StateCollector,
) -> Registry {
    let mut registry = Registry::default();
    requests.register(&mut registry);
    connections.register(&mut registry);
    state.disk.register(&mut registry);
    registry.register_collector(Box::new(state));
    registry
}
