//! The node: wires the store, the index and the network together, and serves
//! the protocol of [`wire`](crate::wire).
//!
//! [`Server::start`] opens the data dir (identity, chunk store, version
//! index) and binds the listen address; [`Server::run`] accepts connections
//! until its shutdown future completes, then drains in-flight requests for
//! at most [`SHUTDOWN_DRAIN_TIMEOUT`].
//!
//! Every inbound connection starts with the Noise handshake, which says
//! who is at the other end ([`Party`]): a node (it proved the cluster key)
//! must send a `PeerHello` and moves to the [`Peers`] registry; a client
//! (it proved an access key) is served here, every request checked against
//! its key's current permission, and never gets a peer message served. The
//! membership task ([`MembershipTask`]) runs beside the accept loop and
//! leaves the cluster at shutdown. The client requests themselves are in
//! `requests.rs`.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::task::JoinSet;

use admission::{Admission, HandshakeSlot};

use crate::cluster::Keyring;
use crate::cluster::{Cluster, ClusterService, Maintenance, RepairTask, ScrubTask, SyncTask};
use crate::env::{BoxStream, Env, Listener};
use crate::keys::AccessKeyId;
use crate::keys::access::{Permission, SecretKey};
use crate::keys::credentials::{Credentials, ProvisionedKey};
use crate::keys::{ClusterKey, KeyError, NodeId, StaticKeypair};
use crate::limits::{SHUTDOWN_DRAIN_TIMEOUT, SWIM_INBOX};
use crate::meta::{Hlc, IndexError, VersionIndex};
use crate::metrics::{ConnectionMetrics, DiskMetrics, RequestMetrics, StateCollector};
use crate::peer::membership::{load_largest_cluster, load_member_addrs};
use crate::peer::{MemberView, MembershipTask, PeerIdentity, Peers, SwimTiming};
use crate::placement::Replication;
use crate::secure::{Party, accept};
use crate::store::{ChunkStore, StoreError};
use crate::wire::Message;

mod admission;
pub mod ops;
mod requests;

/// What a node needs to start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    /// `host:port` to listen on (`:0` picks a free port).
    pub listen: String,
    /// Addresses of existing members to join through. Without them (and
    /// without a persisted member list) the node starts a cluster of one.
    pub bootstrap: Vec<String>,
    /// The address other nodes dial to reach this one; defaults to the bound
    /// listen address (set it when listening on `0.0.0.0`).
    pub advertise: Option<String>,
    pub cluster_key: ClusterKey,
    pub swim: SwimTiming,
    pub replication: Replication,
    /// Periods of anti-entropy, repair and garbage collection.
    pub maintenance: Maintenance,
    /// Free disk space (percent of the disk's size) below which the node
    /// reports itself unhealthy ([`crate::health`]); 0 never does.
    pub disk_free_min_percent: u8,
    /// Where the first start of a new cluster writes an admin access key
    /// (a node started without `--bootstrap` that knows no key and finds no
    /// file there); `None`: never.
    pub admin_credentials_file: Option<PathBuf>,
    /// Keys this node makes sure exist (each unless removed since), with
    /// the same record on every node: for deployments that hand nodes their
    /// first key, and the simulation's clients.
    pub provisioned_keys: Vec<ProvisionedKey>,
    /// Blobs up to this many bytes are kept in the small-blob table rather
    /// than a file each (`store::small`); 0 keeps every blob a file.
    /// Capped at [`crate::limits::SMALL_BLOB_BYTES_MAX`].
    pub small_blob_bytes_max: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("cannot open the chunk store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot open the version index: {0}")]
    Index(#[from] IndexError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot create data dir {dir}: {source}")]
    DataDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("data dir {dir} is in use by another dfs-node process ({source})")]
    Locked {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot set up access keys: {0}")]
    Keys(String),
}

/// State shared by all connections of one node.
#[derive(Debug)]
pub struct Node {
    env: Env,
    identity: StaticKeypair,
    store: Arc<ChunkStore>,
    index: Arc<VersionIndex>,
    cluster: Arc<Cluster>,
    listen: String,
    peers: Arc<Peers>,
    members: Arc<MemberView>,
    /// Slots of the puts past `LARGE_PUT_BYTES` (see `LARGE_PUTS_IN_FLIGHT`).
    large_puts: Arc<tokio::sync::Semaphore>,
    /// Bytes of the chunks reads fetch ahead (see `READ_AHEAD_BYTES_MAX`).
    read_ahead: Arc<tokio::sync::Semaphore>,
    /// Requests served by every frontend, for `/metrics`.
    requests: RequestMetrics,
    /// Connections open and refused, for `/metrics`.
    connections: ConnectionMetrics,
    /// Disk syncs and space, for `/metrics`.
    disk: DiskMetrics,
    /// Those, and the components' counters (see `crate::metrics`).
    registry: prometheus_client::registry::Registry,
    _lock: Box<dyn std::any::Any + Send + Sync>,
}

impl Node {
    /// The permission of a live access key (`None`: unknown or removed).
    pub fn permission(&self, key: &AccessKeyId) -> Option<Permission> {
        self.cluster.keyring.permission(key)
    }

    /// The secret of a live access key, for frontends whose clients sign
    /// requests with it (S3's SigV4).
    pub fn secret(&self, key: &AccessKeyId) -> Option<SecretKey> {
        self.cluster.keyring.secret(key)
    }

    pub fn env(&self) -> &Env {
        &self.env
    }

    /// Where frontends count and time the requests they serve.
    pub fn requests(&self) -> &RequestMetrics {
        &self.requests
    }

    /// Where frontends count their connections.
    pub fn connections(&self) -> &ConnectionMetrics {
        &self.connections
    }

    /// Every metric of this node, in the OpenMetrics text format. The
    /// disk's figures are read first (blocking calls, off the async
    /// threads).
    pub async fn encode_metrics(&self) -> String {
        let store = self.store.clone();
        let index = self.index.clone();
        let read = self
            .env
            .blocking(move || (store.space().ok(), index.file_bytes().ok()));
        // Unknown (or hung) figures are left out of the scrape, not zero:
        // a zero would fire every "disk almost full" alert.
        let (space, index_bytes) = tokio::time::timeout(crate::limits::DISK_SPACE_TIMEOUT, read)
            .await
            .unwrap_or((None, None));
        let unknown = crate::metrics::UNKNOWN;
        let relaxed = std::sync::atomic::Ordering::Relaxed;
        self.disk
            .total_bytes
            .store(space.map_or(unknown, |s| s.total_bytes), relaxed);
        self.disk
            .free_bytes
            .store(space.map_or(unknown, |s| s.free_bytes), relaxed);
        self.disk
            .index_bytes
            .store(index_bytes.unwrap_or(unknown), relaxed);
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// Whether this node can take writes (see [`Cluster::readiness`](crate::cluster::Cluster::readiness)).
    pub fn readiness(&self) -> Result<(), String> {
        self.cluster.readiness()
    }
}

/// A started node: its state and its bound listener.
pub struct Server {
    node: Arc<Node>,
    listener: Box<dyn Listener>,
    membership: MembershipTask,
    /// Other frontends (S3): they stop when `stopping` turns true, and
    /// are drained with the native connections, before the peers close.
    frontends: JoinSet<()>,
    stopping: tokio::sync::watch::Sender<bool>,
}

impl Server {
    /// Open the data dir and bind. Creates the identity on first start.
    pub async fn start(env: Env, config: NodeConfig) -> Result<Self, NodeError> {
        // Every sync of the store and the index is timed.
        let disk = DiskMetrics::default();
        let env = Env {
            disk: Arc::new(crate::env::timed_syncs::TimedSyncs::new(
                env.disk.clone(),
                env.clock.clone(),
                disk.sync_observer(),
            )),
            ..env
        };
        let opened = {
            let env = env.clone();
            let config = config.clone();
            env.clone()
                .blocking(move || -> Result<_, NodeError> {
                    crate::env::create_dir_durably(env.disk.as_ref(), &config.data_dir).map_err(
                        |source| NodeError::DataDir {
                            dir: config.data_dir.clone(),
                            source,
                        },
                    )?;
                    let lock = env
                        .disk
                        .lock_exclusive(&config.data_dir.join("LOCK"))
                        .map_err(|source| NodeError::Locked {
                            dir: config.data_dir.clone(),
                            source,
                        })?;
                    let identity = StaticKeypair::load_or_create(&env, &config.data_dir)?;
                    let store = ChunkStore::open(
                        env.clone(),
                        &config.data_dir,
                        &config.cluster_key,
                        config.small_blob_bytes_max,
                    )?;
                    let index = VersionIndex::open(&env, &config.data_dir.join("meta.redb"))?;
                    let max_vid = index.max_vid()?;
                    // The files a previous process left here (node.key,
                    // cluster.key, members.json) may have been renamed into
                    // place by a process whose directory sync failed or never
                    // ran: make their entries durable before relying on them.
                    env.disk
                        .sync_dir(&config.data_dir)
                        .map_err(|source| NodeError::DataDir {
                            dir: config.data_dir.clone(),
                            source,
                        })?;
                    let bump = next_identity_bump(&env, &config.data_dir).map_err(|source| {
                        NodeError::DataDir {
                            dir: config.data_dir.clone(),
                            source,
                        }
                    })?;
                    Ok((lock, identity, store, index, max_vid, bump))
                })
                .await?
        };
        let (lock, identity, store, index, max_vid, bump) = opened;
        let mut hlc = Hlc::new(identity.node_id());
        if let Some(vid) = max_vid {
            // Followed even from the future: a new version must sort after
            // every one this node holds, or a put would not be current.
            // Peers refuse such ids until their clocks catch up, so writes
            // through this node fail with the reason instead.
            let ahead_ms = vid.wall_ms.saturating_sub(env.clock.unix_ms());
            if ahead_ms > crate::limits::CLOCK_OFFSET_MAX.as_millis() as u64 {
                tracing::warn!(version = %vid, ahead_s = ahead_ms / 1000, "this node's clock is behind the newest version it holds by more than the maximum offset; peers will refuse its writes until the clock is right (check NTP)");
            }
            hlc.observe(&vid);
        }
        let listener = env
            .net
            .bind(&config.listen)
            .await
            .map_err(|source| NodeError::Bind {
                addr: config.listen.clone(),
                source,
            })?;
        let listen = listener
            .local_addr()
            .unwrap_or_else(|_| config.listen.clone());
        let usage = store.usage();
        tracing::info!(
            node = %identity.node_id().short(), %listen, data_dir = %config.data_dir.display(),
            blobs = usage.blobs, bytes = usage.bytes, "node started"
        );
        let advertise = config.advertise.clone().unwrap_or_else(|| listen.clone());
        if advertise.starts_with("0.0.0.0:") || advertise.starts_with("[::]:") {
            tracing::warn!(%advertise, "other nodes cannot dial a wildcard address; set --advertise");
        }
        let me = PeerIdentity {
            node: identity.node_id(),
            addr: advertise.clone(),
            bump,
        };
        let (swim_tx, swim_rx) = tokio::sync::mpsc::channel(SWIM_INBOX);
        let peers = Peers::new(
            env.clone(),
            identity.clone(),
            config.cluster_key.clone(),
            me,
            swim_tx,
        );
        let mut seeds = config.bootstrap.clone();
        let (persisted, recorded_cluster_size) = {
            let env = env.clone();
            let data_dir = config.data_dir.clone();
            let write_quorum = config.replication.write_quorum;
            env.clone()
                .blocking(move || {
                    (
                        load_member_addrs(&env, &data_dir),
                        load_largest_cluster(&env, &data_dir, write_quorum),
                    )
                })
                .await
        };
        // The quorum never counts fewer nodes than this one has known: the
        // recorded largest cluster, the persisted members, and, for a node
        // told to join a cluster, at least W (it must not take writes alone
        // while it has not reached its cluster yet).
        let joining = if config.bootstrap.is_empty() {
            1
        } else {
            config.replication.write_quorum
        };
        // The view is complete (for the garbage collector) once it holds
        // the members persisted last time, or without that list (lost, or
        // a first start) as many nodes as the largest cluster recorded.
        // (This node's own address in the list is an earlier identity of
        // it, from before a lost disk: not another node. Nor is a second
        // identity at one address: the largest cluster counts addresses,
        // or a replaced node would count twice, for good.)
        let persisted_nodes = persisted
            .iter()
            .filter(|addr| **addr != advertise)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            + 1;
        let largest_cluster = recorded_cluster_size
            .unwrap_or(1)
            .max(persisted_nodes)
            .max(joining);
        let expected = if persisted.is_empty() {
            recorded_cluster_size.unwrap_or(1)
        } else {
            persisted_nodes
        };
        let members = Arc::new(MemberView::expecting(
            largest_cluster,
            expected,
            (env.clock.monotonic_ms(), config.swim.forget_down_after),
        ));
        let effective_quorum = config.replication.quorum_in(largest_cluster);
        if effective_quorum < config.replication.write_quorum {
            tracing::warn!(
                write_quorum = config.replication.write_quorum,
                effective = effective_quorum,
                "this node has never had another member: writes need {effective_quorum} durable copy while it is alone; once another node joins, {} for good",
                config.replication.write_quorum,
            );
        }
        for addr in persisted {
            if !seeds.contains(&addr) {
                seeds.push(addr);
            }
        }
        if !seeds.is_empty() {
            tracing::info!(?seeds, "joining a cluster");
        }
        let membership = MembershipTask {
            env: env.clone(),
            peers: peers.clone(),
            view: members.clone(),
            inbox: swim_rx,
            seeds,
            data_dir: config.data_dir.clone(),
            timing: config.swim,
            recorded_cluster_size: recorded_cluster_size.unwrap_or(1),
        };
        let store = Arc::new(store);
        let index = Arc::new(index);
        let cluster = Cluster::new(
            env.clone(),
            (
                config.replication,
                config.maintenance,
                config.disk_free_min_percent,
            ),
            peers.clone(),
            members.clone(),
            (store.clone(), index.clone()),
            hlc,
            Arc::new(Keyring::new(&config.cluster_key)),
        );
        set_up_keys(&env, &config, &cluster).await?;
        peers.set_service(Arc::new(ClusterService(cluster.clone())));
        let requests = RequestMetrics::default();
        let connections = ConnectionMetrics::default();
        let registry = crate::metrics::registry(
            &requests,
            &connections,
            StateCollector {
                store: store.clone(),
                cluster: cluster.clone(),
                members: members.clone(),
                peers: peers.clone(),
                disk: disk.clone(),
            },
        );
        let node = Node {
            env,
            identity,
            store,
            index,
            cluster,
            listen,
            peers,
            members,
            large_puts: Arc::new(tokio::sync::Semaphore::new(
                crate::limits::LARGE_PUTS_IN_FLIGHT,
            )),
            read_ahead: Arc::new(tokio::sync::Semaphore::new(
                crate::limits::READ_AHEAD_BYTES_MAX,
            )),
            requests,
            connections,
            disk,
            registry,
            _lock: lock,
        };
        Ok(Self {
            node: Arc::new(node),
            listener,
            membership,
            frontends: JoinSet::new(),
            stopping: tokio::sync::watch::channel(false).0,
        })
    }

    pub fn node_id(&self) -> NodeId {
        self.node.identity.node_id()
    }

    /// The address actually bound (with the real port when `:0` was asked).
    pub fn local_addr(&self) -> &str {
        &self.node.listen
    }

    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Run another frontend beside the native protocol: `start` gets a
    /// future that completes when the node begins to stop, after which the
    /// frontend stops accepting and finishes its requests. Its in-flight
    /// requests are drained with the native ones (bounded by
    /// [`SHUTDOWN_DRAIN_TIMEOUT`]), before the peer connections close.
    pub fn spawn_frontend<F, Fut>(&mut self, start: F)
    where
        F: FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut stopping = self.stopping.subscribe();
        let stopping = Box::pin(async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        });
        self.frontends.spawn(start(stopping));
    }

    /// Serve until `shutdown` completes, then stop accepting, let in-flight
    /// requests finish (bounded by [`SHUTDOWN_DRAIN_TIMEOUT`]) and return.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        // Each connection may hold a few chunk buffers; admission bounds
        // memory and file handles (see CONNECTIONS_MAX), and handshakes
        // apart from them.
        let admission = Arc::new(Admission::default());
        let mut connections = JoinSet::new();
        let (stop_membership, mut membership_stopped) = tokio::sync::watch::channel(false);
        let mut sync_stopped = membership_stopped.clone();
        let mut repair_stopped = membership_stopped.clone();
        let mut scrub_stopped = membership_stopped.clone();
        let membership = tokio::spawn(self.membership.run(async move {
            let _ = membership_stopped.changed().await;
        }));
        let sync = tokio::spawn(
            SyncTask {
                cluster: self.node.cluster.clone(),
            }
            .run(async move {
                let _ = sync_stopped.changed().await;
            }),
        );
        let repair = tokio::spawn(
            RepairTask {
                cluster: self.node.cluster.clone(),
            }
            .run(async move {
                let _ = repair_stopped.changed().await;
            }),
        );
        let scrub = tokio::spawn(
            ScrubTask {
                cluster: self.node.cluster.clone(),
            }
            .run(async move {
                let _ = scrub_stopped.changed().await;
            }),
        );
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => match admission.handshake(&peer) {
                        Ok(slot) => {
                            let node = self.node.clone();
                            let admission = admission.clone();
                            connections.spawn(async move {
                                node.serve_connection(stream, peer, slot, &admission).await;
                            });
                        }
                        Err(refused) => {
                            self.node.connections.refused("native", "busy");
                            tracing::warn!(%peer, %refused, "refusing a connection");
                        }
                    },
                    Err(error) => {
                        // Typically out of file descriptors: back off rather than spin.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                },
                Some(joined) = connections.join_next(), if !connections.is_empty() => {
                    if let Err(error) = joined {
                        tracing::error!(%error, "a connection task failed");
                    }
                }
            }
        }
        drop(self.listener);
        let _ = self.stopping.send(true);
        // Tell the cluster we are leaving before the connections go.
        let _ = stop_membership.send(true);
        if tokio::time::timeout(SHUTDOWN_DRAIN_TIMEOUT, membership)
            .await
            .is_err()
        {
            tracing::warn!("the membership task did not stop in time");
        }
        let _ = sync.await;
        let _ = repair.await;
        let _ = scrub.await;
        // Client requests in flight finish before the peer connections
        // close: a put in progress needs them to reach W nodes.
        tracing::info!(
            in_flight = connections.len(),
            "stopping: draining in-flight requests"
        );
        let mut frontends = std::mem::take(&mut self.frontends);
        let drained = tokio::time::timeout(SHUTDOWN_DRAIN_TIMEOUT, async {
            while connections.join_next().await.is_some() {}
            while frontends.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("in-flight requests did not finish in time; aborting them");
            connections.abort_all();
            frontends.abort_all();
        }
        self.node.peers.shutdown().await;
        tracing::info!("node stopped");
    }
}

/// The file holding the identity bump of this node's latest start.
const IDENTITY_BUMP_FILE: &str = "identity_bump";

/// Renewals (rejoins after being declared down) one process may make before
/// the next start's bump could fall below its last one.
const IDENTITY_RENEWALS_RESERVED: u64 = 1_000;

/// The bump of this start's identity: SWIM tells a node's incarnations
/// apart by it, the greater winning. The wall clock alone is not enough: a
/// node restarted with its clock set back would come back *below* its
/// previous incarnation, which the cluster then keeps declaring down
/// (simulation seed 40382, a 3-node cluster with W=3 that took no writes
/// after healing). So it is also above every earlier start's, recorded in
/// the data dir, with room for the renewals each process makes.
fn next_identity_bump(env: &Env, data_dir: &std::path::Path) -> std::io::Result<u64> {
    let path = data_dir.join(IDENTITY_BUMP_FILE);
    let previous = match crate::env::read_file(env.disk.as_ref(), &path, 64) {
        Ok(bytes) => {
            let parsed = std::str::from_utf8(&bytes)
                .ok()
                .and_then(|text| text.trim().parse::<u64>().ok());
            if parsed.is_none() {
                tracing::warn!(path = %path.display(), "the recorded identity bump is corrupt; using the clock");
            }
            parsed
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => return Err(error),
    };
    let now = env.clock.unix_ms();
    let bump = match previous {
        Some(previous) => {
            if previous >= now {
                crate::marks::hit("identity_bump_above_a_clock_set_back");
            }
            now.max(previous.saturating_add(IDENTITY_RENEWALS_RESERVED))
        }
        None => now,
    };
    // Best effort while the clock is ahead of every earlier start: a node
    // on a full disk must still start (and serve reads), and the next start
    // then has the clock to go by. Not when the clock is behind: two starts
    // unrecorded would share a bump.
    if let Err(error) = crate::env::replace_file_durably(env, &path, bump.to_string().as_bytes()) {
        if previous.is_some_and(|previous| previous >= now) {
            return Err(error);
        }
        tracing::warn!(path = %path.display(), %error, "cannot record this start's identity bump");
    }
    Ok(bump)
}

impl Node {
    pub fn node_id(&self) -> NodeId {
        self.identity.node_id()
    }

    /// Whether `vid` could be a version this cluster made: written by this
    /// node or a member it knows, and not later than now. (A client naming
    /// a version the node has not heard of is believed only that far.)
    pub fn could_have_made(&self, vid: &crate::meta::VersionId) -> bool {
        vid.wall_ms <= self.env.clock.unix_ms()
            && (vid.node == self.node_id()
                || self.members.members().iter().any(|m| m.node_id == vid.node))
    }

    pub fn store(&self) -> &Arc<ChunkStore> {
        &self.store
    }

    pub fn index(&self) -> &Arc<VersionIndex> {
        &self.index
    }

    /// Frames exchanged with other nodes since start.
    pub fn peer_traffic(&self) -> &crate::peer::PeerTraffic {
        self.peers.traffic()
    }

    /// Replication: placement, quorum writes, anti-entropy, counters.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// Membership as this node sees it (other members only).
    pub fn members(&self) -> &Arc<MemberView> {
        &self.members
    }

    async fn serve_connection(
        self: Arc<Self>,
        stream: BoxStream,
        peer: String,
        handshake_slot: HandshakeSlot,
        admission: &Admission,
    ) {
        // A client whose host's access keys keep failing waits first
        // (holding its host's handshake slot); nodes never do.
        let penalty = admission.penalty(&peer, self.env.clock.monotonic_ms());
        if !penalty.is_zero() {
            tracing::debug!(%peer, ?penalty, "slowing down clients of a host whose access keys keep failing");
        }
        let accepted = accept(
            &self.env,
            stream,
            &self.identity,
            self.cluster.keyring.as_ref(),
            penalty,
        )
        .await;
        let (mut secure, party) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Refused credentials of a client (a node's wrong cluster
                // key fails as HandshakeRefused and is not counted).
                if matches!(error, crate::secure::SecureError::Refusing(_)) {
                    admission.note_failure(&peer, self.env.clock.monotonic_ms());
                }
                self.connections.refused("native", "handshake");
                tracing::warn!(%peer, %error, "handshake refused");
                return;
            }
        };
        if matches!(party, Party::Client(_)) {
            admission.note_success(&peer);
        }
        drop(handshake_slot);
        let _slot = match admission.connection() {
            Ok(slot) => slot,
            Err(refused) => {
                self.connections.refused("native", "busy");
                tracing::warn!(%peer, %refused, "refusing an authenticated connection");
                return;
            }
        };
        let key = match party {
            Party::Node => {
                // A node's first message is its hello; anything else is a
                // node (or a holder of the cluster key) that is not
                // speaking the peer protocol.
                match secure.recv().await {
                    Ok(Some(envelope)) => match envelope.message {
                        Message::PeerHello { identity } => {
                            let node = identity.node;
                            if let Err(error) = self.peers.accept(secure, identity).await {
                                tracing::warn!(%peer, node = %node.short(), %error, "peer connection refused");
                            }
                        }
                        other => {
                            tracing::warn!(%peer, message = other.kind(), "a connection with the cluster key sent no PeerHello; closing it (clients need an access key)")
                        }
                    },
                    Ok(None) => {}
                    Err(error) => tracing::info!(%peer, %error, "closing a connection"),
                }
                return;
            }
            Party::Client(key) => key,
        };
        self.cluster
            .keyring
            .note_used(&key, self.env.clock.unix_ms());
        tracing::debug!(%peer, %key, "client connected");
        let _open = self.connections.opened("client");
        loop {
            let envelope = match secure.recv().await {
                Ok(Some(envelope)) => envelope,
                Ok(None) => break,
                Err(error) => {
                    // Undecodable or oversize input, a bad record, a timeout:
                    // this connection ends, nothing else is affected.
                    tracing::info!(%peer, %error, "closing a connection");
                    break;
                }
            };
            if let Message::PeerHello { .. } = envelope.message {
                tracing::warn!(%peer, %key, "a client connection spoke as a node (PeerHello); closing it");
                break;
            }
            match self.handle(&mut secure, envelope, &key).await {
                Ok(true) => {}
                Ok(false) => break,
                Err(error) => {
                    tracing::debug!(%peer, %error, "connection closed while serving a request");
                    break;
                }
            }
        }
    }
}

/// Load the access keys this node holds, make sure the provisioned ones
/// exist, and on the first start of a new cluster (no `--bootstrap`, no key
/// known) create an admin key and write it where the CLI on this machine
/// finds it. The file is written first, and a start that finds one whose
/// key the cluster does not know adopts it: a crash in between never leaves
/// a key nobody holds.
async fn set_up_keys(
    env: &Env,
    config: &NodeConfig,
    cluster: &Arc<Cluster>,
) -> Result<(), NodeError> {
    let keys = |e: crate::cluster::ClusterError| NodeError::Keys(e.to_string());
    let known = cluster.load_keys().await.map_err(keys)?;
    cluster
        .provision_keys(&config.provisioned_keys)
        .map_err(keys)?;
    let Some(path) = &config.admin_credentials_file else {
        return Ok(());
    };
    if known > 0 || !config.bootstrap.is_empty() || !config.provisioned_keys.is_empty() {
        return Ok(());
    }
    let blocking = |job: Box<dyn FnOnce() -> Result<Option<Credentials>, String> + Send>| {
        env.clone().blocking(job)
    };
    let existing = {
        let (env, path) = (env.clone(), path.clone());
        blocking(Box::new(move || {
            if !env.disk.exists(&path).map_err(|e| e.to_string())? {
                return Ok(None);
            }
            Credentials::load(&env, &path)
                .map(Some)
                .map_err(|e| e.to_string())
        }))
        .await
        .map_err(NodeError::Keys)?
    };
    let (credentials, adopted) = match existing {
        Some(credentials) => (credentials, true),
        None => {
            let credentials = Credentials {
                id: crate::keys::AccessKeyId::generate(env),
                secret: crate::keys::SecretKey::generate(env),
            };
            let (env, path, to_store) = (env.clone(), path.clone(), credentials.clone());
            blocking(Box::new(move || {
                to_store
                    .store(&env, &path)
                    .map(|()| None)
                    .map_err(|e| e.to_string())
            }))
            .await
            .map_err(NodeError::Keys)?;
            (credentials, false)
        }
    };
    cluster
        .create_first_admin_key(&credentials)
        .await
        .map_err(keys)?;
    if adopted {
        tracing::info!(key = %credentials.id, file = %path.display(), "this node knows no access key: the admin key in its credentials file is the cluster's first");
    } else {
        tracing::info!(key = %credentials.id, file = %path.display(), "created the cluster's first admin access key; the CLI on this machine uses it (keep the file private; `dfs-node key create` makes more)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FixedClock(u64);

    impl crate::env::Clock for FixedClock {
        fn unix_ms(&self) -> u64 {
            self.0
        }

        fn monotonic_ms(&self) -> u64 {
            0
        }
    }

    fn env_at(unix_ms: u64) -> Env {
        let mut env = crate::env::tokio_env();
        env.clock = Arc::new(FixedClock(unix_ms));
        env
    }

    #[test]
    fn a_restart_with_the_clock_set_back_still_outranks_the_previous_start() {
        let dir = tempfile::tempdir().unwrap();
        let first = next_identity_bump(&env_at(1_790_000_000_000), dir.path()).unwrap();
        assert_eq!(first, 1_790_000_000_000);
        // An hour back: the new incarnation must still win over the old.
        let second = next_identity_bump(&env_at(1_789_996_400_000), dir.path()).unwrap();
        assert!(
            second > first + IDENTITY_RENEWALS_RESERVED - 1,
            "{second} <= {first}"
        );
        // A clock ahead of every earlier start is simply followed.
        let third = next_identity_bump(&env_at(1_800_000_000_000), dir.path()).unwrap();
        assert_eq!(third, 1_800_000_000_000);
    }
}
