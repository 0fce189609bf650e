//! `dfs-node`: run a node (`serve`) or talk to one (every other verb).
//!
//! This binary (`main.rs` and `cli/`) is the only place that uses `anyhow`,
//! prints for humans, and turns errors into exit codes:
//! 0 success, 1 failure, 2 usage error, 3 not found, 4 node unreachable,
//! 5 access key refused (unknown, removed, wrong secret, or none found),
//! 6 the access key may not do this, 7 `status`: the node is not healthy.

mod admin;
mod cli;
mod s3;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use dfs::env::tokio_env;
use dfs::meta::VersionSelector;
use dfs::peer::SwimTiming;
use dfs::placement::Replication;

use cli::serve::{ServeOptions, serve};
use cli::transfer::{GetRequest, get, put};
use cli::{Failure, connect, output};

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
    /// Access key file (client verbs) [default: DFS_ACCESS_KEY_ID and
    /// DFS_SECRET_ACCESS_KEY, else DATA_DIR/credentials, else
    /// ~/.config/dfs/credentials].
    #[arg(long, global = true, env = "DFS_CREDENTIALS")]
    credentials: Option<PathBuf>,
    /// The node's data directory.
    #[arg(long, global = true, env = "DFS_DATA_DIR", default_value = "dfs-data")]
    data_dir: PathBuf,
    /// Machine-readable output.
    #[arg(long, global = true)]
    json: bool,
}

/// How `serve` writes its log (to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Lines for people.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
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
        /// Address of the S3 API (path-style, SigV4 with dfs access keys);
        /// `off` serves none.
        #[arg(long, default_value = "127.0.0.1:7410")]
        s3_listen: String,
        /// Base domain of virtual-hosted-style S3 requests (repeatable):
        /// `BUCKET.DOMAIN` names a bucket. Path-style always works.
        #[arg(long)]
        s3_domain: Vec<String>,
        /// Address of the admin endpoints (`/metrics` for Prometheus,
        /// `/health`, `/ready`); `off` serves none.
        #[arg(long, default_value = "127.0.0.1:7420")]
        admin_listen: String,
        /// Log lines as text for people, or one JSON object per line for
        /// log shippers.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
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
        /// Free disk space, in percent of the disk's size, below which the
        /// node reports itself unhealthy (`status` exits 7); 0: never.
        #[arg(long, default_value_t = dfs::health::DEFAULT_DISK_FREE_MIN_PERCENT, value_parser = clap::value_parser!(u8).range(0..=100))]
        disk_free_min_percent: u8,
        /// Blobs (chunks and manifests) up to this many bytes are kept in
        /// one table (`small-blobs.redb`, group-committed) rather than a
        /// file each; 0: every blob a file. At most 1 MiB.
        #[arg(long, default_value_t = dfs::limits::SMALL_BLOB_BYTES_DEFAULT as u64, value_parser = clap::value_parser!(u64).range(0..=dfs::limits::SMALL_BLOB_BYTES_MAX as u64))]
        small_blob_bytes_max: u64,
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
    /// Delete a file (a new, tombstone version; history is kept), or with
    /// --version, delete that one version for good, on every node.
    Rm {
        name: String,
        /// A version id from `versions`: delete it (and only it) for good.
        #[arg(long)]
        version: Option<String>,
    },
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
    /// This node, its members and its storage use (admin keys).
    Status,
    /// Access keys: who may use the cluster (admin keys).
    #[command(subcommand)]
    Key(KeyCommand),
}

#[derive(Subcommand, Debug)]
enum KeyCommand {
    /// Create a key; prints its id and secret (the secret only this once).
    Create {
        /// A label for people (who or what uses it).
        name: String,
        #[command(flatten)]
        access: AccessArgs,
    },
    /// The keys in use.
    Ls,
    /// Remove a key: every node refuses it from then on.
    Rm { id: String },
    /// Change a key's permission (its secret stays).
    Set {
        id: String,
        #[command(flatten)]
        access: AccessArgs,
    },
}

#[derive(clap::Args, Debug)]
struct AccessArgs {
    /// Read only [default: read-write].
    #[arg(long, conflicts_with = "admin")]
    read_only: bool,
    /// Everything: key management, status and prune too.
    #[arg(long)]
    admin: bool,
    /// Only names starting with this (repeatable) [default: every name].
    #[arg(long = "prefix")]
    prefixes: Vec<String>,
}

impl AccessArgs {
    fn permission(&self) -> dfs::keys::Permission {
        use dfs::keys::Access;
        let access = if self.admin {
            Access::Admin
        } else if self.read_only {
            Access::ReadOnly
        } else {
            Access::ReadWrite
        };
        dfs::keys::Permission {
            access,
            prefixes: self.prefixes.clone(),
        }
    }
}

/// Keep the heap near what is live (within 16 MiB, below). A put or get
/// holds a few chunk-sized buffers (up to 4 MiB each) at a time, allocated
/// on one thread and freed on another. With glibc's defaults, each
/// thread's arena keeps what it freed and the mmap threshold grows past the
/// chunk size after the first free, so a 1 GiB put left the node at
/// 70-78 MiB resident. One arena lets a buffer freed anywhere be reused by
/// the next chunk, and a fixed 8 MiB threshold (above every chunk, below
/// large manifests) stops the growth without mmapping, faulting in and
/// zeroing a fresh buffer per chunk (which cost about 15% of put
/// throughput).
///
/// A fixed mmap threshold also fixes the trim threshold at its 128 KiB
/// default (glibc raises it only along with a threshold it adjusts
/// itself), so every freed chunk at the top of the heap went back to the
/// kernel and was faulted in and zeroed again for the next: in a 1 GiB put
/// about half the CLI's CPU time (1.5 of its 2.9 CPU-seconds were the
/// kernel's). Keeping up to 16 MiB free at the top (four of the largest
/// chunks) took the 1 GiB put from 243-260 to 308-309 MiB/s, with the
/// node's peak through the put and get from 41-43 to 45-50 MiB (`cargo
/// bench --bench throughput`, old and new builds interleaved).
fn bound_the_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 8 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 16 << 20);
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
    let json = cli.json;
    match &cli.command {
        Command::Serve {
            listen,
            bootstrap,
            advertise,
            s3_listen,
            s3_domain,
            admin_listen,
            log_format,
            cluster_key_file,
            probe_interval_ms,
            suspect_timeout_ms,
            replicas,
            write_quorum,
            disk_free_min_percent,
            small_blob_bytes_max,
        } => {
            let replication = Replication::new(usize::from(*replicas), usize::from(*write_quorum))
                .map_err(Failure::usage)?;
            let probe_period = Duration::from_millis(*probe_interval_ms);
            let swim = SwimTiming {
                probe_period,
                // A direct probe waits 40% of the period, leaving the rest
                // for the indirect round (foca needs rtt < period).
                probe_rtt: probe_period * 2 / 5,
                suspect_to_down: Duration::from_millis(*suspect_timeout_ms),
                ..SwimTiming::default()
            };
            let options = ServeOptions {
                listen,
                bootstrap,
                advertise: advertise.clone(),
                s3_listen: (s3_listen != "off").then_some(s3_listen.as_str()),
                s3_hosts: crate::s3::VirtualHosts::new(s3_domain).map_err(Failure::usage)?,
                admin_listen: (admin_listen != "off").then_some(admin_listen.as_str()),
                log_format: *log_format,
                cluster_key_file: cluster_key_file.as_deref(),
                swim,
                replication,
                disk_free_min_percent: *disk_free_min_percent,
                small_blob_bytes_max: *small_blob_bytes_max as usize,
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
        Command::Rm {
            name,
            version: None,
        } => {
            let record = connect(&env, &cli).await?.remove(name).await?;
            output::removed(&record, json);
            Ok(())
        }
        Command::Rm {
            name,
            version: Some(version),
        } => {
            let selector: VersionSelector = version.parse().map_err(Failure::usage)?;
            let record = connect(&env, &cli).await?.forget(name, selector).await?;
            output::forgotten(&record, json);
            Ok(())
        }
        Command::Ls => {
            let (records, truncated) = connect(&env, &cli).await?.list().await?;
            output::listing(&records, truncated, json);
            Ok(())
        }
        Command::Versions { name } => {
            let (records, truncated) = connect(&env, &cli).await?.versions(name).await?;
            output::history(&records, truncated, json);
            Ok(())
        }
        Command::Prune { name, keep } => {
            let (floor, removed) = connect(&env, &cli).await?.prune(name, *keep).await?;
            output::pruned(name, *keep, floor, removed, json);
            Ok(())
        }
        Command::Restore { name, version } => {
            let version = version.parse::<VersionSelector>().map_err(Failure::usage)?;
            let record = connect(&env, &cli).await?.restore(name, version).await?;
            output::restored(&record, json);
            Ok(())
        }
        Command::Status => {
            let report = connect(&env, &cli).await?.status().await?;
            if output::status(&report, json) {
                Ok(())
            } else {
                Err(Failure {
                    code: 7,
                    error: anyhow::anyhow!(
                        "the node is not healthy (see above); exit code 7 tells scripts"
                    ),
                })
            }
        }
        Command::Key(command) => {
            let mut client = connect(&env, &cli).await?;
            match command {
                KeyCommand::Create { name, access } => {
                    let (key, secret) = client.create_key(name, access.permission()).await?;
                    cli::keys::created(&key, &secret, json);
                }
                KeyCommand::Ls => cli::keys::listing(&client.list_keys().await?, json),
                KeyCommand::Rm { id } => {
                    let id = dfs::keys::AccessKeyId::parse(id).map_err(Failure::usage)?;
                    cli::keys::changed("removed", &client.remove_key(id).await?, json);
                }
                KeyCommand::Set { id, access } => {
                    let id = dfs::keys::AccessKeyId::parse(id).map_err(Failure::usage)?;
                    let key = client.set_key_permission(id, access.permission()).await?;
                    cli::keys::changed("changed", &key, json);
                }
            }
            Ok(())
        }
    }
}
