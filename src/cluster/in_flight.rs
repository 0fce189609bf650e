//! A put in flight keeps its blobs until its version is committed.
//!
//! A put stores its chunks first and commits the version record that
//! references them last. Until the record exists, the chunks are garbage
//! to every holder's collector, which deletes a blob once it has been
//! unreferenced for the grace period *and* a complete anti-entropy pass
//! with every member started after that grace ended (see `repair`). So a
//! version whose record is durable on W nodes within one grace period of
//! the store of each of its blobs is safe: any pass that could let a
//! collector delete one of them started after the record existed, and
//! brought it along.
//!
//! A put that takes longer (a large file over a slow link, a commit
//! retried through a partition) must renew that promise. [`PutBlobs`]
//! remembers which nodes acknowledged which blob and when the oldest was
//! asked for; before the commit, once half the grace period has gone, the
//! coordinator asks every holder to *keep* its blobs (`KeepBlobs`, which
//! restarts each one's grace as a put of it would, or answers that it is
//! gone). If the commit itself then outlasts a grace period, the blobs are
//! checked again after it: a put is acknowledged only if each blob is still
//! held by W nodes. Otherwise the client gets an error (the version exists
//! but is not acknowledged) and puts the file again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use super::blobs::Stored;
use super::{Cluster, ClusterError};
use crate::cas::ChunkId;
use crate::keys::NodeId;
use crate::limits::REPAIR_BATCH;
use crate::meta::VersionRecord;
use crate::peer::PeerIdentity;
use crate::wire::Message;

/// The blobs a put has stored so far, and where.
#[derive(Debug, Default)]
pub struct PutBlobs {
    /// When the oldest store not kept since was asked for (monotonic ms).
    oldest_ms: Option<u64>,
    /// Each holder and the blobs it acknowledged (a blob repeated within
    /// a file is kept once). Bounded by the file's chunk count times R, the
    /// same order as its manifest. Shared (`Arc`) when every holder is
    /// asked about the same blobs (a restore), so that costs one set, not
    /// one per node.
    holders: BTreeMap<NodeId, (PeerIdentity, Arc<BTreeSet<ChunkId>>)>,
    /// Every blob of the put.
    blobs: BTreeSet<ChunkId>,
}

impl PutBlobs {
    /// The blob with the fewest holders, and how many (`None`: no blob).
    pub(super) fn fewest_holders(&self) -> Option<(ChunkId, usize)> {
        let mut counts: BTreeMap<ChunkId, usize> = self.blobs.iter().map(|id| (*id, 0)).collect();
        for (_, ids) in self.holders.values() {
            for id in ids.iter() {
                if let Some(count) = counts.get_mut(id) {
                    *count += 1;
                }
            }
        }
        counts.into_iter().min_by_key(|(_, count)| *count)
    }

    /// Take in the blobs (and holders) of `other`: a put that both stored
    /// blobs and reuses existing ones keeps them all alike.
    pub fn absorb(&mut self, other: PutBlobs) {
        self.oldest_ms = match (self.oldest_ms, other.oldest_ms) {
            (Some(mine), Some(theirs)) => Some(mine.min(theirs)),
            (mine, theirs) => mine.or(theirs),
        };
        self.blobs.extend(other.blobs);
        for (node, (peer, ids)) in other.holders {
            match self.holders.entry(node) {
                // Still shared with every other holder of the same blobs.
                std::collections::btree_map::Entry::Vacant(entry) => {
                    entry.insert((peer, ids));
                }
                std::collections::btree_map::Entry::Occupied(mut entry) => {
                    Arc::make_mut(&mut entry.get_mut().1).extend(ids.iter().copied());
                }
            }
        }
    }

    /// Note where a blob of the put is stored.
    pub fn add(&mut self, id: ChunkId, stored: &Stored) {
        self.oldest_ms = Some(match self.oldest_ms {
            Some(oldest) => oldest.min(stored.asked_at_ms),
            None => stored.asked_at_ms,
        });
        self.blobs.insert(id);
        for holder in &stored.holders {
            let ids = &mut self
                .holders
                .entry(holder.node)
                .or_insert_with(|| (holder.clone(), Arc::default()))
                .1;
            Arc::make_mut(ids).insert(id);
        }
    }

    /// How long since the oldest store (or the last keep) was asked for.
    fn age(&self, now_ms: u64) -> Duration {
        Duration::from_millis(self.oldest_ms.map_or(0, |o| now_ms.saturating_sub(o)))
    }
}

impl Cluster {
    /// During an upload: once half the grace period has gone since the
    /// oldest store (or the last keep), keep every blob stored so far, so
    /// that an upload of any length never loses its first chunks.
    pub async fn keep_if_due(self: &Arc<Self>, blobs: &mut PutBlobs) -> Result<(), ClusterError> {
        if blobs.age(self.elapsed_ms()) > self.maintenance.gc_grace / 2 {
            crate::marks::hit("put_kept_its_blobs_during_the_upload");
            self.keep_blobs(blobs).await?;
        }
        Ok(())
    }

    /// Keep the blobs of content that already exists (a restore makes an
    /// old version's content current again): ask every alive node to keep
    /// the manifest and its chunks, and fail unless each is held by W. The
    /// holders found are what `commit_put` then renews.
    pub async fn keep_content(
        self: &Arc<Self>,
        manifest_id: ChunkId,
        chunks: &[ChunkId],
    ) -> Result<PutBlobs, ClusterError> {
        self.keep_existing(std::iter::once(manifest_id).chain(chunks.iter().copied()))
            .await
    }

    /// [`Cluster::keep_content`] for any blobs that exist: the chunks of
    /// several contents a new manifest joins (S3's multipart upload).
    pub async fn keep_existing(
        self: &Arc<Self>,
        ids: impl IntoIterator<Item = ChunkId>,
    ) -> Result<PutBlobs, ClusterError> {
        let asked_at_ms = self.elapsed_ms();
        let mut blobs = PutBlobs::default();
        blobs.blobs.extend(ids);
        let all = Arc::new(blobs.blobs.clone());
        for peer in self.alive_nodes() {
            blobs.holders.insert(peer.node, (peer.clone(), all.clone()));
        }
        blobs.oldest_ms = Some(asked_at_ms);
        self.keep_blobs(&mut blobs).await?;
        Ok(blobs)
    }

    /// Make a put's version records durable on W nodes, keeping its blobs
    /// alive as the module docs describe.
    pub async fn commit_put(
        self: &Arc<Self>,
        records: Vec<VersionRecord>,
        blobs: &mut PutBlobs,
    ) -> Result<(), ClusterError> {
        let grace = self.maintenance.gc_grace;
        if blobs.age(self.elapsed_ms()) > grace / 2 {
            crate::marks::hit("put_kept_its_blobs_before_commit");
            self.keep_blobs(blobs).await?;
        }
        // Blobs stored while this node was alone have one copy; if another
        // node joined since, the version needs W copies of each.
        let needed = self.quorum();
        if let Some((id, copies)) = blobs.fewest_holders()
            && copies < needed
        {
            crate::marks::hit("put_outgrown_by_its_cluster");
            return Err(ClusterError::QuorumNotReached {
                what: format!("blob {id}"),
                acknowledged: copies,
                needed,
                detail: "stored before another node joined this one; put the file again".into(),
            });
        }
        self.commit(records, Vec::new()).await?;
        if blobs.age(self.elapsed_ms()) > grace {
            crate::marks::hit("put_checked_its_blobs_after_a_slow_commit");
            self.keep_blobs(blobs).await?;
        }
        Ok(())
    }

    /// Ask every holder to keep the put's blobs; fail unless each blob is
    /// still held by W nodes. On success the grace restarts from when the
    /// asking began.
    async fn keep_blobs(self: &Arc<Self>, blobs: &mut PutBlobs) -> Result<(), ClusterError> {
        let asked_at_ms = self.elapsed_ms();
        let mut held: BTreeMap<ChunkId, usize> = BTreeMap::new();
        for (node, (peer, ids)) in &blobs.holders {
            let ids: Vec<ChunkId> = ids.iter().copied().collect();
            for batch in ids.chunks(REPAIR_BATCH) {
                let present = if *node == self.me {
                    let store = self.store.clone();
                    let batch = batch.to_vec();
                    self.blocking(move || store.keep(&batch))
                        .await
                        .map_err(|e| e.to_string())
                } else {
                    self.ask_keep(peer, batch).await
                };
                match present {
                    Ok(present) => {
                        for (id, here) in batch.iter().zip(present) {
                            if here {
                                *held.entry(*id).or_default() += 1;
                            }
                        }
                    }
                    Err(error) => {
                        tracing::debug!(peer = %node.short(), %error, "cannot ask a holder to keep a put's blobs");
                        break;
                    }
                }
            }
        }
        let needed = self.quorum();
        if let Some((id, count)) = blobs
            .blobs
            .iter()
            .map(|id| (id, held.get(id).copied().unwrap_or(0)))
            .find(|(_, count)| *count < needed)
        {
            crate::marks::hit("put_lost_a_blob_while_in_flight");
            return Err(ClusterError::QuorumNotReached {
                what: format!("blob {}", id.short()),
                acknowledged: count,
                needed,
                detail: "the nodes holding it could not all be reached, or its copies were collected; try again".into(),
            });
        }
        blobs.oldest_ms = Some(asked_at_ms);
        Ok(())
    }

    async fn ask_keep(&self, peer: &PeerIdentity, ids: &[ChunkId]) -> Result<Vec<bool>, String> {
        let ask = || Message::KeepBlobs { ids: ids.to_vec() };
        match self.request(peer, ask).await.map_err(|e| e.to_string())? {
            Message::BlobPresence { present } if present.len() == ids.len() => Ok(present),
            other => Err(format!("KeepBlobs answered with {}", other.kind())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(node: u8) -> PeerIdentity {
        PeerIdentity {
            node: NodeId([node; 32]),
            addr: format!("n{node}:7400"),
            bump: 1,
        }
    }

    /// What a commit checks against W: the blob with the fewest holders.
    #[test]
    fn the_fewest_holders_of_any_blob_are_counted() {
        let mut blobs = PutBlobs::default();
        assert_eq!(blobs.fewest_holders(), None);
        let (a, b) = (ChunkId([1; 32]), ChunkId([2; 32]));
        let stored = |nodes: &[u8]| Stored {
            holders: nodes.iter().map(|n| holder(*n)).collect(),
            asked_at_ms: 0,
        };
        blobs.add(a, &stored(&[1, 2]));
        blobs.add(b, &stored(&[1]));
        assert_eq!(blobs.fewest_holders(), Some((b, 1)));
        blobs.add(b, &stored(&[3]));
        assert_eq!(blobs.fewest_holders().map(|(_, n)| n), Some(2));
    }
}
