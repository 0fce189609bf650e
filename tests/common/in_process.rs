//! Nodes run in the test's own process (`Server` on the production Env,
//! 127.0.0.1), for tests that read a node's `Cluster` directly.

use std::path::Path;
use std::sync::Arc;

use dfs::cluster::{Cluster, Maintenance};
use dfs::env::Env;
use dfs::keys::credentials::{Credentials, ProvisionedKey};
use dfs::keys::{AccessKeyId, ClusterKey, Permission, SecretKey};
use dfs::node::{NodeConfig, Server};
use dfs::placement::Replication;
use tokio::sync::oneshot;

pub struct Running {
    pub addr: String,
    pub cluster: Arc<Cluster>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stop the node and wait until it has.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }
}

/// Start a node on `listen` with `data_dir`, joining `bootstrap`; the one
/// access key is [`credentials`] (admin).
pub async fn start(
    env: &Env,
    data_dir: &Path,
    listen: &str,
    bootstrap: Vec<String>,
    replication: Replication,
    maintenance: Maintenance,
) -> Running {
    let server = Server::start(
        env.clone(),
        NodeConfig {
            data_dir: data_dir.to_path_buf(),
            listen: listen.into(),
            bootstrap,
            advertise: None,
            cluster_key: ClusterKey::from_bytes([9; 32]),
            swim: Default::default(),
            replication,
            maintenance,
            disk_free_min_percent: dfs::health::DEFAULT_DISK_FREE_MIN_PERCENT,
            admin_credentials_file: None,
            provisioned_keys: vec![ProvisionedKey {
                name: "test".into(),
                credentials: credentials(),
                permission: Permission::admin(),
            }],
            small_blob_bytes_max: dfs::limits::SMALL_BLOB_BYTES_DEFAULT,
        },
    )
    .await
    .unwrap();
    let addr = server.local_addr().to_string();
    let cluster = server.node().cluster().clone();
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    Running {
        addr,
        cluster,
        stop,
        task,
    }
}

/// The access key every in-process node provisions.
pub fn credentials() -> Credentials {
    Credentials {
        id: AccessKeyId::parse("DFSTESTKEYAAAAAAAAAA").unwrap(),
        secret: SecretKey::parse(&"t".repeat(40)).unwrap(),
    }
}
