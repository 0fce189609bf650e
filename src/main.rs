//! `dfs-node`: run a node (`serve`) or talk to one (every other verb).
//!
//! This is the only place that uses `anyhow`, prints for humans, and turns
//! errors into exit codes:
//! 0 success, 1 failure, 2 usage error, 3 not found, 4 node unreachable,
//! 5 refused (wrong cluster key).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use dfs::cas::ContentId;
use dfs::client::{Client, ClientError, Fetched};
use dfs::env::{Env, tokio_env};
use dfs::keys::{CLUSTER_KEY_FILE, ClusterKey};
use dfs::meta::{VersionRecord, VersionSelector};
use dfs::node::{NodeConfig, Server};
use dfs::peer::SwimTiming;
use dfs::placement::Replication;
use dfs::wire::{GetTarget, MemberState, StatusReport};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tokio::io::AsyncWriteExt;

#[derive(Parser, Debug)]
#[command(
    name = "dfs-node",
    version,
    about = "A decentralized, content-addressed, replicated and versioned file store"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Node to talk to (client verbs).
    #[arg(
        long,
        global = true,
        env = "DFS_NODE",
        default_value = "127.0.0.1:7400"
    )]
    node: String,
    /// Cluster key file [default: DATA_DIR/cluster.key].
    #[arg(long, global = true, env = "DFS_KEY_FILE")]
    key_file: Option<PathBuf>,
    /// The node's data directory.
    #[arg(long, global = true, env = "DFS_DATA_DIR", default_value = "dfs-data")]
    data_dir: PathBuf,
    /// Machine-readable output.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a node in the foreground (stops cleanly on SIGINT or SIGTERM).
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7400")]
        listen: String,
        /// Address of a cluster member to join through (repeatable). Needed
        /// on first start only: members are remembered in the data dir.
        #[arg(long)]
        bootstrap: Vec<String>,
        /// Address other nodes use to reach this one [default: the listen
        /// address]. Required when listening on 0.0.0.0.
        #[arg(long)]
        advertise: Option<String>,
        /// Cluster key to use; copied into the data dir on first start.
        #[arg(long)]
        cluster_key_file: Option<PathBuf>,
        /// Failure detection: how often each node probes a random member.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
        probe_interval_ms: u64,
        /// Failure detection: how long a suspected member has to refute
        /// before it is declared down.
        #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u64).range(100..=600_000))]
        suspect_timeout_ms: u64,
        /// Copies kept of each chunk (R).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=1024))]
        replicas: u16,
        /// Nodes that must hold a chunk or a version durably before a put
        /// is acknowledged (W, 1 <= W <= R).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=1024))]
        write_quorum: u16,
    },
    /// Store a file (PATH `-` reads stdin and needs --name).
    Put {
        path: PathBuf,
        /// Name to store it under [default: the file name of PATH].
        #[arg(long)]
        name: Option<String>,
    },
    /// Fetch a file by name or by content id (64 hex digits).
    Get {
        target: String,
        /// Write here instead of stdout (written whole or not at all).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// A version id from `versions`.
        #[arg(long)]
        version: Option<String>,
        /// Serve the newest version a majority of the cluster knows, not
        /// just what this node has seen (by name, without --version).
        #[arg(long)]
        quorum: bool,
    },
    /// Delete a file (a new, tombstone version; history is kept).
    Rm { name: String },
    /// List current files.
    Ls,
    /// A file's versions, newest first.
    Versions { name: String },
    /// Forget all but the newest KEEP versions of a file, on every node.
    Prune {
        name: String,
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        keep: u32,
    },
    /// Make an earlier version's content current again (as a new version).
    Restore {
        name: String,
        /// A version id from `versions`.
        #[arg(long)]
        version: String,
    },
    /// This node, its members and its storage use.
    Status,
}

/// An error with the exit code it maps to.
struct Failure {
    code: u8,
    error: anyhow::Error,
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

/// Keep the heap near what is live. A put or get holds a few chunk-sized
/// buffers (up to 4 MiB each) at a time, allocated on one thread and freed
/// on another. With glibc's defaults, each thread's arena keeps what it
/// freed and the mmap threshold grows past the chunk size after the first
/// free, so a 1 GiB put left the node at 70-78 MiB resident. One arena lets
/// a buffer freed anywhere be reused by the next chunk, and a fixed 8 MiB
/// threshold (above every chunk, below large manifests) stops the growth
/// without mmapping, faulting in and zeroing a fresh buffer per chunk
/// (which cost about 15% of put throughput). Measured: 42-51 MiB peak
/// through a 1 GiB put and get, at the same MiB/s
/// (`cargo bench --bench throughput`).
fn bound_the_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 8 << 20);
    }
}

fn main() -> ExitCode {
    bound_the_heap();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("dfs-node: error: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("dfs-node: error: {:#}", failure.error);
            ExitCode::from(failure.code)
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let env = tokio_env();
    match &cli.command {
        Command::Serve {
            listen,
            bootstrap,
            advertise,
            cluster_key_file,
            probe_interval_ms,
            suspect_timeout_ms,
            replicas,
            write_quorum,
        } => {
            let replication = Replication::new(usize::from(*replicas), usize::from(*write_quorum))
                .map_err(|e| Failure {
                    code: 2,
                    error: anyhow::anyhow!(e),
                })?;
            let probe_period = Duration::from_millis(*probe_interval_ms);
            let swim = SwimTiming {
                probe_period,
                // A direct probe waits 40% of the period, leaving the rest
                // for the indirect round (foca needs rtt < period).
                probe_rtt: probe_period * 2 / 5,
                suspect_to_down: Duration::from_millis(*suspect_timeout_ms),
            };
            let options = ServeOptions {
                listen,
                bootstrap,
                advertise: advertise.clone(),
                cluster_key_file: cluster_key_file.as_deref(),
                swim,
                replication,
            };
            serve(&env, &cli, options).await
        }
        Command::Put { path, name } => put(&env, &cli, path, name.as_deref()).await,
        Command::Get {
            target,
            output,
            version,
            quorum,
        } => {
            let request = GetRequest {
                target,
                output: output.as_deref(),
                version: version.as_deref(),
                quorum: *quorum,
            };
            get(&env, &cli, request).await
        }
        Command::Rm { name } => {
            let record = connect(&env, &cli).await?.remove(name).await?;
            if cli.json {
                println!(
                    "{}",
                    json!({"name": record.name, "version": record.vid.to_string(), "deleted": true})
                );
            } else {
                println!("removed {} (version {})", record.name, record.vid);
            }
            Ok(())
        }
        Command::Ls => {
            let (records, truncated) = connect(&env, &cli).await?.list().await?;
            if cli.json {
                println!(
                    "{}",
                    serde_json::Value::Array(records.iter().map(record_json).collect())
                );
            } else {
                for record in &records {
                    println!("{}\t{}\t{}", record.name, record.size, record.vid);
                }
            }
            warn_truncated(truncated);
            Ok(())
        }
        Command::Versions { name } => {
            let (records, truncated) = connect(&env, &cli).await?.versions(name).await?;
            if cli.json {
                let versions = records.iter().map(|r| {
                    json!({"version": r.vid.to_string(), "content_id": r.content.map(|c| c.to_string()),
                           "size": r.size, "deleted": r.is_tombstone()})
                });
                println!("{}", serde_json::Value::Array(versions.collect()));
            } else {
                for r in &records {
                    let content = r
                        .content
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "(deleted)".into());
                    println!("{}\t{}\t{}", r.vid, r.size, content);
                }
            }
            warn_truncated(truncated);
            Ok(())
        }
        Command::Prune { name, keep } => {
            let (floor, removed) = connect(&env, &cli).await?.prune(name, *keep).await?;
            if cli.json {
                println!(
                    "{}",
                    json!({"name": name, "removed": removed, "floor": floor.map(|f| f.to_string())})
                );
            } else if removed == 0 {
                println!("{name} has {keep} or fewer versions; nothing pruned");
            } else {
                println!("pruned {removed} old versions of {name}");
            }
            Ok(())
        }
        Command::Restore { name, version } => {
            let version = version.parse::<VersionSelector>().map_err(|e| Failure {
                code: 2,
                error: anyhow::anyhow!(e),
            })?;
            let record = connect(&env, &cli).await?.restore(name, version).await?;
            if cli.json {
                println!("{}", record_json(&record));
            } else {
                println!(
                    "restored {} as version {} (content {})",
                    record.name,
                    record.vid,
                    record.content.map(|c| c.to_string()).unwrap_or_default()
                );
            }
            Ok(())
        }
        Command::Status => {
            let report = connect(&env, &cli).await?.status().await?;
            print_status(&report, cli.json);
            Ok(())
        }
    }
}

fn warn_truncated(truncated: bool) {
    if truncated {
        eprintln!(
            "dfs-node: note: the list is longer than one reply; only the first part is shown"
        );
    }
}

fn record_json(record: &VersionRecord) -> serde_json::Value {
    json!({
        "name": record.name,
        "version": record.vid.to_string(),
        "content_id": record.content.map(|c| c.to_string()),
        "size": record.size,
    })
}

fn key_path(cli: &Cli) -> PathBuf {
    cli.key_file
        .clone()
        .unwrap_or_else(|| cli.data_dir.join(CLUSTER_KEY_FILE))
}

async fn connect(env: &Env, cli: &Cli) -> Result<Client, Failure> {
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

struct ServeOptions<'a> {
    listen: &'a str,
    bootstrap: &'a [String],
    advertise: Option<String>,
    cluster_key_file: Option<&'a Path>,
    swim: SwimTiming,
    replication: Replication,
}

async fn serve(env: &Env, cli: &Cli, options: ServeOptions<'_>) -> Result<(), Failure> {
    let cluster_key_file = options.cluster_key_file;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
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
                tracing::info!(path = %own_key_path.display(), "created a new cluster key; give it to nodes and clients that should join");
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
    };
    let server = Server::start(env.clone(), config).await?;
    println!(
        "dfs-node {} listening on {} (data dir {})",
        server.node_id().short(),
        server.local_addr(),
        data_dir.display()
    );
    server.run(shutdown_signal()).await;
    Ok(())
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

fn progress_bar(total: Option<u64>) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = match total {
        Some(total) => ProgressBar::new(total).with_style(
            ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("valid template"),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {bytes} {bytes_per_sec}")
                .expect("valid template"),
        ),
    };
    Some(bar)
}

async fn put(env: &Env, cli: &Cli, path: &Path, name: Option<&str>) -> Result<(), Failure> {
    let from_stdin = path == Path::new("-");
    let name = match (name, from_stdin) {
        (Some(name), _) => name.to_string(),
        (None, true) => return Err(anyhow::anyhow!("reading stdin (`-`) needs --name NAME").into()),
        (None, false) => path
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
            .ok_or_else(|| {
                anyhow::anyhow!("cannot take a name from {}; pass --name", path.display())
            })?,
    };
    let mut client = connect(env, cli).await?;
    let record = if from_stdin {
        let bar = progress_bar(None);
        let mut stdin = tokio::io::stdin();
        client
            .put(&name, &mut stdin, &mut |sent| {
                if let Some(bar) = &bar {
                    bar.set_position(sent)
                }
            })
            .await
    } else {
        let mut file = match tokio::fs::File::open(path).await {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(Failure {
                    code: 3,
                    error: anyhow::anyhow!("no such file: {}", path.display()),
                });
            }
            Err(error) => {
                return Err(anyhow::Error::new(error)
                    .context(format!("cannot open {}", path.display()))
                    .into());
            }
        };
        let size = file.metadata().await.map(|m| m.len()).ok();
        let bar = progress_bar(size);
        client
            .put(&name, &mut file, &mut |sent| {
                if let Some(bar) = &bar {
                    bar.set_position(sent)
                }
            })
            .await
    }?;
    if cli.json {
        println!("{}", record_json(&record));
    } else {
        println!(
            "stored {} version {} content {} ({} bytes)",
            record.name,
            record.vid,
            record.content.map(|c| c.to_string()).unwrap_or_default(),
            record.size
        );
    }
    Ok(())
}

struct GetRequest<'a> {
    target: &'a str,
    output: Option<&'a Path>,
    version: Option<&'a str>,
    quorum: bool,
}

async fn get(env: &Env, cli: &Cli, request: GetRequest<'_>) -> Result<(), Failure> {
    let GetRequest {
        target,
        output,
        version,
        quorum,
    } = request;
    let version = version
        .map(|v| v.parse::<VersionSelector>())
        .transpose()
        .map_err(|e| Failure {
            code: 2,
            error: anyhow::anyhow!(e),
        })?;
    let target = match target.parse::<ContentId>() {
        Ok(content) if version.is_none() => GetTarget::Content(content),
        _ => GetTarget::Name(target.to_string()),
    };
    let mut client = connect(env, cli).await?;
    let bar = progress_bar(Some(0));
    let mut progress = |done: u64, total: u64| {
        if let Some(bar) = &bar {
            bar.set_length(total);
            bar.set_position(done);
        }
    };
    let fetched = match output.filter(|path| *path != Path::new("-")) {
        None => {
            client
                .get_with(
                    target,
                    version,
                    quorum,
                    &mut tokio::io::stdout(),
                    &mut progress,
                )
                .await?
        }
        Some(path) => {
            get_to_file(&mut client, (target, version, quorum), path, &mut progress).await?
        }
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    report_get(&fetched, output, cli.json);
    Ok(())
}

/// Write to a temp file beside `path`, sync, rename: the output appears
/// whole and verified, or not at all.
async fn get_to_file(
    client: &mut Client,
    (target, version, quorum): (GetTarget, Option<VersionSelector>, bool),
    path: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Fetched, Failure> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("output");
    let tmp = dir.join(format!(".{file_name}.dfs-partial-{}", std::process::id()));
    let mut file = tokio::fs::File::create(&tmp)
        .await
        .with_context(|| format!("cannot write to {}", dir.display()))?;
    let result = async {
        let fetched = client
            .get_with(target, version, quorum, &mut file, progress)
            .await?;
        file.sync_all().await?;
        tokio::fs::rename(&tmp, path)
            .await
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok::<_, Failure>(fetched)
    }
    .await;
    if result.is_err() {
        let _ = file.shutdown().await;
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result
}

fn report_get(fetched: &Fetched, output: Option<&Path>, json: bool) {
    let version = fetched.record.as_ref().map(|r| r.vid.to_string());
    let to_stdout = output.is_none_or(|p| p == Path::new("-"));
    if json {
        let summary = json!({
            "name": fetched.record.as_ref().map(|r| r.name.clone()),
            "version": version,
            "content_id": fetched.content.to_string(),
            "size": fetched.size,
        });
        if to_stdout {
            eprintln!("{summary}");
        } else {
            println!("{summary}");
        }
    } else if !to_stdout {
        let path = output.expect("not stdout").display();
        match version {
            Some(version) => println!("wrote {} bytes to {path} (version {version})", fetched.size),
            None => println!(
                "wrote {} bytes to {path} (content {})",
                fetched.size, fetched.content
            ),
        }
    }
}

fn print_status(report: &StatusReport, json: bool) {
    let state = |s: MemberState| match s {
        MemberState::Alive => "alive",
        MemberState::Suspect => "suspect",
        MemberState::Down => "down",
    };
    if json {
        let members: Vec<_> = report
            .members
            .iter()
            .map(|m| json!({"node_id": m.node_id.to_string(), "addr": m.addr, "state": state(m.state)}))
            .collect();
        println!(
            "{}",
            json!({
                "node_id": report.node_id.to_string(), "listen": report.listen, "members": members,
                "chunks": report.chunks, "bytes_stored": report.bytes_stored, "quarantined": report.quarantined,
                "under_replicated": report.under_replicated,
                "under_replicated_bytes": report.under_replicated_bytes,
            })
        );
    } else {
        println!("node      {}", report.node_id);
        println!("listen    {}", report.listen);
        println!(
            "chunks    {} ({} bytes sealed on disk)",
            report.chunks, report.bytes_stored
        );
        if report.under_replicated > 0 {
            println!(
                "repairing {} blobs ({} bytes) have fewer than R copies; the repair loop is copying them",
                report.under_replicated, report.under_replicated_bytes
            );
        }
        if report.quarantined > 0 {
            println!(
                "corrupt   {} blobs quarantined since start (see the log)",
                report.quarantined
            );
        }
        println!("members   {}", report.members.len());
        for member in &report.members {
            println!(
                "  {}  {:<21}  {}",
                member.node_id.short(),
                member.addr,
                state(member.state)
            );
        }
    }
}
