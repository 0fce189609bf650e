#![allow(clippy::disallowed_methods)] // Real processes: these tests wait on the real clock.
//! A partition of real processes: three `dfs-node serve` processes, each in
//! its own network namespace on one bridge, and one of them cut off by
//! taking its link down, then healed.
//!
//! The test runs itself again inside `unshare --net --mount`: the
//! namespaces, the bridge and their mounts belong to that throwaway
//! namespace and vanish with it, and its processes with its pid namespace,
//! whatever happens to the test. It needs root (or user namespaces) and
//! `ip`; where the machine allows neither it prints that it skipped and
//! passes without testing anything.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

mod common;

use common::{Node, wait_until};

/// Named namespaces live under /run/netns: a tmpfs there, private to the
/// test's mount namespace, keeps them off the host's /run.
const PRIVATE_NETNS_DIR: &str = "mkdir -p /run/netns && mount -t tmpfs dfs-test /run/netns";

const INSIDE: &str = "DFS_PARTITION_TEST_INSIDE";
const TEST: &str = "a_partitioned_node_refuses_writes_and_catches_up_after_healing";

/// Run `ip ARGS`, panicking with its error output on failure.
fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Three namespaces `n0`..`n2` with 10.77.0.1..3 on a bridge that lives in
/// a fourth, `hub`, where each node's link can be cut.
fn build_network() {
    let private = Command::new("sh")
        .args(["-c", PRIVATE_NETNS_DIR])
        .status()
        .unwrap();
    assert!(private.success(), "cannot mount a private /run/netns");
    ip(&["link", "set", "lo", "up"]);
    ip(&["netns", "add", "hub"]);
    ip(&["-n", "hub", "link", "add", "br0", "type", "bridge"]);
    ip(&["-n", "hub", "link", "set", "br0", "up"]);
    for i in 0..3 {
        let (ns, inner, outer) = (format!("n{i}"), format!("v{i}"), format!("h{i}"));
        let addr = format!("10.77.0.{}/24", i + 1);
        ip(&["netns", "add", &ns]);
        ip(&[
            "link", "add", &inner, "netns", &ns, "type", "veth", "peer", "name", &outer, "netns",
            "hub",
        ]);
        ip(&["-n", &ns, "addr", "add", &addr, "dev", &inner]);
        ip(&["-n", &ns, "link", "set", &inner, "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ip(&["-n", "hub", "link", "set", &outer, "master", "br0"]);
        ip(&["-n", "hub", "link", "set", &outer, "up"]);
    }
}

fn launcher(i: usize) -> Vec<String> {
    ["ip", "netns", "exec", &format!("n{i}")]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn put(node: &Node, path: &Path, name: &str) -> std::process::Output {
    node.cli(&["put", path.to_str().unwrap(), "--name", name])
}

#[test]
fn a_partitioned_node_refuses_writes_and_catches_up_after_healing() {
    if std::env::var_os(INSIDE).is_some() {
        partition_and_heal();
        return;
    }
    // As root, or through a user namespace where root is not at hand. The
    // pid namespace ties every process the test starts to it: if the test
    // is killed, its nodes die with it.
    let mut reasons = Vec::new();
    for user in [&[][..], &["--user", "--map-root-user"][..]] {
        let isolate = |command: &mut Command| {
            command
                .arg("unshare")
                .args(user)
                .args(["--net", "--mount", "--propagation", "private"])
                .args(["--pid", "--fork", "--kill-child", "--"]);
        };
        let mut probe = Command::new("timeout");
        probe.arg("20");
        isolate(&mut probe);
        match probe
            .args([
                "sh",
                "-c",
                &format!("{PRIVATE_NETNS_DIR} && ip netns add probe"),
            ])
            .output()
        {
            Ok(output) if output.status.success() => {}
            Ok(output) => {
                reasons.push(String::from_utf8_lossy(&output.stderr).trim().to_string());
                continue;
            }
            Err(error) => {
                reasons.push(error.to_string());
                continue;
            }
        }
        let mut run = Command::new("timeout");
        run.arg("300");
        isolate(&mut run);
        let status = run
            .arg(std::env::current_exe().unwrap())
            .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
            .env(INSIDE, "1")
            .status()
            .unwrap();
        assert!(
            status.success(),
            "the partition test failed inside its namespace"
        );
        return;
    }
    // Shown with `--nocapture`, as the test's closing note was checked.
    eprintln!(
        "partition test skipped: this machine cannot make network namespaces ({})",
        reasons.join("; ")
    );
}

fn partition_and_heal() {
    build_network();
    let dir = tempfile::tempdir().unwrap();
    let first = Node::start_in(launcher(0), &dir.path().join("n0"), "10.77.0.1:7400", &[]);
    let key = dir.path().join("n0").join("cluster.key");
    let mut nodes = vec![first];
    for i in 1..3 {
        let mut node = Node::start_in(
            launcher(i),
            &dir.path().join(format!("n{i}")),
            &format!("10.77.0.{}:7400", i + 1),
            &[
                "--bootstrap",
                "10.77.0.1:7400",
                "--cluster-key-file",
                key.to_str().unwrap(),
            ],
        );
        node.credentials = Some(dir.path().join("n0").join("credentials"));
        nodes.push(node);
    }
    wait_until(
        Duration::from_secs(30),
        "3 nodes alive on every node",
        || nodes.iter().all(|n| n.alive_count() == 3),
    );
    let before = dir.path().join("before");
    std::fs::write(&before, vec![1u8; 300_000]).unwrap();
    assert!(put(&nodes[0], &before, "before").status.success());

    // Cut node 2 off.
    ip(&["-n", "hub", "link", "set", "h2", "down"]);
    let cut = wait_until(
        Duration::from_secs(30),
        "each side sees the other down",
        || {
            nodes[0].state_of("10.77.0.3:7400").as_deref() == Some("down")
                && nodes[1].state_of("10.77.0.3:7400").as_deref() == Some("down")
                && nodes[2].alive_count() == 1
        },
    );
    eprintln!("partition seen by both sides after {cut:?}");

    // The majority side takes writes (W=2 of R=3)...
    let during = dir.path().join("during");
    let content: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i * 7 + i / 5000) as u8)
        .collect();
    std::fs::write(&during, &content).unwrap();
    let stored = put(&nodes[0], &during, "during");
    assert!(
        stored.status.success(),
        "a put on the majority side failed: {}",
        String::from_utf8_lossy(&stored.stderr)
    );
    // ...the cut-off node refuses them, saying why, and stores no version.
    let refused = put(&nodes[2], &during, "refused");
    assert!(!refused.status.success(), "a lone node acknowledged a put");
    let reason = String::from_utf8_lossy(&refused.stderr);
    assert!(
        reason.contains("quorum") || reason.contains("reached only"),
        "unclear refusal: {reason}"
    );
    // A quorum read through the cut-off node cannot be answered.
    let read = dir.path().join("read");
    let lone = nodes[2].cli(&["get", "before", "--quorum", "-o", read.to_str().unwrap()]);
    assert!(!lone.status.success(), "a lone node answered a quorum read");

    // Heal: node 2 comes back, learns the version and gets its copies.
    ip(&["-n", "hub", "link", "set", "h2", "up"]);
    let healed = wait_until(Duration::from_secs(60), "3 nodes alive again", || {
        nodes.iter().all(|n| n.alive_count() == 3)
    });
    eprintln!("membership healed after {healed:?}");
    wait_until(
        Duration::from_secs(60),
        "node 2 holds every blob node 0 holds",
        || {
            let blobs = nodes[0].blobs();
            let on_2 = nodes[2].blobs();
            !blobs.is_empty() && blobs.iter().all(|b| on_2.contains(b))
        },
    );
    let got = nodes[2].cli(&["get", "during", "--quorum", "-o", read.to_str().unwrap()]);
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert!(std::fs::read(&read).unwrap() == content);
    wait_until(Duration::from_secs(30), "node 2 lists the version", || {
        let listed = nodes[2].cli(&["ls"]);
        String::from_utf8_lossy(&listed.stdout).contains("during")
    });
    let listed = nodes[2].cli(&["ls"]);
    assert!(!String::from_utf8_lossy(&listed.stdout).contains("refused"));
    for node in &mut nodes {
        node.kill_9();
    }
}
