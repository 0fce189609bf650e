#![allow(clippy::disallowed_methods)] // In-process nodes on the real clock.
//! Anti-entropy costs what differs, not what exists: two in-process nodes on
//! 127.0.0.1; one catches up on a history it missed and the records that
//! travel are about as many as were missing.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dfs::client::Client;
use dfs::cluster::{Cluster, ReplicationCounters};
use dfs::env::{Env, tokio_env};
use dfs::placement::Replication;

mod common;

use common::in_process::{Running, credentials};

/// A node replicating to one (R=1, W=1), with the default periods.
async fn start(env: &Env, dir: &Path, listen: &str, bootstrap: Vec<String>) -> Running {
    common::in_process::start(
        env,
        dir,
        listen,
        bootstrap,
        Replication::new(1, 1).unwrap(),
        Default::default(),
    )
    .await
}

async fn put_many(env: &Env, addr: &str, range: std::ops::Range<usize>) {
    let mut client = Client::connect(env, addr, &credentials()).await.unwrap();
    for i in range {
        let body = format!("file {i}");
        client
            .put(&format!("f{i:04}"), &mut body.as_bytes(), &mut |_| {})
            .await
            .unwrap();
    }
}

/// Records both nodes have sent in anti-entropy (pulls served, pushes made).
fn sent(nodes: &[&Arc<Cluster>]) -> u64 {
    nodes
        .iter()
        .map(|c| ReplicationCounters::get(&c.counters.sync_records_sent))
        .sum()
}

async fn wait_converged(a: &Cluster, b: &Cluster, records: usize) -> Duration {
    let start = Instant::now();
    loop {
        let (x, y) = (
            a.index_snapshot().await.unwrap(),
            b.index_snapshot().await.unwrap(),
        );
        let count: usize = x.names.values().map(|h| h.records.len()).sum();
        if x == y && count == records {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "not converged: {count} records on the first node"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_catches_up_by_exchanging_only_what_differs() {
    let env = tokio_env();
    let dir = tempfile::tempdir().unwrap();
    let a = start(&env, &dir.path().join("a"), "127.0.0.1:0", Vec::new()).await;
    put_many(&env, &a.addr, 0..300).await;

    // B joins after the fact: it misses all 300 records.
    let b = start(
        &env,
        &dir.path().join("b"),
        "127.0.0.1:0",
        vec![a.addr.clone()],
    )
    .await;
    let took = wait_converged(&a.cluster, &b.cluster, 300).await;
    let first = sent(&[&a.cluster, &b.cluster]);
    eprintln!("joining node caught up on 300 records in {took:?}; {first} records sent");
    assert!(
        (300..=600).contains(&first),
        "{first} records sent to repair 300 missing"
    );

    // B goes down; 20 more versions are written; B comes back on its port.
    let b_addr = b.addr.clone();
    b.stop().await;
    put_many(&env, &a.addr, 300..320).await;
    let before = ReplicationCounters::get(&a.cluster.counters.sync_records_sent);
    let b = start(&env, &dir.path().join("b"), &b_addr, Vec::new()).await;
    let took = wait_converged(&a.cluster, &b.cluster, 320).await;
    let second = ReplicationCounters::get(&a.cluster.counters.sync_records_sent) - before
        + ReplicationCounters::get(&b.cluster.counters.sync_records_sent);
    eprintln!("restarted node caught up on 20 of 320 records in {took:?}; {second} records sent");
    assert!(
        (20..=40).contains(&second),
        "{second} records sent to repair 20 missing out of 320"
    );
    a.stop().await;
    b.stop().await;
}
