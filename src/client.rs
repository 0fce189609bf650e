//! The client side of the protocol: connect to a node, make requests.
//! Used by the CLI verbs and by tests.
//!
//! A get is verified here too, end to end: the manifest against the content
//! id, and every chunk against its id, before its bytes reach the caller's
//! writer. A node with a bad disk or bad intentions cannot make a client
//! accept wrong bytes.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use std::collections::BTreeSet;

use crate::cas::{ChunkId, Chunker, ContentId, Manifest};
use crate::env::Env;
use crate::keys::StaticKeypair;
use crate::keys::credentials::Credentials;
use crate::keys::{AccessKeyId, Permission};
use crate::limits::{CONNECT_TIMEOUT, PUT_DATA_FRAME_BYTES};
use crate::meta::{VersionId, VersionRecord, VersionSelector};
use crate::secure::{Credential, SecureError, SecureStream, connect};
use crate::wire::{Envelope, ErrorCode, GetTarget, KeyInfo, Message, StatusReport};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach a dfs node at {addr}: {reason}; is `dfs-node serve` running there? (--node / DFS_NODE)"
    )]
    Unreachable { addr: String, reason: String },
    #[error(
        "{0}; check the access key (DFS_ACCESS_KEY_ID and DFS_SECRET_ACCESS_KEY, --credentials, or the credentials file)"
    )]
    Refused(SecureError),
    #[error("connection to the node failed: {0}")]
    Connection(#[from] SecureError),
    #[error("{message}")]
    Remote { code: ErrorCode, message: String },
    #[error("the node broke the protocol: {0}")]
    Protocol(String),
    #[error("verification failed, nothing was accepted: {0}")]
    Integrity(String),
    #[error("local I/O failed: {0}")]
    Local(#[from] std::io::Error),
}

impl ClientError {
    /// The access key was refused (unknown, removed, wrong secret).
    pub fn is_refused_key(&self) -> bool {
        matches!(
            self,
            ClientError::Refused(_)
                | ClientError::Remote {
                    code: ErrorCode::Unauthorized,
                    ..
                }
        )
    }

    /// The access key may not do what was asked.
    pub fn is_forbidden(&self) -> bool {
        matches!(
            self,
            ClientError::Remote {
                code: ErrorCode::Forbidden,
                ..
            }
        )
    }

    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            ClientError::Remote {
                code: ErrorCode::NotFound,
                ..
            }
        )
    }
}

/// Chunk references per `PutReuse` frame (32 bytes each: 128 KiB).
const REUSE_IDS_PER_FRAME: usize = 4096;

/// A version a chunked put may reuse chunks of.
#[derive(Debug, Clone)]
pub struct PutBase {
    pub record: VersionRecord,
    pub manifest: Manifest,
}

impl ClientError {
    /// A chunked put against a base failed in a way the same put without
    /// one may not: the base version was deleted for good or pruned
    /// meanwhile, or a chunk it reuses is no longer held by W nodes.
    pub fn base_gone(&self) -> bool {
        self.is_not_found()
    }
}

/// What a get delivered.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub record: Option<VersionRecord>,
    pub content: ContentId,
    pub size: u64,
}

pub struct Client {
    stream: SecureStream,
    next_request_id: u64,
}

impl Client {
    /// Dial `addr` and run the handshake with a fresh client identity,
    /// proving `credentials`' access key.
    pub async fn connect(
        env: &Env,
        addr: &str,
        credentials: &Credentials,
    ) -> Result<Self, ClientError> {
        let unreachable = |reason: String| ClientError::Unreachable {
            addr: addr.to_string(),
            reason,
        };
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, env.net.connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return Err(unreachable(error.to_string())),
            Err(_) => return Err(unreachable(format!("no answer within {CONNECT_TIMEOUT:?}"))),
        };
        let identity = StaticKeypair::generate(env);
        let stream = connect(env, stream, &identity, Credential::Client(credentials))
            .await
            .map_err(|e| match e {
                SecureError::HandshakeRefused(_) | SecureError::AccessKeyRefused { .. } => {
                    ClientError::Refused(e)
                }
                SecureError::Io(io) => unreachable(io.to_string()),
                other => ClientError::Connection(other),
            })?;
        Ok(Self {
            stream,
            next_request_id: 1,
        })
    }

    async fn send(&mut self, message: Message) -> Result<u64, ClientError> {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        self.stream
            .send(&Envelope {
                request_id,
                message,
            })
            .await?;
        Ok(request_id)
    }

    /// The next message of request `request_id`; `Error` becomes `Err`.
    async fn reply(&mut self, request_id: u64) -> Result<Message, ClientError> {
        let envelope = self.stream.expect().await?;
        if envelope.request_id != request_id {
            return Err(ClientError::Protocol(format!(
                "reply to request {} while waiting for {request_id}",
                envelope.request_id
            )));
        }
        match envelope.message {
            Message::Error { code, message } => Err(ClientError::Remote { code, message }),
            message => Ok(message),
        }
    }

    async fn call(&mut self, message: Message) -> Result<Message, ClientError> {
        let id = self.send(message).await?;
        self.reply(id).await
    }

    /// Store everything `source` yields under `name`. `progress` gets the
    /// byte count sent so far.
    pub async fn put(
        &mut self,
        name: &str,
        source: &mut (impl AsyncRead + Unpin),
        progress: &mut dyn FnMut(u64),
    ) -> Result<VersionRecord, ClientError> {
        let id = self
            .send(Message::PutStart {
                name: name.to_string(),
            })
            .await?;
        let mut sent = 0u64;
        let mut buffer = vec![0u8; PUT_DATA_FRAME_BYTES];
        loop {
            let mut filled = 0;
            while filled < buffer.len() {
                match source.read(&mut buffer[filled..]).await? {
                    0 => break,
                    n => filled += n,
                }
            }
            if filled == 0 {
                break;
            }
            let envelope = Envelope {
                request_id: id,
                message: Message::PutData {
                    bytes: buffer[..filled].to_vec(),
                },
            };
            self.stream.send(&envelope).await?;
            sent += filled as u64;
            progress(sent);
            if filled < buffer.len() {
                break;
            }
        }
        self.finish_put(id).await
    }

    /// End put `id` and wait for its record.
    async fn finish_put(&mut self, id: u64) -> Result<VersionRecord, ClientError> {
        self.stream
            .send(&Envelope {
                request_id: id,
                message: Message::PutFinish,
            })
            .await?;
        match self.reply(id).await? {
            Message::PutDone { record } => Ok(record),
            other => Err(unexpected(&other)),
        }
    }

    /// The current version of `name` and its manifest (verified against
    /// its content id): what [`Client::put_chunked`] may reuse. `None`
    /// when `name` has no current version with content.
    pub async fn put_base(&mut self, name: &str) -> Result<Option<PutBase>, ClientError> {
        let reply = self
            .call(Message::PutBaseOf {
                name: name.to_string(),
            })
            .await?;
        let (record, manifest) = match reply {
            Message::PutBase {
                record: Some(record),
                manifest,
            } => (record, manifest),
            Message::PutBase { record: None, .. } => return Ok(None),
            other => return Err(unexpected(&other)),
        };
        if record.name != name || record.content != Some(ContentId::of(&manifest)) {
            return Err(ClientError::Integrity(
                "the base's record and manifest disagree".into(),
            ));
        }
        let manifest =
            Manifest::decode(&manifest).map_err(|e| ClientError::Integrity(e.to_string()))?;
        Ok(Some(PutBase { record, manifest }))
    }

    /// Store everything `source` yields under `name`, cutting it into
    /// chunks here (the node's chunker, so the same ids) and sending only
    /// those `base` (a version of `name`, from [`Client::put_base`]) does
    /// not have; the others go as references. The node hashes every chunk
    /// sent and checks every reference against the base. `progress` gets
    /// the byte count read from `source` so far.
    pub async fn put_chunked(
        &mut self,
        name: &str,
        base: Option<&PutBase>,
        source: &mut (impl AsyncRead + Unpin),
        progress: &mut dyn FnMut(u64),
    ) -> Result<VersionRecord, ClientError> {
        let have: BTreeSet<ChunkId> = base
            .map(|base| base.manifest.chunks.iter().map(|chunk| chunk.id).collect())
            .unwrap_or_default();
        let id = self
            .send(Message::PutChunkedStart {
                name: name.to_string(),
                base: base.map(|base| base.record.vid),
            })
            .await?;
        let mut chunker = Chunker::default();
        let mut reuse = Vec::new();
        let mut read = 0u64;
        // The manifest the node must build from what is sent, to check its
        // answer against (`None` past the chunk limit: the node refuses).
        let mut expected = Some(Manifest::default());
        let mut buffer = vec![0u8; PUT_DATA_FRAME_BYTES];
        loop {
            let filled = source.read(&mut buffer).await?;
            if filled == 0 {
                chunker.finish();
            } else {
                chunker.push(&buffer[..filled]);
                read += filled as u64;
                progress(read);
            }
            while let Some(chunk) = chunker.next_chunk() {
                let chunk_id = ChunkId::of(&chunk);
                if let Some(manifest) = &mut expected
                    && manifest.push(chunk_id, chunk.len()).is_err()
                {
                    expected = None;
                }
                if have.contains(&chunk_id) {
                    reuse.push(chunk_id);
                    if reuse.len() == REUSE_IDS_PER_FRAME {
                        self.send_reuse(id, &mut reuse).await?;
                    }
                } else {
                    self.send_reuse(id, &mut reuse).await?;
                    self.stream
                        .send(&Envelope {
                            request_id: id,
                            message: Message::PutChunk { bytes: chunk },
                        })
                        .await?;
                }
            }
            if filled == 0 {
                break;
            }
        }
        self.send_reuse(id, &mut reuse).await?;
        let record = self.finish_put(id).await?;
        if record.name != name
            || record.size != read
            || expected.is_some_and(|manifest| record.content != Some(manifest.content_id()))
        {
            return Err(ClientError::Integrity(format!(
                "the node acknowledged {record:?}, not the {read} bytes sent"
            )));
        }
        Ok(record)
    }

    /// [`Client::put_chunked`] against the current version of `name`, if
    /// it has one: a new version sends only the chunks that changed.
    pub async fn put_reusing(
        &mut self,
        name: &str,
        source: &mut (impl AsyncRead + Unpin),
        progress: &mut dyn FnMut(u64),
    ) -> Result<VersionRecord, ClientError> {
        let base = self.put_base(name).await?;
        self.put_chunked(name, base.as_ref(), source, progress)
            .await
    }

    /// Send the references gathered in `reuse` (if any) as one `PutReuse`.
    async fn send_reuse(&mut self, id: u64, reuse: &mut Vec<ChunkId>) -> Result<(), ClientError> {
        if reuse.is_empty() {
            return Ok(());
        }
        self.stream
            .send(&Envelope {
                request_id: id,
                message: Message::PutReuse {
                    ids: std::mem::take(reuse),
                },
            })
            .await?;
        Ok(())
    }

    /// Fetch a file and write it to `sink`, verified chunk by chunk.
    /// `progress` gets `(bytes so far, total)`. On `Err`, what was written
    /// to `sink` is incomplete and must be discarded.
    pub async fn get(
        &mut self,
        target: GetTarget,
        version: Option<VersionSelector>,
        sink: &mut (impl AsyncWrite + Unpin),
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Fetched, ClientError> {
        self.get_with(target, version, false, sink, progress).await
    }

    /// [`Client::get`], and with `quorum` the node serves the greatest
    /// current version a majority of the cluster knows (by name only).
    pub async fn get_with(
        &mut self,
        target: GetTarget,
        version: Option<VersionSelector>,
        quorum: bool,
        sink: &mut (impl AsyncWrite + Unpin),
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Fetched, ClientError> {
        let asked_content = match &target {
            GetTarget::Content(content) => Some(*content),
            GetTarget::Name(_) => None,
        };
        let id = self
            .send(Message::Get {
                target,
                version,
                quorum,
            })
            .await?;
        let (record, content, manifest) = match self.reply(id).await? {
            Message::GetStart {
                record,
                content,
                manifest,
            } => (record, content, manifest),
            other => return Err(unexpected(&other)),
        };
        if ContentId::of(&manifest) != content {
            return Err(ClientError::Integrity(format!(
                "manifest does not hash to content id {content}"
            )));
        }
        if asked_content.is_some_and(|asked| asked != content) {
            return Err(ClientError::Integrity(format!(
                "asked for {}, got {content}",
                asked_content.unwrap()
            )));
        }
        if record.as_ref().is_some_and(|r| r.content != Some(content)) {
            return Err(ClientError::Integrity(
                "version record and content id disagree".into(),
            ));
        }
        let manifest =
            Manifest::decode(&manifest).map_err(|e| ClientError::Integrity(e.to_string()))?;
        let mut received = 0u64;
        progress(0, manifest.size);
        for chunk in &manifest.chunks {
            let bytes = match self.reply(id).await? {
                Message::ChunkData { bytes } => bytes,
                other => return Err(unexpected(&other)),
            };
            if bytes.len() != chunk.len as usize || ChunkId::of(&bytes) != chunk.id {
                return Err(ClientError::Integrity(format!(
                    "chunk {} does not match its id",
                    chunk.id
                )));
            }
            sink.write_all(&bytes).await?;
            received += bytes.len() as u64;
            progress(received, manifest.size);
        }
        match self.reply(id).await? {
            Message::GetEnd => {}
            other => return Err(unexpected(&other)),
        }
        sink.flush().await?;
        Ok(Fetched {
            record,
            content,
            size: manifest.size,
        })
    }

    /// Mark `name` deleted (a tombstone version); returns the tombstone.
    pub async fn remove(&mut self, name: &str) -> Result<VersionRecord, ClientError> {
        match self
            .call(Message::Remove {
                name: name.to_string(),
            })
            .await?
        {
            Message::Removed { record } => Ok(record),
            other => Err(unexpected(&other)),
        }
    }

    /// Delete one version of `name` for good, on every node; returns the
    /// version deleted.
    pub async fn forget(
        &mut self,
        name: &str,
        version: VersionSelector,
    ) -> Result<VersionRecord, ClientError> {
        match self
            .call(Message::Forget {
                name: name.to_string(),
                version,
            })
            .await?
        {
            Message::Forgotten { record } => Ok(record),
            other => Err(unexpected(&other)),
        }
    }

    /// Current versions of all live files; `true` if the list was truncated.
    pub async fn list(&mut self) -> Result<(Vec<VersionRecord>, bool), ClientError> {
        match self.call(Message::List).await? {
            Message::Listing { records, truncated } => Ok((records, truncated)),
            other => Err(unexpected(&other)),
        }
    }

    /// `name`'s versions, newest first.
    pub async fn versions(
        &mut self,
        name: &str,
    ) -> Result<(Vec<VersionRecord>, bool), ClientError> {
        match self
            .call(Message::Versions {
                name: name.to_string(),
            })
            .await?
        {
            Message::History { records, truncated } => Ok((records, truncated)),
            other => Err(unexpected(&other)),
        }
    }

    /// Keep the newest `keep` versions of `name`. Returns the new floor and
    /// how many versions were dropped.
    pub async fn prune(
        &mut self,
        name: &str,
        keep: u32,
    ) -> Result<(Option<VersionId>, u64), ClientError> {
        match self
            .call(Message::Prune {
                name: name.to_string(),
                keep,
            })
            .await?
        {
            Message::Pruned { floor, removed } => Ok((floor, removed)),
            other => Err(unexpected(&other)),
        }
    }

    /// Make `version`'s content current again; returns the new version.
    pub async fn restore(
        &mut self,
        name: &str,
        version: VersionSelector,
    ) -> Result<VersionRecord, ClientError> {
        match self
            .call(Message::Restore {
                name: name.to_string(),
                version,
            })
            .await?
        {
            Message::PutDone { record } => Ok(record),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn status(&mut self) -> Result<StatusReport, ClientError> {
        match self.call(Message::Status).await? {
            Message::StatusReply(report) => Ok(report),
            other => Err(unexpected(&other)),
        }
    }

    /// Create an access key (admin keys only): the key and its secret,
    /// which nothing shows again.
    pub async fn create_key(
        &mut self,
        name: &str,
        permission: Permission,
    ) -> Result<(KeyInfo, String), ClientError> {
        let request = Message::KeyCreate {
            name: name.to_string(),
            permission,
        };
        match self.call(request).await? {
            Message::KeyCreated { key, secret } => Ok((key, secret)),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn list_keys(&mut self) -> Result<Vec<KeyInfo>, ClientError> {
        match self.call(Message::KeyList).await? {
            Message::KeyListing { keys } => Ok(keys),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn remove_key(&mut self, id: AccessKeyId) -> Result<KeyInfo, ClientError> {
        match self.call(Message::KeyRemove { id }).await? {
            Message::KeyChanged { key } => Ok(key),
            other => Err(unexpected(&other)),
        }
    }

    pub async fn set_key_permission(
        &mut self,
        id: AccessKeyId,
        permission: Permission,
    ) -> Result<KeyInfo, ClientError> {
        match self
            .call(Message::KeySetPermission { id, permission })
            .await?
        {
            Message::KeyChanged { key } => Ok(key),
            other => Err(unexpected(&other)),
        }
    }
}

fn unexpected(message: &Message) -> ClientError {
    let text = format!("{message:?}");
    ClientError::Protocol(format!(
        "unexpected reply {}",
        text.chars().take(80).collect::<String>()
    ))
}
