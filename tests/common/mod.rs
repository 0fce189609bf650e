//! Shared by the real-process tests: starting `dfs-node serve`, a cluster
//! of them, and asking them things.
// Each test crate uses part of this module.
#![allow(dead_code)]
#![allow(clippy::disallowed_methods)] // Real processes: waits on the real clock.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod in_process;

pub const BIN: &str = env!("CARGO_BIN_EXE_dfs-node");

/// Start `dfs-node serve --data-dir DIR ARGS...` and wait for its
/// "listening on ADDR" line; returns the process and the address.
pub fn spawn_serve(data_dir: &Path, args: &[&str], stderr: Stdio) -> (Child, String) {
    spawn_serve_in(&[], data_dir, args, stderr)
}

/// A command running `dfs-node`, through `launcher` when it is not empty
/// (e.g. `ip netns exec NS`, which execs the binary: the child is the node).
pub fn dfs_command(launcher: &[String]) -> Command {
    match launcher.split_first() {
        None => Command::new(BIN),
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(BIN);
            command
        }
    }
}

/// [`spawn_serve`] through a launcher.
pub fn spawn_serve_in(
    launcher: &[String],
    data_dir: &Path,
    args: &[&str],
    stderr: Stdio,
) -> (Child, String) {
    let (child, line) = spawn_serve_line(launcher, data_dir, args, stderr);
    (child, line.addr)
}

/// What `serve` says it listens on.
pub struct ServeLine {
    pub addr: String,
    /// `http://ADDR` of the S3 API, when it serves one.
    pub s3: Option<String>,
    /// `http://ADDR` of the admin endpoints, when it serves them.
    pub admin: Option<String>,
}

/// The base domain of virtual-hosted-style S3 requests in these tests.
pub const S3_DOMAIN: &str = "s3.dfs.test";

/// [`spawn_serve_in`], returning the S3 endpoint too. A node serves S3 on
/// a free port unless `args` say where (`--s3-listen`): many nodes of
/// these tests run at once on one machine. It also takes virtual-hosted
/// requests under [`S3_DOMAIN`] (clients map it to 127.0.0.1 themselves).
pub fn spawn_serve_line(
    launcher: &[String],
    data_dir: &Path,
    args: &[&str],
    stderr: Stdio,
) -> (Child, ServeLine) {
    let mut command = dfs_command(launcher);
    command
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args);
    if !args.contains(&"--s3-listen") {
        command.args(["--s3-listen", "127.0.0.1:0"]);
    }
    if !args.contains(&"--admin-listen") {
        command.args(["--admin-listen", "127.0.0.1:0"]);
    }
    // Whether a test's node is healthy must not depend on how full the
    // host's disk is (CI machines run close to 95% used); the tests of the
    // disk rule set their own threshold.
    if !args.contains(&"--disk-free-min-percent") {
        command.args(["--disk-free-min-percent", "0"]);
    }
    command.args(["--s3-domain", S3_DOMAIN]);
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("start dfs-node");
    let line = read_serve_line(&mut child);
    (child, line)
}

/// Read `serve`'s first line ("listening on ADDR ...; S3 on http://ADDR")
/// from the child's stdout and return the address.
pub fn read_listen_addr(child: &mut Child) -> String {
    read_serve_line(child).addr
}

/// [`read_listen_addr`] with the S3 endpoint.
pub fn read_serve_line(child: &mut Child) -> ServeLine {
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line from serve: {line:?}"))
        .to_string();
    let endpoint = |marker: &str| {
        line.split(marker)
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .map(|addr| addr.trim_end_matches([';', ',']).to_string())
    };
    let s3 = endpoint("S3 on ");
    let admin = endpoint("admin on ");
    ServeLine { addr, s3, admin }
}

/// Failure detection settings given to every node of these tests.
pub const PROBE_INTERVAL_MS: u64 = 500;
pub const SUSPECT_TIMEOUT_MS: u64 = 1500;
/// How long a crashed member may take to be seen as down by every other
/// node: a full probe round over the other members, the suspicion timeout,
/// and a few gossip rounds to spread the verdict.
pub const DETECTION_BUDGET: Duration =
    Duration::from_millis(PROBE_INTERVAL_MS * 5 + SUSPECT_TIMEOUT_MS + 2_000);

pub struct Node {
    pub child: Child,
    pub addr: String,
    /// `http://ADDR` of its S3 API.
    pub s3: Option<String>,
    pub admin: Option<String>,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// Prefix of every command run for this node (empty: run directly).
    pub launcher: Vec<String>,
    /// The access key file its client commands use (`None`: the CLI's
    /// default, DATA_DIR/credentials, which a new cluster's first node
    /// writes).
    pub credentials: Option<PathBuf>,
}

impl Node {
    /// Start `serve` on `listen` with extra arguments; waits for the
    /// "listening on" line.
    pub fn start(data_dir: &Path, listen: &str, extra: &[&str]) -> Node {
        Node::start_in(Vec::new(), data_dir, listen, extra)
    }

    /// [`Node::start`] through a launcher, which this node's client
    /// commands use too.
    pub fn start_in(launcher: Vec<String>, data_dir: &Path, listen: &str, extra: &[&str]) -> Node {
        std::fs::create_dir_all(data_dir).unwrap();
        let log = data_dir.with_extension("log");
        let probe = PROBE_INTERVAL_MS.to_string();
        let suspect = SUSPECT_TIMEOUT_MS.to_string();
        let mut args = vec![
            "--listen",
            listen,
            "--probe-interval-ms",
            &probe,
            "--suspect-timeout-ms",
            &suspect,
        ];
        args.extend_from_slice(extra);
        let stderr = std::fs::File::create(&log).unwrap();
        let (child, line) = spawn_serve_line(&launcher, data_dir, &args, stderr.into());
        Node {
            child,
            addr: line.addr,
            s3: line.s3,
            admin: line.admin,
            data_dir: data_dir.to_path_buf(),
            log,
            launcher,
            credentials: None,
        }
    }

    /// Run a client verb against this node (with its data dir's key).
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        self.client_command().args(args).output().unwrap()
    }

    /// `dfs-node` set up to talk to this node with its access key; the
    /// caller adds the verb.
    pub fn client_command(&self) -> Command {
        let mut command = dfs_command(&self.launcher);
        command
            .args(["--node", &self.addr, "--data-dir"])
            .arg(&self.data_dir);
        if let Some(credentials) = &self.credentials {
            command.arg("--credentials").arg(credentials);
        }
        command
    }

    /// Ids of this node's blob files (not those in its small-blob table,
    /// which a running node holds open: start it with
    /// `--small-blob-bytes-max 0` to see every blob here).
    pub fn blobs(&self) -> Vec<String> {
        let mut ids = Vec::new();
        let Ok(prefixes) = std::fs::read_dir(self.data_dir.join("chunks")) else {
            return ids;
        };
        for prefix in prefixes.flatten() {
            for blob in std::fs::read_dir(prefix.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = blob.file_name().to_string_lossy().to_string();
                if name.len() == 64 {
                    ids.push(name);
                }
            }
        }
        ids.sort();
        ids
    }

    /// `status --json`, or None if the node does not answer.
    pub fn status(&self) -> Option<Value> {
        let output = self
            .client_command()
            .args(["status", "--json"])
            .output()
            .unwrap();
        // 7: the node answered but is not healthy; it still reports.
        if !output.status.success() && output.status.code() != Some(7) {
            return None;
        }
        serde_json::from_slice(&output.stdout).ok()
    }

    /// The state this node reports for the member listening at `addr`.
    pub fn state_of(&self, addr: &str) -> Option<String> {
        let status = self.status()?;
        status["members"]
            .as_array()?
            .iter()
            .find(|m| m["addr"] == addr)
            .map(|m| m["state"].as_str().unwrap().to_string())
    }

    pub fn alive_count(&self) -> usize {
        self.status()
            .and_then(|s| {
                s["members"]
                    .as_array()
                    .map(|m| m.iter().filter(|m| m["state"] == "alive").count())
            })
            .unwrap_or(0)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill_9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Poll `condition` every 100 ms until it holds or `within` passes; returns
/// the time it took.
pub fn wait_until(within: Duration, what: &str, mut condition: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if condition() {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        sleep(Duration::from_millis(100));
    }
}

/// Start `size` nodes, the others bootstrapping through the first. Returns
/// once they are started, not joined: callers wait for what they need.
pub fn start_cluster(root: &Path, size: usize) -> Vec<Node> {
    start_cluster_with(root, size, &[])
}

/// [`start_cluster`], each node started with `extra` arguments too.
pub fn start_cluster_with(root: &Path, size: usize, extra: &[&str]) -> Vec<Node> {
    let first = Node::start(&root.join("n0"), "127.0.0.1:0", extra);
    let key = root.join("n0").join("cluster.key");
    let admin = root.join("n0").join("credentials");
    let mut nodes = vec![first];
    for i in 1..size {
        let mut node = Node::start(
            &root.join(format!("n{i}")),
            "127.0.0.1:0",
            &[
                &[
                    "--bootstrap",
                    &nodes[0].addr.clone(),
                    "--cluster-key-file",
                    key.to_str().unwrap(),
                ],
                extra,
            ]
            .concat(),
        );
        // The first node's admin key, which reaches the others by sync.
        node.credentials = Some(admin.clone());
        nodes.push(node);
    }
    nodes
}

/// `GET path` on the admin endpoint `http://ADDR`: the status and body.
pub fn http_get(admin: &str, path: &str) -> (u16, String) {
    let addr = admin.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .get(9..12)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The value of one series (name and labels exactly as encoded), 0 when
/// absent.
pub fn metric_value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.trim().parse().unwrap())
        .unwrap_or(0.0)
}
