//! The client requests a node serves: put, get, remove, list, versions,
//! status. Each answers with its reply message or a [`Refusal`], which the
//! connection turns into `Message::Error` and survives.

use std::collections::VecDeque;

use tokio_util::task::AbortOnDropHandle;

use crate::cas::{ChunkId, Chunker, ContentId, Manifest};
use crate::cluster::{ClusterError, PutBlobs, Stored};
use crate::keys::{AccessKeyId, Permission};
use crate::limits::{FRAME_BYTES_MAX, GET_CHUNKS_PREFETCH, PUT_CHUNKS_IN_FLIGHT};
use crate::meta::{Floor, IndexError, VersionRecord, VersionSelector, validate_name};
use crate::secure::{SecureError, SecureStream};
use crate::store::StoreError;
use crate::wire::{
    Envelope, ErrorCode, GetTarget, MemberState, MemberStatus, Message, StatusReport,
};

use super::Node;

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
            StoreError::Busy(_) => ErrorCode::Unavailable,
        };
        tracing::warn!(%error, "request failed in the chunk store");
        Refusal::new(code, error.to_string())
    }
}

impl From<ClusterError> for Refusal {
    fn from(error: ClusterError) -> Self {
        let code = match &error {
            ClusterError::TooFewNodes { .. }
            | ClusterError::QuorumNotReached { .. }
            | ClusterError::Pruned(..) => ErrorCode::Unavailable,
            ClusterError::NotFound(_) => ErrorCode::NotFound,
            ClusterError::Corrupt(_) => ErrorCode::Corrupt,
            ClusterError::Invalid(_) => ErrorCode::InvalidRequest,
            ClusterError::Local(_) | ClusterError::Clock(_) => ErrorCode::Internal,
        };
        tracing::warn!(%error, "request failed");
        Refusal::new(code, error.to_string())
    }
}

impl From<IndexError> for Refusal {
    fn from(error: IndexError) -> Self {
        tracing::error!(%error, "request failed in the version index");
        Refusal::new(ErrorCode::Internal, error.to_string())
    }
}

/// Whether `permission` allows `request`; the refusal says what is missing.
fn authorize(permission: &Permission, request: &Message) -> Result<(), Refusal> {
    let forbidden = |what: String| {
        Err(Refusal::new(
            ErrorCode::Forbidden,
            format!("this access key ({permission}) may not {what}"),
        ))
    };
    match request {
        Message::PutStart { name } | Message::Remove { name } | Message::Restore { name, .. }
            if !permission.may_write(name) =>
        {
            forbidden(format!("write {name}"))
        }
        Message::Versions { name } if !permission.may_read(name) => {
            forbidden(format!("read {name}"))
        }
        Message::Get {
            target: GetTarget::Name(name),
            ..
        } if !permission.may_read(name) => forbidden(format!("read {name}")),
        Message::Get {
            target: GetTarget::Content(_),
            ..
        } if !permission.may_read_any() => {
            forbidden("read by content id (only a key without prefixes may)".into())
        }
        Message::Prune { name, .. } if !permission.is_admin() || !permission.may_write(name) => {
            forbidden(format!("prune {name} (an admin key may)"))
        }
        Message::Status
        | Message::KeyCreate { .. }
        | Message::KeyList
        | Message::KeyRemove { .. }
        | Message::KeySetPermission { .. }
            if !permission.is_admin() =>
        {
            forbidden(format!("{} (an admin key may)", request.kind()))
        }
        _ => Ok(()),
    }
}

impl Node {
    /// Serve one request of a client authenticated by access key `key`,
    /// checked against the key's permission as it is now. An `Err` is a
    /// connection failure; a refused request is answered with
    /// `Message::Error` and the connection stays usable, unless the key was
    /// removed (`Ok(false)`: the connection closes).
    pub(super) async fn handle(
        &self,
        stream: &mut SecureStream,
        request: Envelope,
        key: &AccessKeyId,
    ) -> Result<bool, SecureError> {
        let id = request.request_id;
        let Some(permission) = self.cluster.keyring.permission(key) else {
            tracing::info!(%key, "refusing a request of a removed access key; closing its connection");
            stream
                .send(&Envelope {
                    request_id: id,
                    message: Message::Error {
                        code: ErrorCode::Unauthorized,
                        message: format!("access key {key} was removed"),
                    },
                })
                .await?;
            return Ok(false);
        };
        if let Err(refusal) = authorize(&permission, &request.message) {
            tracing::info!(%key, request = request.message.kind(), "refused: {}", refusal.message);
            // A refused put still sends its data: read it to the end, so
            // the client hears why rather than a reset connection.
            if let Message::PutStart { .. } = request.message {
                self.drain_put(stream, id).await?;
            }
            stream
                .send(&Envelope {
                    request_id: id,
                    message: Message::Error {
                        code: refusal.code,
                        message: refusal.message,
                    },
                })
                .await?;
            return Ok(true);
        }
        let reply = match request.message {
            Message::PutStart { name } => self.put(stream, id, name, *key).await?,
            Message::Get {
                target,
                version,
                quorum,
            } => match self.get(stream, id, target, version, quorum).await? {
                Ok(()) => return Ok(true),
                Err(refusal) => Err(refusal),
            },
            Message::Remove { name } => self.remove(name, *key).await,
            Message::List => self.list(&permission).await,
            Message::Versions { name } => self.versions(name).await,
            Message::Status => Ok(Message::StatusReply(self.status())),
            Message::Prune { name, keep } => self.prune(name, keep).await,
            Message::Restore { name, version } => self.restore(name, version, *key).await,
            Message::KeyCreate { name, permission } => {
                match self.cluster.create_key(name, permission).await {
                    Ok((key, secret)) => Ok(Message::KeyCreated {
                        key,
                        secret: secret.expose().to_string(),
                    }),
                    Err(error) => Err(error.into()),
                }
            }
            Message::KeyList => Ok(Message::KeyListing {
                keys: self.cluster.keyring.list(),
            }),
            Message::KeyRemove { id: target } => self
                .cluster
                .remove_key(target)
                .await
                .map(|key| Message::KeyChanged { key })
                .map_err(Refusal::from),
            Message::KeySetPermission {
                id: target,
                permission,
            } => self
                .cluster
                .set_key_permission(target, permission)
                .await
                .map(|key| Message::KeyChanged { key })
                .map_err(Refusal::from),
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
            .await?;
        Ok(true)
    }

    /// Read a refused put's frames up to its `PutFinish`.
    async fn drain_put(&self, stream: &mut SecureStream, id: u64) -> Result<(), SecureError> {
        loop {
            let envelope = stream.expect().await?;
            if envelope.request_id != id {
                return Err(SecureError::Wire(crate::wire::WireError::Undecodable(
                    "frame of another request during a put".into(),
                )));
            }
            match envelope.message {
                Message::PutData { .. } => continue,
                _ => return Ok(()),
            }
        }
    }

    /// Receive a file, chunk, hash, seal and store it, then record the version.
    async fn put(
        &self,
        stream: &mut SecureStream,
        id: u64,
        name: String,
        key: AccessKeyId,
    ) -> Result<Result<Message, Refusal>, SecureError> {
        let mut failure = validate_name(&name)
            .map_err(|e| Refusal::new(ErrorCode::InvalidRequest, e.to_string()))
            .and_then(|()| Ok(self.cluster.check_quorum_reachable()?))
            .err();
        let mut chunker = Chunker::default();
        let mut manifest = Manifest::default();
        let mut blobs = PutBlobs::default();
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
                let cluster = self.cluster.clone();
                // Aborted if this request ends early (the client went
                // away): no work outlives its connection's slot.
                in_flight.push_back(AbortOnDropHandle::new(tokio::spawn(async move {
                    let chunk_id = ChunkId::of(&chunk);
                    let len = chunk.len();
                    cluster
                        .store_blob(chunk_id, chunk)
                        .await
                        .map(|stored| (chunk_id, len, stored))
                })));
                // Bounded pipeline: at most PUT_CHUNKS_IN_FLIGHT chunks in memory.
                while in_flight.len() >= PUT_CHUNKS_IN_FLIGHT || (last && !in_flight.is_empty()) {
                    let job = in_flight.pop_front().expect("non-empty");
                    if let Err(refusal) = record_chunk(&mut manifest, &mut blobs, job.await) {
                        failure = Some(refusal);
                        break;
                    }
                    // A long upload keeps what it stored so far.
                    if let Err(error) = self.cluster.keep_if_due(&mut blobs).await {
                        failure = Some(error.into());
                        break;
                    }
                }
            }
            // Record the stores that finished (in order) after every frame,
            // and keep what is due: a slow sender's chunks wait in the
            // pipeline, and must be kept as any other.
            while failure.is_none() && in_flight.front().is_some_and(|job| job.is_finished()) {
                let job = in_flight.pop_front().expect("non-empty");
                if let Err(refusal) = record_chunk(&mut manifest, &mut blobs, job.await) {
                    failure = Some(refusal);
                }
            }
            if failure.is_none()
                && let Err(error) = self.cluster.keep_if_due(&mut blobs).await
            {
                failure = Some(error.into());
            }
            if last {
                break;
            }
        }
        while let Some(job) = in_flight.pop_front() {
            if let Err(refusal) = record_chunk(&mut manifest, &mut blobs, job.await) {
                failure.get_or_insert(refusal);
            }
        }
        if let Some(refusal) = failure {
            return Ok(Err(refusal));
        }
        Ok(self.commit_put(name, manifest, blobs, key).await)
    }

    /// Store the manifest on its owners, then make the version record
    /// durable on W indexes.
    async fn commit_put(
        &self,
        name: String,
        manifest: Manifest,
        mut blobs: PutBlobs,
        key: AccessKeyId,
    ) -> Result<Message, Refusal> {
        let bytes = manifest.encode();
        let content = ContentId::of(&bytes);
        let stored = self
            .cluster
            .store_blob(ChunkId(content.0), bytes.into())
            .await?;
        blobs.add(ChunkId(content.0), &stored);
        let record = VersionRecord {
            name,
            vid: self.cluster.next_vid()?,
            content: Some(content),
            size: manifest.size,
            by: Some(key),
        };
        self.cluster
            .commit_put(vec![record.clone()], &mut blobs)
            .await?;
        tracing::debug!(name = %record.name, version = %record.vid, size = record.size, "put");
        Ok(Message::PutDone { record })
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
        quorum: bool,
    ) -> Result<Result<(), Refusal>, SecureError> {
        if quorum
            && version.is_none()
            && let GetTarget::Name(name) = &target
            && let Err(error) = self.cluster.quorum_current(name).await
        {
            return Ok(Err(error.into()));
        }
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
        let manifest_bytes = match self.cluster.fetch_blob(ChunkId(content.0)).await {
            Ok(bytes) => bytes,
            Err(ClusterError::NotFound(_)) => {
                return Ok(Err(Refusal::new(
                    ErrorCode::NotFound,
                    format!("no reachable node holds content {content}"),
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
                let cluster = self.cluster.clone();
                let chunk_id = chunk.id;
                // Aborted with the request (a client gone, a failed chunk).
                prefetched.push_back(AbortOnDropHandle::new(tokio::spawn(async move {
                    cluster.fetch_blob(chunk_id).await
                })));
            }
            let Some(job) = prefetched.pop_front() else {
                break;
            };
            let fetched = job
                .await
                .unwrap_or_else(|e| Err(ClusterError::Local(format!("a fetch task failed: {e}"))));
            let message = match fetched {
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

    async fn remove(&self, name: String, key: AccessKeyId) -> Result<Message, Refusal> {
        validate_name(&name).map_err(|e| Refusal::new(ErrorCode::InvalidRequest, e.to_string()))?;
        let current = self.resolve(name.clone(), None).await?;
        self.cluster.check_quorum_reachable()?;
        let record = VersionRecord {
            name,
            vid: self.cluster.next_vid()?,
            content: None,
            size: 0,
            by: Some(key),
        };
        self.cluster
            .commit(vec![record.clone()], Vec::new())
            .await?;
        tracing::debug!(name = %record.name, version = %record.vid, replaced = %current.vid, "removed");
        Ok(Message::Removed { record })
    }

    /// Keep the newest `keep` versions of `name`: raise its floor to the
    /// oldest kept version, on W indexes and then everywhere.
    async fn prune(&self, name: String, keep: u32) -> Result<Message, Refusal> {
        validate_name(&name).map_err(|e| Refusal::new(ErrorCode::InvalidRequest, e.to_string()))?;
        if keep == 0 {
            return Err(Refusal::new(
                ErrorCode::InvalidRequest,
                "--keep must be at least 1 (use `rm` to delete a file)",
            ));
        }
        let index = self.index.clone();
        let lookup = name.clone();
        let history = self.env.blocking(move || index.history(&lookup)).await?;
        if history.records.is_empty() {
            return Err(Refusal::new(
                ErrorCode::NotFound,
                format!("no file named {name}"),
            ));
        }
        let Some(oldest_kept) = history.records.keys().rev().nth(keep as usize - 1).copied() else {
            return Ok(Message::Pruned {
                floor: history.floor,
                removed: 0,
            });
        };
        let removed = history.records.range(..oldest_kept).count() as u64;
        if removed == 0 {
            return Ok(Message::Pruned {
                floor: history.floor,
                removed: 0,
            });
        }
        self.cluster.check_quorum_reachable()?;
        let floor = Floor {
            name,
            floor: oldest_kept,
        };
        self.cluster.commit(Vec::new(), vec![floor]).await?;
        Ok(Message::Pruned {
            floor: Some(oldest_kept),
            removed,
        })
    }

    /// Make an earlier version's content current again, as a new version.
    async fn restore(
        &self,
        name: String,
        version: VersionSelector,
        key: AccessKeyId,
    ) -> Result<Message, Refusal> {
        validate_name(&name).map_err(|e| Refusal::new(ErrorCode::InvalidRequest, e.to_string()))?;
        let old = self.resolve(name.clone(), Some(version)).await?;
        self.cluster.check_quorum_reachable()?;
        // The old content may be garbage to its holders (a prune they
        // heard of, this node not yet): keep it before making it current,
        // as a put keeps what it stored.
        let content = old.content.expect("resolve returns no tombstone");
        let manifest_bytes = self.cluster.fetch_blob(ChunkId(content.0)).await?;
        let manifest = Manifest::decode(&manifest_bytes)
            .map_err(|e| Refusal::new(ErrorCode::Corrupt, format!("manifest {content}: {e}")))?;
        let chunks: Vec<ChunkId> = manifest.chunks.iter().map(|c| c.id).collect();
        let mut blobs = self
            .cluster
            .keep_content(ChunkId(content.0), &chunks)
            .await?;
        let record = VersionRecord {
            name,
            vid: self.cluster.next_vid()?,
            content: Some(content),
            size: old.size,
            by: Some(key),
        };
        self.cluster
            .commit_put(vec![record.clone()], &mut blobs)
            .await?;
        tracing::debug!(name = %record.name, version = %record.vid, from = %old.vid, "restored");
        Ok(Message::PutDone { record })
    }

    /// The current files the key may read: the whole index for a key
    /// without prefixes, else the range of each prefix (so a key limited
    /// to `team/` lists `team/` however many other names there are).
    async fn list(&self, permission: &Permission) -> Result<Message, Refusal> {
        let index = self.index.clone();
        let limit = crate::limits::RECORDS_PER_REPLY_MAX + 1;
        let prefixes = if permission.prefixes.is_empty() {
            vec![String::new()]
        } else {
            permission.prefixes.clone()
        };
        let listed = self
            .env
            .blocking(move || {
                let mut by_name = std::collections::BTreeMap::new();
                for prefix in &prefixes {
                    for record in index.list_current_under(prefix, None, limit)? {
                        by_name.insert(record.name.clone(), record);
                    }
                }
                Ok::<_, IndexError>(by_name.into_values().take(limit).collect::<Vec<_>>())
            })
            .await?;
        let (records, truncated) = fit_in_frame(listed);
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
            under_replicated: self
                .cluster
                .repair
                .under_replicated
                .load(std::sync::atomic::Ordering::Relaxed),
            under_replicated_bytes: self
                .cluster
                .repair
                .under_replicated_bytes
                .load(std::sync::atomic::Ordering::Relaxed),
            scrubbed: self
                .cluster
                .scrub
                .blobs_verified
                .load(std::sync::atomic::Ordering::Relaxed),
            scrub_passes: self
                .cluster
                .scrub
                .passes
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }
}

fn record_chunk(
    manifest: &mut Manifest,
    blobs: &mut PutBlobs,
    stored: Result<Result<(ChunkId, usize, Stored), ClusterError>, tokio::task::JoinError>,
) -> Result<(), Refusal> {
    let (chunk_id, len, stored) = stored
        .map_err(|e| Refusal::new(ErrorCode::Internal, format!("a store task failed: {e}")))??;
    blobs.add(chunk_id, &stored);
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
