//! At-rest sealing of blobs (DESIGN §5).
//!
//! XChaCha20-Poly1305 under a data key derived from the cluster key. The nonce
//! is the first 24 bytes of the blob id: the id is the SHA-256 of the
//! plaintext, so one nonce only ever seals one plaintext, and replicas of a
//! blob hold identical bytes. The id (and the format header) are associated
//! data: a sealed blob moved to another id's path fails its tag.
//!
//! Format: `b"dfs1"` ‖ ciphertext ‖ 16-byte tag.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};

use crate::cas::ChunkId;
use crate::keys::ClusterKey;

const MAGIC: &[u8; 4] = b"dfs1";
const TAG_BYTES: usize = 16;
/// Bytes a sealed blob has beyond its plaintext.
pub const SEAL_OVERHEAD_BYTES: usize = MAGIC.len() + TAG_BYTES;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("sealed blob is truncated or has an unknown format")]
    Format,
    #[error(
        "authentication tag does not match (corrupt, tampered, or sealed under another cluster key)"
    )]
    Tag,
}

#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    pub fn new(cluster_key: &ClusterKey) -> Self {
        let key = cluster_key.derive("dfs chunk seal v1");
        Self {
            cipher: XChaCha20Poly1305::new(Key::from_slice(&key)),
        }
    }

    fn associated_data(id: &ChunkId) -> [u8; 36] {
        let mut ad = [0u8; 36];
        ad[..4].copy_from_slice(MAGIC);
        ad[4..].copy_from_slice(&id.0);
        ad
    }

    /// Seal `plaintext`, whose SHA-256 must be `id`.
    pub fn seal(&self, id: &ChunkId, plaintext: &[u8]) -> Vec<u8> {
        let mut sealed = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD_BYTES);
        sealed.extend_from_slice(MAGIC);
        sealed.extend_from_slice(plaintext);
        let nonce = XNonce::from_slice(&id.0[..24]);
        let tag = self
            .cipher
            .encrypt_in_place_detached(
                nonce,
                &Self::associated_data(id),
                &mut sealed[MAGIC.len()..],
            )
            .expect("XChaCha20-Poly1305 seals any blob below 256 GiB");
        sealed.extend_from_slice(&tag);
        sealed
    }

    /// Check the tag and decrypt. (The caller still checks SHA-256 == id.)
    pub fn open(&self, id: &ChunkId, mut sealed: Vec<u8>) -> Result<Vec<u8>, SealError> {
        if sealed.len() < SEAL_OVERHEAD_BYTES || &sealed[..MAGIC.len()] != MAGIC {
            return Err(SealError::Format);
        }
        let tag_at = sealed.len() - TAG_BYTES;
        let tag = Tag::clone_from_slice(&sealed[tag_at..]);
        sealed.truncate(tag_at);
        let nonce = XNonce::from_slice(&id.0[..24]);
        self.cipher
            .decrypt_in_place_detached(
                nonce,
                &Self::associated_data(id),
                &mut sealed[MAGIC.len()..],
                &tag,
            )
            .map_err(|_| SealError::Tag)?;
        sealed.drain(..MAGIC.len());
        Ok(sealed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper_detection() {
        let sealer = Sealer::new(&ClusterKey::from_bytes([7; 32]));
        let plaintext = b"attack at dawn".to_vec();
        let id = ChunkId::of(&plaintext);
        let sealed = sealer.seal(&id, &plaintext);
        assert!(
            !sealed.windows(plaintext.len()).any(|w| w == plaintext),
            "plaintext visible"
        );
        assert_eq!(sealer.open(&id, sealed.clone()).unwrap(), plaintext);

        let mut flipped = sealed.clone();
        flipped[6] ^= 1;
        assert_eq!(sealer.open(&id, flipped), Err(SealError::Tag));
        assert_eq!(
            sealer.open(&ChunkId::of(b"other"), sealed.clone()),
            Err(SealError::Tag)
        );
        let other_cluster = Sealer::new(&ClusterKey::from_bytes([8; 32]));
        assert_eq!(other_cluster.open(&id, sealed.clone()), Err(SealError::Tag));
        assert_eq!(
            sealer.open(&id, sealed[..10].to_vec()),
            Err(SealError::Format)
        );
        assert_eq!(
            sealer.seal(&id, &plaintext),
            sealed,
            "replicas must hold identical bytes"
        );
    }
}
