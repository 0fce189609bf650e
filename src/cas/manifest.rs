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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Manifest {
    pub size: u64,
    pub chunks: Vec<ChunkRef>,
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
        postcard::to_stdvec(self).expect("a manifest always serializes")
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
        if let [0, format, ..] = bytes
            && *format >= 1
        {
            return Err(ManifestError::NewerFormat(*format));
        }
        let (manifest, rest): (Manifest, _) = postcard::take_from_bytes(bytes)
            .map_err(|e| ManifestError::Undecodable(e.to_string()))?;
        if !rest.is_empty() {
            return Err(ManifestError::Inconsistent(
                "trailing bytes after the manifest",
            ));
        }
        // Overlong varints are the only second spelling postcard accepts;
        // refusing them keeps one encoding per manifest (see wire::codec).
        let canonical =
            postcard::serialize_with_flavor(&manifest, postcard::ser_flavors::Size::default())
                .map_err(|e| ManifestError::Undecodable(e.to_string()))?;
        if canonical != bytes.len() {
            return Err(ManifestError::Inconsistent("overlong integer encoding"));
        }
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
        Ok(manifest)
    }
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
            Manifest::decode(&[0, 2, 0xAA]),
            Err(ManifestError::NewerFormat(2))
        );
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
