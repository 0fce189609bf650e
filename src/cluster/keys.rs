//! Access keys across the cluster: created, changed and removed like a
//! version record is written (durable on this node, pushed to every alive
//! member, acknowledged once W nodes hold it), and repaired by
//! anti-entropy: each round compares a digest of all key records with one
//! peer and exchanges the records that differ. A key removed on one node is
//! refused by every node that has heard of it: within a push when the
//! nodes are up, within a sync round or two of one that was not.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::task::JoinSet;

use super::{Cluster, ClusterError};
use crate::keys::NodeId;
use crate::keys::access::{AccessKeyId, Permission, SecretKey, validate_key_name};
use crate::keys::credentials::{Credentials, ProvisionedKey};
use crate::limits::{ACCESS_KEY_RECORDS_MAX, ACCESS_KEYS_CREATED_MAX};
use crate::meta::{KeyRecord, VersionId};
use crate::peer::PeerIdentity;
use crate::wire::{KeyInfo, Message};

/// What a sync round of keys moved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KeySyncReport {
    pub received: usize,
    pub sent: usize,
}

impl Cluster {
    /// Load this node's key records into its keyring (at start).
    pub async fn load_keys(&self) -> Result<usize, ClusterError> {
        let index = self.index.clone();
        let records = self
            .blocking(move || index.keys())
            .await
            .map_err(|e| ClusterError::Local(e.to_string()))?;
        // Key versions come from node clocks too: a change made here must
        // sort after every one this node holds.
        self.observe(records.iter().map(|k| k.version));
        self.keyring.offer(&records);
        Ok(records.len())
    }

    /// Merge key records into this node's index (durably) and keyring;
    /// returns those that changed something.
    pub async fn merge_keys_local(
        &self,
        keys: Vec<KeyRecord>,
    ) -> Result<Vec<KeyRecord>, ClusterError> {
        self.observe(keys.iter().map(|k| k.version));
        let index = self.index.clone();
        let changed = self
            .blocking(move || index.merge_keys(&keys))
            .await
            .map_err(|e| ClusterError::Local(e.to_string()))?;
        self.keyring.offer(&changed);
        Ok(changed)
    }

    /// Make key records durable here and on every alive member; returns
    /// once W nodes (this one included) hold them.
    async fn commit_keys(self: &Arc<Self>, keys: Vec<KeyRecord>) -> Result<(), ClusterError> {
        let needed = self.quorum();
        self.merge_keys_local(keys.clone()).await?;
        let mut pushes = JoinSet::new();
        for peer in self.members.alive() {
            let cluster = self.clone();
            let keys = keys.clone();
            pushes.spawn(async move {
                let apply = || Message::ApplyKeys { keys: keys.clone() };
                match cluster.request(&peer, apply).await {
                    Ok(Message::KeysApplied) => Ok(()),
                    Ok(other) => Err(format!("{}: answered {}", peer.node.short(), other.kind())),
                    Err(error) => Err(format!("{}: {error}", peer.node.short())),
                }
            });
        }
        let (acknowledged, failures) = super::records::until_quorum(pushes, 1, needed).await;
        if acknowledged < needed {
            return Err(ClusterError::QuorumNotReached {
                what: format!("the change of access key {}", keys[0].id),
                acknowledged,
                needed,
                detail: failures.join("; "),
            });
        }
        Ok(())
    }

    /// Create an access key; returns it and its secret (shown once).
    pub async fn create_key(
        self: &Arc<Self>,
        name: String,
        permission: Permission,
    ) -> Result<(KeyInfo, SecretKey), ClusterError> {
        validate_key_name(&name).map_err(|e| ClusterError::Invalid(e.to_string()))?;
        permission
            .validate()
            .map_err(|e| ClusterError::Invalid(e.to_string()))?;
        let (records, live) = self.keyring.counts();
        if records >= ACCESS_KEYS_CREATED_MAX {
            return Err(ClusterError::Invalid(format!(
                "the cluster has {records} key records ({live} keys in use, the rest removed); {ACCESS_KEYS_CREATED_MAX} is the most this version creates"
            )));
        }
        self.check_quorum_reachable()?;
        let id = AccessKeyId::generate(&self.env);
        let secret = SecretKey::generate(&self.env);
        let record = KeyRecord {
            id,
            name,
            permission,
            sealed_secret: self.keyring.sealer().seal(&self.env, &id, &secret),
            created_ms: self.env.clock.unix_ms(),
            version: self.next_vid()?,
            removed: false,
        };
        self.commit_keys(vec![record]).await?;
        let info = self
            .keyring
            .info(&id)
            .expect("a committed key is in the keyring");
        tracing::info!(key = %id, name = %info.name, permission = %info.permission, "access key created");
        Ok((info, secret))
    }

    /// Remove a key: a tombstone without its secret.
    pub async fn remove_key(self: &Arc<Self>, id: AccessKeyId) -> Result<KeyInfo, ClusterError> {
        let current = self.live_key(&id)?;
        if self.keyring.is_last_admin(&id) {
            return Err(ClusterError::Invalid(format!(
                "access key {id} is the last admin key: create another admin key first"
            )));
        }
        self.check_quorum_reachable()?;
        let removal = current.removal(self.version_after(&current.version)?);
        let info = self.commit_key_change(removal).await?;
        tracing::info!(key = %id, name = %current.name, "access key removed");
        Ok(info)
    }

    /// Change a key's permission; its secret stays.
    pub async fn set_key_permission(
        self: &Arc<Self>,
        id: AccessKeyId,
        permission: Permission,
    ) -> Result<KeyInfo, ClusterError> {
        permission
            .validate()
            .map_err(|e| ClusterError::Invalid(e.to_string()))?;
        let current = self.live_key(&id)?;
        if !permission.is_admin() && self.keyring.is_last_admin(&id) {
            return Err(ClusterError::Invalid(format!(
                "access key {id} is the last admin key: create another admin key first"
            )));
        }
        self.check_quorum_reachable()?;
        let changed = KeyRecord {
            permission,
            version: self.version_after(&current.version)?,
            ..current
        };
        let info = self.commit_key_change(changed).await?;
        tracing::info!(key = %id, permission = %info.permission, "access key permission changed");
        Ok(info)
    }

    /// A version for a change of a record at `current`: this clock's next,
    /// or, when the clock is behind the record (a restart with the clock set
    /// back, a peer's clock ahead), the least version above it. A change
    /// must win over what it changes, whatever the clocks say.
    fn version_after(&self, current: &VersionId) -> Result<VersionId, ClusterError> {
        let next = self.next_vid()?;
        if next > *current {
            return Ok(next);
        }
        let (wall_ms, counter) = match current.counter.checked_add(1) {
            Some(counter) => (current.wall_ms, counter),
            None => (
                current.wall_ms.checked_add(1).ok_or_else(|| {
                    ClusterError::Clock("a key's version is at the end of time".into())
                })?,
                0,
            ),
        };
        Ok(VersionId {
            wall_ms,
            counter,
            node: self.me,
        })
    }

    /// Commit one key change and return the key as it now stands; an error
    /// if the change did not win (a newer change of the key got there
    /// first), rather than report a change that did not happen.
    async fn commit_key_change(
        self: &Arc<Self>,
        change: KeyRecord,
    ) -> Result<KeyInfo, ClusterError> {
        let id = change.id;
        self.commit_keys(vec![change.clone()]).await?;
        match self.keyring.record(&id) {
            Some(now) if now == change => Ok(self
                .keyring
                .info(&id)
                .expect("a committed key is in the keyring")),
            _ => Err(ClusterError::Invalid(format!(
                "access key {id} was changed elsewhere at the same time; look at it (`key ls`) and try again"
            ))),
        }
    }

    fn live_key(&self, id: &AccessKeyId) -> Result<KeyRecord, ClusterError> {
        self.keyring
            .record(id)
            .filter(|r| !r.removed)
            .ok_or_else(|| ClusterError::NotFound(format!("access key {id}")))
    }

    /// Make sure each provisioned key exists: the same record on every node
    /// (its version is the least there is, so any change made since, a
    /// removal included, wins over it). It is held in memory: every node
    /// is given it at start, and it reaches a node's index only when a
    /// peer's sync sends it (so provisioning writes nothing at start).
    pub fn provision_keys(&self, keys: &[ProvisionedKey]) -> Result<(), ClusterError> {
        let records: Vec<KeyRecord> = keys
            .iter()
            .map(|key| KeyRecord {
                id: key.credentials.id,
                name: key.name.clone(),
                permission: key.permission.clone(),
                sealed_secret: self
                    .keyring
                    .sealer()
                    .seal_deterministic(&key.credentials.id, &key.credentials.secret),
                created_ms: 0,
                version: VersionId {
                    wall_ms: 0,
                    counter: 0,
                    node: NodeId([0; 32]),
                },
                removed: false,
            })
            .collect();
        for record in &records {
            record.validate().map_err(ClusterError::Invalid)?;
        }
        self.keyring.offer(&records);
        Ok(())
    }

    /// The first start of a new cluster's first node: its admin key, made
    /// durable here only (there is nobody else yet; anti-entropy hands it
    /// to every node that joins).
    pub async fn create_first_admin_key(
        &self,
        credentials: &Credentials,
    ) -> Result<(), ClusterError> {
        let record = KeyRecord {
            id: credentials.id,
            name: "admin".into(),
            permission: Permission::admin(),
            sealed_secret: self.keyring.sealer().seal(
                &self.env,
                &credentials.id,
                &credentials.secret,
            ),
            created_ms: self.env.clock.unix_ms(),
            version: self.next_vid()?,
            removed: false,
        };
        self.merge_keys_local(vec![record]).await?;
        Ok(())
    }

    /// The answer to a peer's `FetchKeys`: every record, unless the digests
    /// are the same.
    pub(super) fn key_records_for(&self, digest: [u8; 32]) -> Option<Vec<KeyRecord>> {
        if self.keyring.digest() == digest {
            return None;
        }
        let mut records = self.keyring.records();
        records.truncate(ACCESS_KEY_RECORDS_MAX);
        Some(records)
    }

    /// One anti-entropy round of keys with `peer`: fetch its records when
    /// the digests differ, merge them, and send it those of ours that it
    /// lacks or that supersede its own.
    pub async fn sync_keys_with(
        self: &Arc<Self>,
        peer: &PeerIdentity,
    ) -> Result<KeySyncReport, String> {
        let digest = self.keyring.digest();
        let theirs = match self
            .request(peer, || Message::FetchKeys { digest })
            .await
            .map_err(|e| e.to_string())?
        {
            Message::KeyRecords { keys: None } => return Ok(KeySyncReport::default()),
            Message::KeyRecords { keys: Some(keys) } => keys,
            other => return Err(format!("answered {}", other.kind())),
        };
        if theirs.len() > ACCESS_KEY_RECORDS_MAX {
            return Err(format!("{} key records, above the limit", theirs.len()));
        }
        let by_id: BTreeMap<AccessKeyId, KeyRecord> =
            theirs.iter().map(|k| (k.id, k.clone())).collect();
        let received = self
            .merge_keys_local(theirs)
            .await
            .map_err(|e| e.to_string())?
            .len();
        let newer: Vec<KeyRecord> = self
            .keyring
            .records()
            .into_iter()
            .filter(|ours| by_id.get(&ours.id).is_none_or(|t| ours.supersedes(t)))
            .collect();
        let sent = newer.len();
        if !newer.is_empty() {
            match self
                .request(peer, || Message::ApplyKeys {
                    keys: newer.clone(),
                })
                .await
                .map_err(|e| e.to_string())?
            {
                Message::KeysApplied => {}
                other => return Err(format!("answered {}", other.kind())),
            }
        }
        if received + sent > 0 {
            tracing::debug!(peer = %peer.node.short(), received, sent, "access keys synced");
        }
        Ok(KeySyncReport { received, sent })
    }
}
