//! Repair, rebalance and garbage collection: the background loop that
//! keeps every blob on its R owners and nowhere else.
//!
//! Periods are measured on a monotonic clock (`Cluster::elapsed_ms`), so
//! a wall clock stepped forward cannot end a grace period early.
//!
//! Each round (every `repair_interval`, jittered) takes the next window
//! of [`REPAIR_BATCH`] blobs of the local store, computes each one's owners
//! over the alive members, and asks the owners which they hold
//! (`HasBlobs`, one batch per owner). Then, at most
//! [`REPAIR_COPIES_PER_ROUND`] copies per round:
//! - an owner that lacks a blob gets a copy (under-replication after a
//!   crash, a stand-in's copy going home, a joining node receiving what it
//!   now owns);
//! - a blob this node holds but does not own is deleted once every owner
//!   has confirmed it holds a durable copy, and then, asked again for that
//!   blob alone, that its copy reads back verified (rebalance after a
//!   stand-in or a join: a bit-rotted owner copy must not cost the last
//!   good one), at most [`REPAIR_COPIES_PER_ROUND`] per round, and only if a
//!   retained version references it: an unreferenced blob is garbage (the
//!   GC's) or belongs to a put in flight, which keeps its blobs on the
//!   nodes it stored them on and must find them there.
//!
//! Garbage collection runs in the same loop: a blob referenced by no
//! retained version (neither a manifest of one nor a chunk of such a
//! manifest) is deleted once
//! - it has been seen unreferenced for the grace period (`gc_grace`, 10
//!   minutes by default), counted again from the start whenever it is put
//!   again or kept by a put in flight (a file put again after a prune
//!   stores content the node still holds:
//!   [`ChunkStore::take_put_again`](crate::store::ChunkStore::take_put_again));
//!   and
//! - a complete anti-entropy pass with *every* member, alive or not (and
//!   with at least N - W members, N the largest cluster known, so that the
//!   passes meet every record's W holders even when SWIM has forgotten
//!   them), started after that grace period ended and ended before the
//!   round read its records. A put commits within a grace period of
//!   storing or keeping its blobs, or checks them again after
//!   (`in_flight`), so such a pass brings its record here. And a version
//!   acknowledged
//!   by W other nodes and not yet heard of here (a partition longer than the
//!   grace period) keeps its chunks until this node has compared indexes
//!   with all of them. A member that stays away holds collection back
//!   (until SWIM forgets it), never the other way round.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Cluster, ReplicationCounters};
use crate::cas::{ChunkId, ContentId, Manifest};
use crate::keys::NodeId;
use crate::limits::{REPAIR_BATCH, REPAIR_COPIES_PER_ROUND};
use crate::peer::PeerIdentity;
use crate::placement;
use crate::wire::Message;

/// What the last repair round found, for `status`.
#[derive(Debug, Default)]
pub struct RepairStatus {
    /// Blobs held here that had fewer than R confirmed copies, as of the
    /// last complete pass of repair over this node's store (each holder of
    /// a blob counts it). A copy counts when its owner holds it durably,
    /// this node's own included.
    pub under_replicated: AtomicU64,
    pub under_replicated_bytes: AtomicU64,
    /// Copies sent to owners that lacked them, since start.
    pub copies_made: AtomicU64,
    /// Copies dropped by a node that no longer owns them, since start.
    pub copies_dropped: AtomicU64,
    /// Unreferenced blobs deleted, since start.
    pub garbage_collected: AtomicU64,
}

/// The background loop.
pub struct RepairTask {
    pub cluster: Arc<Cluster>,
}

/// State kept between rounds.
#[derive(Default)]
struct RepairState {
    /// The last blob id of the previous window (the next starts after it).
    cursor: Option<ChunkId>,
    /// Blobs seen unreferenced, and since when (unix ms; reset when one is
    /// put again).
    unreferenced_since: BTreeMap<ChunkId, u64>,
    /// Chunk lists of manifests (immutable, so safe to keep), bounded.
    manifests: BTreeMap<ContentId, Vec<ChunkId>>,
    /// Blobs (and their bytes) below R copies counted so far in the
    /// current pass over the store.
    pass_under: (u64, u64),
}

/// Manifests whose chunk lists the GC keeps in memory.
const MANIFEST_CACHE_MAX: usize = 65_536;

impl RepairTask {
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut state = RepairState::default();
        loop {
            let wait = self
                .cluster
                .jittered(self.cluster.maintenance.repair_interval);
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(wait) => {}
            }
            tokio::select! {
                _ = &mut shutdown => break,
                result = self.cluster.repair_round(&mut state) => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "repair round stopped early");
                    }
                }
            }
        }
    }
}

impl Cluster {
    async fn repair_round(self: &Arc<Self>, state: &mut RepairState) -> Result<(), String> {
        // First, whatever else fails this round: a blob put again restarts
        // its grace (and the set of them is emptied every round).
        let put_again = self.store.take_put_again();
        let taken_ms = self.elapsed_ms();
        for id in put_again {
            if let Some(since) = state.unreferenced_since.get_mut(&id) {
                crate::marks::hit("gc_grace_restarted_by_a_put");
                *since = taken_ms;
            }
        }
        let store = self.store.clone();
        let all = self
            .blocking(move || store.list())
            .await
            .map_err(|e| e.to_string())?;
        let window = next_window(&all, &mut state.cursor);
        // What retained versions reference (`None`: unknown this round).
        let referenced = self.collect_garbage(&all, state).await;
        if window.is_empty() {
            state.pass_under = (0, 0);
            self.repair.under_replicated.store(0, Ordering::Relaxed);
            self.repair
                .under_replicated_bytes
                .store(0, Ordering::Relaxed);
            return Ok(());
        }
        let alive = self.alive_nodes();
        let target = self
            .replication
            .replicas
            .min(self.members.largest_cluster());
        let alive_ids: Vec<NodeId> = alive.iter().map(|p| p.node).collect();
        let owners: Vec<Vec<NodeId>> = window
            .iter()
            .map(|id| placement::owners(id, &alive_ids, self.replication.replicas))
            .collect();

        // Ask each owner, in one batch, which of its blobs it holds.
        let mut asked: BTreeMap<NodeId, Vec<ChunkId>> = BTreeMap::new();
        for (id, owners) in window.iter().zip(&owners) {
            for owner in owners.iter().filter(|o| **o != self.me) {
                asked.entry(*owner).or_default().push(*id);
            }
        }
        let mut holds: BTreeSet<(NodeId, ChunkId)> = BTreeSet::new();
        let mut unknown: BTreeSet<NodeId> = BTreeSet::new();
        for (owner, ids) in asked {
            let Some(peer) = alive.iter().find(|p| p.node == owner) else {
                continue;
            };
            match self.ask_presence(peer, &ids).await {
                Ok(present) => {
                    for (id, has) in ids.iter().zip(present) {
                        if has {
                            holds.insert((owner, *id));
                        }
                    }
                }
                Err(error) => {
                    tracing::debug!(peer = %owner.short(), %error, "repair: cannot ask which blobs it holds");
                    unknown.insert(owner);
                }
            }
        }

        // This node answers for itself as the others do (`HasBlobs`): a
        // copy it holds but not durably (in a distrusted small-blob table,
        // or a file whose directory sync failed) is not one of the R.
        let mine: Vec<ChunkId> = window
            .iter()
            .zip(&owners)
            .filter(|(_, owners)| owners.contains(&self.me))
            .map(|(id, _)| *id)
            .collect();
        let store = self.store.clone();
        let checked = self
            .blocking(move || {
                mine.into_iter()
                    .map(|id| store.holds_durably(&id).map(|held| (id, held)))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await;
        match checked {
            Ok(checked) => holds.extend(
                checked
                    .into_iter()
                    .filter(|(_, held)| *held)
                    .map(|(id, _)| (self.me, id)),
            ),
            // None of them counts this round (as a peer that cannot answer).
            Err(error) => {
                tracing::warn!(%error, "repair: cannot check which blobs this node holds durably; counting none of its copies this round")
            }
        }

        // Blobs with fewer than `target` durable copies, and their bytes
        // (one blocking call for all of them).
        let under_ids: Vec<ChunkId> = window
            .iter()
            .zip(&owners)
            .filter(|(id, owners)| {
                owners
                    .iter()
                    .filter(|o| holds.contains(&(**o, **id)))
                    .count()
                    < target
            })
            .map(|(id, _)| *id)
            .collect();
        let under = under_ids.len() as u64;
        let under_bytes = self.blob_lens(under_ids).await;
        let mut copies_left = REPAIR_COPIES_PER_ROUND;
        // Each drop reads the blob back on every owner first: bounded too.
        let mut drops_left = REPAIR_COPIES_PER_ROUND;
        for (id, owners) in window.iter().zip(&owners) {
            let i_own = owners.contains(&self.me);
            let missing: Vec<&NodeId> = owners
                .iter()
                .filter(|o| **o != self.me && !unknown.contains(o) && !holds.contains(&(**o, *id)))
                .collect();
            let mut pushed: Vec<NodeId> = Vec::new();
            if !missing.is_empty() && copies_left > 0 {
                let store = self.store.clone();
                let blob = *id;
                let Ok(blob) = self.blocking(move || store.get_sealed(&blob)).await else {
                    // Corrupt or gone: the read quarantined it; other
                    // holders will repair the owners.
                    continue;
                };
                for owner in missing.iter().copied() {
                    if copies_left == 0 {
                        break;
                    }
                    copies_left -= 1;
                    let Some(peer) = alive.iter().find(|p| p.node == *owner).cloned() else {
                        continue;
                    };
                    let (_, _, result) = self.clone().store_on(peer, 0, blob.clone()).await;
                    match result {
                        Ok(()) => {
                            pushed.push(*owner);
                            ReplicationCounters::bump(&self.repair.copies_made, 1);
                        }
                        Err(error) => {
                            tracing::debug!(blob = %id, owner = %owner.short(), %error, "repair copy failed")
                        }
                    }
                }
            }
            // Drop a copy this node does not own once every owner holds one
            // (confirmed, or just received it from us, durably).
            let every_owner_holds = owners.len() >= target
                && owners
                    .iter()
                    .all(|o| holds.contains(&(*o, *id)) || pushed.contains(o));
            // Only a blob a retained version references: an unreferenced
            // one is garbage (the GC's to delete) or a put's in flight,
            // whose holders the put keeps and must find holding it.
            let droppable = !i_own
                && every_owner_holds
                && drops_left > 0
                && referenced.as_ref().is_some_and(|r| r.contains(id));
            // The budget counts attempts: each costs a read on every owner.
            let verified = droppable && {
                drops_left -= 1;
                self.owners_verified(*id, owners, &alive).await
            };
            if verified {
                let store = self.store.clone();
                let blob = *id;
                match self.blocking(move || store.delete(&blob)).await {
                    Ok(()) => {
                        ReplicationCounters::bump(&self.repair.copies_dropped, 1);
                        tracing::debug!(blob = %id, "rebalance: dropped a copy this node does not own");
                    }
                    Err(error) => tracing::warn!(blob = %id, %error, "cannot drop a copy"),
                }
            }
        }
        // A store larger than one window is scanned over several rounds:
        // the figures are published once a whole pass is counted, so they
        // always describe the whole store (as of its last complete scan).
        state.pass_under.0 += under;
        state.pass_under.1 += under_bytes;
        if window.last() == all.last() {
            let (under, under_bytes) = std::mem::take(&mut state.pass_under);
            self.repair.under_replicated.store(under, Ordering::Relaxed);
            self.repair
                .under_replicated_bytes
                .store(under_bytes, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Whether every owner of `id` (not this node) holds a copy that reads
    /// back verified: asked right before this node deletes its own copy, so
    /// a bit-rotted owner copy never costs the last good one. Any doubt is
    /// a no.
    async fn owners_verified(
        &self,
        id: ChunkId,
        owners: &[NodeId],
        alive: &[PeerIdentity],
    ) -> bool {
        for owner in owners.iter().filter(|o| **o != self.me) {
            let Some(peer) = alive.iter().find(|p| p.node == *owner) else {
                return false;
            };
            match self.ask_presence_verified(peer, &[id], true).await {
                Ok(present) if present == [true] => {}
                Ok(_) => {
                    crate::marks::hit("rebalance_kept_a_copy_an_owner_could_not_verify");
                    return false;
                }
                Err(_) => return false,
            }
        }
        true
    }

    async fn ask_presence(
        &self,
        peer: &PeerIdentity,
        ids: &[ChunkId],
    ) -> Result<Vec<bool>, String> {
        self.ask_presence_verified(peer, ids, false).await
    }

    async fn ask_presence_verified(
        &self,
        peer: &PeerIdentity,
        ids: &[ChunkId],
        verify: bool,
    ) -> Result<Vec<bool>, String> {
        let ask = || Message::HasBlobs {
            ids: ids.to_vec(),
            verify,
        };
        match self.request(peer, ask).await.map_err(|e| e.to_string())? {
            Message::BlobPresence { present } if present.len() == ids.len() => Ok(present),
            other => Err(format!("HasBlobs answered with {}", other.kind())),
        }
    }

    /// The plaintext bytes of `ids` together, as far as this node can tell
    /// from its own copies (a blob it holds no copy of counts 0).
    async fn blob_lens(&self, ids: Vec<ChunkId>) -> u64 {
        if ids.is_empty() {
            return 0;
        }
        let store = self.store.clone();
        self.blocking(move || {
            ids.iter()
                .map(|id| store.plaintext_len(id).unwrap_or(0))
                .sum()
        })
        .await
    }

    /// Delete blobs no retained version references (see the module docs).
    /// Any doubt (an unreadable manifest, an index error) skips the round.
    /// Returns the blobs retained versions reference, when it could tell.
    async fn collect_garbage(
        self: &Arc<Self>,
        all: &[ChunkId],
        state: &mut RepairState,
    ) -> Option<BTreeSet<ChunkId>> {
        // Blobs put again were taken at the start of the round, before the
        // records are read here: one put again after that is kept by
        // `delete_unless_put_again` instead.
        let records_read_ms = self.elapsed_ms();
        // Records a peer holds that this node refused as from beyond its
        // clock still reference their contents. Read before the records: a
        // pass completing in between merged what it no longer defers.
        let deferred = self.deferred_contents();
        let index = self.index.clone();
        let Ok(records) = self.blocking(move || index.all_records()).await else {
            return None;
        };
        let mut contents: BTreeSet<ContentId> = records.iter().filter_map(|r| r.content).collect();
        contents.extend(deferred);
        let mut referenced: BTreeSet<ChunkId> = BTreeSet::new();
        for content in &contents {
            referenced.insert(ChunkId(content.0));
            if !state.manifests.contains_key(content) {
                let Ok(bytes) = self.fetch_blob(ChunkId(content.0)).await else {
                    return None;
                };
                let Ok(manifest) = Manifest::decode(&bytes) else {
                    return None;
                };
                if state.manifests.len() >= MANIFEST_CACHE_MAX {
                    state.manifests.clear();
                }
                state
                    .manifests
                    .insert(*content, manifest.chunks.iter().map(|c| c.id).collect());
            }
            referenced.extend(state.manifests[content].iter().copied());
        }
        let now = self.elapsed_ms();
        let grace = self.maintenance.gc_grace.as_millis() as u64;
        state
            .unreferenced_since
            .retain(|id, _| !referenced.contains(id));
        for id in all.iter().filter(|id| !referenced.contains(id)) {
            let since = *state.unreferenced_since.entry(*id).or_insert(now);
            if now.saturating_sub(since) < grace {
                continue;
            }
            // The pass must start after the grace ended, not merely after
            // `since`: a put may still commit a version using this blob up
            // to a grace period after it last stored or kept it (see
            // `Cluster::commit_put`), so only a pass started after that
            // is sure to bring its record here.
            if !self.synced_with_every_member_since(since + grace, records_read_ms) {
                crate::marks::hit("gc_waits_for_sync_with_every_member");
                continue;
            }
            let store = self.store.clone();
            let blob = *id;
            if let Ok(true) = self
                .blocking(move || store.delete_unless_put_again(&blob))
                .await
            {
                state.unreferenced_since.remove(id);
                ReplicationCounters::bump(&self.repair.garbage_collected, 1);
                tracing::info!(blob = %id, "garbage collected a blob no version references");
            }
        }
        state
            .unreferenced_since
            .retain(|id, _| all.binary_search(id).is_ok());
        Some(referenced)
    }
}

/// The next [`REPAIR_BATCH`] ids after `cursor` (wrapping to the start).
fn next_window(all: &[ChunkId], cursor: &mut Option<ChunkId>) -> Vec<ChunkId> {
    let start = match cursor {
        Some(after) => all.partition_point(|id| id <= after),
        None => 0,
    };
    let start = if start >= all.len() { 0 } else { start };
    let window: Vec<ChunkId> = all[start..].iter().take(REPAIR_BATCH).copied().collect();
    *cursor = window.last().copied();
    window
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_the_store_and_wrap() {
        let all: Vec<ChunkId> = (0..(REPAIR_BATCH * 2 + 5) as u32)
            .map(|i| ChunkId::of(&i.to_le_bytes()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut cursor = None;
        let mut seen = BTreeSet::new();
        for _ in 0..3 {
            seen.extend(next_window(&all, &mut cursor));
        }
        assert_eq!(seen.len(), all.len());
        assert_eq!(next_window(&all, &mut cursor)[0], all[0]);
    }
}
