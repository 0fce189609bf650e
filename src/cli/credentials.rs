//! Where the CLI finds its access key, in order:
//! 1. `DFS_ACCESS_KEY_ID` and `DFS_SECRET_ACCESS_KEY` (both);
//! 2. `--credentials FILE` (or `DFS_CREDENTIALS`);
//! 3. `DATA_DIR/credentials`, which a new cluster's first node writes on its
//!    first start (so the quickstart needs no setup);
//! 4. `~/.config/dfs/credentials`.

use std::path::PathBuf;

use dfs::env::Env;
use dfs::keys::credentials::{CREDENTIALS_FILE, Credentials};
use dfs::keys::{AccessKeyId, SecretKey};

use super::Failure;
use crate::Cli;

const ENV_ID: &str = "DFS_ACCESS_KEY_ID";
const ENV_SECRET: &str = "DFS_SECRET_ACCESS_KEY";

fn user_file() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    Some(
        PathBuf::from(home)
            .join(".config/dfs")
            .join(CREDENTIALS_FILE),
    )
}

pub fn find(env: &Env, cli: &Cli) -> Result<Credentials, Failure> {
    let id = std::env::var(ENV_ID).ok().filter(|v| !v.is_empty());
    let secret = std::env::var(ENV_SECRET).ok().filter(|v| !v.is_empty());
    match (id, secret) {
        (Some(id), Some(secret)) => {
            return Ok(Credentials {
                id: AccessKeyId::parse(&id).map_err(|e| refused(format!("{ENV_ID}: {e}")))?,
                secret: SecretKey::parse(&secret)
                    .map_err(|e| refused(format!("{ENV_SECRET}: {e}")))?,
            });
        }
        (Some(_), None) => return Err(refused(format!("{ENV_ID} is set but {ENV_SECRET} is not"))),
        (None, Some(_)) => return Err(refused(format!("{ENV_SECRET} is set but {ENV_ID} is not"))),
        (None, None) => {}
    }
    if let Some(path) = &cli.credentials {
        return Credentials::load(env, path).map_err(|e| refused(e.to_string()));
    }
    let candidates = [Some(cli.data_dir.join(CREDENTIALS_FILE)), user_file()];
    for path in candidates.iter().flatten() {
        if path.exists() {
            return Credentials::load(env, path).map_err(|e| refused(e.to_string()));
        }
    }
    Err(refused(format!(
        "no access key: set {ENV_ID} and {ENV_SECRET}, pass --credentials FILE, or put a credentials file at {} or {} (a new cluster's first node writes one to its data dir)",
        cli.data_dir.join(CREDENTIALS_FILE).display(),
        user_file().map_or_else(
            || "~/.config/dfs/credentials".into(),
            |p| p.display().to_string()
        )
    )))
}

/// A credentials problem exits like a refused key (5).
fn refused(message: String) -> Failure {
    Failure {
        code: 5,
        error: anyhow::anyhow!(message),
    }
}
