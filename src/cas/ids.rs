use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// SHA-256 of `bytes`.
///
/// Every byte stored or read is hashed at least once, so this is the
/// hottest function of a put or a get. ring's assembly (AVX2, or the SHA
/// extensions where the CPU has them) runs 1.8x the `sha2` crate's
/// portable code on a CPU without SHA extensions (330 vs 179 MiB/s,
/// measured by `cargo bench --bench throughput`).
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .try_into()
        .expect("a SHA-256 digest is 32 bytes")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected 64 hexadecimal digits (a SHA-256), got {0:?}")]
pub struct IdParseError(pub String);

macro_rules! hash_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The id of `bytes`: their SHA-256.
            pub fn of(bytes: &[u8]) -> Self {
                Self(sha256(bytes))
            }
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }
            /// The first 8 bytes in hex, for logs and messages.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..8])
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({}..)", stringify!($name), &self.to_hex()[..12])
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;
            fn from_str(text: &str) -> Result<Self, IdParseError> {
                let mut bytes = [0u8; 32];
                if text.len() != 64 || hex::decode_to_slice(text, &mut bytes).is_err() {
                    return Err(IdParseError(text.chars().take(80).collect()));
                }
                Ok(Self(bytes))
            }
        }
    };
}

hash_id!(
    /// A chunk's address: SHA-256 of its plaintext.
    ChunkId
);
hash_id!(
    /// A file's address: SHA-256 of its encoded [`Manifest`](super::Manifest).
    ContentId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_rejects_garbage() {
        let id = ChunkId::of(b"hello");
        assert_eq!(id.to_string().parse::<ChunkId>().unwrap(), id);
        assert!("abc".parse::<ChunkId>().is_err());
        assert!("zz".repeat(32).parse::<ContentId>().is_err());
        assert_eq!(
            ChunkId::of(b"").to_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn agrees_with_the_reference_implementation_at_every_block_boundary() {
        use sha2::Digest;
        // Lengths around the 64-byte block and the 56-byte padding edge,
        // and one large buffer that takes the assembly's bulk path.
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        for len in (0..200).chain([4095, 4096, 4097, 65_536, 300_000]) {
            let expected: [u8; 32] = sha2::Sha256::digest(&data[..len]).into();
            assert_eq!(sha256(&data[..len]), expected, "length {len}");
        }
    }
}
