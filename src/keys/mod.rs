//! Key material, in one place: the cluster key (the secret the nodes of a
//! cluster share), a node's static Noise identity, and how both are made
//! and kept on disk (hex text files, created 0600 by
//! [`Disk`](crate::env::Disk) and written durably). [`secure`](crate::secure)
//! uses these; nothing here depends on it.
//!
//! The cluster key is never used directly: [`ClusterKey::derive`] gives an
//! independent key per purpose (Noise psk, at-rest sealing), so one use can
//! never be turned against another.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use snow::resolvers::CryptoResolver;

use crate::cas::sha256;
use crate::env::{Env, read_file, write_file_durably};

pub mod access;
pub mod credentials;

pub use access::{Access, AccessKeyError, AccessKeyId, Permission, SecretKey, SecretSealer};

/// Size of every symmetric key and of an X25519 key.
pub const KEY_BYTES: usize = 32;

/// File names inside a data dir.
pub const CLUSTER_KEY_FILE: &str = "cluster.key";
pub const NODE_KEY_FILE: &str = "node.key";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot create key file {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("key file {path} is malformed: expected {expected} hexadecimal digits")]
    Malformed { path: PathBuf, expected: usize },
}

/// The secret every member of a cluster shares. Whoever holds it can join the
/// cluster and read its data: keep it like a password.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey([u8; KEY_BYTES]);

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

impl ClusterKey {
    pub fn from_bytes(bytes: [u8; KEY_BYTES]) -> Self {
        Self(bytes)
    }

    pub fn generate(env: &Env) -> Self {
        Self(env.random_array())
    }

    /// An independent key for `purpose` (HKDF-SHA256, RFC 5869).
    pub fn derive(&self, purpose: &str) -> [u8; KEY_BYTES] {
        let mut out = [0u8; KEY_BYTES];
        Hkdf::<Sha256>::new(Some(b"dfs cluster key v1"), &self.0)
            .expand(purpose.as_bytes(), &mut out)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        out
    }

    /// Load the key at `path`.
    pub fn load(env: &Env, path: &Path) -> Result<Self, KeyError> {
        Ok(Self(load_hex(env, path)?))
    }

    /// Load the key at `path`, or create a new random one there.
    pub fn load_or_create(env: &Env, path: &Path) -> Result<(Self, bool), KeyError> {
        let exists = env.disk.exists(path).map_err(|source| KeyError::Read {
            path: path.into(),
            source,
        })?;
        if exists {
            return Ok((Self::load(env, path)?, false));
        }
        let key = Self::generate(env);
        store_hex(env, path, &key.0)?;
        Ok((key, true))
    }
}

/// A node's identity: which node this is, derived from its static public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct NodeId(pub [u8; 32]);

impl NodeId {
    pub fn from_public_key(public: &[u8]) -> Self {
        Self(sha256(public))
    }
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    /// First 8 bytes in hex: enough to tell nodes apart in logs.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..8])
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.short())
    }
}

/// A static X25519 key pair: a node's identity in every Noise handshake.
#[derive(Clone)]
pub struct StaticKeypair {
    pub private: [u8; KEY_BYTES],
    pub public: [u8; KEY_BYTES],
}

impl fmt::Debug for StaticKeypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StaticKeypair(public {})", hex::encode(self.public))
    }
}

impl StaticKeypair {
    /// A new X25519 key pair from the Env's randomness (snow's X25519).
    pub fn generate(env: &Env) -> Self {
        let mut dh = snow::resolvers::DefaultResolver
            .resolve_dh(&snow::params::DHChoice::Curve25519)
            .expect("snow has X25519");
        dh.generate(&mut EnvRng(env.rng.clone()))
            .expect("X25519 key generation does not fail");
        Self {
            private: dh
                .privkey()
                .try_into()
                .expect("X25519 private keys are 32 bytes"),
            public: dh
                .pubkey()
                .try_into()
                .expect("X25519 public keys are 32 bytes"),
        }
    }

    pub fn node_id(&self) -> NodeId {
        NodeId::from_public_key(&self.public)
    }

    /// Load `<data_dir>/node.key`, creating a new identity on first start.
    /// The file holds the private then the public key, 128 hex digits.
    pub fn load_or_create(env: &Env, data_dir: &Path) -> Result<Self, KeyError> {
        let path = data_dir.join(NODE_KEY_FILE);
        let exists = env.disk.exists(&path).map_err(|source| KeyError::Read {
            path: path.clone(),
            source,
        })?;
        if exists {
            let both: [u8; 2 * KEY_BYTES] = load_hex(env, &path)?;
            let (private, public) = both.split_at(KEY_BYTES);
            return Ok(Self {
                private: private.try_into().unwrap(),
                public: public.try_into().unwrap(),
            });
        }
        let keypair = Self::generate(env);
        let mut both = [0u8; 2 * KEY_BYTES];
        both[..KEY_BYTES].copy_from_slice(&keypair.private);
        both[KEY_BYTES..].copy_from_slice(&keypair.public);
        store_hex(env, &path, &both)?;
        Ok(keypair)
    }
}

/// The Env's randomness behind snow's RNG trait (key generation here, and
/// the ephemeral keys of every handshake in [`secure`](crate::secure)).
pub struct EnvRng(pub std::sync::Arc<dyn crate::env::Random>);

impl snow::types::Random for EnvRng {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill(dest);
        Ok(())
    }
}

fn load_hex<const N: usize>(env: &Env, path: &Path) -> Result<[u8; N], KeyError> {
    let bytes = read_file(env.disk.as_ref(), path, 4096).map_err(|source| KeyError::Read {
        path: path.into(),
        source,
    })?;
    let malformed = || KeyError::Malformed {
        path: path.into(),
        expected: 2 * N,
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| malformed())?.trim();
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out).map_err(|_| malformed())?;
    Ok(out)
}

fn store_hex(env: &Env, path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    let text = format!("{}\n", hex::encode(bytes));
    write_file_durably(env, path, text.as_bytes()).map_err(|source| KeyError::Create {
        path: path.into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_keys_differ_by_purpose_and_by_cluster() {
        let a = ClusterKey::from_bytes([1; 32]);
        let b = ClusterKey::from_bytes([2; 32]);
        assert_ne!(a.derive("x"), a.derive("y"));
        assert_ne!(a.derive("x"), b.derive("x"));
        assert_eq!(a.derive("x"), a.derive("x"));
    }
}
