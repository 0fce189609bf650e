use serde::{Deserialize, Serialize};

use super::{ChunkId, ContentId};
use crate::limits::{CHUNK_MAX_BYTES, MANIFEST_BYTES_MAX, MANIFEST_CHUNKS_MAX};

/// One chunk of a file, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct ChunkRef {
    pub id: ChunkId,
    pub len: u32,
}

/// A file's content: its size and its chunks in order. Encoded with postcard;
/// the SHA-256 of the encoding is the file's [`ContentId`].
///
/// Format: this layout is format 1, and it has no format byte: one would
/// change every content id already stored. The version marker of later
/// formats is reserved instead: a format-1 manifest that starts with a
/// zero byte (size 0) is exactly `[0, 0]` (no chunks), so `0 ‖ f` with
/// `f >= 1` can never be one; a later format starts `0 ‖ f ‖ ...`, and this
/// build refuses it by name ([`ManifestError::NewerFormat`]).
///
/// Format 2 (`0 ‖ 2 ‖ postcard`) adds [`Attributes`]: what a version was put
/// with beside its bytes (an S3 object's Content-Type and `x-amz-meta-*`).
/// A manifest without attributes is still written as format 1, so a file's
/// content id does not change with the protocol it was put through.
///
/// Format 3 (`0 ‖ 3 ‖ postcard`) adds [`Manifest::parts`], the shape of an
/// S3 multipart upload (read back part by part: GetObject's `partNumber`),
/// and is written only for those.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Manifest {
    pub size: u64,
    pub chunks: Vec<ChunkRef>,
    pub attributes: Attributes,
    /// How many of `chunks` each part of a multipart upload holds, in
    /// order (a part never shares a chunk); empty when not one.
    pub parts: Vec<u32>,
}

/// Named values kept with a version's content, sorted by name, each name
/// once (so that equal attributes encode, and address, alike).
pub type Attributes = Vec<(String, String)>;

/// Most attributes a manifest keeps, and their total bytes (S3 allows 2 KiB
/// of user metadata; the standard headers come on top).
pub const ATTRIBUTES_MAX: usize = 64;
pub const ATTRIBUTE_BYTES_MAX: usize = 8192;

/// Format 1's layout.
#[derive(Serialize, Deserialize)]
struct ManifestV1 {
    size: u64,
    chunks: Vec<ChunkRef>,
}

/// Format 2's layout (after the `0 ‖ 2` marker).
#[derive(Serialize, Deserialize)]
struct ManifestV2 {
    size: u64,
    chunks: Vec<ChunkRef>,
    attributes: Attributes,
}

/// Format 3's layout (after the `0 ‖ 3` marker).
#[derive(Serialize, Deserialize)]
struct ManifestV3 {
    size: u64,
    chunks: Vec<ChunkRef>,
    attributes: Attributes,
    parts: Vec<u32>,
}

/// The first two bytes of a format-2 manifest.
const FORMAT_2_MARKER: [u8; 2] = [0, 2];

/// The first two bytes of a format-3 manifest.
const FORMAT_3_MARKER: [u8; 2] = [0, 3];

/// Most parts a multipart upload has (S3's limit).
pub const PARTS_MAX: usize = 10_000;

/// Whether `attributes` are sorted, unique, within the bounds, and free of
/// control characters (they become HTTP headers).
pub fn check_attributes(attributes: &Attributes) -> Result<(), ManifestError> {
    if attributes.len() > ATTRIBUTES_MAX {
        return Err(ManifestError::Attributes("too many"));
    }
    let bytes: usize = attributes.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > ATTRIBUTE_BYTES_MAX {
        return Err(ManifestError::Attributes("too large"));
    }
    if attributes.windows(2).any(|pair| pair[0].0 >= pair[1].0) {
        return Err(ManifestError::Attributes(
            "not sorted by name, or a name twice",
        ));
    }
    let clean = |text: &str| !text.chars().any(char::is_control);
    if attributes
        .iter()
        .any(|(k, v)| k.is_empty() || !clean(k) || !clean(v))
    {
        return Err(ManifestError::Attributes(
            "an empty name or a control character",
        ));
    }
    Ok(())
}

/// Whether `manifest`'s parts are at most [`PARTS_MAX`] and cover its
/// chunks exactly.
pub fn check_parts(manifest: &Manifest) -> Result<(), ManifestError> {
    if manifest.parts.len() > PARTS_MAX {
        return Err(ManifestError::Parts("too many"));
    }
    let covered: u64 = manifest.parts.iter().map(|&n| u64::from(n)).sum();
    if !manifest.parts.is_empty() && covered != manifest.chunks.len() as u64 {
        return Err(ManifestError::Parts("they do not hold the chunks exactly"));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is {0} bytes, above the {MANIFEST_BYTES_MAX}-byte limit")]
    TooLarge(usize),
    #[error("manifest bytes do not decode: {0}")]
    Undecodable(String),
    #[error("manifest is inconsistent: {0}")]
    Inconsistent(&'static str),
    #[error("file has more than {MANIFEST_CHUNKS_MAX} chunks (the largest file dfs stores)")]
    TooManyChunks,
    #[error("manifest format {0} is newer than this build reads")]
    NewerFormat(u8),
    #[error("manifest attributes are invalid: {0}")]
    Attributes(&'static str),
    #[error("manifest parts are invalid: {0}")]
    Parts(&'static str),
}

impl Manifest {
    /// Append a chunk; fails past the chunk-count limit.
    pub fn push(&mut self, id: ChunkId, len: usize) -> Result<(), ManifestError> {
        if self.chunks.len() >= MANIFEST_CHUNKS_MAX {
            return Err(ManifestError::TooManyChunks);
        }
        assert!(
            len > 0 && len <= CHUNK_MAX_BYTES,
            "chunker produced a {len}-byte chunk"
        );
        self.chunks.push(ChunkRef {
            id,
            len: len as u32,
        });
        self.size += len as u64;
        Ok(())
    }

    pub fn encode(&self) -> Vec<u8> {
        if !self.parts.is_empty() {
            let mut bytes = FORMAT_3_MARKER.to_vec();
            postcard::to_io(
                &ManifestV3 {
                    size: self.size,
                    chunks: self.chunks.clone(),
                    attributes: self.attributes.clone(),
                    parts: self.parts.clone(),
                },
                &mut bytes,
            )
            .expect("a manifest always serializes");
            return bytes;
        }
        if self.attributes.is_empty() {
            return postcard::to_stdvec(&ManifestV1 {
                size: self.size,
                chunks: self.chunks.clone(),
            })
            .expect("a manifest always serializes");
        }
        let mut bytes = FORMAT_2_MARKER.to_vec();
        postcard::to_io(
            &ManifestV2 {
                size: self.size,
                chunks: self.chunks.clone(),
                attributes: self.attributes.clone(),
            },
            &mut bytes,
        )
        .expect("a manifest always serializes");
        bytes
    }

    /// The value of attribute `name`.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .binary_search_by(|(k, _)| k.as_str().cmp(name))
            .ok()
            .map(|at| self.attributes[at].1.as_str())
    }

    /// The bytes of part `number` (from 1) of a multipart upload.
    pub fn part_range(&self, number: usize) -> Option<std::ops::Range<u64>> {
        let index = number.checked_sub(1)?;
        let _ = self.parts.get(index)?;
        let first: usize = self.parts[..index].iter().map(|&n| n as usize).sum();
        let count = self.parts[index] as usize;
        let offset =
            |upto: usize| -> u64 { self.chunks[..upto].iter().map(|c| u64::from(c.len)).sum() };
        Some(offset(first)..offset(first + count))
    }

    pub fn content_id(&self) -> ContentId {
        ContentId::of(&self.encode())
    }

    /// Decode and check a manifest: bounded size and count, no empty or
    /// oversize chunk, sizes that add up, and no trailing bytes (so that a
    /// manifest has exactly one encoding and one content id).
    pub fn decode(bytes: &[u8]) -> Result<Self, ManifestError> {
        if bytes.len() > MANIFEST_BYTES_MAX {
            return Err(ManifestError::TooLarge(bytes.len()));
        }
        let manifest = match bytes {
            [0, 3, rest @ ..] => {
                let v3: ManifestV3 = decode_exactly(rest)?;
                if v3.parts.is_empty() {
                    // Formats 1 and 2 spell this manifest.
                    return Err(ManifestError::Inconsistent("format 3 without parts"));
                }
                if !v3.attributes.is_empty() {
                    check_attributes(&v3.attributes)?;
                }
                Manifest {
                    size: v3.size,
                    chunks: v3.chunks,
                    attributes: v3.attributes,
                    parts: v3.parts,
                }
            }
            [0, 2, rest @ ..] => {
                let v2: ManifestV2 = decode_exactly(rest)?;
                if v2.attributes.is_empty() {
                    // Format 1 spells this manifest: one encoding each.
                    return Err(ManifestError::Inconsistent("format 2 without attributes"));
                }
                check_attributes(&v2.attributes)?;
                Manifest {
                    size: v2.size,
                    chunks: v2.chunks,
                    attributes: v2.attributes,
                    parts: Vec::new(),
                }
            }
            [0, format, ..] if *format >= 1 => return Err(ManifestError::NewerFormat(*format)),
            _ => {
                let v1: ManifestV1 = decode_exactly(bytes)?;
                Manifest {
                    size: v1.size,
                    chunks: v1.chunks,
                    attributes: Attributes::new(),
                    parts: Vec::new(),
                }
            }
        };
        if manifest.chunks.len() > MANIFEST_CHUNKS_MAX {
            return Err(ManifestError::TooManyChunks);
        }
        let mut total: u64 = 0;
        for chunk in &manifest.chunks {
            if chunk.len == 0 || chunk.len as usize > CHUNK_MAX_BYTES {
                return Err(ManifestError::Inconsistent(
                    "a chunk length is zero or above the maximum",
                ));
            }
            total += u64::from(chunk.len);
        }
        if total != manifest.size {
            return Err(ManifestError::Inconsistent(
                "chunk lengths do not add up to the size",
            ));
        }
        check_parts(&manifest)?;
        Ok(manifest)
    }
}

/// Decode `bytes` as exactly one `T`: no trailing bytes, and no overlong
/// varint (the only second spelling postcard accepts; refusing it keeps one
/// encoding per manifest, see wire::codec).
fn decode_exactly<T: Serialize + serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Result<T, ManifestError> {
    let (value, rest): (T, _) =
        postcard::take_from_bytes(bytes).map_err(|e| ManifestError::Undecodable(e.to_string()))?;
    if !rest.is_empty() {
        return Err(ManifestError::Inconsistent(
            "trailing bytes after the manifest",
        ));
    }
    let canonical = postcard::serialize_with_flavor(&value, postcard::ser_flavors::Size::default())
        .map_err(|e| ManifestError::Undecodable(e.to_string()))?;
    if canonical != bytes.len() {
        return Err(ManifestError::Inconsistent("overlong integer encoding"));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The encoding is a promise to every content id stored so far.
    #[test]
    fn manifest_bytes_are_stable() {
        let mut manifest = Manifest::default();
        manifest.push(ChunkId([0x11; 32]), 1 << 20).unwrap();
        manifest.push(ChunkId([0x22; 32]), 12_345).unwrap();
        insta::assert_snapshot!(hex::encode(manifest.encode()));
        assert_eq!(
            Manifest::decode(&Manifest::default().encode()),
            Ok(Manifest::default())
        );
        assert_eq!(
            Manifest::decode(&[0, 4, 0xAA]),
            Err(ManifestError::NewerFormat(4))
        );
    }

    /// Attributes make a format-2 manifest, which round-trips; without
    /// them the bytes (and the content id) are format 1's.
    #[test]
    fn attributes_are_kept_in_format_2_only() {
        let mut plain = Manifest::default();
        plain.push(ChunkId([0x11; 32]), 100).unwrap();
        let mut typed = plain.clone();
        typed.attributes = vec![
            ("content-type".into(), "text/plain".into()),
            ("x-amz-meta-owner".into(), "Zoë".into()),
        ];
        let bytes = typed.encode();
        assert_eq!(bytes[..2], [0, 2]);
        insta::assert_snapshot!(hex::encode(&bytes));
        assert_eq!(Manifest::decode(&bytes), Ok(typed.clone()));
        assert_eq!(typed.attribute("content-type"), Some("text/plain"));
        assert_ne!(plain.content_id(), typed.content_id());
        assert_ne!(plain.encode()[..2], [0, 2]);
        // One spelling each: format 2 without attributes, and unsorted
        // attributes, are refused.
        let mut empty_v2 = vec![0, 2];
        postcard::to_io(
            &ManifestV2 {
                size: 100,
                chunks: plain.chunks.clone(),
                attributes: Vec::new(),
            },
            &mut empty_v2,
        )
        .unwrap();
        assert!(Manifest::decode(&empty_v2).is_err());
        typed.attributes.reverse();
        assert!(matches!(
            Manifest::decode(&typed.encode()),
            Err(ManifestError::Attributes(_))
        ));
    }

    /// Parts make a format-3 manifest; each part's bytes are its chunks'.
    #[test]
    fn parts_are_kept_in_format_3_only() {
        let mut manifest = Manifest::default();
        for (byte, len) in [(1u8, 100), (2, 50), (3, 7)] {
            manifest.push(ChunkId([byte; 32]), len).unwrap();
        }
        let plain = manifest.clone();
        manifest.parts = vec![2, 0, 1];
        let bytes = manifest.encode();
        assert_eq!(bytes[..2], [0, 3]);
        insta::assert_snapshot!(hex::encode(&bytes));
        assert_eq!(Manifest::decode(&bytes), Ok(manifest.clone()));
        assert_ne!(plain.content_id(), manifest.content_id());
        assert_eq!(manifest.part_range(1), Some(0..150));
        assert_eq!(manifest.part_range(2), Some(150..150));
        assert_eq!(manifest.part_range(3), Some(150..157));
        assert_eq!(manifest.part_range(0), None);
        assert_eq!(manifest.part_range(4), None);
        assert_eq!(plain.part_range(1), None);
        // Parts must hold the chunks exactly; format 3 needs parts.
        let mut short = manifest.clone();
        short.parts = vec![2];
        assert!(matches!(
            Manifest::decode(&short.encode()),
            Err(ManifestError::Parts(_))
        ));
        let mut empty_v3 = vec![0, 3];
        postcard::to_io(
            &ManifestV3 {
                size: 157,
                chunks: plain.chunks.clone(),
                attributes: Vec::new(),
                parts: Vec::new(),
            },
            &mut empty_v3,
        )
        .unwrap();
        assert!(Manifest::decode(&empty_v3).is_err());
    }

    fn arbitrary_manifest() -> impl Strategy<Value = Manifest> {
        prop::collection::vec((any::<[u8; 32]>(), 1u32..=CHUNK_MAX_BYTES as u32), 0..64).prop_map(
            |chunks| {
                let mut manifest = Manifest::default();
                for (id, len) in chunks {
                    manifest.push(ChunkId(id), len as usize).unwrap();
                }
                manifest
            },
        )
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(manifest in arbitrary_manifest()) {
            let bytes = manifest.encode();
            prop_assert_eq!(Manifest::decode(&bytes).unwrap(), manifest.clone());
            prop_assert_eq!(ContentId::of(&bytes), manifest.content_id());
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = Manifest::decode(&bytes);
        }
    }

    #[test]
    fn rejects_inconsistent_sizes_and_trailing_bytes() {
        let mut manifest = Manifest::default();
        manifest.push(ChunkId([1; 32]), 10).unwrap();
        let mut lying = manifest.clone();
        lying.size = 11;
        assert!(matches!(
            Manifest::decode(&lying.encode()),
            Err(ManifestError::Inconsistent(_))
        ));
        let mut trailing = manifest.encode();
        trailing.push(0);
        assert!(matches!(
            Manifest::decode(&trailing),
            Err(ManifestError::Inconsistent(_))
        ));
    }

    #[test]
    fn empty_file_has_a_stable_content_id() {
        assert_eq!(Manifest::default().encode(), vec![0, 0]);
        assert_eq!(Manifest::decode(&[0, 0]).unwrap(), Manifest::default());
    }
}
