#![allow(clippy::disallowed_methods)] // Real processes: these tests wait on the real clock.
//! Replication across real `dfs-node` processes on 127.0.0.1: a put through
//! one node is readable through another, each blob lives on exactly R
//! nodes, acknowledged files survive `kill -9` of W nodes, and after a
//! restart the copies and the version history are whole again everywhere.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

mod common;

use common::{Node, start_cluster_with, wait_until};

/// Every blob a file, so that `Node::blobs` sees them all (placement is
/// what these tests check, not the store's layout).
const ALL_BLOBS_FILES: &[&str] = &["--small-blob-bytes-max", "0"];
use dfs::cas::ChunkId;
use dfs::keys::NodeId;
use dfs::placement;

const REPLICAS: usize = 3;

/// Deterministic pseudo-random bytes (xorshift), so chunks differ.
fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn put(node: &Node, path: &Path, name: &str) {
    let output = node.cli(&["put", path.to_str().unwrap(), "--name", name]);
    assert!(
        output.status.success(),
        "put {name} through {}: {}",
        node.addr,
        String::from_utf8_lossy(&output.stderr)
    );
}

fn get(node: &Node, name: &str, out: &Path) -> Vec<u8> {
    let output = node.cli(&["get", name, "-o", out.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "get {name} through {}: {}",
        node.addr,
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::read(out).unwrap()
}

fn versions(node: &Node, name: &str) -> String {
    let output = node.cli(&["versions", name, "--json"]);
    String::from_utf8_lossy(&output.stdout).to_string()
}

fn node_id(node: &Node) -> NodeId {
    let status = node.status().expect("status");
    let hex = status["node_id"].as_str().unwrap();
    NodeId(hex::decode(hex).unwrap().try_into().unwrap())
}

/// For each blob on any of `nodes`, whether it is on exactly its R owners
/// by rendezvous hashing over `ids` (and nowhere else).
fn misplaced(nodes: &[Node], ids: &[NodeId]) -> Vec<String> {
    let mut holders: BTreeMap<String, Vec<NodeId>> = BTreeMap::new();
    for (node, id) in nodes.iter().zip(ids) {
        for blob in node.blobs() {
            holders.entry(blob).or_default().push(*id);
        }
    }
    let mut wrong = Vec::new();
    for (blob, mut held_by) in holders {
        let chunk: ChunkId = blob.parse().unwrap();
        let mut owners = placement::owners(&chunk, ids, REPLICAS);
        owners.sort();
        held_by.sort();
        if owners != held_by {
            wrong.push(format!(
                "{blob}: on {} nodes, not its owners",
                held_by.len()
            ));
        }
    }
    wrong
}

/// How many of `nodes` hold each blob.
fn copies(nodes: &[&Node]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for node in nodes {
        for blob in node.blobs() {
            *counts.entry(blob).or_insert(0) += 1;
        }
    }
    counts
}

#[test]
fn five_nodes_replicate_survive_two_kills_and_heal() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster_with(dir.path(), 5, ALL_BLOBS_FILES);
    wait_until(Duration::from_secs(30), "all 5 alive on every node", || {
        nodes.iter().all(|n| n.alive_count() == 5)
    });

    // 6 MiB of random bytes: several chunks plus a manifest.
    let files: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| (format!("file-{i}"), random_bytes(2 << 20, 7 + i)))
        .collect();
    for (i, (name, bytes)) in files.iter().enumerate() {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        put(&nodes[i % 2], &path, name);
    }

    // Through another node, byte for byte.
    for (name, bytes) in &files {
        let got = get(&nodes[4], name, &dir.path().join("out"));
        assert!(got == *bytes, "{name} read through node 4 differs");
    }

    // Every blob is on exactly R data dirs: its R owners.
    let ids: Vec<NodeId> = nodes.iter().map(node_id).collect();
    let all: Vec<&Node> = nodes.iter().collect();
    let placed = copies(&all);
    assert!(placed.len() >= files.len() * 2, "too few blobs: {placed:?}");
    for (blob, count) in &placed {
        assert_eq!(*count, REPLICAS, "blob {blob} has {count} copies");
    }
    assert_eq!(misplaced(&nodes, &ids), Vec::<String>::new());

    // The history of each name reached every node.
    for (name, _) in &files {
        let expected = versions(&nodes[0], name);
        wait_until(
            Duration::from_secs(10),
            "versions identical on all 5",
            || nodes.iter().all(|n| versions(n, name) == expected),
        );
    }

    // kill -9 of W = 2 nodes: every acknowledged file is still readable.
    nodes[1].kill_9();
    nodes[3].kill_9();
    for (name, bytes) in &files {
        let got = get(&nodes[2], name, &dir.path().join("out"));
        assert!(got == *bytes, "{name} after two kills differs");
    }
    // A put still succeeds with 3 of 5 up (stand-ins take the place of
    // down owners).
    let late = random_bytes(1 << 20, 99);
    let late_path = dir.path().join("late");
    std::fs::write(&late_path, &late).unwrap();
    wait_until(Duration::from_secs(15), "the kills are detected", || {
        nodes[0].alive_count() == 3
    });
    put(&nodes[0], &late_path, "late");

    // Restart both (no bootstrap: they remember the cluster). After repair
    // every blob is back on R nodes and every history is the same on all 5.
    for victim in [1, 3] {
        let data_dir = nodes[victim].data_dir.clone();
        let addr = nodes[victim].addr.clone();
        let credentials = nodes[victim].credentials.clone();
        nodes[victim] = Node::start(&data_dir, &addr, ALL_BLOBS_FILES);
        nodes[victim].credentials = credentials;
    }
    wait_until(Duration::from_secs(30), "all 5 alive again", || {
        nodes.iter().all(|n| n.alive_count() == 5)
    });
    let took = wait_until(
        Duration::from_secs(60),
        "every blob on exactly its R owners",
        || misplaced(&nodes, &ids).is_empty(),
    );
    eprintln!("repair and rebalance put every blob on its owners in {took:?}");
    wait_until(
        Duration::from_secs(20),
        "status shows nothing under-replicated",
        || {
            nodes
                .iter()
                .all(|n| n.status().is_some_and(|s| s["under_replicated"] == 0))
        },
    );
    for name in files.iter().map(|(n, _)| n.as_str()).chain(["late"]) {
        let expected = versions(&nodes[0], name);
        assert!(expected.contains("content_id"), "{name}: {expected}");
        wait_until(
            Duration::from_secs(20),
            "versions identical on all 5",
            || nodes.iter().all(|n| versions(n, name) == expected),
        );
    }
    let got = get(&nodes[3], "late", &dir.path().join("out"));
    assert!(
        got == late,
        "the file put while two nodes were down differs"
    );
}
