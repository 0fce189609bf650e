#![allow(clippy::disallowed_methods)] // Real processes: these tests wait on the real clock.
//! The write quorum never silently shrinks: a node that restarts cut off
//! from its cluster, or after it forgot its down members, refuses writes it
//! cannot make durable on W nodes, and says why.

use std::time::Duration;

mod common;

use common::{Node, start_cluster, wait_until};

#[test]
fn a_node_restarted_alone_refuses_writes_below_the_quorum() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(dir.path(), 3);
    wait_until(Duration::from_secs(30), "all 3 alive on every node", || {
        nodes.iter().all(|n| n.alive_count() == 3)
    });
    let file = dir.path().join("f");
    std::fs::write(&file, b"an acknowledged file").unwrap();
    let put = |node: &Node, name: &str| node.cli(&["put", file.to_str().unwrap(), "--name", name]);
    assert!(put(&nodes[0], "f1").status.success());

    // The other two die; the first stops and comes back alone.
    nodes[1].kill_9();
    nodes[2].kill_9();
    nodes[0].kill_9();
    let (data_dir, addr) = (nodes[0].data_dir.clone(), nodes[0].addr.clone());
    let credentials = nodes[0].credentials.clone();
    nodes[0] = Node::start(&data_dir, &addr, &[]);
    nodes[0].credentials = credentials;

    let refused = put(&nodes[0], "f2");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "a put with one node up of a 3-node cluster (W=2) was acknowledged"
    );
    assert!(
        stderr.contains("write quorum 2"),
        "the refusal does not say why: {stderr}"
    );

    // Forgetting the down members (as SWIM does after 24 h, or a lost
    // members.json) does not shrink the quorum either.
    nodes[0].kill_9();
    std::fs::remove_file(data_dir.join("members.json")).unwrap();
    let credentials = nodes[0].credentials.clone();
    nodes[0] = Node::start(&data_dir, &addr, &[]);
    nodes[0].credentials = credentials;
    let refused = put(&nodes[0], "f3");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("write quorum 2"),
        "a put after the members were forgotten was not refused for the quorum: {stderr}"
    );
    // Reads of what was acknowledged still work.
    let out = dir.path().join("out");
    let got = nodes[0].cli(&["get", "f1", "-o", out.to_str().unwrap()]);
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"an acknowledged file");
}

#[test]
fn a_node_that_was_always_alone_takes_writes_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&dir.path().join("solo"), "127.0.0.1:0", &[]);
    let file = dir.path().join("f");
    std::fs::write(&file, b"solo").unwrap();
    let output = node.cli(&["put", file.to_str().unwrap(), "--name", "f"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        node.log_text()
            .contains("this node has never had another member"),
        "the node does not say that its writes need fewer copies than W: {}",
        node.log_text()
    );
}
