//! Blobs across the cluster: replicated stores and verified, repairing reads.

use std::sync::Arc;

use bytes::Bytes;
use tokio::task::JoinSet;

use super::{Cluster, ClusterError, LocalPut, ReplicationCounters};
use crate::cas::ChunkId;
use crate::peer::{PeerError, PeerIdentity};
use crate::placement;
use crate::store::{SealedBlob, StoreError};
use crate::wire::{ErrorCode, Message};

/// Members not seen alive that one read asks at once (see `fetch_blob`).
const NOT_ALIVE_FETCHES_AT_ONCE: usize = 8;

/// Where a blob ended up.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The nodes that acknowledged it durably (at least W).
    pub holders: Vec<PeerIdentity>,
    /// When the store was asked for ([`crate::env::Clock::monotonic_ms`]),
    /// before any copy was written: the garbage collector's grace period
    /// for a new copy starts no earlier.
    pub asked_at_ms: u64,
}

/// Why one node could not provide a blob.
#[derive(Debug)]
enum FetchFailure {
    /// It does not hold it.
    Missing,
    /// Its copy (or what it sent) failed verification.
    Corrupt,
    /// It could not be asked (down, partitioned, overloaded).
    Unreachable(String),
}

impl std::fmt::Display for FetchFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchFailure::Missing => f.write_str("it has no copy"),
            FetchFailure::Corrupt => f.write_str("its copy is corrupt"),
            FetchFailure::Unreachable(reason) => f.write_str(reason),
        }
    }
}

impl Cluster {
    /// The alive nodes in `id`'s rendezvous order.
    fn ranked(&self, id: &ChunkId) -> Vec<PeerIdentity> {
        let alive = self.alive_nodes();
        let order = placement::rank(id, &alive.iter().map(|p| p.node).collect::<Vec<_>>());
        order
            .into_iter()
            .filter_map(|node| alive.iter().find(|p| p.node == node).cloned())
            .collect()
    }

    /// Store `bytes` (whose hash is `id`) on R nodes: the top R alive
    /// nodes of its ranking, and when one of them fails, the next in line
    /// stands in. Succeeds once W hold it durably; all attempts finish (or
    /// time out) before this returns, so no copy is left half-sent.
    ///
    /// The blob is sealed here, once: every owner receives the sealed
    /// bytes, checks their tag (not the hash: a third of the CPU of hashing
    /// and sealing again) and stores them as they are.
    pub async fn store_blob(
        self: &Arc<Self>,
        id: ChunkId,
        bytes: Bytes,
    ) -> Result<Stored, ClusterError> {
        let asked_at_ms = self.elapsed_ms();
        let blob = self.store.sealer().seal_blob(id, &bytes);
        drop(bytes);
        let ranked = self.ranked(&id);
        let replicas = self.replication.replicas.min(ranked.len());
        let needed = self.quorum();
        let mut candidates = ranked.into_iter().enumerate();
        let mut attempts = JoinSet::new();
        let mut holders = Vec::new();
        let mut failures = Vec::new();
        for _ in 0..replicas {
            if let Some((rank, target)) = candidates.next() {
                attempts.spawn(self.clone().store_on(target, rank, blob.clone()));
            }
        }
        while let Some(joined) = attempts.join_next().await {
            let (target, rank, result) = match joined {
                Ok(outcome) => outcome,
                Err(error) => {
                    failures.push(format!("a store task failed: {error}"));
                    continue;
                }
            };
            match result {
                Ok(()) => {
                    holders.push(target);
                    if rank >= self.replication.replicas {
                        ReplicationCounters::bump(&self.counters.stand_ins, 1);
                    }
                }
                Err(error) => {
                    tracing::debug!(blob = %id, peer = %target.node.short(), %error, "storing a copy failed; trying the next node");
                    failures.push(format!("{}: {error}", target.node.short()));
                    if let Some((rank, next)) = candidates.next() {
                        attempts.spawn(self.clone().store_on(next, rank, blob.clone()));
                    }
                }
            }
        }
        if holders.len() < needed {
            return Err(ClusterError::QuorumNotReached {
                what: format!("blob {}", id.short()),
                acknowledged: holders.len(),
                needed,
                detail: failures.join("; "),
            });
        }
        Ok(Stored {
            holders,
            asked_at_ms,
        })
    }

    /// Store one copy on `target` (this node or a peer).
    pub(super) async fn store_on(
        self: Arc<Self>,
        target: PeerIdentity,
        rank: usize,
        blob: SealedBlob,
    ) -> (PeerIdentity, usize, Result<(), String>) {
        let result = if target.node == self.me {
            self.put_locally(LocalPut::Sealed(blob))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        } else {
            let store = || Message::StoreBlob {
                id: *blob.id(),
                sealed: blob.bytes().clone(),
            };
            match self.request(&target, store).await {
                Ok(Message::BlobStored) => Ok(()),
                Ok(other) => Err(format!("answered {}", other.kind())),
                Err(error) => Err(error.to_string()),
            }
        };
        (target, rank, result)
    }

    /// Read blob `id`, verified: from the local store if it holds a good
    /// copy, else from the alive nodes in rendezvous order. Copies found
    /// missing or corrupt on the way, at nodes that should hold one, are
    /// repaired from the good copy.
    pub async fn fetch_blob(self: &Arc<Self>, id: ChunkId) -> Result<Vec<u8>, ClusterError> {
        let ranked = self.ranked(&id);
        let owners = self.replication.replicas.min(ranked.len());
        let mut should_hold = Vec::new();
        let mut corrupt_seen = false;
        let store = self.store.clone();
        let local = self.blocking(move || store.get(&id)).await;
        match local {
            Ok(bytes) => return Ok(bytes),
            Err(StoreError::NotFound(_)) => {}
            Err(StoreError::Corrupt(_)) => corrupt_seen = true,
            Err(error) => {
                tracing::warn!(blob = %id, %error, "cannot read the local copy; asking peers")
            }
        }
        let my_rank = ranked.iter().position(|p| p.node == self.me);
        if my_rank.is_some_and(|rank| rank < owners) {
            should_hold.push(self.peers.identity());
        }
        // The alive nodes in rendezvous order, one at a time (the first
        // owners hold it, and a read should cost one fetch)...
        for (rank, peer) in ranked.iter().enumerate() {
            if peer.node == self.me {
                continue;
            }
            match self.fetch_from(peer, id).await {
                Ok(bytes) => {
                    self.repair(id, &bytes, should_hold);
                    return Ok(bytes);
                }
                Err(failure) => {
                    tracing::debug!(blob = %id, peer = %peer.node.short(), %failure, "fetch failed; trying the next node");
                    corrupt_seen |= matches!(failure, FetchFailure::Corrupt);
                    if rank < owners && !matches!(failure, FetchFailure::Unreachable(_)) {
                        should_hold.push(peer.clone());
                    }
                }
            }
        }
        // ...then the members this node does not see alive, all at once
        // (each may cost a connect timeout): membership views differ for a
        // while after a partition heals or a node restarts, and the copy may
        // sit on a node another member already saw come back (sim seed
        // 8800883).
        // At most NOT_ALIVE_FETCHES_AT_ONCE at a time, so one read never
        // opens a dial to every member of a large cluster at once.
        for batch in self.members.not_alive().chunks(NOT_ALIVE_FETCHES_AT_ONCE) {
            let mut asks = JoinSet::new();
            for peer in batch.iter().cloned() {
                let cluster = self.clone();
                asks.spawn(async move { (peer.node, cluster.fetch_from(&peer, id).await) });
            }
            while let Some(joined) = asks.join_next().await {
                let Ok((node, fetched)) = joined else {
                    continue;
                };
                match fetched {
                    Ok(bytes) => {
                        crate::marks::hit("blob_found_on_member_not_alive");
                        self.repair(id, &bytes, should_hold);
                        return Ok(bytes);
                    }
                    Err(failure) => {
                        tracing::debug!(blob = %id, peer = %node.short(), %failure, "fetch from a member not seen alive failed");
                        corrupt_seen |= matches!(failure, FetchFailure::Corrupt);
                    }
                }
            }
        }
        if corrupt_seen {
            Err(ClusterError::Corrupt(id.to_string()))
        } else {
            Err(ClusterError::NotFound(id.to_string()))
        }
    }

    async fn fetch_from(&self, peer: &PeerIdentity, id: ChunkId) -> Result<Vec<u8>, FetchFailure> {
        match self.request(peer, || Message::FetchBlob { id }).await {
            // Never trust a peer's bytes: they must be sealed for what we
            // asked for.
            Ok(Message::BlobData { sealed }) => {
                match self.store.sealer().open(&id, sealed.into()) {
                    Ok(plaintext) => Ok(plaintext),
                    Err(_) => {
                        tracing::error!(blob = %id, peer = %peer.node.short(), "a peer sent a blob not sealed for its id");
                        Err(FetchFailure::Corrupt)
                    }
                }
            }
            Ok(other) => Err(FetchFailure::Unreachable(format!(
                "answered {}",
                other.kind()
            ))),
            Err(PeerError::Remote {
                code: ErrorCode::NotFound,
                ..
            }) => Err(FetchFailure::Missing),
            Err(PeerError::Remote {
                code: ErrorCode::Corrupt,
                ..
            }) => Err(FetchFailure::Corrupt),
            Err(error) => Err(FetchFailure::Unreachable(error.to_string())),
        }
    }

    /// Put a good copy back where one was missing or corrupt, in the
    /// background (the read does not wait for it).
    fn repair(self: &Arc<Self>, id: ChunkId, bytes: &[u8], targets: Vec<PeerIdentity>) {
        if targets.is_empty() {
            return;
        }
        let blob = self.store.sealer().seal_blob(id, bytes);
        let cluster = self.clone();
        tokio::spawn(async move {
            for target in targets {
                let (target, _, result) = cluster.clone().store_on(target, 0, blob.clone()).await;
                match result {
                    Ok(()) => {
                        ReplicationCounters::bump(&cluster.counters.read_repairs, 1);
                        tracing::info!(blob = %id, node = %target.node.short(), "read repair: restored a missing or corrupt copy");
                    }
                    Err(error) => {
                        tracing::debug!(blob = %id, node = %target.node.short(), %error, "read repair failed")
                    }
                }
            }
        });
    }
}
