use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::cas::ContentId;
use crate::keys::{AccessKeyId, NodeId};
use crate::limits::NAME_BYTES_MAX;

/// A version's id: a hybrid logical clock reading plus the node that took it.
/// Field order is the total order: wall time, then counter, then node.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct VersionId {
    pub wall_ms: u64,
    pub counter: u32,
    pub node: NodeId,
}

/// Bytes of [`VersionId::to_key`].
pub const VERSION_KEY_BYTES: usize = 8 + 4 + 32;

impl VersionId {
    /// The least version id (a range bound).
    pub const MIN: VersionId = VersionId {
        wall_ms: 0,
        counter: 0,
        node: NodeId([0; 32]),
    };

    /// Big-endian bytes whose lexicographic order is the id order.
    pub fn to_key(&self) -> [u8; VERSION_KEY_BYTES] {
        let mut key = [0u8; VERSION_KEY_BYTES];
        key[..8].copy_from_slice(&self.wall_ms.to_be_bytes());
        key[8..12].copy_from_slice(&self.counter.to_be_bytes());
        key[12..].copy_from_slice(&self.node.0);
        key
    }

    pub fn from_key(key: &[u8]) -> Option<Self> {
        if key.len() != VERSION_KEY_BYTES {
            return None;
        }
        Some(Self {
            wall_ms: u64::from_be_bytes(key[..8].try_into().ok()?),
            counter: u32::from_be_bytes(key[8..12].try_into().ok()?),
            node: NodeId(key[12..].try_into().ok()?),
        })
    }
}

/// Shown as `<wall_ms>-<counter>-<first 8 bytes of the node id in hex>`; the
/// same text selects the version in `get --version`.
impl fmt::Display for VersionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.wall_ms, self.counter, self.node.short())
    }
}

impl fmt::Debug for VersionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{self}")
    }
}

/// A version as a user names it: the text form of a [`VersionId`], whose
/// node part may be any prefix of the node id's hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct VersionSelector {
    pub wall_ms: u64,
    pub counter: u32,
    pub node_prefix: String,
}

impl VersionSelector {
    pub fn matches(&self, vid: &VersionId) -> bool {
        vid.wall_ms == self.wall_ms
            && vid.counter == self.counter
            && vid.node.to_hex().starts_with(&self.node_prefix)
    }
}

impl fmt::Display for VersionSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.wall_ms, self.counter, self.node_prefix)
    }
}

impl VersionSelector {
    /// The one version id this selector names, when it gives the node in
    /// full (not a prefix).
    pub fn exact(&self) -> Option<VersionId> {
        let mut node = [0u8; 32];
        hex::decode_to_slice(&self.node_prefix, &mut node).ok()?;
        Some(VersionId {
            wall_ms: self.wall_ms,
            counter: self.counter,
            node: NodeId(node),
        })
    }
}

impl FromStr for VersionSelector {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "{text:?} is not a version id (expected WALLMS-COUNTER-NODE, as `versions` prints)"
            )
        };
        let mut parts = text.splitn(3, '-');
        let wall_ms = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let counter = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let node_prefix = parts.next().ok_or_else(bad)?.to_ascii_lowercase();
        if node_prefix.is_empty()
            || node_prefix.len() > 64
            || !node_prefix.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(bad());
        }
        Ok(Self {
            wall_ms,
            counter,
            node_prefix,
        })
    }
}

/// One version of a name. `content: None` is a tombstone (the name was
/// removed at this version; S3 calls it a delete marker). The node that
/// created it is `vid.node`; the access key that asked for it is `by`
/// (`None` for versions written before access keys existed).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct VersionRecord {
    pub name: String,
    pub vid: VersionId,
    /// This version was deleted for good (S3's DeleteObject with a version
    /// id): the record is a stub that keeps only its key, so that the
    /// version never comes back from a node that missed the deletion. It
    /// sorts after the record it replaces (this field comes right after
    /// the key), so every merge keeps the stub: a grow-only set of
    /// forgotten keys inside the same CRDT. Readers never see stubs.
    pub forgotten: bool,
    pub content: Option<ContentId>,
    pub size: u64,
    pub by: Option<AccessKeyId>,
    /// The MD5 the content was put with (S3's ETag); `None` for versions
    /// put without one (the native protocol, and records before format 3).
    /// Kept in the record because a listing shows it for every name.
    pub etag: Option<Etag>,
    /// Written while its bucket was not versioning: S3's "null" version,
    /// which the next such write replaces.
    pub null_version: bool,
}

/// An S3 entity tag: the MD5 of the body, or for a multipart upload the
/// MD5 of its parts' MD5s and the number of parts (shown `"hex-N"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Etag {
    pub md5: [u8; 16],
    /// 0 for a single-part object.
    pub parts: u32,
}

impl fmt::Display for Etag {
    /// The form S3 shows (without the quotes HTTP adds).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", hex::encode(self.md5))?;
        if self.parts > 0 {
            write!(f, "-{}", self.parts)?;
        }
        Ok(())
    }
}

/// The format byte in front of every record the index stores. Format 3
/// added `forgotten`, `etag` and `null_version`; format 2 records (access
/// keys, before S3) are still read, as written, and never rewritten.
pub const RECORD_FORMAT: u8 = 3;

impl VersionRecord {
    /// The bytes the index stores: [`RECORD_FORMAT`], then postcard.
    pub fn encode_stored(&self) -> Vec<u8> {
        let mut bytes = vec![RECORD_FORMAT];
        bytes.extend(postcard::to_stdvec(self).expect("a record always serializes"));
        bytes
    }

    /// The inverse of [`VersionRecord::encode_stored`] (and of format 2),
    /// refusing other formats and trailing bytes.
    pub fn decode_stored(bytes: &[u8]) -> Result<Self, String> {
        match bytes.split_first() {
            Some((&RECORD_FORMAT, rest)) => crate::wire::decode_canonical(rest),
            Some((2, rest)) => crate::wire::decode_canonical::<RecordV2>(rest).map(Self::from),
            Some((format, _)) => Err(format!("unknown record format {format}")),
            None => Err("an empty record".into()),
        }
    }
}

/// A record as format 2 stored it (before S3: no `etag`, no `null_version`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct RecordV2 {
    name: String,
    vid: VersionId,
    content: Option<ContentId>,
    size: u64,
    by: Option<AccessKeyId>,
}

impl From<RecordV2> for VersionRecord {
    fn from(old: RecordV2) -> Self {
        VersionRecord {
            name: old.name,
            vid: old.vid,
            forgotten: false,
            content: old.content,
            size: old.size,
            by: old.by,
            etag: None,
            null_version: false,
        }
    }
}

/// A record as the index stored it before access keys (format 1: postcard,
/// no format byte, no `by`); read once, when an index is migrated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct LegacyRecord {
    pub name: String,
    pub vid: VersionId,
    pub content: Option<ContentId>,
    pub size: u64,
}

impl From<LegacyRecord> for VersionRecord {
    fn from(old: LegacyRecord) -> Self {
        VersionRecord {
            name: old.name,
            vid: old.vid,
            forgotten: false,
            content: old.content,
            size: old.size,
            by: None,
            etag: None,
            null_version: false,
        }
    }
}

impl VersionRecord {
    pub fn is_tombstone(&self) -> bool {
        self.content.is_none()
    }
}

/// What identifies a record: its name and version id, and whether it is
/// forgotten (so that anti-entropy, which compares keys, tells a stub from
/// the record it replaced).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct RecordKey {
    pub name: String,
    pub vid: VersionId,
    pub forgotten: bool,
}

impl VersionRecord {
    pub fn key(&self) -> RecordKey {
        RecordKey {
            name: self.name.clone(),
            vid: self.vid,
            forgotten: self.forgotten,
        }
    }

    /// The stub that deletes version `vid` of `name` for good, wherever it
    /// reaches (see [`VersionRecord::forgotten`]). One per key: every
    /// node that forgets a version writes the same bytes.
    pub fn forgetting(name: &str, vid: VersionId) -> VersionRecord {
        VersionRecord {
            name: name.to_string(),
            vid,
            forgotten: true,
            content: None,
            size: 0,
            by: None,
            etag: None,
            null_version: false,
        }
    }
}

/// A name's prune floor: its versions below `floor` are forgotten.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Floor {
    pub name: String,
    pub floor: VersionId,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("a file name cannot be empty")]
    Empty,
    #[error("file name is {0} bytes; the limit is {NAME_BYTES_MAX}")]
    TooLong(usize),
    #[error("file name contains a control character (such as NUL or newline)")]
    ControlCharacter,
}

/// Names are UTF-8 (guaranteed by `String`), 1 to `NAME_BYTES_MAX` (1088) bytes, without
/// control characters. NUL in particular is excluded because the index key
/// is `name ‖ 0x00 ‖ version`.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > NAME_BYTES_MAX {
        return Err(NameError::TooLong(name.len()));
    }
    if name.chars().any(char::is_control) {
        return Err(NameError::ControlCharacter);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_order_is_id_order_and_round_trips() {
        let a = VersionId {
            wall_ms: 1,
            counter: 9,
            node: NodeId([9; 32]),
        };
        let b = VersionId {
            wall_ms: 2,
            counter: 0,
            node: NodeId([0; 32]),
        };
        assert!(a < b && a.to_key() < b.to_key());
        assert_eq!(VersionId::from_key(&a.to_key()), Some(a));
    }

    #[test]
    fn selector_parses_what_display_prints() {
        let vid = VersionId {
            wall_ms: 1_700_000_000_123,
            counter: 4,
            node: NodeId([0xab; 32]),
        };
        let selector: VersionSelector = vid.to_string().parse().unwrap();
        assert!(selector.matches(&vid));
        assert!("12-x-ab".parse::<VersionSelector>().is_err());
        assert!("12-1-".parse::<VersionSelector>().is_err());
        assert!("12-1-zz".parse::<VersionSelector>().is_err());
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_name("reports/2026/q3.pdf").is_ok());
        assert_eq!(validate_name(""), Err(NameError::Empty));
        assert_eq!(validate_name("a\0b"), Err(NameError::ControlCharacter));
        assert!(matches!(
            validate_name(&"x".repeat(2000)),
            Err(NameError::TooLong(2000))
        ));
    }

    fn sample() -> VersionRecord {
        VersionRecord {
            name: "reports/q3.pdf".into(),
            vid: VersionId {
                wall_ms: 1_790_000_000_123,
                counter: 4,
                node: NodeId([0xab; 32]),
            },
            forgotten: false,
            content: Some(ContentId([0x5c; 32])),
            size: 123_456,
            by: Some(AccessKeyId::parse("DFSABCDEFGHIJKLMNOPQ").unwrap()),
            etag: Some(Etag {
                md5: [0x9e; 16],
                parts: 0,
            }),
            null_version: true,
        }
    }

    /// Records written by format 2 (before S3) still read, as they were.
    #[test]
    fn format_2_records_still_read() {
        let stored = hex::decode("020e7265706f7274732f71332e706466fbd8c1a28c3404abababababababababababababababababababababababababababababababab015c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5cc0c407014446534142434445464748494a4b4c4d4e4f5051").unwrap();
        let record = VersionRecord::decode_stored(&stored).unwrap();
        assert_eq!(
            record,
            VersionRecord {
                etag: None,
                null_version: false,
                ..sample()
            }
        );
    }

    #[test]
    fn etags_show_as_s3_does() {
        let single = Etag {
            md5: [0xab; 16],
            parts: 0,
        };
        assert_eq!(single.to_string(), "ab".repeat(16));
        let multipart = Etag { parts: 3, ..single };
        assert_eq!(multipart.to_string(), format!("{}-3", "ab".repeat(16)));
    }

    /// The stored layout is a promise to every data dir written so far.
    #[test]
    fn stored_record_bytes_are_stable() {
        insta::assert_snapshot!(hex::encode(sample().encode_stored()));
    }

    #[test]
    fn stored_records_round_trip_and_other_formats_are_refused() {
        let record = sample();
        let bytes = record.encode_stored();
        assert_eq!(VersionRecord::decode_stored(&bytes), Ok(record));
        assert!(VersionRecord::decode_stored(&[]).is_err());
        let mut other = bytes.clone();
        other[0] = 9;
        assert!(
            VersionRecord::decode_stored(&other)
                .unwrap_err()
                .contains("format 9")
        );
        let mut trailing = bytes;
        trailing.push(0);
        assert!(VersionRecord::decode_stored(&trailing).is_err());
    }
}
