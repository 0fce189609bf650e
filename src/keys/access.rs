//! Access keys: how users, as opposed to nodes, are known to a cluster.
//!
//! An access key is an id (`DFS` and 17 characters, public: it names the
//! key in logs, in `key ls`, and in the first handshake message) and a
//! secret of 40 characters that never crosses the network: the client
//! proves it holds it by finishing a Noise handshake whose psk is derived
//! from it ([`SecretKey::client_psk`]). S3 clients will sign with the
//! same pair, which is why the shapes are S3's.
//!
//! Nodes keep every key's secret sealed at rest (ChaCha20-Poly1305 under a
//! key derived from the cluster key: [`SecretSealer`]), so a copy of the
//! version index without the cluster key yields no usable secret.

use std::fmt;

use hkdf::Hkdf;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::{ClusterKey, KEY_BYTES};
use crate::env::Env;

/// Characters of an access key id (`DFS` and 17 more).
pub const ACCESS_KEY_ID_CHARS: usize = 20;
const ID_PREFIX: &str = "DFS";
/// Characters of a secret.
pub const SECRET_CHARS: usize = 40;
/// A key's name (a label for people): at most this many bytes.
pub const KEY_NAME_BYTES_MAX: usize = 64;
/// Name prefixes one key may be limited to.
pub const PREFIXES_MAX: usize = 8;
/// Bytes of one prefix. With [`PREFIXES_MAX`], a key record stays near
/// 1 KiB, so all of a cluster's records fit in one frame.
pub const PREFIX_BYTES_MAX: usize = 128;

/// Key ids use the RFC 4648 base32 alphabet (upper case, no 0/1/8/9 to
/// mistake for letters), as AWS's do.
const ID_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
/// Secrets use letters and digits: they go through shells and config files
/// unquoted.
const SECRET_ALPHABET: &[u8; 62] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessKeyError {
    #[error(
        "{0:?} is not an access key id (`DFS` and 17 more characters of A-Z and 2-7, 20 in all)"
    )]
    BadId(String),
    #[error("the secret access key must be {SECRET_CHARS} letters and digits")]
    BadSecret,
    #[error("a key name must be 1 to {KEY_NAME_BYTES_MAX} bytes of printable text")]
    BadName,
    #[error(
        "a key may be limited to at most {PREFIXES_MAX} prefixes of 1 to {PREFIX_BYTES_MAX} bytes, without control characters"
    )]
    BadPrefixes,
    #[error(
        "an admin key cannot be limited to prefixes: it manages every key, so it could give itself every name"
    )]
    AdminWithPrefixes,
    #[error(
        "the sealed secret of key {0} does not open (corrupt, or sealed under another cluster key)"
    )]
    Sealed(AccessKeyId),
}

/// The public half of an access key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct AccessKeyId([u8; ACCESS_KEY_ID_CHARS]);

impl AccessKeyId {
    pub fn generate(env: &Env) -> Self {
        let mut id = [0u8; ACCESS_KEY_ID_CHARS];
        id[..ID_PREFIX.len()].copy_from_slice(ID_PREFIX.as_bytes());
        let random: [u8; ACCESS_KEY_ID_CHARS] = env.random_array();
        for (out, r) in id[ID_PREFIX.len()..].iter_mut().zip(random) {
            *out = ID_ALPHABET[(r % 32) as usize];
        }
        Self(id)
    }

    pub fn parse(text: &str) -> Result<Self, AccessKeyError> {
        let bad = || AccessKeyError::BadId(text.chars().take(40).collect());
        let bytes: [u8; ACCESS_KEY_ID_CHARS] = text.as_bytes().try_into().map_err(|_| bad())?;
        if !Self(bytes).is_well_formed() {
            return Err(bad());
        }
        Ok(Self(bytes))
    }

    /// Whether the bytes are an id's shape (ids from peers and the wire
    /// are checked with this before they are used).
    pub fn is_well_formed(&self) -> bool {
        self.0.starts_with(ID_PREFIX.as_bytes())
            && self.0[ID_PREFIX.len()..]
                .iter()
                .all(|c| ID_ALPHABET.contains(c))
    }

    pub fn as_str(&self) -> &str {
        // Ids are made by `generate` or checked by `parse`; an id decoded
        // from bytes that are not ASCII shows as a placeholder.
        std::str::from_utf8(&self.0).unwrap_or("<malformed key id>")
    }
}

impl fmt::Display for AccessKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for AccessKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccessKeyId({})", self.as_str())
    }
}

/// The secret half of an access key. Its `Debug` shows nothing of it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(String);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    pub fn generate(env: &Env) -> Self {
        let mut secret = String::with_capacity(SECRET_CHARS);
        while secret.len() < SECRET_CHARS {
            for r in env.random_array::<64>() {
                // Rejection sampling: 248 = 4 x 62 keeps every character
                // equally likely.
                if r < 248 && secret.len() < SECRET_CHARS {
                    secret.push(SECRET_ALPHABET[(r % 62) as usize] as char);
                }
            }
        }
        Self(secret)
    }

    pub fn parse(text: &str) -> Result<Self, AccessKeyError> {
        if text.len() != SECRET_CHARS || !text.bytes().all(|c| SECRET_ALPHABET.contains(&c)) {
            return Err(AccessKeyError::BadSecret);
        }
        Ok(Self(text.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The Noise psk a client with this secret handshakes with (HKDF-SHA256,
    /// so the psk reveals nothing of the secret that S3 signing uses).
    pub fn client_psk(&self) -> [u8; KEY_BYTES] {
        let mut out = [0u8; KEY_BYTES];
        Hkdf::<Sha256>::new(Some(b"dfs access key v1"), self.0.as_bytes())
            .expand(b"dfs client noise psk v1", &mut out)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        out
    }
}

/// What a key may do, most powerful last (the order is used).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Access {
    /// Read files and their history.
    ReadOnly,
    /// And put, remove and restore.
    ReadWrite,
    /// And prune, see the cluster's status, and manage keys.
    Admin,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Access::ReadOnly => "read-only",
            Access::ReadWrite => "read-write",
            Access::Admin => "admin",
        })
    }
}

/// A key's permission: its access, limited to names under its prefixes
/// when it has any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Permission {
    pub access: Access,
    /// Empty: every name.
    pub prefixes: Vec<String>,
}

impl Permission {
    pub fn admin() -> Self {
        Self {
            access: Access::Admin,
            prefixes: Vec::new(),
        }
    }

    /// Whether `name` is within the key's prefixes.
    pub fn covers(&self, name: &str) -> bool {
        self.prefixes.is_empty() || self.prefixes.iter().any(|p| name.starts_with(p.as_str()))
    }

    pub fn may_read(&self, name: &str) -> bool {
        self.covers(name)
    }

    pub fn may_write(&self, name: &str) -> bool {
        self.access >= Access::ReadWrite && self.covers(name)
    }

    /// Reading by content id names no file, so only a key that may read
    /// every name may do it (else a prefix would not contain what it reads).
    pub fn may_read_any(&self) -> bool {
        self.prefixes.is_empty()
    }

    pub fn is_admin(&self) -> bool {
        self.access == Access::Admin
    }

    pub fn validate(&self) -> Result<(), AccessKeyError> {
        let bad_prefix = |p: &String| {
            p.is_empty() || p.len() > PREFIX_BYTES_MAX || p.chars().any(char::is_control)
        };
        if self.prefixes.len() > PREFIXES_MAX || self.prefixes.iter().any(bad_prefix) {
            return Err(AccessKeyError::BadPrefixes);
        }
        if self.access == Access::Admin && !self.prefixes.is_empty() {
            return Err(AccessKeyError::AdminWithPrefixes);
        }
        Ok(())
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.access)?;
        if !self.prefixes.is_empty() {
            write!(f, " on {}", self.prefixes.join(", "))?;
        }
        Ok(())
    }
}

/// Checks a key's name: a label for people, printable and short.
pub fn validate_key_name(name: &str) -> Result<(), AccessKeyError> {
    if name.is_empty() || name.len() > KEY_NAME_BYTES_MAX || name.chars().any(char::is_control) {
        return Err(AccessKeyError::BadName);
    }
    Ok(())
}

/// Seals and opens access-key secrets at rest and between nodes, under a
/// key derived from the cluster key (nodes only).
#[derive(Clone)]
pub struct SecretSealer {
    key: [u8; KEY_BYTES],
}

impl fmt::Debug for SecretSealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretSealer(..)")
    }
}

const SEAL_NONCE_BYTES: usize = 12;

impl SecretSealer {
    pub fn new(cluster_key: &ClusterKey) -> Self {
        Self {
            key: cluster_key.derive("dfs access key seal v1"),
        }
    }

    fn aead(&self) -> LessSafeKey {
        LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &self.key).expect("a 32-byte key"))
    }

    /// `nonce ‖ ciphertext ‖ tag`, the key id as associated data (a sealed
    /// secret moved to another key does not open). The nonce is random:
    /// 96 bits, a few keys per cluster.
    pub fn seal(&self, env: &Env, id: &AccessKeyId, secret: &SecretKey) -> Vec<u8> {
        self.seal_with(env.random_array(), id, secret)
    }

    /// The same bytes wherever it is sealed: the nonce is derived from the
    /// id and the secret, so it repeats only with the same plaintext (which
    /// reveals nothing but that equality). For provisioned keys, which
    /// every node seals itself and must agree on byte for byte.
    pub fn seal_deterministic(&self, id: &AccessKeyId, secret: &SecretKey) -> Vec<u8> {
        let mut hasher = <Sha256 as sha2::Digest>::new();
        sha2::Digest::update(&mut hasher, b"dfs provisioned key nonce v1");
        sha2::Digest::update(&mut hasher, id.0);
        sha2::Digest::update(&mut hasher, secret.0.as_bytes());
        let digest = sha2::Digest::finalize(hasher);
        let nonce: [u8; SEAL_NONCE_BYTES] = digest[..SEAL_NONCE_BYTES]
            .try_into()
            .expect("a SHA-256 digest is longer than a nonce");
        self.seal_with(nonce, id, secret)
    }

    fn seal_with(
        &self,
        nonce: [u8; SEAL_NONCE_BYTES],
        id: &AccessKeyId,
        secret: &SecretKey,
    ) -> Vec<u8> {
        let mut sealed = secret.0.as_bytes().to_vec();
        self.aead()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(id.0),
                &mut sealed,
            )
            .expect("a 40-byte secret always seals");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        out
    }

    pub fn open(&self, id: &AccessKeyId, sealed: &[u8]) -> Result<SecretKey, AccessKeyError> {
        let failed = || AccessKeyError::Sealed(*id);
        if sealed.len() < SEAL_NONCE_BYTES {
            return Err(failed());
        }
        let (nonce, ciphertext) = sealed.split_at(SEAL_NONCE_BYTES);
        let nonce: [u8; SEAL_NONCE_BYTES] = nonce.try_into().map_err(|_| failed())?;
        let mut buffer = ciphertext.to_vec();
        let plaintext = self
            .aead()
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(id.0),
                &mut buffer,
            )
            .map_err(|_| failed())?;
        let text = std::str::from_utf8(plaintext).map_err(|_| failed())?;
        SecretKey::parse(text).map_err(|_| failed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::tokio_env;

    #[test]
    fn generated_ids_and_secrets_have_their_shapes_and_differ() {
        let env = tokio_env();
        let (a, b) = (AccessKeyId::generate(&env), AccessKeyId::generate(&env));
        assert_ne!(a, b);
        assert_eq!(AccessKeyId::parse(a.as_str()), Ok(a));
        assert!(a.as_str().starts_with("DFS") && a.as_str().len() == 20);
        let secret = SecretKey::generate(&env);
        assert_eq!(SecretKey::parse(secret.expose()), Ok(secret.clone()));
        assert_ne!(secret, SecretKey::generate(&env));
        assert_eq!(format!("{secret:?}"), "SecretKey(..)");
    }

    #[test]
    fn malformed_ids_and_secrets_are_refused() {
        for bad in [
            "",
            "DFS",
            "AKIAIOSFODNN7EXAMPLE",
            "DFSabcdefghijklmnopq",
            "DFS0000000000000000A",
        ] {
            assert!(AccessKeyId::parse(bad).is_err(), "{bad}");
        }
        assert!(SecretKey::parse("short").is_err());
        assert!(SecretKey::parse(&"a".repeat(39)).is_err());
        assert!(SecretKey::parse(&format!("{}!", "a".repeat(39))).is_err());
        assert!(SecretKey::parse(&"a".repeat(40)).is_ok());
    }

    #[test]
    fn permissions_follow_access_and_prefixes() {
        let team = Permission {
            access: Access::ReadOnly,
            prefixes: vec!["team/".into()],
        };
        assert!(team.may_read("team/plan"));
        assert!(!team.may_read("other/plan"));
        assert!(!team.may_write("team/plan"));
        assert!(!team.may_read_any());
        let writer = Permission {
            access: Access::ReadWrite,
            prefixes: vec![],
        };
        assert!(writer.may_write("anything") && !writer.is_admin());
        assert!(Permission::admin().is_admin() && Permission::admin().may_write("x"));
        let too_many = Permission {
            access: Access::ReadOnly,
            prefixes: (0..=PREFIXES_MAX).map(|i| i.to_string()).collect(),
        };
        assert!(too_many.validate().is_err());
        let empty = Permission {
            access: Access::ReadOnly,
            prefixes: vec![String::new()],
        };
        assert!(empty.validate().is_err());
        // An admin key manages keys: limited to a prefix, it could make
        // itself an unlimited one.
        let scoped_admin = Permission {
            access: Access::Admin,
            prefixes: vec!["team/".into()],
        };
        assert_eq!(
            scoped_admin.validate(),
            Err(AccessKeyError::AdminWithPrefixes)
        );
    }

    #[test]
    fn a_sealed_secret_opens_only_for_its_key_and_cluster() {
        let env = tokio_env();
        let sealer = SecretSealer::new(&ClusterKey::from_bytes([1; 32]));
        let (id, other) = (AccessKeyId::generate(&env), AccessKeyId::generate(&env));
        let secret = SecretKey::generate(&env);
        let sealed = sealer.seal(&env, &id, &secret);
        assert!(
            !sealed
                .windows(8)
                .any(|w| secret.expose().as_bytes().windows(8).any(|s| s == w))
        );
        assert_eq!(sealer.open(&id, &sealed), Ok(secret));
        assert!(sealer.open(&other, &sealed).is_err());
        let stranger = SecretSealer::new(&ClusterKey::from_bytes([2; 32]));
        assert!(stranger.open(&id, &sealed).is_err());
        assert!(sealer.open(&id, &sealed[..5]).is_err());
    }
}
