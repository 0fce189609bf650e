//! A read: a version's bytes, verified, in order, by range.
//!
//! [`Node::open`] resolves the version and fetches its manifest; the
//! [`ObjectReader`] then fetches only the chunks that cover the range asked
//! for, at most [`GET_CHUNKS_PREFETCH`] ahead of the reader, each verified
//! by the store that gives it (the seal's tag), and hashed against its id
//! here too, so bytes that were sealed wrong (a node's bug or memory error
//! between its hash and its seal) are refused, never served or copied: S3
//! clients do not hash what they get, and a copy (UploadPartCopy) would
//! give the bytes new, matching ids. Only the native `Get`, whose client
//! hashes every chunk itself, turns this off
//! ([`ObjectReader::client_hashes_chunks`]).
//!
//! Memory: every read may hold one chunk of its own, so it always moves;
//! each other chunk it fetches takes its size from the node's read-ahead
//! budget ([`READ_AHEAD_BYTES_MAX`](crate::limits::READ_AHEAD_BYTES_MAX)),
//! the bound on what all reads hold at once beyond one chunk each. A chunk
//! holds its share until [`ObjectReader::next`] returns it, or, through
//! [`ObjectReader::next_held`] (an HTTP response queues what it sends),
//! until the last of its bytes is dropped.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use tokio_util::task::AbortOnDropHandle;

use super::{OpError, VersionPick};
use crate::cas::{ChunkId, ContentId, Manifest};
use crate::cluster::{Cluster, ClusterError};
use crate::limits::{GET_CHUNKS_PREFETCH, READ_AHEAD_BYTES_MAX};
use crate::meta::VersionRecord;
use crate::node::Node;
use crate::wire::{ErrorCode, GetTarget};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One chunk to send: which, and the part of it inside the range.
#[derive(Debug, Clone, Copy)]
struct Piece {
    id: ChunkId,
    /// The chunk's length (what fetching it holds).
    len: u32,
    skip: usize,
    take: usize,
}

type FetchJob = AbortOnDropHandle<Result<Vec<u8>, ClusterError>>;

/// The verified bytes of one version, chunk by chunk.
pub struct ObjectReader {
    /// The version read (`None` for a read by content id).
    pub record: Option<VersionRecord>,
    pub content: ContentId,
    pub manifest: Manifest,
    /// The manifest as stored (the native client checks it against `content`).
    pub manifest_bytes: Vec<u8>,
    cluster: Arc<Cluster>,
    pieces: VecDeque<Piece>,
    /// Chunks being fetched, in order, each with what it holds: the
    /// read's own slot or its share of the budget.
    prefetched: VecDeque<(FetchJob, Piece, OwnedSemaphorePermit)>,
    slots: ReadSlots,
    started: bool,
    /// Hash every chunk against its id (all but the native `Get`).
    hash_chunks: bool,
}

impl std::fmt::Debug for ObjectReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectReader")
            .field("content", &self.content)
            .field("size", &self.manifest.size)
            .finish_non_exhaustive()
    }
}

impl ObjectReader {
    pub fn size(&self) -> u64 {
        self.manifest.size
    }

    /// Read only `range` (within the size, not empty unless the object
    /// is): the chunks outside it are never fetched. Before the first
    /// [`ObjectReader::next`].
    pub fn set_range(&mut self, range: Range<u64>) {
        assert!(!self.started, "set_range after reading began");
        assert!(range.start <= range.end && range.end <= self.size());
        self.pieces = pieces_in(&self.manifest, range);
    }

    /// The next bytes in order, `None` after the last. After an error the
    /// read is over (the caller tells its client; nothing more follows).
    /// Skip hashing the chunks here: the reader's client hashes each one
    /// against its id before it uses a byte (the native client). Saves one
    /// SHA-256 pass over what is read.
    pub fn client_hashes_chunks(&mut self) {
        self.hash_chunks = false;
    }

    pub async fn next(&mut self) -> Option<Result<Bytes, OpError>> {
        self.next_with_hold()
            .await
            .map(|piece| piece.map(|(bytes, _hold)| bytes))
    }

    /// [`ObjectReader::next`], but the bytes keep the chunk's share of the
    /// read's memory until the last of them is dropped: for a caller that
    /// queues them (an HTTP response), so the budget bounds its queue too.
    pub async fn next_held(&mut self) -> Option<Result<Bytes, OpError>> {
        self.next_with_hold().await.map(|piece| {
            piece.map(|(bytes, hold)| {
                let len = bytes.len();
                Bytes::from_owner(Held { bytes, _hold: hold }).slice(..len)
            })
        })
    }

    async fn next_with_hold(&mut self) -> Option<Result<(Bytes, OwnedSemaphorePermit), OpError>> {
        self.started = true;
        while self.prefetched.len() < GET_CHUNKS_PREFETCH {
            let Some(piece) = self.pieces.front().copied() else {
                break;
            };
            // With nothing fetched, the read waits for room; else it
            // sends what it has first.
            let wait = self.prefetched.is_empty();
            let Some(permit) = self.slots.hold(piece.len, wait).await else {
                break;
            };
            self.pieces.pop_front();
            let cluster = self.cluster.clone();
            let hash = self.hash_chunks;
            // Aborted with the reader (a client gone, a failed chunk).
            let job = AbortOnDropHandle::new(tokio::spawn(async move {
                let bytes = cluster.fetch_blob(piece.id).await?;
                if hash && ChunkId::of(&bytes) != piece.id {
                    tracing::error!(chunk = %piece.id, "a chunk's tag checks but its bytes do not hash to its id: it was sealed wrong; refused");
                    return Err(ClusterError::Corrupt(piece.id.to_string()));
                }
                Ok(bytes)
            }));
            self.prefetched.push_back((job, piece, permit));
        }
        let (job, piece, permit) = self.prefetched.pop_front()?;
        let fetched = job
            .await
            .unwrap_or_else(|e| Err(ClusterError::Local(format!("a fetch task failed: {e}"))));
        match fetched {
            Ok(bytes) if piece.skip + piece.take <= bytes.len() => {
                let bytes = Bytes::from(bytes);
                Some(Ok((
                    bytes.slice(piece.skip..piece.skip + piece.take),
                    permit,
                )))
            }
            Ok(bytes) => {
                self.end();
                Some(Err(OpError::new(
                    ErrorCode::Corrupt,
                    format!(
                        "chunk {} is {} bytes; its manifest says more",
                        piece.id,
                        bytes.len()
                    ),
                )))
            }
            Err(ClusterError::NotFound(_)) => {
                self.end();
                // The manifest names it, so it was stored: this is data
                // out of reach (or lost), never the client's mistake.
                tracing::error!(chunk = %piece.id, "no reachable node holds a chunk of a stored object; bring down members back, and check the status page for corruption");
                Some(Err(OpError::new(
                    ErrorCode::Unavailable,
                    format!(
                        "no reachable node holds chunk {} of this object; retry once the members that are down are back",
                        piece.id
                    ),
                )))
            }
            Err(error) => {
                self.end();
                Some(Err(error.into()))
            }
        }
    }

    fn end(&mut self) {
        self.pieces.clear();
        self.prefetched.clear();
    }
}

impl Node {
    /// Open a version for reading: by name (the version `pick` selects) or
    /// by content id. With `quorum`, the current version of a name is
    /// first asked of a majority (read-your-writes through any node).
    pub async fn open(
        &self,
        target: GetTarget,
        pick: VersionPick,
        quorum: bool,
    ) -> Result<ObjectReader, OpError> {
        let (record, content) = match target {
            GetTarget::Name(name) => {
                let record = if quorum && pick == VersionPick::Current {
                    self.catch_up(&name)
                        .await?
                        .ok_or_else(|| OpError::not_found(format!("no file named {name}")))?
                } else {
                    self.resolve(&name, &pick).await?
                };
                match record.content {
                    Some(content) => (Some(record), content),
                    None => return Err(removed(&name, &pick, &record)),
                }
            }
            GetTarget::Content(content) => (None, content),
        };
        self.open_content(record, content).await
    }

    /// Open the content of `record` (`None`: read by content id).
    pub async fn open_content(
        &self,
        record: Option<VersionRecord>,
        content: ContentId,
    ) -> Result<ObjectReader, OpError> {
        let manifest_bytes = match self.cluster.fetch_blob(ChunkId(content.0)).await {
            Ok(bytes) => bytes,
            // Asked by content id: perhaps no such content.
            Err(ClusterError::NotFound(_)) if record.is_none() => {
                return Err(OpError::not_found(format!(
                    "no reachable node holds content {content}"
                )));
            }
            // A version names it, so it was stored: out of reach, or lost.
            Err(ClusterError::NotFound(_)) => {
                tracing::error!(%content, "no reachable node holds the manifest of a stored version; bring down members back, and check the status page for corruption");
                return Err(OpError::new(
                    ErrorCode::Unavailable,
                    format!(
                        "no reachable node holds content {content} of this version; retry once the members that are down are back"
                    ),
                ));
            }
            Err(error) => return Err(error.into()),
        };
        // The manifest is small: checked here for every reader.
        if ContentId::of(&manifest_bytes) != content {
            tracing::error!(%content, "a manifest's tag checks but its bytes do not hash to its id: it was sealed wrong; refused");
            return Err(OpError::new(
                ErrorCode::Corrupt,
                format!("manifest {content} does not match its content id"),
            ));
        }
        let manifest = Manifest::decode(&manifest_bytes).map_err(|error| {
            OpError::new(ErrorCode::Corrupt, format!("manifest {content}: {error}"))
        })?;
        let mut reader = ObjectReader {
            record,
            content,
            manifest,
            manifest_bytes,
            cluster: self.cluster.clone(),
            pieces: VecDeque::new(),
            prefetched: VecDeque::new(),
            slots: ReadSlots::new(self.read_ahead.clone()),
            started: false,
            hash_chunks: true,
        };
        reader.set_range(0..reader.size());
        Ok(reader)
    }
}

/// What one read may hold in memory: one chunk of its own, so it always
/// moves, and shares of the node's read-ahead budget for the others.
struct ReadSlots {
    own: Arc<Semaphore>,
    budget: Arc<Semaphore>,
}

impl ReadSlots {
    fn new(budget: Arc<Semaphore>) -> Self {
        Self {
            own: Arc::new(Semaphore::new(1)),
            budget,
        }
    }

    /// The slot a chunk of `len` bytes is held in: the read's own when
    /// free, else its share of the budget. When neither is free: with
    /// `wait`, the first that frees (the read's own once the chunk in it
    /// is dropped), else `None`.
    async fn hold(&self, len: u32, wait: bool) -> Option<OwnedSemaphorePermit> {
        // A chunk is at most CHUNK_MAX_BYTES, far below the budget; the cap
        // only keeps a wait from asking more than the budget has.
        let share = len.min(READ_AHEAD_BYTES_MAX as u32);
        if let Ok(own) = self.own.clone().try_acquire_owned() {
            return Some(own);
        }
        if let Ok(budget) = self.budget.clone().try_acquire_many_owned(share) {
            return Some(budget);
        }
        if !wait {
            return None;
        }
        // Both semaphores live as long as their holders and are never
        // closed.
        tokio::select! {
            own = self.own.clone().acquire_owned() => own.ok(),
            budget = self.budget.clone().acquire_many_owned(share) => budget.ok(),
        }
    }
}

/// A chunk's bytes with the slot they hold ([`ObjectReader::next_held`]).
struct Held {
    bytes: Bytes,
    _hold: OwnedSemaphorePermit,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// The chunks of `manifest` that cover `range`, each with the part inside it.
fn pieces_in(manifest: &Manifest, range: Range<u64>) -> VecDeque<Piece> {
    let mut pieces = VecDeque::new();
    let mut offset = 0u64;
    for chunk in &manifest.chunks {
        if offset >= range.end {
            break;
        }
        let end = offset + u64::from(chunk.len);
        if end > range.start {
            let skip = range.start.saturating_sub(offset);
            let take = end.min(range.end) - offset.max(range.start);
            pieces.push_back(Piece {
                id: chunk.id,
                len: chunk.len,
                skip: skip as usize,
                take: take as usize,
            });
        }
        offset = end;
    }
    pieces
}

/// The refusal of a read that selects a removal.
fn removed(name: &str, pick: &VersionPick, record: &VersionRecord) -> OpError {
    let message = match pick {
        VersionPick::Current => format!("{name} was removed (version {})", record.vid),
        _ => format!(
            "version {} of {name} is a removal; it has no content",
            record.vid
        ),
    };
    OpError::not_found(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn manifest(lens: &[u32]) -> Manifest {
        let mut manifest = Manifest::default();
        for (i, len) in lens.iter().enumerate() {
            manifest
                .push(ChunkId([i as u8; 32]), *len as usize)
                .unwrap();
        }
        manifest
    }

    fn pieces(lens: &[u32], range: Range<u64>) -> Vec<(u8, usize, usize)> {
        pieces_in(&manifest(lens), range)
            .into_iter()
            .map(|p| (p.id.0[0], p.skip, p.take))
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_holds_one_chunk_of_its_own_and_the_rest_from_the_budget() {
        let budget = Arc::new(Semaphore::new(8));
        let read = ReadSlots::new(budget.clone());
        let first = read.hold(5, false).await.expect("the read's own slot");
        assert_eq!(budget.available_permits(), 8, "its own chunk is free");
        let second = read.hold(5, false).await.expect("a share of the budget");
        assert_eq!(budget.available_permits(), 3);
        assert!(
            read.hold(5, false).await.is_none(),
            "no room: use what it has"
        );
        // Another read always moves: one chunk of its own.
        let other = ReadSlots::new(budget.clone());
        let _theirs = other.hold(5, false).await.expect("its own slot");
        // A read with nothing fetched waits, until its own chunk is dropped
        // (its client took it) or the budget has room.
        let mut waiting = Box::pin(read.hold(5, true));
        assert!(
            tokio::time::timeout(Duration::from_secs(60), &mut waiting)
                .await
                .is_err()
        );
        drop(first);
        let third = waiting.await.expect("the slot its first chunk freed");
        assert_eq!(budget.available_permits(), 3);
        // Bytes handed on keep their share until the last of them goes.
        let held = Bytes::from_owner(Held {
            bytes: Bytes::from_static(b"chunk"),
            _hold: second,
        });
        let tail = held.slice(2..);
        drop(held);
        assert_eq!(budget.available_permits(), 3);
        drop(tail);
        assert_eq!(budget.available_permits(), 8);
        drop(third);
    }

    #[test]
    fn a_range_reads_only_the_chunks_that_cover_it() {
        assert_eq!(pieces(&[10, 10, 10], 12..15), vec![(1, 2, 3)]);
        assert_eq!(
            pieces(&[10, 10, 10], 5..25),
            vec![(0, 5, 5), (1, 0, 10), (2, 0, 5)]
        );
        assert_eq!(pieces(&[10, 10, 10], 29..30), vec![(2, 9, 1)]);
        assert_eq!(pieces(&[10, 10, 10], 0..30).len(), 3);
        assert_eq!(pieces(&[10, 10, 10], 10..10), vec![]);
        assert_eq!(pieces(&[], 0..0), vec![]);
    }
}
