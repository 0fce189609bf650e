//! The `dfs-node` binary's own modules (not part of the library): how a
//! command is carried out and how its result is shown. `main.rs` holds the
//! command line and dispatches to these.

pub mod credentials;
pub mod keys;
pub mod output;
pub mod serve;
pub mod transfer;
mod uncached_output;

use dfs::client::{Client, ClientError};
use dfs::env::Env;

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
            Some(e) if e.is_refused_key() => 5,
            Some(e) if e.is_forbidden() => 6,
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

pub async fn connect(env: &Env, cli: &Cli) -> Result<Client, Failure> {
    let credentials = credentials::find(env, cli)?;
    Ok(Client::connect(env, &cli.node, &credentials).await?)
}
