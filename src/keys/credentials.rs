//! A client's access key and its file.
//!
//! The file is a few `name = value` lines (blank lines, `#` comments and
//! `[section]` headers are ignored, so an AWS-style profile file with one
//! profile also reads):
//!
//! ```text
//! # dfs access key: keep this file private (0600)
//! access_key_id = DFSABCDEFGHIJKLMNOPQ
//! secret_access_key = 0123456789abcdefghijABCDEFGHIJ0123456789
//! ```
//!
//! Where the CLI looks for it is the CLI's business (`cli/credentials.rs`).

use std::path::{Path, PathBuf};

use super::access::{AccessKeyId, SecretKey};
use crate::env::{Env, read_file, write_file_durably};

/// The file a node's first start writes its admin key to, in its data dir.
pub const CREDENTIALS_FILE: &str = "credentials";

/// A credentials file is a few lines; anything longer is not one.
const CREDENTIALS_FILE_BYTES_MAX: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read credentials file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write credentials file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("credentials file {path}: {reason}")]
    Malformed { path: PathBuf, reason: String },
}

/// A key a node is told to make sure exists (see
/// `NodeConfig::provisioned_keys`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionedKey {
    pub name: String,
    pub credentials: Credentials,
    pub permission: super::access::Permission,
}

/// An access key as a client holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub id: AccessKeyId,
    pub secret: SecretKey,
}

impl Credentials {
    pub fn to_file_text(&self) -> String {
        format!(
            "# dfs access key: keep this file private (0600)\naccess_key_id = {}\nsecret_access_key = {}\n",
            self.id,
            self.secret.expose()
        )
    }

    /// Parse a credentials file's text; `Err` says what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (mut id, mut secret) = (None, None);
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('[') {
                continue;
            }
            let Some((name, value)) = line.split_once('=') else {
                return Err(format!("line {}: expected `name = value`", number + 1));
            };
            let value = value.trim();
            match name.trim() {
                "access_key_id" | "aws_access_key_id" => {
                    id = Some(AccessKeyId::parse(value).map_err(|e| e.to_string())?)
                }
                "secret_access_key" | "aws_secret_access_key" => {
                    secret = Some(SecretKey::parse(value).map_err(|e| e.to_string())?)
                }
                _ => {}
            }
        }
        match (id, secret) {
            (Some(id), Some(secret)) => Ok(Self { id, secret }),
            (None, _) => Err("no access_key_id line".into()),
            (_, None) => Err("no secret_access_key line".into()),
        }
    }

    pub fn load(env: &Env, path: &Path) -> Result<Self, CredentialsError> {
        let bytes =
            read_file(env.disk.as_ref(), path, CREDENTIALS_FILE_BYTES_MAX).map_err(|source| {
                CredentialsError::Read {
                    path: path.into(),
                    source,
                }
            })?;
        let malformed = |reason: String| CredentialsError::Malformed {
            path: path.into(),
            reason,
        };
        let text = std::str::from_utf8(&bytes).map_err(|_| malformed("not UTF-8 text".into()))?;
        Self::parse(text).map_err(malformed)
    }

    /// Write the file durably (created 0600).
    pub fn store(&self, env: &Env, path: &Path) -> Result<(), CredentialsError> {
        write_file_durably(env, path, self.to_file_text().as_bytes()).map_err(|source| {
            CredentialsError::Write {
                path: path.into(),
                source,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::tokio_env;

    #[test]
    fn a_credentials_file_round_trips_and_reads_an_aws_style_profile() {
        let env = tokio_env();
        let credentials = Credentials {
            id: AccessKeyId::generate(&env),
            secret: SecretKey::generate(&env),
        };
        assert_eq!(
            Credentials::parse(&credentials.to_file_text()).unwrap(),
            credentials
        );
        let profile = format!(
            "[default]\naws_access_key_id={}\n\naws_secret_access_key = {}\nregion = x\n",
            credentials.id,
            credentials.secret.expose()
        );
        assert_eq!(Credentials::parse(&profile).unwrap(), credentials);
    }

    #[test]
    fn a_broken_credentials_file_says_what_is_wrong() {
        assert!(
            Credentials::parse("")
                .unwrap_err()
                .contains("access_key_id")
        );
        assert!(
            Credentials::parse("access_key_id = DFSAAAAAAAAAAAAAAAAA")
                .unwrap_err()
                .contains("secret_access_key")
        );
        assert!(
            Credentials::parse("garbage")
                .unwrap_err()
                .contains("line 1")
        );
        assert!(
            Credentials::parse("access_key_id = nope\nsecret_access_key = x")
                .unwrap_err()
                .contains("not an access key id")
        );
    }
}
