//! The `dfs-node` binary's own modules (not part of the library): how a
//! command is carried out and how its result is shown. `main.rs` holds the
//! command line and dispatches to these.

pub mod output;
pub mod serve;
pub mod transfer;

use std::path::PathBuf;

use dfs::client::{Client, ClientError};
use dfs::env::Env;
use dfs::keys::{CLUSTER_KEY_FILE, ClusterKey};

use crate::Cli;

/// An error with the exit code it maps to.
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(error: E) -> Self {
        let error = error.into();
        let code = match error.downcast_ref::<ClientError>() {
            Some(e) if e.is_not_found() => 3,
            Some(ClientError::Unreachable { .. }) => 4,
            Some(ClientError::Refused(_)) => 5,
            _ => 1,
        };
        Failure { code, error }
    }
}

impl Failure {
    /// A usage error (exit code 2): an argument that does not parse.
    pub fn usage(error: impl std::fmt::Display) -> Self {
        Failure {
            code: 2,
            error: anyhow::anyhow!("{error}"),
        }
    }
}

fn key_path(cli: &Cli) -> PathBuf {
    cli.key_file
        .clone()
        .unwrap_or_else(|| cli.data_dir.join(CLUSTER_KEY_FILE))
}

pub async fn connect(env: &Env, cli: &Cli) -> Result<Client, Failure> {
    let path = key_path(cli);
    if !path.exists() {
        return Err(anyhow::anyhow!(
            "no cluster key at {}: pass --key-file (or DFS_KEY_FILE), or run `dfs-node serve` once with --data-dir {}",
            path.display(),
            cli.data_dir.display()
        )
        .into());
    }
    let key = ClusterKey::load(env, &path)?;
    Ok(Client::connect(env, &cli.node, &key).await?)
}
