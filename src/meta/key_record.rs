//! Access keys as cluster state: one [`KeyRecord`] per key, replicated to
//! every node and merged last-writer-wins by version (a CRDT register per
//! key id), so nodes that saw the same records agree exactly. A removed key
//! stays as a tombstone without its secret, so a removal is never undone by
//! an older copy arriving late.

use serde::{Deserialize, Serialize};

use super::VersionId;
use crate::keys::access::{AccessKeyId, Permission, validate_key_name};

/// Largest sealed secret (nonce, 40 characters, tag).
const SEALED_SECRET_BYTES_MAX: usize = 128;

/// One access key as the cluster keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct KeyRecord {
    pub id: AccessKeyId,
    /// A label for people.
    pub name: String,
    pub permission: Permission,
    /// The secret, sealed under a key derived from the cluster key
    /// ([`SecretSealer`](crate::keys::SecretSealer)); empty once removed.
    #[serde(with = "serde_bytes")]
    pub sealed_secret: Vec<u8>,
    /// Unix ms of the key's creation.
    pub created_ms: u64,
    /// Last writer wins: every change (permission, removal) takes a new,
    /// greater version from the changing node's clock.
    pub version: VersionId,
    pub removed: bool,
}

impl KeyRecord {
    /// Whether `self` wins over `other` (a record of the same key). Equal
    /// versions come from one clock reading, so they are one change; should
    /// two differ anyway (a bug), a removal wins, then the greater encoding,
    /// everywhere alike.
    pub fn supersedes(&self, other: &KeyRecord) -> bool {
        match self.version.cmp(&other.version) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Equal => {
                (self.removed, self.encode()) > (other.removed, other.encode())
            }
        }
    }

    /// Shape checks for a record from a peer or from disk.
    pub fn validate(&self) -> Result<(), String> {
        if !self.id.is_well_formed() {
            return Err("malformed key id".into());
        }
        validate_key_name(&self.name).map_err(|e| e.to_string())?;
        self.permission.validate().map_err(|e| e.to_string())?;
        if self.sealed_secret.len() > SEALED_SECRET_BYTES_MAX
            || self.removed != self.sealed_secret.is_empty()
        {
            return Err(format!("key {}: malformed sealed secret", self.id));
        }
        Ok(())
    }

    /// The record's bytes as the index stores them: a format byte, then
    /// postcard. The format byte lets a later layout be told apart.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = vec![KEY_RECORD_FORMAT];
        bytes.extend(postcard::to_stdvec(self).expect("a key record always serializes"));
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        match bytes.split_first() {
            Some((&KEY_RECORD_FORMAT, rest)) => {
                let record: KeyRecord = crate::wire::decode_canonical(rest)?;
                record.validate()?;
                Ok(record)
            }
            Some((format, _)) => Err(format!("unknown key record format {format}")),
            None => Err("empty key record".into()),
        }
    }

    /// The tombstone that removes this key at `version`.
    pub fn removal(&self, version: VersionId) -> KeyRecord {
        KeyRecord {
            sealed_secret: Vec::new(),
            removed: true,
            version,
            ..self.clone()
        }
    }
}

/// Format byte of [`KeyRecord::encode`].
pub const KEY_RECORD_FORMAT: u8 = 1;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::NodeId;
    use crate::keys::access::Access;

    pub(crate) fn sample(version_ms: u64) -> KeyRecord {
        KeyRecord {
            id: AccessKeyId::parse("DFSABCDEFGHIJKLMNOPQ").unwrap(),
            name: "ci".into(),
            permission: Permission {
                access: Access::ReadOnly,
                prefixes: vec!["team/".into()],
            },
            sealed_secret: vec![7; 68],
            created_ms: 1_790_000_000_000,
            version: VersionId {
                wall_ms: version_ms,
                counter: 0,
                node: NodeId([1; 32]),
            },
            removed: false,
        }
    }

    #[test]
    fn the_later_change_wins_and_a_removal_is_a_tombstone_without_secret() {
        let created = sample(100);
        let removed = created.removal(VersionId {
            wall_ms: 200,
            ..created.version
        });
        assert!(removed.supersedes(&created) && !created.supersedes(&removed));
        assert!(removed.sealed_secret.is_empty() && removed.removed);
        assert!(removed.validate().is_ok());
        assert!(!created.supersedes(&created));
    }

    #[test]
    fn records_round_trip_and_bad_bytes_are_refused() {
        let record = sample(100);
        assert_eq!(KeyRecord::decode(&record.encode()), Ok(record.clone()));
        assert!(KeyRecord::decode(&[]).is_err());
        assert!(
            KeyRecord::decode(&[9, 1, 2])
                .unwrap_err()
                .contains("format 9")
        );
        let mut removed_with_secret = record.clone();
        removed_with_secret.removed = true;
        assert!(removed_with_secret.validate().is_err());
    }

    /// The stored layout is a promise to every data dir written so far.
    #[test]
    fn stored_bytes_are_stable() {
        insta::assert_snapshot!(hex::encode(sample(100).encode()));
    }
}
