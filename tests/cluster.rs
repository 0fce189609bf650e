#![allow(clippy::disallowed_methods)] // Real processes: these tests wait on the real clock.
//! Real `dfs-node` processes on 127.0.0.1 forming a cluster: joining through
//! a bootstrap address, failure detection after `kill -9`, rejoining from
//! the persisted member list, refusal of a node with another cluster key,
//! and hostile bytes on the port.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread::sleep;
use std::time::Duration;

mod common;

use common::{
    DETECTION_BUDGET, Node, PROBE_INTERVAL_MS, SUSPECT_TIMEOUT_MS, start_cluster, wait_until,
};

#[test]
fn five_nodes_join_detect_a_kill_and_take_the_restarted_node_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(dir.path(), 5);
    let joined = wait_until(Duration::from_secs(30), "all 5 alive on every node", || {
        nodes.iter().all(|n| n.alive_count() == 5)
    });
    eprintln!("5 nodes joined in {joined:?}");

    let victim = 3;
    let victim_addr = nodes[victim].addr.clone();
    nodes[victim].kill_9();
    let detected = wait_until(
        DETECTION_BUDGET,
        "every other node sees the killed node as down",
        || {
            nodes
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != victim)
                .all(|(_, n)| n.state_of(&victim_addr).as_deref() == Some("down"))
        },
    );
    eprintln!(
        "kill -9 seen as down by all 4 others after {detected:?} (probe {PROBE_INTERVAL_MS} ms, suspicion {SUSPECT_TIMEOUT_MS} ms, budget {DETECTION_BUDGET:?})"
    );

    // Restart on the same port, with no bootstrap address: it must find the
    // cluster from its persisted member list.
    let data_dir = nodes[victim].data_dir.clone();
    let credentials = nodes[victim].credentials.clone();
    nodes[victim] = Node::start(&data_dir, &victim_addr, &[]);
    nodes[victim].credentials = credentials;
    let back = wait_until(
        Duration::from_secs(30),
        "restarted node alive again everywhere",
        || nodes.iter().all(|n| n.alive_count() == 5),
    );
    eprintln!("restarted node seen alive by all after {back:?}");
    assert!(
        nodes[0].log_text().contains("member restarted or rejoined")
            || nodes[0].log_text().contains("member joined"),
        "node 0 logged no rejoin"
    );
}

#[test]
fn a_node_with_another_cluster_key_is_refused_and_never_listed() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster(dir.path(), 2);
    wait_until(Duration::from_secs(20), "2 nodes alive", || {
        nodes.iter().all(|n| n.alive_count() == 2)
    });
    // Its own data dir, so it generates its own (different) cluster key.
    let intruder = Node::start(
        &dir.path().join("intruder"),
        "127.0.0.1:0",
        &["--bootstrap", &nodes[0].addr],
    );
    wait_until(
        Duration::from_secs(20),
        "node 0 logs the refused handshake",
        || {
            nodes[0].log_text().lines().any(|l| {
                l.contains("handshake refused") && l.contains("does not share this cluster key")
            })
        },
    );
    sleep(Duration::from_secs(2));
    for node in &nodes {
        let status = node.status().unwrap();
        assert_eq!(
            status["members"].as_array().unwrap().len(),
            2,
            "the intruder appears in a member list: {status}"
        );
    }
    // (The intruder has no access key of the cluster to ask its status
    // with: it joined none, so it made none.)
    assert!(
        !intruder.log_text().contains("member joined"),
        "the intruder saw a member"
    );
    assert!(
        intruder
            .log_text()
            .contains("does not share this cluster key"),
        "the intruder's log does not say why it cannot join"
    );
}

#[test]
fn garbage_and_oversize_prefixes_close_only_their_connection() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = start_cluster(dir.path(), 2);
    wait_until(Duration::from_secs(20), "2 nodes alive", || {
        nodes.iter().all(|n| n.alive_count() == 2)
    });
    let node = &nodes[0];
    // Random bytes.
    let mut garbage = TcpStream::connect(&node.addr).unwrap();
    let mut bytes = vec![0u8; 70_000];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0];
    }
    let _ = garbage.write_all(&bytes);
    // The largest handshake length prefix, then a u32::MAX "frame" prefix,
    // then silence (a slowloris holding the connection open).
    let mut slow = TcpStream::connect(&node.addr).unwrap();
    slow.write_all(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
        .unwrap();
    // A connection that sends nothing at all.
    let _idle = TcpStream::connect(&node.addr).unwrap();

    // Meanwhile the node serves normally.
    for _ in 0..3 {
        let status = node
            .status()
            .expect("node stops serving under hostile input");
        assert_eq!(status["members"].as_array().unwrap().len(), 2);
    }
    // The garbage connection was closed by the node.
    garbage
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut sink = [0u8; 1024];
    let closed = loop {
        match garbage.read(&mut sink) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    assert!(closed, "the node kept a garbage connection open");
    wait_until(
        Duration::from_secs(20),
        "the slowloris connection is dropped with a logged reason",
        || nodes[0].log_text().matches("handshake refused").count() >= 2,
    );
    assert!(node.status().is_some(), "the node died");
}
