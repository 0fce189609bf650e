//! A chunked put: the client cuts and hashes the file itself and sends, in
//! file order, each chunk either as bytes or, when a version of the same
//! name (the *base*) already has it, as a reference. A new version that
//! differs from the base in one place sends only the chunks around that
//! place; without a base it is an ordinary put whose chunking was done by
//! the client.
//!
//! What the node still checks, whatever the client claims:
//! - every chunk sent is hashed here, as any put's is: its id is what this
//!   node computes, never what the client says;
//! - a reference must name a chunk of the base's manifest, which this node
//!   reads and verifies by its content id: the reused chunk's length comes
//!   from there, and a key only ever reuses chunks of a version it may read
//!   (the base is a version of the name it writes, and it needs read
//!   permission on that name), so a chunk id learnt elsewhere reads
//!   nothing it could not read already;
//! - before the record is committed, the reused chunks are kept against the
//!   collector on every node holding them, and each must be held by W
//!   nodes ([`Cluster::keep_existing`](crate::cluster::Cluster::keep_existing),
//!   as a multipart completion's parts are). A base pruned and collected
//!   meanwhile fails the put, loses nothing, and the client sends the
//!   whole file instead.

use std::collections::{BTreeSet, VecDeque};
use std::future::Future;

use bytes::Bytes;

use super::put::StoreJob;
use super::{OpError, PutError};
use crate::cas::{ChunkId, Manifest};
use crate::cluster::{ClusterError, PutBlobs, ReplicationCounters};
use crate::keys::AccessKeyId;
use crate::limits::{CHUNK_MAX_BYTES, LARGE_PUT_BYTES, MANIFEST_CHUNKS_MAX, PUT_CHUNKS_IN_FLIGHT};
use crate::meta::{VersionId, VersionRecord, validate_name};
use crate::node::Node;
use crate::wire::ErrorCode;

/// One piece of a chunked put, in file order.
#[derive(Debug)]
pub enum ChunkedPiece {
    /// A chunk's bytes (1 to [`CHUNK_MAX_BYTES`]).
    Chunk(Bytes),
    /// Chunks of the base, by id, in order.
    Reuse(Vec<ChunkId>),
}

/// A chunked put's pieces as they arrive (the native protocol's
/// `PutChunk` and `PutReuse` frames).
pub trait ChunkedBody: Send {
    /// A failure of the transport, which ends the put.
    type Error: Send;

    /// The next piece; `None` at the end of the body.
    fn next(&mut self) -> impl Future<Output = Result<Option<ChunkedPiece>, Self::Error>> + Send;
}

/// The chunks of a base version, sorted by id, with their lengths.
struct BaseChunks(Vec<(ChunkId, u32)>);

impl BaseChunks {
    fn len_of(&self, id: &ChunkId) -> Option<usize> {
        self.0
            .binary_search_by(|(candidate, _)| candidate.cmp(id))
            .ok()
            .map(|at| self.0[at].1 as usize)
    }
}

/// A piece waiting for its turn in the manifest: a store in flight, or a
/// reused chunk behind one.
enum Pending {
    Store(StoreJob),
    Reuse(ChunkId, usize),
}

impl Node {
    /// Store the chunks `body` sends as a new version of `name`, asked for
    /// by access key `by`, reusing chunks of version `base` of the same
    /// name where the body says so. Returns the record once it is durable
    /// on W nodes, as [`Node::put`] does.
    pub async fn put_chunked<B: ChunkedBody>(
        &self,
        name: String,
        base: Option<VersionId>,
        body: &mut B,
        by: AccessKeyId,
    ) -> Result<VersionRecord, PutError<B::Error>> {
        validate_name(&name).map_err(|e| OpError::invalid(e.to_string()))?;
        self.cluster
            .check_quorum_reachable()
            .map_err(OpError::from)?;
        let base_chunks = match base {
            Some(base) => self.base_chunks(&name, base).await?,
            None => BaseChunks(Vec::new()),
        };
        let mut manifest = Manifest::default();
        let mut blobs = PutBlobs::default();
        let mut reused = BTreeSet::new();
        // Aborted if this put ends early: no work outlives its request.
        let mut pending: VecDeque<Pending> = VecDeque::new();
        let mut stores = 0usize;
        // Bytes the version will hold so far, sent or reused: what it costs
        // the node (its manifest and queues grow with it) is a large put's
        // however little was sent, so it takes a large put's slot alike.
        let mut size = 0usize;
        // A large base's chunk list is held for the whole put.
        let mut large_slot = if std::mem::size_of_val(&base_chunks.0[..]) > LARGE_PUT_BYTES {
            Some(self.large_put_slot().await?)
        } else {
            None
        };
        // A first chunk held back: if the body is that one chunk (most
        // small files), it is stored beside the manifest, as a put's is.
        let mut only_chunk: Option<Bytes> = None;
        while let Some(piece) = body.next().await.map_err(PutError::Body)? {
            if let Some(first) = only_chunk.take() {
                pending.push_back(Pending::Store(self.store_chunk(first)));
                stores += 1;
            }
            match piece {
                ChunkedPiece::Chunk(bytes) => {
                    if bytes.is_empty() || bytes.len() > CHUNK_MAX_BYTES {
                        return Err(OpError::invalid(format!(
                            "a chunk of {} bytes (1 to {CHUNK_MAX_BYTES})",
                            bytes.len()
                        ))
                        .into());
                    }
                    size += bytes.len();
                    check_count(&manifest, &pending, 1)?;
                    if manifest.chunks.is_empty() && pending.is_empty() {
                        only_chunk = Some(bytes);
                    } else {
                        pending.push_back(Pending::Store(self.store_chunk(bytes)));
                        stores += 1;
                    }
                }
                ChunkedPiece::Reuse(ids) => {
                    let Some(base) = base else {
                        return Err(
                            OpError::invalid("chunks reused by a put without a base").into()
                        );
                    };
                    check_count(&manifest, &pending, ids.len())?;
                    for id in ids {
                        let len = base_chunks.len_of(&id).ok_or_else(|| {
                            OpError::invalid(format!(
                                "chunk {id} is not one of version {base} of {name}"
                            ))
                        })?;
                        size += len;
                        pending.push_back(Pending::Reuse(id, len));
                    }
                }
            }
            if large_slot.is_none() && size > LARGE_PUT_BYTES {
                large_slot = Some(self.large_put_slot().await?);
            }
            // Bounded pipeline: at most PUT_CHUNKS_IN_FLIGHT stores at once;
            // what is done (in order) goes into the manifest as it can.
            while let Some(front) = pending.front() {
                let ready = match front {
                    Pending::Reuse(..) => true,
                    Pending::Store(job) => job.is_finished() || stores >= PUT_CHUNKS_IN_FLIGHT,
                };
                if !ready {
                    break;
                }
                let front = pending.pop_front().expect("non-empty");
                stores -= usize::from(matches!(front, Pending::Store(_)));
                settle(front, &mut manifest, &mut blobs, &mut reused).await?;
            }
            // A long upload keeps what it stored so far.
            self.cluster
                .keep_if_due(&mut blobs)
                .await
                .map_err(OpError::from)?;
        }
        while let Some(front) = pending.pop_front() {
            settle(front, &mut manifest, &mut blobs, &mut reused).await?;
        }
        let only_chunk = only_chunk.map(|chunk| (ChunkId::of(&chunk), chunk));
        if let Some((id, chunk)) = &only_chunk {
            manifest
                .push(*id, chunk.len())
                .map_err(|e| OpError::invalid(e.to_string()))?;
        }
        let reused_count = reused.len() as u64;
        if !reused.is_empty() {
            // Chunks of the base short of W copies (pruned and collected
            // meanwhile, or lost): not found, so the client sends them.
            let kept = self
                .cluster
                .keep_existing(reused)
                .await
                .map_err(|error| match error {
                    ClusterError::QuorumNotReached { .. } => OpError::not_found(format!(
                        "chunks of the base version are no longer held by W nodes ({error}); send them"
                    )),
                    other => OpError::from(other),
                })?;
            blobs.absorb(kept);
        }
        let record = self
            .commit_manifest(name, (manifest, only_chunk), blobs, by, (None, false, &[]))
            .await?;
        ReplicationCounters::bump(&self.cluster.counters.chunks_reused, reused_count);
        // Held to here, as a put holds it: the manifest lives until the
        // commit.
        drop(large_slot);
        Ok(record)
    }

    /// The chunks of version `base` of `name`, from its manifest (read and
    /// verified by its content id).
    async fn base_chunks(&self, name: &str, base: VersionId) -> Result<BaseChunks, OpError> {
        let history = self.history(name).await?;
        let record = history
            .records
            .values()
            .find(|record| record.vid == base)
            .ok_or_else(|| OpError::not_found(format!("no version {base} of {name}")))?;
        let content = record
            .content
            .ok_or_else(|| OpError::not_found(format!("version {base} of {name} is a removal")))?;
        let manifest = self.manifest_of(content).await?;
        let mut chunks: Vec<(ChunkId, u32)> = manifest
            .chunks
            .iter()
            .map(|chunk| (chunk.id, chunk.len))
            .collect();
        chunks.sort_unstable();
        chunks.dedup();
        Ok(BaseChunks(chunks))
    }

    /// The manifest of `content`, verified by its id.
    pub(super) async fn manifest_of(
        &self,
        content: crate::cas::ContentId,
    ) -> Result<Manifest, OpError> {
        let bytes = self
            .cluster
            .fetch_blob(ChunkId(content.0))
            .await
            .map_err(OpError::from)?;
        Manifest::decode(&bytes)
            .map_err(|e| OpError::new(ErrorCode::Corrupt, format!("manifest {content}: {e}")))
    }
}

/// Refuse a put whose manifest would pass its chunk limit (before the
/// pieces are queued: the queue is bounded by it too).
fn check_count(
    manifest: &Manifest,
    pending: &VecDeque<Pending>,
    more: usize,
) -> Result<(), OpError> {
    if manifest.chunks.len() + pending.len() + more > MANIFEST_CHUNKS_MAX {
        return Err(OpError::invalid(format!(
            "a file of more than {MANIFEST_CHUNKS_MAX} chunks"
        )));
    }
    Ok(())
}

/// Put a finished piece into the manifest.
async fn settle(
    piece: Pending,
    manifest: &mut Manifest,
    blobs: &mut PutBlobs,
    reused: &mut BTreeSet<ChunkId>,
) -> Result<(), OpError> {
    match piece {
        Pending::Store(job) => super::put::record_chunk(manifest, blobs, job.await),
        Pending::Reuse(id, len) => {
            reused.insert(id);
            manifest
                .push(id, len)
                .map_err(|e| OpError::invalid(e.to_string()))
        }
    }
}
