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
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::cluster::Cluster;
use crate::peer::MemberView;
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
            "Bytes of object bodies received (puts)",
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

/// The counters and state the node's components keep, read at each
/// scrape.
#[derive(Debug)]
pub struct StateCollector {
    pub(crate) store: Arc<ChunkStore>,
    pub(crate) cluster: Arc<Cluster>,
    pub(crate) members: Arc<MemberView>,
}

fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let usage = self.store.usage();
        let gauges: [(&str, &str, Option<&Unit>, u64); 4] = [
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
            let gauge = ConstGauge::new(value as i64);
            gauge.encode(encoder.encode_descriptor(name, help, unit, gauge.metric_type())?)?;
        }
        let store = &self.store.counters;
        let replication = &self.cluster.counters;
        let repair = &self.cluster.repair;
        let scrub = &self.cluster.scrub;
        let counters: [(&str, &str, &AtomicU64); 14] = [
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
        for (name, help, counter) in counters {
            let counter = ConstCounter::new(read(counter));
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
        Ok(())
    }
}

/// A node's registry: its requests' metrics and its components' state.
pub fn registry(requests: &RequestMetrics, state: StateCollector) -> Registry {
    let mut registry = Registry::default();
    requests.register(&mut registry);
    registry.register_collector(Box::new(state));
    registry
}
