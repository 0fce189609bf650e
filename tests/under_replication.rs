#![allow(clippy::disallowed_methods)] // In-process nodes on the real clock.
//! `under_replicated` counts only durable copies, this node's own
//! included: a node whose small-blob table is distrusted (its copies there
//! may not survive a crash) reports its blobs under-replicated until they
//! are written again, rather than counting itself as one of their R
//! holders. Three in-process nodes on 127.0.0.1; only the distrusted one
//! runs repair, so nothing rewrites its copies while the test looks.

use std::path::Path;
use std::time::{Duration, Instant};

use dfs::client::Client;
use dfs::cluster::{Cluster, Maintenance};
use dfs::env::{Env, tokio_env};
use dfs::placement::Replication;
use dfs::wire::MemberState;

const NEVER: Duration = Duration::from_secs(3600);

mod common;

use common::in_process::{Running, credentials};

/// A node of a cluster with R=3, W=2 whose repair loop runs every
/// `repair_interval`; its scrub never runs (a scrub would rewrite the
/// distrusted copies itself).
async fn start(
    env: &Env,
    dir: &Path,
    listen: &str,
    bootstrap: Vec<String>,
    repair_interval: Duration,
) -> Running {
    common::in_process::start(
        env,
        dir,
        listen,
        bootstrap,
        Replication::new(3, 2).unwrap(),
        Maintenance {
            repair_interval,
            scrub_interval: NEVER,
            ..Default::default()
        },
    )
    .await
}

/// Wait (at most 60 s) until `cluster`'s status satisfies `done`.
async fn wait_for(cluster: &Cluster, what: &str, done: impl Fn(&dfs::wire::StatusReport) -> bool) {
    let start = Instant::now();
    loop {
        let status = cluster.status().await;
        if done(&status) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what}: not within 60 s; last status {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn all_alive(status: &dfs::wire::StatusReport) -> bool {
    status.members.len() == 3 && status.members.iter().all(|m| m.state == MemberState::Alive)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_in_a_distrusted_table_do_not_count_as_held() {
    let env = tokio_env();
    let dir = tempfile::tempdir().unwrap();
    let first_dir = dir.path().join("n0");
    let first = start(
        &env,
        &first_dir,
        "127.0.0.1:0",
        vec![],
        Duration::from_millis(200),
    )
    .await;
    let mut others = Vec::new();
    for i in 1..3 {
        others.push(
            start(
                &env,
                &dir.path().join(format!("n{i}")),
                "127.0.0.1:0",
                vec![first.addr.clone()],
                NEVER,
            )
            .await,
        );
    }
    wait_for(&first.cluster, "all three alive", all_alive).await;

    // Small files: each a chunk and a manifest, both in every node's table.
    let mut client = Client::connect(&env, &first.addr, &credentials())
        .await
        .unwrap();
    for i in 0..10 {
        let body = format!("small file {i}");
        client
            .put(&format!("f{i}"), &mut body.as_bytes(), &mut |_| {})
            .await
            .unwrap();
    }
    drop(client);
    wait_for(&first.cluster, "every blob confirmed on 3 nodes", |s| {
        s.chunks >= 20 && s.under_replicated == 0
    })
    .await;

    // Distrust the first node's table (as a failed sync of it would) and
    // restart it: its 20 copies are still there and readable, but none is
    // durable, so each blob has 2 durable copies of the 3.
    let addr = first.addr.clone();
    first.stop().await;
    std::fs::write(first_dir.join("small-blobs.distrusted"), b"").unwrap();
    let first = start(&env, &first_dir, &addr, vec![], Duration::from_millis(200)).await;
    wait_for(&first.cluster, "all three alive again", all_alive).await;
    // A round that ran before the others were seen alive again counted
    // every blob under-replicated whatever the copies: let rounds (every
    // 200 ms) that see all three replace its figure.
    tokio::time::sleep(Duration::from_secs(1)).await;
    wait_for(
        &first.cluster,
        "the distrusted copies reported under-replicated, with their bytes",
        // The ten bodies are 12 bytes each; the manifests add more.
        |s| s.under_replicated >= 20 && s.under_replicated_bytes > 120,
    )
    .await;

    first.stop().await;
    for other in others {
        other.stop().await;
    }
}
