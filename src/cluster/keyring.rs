//! The access keys this node knows, in memory, for the two questions every
//! client connection asks: may this key connect (its psk, in the
//! handshake), and may it do this request (its permission, on every
//! request). Loaded from the index at start and updated after every merge
//! of key records, so a removal takes effect on the next request of every
//! open connection too.

use std::collections::BTreeMap;
use std::sync::RwLock;

use sha2::{Digest, Sha256};

use crate::keys::access::{AccessKeyId, Permission, SecretKey, SecretSealer};
use crate::keys::{ClusterKey, KEY_BYTES};
use crate::meta::KeyRecord;
use crate::secure::{Authority, node_psk};
use crate::wire::KeyInfo;

struct Entry {
    record: KeyRecord,
    /// `None` when removed, or when the sealed secret does not open (logged).
    psk: Option<[u8; KEY_BYTES]>,
    /// When this node last accepted a connection with the key (unix ms).
    last_used_ms: Option<u64>,
}

pub struct Keyring {
    node_psk: [u8; KEY_BYTES],
    sealer: SecretSealer,
    keys: RwLock<BTreeMap<AccessKeyId, Entry>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keyring(..)")
    }
}

impl Keyring {
    pub fn new(cluster_key: &ClusterKey) -> Self {
        Self {
            node_psk: node_psk(cluster_key),
            sealer: SecretSealer::new(cluster_key),
            keys: RwLock::new(BTreeMap::new()),
        }
    }

    pub fn sealer(&self) -> &SecretSealer {
        &self.sealer
    }

    /// The secret of a live key, for protocols that sign requests with it
    /// (S3's SigV4) rather than handshake with a psk derived from it.
    pub fn secret(&self, id: &AccessKeyId) -> Option<SecretKey> {
        let keys = self.keys.read().expect("keyring poisoned");
        let entry = keys.get(id).filter(|e| e.psk.is_some())?;
        self.sealer.open(id, &entry.record.sealed_secret).ok()
    }

    /// Take in records where they win over what this keyring holds (last
    /// writer wins), deciding and inserting under one lock, so two merges of
    /// one key at once cannot leave the older behind.
    pub fn offer(&self, records: &[KeyRecord]) {
        let mut keys = self.keys.write().expect("keyring poisoned");
        for record in records {
            if keys
                .get(&record.id)
                .is_some_and(|held| !record.supersedes(&held.record))
            {
                continue;
            }
            let psk = if record.removed {
                None
            } else {
                match self.sealer.open(&record.id, &record.sealed_secret) {
                    Ok(secret) => Some(secret.client_psk()),
                    Err(error) => {
                        tracing::error!(key = %record.id, %error, "an access key's secret does not open; the key cannot be used");
                        None
                    }
                }
            };
            let last_used_ms = keys.get(&record.id).and_then(|e| e.last_used_ms);
            keys.insert(
                record.id,
                Entry {
                    record: record.clone(),
                    psk,
                    last_used_ms,
                },
            );
        }
    }

    /// The permission of a key that may be used now (`None`: unknown or
    /// removed).
    pub fn permission(&self, id: &AccessKeyId) -> Option<Permission> {
        let keys = self.keys.read().expect("keyring poisoned");
        keys.get(id)
            .filter(|e| e.psk.is_some())
            .map(|e| e.record.permission.clone())
    }

    /// The record of a key, removed or not.
    pub fn record(&self, id: &AccessKeyId) -> Option<KeyRecord> {
        let keys = self.keys.read().expect("keyring poisoned");
        keys.get(id).map(|e| e.record.clone())
    }

    pub fn note_used(&self, id: &AccessKeyId, now_ms: u64) {
        let mut keys = self.keys.write().expect("keyring poisoned");
        if let Some(entry) = keys.get_mut(id) {
            entry.last_used_ms = Some(now_ms);
        }
    }

    /// Every record, removed ones included, by id.
    pub fn records(&self) -> Vec<KeyRecord> {
        let keys = self.keys.read().expect("keyring poisoned");
        keys.values().map(|e| e.record.clone()).collect()
    }

    /// The keys not removed, as `key ls` shows them.
    pub fn list(&self) -> Vec<KeyInfo> {
        let keys = self.keys.read().expect("keyring poisoned");
        keys.values()
            .filter(|e| !e.record.removed)
            .map(|e| info(&e.record, e.last_used_ms))
            .collect()
    }

    pub fn info(&self, id: &AccessKeyId) -> Option<KeyInfo> {
        let keys = self.keys.read().expect("keyring poisoned");
        keys.get(id).map(|e| info(&e.record, e.last_used_ms))
    }

    /// Whether `id` is the only key in use with admin access (removing or
    /// downgrading it would leave nobody able to manage keys).
    pub fn is_last_admin(&self, id: &AccessKeyId) -> bool {
        let keys = self.keys.read().expect("keyring poisoned");
        let admins: Vec<&AccessKeyId> = keys
            .iter()
            .filter(|(_, e)| !e.record.removed && e.record.permission.is_admin())
            .map(|(id, _)| id)
            .collect();
        admins == [id]
    }

    /// Keys ever created (removed ones stay as tombstones) and keys in use.
    pub fn counts(&self) -> (usize, usize) {
        let keys = self.keys.read().expect("keyring poisoned");
        let live = keys.values().filter(|e| !e.record.removed).count();
        (keys.len(), live)
    }

    /// A digest of every record (anti-entropy compares it first).
    pub fn digest(&self) -> [u8; 32] {
        let keys = self.keys.read().expect("keyring poisoned");
        let mut hasher = Sha256::new();
        for entry in keys.values() {
            let bytes = entry.record.encode();
            hasher.update((bytes.len() as u64).to_be_bytes());
            hasher.update(&bytes);
        }
        hasher.finalize().into()
    }
}

fn info(record: &KeyRecord, last_used_ms: Option<u64>) -> KeyInfo {
    KeyInfo {
        id: record.id,
        name: record.name.clone(),
        permission: record.permission.clone(),
        created_ms: record.created_ms,
        last_used_ms,
    }
}

impl Authority for Keyring {
    fn node_psk(&self) -> [u8; KEY_BYTES] {
        self.node_psk
    }

    fn client_psk(&self, id: &AccessKeyId) -> Result<[u8; KEY_BYTES], String> {
        let keys = self.keys.read().expect("keyring poisoned");
        match keys.get(id) {
            Some(Entry { psk: Some(psk), .. }) => Ok(*psk),
            Some(entry) if entry.record.removed => Err(format!("access key {id} was removed")),
            Some(_) => Err(format!(
                "access key {id} cannot be used on this node (see its log)"
            )),
            None => Err(format!(
                "unknown access key {id} (if it was just created, try again in a few seconds)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::tokio_env;
    use crate::keys::NodeId;
    use crate::keys::access::SecretKey;
    use crate::meta::VersionId;

    fn record(keyring: &Keyring, version_ms: u64, removed: bool) -> KeyRecord {
        let env = tokio_env();
        let id = AccessKeyId::parse("DFSABCDEFGHIJKLMNOPQ").unwrap();
        let secret = SecretKey::parse(&"k".repeat(40)).unwrap();
        KeyRecord {
            id,
            name: "ci".into(),
            permission: Permission::admin(),
            sealed_secret: if removed {
                Vec::new()
            } else {
                keyring.sealer().seal(&env, &id, &secret)
            },
            created_ms: 1,
            version: VersionId {
                wall_ms: version_ms,
                counter: 0,
                node: NodeId([1; 32]),
            },
            removed,
        }
    }

    /// A late, older record (a push of a change overtaken by a removal)
    /// never brings a removed key back, in either order.
    #[test]
    fn the_newest_record_wins_whatever_order_they_arrive_in() {
        let keyring = Keyring::new(&ClusterKey::from_bytes([4; 32]));
        let (changed, removed) = (record(&keyring, 15, false), record(&keyring, 20, true));
        let id = changed.id;
        keyring.offer(std::slice::from_ref(&removed));
        keyring.offer(std::slice::from_ref(&changed));
        assert!(keyring.permission(&id).is_none());
        assert!(keyring.client_psk(&id).unwrap_err().contains("removed"));
        let other = Keyring::new(&ClusterKey::from_bytes([4; 32]));
        other.offer(&[changed.clone(), removed.clone()]);
        assert!(other.permission(&id).is_none());
        assert_eq!(keyring.digest(), other.digest());
        // Equal versions: the removal wins.
        let tie = Keyring::new(&ClusterKey::from_bytes([4; 32]));
        let live_at_20 = record(&tie, 20, false);
        tie.offer(&[removed, live_at_20]);
        assert!(tie.permission(&id).is_none());
    }
}
