//! `dfs-node serve`: the cluster key, the node, and a clean stop on SIGINT
//! or SIGTERM.

use std::path::Path;

use anyhow::Context;

use crate::admin::recent_errors::RecentErrors;
use dfs::env::Env;
use dfs::keys::{CLUSTER_KEY_FILE, ClusterKey};
use dfs::node::{NodeConfig, Server};
use dfs::peer::SwimTiming;
use dfs::placement::Replication;

use super::Failure;
use crate::Cli;

pub struct ServeOptions<'a> {
    pub listen: &'a str,
    pub bootstrap: &'a [String],
    pub advertise: Option<String>,
    /// Where to serve S3 (`None`: nowhere).
    pub s3_listen: Option<&'a str>,
    /// Base domains of virtual-hosted-style S3 requests.
    pub s3_hosts: crate::s3::VirtualHosts,
    /// Where to serve `/metrics`, `/health` and `/ready` (`None`: nowhere).
    pub admin_listen: Option<&'a str>,
    pub log_format: crate::LogFormat,
    pub cluster_key_file: Option<&'a Path>,
    pub swim: SwimTiming,
    pub replication: Replication,
    /// Free disk space (percent) below which the node is unhealthy.
    pub disk_free_min_percent: u8,
    /// Blobs up to this size go into the small-blob table.
    pub small_blob_bytes_max: usize,
}

pub async fn serve(env: &Env, cli: &Cli, options: ServeOptions<'_>) -> Result<(), Failure> {
    let cluster_key_file = options.cluster_key_file;
    let recent_errors = init_logs(env, options.log_format);
    let data_dir = &cli.data_dir;
    let own_key_path = data_dir.join(CLUSTER_KEY_FILE);
    let cluster_key = match cluster_key_file {
        Some(path) => {
            let given = ClusterKey::load(env, path)?;
            if own_key_path.exists() {
                if ClusterKey::load(env, &own_key_path)? != given {
                    return Err(anyhow::anyhow!(
                        "{} holds a different cluster key than {}: this data dir belongs to another cluster \
                         (its chunks are sealed under its own key); use another --data-dir",
                        own_key_path.display(),
                        path.display()
                    )
                    .into());
                }
            } else {
                let bytes = std::fs::read(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                dfs::env::write_file_durably(env, &own_key_path, &bytes).with_context(|| {
                    format!("cannot copy the cluster key to {}", own_key_path.display())
                })?;
            }
            given
        }
        None => {
            let (key, created) = ClusterKey::load_or_create(env, &own_key_path)?;
            if created {
                tracing::info!(path = %own_key_path.display(), "created a new cluster key; give it to the nodes that should join (only nodes: clients use access keys)");
            }
            key
        }
    };
    let config = NodeConfig {
        data_dir: data_dir.clone(),
        listen: options.listen.to_string(),
        bootstrap: options.bootstrap.to_vec(),
        advertise: options.advertise,
        cluster_key,
        swim: options.swim,
        replication: options.replication,
        maintenance: Default::default(),
        disk_free_min_percent: options.disk_free_min_percent,
        admin_credentials_file: Some(data_dir.join(dfs::keys::credentials::CREDENTIALS_FILE)),
        provisioned_keys: Vec::new(),
        small_blob_bytes_max: options.small_blob_bytes_max,
    };
    let mut server = Server::start(env.clone(), config).await?;
    let mut s3_note = String::from("S3 off");
    if let Some(addr) = options.s3_listen {
        let listener = env.net.bind(addr).await.with_context(|| {
            format!("cannot listen for S3 on {addr} (--s3-listen; `off` serves none)")
        })?;
        let bound = listener.local_addr().unwrap_or_else(|_| addr.to_string());
        s3_note = format!("S3 on http://{bound}");
        let node = server.node().clone();
        let hosts = options.s3_hosts;
        server.spawn_frontend(move |stopping| crate::s3::serve(node, listener, hosts, stopping));
    }
    if let Some(addr) = options.admin_listen {
        let listener = env.net.bind(addr).await.with_context(|| {
            format!("cannot listen for the admin endpoints on {addr} (--admin-listen; `off` serves none)")
        })?;
        let bound = listener.local_addr().unwrap_or_else(|_| addr.to_string());
        s3_note.push_str(&format!("; admin on http://{bound}"));
        let node = server.node().clone();
        server.spawn_frontend(move |stopping| {
            crate::admin::serve(node, recent_errors, listener, stopping)
        });
    }
    println!(
        "dfs-node {} listening on {} (data dir {}); {s3_note}",
        server.node_id().short(),
        server.local_addr(),
        data_dir.display()
    );
    server.run(shutdown_signal()).await;
    Ok(())
}

/// Logs to stderr, filtered by `RUST_LOG`, and every warning and error
/// also to the status page's list (whatever `RUST_LOG` says).
fn init_logs(env: &Env, format: crate::LogFormat) -> RecentErrors {
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // s3s logs every refused S3 request (a missing key, a bad bucket
    // name) as an error; the operations log what an operator needs.
    // `RUST_LOG=info,s3s=debug` shows it all.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,s3s=off"));
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let lines = match format {
        crate::LogFormat::Text => lines.boxed(),
        crate::LogFormat::Json => lines.json().boxed(),
    };
    let recent = RecentErrors::new(env.clock.clone());
    let kept = Targets::new()
        .with_default(LevelFilter::WARN)
        .with_target("s3s", LevelFilter::OFF);
    tracing_subscriber::registry()
        .with(lines.with_filter(filter))
        .with(recent.clone().with_filter(kept))
        .init();
    recent
}

async fn shutdown_signal() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::warn!(%error, "cannot watch SIGTERM; only SIGINT stops the node");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = terminate.recv() => tracing::info!("SIGTERM received"),
    }
}
