//! The requests a node answers for its peers.

use std::sync::Arc;

use super::{Cluster, LocalPut, ReplicationCounters};
use crate::keys::NodeId;
use crate::limits::{REPAIR_BATCH, SYNC_BATCH_BYTES, SYNC_ENTRY_OVERHEAD, VERIFY_BATCH};
use crate::meta::digest;
use crate::peer::{PeerService, ServiceFuture};
use crate::store::StoreError;
use crate::wire::{ErrorCode, Message};

/// [`PeerService`] over a [`Cluster`].
pub struct ClusterService(pub Arc<Cluster>);

impl PeerService for ClusterService {
    fn serve(&self, from: NodeId, request: Message) -> ServiceFuture {
        let cluster = self.0.clone();
        Box::pin(async move { cluster.serve(from, request).await })
    }
}

fn error(code: ErrorCode, message: impl Into<String>) -> Message {
    Message::Error {
        code,
        message: message.into(),
    }
}

fn store_error(error: StoreError) -> Message {
    let code = match &error {
        StoreError::NotFound(_) => ErrorCode::NotFound,
        StoreError::Corrupt(_) => ErrorCode::Corrupt,
        StoreError::DiskFull { .. } => ErrorCode::DiskFull,
        StoreError::TooLarge(_) | StoreError::NotSealedFor(_) => ErrorCode::InvalidRequest,
        StoreError::Io { .. } | StoreError::Table(_) => ErrorCode::Internal,
        StoreError::Busy(_) => ErrorCode::Unavailable,
    };
    error_with(code, error)
}

fn error_with(code: ErrorCode, cause: impl std::fmt::Display) -> Message {
    error(code, cause.to_string())
}

impl Cluster {
    async fn serve(self: Arc<Self>, from: NodeId, request: Message) -> Message {
        match request {
            Message::StoreBlob { id, sealed } => {
                // The sender is authenticated but may still be wrong (a
                // bug, bad memory): never store bytes not sealed for `id`.
                match self.put_locally(LocalPut::FromPeer { id, sealed }).await {
                    Ok(_) => Message::BlobStored,
                    Err(e @ StoreError::NotSealedFor(_)) => {
                        tracing::error!(peer = %from.short(), blob = %id, "a peer sent a blob not sealed for its id");
                        store_error(e)
                    }
                    Err(e) => store_error(e),
                }
            }
            Message::FetchBlob { id } => {
                let store = self.store.clone();
                match self.blocking(move || store.get_sealed(&id)).await {
                    Ok(blob) => Message::BlobData {
                        sealed: blob.into_bytes(),
                    },
                    Err(e) => store_error(e),
                }
            }
            Message::ApplyRecords {
                mut records,
                mut floors,
            } => {
                // Refused ids from the future: the rest is merged, but the
                // answer is an error, so the sender counts no
                // acknowledgement and its anti-entropy pass is incomplete.
                let refused = self.refuse_ahead(from, &mut records, &mut floors);
                match (self.merge_local(records, floors).await, refused) {
                    (Ok(_), Some(refused)) => error(ErrorCode::InvalidRequest, refused.reason),
                    (Ok(outcome), None) => Message::RecordsApplied {
                        below_floor: outcome.below_floor,
                    },
                    (Err(e), _) => error_with(ErrorCode::Internal, e),
                }
            }
            Message::SyncDigests {
                digests,
                after,
                keys_digest,
            } => {
                let keys_differ = self.keyring.digest() != keys_digest;
                let index = self.index.clone();
                let listed = self
                    .blocking(move || {
                        let ours = index.digests()?;
                        let differing = digest::differing(&ours, &digests);
                        let keys =
                            index.keys_in_buckets(&differing, SYNC_BATCH_BYTES, after.as_ref())?;
                        Ok::<_, crate::meta::IndexError>((differing, keys))
                    })
                    .await;
                match listed {
                    Ok((differing, (keys, floors, truncated))) => Message::SyncKeys {
                        buckets: differing
                            .iter()
                            .enumerate()
                            .filter(|(_, differs)| **differs)
                            .map(|(bucket, _)| bucket as u16)
                            .collect(),
                        keys,
                        floors,
                        truncated,
                        keys_differ,
                    },
                    Err(e) => error_with(ErrorCode::Internal, e),
                }
            }
            Message::FetchRecords { keys } => {
                let cost: usize = keys
                    .iter()
                    .map(|k| k.name.len() + SYNC_ENTRY_OVERHEAD)
                    .sum();
                if cost > SYNC_BATCH_BYTES {
                    return error(ErrorCode::InvalidRequest, "too many keys in one request");
                }
                let index = self.index.clone();
                match self.blocking(move || index.records(&keys)).await {
                    Ok(records) => {
                        ReplicationCounters::bump(
                            &self.counters.sync_records_sent,
                            records.len() as u64,
                        );
                        Message::Records { records }
                    }
                    Err(e) => error_with(ErrorCode::Internal, e),
                }
            }
            Message::ApplyKeys { keys } => {
                if keys.len() > crate::limits::ACCESS_KEY_RECORDS_MAX {
                    return error(ErrorCode::InvalidRequest, "too many key records");
                }
                match self.merge_keys_local(keys).await {
                    Ok(_) => Message::KeysApplied,
                    Err(e) => error_with(ErrorCode::Internal, e),
                }
            }
            Message::FetchKeys { digest } => Message::KeyRecords {
                keys: self.key_records_for(digest),
            },
            // For the status page and `dfs-node status` of the asking node:
            // counts and states, never a file name.
            Message::Status => Message::StatusReply(self.status().await),
            Message::CurrentOf { name } => {
                let index = self.index.clone();
                let stubs_max = crate::limits::QUORUM_ANSWER_STUBS_MAX;
                match self
                    .blocking(move || index.current_with_stubs(&name, stubs_max))
                    .await
                {
                    // `Records`: the current record and the stubs above it.
                    Ok(records) => Message::Records { records },
                    Err(e) => error_with(ErrorCode::Internal, e),
                }
            }
            Message::HasBlobs { ids, verify } => {
                let limit = if verify { VERIFY_BATCH } else { REPAIR_BATCH };
                if ids.len() > limit {
                    return error(ErrorCode::InvalidRequest, "too many ids in one request");
                }
                let store = self.store.clone();
                let present = self
                    .blocking(move || {
                        ids.iter()
                            .map(|id| {
                                if verify {
                                    store.verify(id)
                                } else {
                                    store.holds_durably(id)
                                }
                            })
                            .collect::<Result<Vec<bool>, StoreError>>()
                    })
                    .await;
                match present {
                    Ok(present) => Message::BlobPresence { present },
                    Err(e) => store_error(e),
                }
            }
            Message::KeepBlobs { ids } => {
                if ids.len() > REPAIR_BATCH {
                    return error(ErrorCode::InvalidRequest, "too many ids in one request");
                }
                let store = self.store.clone();
                match self.blocking(move || store.keep(&ids)).await {
                    Ok(present) => Message::BlobPresence { present },
                    Err(e) => store_error(e),
                }
            }
            other => error(
                ErrorCode::InvalidRequest,
                format!("{} is not a peer request", other.kind()),
            ),
        }
    }
}
