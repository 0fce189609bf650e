//! Replication (DESIGN §8): what a node does with its peers' help.
//!
//! - `blobs`: a blob (chunk or manifest) is stored on its R owners by
//!   rendezvous hashing over the alive members ([`crate::placement`]) and
//!   counts once W of them hold it durably; a read tries the owners in
//!   order, verifies, and repairs a missing or corrupt copy it passed.
//! - `in_flight`: a put keeps the blobs it stored from the garbage
//!   collector until its version is committed, however long it takes.
//! - `records`: a version record (or prune floor) is merged into the
//!   local index, sent to every alive member, and counts once W indexes
//!   hold it durably.
//! - `sync`: anti-entropy. Every few seconds a node compares bucket
//!   digests of its index with a random alive peer and both exchange only
//!   the records the other lacks.
//! - `repair`: the background loop that copies under-replicated blobs to
//!   their owners, drops copies a node no longer owns, and deletes blobs no
//!   retained version references.
//! - `scrub`: the background loop that reads every stored blob back and
//!   quarantines a rotten copy while good ones exist elsewhere.
//! - `keys` and [`Keyring`]: access keys as cluster state, written like
//!   records (W nodes), repaired by a digest exchange in every sync round,
//!   and held in memory for the handshake and every request's permission.
//! - `service`: the peer requests a node answers for the above.
//!
//! A cluster of one is the degenerate case: every blob's only owner is the
//! node itself, and a node that has never had another member writes one
//! copy; once it has (persisted, so a restart does not forget), W.

mod blobs;
mod in_flight;
mod keyring;
mod keys;
mod records;
mod repair;
mod scrub;
mod service;
mod status;
mod sync;

use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use blobs::Stored;
pub use in_flight::PutBlobs;
pub use keyring::Keyring;
pub use keys::KeySyncReport;
pub use repair::{RepairStatus, RepairTask};
pub use scrub::{ScrubStatus, ScrubTask};
pub use service::ClusterService;
pub use status::MemberReport;
pub use sync::{SyncReport, SyncTask};

use crate::cas::ChunkId;
use crate::env::Env;
use crate::keys::NodeId;
use crate::meta::{Hlc, IndexState, VersionId, VersionIndex};
use crate::peer::{MemberView, PeerConnection, PeerError, PeerIdentity, Peers};
use crate::placement::Replication;
use crate::store::{ChunkStore, PutOutcome, SEAL_OVERHEAD_BYTES, SealedBlob, StoreError};
use crate::wire::Message;

/// Tries of one peer request whose connection failed under it.
const REQUEST_ATTEMPTS: u32 = 3;
/// Pause before a retry, times the attempt number.
const REQUEST_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(200);

/// The periods of the background work. Production uses the defaults of
/// [`crate::limits`]; the simulation shortens them so that garbage
/// collection, repair and anti-entropy run (and race) within a seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Maintenance {
    /// How often a node runs an anti-entropy round with one alive peer.
    pub sync_interval: Duration,
    /// How often the repair loop (repair, rebalance, GC) runs.
    pub repair_interval: Duration,
    /// How long a blob must stay unreferenced before it is deleted.
    pub gc_grace: Duration,
    /// How often the scrub verifies its next batch of stored blobs.
    pub scrub_interval: Duration,
}

impl Default for Maintenance {
    fn default() -> Self {
        Self {
            sync_interval: crate::limits::SYNC_INTERVAL,
            repair_interval: crate::limits::REPAIR_INTERVAL,
            gc_grace: crate::limits::GC_GRACE,
            scrub_interval: crate::limits::SCRUB_INTERVAL,
        }
    }
}

/// Why a replicated operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "only {reachable} of the {needed} nodes a write needs are reachable (write quorum {needed}); retry when more nodes are up"
    )]
    TooFewNodes { reachable: usize, needed: usize },
    #[error(
        "{what} reached only {acknowledged} of the {needed} nodes it must be durable on ({detail})"
    )]
    QuorumNotReached {
        what: String,
        acknowledged: usize,
        needed: usize,
        detail: String,
    },
    #[error("no reachable node holds {0}")]
    NotFound(String),
    #[error(
        "{0} was pruned past version {1} while it was written (a prune on another node); put it again"
    )]
    Pruned(String, String),
    #[error(
        "blob {0} failed verification on every node that could be read; the bad copies were quarantined (see the node logs)"
    )]
    Corrupt(String),
    #[error("this node's storage failed: {0}")]
    Local(String),
    #[error("{0}")]
    Clock(String),
    #[error("{0}")]
    Invalid(String),
}

/// Counters of replication work, for `status`, tests and the simulation's
/// "it really happened" checks.
#[derive(Debug, Default)]
pub struct ReplicationCounters {
    /// Blob copies a read found missing or corrupt and repaired.
    pub read_repairs: AtomicU64,
    /// Blobs stored on a node outside their top R owners (an owner was down).
    pub stand_ins: AtomicU64,
    /// Anti-entropy rounds completed.
    pub sync_rounds: AtomicU64,
    /// Anti-entropy passes completed (every key compared with one peer).
    pub sync_passes: AtomicU64,
    /// Records this node sent to a peer in anti-entropy.
    pub sync_records_sent: AtomicU64,
    /// Records this node received in anti-entropy that changed its index.
    pub sync_records_received: AtomicU64,
    /// Chunks that puts coordinated here referenced from a base version
    /// instead of receiving them (chunked puts).
    pub chunks_reused: AtomicU64,
    /// Writes this node acknowledged with fewer than W durable copies,
    /// because it had no record of another member (a new data dir started
    /// without bootstrap): one disk holds them until repair copies them to
    /// the nodes that join.
    pub writes_below_write_quorum: AtomicU64,
}

impl ReplicationCounters {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub(crate) fn bump(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Ordering::Relaxed);
    }
}

/// A blob to store on this node ([`Cluster::put_locally`]).
enum LocalPut {
    /// Sealed here.
    Sealed(SealedBlob),
    /// As a peer sent it: stored only if its tag checks for `id`.
    FromPeer { id: ChunkId, sealed: Bytes },
}

/// One node's view of the cluster, and its replicated operations.
#[derive(Debug)]
pub struct Cluster {
    env: Env,
    me: NodeId,
    replication: Replication,
    peers: Arc<Peers>,
    members: Arc<MemberView>,
    store: Arc<ChunkStore>,
    index: Arc<VersionIndex>,
    hlc: Mutex<Hlc>,
    maintenance: Maintenance,
    /// Per member: when the last *complete* anti-entropy pass with it
    /// started and ended (monotonic ms), a pass being rounds from the first key
    /// to the last without a failure. After such a pass this node holds
    /// every record the member held when the pass started. The GC deletes
    /// a blob only after a complete pass with every member since it first
    /// saw the blob unreferenced (see `repair`).
    synced_with: Mutex<BTreeMap<NodeId, (u64, u64)>>,
    /// Per member, contents of its records that the latest complete pass
    /// with it refused as from beyond the clock offset: the GC counts them
    /// as referenced (see `sync::pass_completed`). Bounded by
    /// `DEFERRED_CONTENTS_MAX` per member.
    deferred_contents: Mutex<BTreeMap<NodeId, std::collections::BTreeSet<crate::cas::ContentId>>>,
    /// Bounds blob writes submitted to the disk (see
    /// [`DISK_WRITES_IN_FLIGHT`](crate::limits::DISK_WRITES_IN_FLIGHT)).
    disk_writes: Arc<tokio::sync::Semaphore>,
    /// Slots for index merges ([`crate::limits::INDEX_MERGES_IN_FLIGHT`]).
    index_merges: Arc<tokio::sync::Semaphore>,
    /// The access keys this node knows (see [`Keyring`]).
    pub keyring: Arc<Keyring>,
    /// The last (members, needed) the GC was held back with, logged once.
    gc_held_logged: AtomicU64,
    pub counters: ReplicationCounters,
    pub repair: RepairStatus,
    pub scrub: ScrubStatus,
    /// When this node started (monotonic ms), for its uptime.
    started_ms: u64,
    /// Free disk space (percent of its size) below which this node reports
    /// itself unhealthy.
    disk_free_min_percent: u8,
    /// The latest member reports (see [`Cluster::member_reports`]).
    member_reports: status::ReportsCache,
    /// A disk-space query is running (at most one: on a hung file system
    /// each would hold a blocking thread for good).
    disk_space_asked: Arc<std::sync::atomic::AtomicBool>,
}

impl Cluster {
    pub fn new(
        env: Env,
        (replication, maintenance, disk_free_min_percent): (Replication, Maintenance, u8),
        peers: Arc<Peers>,
        members: Arc<MemberView>,
        (store, index): (Arc<ChunkStore>, Arc<VersionIndex>),
        hlc: Hlc,
        keyring: Arc<Keyring>,
    ) -> Arc<Self> {
        let me = peers.identity().node;
        Arc::new(Self {
            env: env.clone(),
            me,
            replication,
            peers,
            members,
            store,
            index,
            hlc: Mutex::new(hlc),
            maintenance,
            synced_with: Mutex::new(BTreeMap::new()),
            deferred_contents: Mutex::new(BTreeMap::new()),
            disk_writes: Arc::new(tokio::sync::Semaphore::new(
                crate::limits::DISK_WRITES_IN_FLIGHT,
            )),
            index_merges: Arc::new(tokio::sync::Semaphore::new(
                crate::limits::INDEX_MERGES_IN_FLIGHT,
            )),
            keyring,
            gc_held_logged: AtomicU64::new(0),
            counters: ReplicationCounters::default(),
            repair: RepairStatus::default(),
            scrub: ScrubStatus::default(),
            started_ms: env.clock.monotonic_ms(),
            disk_free_min_percent,
            member_reports: tokio::sync::Mutex::new(None),
            disk_space_asked: Arc::default(),
        })
    }

    pub fn replication(&self) -> Replication {
        self.replication
    }

    /// The whole version index (for convergence checks in tests and the
    /// simulation).
    pub async fn index_snapshot(&self) -> Result<IndexState, ClusterError> {
        let index = self.index.clone();
        self.blocking(move || index.snapshot())
            .await
            .map_err(|e| ClusterError::Local(e.to_string()))
    }

    /// A wait of half to one and a half times `period`, so that nodes'
    /// background rounds do not run in lockstep.
    fn jittered(&self, period: Duration) -> Duration {
        let base = (period.as_millis() as u64).max(1);
        Duration::from_millis(base / 2 + self.env.random_u64() % base)
    }

    /// Merges into the version index and the commits that made them
    /// durable (group commit puts several merges in one).
    pub fn index_merge_counts(&self) -> (u64, u64) {
        self.index.merge_counts()
    }

    /// The wall clock (unix ms), for what is reported outside.
    pub fn unix_ms(&self) -> u64 {
        self.env.clock.unix_ms()
    }

    /// The monotonic clock the GC and anti-entropy measure their periods
    /// with: a wall clock stepped forward would end a grace period early.
    fn elapsed_ms(&self) -> u64 {
        self.env.clock.monotonic_ms()
    }

    /// A new version id, after every id this node has created or seen.
    pub fn next_vid(&self) -> Result<VersionId, ClusterError> {
        let now = self.env.clock.unix_ms();
        let mut hlc = self.hlc.lock().expect("clock poisoned");
        hlc.next(now).ok_or_else(|| {
            ClusterError::Clock(
                "version ids are exhausted: this node's index holds an id at the end of time (a corrupt index or a broken clock)".into(),
            )
        })
    }

    /// The latest wall time a peer's version id may carry: this node's clock
    /// plus the maximum offset ([`crate::limits::CLOCK_OFFSET_MAX`]).
    fn horizon_ms(&self) -> u64 {
        self.env
            .clock
            .unix_ms()
            .saturating_add(crate::limits::CLOCK_OFFSET_MAX.as_millis() as u64)
    }

    /// Note ids created elsewhere, so later local ids sort after them. An id
    /// from far in the future (a peer's broken clock) is not followed: it
    /// would drag every later version id with it.
    fn observe(&self, vids: impl Iterator<Item = VersionId>) {
        let horizon = self.horizon_ms();
        let mut hlc = self.hlc.lock().expect("clock poisoned");
        for vid in vids {
            if vid.wall_ms <= horizon {
                hlc.observe(&vid);
            } else {
                tracing::warn!(version = %vid, "a version id from the future (a peer's clock is wrong?); not following it");
            }
        }
    }

    /// The nodes that can take part now: this one and every alive member.
    fn alive_nodes(&self) -> Vec<PeerIdentity> {
        let mut nodes = self.members.alive();
        nodes.push(self.peers.identity());
        nodes
    }

    /// How many acknowledgements a write needs: W, or one when this node has
    /// never had another member (a cluster of one takes writes). It goes by
    /// the largest cluster this node has known, persisted across restarts,
    /// never the members it sees now: a node restarted cut off from its
    /// cluster must not count a quorum of one, nor a forming cluster of two
    /// a quorum of two when W is three.
    fn quorum(&self) -> usize {
        self.replication.quorum_in(self.members.largest_cluster())
    }

    /// Fail early, before anything is written, when fewer than a quorum of
    /// nodes are alive: the write could not succeed and would leave
    /// partial state behind.
    pub fn check_quorum_reachable(&self) -> Result<(), ClusterError> {
        let reachable = self.alive_nodes().len();
        let needed = self.quorum();
        if reachable < needed {
            if self.members.largest_cluster() < needed {
                // A cluster still forming: W does not shrink to the nodes
                // found so far.
                crate::marks::hit("write_refused_while_the_cluster_forms");
            }
            let known = self.members.nodes();
            if reachable >= self.replication.quorum_in(known) {
                // Counting only the members it knows now (a restart cut off
                // from the cluster) would have taken this write.
                crate::marks::hit("quorum_above_known_members");
            }
            return Err(ClusterError::TooFewNodes { reachable, needed });
        }
        Ok(())
    }

    async fn connect(&self, peer: &PeerIdentity) -> Result<Arc<PeerConnection>, PeerError> {
        self.peers.connect(peer).await
    }

    /// Send the request `make` builds to `peer` and wait for its reply.
    ///
    /// A connection can die under a request: replaced by a simultaneous
    /// dial, closed by its keepalive after a partition healed, or silent
    /// (a link that dropped its packets). Such a failure is not an answer,
    /// so the request is sent again, up to [`REQUEST_ATTEMPTS`] times, each
    /// on a fresh connection after a short pause (the failed one is closed
    /// and forgotten first, or the retry would find it still registered
    /// while it winds down, and the two ends of a pair need a moment to
    /// agree on which connection survives). An answer, including an error
    /// reply, is final.
    async fn request(
        &self,
        peer: &PeerIdentity,
        make: impl Fn() -> Message,
    ) -> Result<Message, PeerError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let connection = self.connect(peer).await?;
            match connection.call(make()).await {
                Err(error @ (PeerError::Closed | PeerError::Secure(_) | PeerError::Timeout(_)))
                    if attempt < REQUEST_ATTEMPTS =>
                {
                    tracing::debug!(peer = %peer.node.short(), %error, attempt, "request failed on its connection; retrying on a fresh one");
                    connection.close();
                    self.peers.forget(&connection);
                    tokio::time::sleep(REQUEST_RETRY_PAUSE * attempt).await;
                }
                result => return result,
            }
        }
    }

    /// Store a blob on this node's disk. The write's permit travels with
    /// its job, which outlives a dropped caller: abandoned writes are
    /// bounded by [`DISK_WRITES_IN_FLIGHT`](crate::limits::DISK_WRITES_IN_FLIGHT).
    /// The wait for a permit is bounded too, so a peer's handler (which
    /// holds one of its connection's few slots) gives up and answers, and
    /// the connection keeps reading.
    ///
    /// A blob bound for the small-blob table is queued for the store's next
    /// batch ([`ChunkStore::queue_put`]); any other is put on the blocking
    /// pool. A peer's blob has its tag checked first: here if it is small,
    /// on the blocking pool with the put if not.
    async fn put_locally(&self, put: LocalPut) -> Result<PutOutcome, StoreError> {
        use crate::limits::DISK_WRITE_WAIT_MAX;
        let permit = tokio::time::timeout(
            DISK_WRITE_WAIT_MAX,
            self.disk_writes.clone().acquire_owned(),
        )
        .await
        .map_err(|_| StoreError::Busy(DISK_WRITE_WAIT_MAX))?
        .expect("the disk write semaphore is never closed");
        let store = self.store.clone();
        let blob = match put {
            LocalPut::Sealed(blob) => blob,
            // One the table would take (8 KiB by default: a check of
            // about 2 µs, here rather than on another thread).
            LocalPut::FromPeer { id, sealed }
                if sealed.len() <= store.small_blob_bytes_max() + SEAL_OVERHEAD_BYTES =>
            {
                store
                    .sealer()
                    .checked(id, sealed)
                    .map_err(|_| StoreError::NotSealedFor(id))?
            }
            LocalPut::FromPeer { id, sealed } => {
                return self
                    .blocking(move || {
                        let outcome = store.put_checked(id, sealed);
                        drop(permit);
                        outcome
                    })
                    .await;
            }
        };
        if store.goes_to_table(&blob) {
            let (sender, outcome) = tokio::sync::oneshot::channel();
            let start = store.queue_put(
                blob,
                Box::new(move |result| {
                    drop(permit);
                    let _ = sender.send(result);
                }),
            );
            if start {
                let store = store.clone();
                // `Env::blocking` submits the job at once (unlike the async
                // `Cluster::blocking`): it runs whether or not anyone waits.
                drop(self.env.blocking(move || store.run_queued_puts()));
            }
            return outcome.await.unwrap_or_else(|_| {
                Err(StoreError::Io {
                    context: "putting a small blob".into(),
                    source: std::io::Error::other("the batch that held it failed"),
                })
            });
        }
        self.blocking(move || {
            let outcome = store.put(&blob);
            drop(permit);
            outcome
        })
        .await
    }

    /// Run a blocking storage job on the executor.
    async fn blocking<T: Send + 'static>(&self, job: impl FnOnce() -> T + Send + 'static) -> T {
        self.env.blocking(job).await
    }
}
