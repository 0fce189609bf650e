#![allow(clippy::disallowed_methods)] // Real processes: these tests wait on the real clock.
//! Access keys with real processes: what a read-only key, a key limited to
//! a prefix, a changed and a removed key may do, through the CLI as a user
//! runs it; and that no client command needs the cluster key.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

mod common;

use common::{BIN, Node, start_cluster, wait_until};
use serde_json::Value;

/// A key as `key create --json` prints it.
struct Key {
    id: String,
    secret: String,
}

impl Key {
    /// Run a client verb against `node` with this key only (environment
    /// variables, and a data dir that holds nothing).
    fn cli(&self, node: &Node, args: &[&str]) -> Output {
        let empty = tempfile::tempdir().unwrap();
        Command::new(BIN)
            .args(args)
            .args(["--node", &node.addr, "--data-dir"])
            .arg(empty.path())
            .env("DFS_ACCESS_KEY_ID", &self.id)
            .env("DFS_SECRET_ACCESS_KEY", &self.secret)
            .output()
            .unwrap()
    }

    fn ok(&self, node: &Node, args: &[&str]) -> String {
        let output = self.cli(node, args);
        assert!(
            output.status.success(),
            "{args:?} with key {}: {}",
            self.id,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// The command fails with `code`, saying why in one line.
    fn refused(&self, node: &Node, args: &[&str], code: i32) -> String {
        let output = self.cli(node, args);
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        assert_eq!(
            output.status.code(),
            Some(code),
            "{args:?} with key {}: {stderr}",
            self.id
        );
        assert_eq!(stderr.lines().count(), 1, "not one line: {stderr}");
        stderr
    }
}

/// Create a key through `admin_node` with the admin credentials it uses.
fn create_key(admin_node: &Node, args: &[&str]) -> Key {
    let mut full = vec!["key", "create"];
    full.extend_from_slice(args);
    full.push("--json");
    let output = admin_node.cli(&full);
    assert!(
        output.status.success(),
        "key create: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let created: Value = serde_json::from_slice(&output.stdout).unwrap();
    Key {
        id: created["id"].as_str().unwrap().to_string(),
        secret: created["secret"].as_str().unwrap().to_string(),
    }
}

fn file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_read_only_key_reads_but_cannot_change_anything() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"), "127.0.0.1:0", &[]);
    let report = file(dir.path(), "report", "quarterly numbers");
    let put = node.cli(&["put", report.to_str().unwrap(), "--name", "report"]);
    assert!(put.status.success());
    let reader = create_key(&node, &["reader", "--read-only"]);

    let out = dir.path().join("out");
    reader.ok(&node, &["get", "report", "-o", out.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "quarterly numbers");
    assert!(reader.ok(&node, &["ls"]).contains("report"));
    reader.ok(&node, &["versions", "report"]);

    let why = reader.refused(&node, &["put", report.to_str().unwrap(), "--name", "x"], 6);
    assert!(why.contains("may not write x"), "{why}");
    reader.refused(&node, &["rm", "report"], 6);
    reader.refused(&node, &["prune", "report", "--keep", "1"], 6);
    reader.refused(&node, &["status"], 6);
    reader.refused(&node, &["key", "ls"], 6);
    // Nothing changed.
    let versions = node.cli(&["versions", "report", "--json"]);
    let versions: Value = serde_json::from_slice(&versions.stdout).unwrap();
    assert_eq!(versions.as_array().unwrap().len(), 1);
    assert!(!node.cli(&["ls"]).stdout.is_empty());
}

#[test]
fn a_key_limited_to_a_prefix_sees_and_writes_only_under_it() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"), "127.0.0.1:0", &[]);
    let body = file(dir.path(), "body", "contents");
    for name in ["team/plan", "other/secret"] {
        let put = node.cli(&["put", body.to_str().unwrap(), "--name", name]);
        assert!(put.status.success());
    }
    let team = create_key(&node, &["teammate", "--prefix", "team/"]);

    let listing = team.ok(&node, &["ls"]);
    assert!(listing.contains("team/plan"), "{listing}");
    assert!(!listing.contains("other/secret"), "{listing}");
    let out = dir.path().join("out");
    team.ok(&node, &["get", "team/plan", "-o", out.to_str().unwrap()]);
    team.refused(
        &node,
        &["get", "other/secret", "-o", out.to_str().unwrap()],
        6,
    );
    team.refused(&node, &["versions", "other/secret"], 6);
    team.ok(
        &node,
        &["put", body.to_str().unwrap(), "--name", "team/new"],
    );
    team.refused(
        &node,
        &["put", body.to_str().unwrap(), "--name", "other/new"],
        6,
    );
    team.refused(&node, &["rm", "other/secret"], 6);
    // A content id names no file: only a key for every name may use one.
    let stored = node.cli(&["versions", "other/secret", "--json"]);
    let stored: Value = serde_json::from_slice(&stored.stdout).unwrap();
    let content = stored[0]["content_id"].as_str().unwrap().to_string();
    team.refused(&node, &["get", &content, "-o", out.to_str().unwrap()], 6);
}

#[test]
fn a_key_whose_permission_changes_keeps_its_secret_and_loses_its_rights() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"), "127.0.0.1:0", &[]);
    let body = file(dir.path(), "body", "v1");
    let writer = create_key(&node, &["ci"]);
    writer.ok(&node, &["put", body.to_str().unwrap(), "--name", "build"]);
    // Each version records the key that wrote it.
    let versions: Value =
        serde_json::from_str(&writer.ok(&node, &["versions", "build", "--json"])).unwrap();
    assert_eq!(versions[0]["by"], writer.id.as_str(), "{versions}");
    let changed = node.cli(&["key", "set", &writer.id, "--read-only"]);
    assert!(
        changed.status.success(),
        "{}",
        String::from_utf8_lossy(&changed.stderr)
    );
    writer.refused(
        &node,
        &["put", body.to_str().unwrap(), "--name", "build"],
        6,
    );
    writer.ok(&node, &["ls"]);
    let listed = node.cli(&["key", "ls", "--json"]);
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == writer.id.as_str())
        .expect("the key is listed");
    assert_eq!(entry["access"], "read-only");
    assert!(entry["last_used_ms"].is_u64(), "{entry}");
    // The listing never shows a secret.
    assert!(!String::from_utf8_lossy(&node.cli(&["key", "ls"]).stdout).contains(&writer.secret));
}

/// README: a removed key is refused by every live node within seconds.
#[test]
fn a_removed_key_is_refused_by_every_node_of_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster(dir.path(), 3);
    wait_until(
        Duration::from_secs(30),
        "3 nodes alive on every node",
        || nodes.iter().all(|n| n.alive_count() == 3),
    );
    let key = create_key(&nodes[0], &["leaving"]);
    let created = Instant::now();
    wait_until(
        Duration::from_secs(15),
        "every node accepts the new key",
        || nodes.iter().all(|n| key.cli(n, &["ls"]).status.success()),
    );
    eprintln!(
        "a new key worked on all 3 nodes after {:?}",
        created.elapsed()
    );

    let removed = nodes[1].cli(&["key", "rm", &key.id]);
    assert!(
        removed.status.success(),
        "{}",
        String::from_utf8_lossy(&removed.stderr)
    );
    let everywhere = wait_until(
        Duration::from_secs(10),
        "every node refuses the key",
        || {
            nodes
                .iter()
                .all(|n| key.cli(n, &["ls"]).status.code() == Some(5))
        },
    );
    eprintln!("a removed key was refused by all 3 nodes {everywhere:?} after `key rm` returned");
    for node in &nodes {
        let why = key.refused(node, &["ls"], 5);
        assert!(why.contains("was removed"), "{why}");
    }
    let listed = nodes[2].cli(&["key", "ls"]);
    assert!(!String::from_utf8_lossy(&listed.stdout).contains(&key.id));
}

/// Issue 10: the cluster key is for nodes only; a user with an access key
/// and nothing else (no data dir) does every client command.
#[test]
fn no_client_command_needs_the_cluster_key() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"), "127.0.0.1:0", &[]);
    let admin = std::fs::read_to_string(node.data_dir.join("credentials")).unwrap();
    let value = |name: &str| {
        admin
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} = ")))
            .unwrap()
            .to_string()
    };
    let key = Key {
        id: value("access_key_id"),
        secret: value("secret_access_key"),
    };
    let body = file(dir.path(), "body", "first");
    let out = dir.path().join("out");
    key.ok(&node, &["put", body.to_str().unwrap(), "--name", "doc"]);
    key.ok(&node, &["get", "doc", "-o", out.to_str().unwrap()]);
    let versions: Value =
        serde_json::from_str(&key.ok(&node, &["versions", "doc", "--json"])).unwrap();
    let version = versions[0]["version"].as_str().unwrap().to_string();
    key.ok(&node, &["rm", "doc"]);
    key.ok(&node, &["restore", "doc", "--version", &version]);
    key.ok(&node, &["prune", "doc", "--keep", "1"]);
    key.ok(&node, &["ls"]);
    key.ok(&node, &["status"]);
    key.ok(&node, &["key", "ls"]);
    // And without any key, one line says where to put one (exit 5).
    let empty = tempfile::tempdir().unwrap();
    let none = Command::new(BIN)
        .args(["ls", "--node", &node.addr, "--data-dir"])
        .arg(empty.path())
        .env_remove("DFS_ACCESS_KEY_ID")
        .env_remove("DFS_SECRET_ACCESS_KEY")
        .env("HOME", empty.path())
        .output()
        .unwrap();
    assert_eq!(none.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&none.stderr).contains("no access key"));
}
