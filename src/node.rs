//! The node: wires the store, the index and the network together, and serves
//! the protocol of [`wire`](crate::wire).
//!
//! [`Server::start`] opens the data dir (identity, chunk store, version
//! index) and binds the listen address; [`Server::run`] accepts connections
//! until its shutdown future completes, then drains in-flight requests for
//! at most [`SHUTDOWN_DRAIN_TIMEOUT`].
//!
//! Every inbound connection starts with the Noise handshake. If its first
//! message is a `PeerHello`, it is a node and the connection moves to the
//! [`Peers`] registry; otherwise it is a client and is served here. The
//! membership task ([`MembershipTask`]) runs beside the accept loop and
//! leaves the cluster at shutdown.

use std::collections::VecDeque;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::cas::{ChunkId, Chunker, ContentId, Manifest};
use crate::env::{BoxStream, Env, Listener};
use crate::keys::{ClusterKey, KeyError, NodeId, StaticKeypair};
use crate::limits::{
    CONNECTIONS_MAX, FRAME_BYTES_MAX, GET_CHUNKS_PREFETCH, PUT_CHUNKS_IN_FLIGHT,
    SHUTDOWN_DRAIN_TIMEOUT, SWIM_INBOX,
};
use crate::meta::{Hlc, IndexError, VersionIndex, VersionRecord, VersionSelector, validate_name};
use crate::peer::membership::load_member_addrs;
use crate::peer::{MemberView, MembershipTask, PeerIdentity, Peers, SwimTiming};
use crate::secure::{Role, SecureError, SecureStream, handshake};
use crate::store::{ChunkStore, StoreError};
use crate::wire::{
    Envelope, ErrorCode, GetTarget, MemberState, MemberStatus, Message, StatusReport,
};

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
}

/// A failed request: what the client is told.
struct Refusal {
    code: ErrorCode,
    message: String,
}

impl Refusal {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<StoreError> for Refusal {
    fn from(error: StoreError) -> Self {
        let code = match &error {
            StoreError::NotFound(_) => ErrorCode::NotFound,
            StoreError::Corrupt(_) => ErrorCode::Corrupt,
            StoreError::DiskFull { .. } => ErrorCode::DiskFull,
            StoreError::TooLarge(_) => ErrorCode::InvalidRequest,
            StoreError::Io { .. } => ErrorCode::Internal,
        };
        tracing::warn!(%error, "request failed in the chunk store");
        Refusal::new(code, error.to_string())
    }
}

impl From<IndexError> for Refusal {
    fn from(error: IndexError) -> Self {
        tracing::error!(%error, "request failed in the version index");
        Refusal::new(ErrorCode::Internal, error.to_string())
    }
}

/// State shared by all connections of one node.
#[derive(Debug)]
pub struct Node {
    env: Env,
    identity: StaticKeypair,
    cluster_key: ClusterKey,
    store: Arc<ChunkStore>,
    index: Arc<VersionIndex>,
    hlc: Mutex<Hlc>,
    listen: String,
    peers: Arc<Peers>,
    members: Arc<MemberView>,
    _lock: Box<dyn std::any::Any + Send + Sync>,
}

/// A started node: its state and its bound listener.
pub struct Server {
    node: Arc<Node>,
    listener: Box<dyn Listener>,
    membership: MembershipTask,
}

impl Server {
    /// Open the data dir and bind. Creates the identity on first start.
    pub async fn start(env: Env, config: NodeConfig) -> Result<Self, NodeError> {
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
                    let store =
                        ChunkStore::open(env.clone(), &config.data_dir, &config.cluster_key)?;
                    let index = VersionIndex::open(&env, &config.data_dir.join("meta.redb"))?;
                    let max_vid = index.max_vid()?;
                    Ok((lock, identity, store, index, max_vid))
                })
                .await?
        };
        let (lock, identity, store, index, max_vid) = opened;
        let mut hlc = Hlc::new(identity.node_id());
        if let Some(vid) = max_vid {
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
            addr: advertise,
            bump: env.clock.unix_ms(),
        };
        let (swim_tx, swim_rx) = tokio::sync::mpsc::channel(SWIM_INBOX);
        let peers = Peers::new(
            env.clone(),
            identity.clone(),
            config.cluster_key.clone(),
            me,
            swim_tx,
        );
        let members = Arc::new(MemberView::default());
        let mut seeds = config.bootstrap.clone();
        let persisted = {
            let env = env.clone();
            let data_dir = config.data_dir.clone();
            env.clone()
                .blocking(move || load_member_addrs(&env, &data_dir))
                .await
        };
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
        };
        let node = Node {
            env,
            identity,
            cluster_key: config.cluster_key,
            store: Arc::new(store),
            index: Arc::new(index),
            hlc: Mutex::new(hlc),
            listen,
            peers,
            members,
            _lock: lock,
        };
        Ok(Self {
            node: Arc::new(node),
            listener,
            membership,
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

    /// Serve until `shutdown` completes, then stop accepting, let in-flight
    /// requests finish (bounded by [`SHUTDOWN_DRAIN_TIMEOUT`]) and return.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        // Each connection may hold a few chunk buffers; the semaphore bounds
        // memory and file handles (see CONNECTIONS_MAX).
        let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
        let mut connections = JoinSet::new();
        let (stop_membership, mut membership_stopped) = tokio::sync::watch::channel(false);
        let membership = tokio::spawn(self.membership.run(async move {
            let _ = membership_stopped.changed().await;
        }));
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => match slots.clone().try_acquire_owned() {
                        Ok(slot) => {
                            let node = self.node.clone();
                            connections.spawn(async move {
                                node.serve_connection(stream, peer).await;
                                drop(slot);
                            });
                        }
                        Err(_) => tracing::warn!(%peer, limit = CONNECTIONS_MAX, "connection limit reached; refusing a connection"),
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
        // Tell the cluster we are leaving before the connections go.
        let _ = stop_membership.send(true);
        if tokio::time::timeout(SHUTDOWN_DRAIN_TIMEOUT, membership)
            .await
            .is_err()
        {
            tracing::warn!("the membership task did not stop in time");
        }
        self.node.peers.shutdown().await;
        tracing::info!(
            in_flight = connections.len(),
            "stopping: draining in-flight requests"
        );
        let drained = tokio::time::timeout(SHUTDOWN_DRAIN_TIMEOUT, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("in-flight requests did not finish in time; aborting them");
            connections.abort_all();
        }
        tracing::info!("node stopped");
    }
}

impl Node {
    pub fn node_id(&self) -> NodeId {
        self.identity.node_id()
    }

    pub fn store(&self) -> &Arc<ChunkStore> {
        &self.store
    }

    pub fn index(&self) -> &Arc<VersionIndex> {
        &self.index
    }

    pub fn peers(&self) -> &Arc<Peers> {
        &self.peers
    }

    /// Membership as this node sees it (other members only).
    pub fn members(&self) -> &Arc<MemberView> {
        &self.members
    }

    async fn serve_connection(self: Arc<Self>, stream: BoxStream, peer: String) {
        let mut secure = match handshake(
            &self.env,
            stream,
            Role::Responder,
            &self.identity,
            &self.cluster_key,
        )
        .await
        {
            Ok(secure) => secure,
            Err(error) => {
                tracing::warn!(%peer, %error, "handshake refused");
                return;
            }
        };
        let mut first = true;
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
            if first && let Message::PeerHello { identity } = envelope.message {
                let node = identity.node;
                if let Err(error) = self.peers.accept(secure, identity).await {
                    tracing::warn!(%peer, node = %node.short(), %error, "peer connection refused");
                }
                return;
            }
            first = false;
            if let Err(error) = self.handle(&mut secure, envelope).await {
                tracing::debug!(%peer, %error, "connection closed while serving a request");
                break;
            }
        }
    }

    /// Serve one request. An `Err` is a connection failure; a refused request
    /// is answered with `Message::Error` and the connection stays usable.
    async fn handle(
        &self,
        stream: &mut SecureStream,
        request: Envelope,
    ) -> Result<(), SecureError> {
        let id = request.request_id;
        let reply = match request.message {
            Message::PutStart { name } => self.put(stream, id, name).await?,
            Message::Get { target, version } => {
                match self.get(stream, id, target, version).await? {
                    Ok(()) => return Ok(()),
                    Err(refusal) => Err(refusal),
                }
            }
            Message::Remove { name } => self.remove(name).await,
            Message::List => self.list().await,
            Message::Versions { name } => self.versions(name).await,
            Message::Status => Ok(Message::StatusReply(self.status())),
            other => Err(Refusal::new(
                ErrorCode::InvalidRequest,
                format!("{} is not a request", other.kind()),
            )),
        };
        let message = reply.unwrap_or_else(|refusal| Message::Error {
            code: refusal.code,
            message: refusal.message,
        });
        stream
            .send(&Envelope {
                request_id: id,
                message,
            })
            .await
    }

    fn next_vid(&self) -> crate::meta::VersionId {
        self.hlc.lock().unwrap().next(self.env.clock.unix_ms())
    }

    /// Receive a file, chunk, hash, seal and store it, then record the version.
    async fn put(
        &self,
        stream: &mut SecureStream,
        id: u64,
        name: String,
    ) -> Result<Result<Message, Refusal>, SecureError> {
        let mut failure = validate_name(&name)
            .err()
            .map(|e| Refusal::new(ErrorCode::InvalidRequest, e.to_string()));
        let mut chunker = Chunker::default();
        let mut manifest = Manifest::default();
        let mut in_flight = VecDeque::new();
        loop {
            let envelope = stream.expect().await?;
            if envelope.request_id != id {
                return Err(SecureError::Wire(crate::wire::WireError::Undecodable(
                    "frame of another request during a put".into(),
                )));
            }
            let last = match envelope.message {
                Message::PutData { bytes } => {
                    if failure.is_none() {
                        chunker.push(&bytes);
                    }
                    false
                }
                Message::PutFinish => {
                    chunker.finish();
                    true
                }
                other => {
                    failure = Some(Refusal::new(
                        ErrorCode::InvalidRequest,
                        format!("{} during a put", other.kind()),
                    ));
                    break;
                }
            };
            // Keep reading until PutFinish even after a failure, so that the
            // client gets the reason rather than a reset connection.
            while failure.is_none() {
                let Some(chunk) = chunker.next_chunk() else {
                    break;
                };
                let store = self.store.clone();
                in_flight.push_back(self.env.blocking(move || {
                    let chunk_id = ChunkId::of(&chunk);
                    store
                        .put(&chunk_id, &chunk)
                        .map(|_| (chunk_id, chunk.len()))
                }));
                // Bounded pipeline: at most PUT_CHUNKS_IN_FLIGHT chunks in memory.
                while in_flight.len() >= PUT_CHUNKS_IN_FLIGHT || (last && !in_flight.is_empty()) {
                    let job = in_flight.pop_front().expect("non-empty");
                    if let Err(refusal) = record_chunk(&mut manifest, job.await) {
                        failure = Some(refusal);
                        break;
                    }
                }
            }
            if last {
                break;
            }
        }
        while let Some(job) = in_flight.pop_front() {
            if let Err(refusal) = record_chunk(&mut manifest, job.await) {
                failure.get_or_insert(refusal);
            }
        }
        if let Some(refusal) = failure {
            return Ok(Err(refusal));
        }
        Ok(self.commit_put(name, manifest).await)
    }

    async fn commit_put(&self, name: String, manifest: Manifest) -> Result<Message, Refusal> {
        let bytes = manifest.encode();
        let content = ContentId::of(&bytes);
        let store = self.store.clone();
        self.env
            .blocking(move || store.put(&ChunkId(content.0), &bytes))
            .await?;
        let record = VersionRecord {
            name,
            vid: self.next_vid(),
            content: Some(content),
            size: manifest.size,
        };
        self.apply(record.clone()).await?;
        tracing::debug!(name = %record.name, version = %record.vid, size = record.size, "put");
        Ok(Message::PutDone { record })
    }

    /// Make `record` durable in the index.
    async fn apply(&self, record: VersionRecord) -> Result<(), Refusal> {
        let index = self.index.clone();
        self.env.blocking(move || index.apply(&[record])).await?;
        Ok(())
    }

    /// Find the record a get by name asks for.
    async fn resolve(
        &self,
        name: String,
        version: Option<VersionSelector>,
    ) -> Result<VersionRecord, Refusal> {
        let index = self.index.clone();
        let lookup_name = name.clone();
        let history = self
            .env
            .blocking(move || index.history(&lookup_name))
            .await?;
        let record = match &version {
            None => history.current().cloned(),
            Some(selector) => history
                .records
                .values()
                .rev()
                .find(|r| selector.matches(&r.vid))
                .cloned(),
        };
        match (record, version) {
            (Some(record), _) if !record.is_tombstone() => Ok(record),
            (Some(record), None) => Err(Refusal::new(
                ErrorCode::NotFound,
                format!("{name} was removed (version {})", record.vid),
            )),
            (Some(record), Some(_)) => Err(Refusal::new(
                ErrorCode::NotFound,
                format!(
                    "version {} of {name} is a removal; it has no content",
                    record.vid
                ),
            )),
            (None, None) => Err(Refusal::new(
                ErrorCode::NotFound,
                format!("no file named {name}"),
            )),
            (None, Some(selector)) => Err(Refusal::new(
                ErrorCode::NotFound,
                format!(
                    "{name} has no version {selector} (it may have been pruned; `versions {name}` lists them)"
                ),
            )),
        }
    }

    /// Stream a file: manifest first, then each chunk verified, in order.
    /// The outer `Err` is a connection failure; the inner one a refusal to
    /// be sent by the caller (only ever before any chunk was sent).
    async fn get(
        &self,
        stream: &mut SecureStream,
        id: u64,
        target: GetTarget,
        version: Option<VersionSelector>,
    ) -> Result<Result<(), Refusal>, SecureError> {
        let (record, content) = match target {
            GetTarget::Name(name) => match self.resolve(name, version).await {
                Ok(record) => {
                    let content = record.content.expect("resolve returns no tombstone");
                    (Some(record), content)
                }
                Err(refusal) => return Ok(Err(refusal)),
            },
            GetTarget::Content(content) => (None, content),
        };
        let store = self.store.clone();
        let manifest_bytes = match self
            .env
            .blocking(move || store.get(&ChunkId(content.0)))
            .await
        {
            Ok(bytes) => bytes,
            Err(StoreError::NotFound(_)) => {
                return Ok(Err(Refusal::new(
                    ErrorCode::NotFound,
                    format!("no content {content} on this node"),
                )));
            }
            Err(error) => return Ok(Err(error.into())),
        };
        let manifest = match Manifest::decode(&manifest_bytes) {
            Ok(manifest) => manifest,
            Err(error) => {
                return Ok(Err(Refusal::new(
                    ErrorCode::Corrupt,
                    format!("manifest {content}: {error}"),
                )));
            }
        };
        stream
            .send(&Envelope {
                request_id: id,
                message: Message::GetStart {
                    record,
                    content,
                    manifest: manifest_bytes,
                },
            })
            .await?;
        let mut pending = manifest.chunks.iter();
        let mut prefetched = VecDeque::new();
        loop {
            while prefetched.len() < GET_CHUNKS_PREFETCH {
                let Some(chunk) = pending.next() else { break };
                let store = self.store.clone();
                let chunk_id = chunk.id;
                prefetched.push_back(self.env.blocking(move || store.get(&chunk_id)));
            }
            let Some(job) = prefetched.pop_front() else {
                break;
            };
            let message = match job.await {
                Ok(bytes) => Message::ChunkData { bytes },
                Err(error) => {
                    let refusal = Refusal::from(error);
                    Message::Error {
                        code: refusal.code,
                        message: refusal.message,
                    }
                }
            };
            let failed = matches!(message, Message::Error { .. });
            stream
                .send(&Envelope {
                    request_id: id,
                    message,
                })
                .await?;
            if failed {
                return Ok(Ok(()));
            }
        }
        stream
            .send(&Envelope {
                request_id: id,
                message: Message::GetEnd,
            })
            .await?;
        Ok(Ok(()))
    }

    async fn remove(&self, name: String) -> Result<Message, Refusal> {
        validate_name(&name).map_err(|e| Refusal::new(ErrorCode::InvalidRequest, e.to_string()))?;
        let current = self.resolve(name.clone(), None).await?;
        let record = VersionRecord {
            name,
            vid: self.next_vid(),
            content: None,
            size: 0,
        };
        self.apply(record.clone()).await?;
        tracing::debug!(name = %record.name, version = %record.vid, replaced = %current.vid, "removed");
        Ok(Message::Removed { record })
    }

    async fn list(&self) -> Result<Message, Refusal> {
        let index = self.index.clone();
        let records = self
            .env
            .blocking(move || index.list_current(crate::limits::RECORDS_PER_REPLY_MAX + 1))
            .await?;
        let (records, truncated) = fit_in_frame(records);
        Ok(Message::Listing { records, truncated })
    }

    async fn versions(&self, name: String) -> Result<Message, Refusal> {
        let index = self.index.clone();
        let lookup = name.clone();
        let history = self.env.blocking(move || index.history(&lookup)).await?;
        if history.records.is_empty() {
            return Err(Refusal::new(
                ErrorCode::NotFound,
                format!("no file named {name}"),
            ));
        }
        let (records, truncated) = fit_in_frame(history.records.into_values().rev().collect());
        Ok(Message::History { records, truncated })
    }

    pub fn status(&self) -> StatusReport {
        let usage = self.store.usage();
        StatusReport {
            node_id: self.node_id(),
            listen: self.listen.clone(),
            members: std::iter::once(MemberStatus {
                node_id: self.node_id(),
                addr: self.peers.identity().addr,
                state: MemberState::Alive,
            })
            .chain(self.members.members())
            .collect(),
            chunks: usage.blobs,
            bytes_stored: usage.bytes,
            quarantined: self
                .store
                .counters
                .quarantined
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }
}

fn record_chunk(
    manifest: &mut Manifest,
    stored: Result<(ChunkId, usize), StoreError>,
) -> Result<(), Refusal> {
    let (chunk_id, len) = stored?;
    manifest
        .push(chunk_id, len)
        .map_err(|e| Refusal::new(ErrorCode::InvalidRequest, e.to_string()))
}

/// Keep as many records as fit in one reply frame (and the count limit).
fn fit_in_frame(mut records: Vec<VersionRecord>) -> (Vec<VersionRecord>, bool) {
    // A record encodes to its name plus at most ~100 bytes of ids and varints.
    let budget = FRAME_BYTES_MAX - 4096;
    let mut used = 0;
    let mut keep = 0;
    for record in &records {
        used += record.name.len() + 128;
        if used > budget || keep == crate::limits::RECORDS_PER_REPLY_MAX {
            break;
        }
        keep += 1;
    }
    let truncated = keep < records.len();
    records.truncate(keep);
    (records, truncated)
}
