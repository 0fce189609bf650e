//! The admin endpoints of a real node (`serve --admin-listen`): `/metrics`
//! passes `promtool check metrics` (Debian `prometheus`, installed by
//! `.ci/run`) and its counters move with what the node serves; `/health`
//! and `/ready` answer.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Node, http_get as get, metric_value as value, wait_until};

#[test]
fn metrics_pass_promtool_and_count_what_the_node_served() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("data"), "127.0.0.1:0", &[]);
    let admin = node
        .admin
        .clone()
        .expect("the node serves the admin endpoints");
    assert_eq!(get(&admin, "/health"), (200, "ok\n".to_string()));
    wait_until(Duration::from_secs(20), "the node is ready", || {
        get(&admin, "/ready").0 == 200
    });
    assert_eq!(get(&admin, "/nothing-here").0, 404);

    let before = get(&admin, "/metrics").1;
    let file = dir.path().join("file");
    std::fs::write(&file, vec![7u8; 300_000]).unwrap();
    let put = node.cli(&["put", file.to_str().unwrap(), "--name", "m/file"]);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    assert!(node.cli(&["get", "m/file"]).status.success());
    assert!(!node.cli(&["get", "m/missing"]).status.success());
    let (status, after) = get(&admin, "/metrics");
    assert_eq!(status, 200);

    let moved = |series: &str| value(&after, series) - value(&before, series);
    let requests = |kind: &str, outcome: &str| {
        format!(r#"dfs_requests_total{{protocol="native",kind="{kind}",outcome="{outcome}"}}"#)
    };
    // The CLI asks for the name's current version, then cuts the file
    // itself (a chunked put).
    assert_eq!(moved(&requests("PutBaseOf", "ok")), 1.0, "{after}");
    assert_eq!(moved(&requests("PutChunkedStart", "ok")), 1.0, "{after}");
    assert_eq!(moved(&requests("Get", "ok")), 1.0, "{after}");
    assert_eq!(moved(&requests("Get", "refused")), 1.0, "{after}");
    assert_eq!(
        moved(r#"dfs_request_duration_seconds_count{protocol="native",kind="Get",outcome="ok"}"#),
        1.0
    );
    assert_eq!(
        moved(r#"dfs_body_received_bytes_total{protocol="native"}"#),
        300_000.0
    );
    assert_eq!(
        moved(r#"dfs_body_sent_bytes_total{protocol="native"}"#),
        300_000.0
    );
    // The file's chunks and its manifest.
    assert!(value(&after, "dfs_store_blobs") >= 2.0, "{after}");
    assert!(value(&after, "dfs_store_bytes") >= 300_000.0, "{after}");
    assert_eq!(
        value(&after, r#"dfs_members{state="alive"}"#),
        1.0,
        "{after}"
    );
    // The put's chunks and record were made durable, and timed.
    assert!(
        moved(r#"dfs_disk_sync_duration_seconds_count{kind="file"}"#) >= 2.0,
        "{after}"
    );
    assert!(value(&after, "dfs_disk_capacity_bytes") > 0.0, "{after}");
    assert!(value(&after, "dfs_disk_free_bytes") > 0.0, "{after}");
    assert!(value(&after, "dfs_index_bytes") > 0.0, "{after}");
    // Three CLI connections came and went (the node sees each end a little
    // after the CLI exits); this scrape's is open.
    wait_until(
        Duration::from_secs(10),
        "the CLI connections closed",
        || {
            value(
                &get(&admin, "/metrics").1,
                r#"dfs_connections_open{kind="client"}"#,
            ) == 0.0
        },
    );
    assert_eq!(
        value(&after, r#"dfs_connections_open{kind="admin"}"#),
        1.0,
        "{after}"
    );

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; .ci/run installs it)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(after.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}\n{after}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}

/// `--log-format json`: every line of the node's log is one JSON object,
/// and each request is logged once at debug level with its kind, outcome,
/// duration and bytes.
#[test]
fn json_logs_have_one_object_per_line_and_a_line_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let launcher = vec!["env".to_string(), "RUST_LOG=info,dfs=debug".to_string()];
    let node = Node::start_in(
        launcher,
        &dir.path().join("data"),
        "127.0.0.1:0",
        &["--log-format", "json"],
    );
    let file = dir.path().join("file");
    std::fs::write(&file, vec![9u8; 5000]).unwrap();
    let put = node.cli(&["put", file.to_str().unwrap(), "--name", "logged"]);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let mut found = None;
    wait_until(Duration::from_secs(10), "the put's request line", || {
        let log = std::fs::read_to_string(&node.log).unwrap();
        for line in log.lines().filter(|line| !line.trim().is_empty()) {
            let entry: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
            let fields = &entry["fields"];
            if fields["message"] == "request" && fields["kind"] == "PutChunkedStart" {
                found = Some(fields.clone());
            }
        }
        found.is_some()
    });
    let fields = found.unwrap();
    assert_eq!(fields["protocol"], "native");
    assert_eq!(fields["outcome"], "ok");
    assert_eq!(fields["bytes"], 5000);
    assert!(fields["duration_ms"].as_f64().unwrap() > 0.0, "{fields}");
}

/// The disk rule end to end: a node told to keep more free space than any
/// disk has (100%) says its disk is nearly full, `status` exits 7 and
/// `/health` still answers (the node is live, just not healthy).
#[test]
fn a_node_short_of_its_free_space_threshold_is_unhealthy() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(
        &dir.path().join("data"),
        "127.0.0.1:0",
        &["--disk-free-min-percent", "100"],
    );
    let status = node.cli(&["status", "--json"]);
    assert_eq!(status.status.code(), Some(7));
    let report: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(report["healthy"], false, "{report}");
    assert_eq!(report["disk_free_min_percent"], 100, "{report}");
    let problem = report["problems"][0]["what"].as_str().unwrap();
    assert!(problem.contains("disk is nearly full"), "{report}");
    let admin = node.admin.clone().unwrap();
    assert_eq!(get(&admin, "/health"), (200, "ok\n".to_string()));
    let (_, page) = get(&admin, "/");
    assert!(page.contains("disk is nearly full"), "{page}");

    // The harness's threshold (0) never calls a disk full.
    let other = Node::start(&dir.path().join("other"), "127.0.0.1:0", &[]);
    assert!(other.cli(&["status"]).status.success());
}
