//! The native protocol's frontend: a client's request over Noise in, an
//! operation of [`ops`](super::ops), its answer out. Each request answers
//! with its reply message or an [`OpError`], which the connection turns
//! into `Message::Error` and survives.

use bytes::Bytes;

use super::ops::{Body, ChunkedBody, ChunkedPiece, OpError, PutError, PutOptions, VersionPick};
use crate::cluster::MemberReport;
use crate::keys::{AccessKeyId, Permission};
use crate::limits::FRAME_BYTES_MAX;
use crate::meta::{IndexError, VersionRecord};
use crate::metrics::Outcome;
use crate::secure::{SecureError, SecureStream};
use crate::wire::{Envelope, ErrorCode, GetTarget, Message, StatusReport, WireError};

use super::Node;

/// Whether `permission` allows `request`; the refusal says what is missing.
fn authorize(permission: &Permission, request: &Message) -> Result<(), OpError> {
    let forbidden = |what: String| {
        Err(OpError::new(
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
        Message::Versions { name } | Message::PutBaseOf { name } if !permission.may_read(name) => {
            forbidden(format!("read {name}"))
        }
        // Reusing chunks of a version is reading it.
        Message::PutChunkedStart { name, base }
            if !permission.may_write(name) || (base.is_some() && !permission.may_read(name)) =>
        {
            forbidden(format!(
                "write {name} reusing what it holds (read and write)"
            ))
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
        // Deleting history for good, like a prune: a stolen read-write key
        // can add removals, which are undone by a restore, but not this.
        Message::Forget { name, .. } if !permission.is_admin() || !permission.may_write(name) => {
            forbidden(format!(
                "delete versions of {name} for good (an admin key may)"
            ))
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
        let started = self.env.clock.monotonic_micros();
        let kind = request.message.kind();
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
            self.count(kind, started, Outcome::Refused, 0);
            return Ok(false);
        };
        if let Err(refusal) = authorize(&permission, &request.message) {
            tracing::info!(%key, request = request.message.kind(), "refused: {}", refusal.message);
            // A refused put still sends its data: read it to the end, so
            // the client hears why rather than a reset connection.
            if let Message::PutStart { .. } | Message::PutChunkedStart { .. } = request.message {
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
            self.count(kind, started, Outcome::Refused, 0);
            return Ok(true);
        }
        // What a chunked put's client sent (a put's bytes in are its size).
        let mut chunked_received = None;
        let reply = match request.message {
            Message::PutStart { name } => match self.put_frames(stream, id, name, *key).await? {
                Ok(record) => Ok(Message::PutDone { record }),
                Err(refusal) => Err(refusal),
            },
            Message::PutChunkedStart { name, base } => {
                match self
                    .put_chunked_frames(stream, id, name, base, *key)
                    .await?
                {
                    Ok((record, received)) => {
                        chunked_received = Some(received);
                        Ok(Message::PutDone { record })
                    }
                    Err(refusal) => Err(refusal),
                }
            }
            Message::PutBaseOf { name } => self.put_base(name).await,
            Message::Get {
                target,
                version,
                quorum,
            } => match self.open(target, version.into(), quorum).await {
                Ok(mut reader) => {
                    // The native client hashes every chunk it receives.
                    reader.client_hashes_chunks();
                    let (sent, outcome) = match self.send_object(stream, id, reader).await? {
                        Ok(sent) => (sent, Outcome::Ok),
                        // Begun, then failed: a chunk out of reach or corrupt
                        // is the node's failure, whatever its code.
                        Err(sent) => (sent, Outcome::Failed),
                    };
                    self.requests.sent("native", sent);
                    self.count(kind, started, outcome, sent);
                    return Ok(true);
                }
                Err(refusal) => Err(refusal),
            },
            Message::Remove { name } => self.remove_current(name, *key).await,
            Message::List => self.list(&permission).await,
            Message::Versions { name } => self.versions(name).await,
            Message::Status => Ok(Message::StatusReply(self.status().await)),
            Message::Prune { name, keep } => self
                .prune(name, keep)
                .await
                .map(|(floor, removed)| Message::Pruned { floor, removed }),
            Message::Forget { name, version } => self
                .forget(&name, &VersionPick::Matching(version))
                .await
                .map(|record| Message::Forgotten { record }),
            Message::Restore { name, version } => {
                match self.resolve(&name, &VersionPick::Matching(version)).await {
                    Ok(old) => self
                        .reuse_content(name, &old, *key, (false, &[]), None)
                        .await
                        .map(|record| Message::PutDone { record }),
                    Err(refusal) => Err(refusal),
                }
            }
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
                .map_err(OpError::from),
            Message::KeySetPermission {
                id: target,
                permission,
            } => self
                .cluster
                .set_key_permission(target, permission)
                .await
                .map(|key| Message::KeyChanged { key })
                .map_err(OpError::from),
            other => Err(OpError::invalid(format!(
                "{} is not a request",
                other.kind()
            ))),
        };
        let (outcome, bytes) = match &reply {
            Ok(Message::PutDone { record }) => {
                let received = chunked_received.unwrap_or(record.size);
                self.requests.received("native", received);
                (Outcome::Ok, received)
            }
            Ok(_) => (Outcome::Ok, 0),
            Err(refusal) => (outcome_of(refusal.code), 0),
        };
        self.count(kind, started, outcome, bytes);
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

    /// Count and time one request of `kind` begun at `started` (µs).
    fn count(&self, kind: &str, started: u64, outcome: Outcome, bytes: u64) {
        let micros = self.env.clock.monotonic_micros().saturating_sub(started);
        self.requests.record("native", kind, outcome, micros, bytes);
    }

    /// Read a refused put's frames (either kind's) up to its `PutFinish`.
    async fn drain_put(&self, stream: &mut SecureStream, id: u64) -> Result<(), SecureError> {
        PutFrames::new(stream, id).drain().await
    }

    /// The current version of `name` and its manifest, for a chunked put
    /// to reuse (none for a new or removed name: not an error, since every
    /// CLI put of a new name asks).
    async fn put_base(&self, name: String) -> Result<Message, OpError> {
        let none = Message::PutBase {
            record: None,
            manifest: Vec::new(),
        };
        let record = match self.resolve(&name, &VersionPick::Current).await {
            Ok(record) => record,
            Err(error) if error.code == ErrorCode::NotFound => return Ok(none),
            Err(error) => return Err(error),
        };
        let Some(content) = record.content else {
            return Ok(none);
        };
        // Verified by its hash; the client decodes it.
        let manifest = self
            .cluster
            .fetch_blob(crate::cas::ChunkId(content.0))
            .await?;
        Ok(Message::PutBase {
            record: Some(record),
            manifest,
        })
    }

    /// A chunked put: its `PutChunk` and `PutReuse` frames up to its
    /// `PutFinish`. Returns the record and the chunk bytes the client sent;
    /// the outer `Err` is a connection failure.
    async fn put_chunked_frames(
        &self,
        stream: &mut SecureStream,
        id: u64,
        name: String,
        base: Option<crate::meta::VersionId>,
        key: AccessKeyId,
    ) -> Result<Result<(VersionRecord, u64), OpError>, SecureError> {
        let mut body = ChunkedFrames {
            frames: PutFrames::new(stream, id),
            received: 0,
        };
        match self.put_chunked(name, base, &mut body, key).await {
            Ok(record) => Ok(Ok((record, body.received))),
            Err(PutError::Body(FrameError::Connection(error))) => Err(error),
            Err(PutError::Body(FrameError::Unexpected(kind))) => Ok(Err(OpError::invalid(
                format!("{kind} during a chunked put"),
            ))),
            Err(PutError::Refused(refusal)) => {
                body.frames.drain().await?;
                Ok(Err(refusal))
            }
        }
    }

    /// A put whose body is the `PutData` frames that follow `PutStart`.
    /// The outer `Err` is a connection failure; a refused put has its
    /// frames read to the end first, so that the client hears why rather
    /// than a reset connection.
    async fn put_frames(
        &self,
        stream: &mut SecureStream,
        id: u64,
        name: String,
        key: AccessKeyId,
    ) -> Result<Result<VersionRecord, OpError>, SecureError> {
        let mut body = FrameBody(PutFrames::new(stream, id));
        match self.put(name, &mut body, key, PutOptions::default()).await {
            Ok(record) => Ok(Ok(record)),
            Err(PutError::Body(FrameError::Connection(error))) => Err(error),
            Err(PutError::Body(FrameError::Unexpected(kind))) => {
                Ok(Err(OpError::invalid(format!("{kind} during a put"))))
            }
            Err(PutError::Refused(refusal)) => {
                body.0.drain().await?;
                Ok(Err(refusal))
            }
        }
    }

    /// Stream a version: its manifest first, then each chunk verified, in
    /// order. A failure after the start is sent as `Message::Error` in
    /// place of the rest (the client stops there).
    async fn send_object(
        &self,
        stream: &mut SecureStream,
        id: u64,
        mut reader: super::ops::ObjectReader,
    ) -> Result<Result<u64, u64>, SecureError> {
        // Ok(bytes sent) when whole, Err(bytes sent) when an error ended it.
        let mut sent = 0u64;
        stream
            .send(&Envelope {
                request_id: id,
                message: Message::GetStart {
                    record: reader.record.take(),
                    content: reader.content,
                    manifest: std::mem::take(&mut reader.manifest_bytes),
                },
            })
            .await?;
        while let Some(piece) = reader.next().await {
            let message = match piece {
                Ok(bytes) => {
                    sent += bytes.len() as u64;
                    Message::ChunkData {
                        bytes: Vec::from(bytes),
                    }
                }
                Err(refusal) => Message::Error {
                    code: refusal.code,
                    message: refusal.message,
                },
            };
            let failed = matches!(message, Message::Error { .. });
            stream
                .send(&Envelope {
                    request_id: id,
                    message,
                })
                .await?;
            if failed {
                return Ok(Err(sent));
            }
        }
        stream
            .send(&Envelope {
                request_id: id,
                message: Message::GetEnd,
            })
            .await?;
        Ok(Ok(sent))
    }

    /// The native `rm`: refused when the name has no current version.
    async fn remove_current(&self, name: String, key: AccessKeyId) -> Result<Message, OpError> {
        let current = self.resolve(&name, &VersionPick::Current).await?;
        if current.is_tombstone() {
            return Err(OpError::not_found(format!(
                "{name} was removed (version {})",
                current.vid
            )));
        }
        let record = self.remove(name, key, false, &[]).await?;
        Ok(Message::Removed { record })
    }

    async fn list(&self, permission: &Permission) -> Result<Message, OpError> {
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

    async fn versions(&self, name: String) -> Result<Message, OpError> {
        let index = self.index.clone();
        let lookup = name.clone();
        let history = self.env.blocking(move || index.history(&lookup)).await?;
        if history.records.is_empty() {
            return Err(OpError::not_found(format!("no file named {name}")));
        }
        let (records, truncated) = fit_in_frame(history.records.into_values().rev().collect());
        Ok(Message::History { records, truncated })
    }

    /// This node's report about itself (see [`Cluster::status`](crate::cluster::Cluster::status)).
    pub async fn status(&self) -> StatusReport {
        StatusReport {
            listen: self.listen.clone(),
            ..self.cluster.status().await
        }
    }

    /// How long ago (ms) the last complete anti-entropy pass with each
    /// member ended.
    pub fn last_complete_passes(&self) -> Vec<(crate::keys::NodeId, u64)> {
        self.cluster.last_complete_passes()
    }

    /// This node's report and every member's (see
    /// [`Cluster::member_reports`](crate::cluster::Cluster::member_reports)).
    pub async fn member_reports(&self) -> Vec<MemberReport> {
        self.cluster.member_reports().await
    }
}

/// Why a native put's body ended early.
enum FrameError {
    Connection(SecureError),
    /// A frame other than `PutData` or `PutFinish` (its kind).
    Unexpected(&'static str),
}

/// The frames of put request `id` up to its `PutFinish`, whichever kind
/// of put: what a put's body reads, and what a refused put drains.
struct PutFrames<'a> {
    stream: &'a mut SecureStream,
    id: u64,
    finished: bool,
}

impl<'a> PutFrames<'a> {
    fn new(stream: &'a mut SecureStream, id: u64) -> Self {
        Self {
            stream,
            id,
            finished: false,
        }
    }

    /// The put's next frame other than `PutFinish` (`None` once it came).
    /// A frame of another request breaks the connection.
    async fn next(&mut self) -> Result<Option<Message>, SecureError> {
        if self.finished {
            return Ok(None);
        }
        let envelope = self.stream.expect().await?;
        if envelope.request_id != self.id {
            return Err(SecureError::Wire(WireError::Undecodable(
                "frame of another request during a put".into(),
            )));
        }
        if let Message::PutFinish = envelope.message {
            self.finished = true;
            return Ok(None);
        }
        Ok(Some(envelope.message))
    }

    /// Read the rest of a refused put (either kind's frames), so that the
    /// client hears why rather than a reset connection.
    async fn drain(&mut self) -> Result<(), SecureError> {
        loop {
            match self.next().await? {
                Some(
                    Message::PutData { .. } | Message::PutChunk { .. } | Message::PutReuse { .. },
                ) => {}
                // Done, or a frame that ends the put anyway.
                _ => return Ok(()),
            }
        }
    }

    /// Ends the body at a frame it does not take.
    fn unexpected(&mut self, other: &Message) -> FrameError {
        self.finished = true;
        FrameError::Unexpected(other.kind())
    }
}

/// A native put's body: the `PutData` frames.
struct FrameBody<'a>(PutFrames<'a>);

impl Body for FrameBody<'_> {
    type Error = FrameError;

    async fn next(&mut self) -> Result<Option<Bytes>, FrameError> {
        match self.0.next().await.map_err(FrameError::Connection)? {
            None => Ok(None),
            Some(Message::PutData { bytes }) => Ok(Some(Bytes::from(bytes))),
            Some(other) => Err(self.0.unexpected(&other)),
        }
    }
}

/// A chunked put's body: the `PutChunk` and `PutReuse` frames.
struct ChunkedFrames<'a> {
    frames: PutFrames<'a>,
    /// Chunk bytes received.
    received: u64,
}

impl ChunkedBody for ChunkedFrames<'_> {
    type Error = FrameError;

    async fn next(&mut self) -> Result<Option<ChunkedPiece>, FrameError> {
        match self.frames.next().await.map_err(FrameError::Connection)? {
            None => Ok(None),
            Some(Message::PutChunk { bytes }) => {
                self.received += bytes.len() as u64;
                Ok(Some(ChunkedPiece::Chunk(bytes)))
            }
            Some(Message::PutReuse { ids }) => Ok(Some(ChunkedPiece::Reuse(ids))),
            Some(other) => Err(self.frames.unexpected(&other)),
        }
    }
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

/// Whose fault a refusal is, for the request metrics.
fn outcome_of(code: ErrorCode) -> Outcome {
    match code {
        ErrorCode::Unavailable | ErrorCode::Internal | ErrorCode::DiskFull | ErrorCode::Corrupt => {
            Outcome::Failed
        }
        _ => Outcome::Refused,
    }
}
