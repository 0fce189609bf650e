//! Small objects at load: 16 clients at once, spread over a 3-node cluster
//! (R=3, W=2, every put durable on W nodes before it is acknowledged),
//! putting distinct 4 KiB files, then reading them back at random. Prints
//! puts/s and gets/s with p50/p99 latencies beside the machine's own disk
//! sync times measured in the same run.
//! `cargo bench --bench small_objects` (DFS_BENCH_CLIENTS, DFS_BENCH_PUTS,
//! DFS_BENCH_GETS to change the load).
//!
//! Targets (issue 12): >= 2,000 acknowledged puts/s and >= 8,000 gets/s.

// A benchmark measures real time; the determinism rule is for node logic.
#![allow(clippy::disallowed_methods)]

mod support;

use std::path::Path;
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dfs::client::Client;
use dfs::env::tokio_env;
use dfs::keys::credentials::Credentials;
use dfs::wire::GetTarget;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use support::{http_get, machine_limits, metric_sum, peak_rss_mib, spawn_node_with_endpoints};

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3
}

/// Start a 3-node cluster; returns the nodes (process, address, admin
/// endpoint).
fn cluster(root: &Path) -> Vec<(Child, String, String)> {
    let first_dir = root.join("n0");
    let (first, first_addr, _, admin) = spawn_node_with_endpoints(&first_dir, &[]);
    let key = first_dir.join("cluster.key");
    let mut nodes = vec![(first, first_addr.clone(), admin)];
    for i in 1..3 {
        let (child, addr, _, admin) = spawn_node_with_endpoints(
            &root.join(format!("n{i}")),
            &[
                "--bootstrap",
                &first_addr,
                "--cluster-key-file",
                key.to_str().unwrap(),
            ],
        );
        nodes.push((child, addr, admin));
    }
    nodes
}

/// Per node: file syncs, directory syncs, seconds spent in syncs, index
/// merges, index transactions, small-blob table changes and transactions.
fn disk_work(nodes: &[(Child, String, String)]) -> Vec<[f64; 7]> {
    nodes
        .iter()
        .map(|(_, _, admin)| {
            let metrics = http_get(admin, "/metrics");
            [
                metric_sum(
                    &metrics,
                    "dfs_disk_sync_duration_seconds_count{kind=\"file\"}",
                ),
                metric_sum(
                    &metrics,
                    "dfs_disk_sync_duration_seconds_count{kind=\"dir\"}",
                ),
                metric_sum(&metrics, "dfs_disk_sync_duration_seconds_sum"),
                metric_sum(&metrics, "dfs_index_merges_total"),
                metric_sum(&metrics, "dfs_index_commits_total"),
                metric_sum(&metrics, "dfs_small_blob_changes_total"),
                metric_sum(&metrics, "dfs_small_blob_commits_total"),
            ]
        })
        .collect()
}

fn main() {
    let clients = setting("DFS_BENCH_CLIENTS", 16);
    let puts = setting("DFS_BENCH_PUTS", 4000);
    let gets = setting("DFS_BENCH_GETS", 16000);
    let dir = tempfile::tempdir().unwrap();
    let limits = machine_limits(dir.path());
    let mut nodes = cluster(dir.path());
    let addrs: Vec<String> = nodes.iter().map(|(_, addr, _)| addr.clone()).collect();
    let credentials_path = dir.path().join("n0").join("credentials");
    // The clients share one thread (the client's futures are not Send);
    // the nodes are processes of their own.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    let (put_rate, mut put_latency, get_rate, mut get_latency) = local.block_on(&runtime, async {
        let env = tokio_env();
        let credentials = Credentials::load(&env, &credentials_path).unwrap();
        // Every node must know the admin key and count 3 members before
        // the load starts (W=2 needs a second node).
        let start = Instant::now();
        let mut connected = Vec::new();
        for i in 0..clients {
            let addr = &addrs[i % addrs.len()];
            loop {
                if let Ok(mut client) = Client::connect(&env, addr, &credentials).await
                    && client
                        .status()
                        .await
                        .is_ok_and(|s| s.members.len() == 3 && s.not_ready.is_none())
                {
                    connected.push(client);
                    break;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "cluster did not form"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }

        let per_client = puts / clients;
        let disk_before = disk_work(&nodes);
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for (c, mut client) in connected.into_iter().enumerate() {
            tasks.spawn_local(async move {
                let mut rng = ChaCha8Rng::seed_from_u64(c as u64);
                let mut latencies = Vec::with_capacity(per_client);
                for i in 0..per_client {
                    let mut body = vec![0u8; 4096];
                    rng.fill_bytes(&mut body);
                    let start = Instant::now();
                    client
                        .put(&format!("small/{c}/{i}"), &mut body.as_slice(), &mut |_| {})
                        .await
                        .unwrap();
                    latencies.push(start.elapsed());
                }
                (client, latencies)
            });
        }
        let mut clients_back = Vec::new();
        let mut put_latency = Vec::new();
        while let Some(done) = tasks.join_next().await {
            let (client, latencies) = done.unwrap();
            clients_back.push(client);
            put_latency.extend(latencies);
        }
        let put_rate = put_latency.len() as f64 / started.elapsed().as_secs_f64();
        let disk_after = disk_work(&nodes);
        let done = put_latency.len() as f64;
        for (i, (before, after)) in disk_before.iter().zip(&disk_after).enumerate() {
            println!(
                "node {i} per put: {:.2} file syncs, {:.2} directory syncs, {:.3} ms syncing; {:.2} index merges in {:.2} transactions; {:.2} small blobs in {:.2} transactions",
                (after[0] - before[0]) / done,
                (after[1] - before[1]) / done,
                (after[2] - before[2]) / done * 1e3,
                (after[3] - before[3]) / done,
                (after[4] - before[4]) / done,
                (after[5] - before[5]) / done,
                (after[6] - before[6]) / done,
            );
        }

        let per_client = gets / clients;
        let written = Arc::new(puts / clients);
        let started = Instant::now();
        for (c, mut client) in clients_back.into_iter().enumerate() {
            let written = written.clone();
            tasks.spawn_local(async move {
                let mut rng = ChaCha8Rng::seed_from_u64(1000 + c as u64);
                let mut latencies = Vec::with_capacity(per_client);
                let mut out = Vec::with_capacity(4096);
                for _ in 0..per_client {
                    let owner = rng.next_u64() as usize % clients;
                    let i = rng.next_u64() as usize % *written;
                    out.clear();
                    let start = Instant::now();
                    client
                        .get(
                            GetTarget::Name(format!("small/{owner}/{i}")),
                            None,
                            &mut out,
                            &mut |_, _| {},
                        )
                        .await
                        .unwrap();
                    latencies.push(start.elapsed());
                    assert_eq!(out.len(), 4096);
                }
                (client, latencies)
            });
        }
        let mut get_latency = Vec::new();
        while let Some(done) = tasks.join_next().await {
            get_latency.extend(done.unwrap().1);
        }
        let get_rate = get_latency.len() as f64 / started.elapsed().as_secs_f64();
        (put_rate, put_latency, get_rate, get_latency)
    });
    put_latency.sort();
    get_latency.sort();
    let rss: Vec<String> = nodes
        .iter()
        .map(|(child, _, _)| format!("{:.1} MiB", peak_rss_mib(child.id())))
        .collect();
    for (child, _, _) in &mut nodes {
        let _ = child.kill();
        let _ = child.wait();
    }
    // The disk's bound on small puts measured right after them: the host
    // is shared, and its disk's speed drifts with the neighbours.
    let syncs_after = support::parallel_syncs_per_s(dir.path(), 16, Duration::from_secs(2));
    let syncs_per_s = limits.parallel_syncs_per_s.max(syncs_after);
    println!(
        "{clients} clients, 3 nodes (R=3, W=2), 4 KiB puts: {put_rate:.0} acknowledged puts/s (target >= 2000), \
p50 {:.2} ms, p99 {:.2} ms; {:.3} puts per synced 4 KiB file the disk sustains with 16 writers ({syncs_per_s:.0}/s, best of before and after)",
        percentile_ms(&put_latency, 0.5),
        percentile_ms(&put_latency, 0.99),
        put_rate / syncs_per_s
    );
    println!(
        "{clients} clients, 4 KiB gets by name: {get_rate:.0} gets/s (target >= 8000), p50 {:.2} ms, p99 {:.2} ms",
        percentile_ms(&get_latency, 0.5),
        percentile_ms(&get_latency, 0.99),
    );
    println!("peak RSS per node: {}", rss.join(", "));
}
