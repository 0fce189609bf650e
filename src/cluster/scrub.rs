//! Scrub: the background loop that reads every stored blob back, so that a
//! copy rotting on disk is found while good copies exist elsewhere, not
//! when the last reader needs it.
//!
//! Every `scrub_interval` (jittered) it verifies the next
//! [`SCRUB_BATCH`] blobs of the local store, in id order, wrapping at the
//! end (a pass). A blob that fails verification twice is quarantined by the
//! read ([`ChunkStore::get`](crate::store::ChunkStore::get)); this node then
//! no longer holds it, so the repair loop of another holder copies a good
//! one back. A blob whose directory entry was never made durable (its put's
//! directory sync failed) is synced now. The rate is bounded by the batch
//! and the interval: with the defaults, 16 blobs (at most 64 MiB) every 10
//! seconds. Progress is in `status`.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use super::{Cluster, ReplicationCounters};
use crate::cas::ChunkId;
use crate::limits::SCRUB_BATCH;
use crate::store::StoreError;

/// What the scrub has done since the node started, for `status`.
#[derive(Debug, Default)]
pub struct ScrubStatus {
    /// Blobs read back and verified.
    pub blobs_verified: AtomicU64,
    /// Blobs found corrupt (and quarantined).
    pub corrupt_found: AtomicU64,
    /// Complete passes over the store.
    pub passes: AtomicU64,
    /// Passes that found the kept anti-entropy digests different from
    /// the index (corrected then; a bug if ever non-zero).
    pub digest_mismatches: AtomicU64,
}

/// The background loop.
pub struct ScrubTask {
    pub cluster: Arc<Cluster>,
}

impl ScrubTask {
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut cursor: Option<ChunkId> = None;
        loop {
            let wait = self
                .cluster
                .jittered(self.cluster.maintenance.scrub_interval);
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(wait) => {}
            }
            tokio::select! {
                _ = &mut shutdown => break,
                result = self.cluster.scrub_round(&mut cursor) => {
                    if let Err(error) = result {
                        tracing::warn!(%error, "scrub round stopped early");
                    }
                }
            }
        }
    }
}

impl Cluster {
    /// Verify the next batch of blobs after `cursor`.
    async fn scrub_round(&self, cursor: &mut Option<ChunkId>) -> Result<(), StoreError> {
        let store = self.store.clone();
        let all = self.blocking(move || store.list()).await?;
        let start = match cursor {
            Some(after) => all.partition_point(|id| id <= after),
            None => 0,
        };
        let batch: Vec<ChunkId> = all[start..].iter().take(SCRUB_BATCH).copied().collect();
        if batch.len() < SCRUB_BATCH || start + batch.len() == all.len() {
            // The end of the store: the next round starts a new pass.
            *cursor = None;
            ReplicationCounters::bump(&self.scrub.passes, 1);
            let index = self.index.clone();
            match self.blocking(move || index.check_digests()).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::error!(
                        "the kept anti-entropy digests differed from the version index; corrected (a bug: please report it with this log)"
                    );
                    ReplicationCounters::bump(&self.scrub.digest_mismatches, 1);
                }
                Err(error) => tracing::warn!(%error, "cannot check the anti-entropy digests"),
            }
        } else {
            *cursor = batch.last().copied();
        }
        for id in batch {
            let store = self.store.clone();
            let checked = self.blocking(move || store.scrub(&id)).await;
            match checked {
                Ok(_) => ReplicationCounters::bump(&self.scrub.blobs_verified, 1),
                Err(StoreError::Corrupt(_)) => {
                    crate::marks::hit("scrub_found_a_corrupt_blob");
                    ReplicationCounters::bump(&self.scrub.corrupt_found, 1);
                }
                // Deleted since it was listed (GC, rebalance).
                Err(StoreError::NotFound(_)) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
}
