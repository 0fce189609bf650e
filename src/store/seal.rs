//! At-rest sealing of blobs (DESIGN §5).
//!
//! XChaCha20-Poly1305 under a data key derived from the cluster key. The nonce
//! is the first 24 bytes of the blob id: the id is the SHA-256 of the
//! plaintext, so one nonce only ever seals one plaintext, and replicas of a
//! blob hold identical bytes. The id (and the format header) are associated
//! data: a sealed blob moved to another id's path fails its tag.
//!
//! Since every node seals a blob into the same bytes, nodes send blobs to
//! each other sealed ([`SealedBlob`]) and the receiver only checks the tag
//! ([`Sealer::check`], without decrypting) before it stores them.
//!
//! Format: `b"dfs1"` ‖ ciphertext ‖ 16-byte tag.

use bytes::Bytes;
use chacha20::cipher::consts::U10;
use chacha20::cipher::generic_array::GenericArray;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

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

/// A blob in its sealed form, known to be sealed for its id: made by
/// [`Sealer::seal_blob`] from a plaintext whose hash is the id, or taken
/// from elsewhere (a peer, the disk) only after [`Sealer::checked`]. The
/// store writes nothing else, and nodes send each other blobs in this form,
/// so a blob is hashed and sealed once, by the node a client gave it to.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedBlob {
    id: ChunkId,
    bytes: Bytes,
}

impl SealedBlob {
    pub fn id(&self) -> &ChunkId {
        &self.id
    }

    /// The sealed bytes, as stored and as sent.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    pub fn plaintext_len(&self) -> usize {
        self.bytes.len() - SEAL_OVERHEAD_BYTES
    }
}

impl std::fmt::Debug for SealedBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SealedBlob({}, {} bytes)",
            self.id.short(),
            self.bytes.len()
        )
    }
}

/// XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha) built from HChaCha20
/// (RustCrypto `chacha20`) and ring's ChaCha20-Poly1305: ring has no
/// XChaCha, and its assembly seals at 1.65x the portable RustCrypto AEAD.
/// The bytes are exactly XChaCha20-Poly1305's; a test checks them against
/// RustCrypto's `XChaCha20Poly1305`.
#[derive(Clone)]
pub struct Sealer {
    key: [u8; 32],
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    pub fn new(cluster_key: &ClusterKey) -> Self {
        Self {
            key: cluster_key.derive("dfs chunk seal v1"),
        }
    }

    fn associated_data(id: &ChunkId) -> [u8; 36] {
        let mut ad = [0u8; 36];
        ad[..4].copy_from_slice(MAGIC);
        ad[4..].copy_from_slice(&id.0);
        ad
    }

    /// The XChaCha20 construction for the 24-byte nonce `id[..24]`: a
    /// subkey from HChaCha20 over the first 16 nonce bytes, and ChaCha20's
    /// 12-byte nonce of four zero bytes and the last 8.
    fn key_and_nonce(&self, id: &ChunkId) -> (LessSafeKey, Nonce) {
        let (subkey, nonce) = self.subkey_and_nonce(id);
        let key = LessSafeKey::new(
            UnboundKey::new(&CHACHA20_POLY1305, &subkey).expect("a 32-byte ChaCha20 key"),
        );
        (key, Nonce::assume_unique_for_key(nonce))
    }

    fn subkey_and_nonce(&self, id: &ChunkId) -> ([u8; 32], [u8; 12]) {
        let subkey = chacha20::hchacha::<U10>(
            GenericArray::from_slice(&self.key),
            GenericArray::from_slice(&id.0[..16]),
        );
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&id.0[16..24]);
        (subkey.into(), nonce)
    }

    /// Seal `plaintext`, whose SHA-256 must be `id`.
    pub fn seal(&self, id: &ChunkId, plaintext: &[u8]) -> Vec<u8> {
        let mut sealed = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD_BYTES);
        sealed.extend_from_slice(MAGIC);
        sealed.extend_from_slice(plaintext);
        let (key, nonce) = self.key_and_nonce(id);
        let tag = key
            .seal_in_place_separate_tag(
                nonce,
                Aad::from(Self::associated_data(id)),
                &mut sealed[MAGIC.len()..],
            )
            .expect("ChaCha20-Poly1305 seals any blob below 256 GiB");
        sealed.extend_from_slice(tag.as_ref());
        sealed
    }

    /// [`Sealer::seal`], kept with its id.
    pub fn seal_blob(&self, id: ChunkId, plaintext: &[u8]) -> SealedBlob {
        debug_assert_eq!(ChunkId::of(plaintext), id, "caller passed a wrong id");
        SealedBlob {
            id,
            bytes: self.seal(&id, plaintext).into(),
        }
    }

    /// `sealed` as a [`SealedBlob`] of `id`, if its tag says it is one
    /// ([`Sealer::check`]).
    pub fn checked(&self, id: ChunkId, sealed: Bytes) -> Result<SealedBlob, SealError> {
        self.check(&id, &sealed)?;
        Ok(SealedBlob { id, bytes: sealed })
    }

    /// Check the tag without decrypting: whether `sealed` is exactly what
    /// [`Sealer::seal`] makes for `id` of some plaintext. This is how a node
    /// takes a sealed blob from a peer (and checks its own before sending
    /// one): the tag proves the bytes were sealed for `id` under this
    /// cluster's key, and the sealer hashed the plaintext first.
    ///
    /// Written by hand from RustCrypto's `chacha20` and `poly1305` because
    /// no AEAD crate verifies a tag without also decrypting, which would
    /// cost as much as sealing again. It is RFC 8439 §2.8's tag: Poly1305
    /// keyed by the first 32 bytes of ChaCha20's block 0, over the
    /// associated data and the ciphertext, each zero-padded to 16 bytes,
    /// then both lengths; compared in constant time. A test checks that it
    /// agrees with [`Sealer::open`] on valid and tampered blobs.
    pub fn check(&self, id: &ChunkId, sealed: &[u8]) -> Result<(), SealError> {
        use chacha20::cipher::{KeyIvInit, StreamCipher};
        use poly1305::universal_hash::{KeyInit, UniversalHash};
        if sealed.len() < SEAL_OVERHEAD_BYTES || &sealed[..MAGIC.len()] != MAGIC {
            return Err(SealError::Format);
        }
        let (ciphertext, tag) = sealed[MAGIC.len()..].split_at(sealed.len() - SEAL_OVERHEAD_BYTES);
        let (subkey, nonce) = self.subkey_and_nonce(id);
        let mut mac_key = poly1305::Key::default();
        chacha20::ChaCha20::new(&subkey.into(), &nonce.into()).apply_keystream(&mut mac_key);
        let mut mac = poly1305::Poly1305::new(&mac_key);
        let associated_data = Self::associated_data(id);
        mac.update_padded(&associated_data);
        mac.update_padded(ciphertext);
        let mut lengths = poly1305::Block::default();
        lengths[..8].copy_from_slice(&(associated_data.len() as u64).to_le_bytes());
        lengths[8..].copy_from_slice(&(ciphertext.len() as u64).to_le_bytes());
        mac.update(&[lengths]);
        mac.verify(poly1305::Block::from_slice(tag))
            .map_err(|_| SealError::Tag)
    }

    /// Check the tag and decrypt. The tag binds the bytes to `id` (it is
    /// associated data), so a copy that opens is the one sealed for `id`.
    pub fn open(&self, id: &ChunkId, mut sealed: Vec<u8>) -> Result<Vec<u8>, SealError> {
        if sealed.len() < SEAL_OVERHEAD_BYTES || &sealed[..MAGIC.len()] != MAGIC {
            return Err(SealError::Format);
        }
        let (key, nonce) = self.key_and_nonce(id);
        let plaintext_len = key
            .open_within(
                nonce,
                Aad::from(Self::associated_data(id)),
                &mut sealed,
                MAGIC.len()..,
            )
            .map_err(|_| SealError::Tag)?
            .len();
        sealed.truncate(plaintext_len);
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

    /// `check` accepts exactly what `open` accepts: every blob sealed for
    /// its id, and nothing with a byte changed, cut, grown, or checked
    /// against another id or cluster key.
    #[test]
    fn check_agrees_with_open() {
        let sealer = Sealer::new(&ClusterKey::from_bytes([5; 32]));
        let other_cluster = Sealer::new(&ClusterKey::from_bytes([6; 32]));
        for len in [0usize, 1, 15, 16, 17, 63, 64, 65, 1000, 70_000] {
            let plaintext: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let id = ChunkId::of(&plaintext);
            let sealed = sealer.seal(&id, &plaintext);
            assert_eq!(sealer.check(&id, &sealed), Ok(()), "length {len}");
            assert_eq!(other_cluster.check(&id, &sealed), Err(SealError::Tag));
            assert_eq!(
                sealer.check(&ChunkId::of(b"other"), &sealed),
                Err(SealError::Tag)
            );
            let mut changed = Vec::new();
            for at in [
                0,
                3,
                4,
                sealed.len() / 2,
                sealed.len() - 17,
                sealed.len() - 1,
            ] {
                let mut flipped = sealed.clone();
                flipped[at] ^= 0x40;
                changed.push(flipped);
            }
            changed.push(sealed[..sealed.len() - 1].to_vec());
            let mut grown = sealed.clone();
            grown.push(0);
            changed.push(grown);
            for bad in changed {
                let opened = sealer.open(&id, bad.clone()).map(|_| ());
                assert!(opened.is_err(), "length {len}: open took a changed blob");
                assert!(
                    sealer.check(&id, &bad).is_err(),
                    "length {len}: check took a changed blob"
                );
            }
        }
    }

    #[test]
    fn bytes_are_exactly_xchacha20_poly1305() {
        use chacha20poly1305::aead::{Aead, KeyInit, Payload};
        use chacha20poly1305::{XChaCha20Poly1305, XNonce};
        let cluster = ClusterKey::from_bytes([3; 32]);
        let sealer = Sealer::new(&cluster);
        let reference = XChaCha20Poly1305::new_from_slice(&cluster.derive("dfs chunk seal v1"))
            .expect("32-byte key");
        for len in [0usize, 1, 63, 64, 65, 1000, 70_000] {
            let plaintext: Vec<u8> = (0..len).map(|i| (i * 31 % 256) as u8).collect();
            let id = ChunkId::of(&plaintext);
            let mut expected = MAGIC.to_vec();
            expected.extend(
                reference
                    .encrypt(
                        XNonce::from_slice(&id.0[..24]),
                        Payload {
                            msg: &plaintext,
                            aad: &Sealer::associated_data(&id),
                        },
                    )
                    .unwrap(),
            );
            assert_eq!(sealer.seal(&id, &plaintext), expected, "length {len}");
            assert_eq!(sealer.check(&id, &expected), Ok(()), "length {len}");
            assert_eq!(sealer.open(&id, expected).unwrap(), plaintext);
        }
    }
}
