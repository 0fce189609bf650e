//! End to end on a 3-node loopback cluster (R=3, W=2, the defaults): put
//! and get throughput of a 1 GiB file through the real binary, p50/p99
//! latency of 4 KiB puts and gets through the client library, the same
//! through S3 with boto3 (`s3_bench.py`: multipart with its default
//! settings, then sequential PutObject and GetObject), and each node's
//! peak RSS, printed next to this machine's hash and seal rates measured
//! in the same run. `cargo bench --bench cluster` (DFS_BENCH_MIB=N for
//! another size, DFS_BENCH_SMALL=N for the count of small operations;
//! without python3 and boto3 the S3 half is skipped, saying so).
//!
//! Every byte put is hashed by the coordinator and again by each other
//! owner that receives it, and sealed on three nodes; all of them share
//! this machine's cores. So the 1 GiB transfers also print their CPU cost
//! (the three nodes' CPU-seconds per GiB together, and the CLI's; see
//! `throughput.rs`).

// A benchmark measures real time; the determinism rule is for node logic.
#![allow(clippy::disallowed_methods)]

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use dfs::client::Client;
use dfs::env::tokio_env;
use dfs::keys::credentials::Credentials;
use dfs::wire::GetTarget;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use support::{
    BIN, CpuCost, PrimitiveCost, bench_mib, children_cpu_seconds, cpu_seconds, machine_limits,
    mib_per_s, peak_rss_mib, run, spawn_node_with_s3, write_random_file,
};

fn alive_members(addr: &str, data_dir: &Path) -> usize {
    let output = Command::new(BIN)
        .args(["status", "--json", "--node", addr, "--data-dir"])
        .arg(data_dir)
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
    status["members"]
        .as_array()
        .map(|m| m.iter().filter(|m| m["state"] == "alive").count())
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let mib = bench_mib();
    let small: usize = std::env::var("DFS_BENCH_SMALL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let size = mib << 20;
    let dir = tempfile::tempdir().unwrap();
    let before = machine_limits(dir.path());
    let input = dir.path().join("input.bin");
    write_random_file(&input, size);
    let first_dir = dir.path().join("n0");
    let (first, first_addr, first_s3) = spawn_node_with_s3(&first_dir, &[]);
    let key = first_dir.join("cluster.key");
    let mut nodes = vec![(first, first_addr.clone(), first_dir.clone())];
    let mut s3_endpoints = vec![first_s3];
    for i in 1..3 {
        let data_dir = dir.path().join(format!("n{i}"));
        let (child, addr, s3) = spawn_node_with_s3(
            &data_dir,
            &[
                "--bootstrap",
                &first_addr,
                "--cluster-key-file",
                key.to_str().unwrap(),
            ],
        );
        nodes.push((child, addr, data_dir));
        s3_endpoints.push(s3);
    }
    let start = Instant::now();
    // Every client command uses the first node's admin key (in its data
    // dir; the others learn the key by sync).
    while !nodes
        .iter()
        .all(|(_, addr, _)| alive_members(addr, &first_dir) == 3)
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "cluster did not form"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // CPU seconds of the three nodes together and of the CLI.
    let cpu = |nodes: &[(std::process::Child, String, std::path::PathBuf)]| {
        (
            nodes
                .iter()
                .map(|(child, _, _)| cpu_seconds(child.id()))
                .sum::<f64>(),
            children_cpu_seconds(),
        )
    };
    let cpu_before_put = cpu(&nodes);
    let put_seconds = run(
        &["put", input.to_str().unwrap(), "--name", "big"],
        &first_addr,
        &first_dir,
    );
    let cpu_after_put = cpu(&nodes);
    // Read through another node than the one that coordinated the put.
    let output = dir.path().join("output.bin");
    let (_, second_addr, _) = &nodes[1];
    let get_seconds = run(
        &["get", "big", "-o", output.to_str().unwrap()],
        second_addr,
        &first_dir,
    );
    let cpu_after_get = cpu(&nodes);
    let same = std::fs::metadata(&output).unwrap().len() == size as u64;
    assert!(same, "the file read back has the wrong size");

    // Small operations: one client connection, sequential requests.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (put_latency, get_latency) = runtime.block_on(async {
        let env = tokio_env();
        let credentials = Credentials::load(&env, &first_dir.join("credentials")).unwrap();
        let mut client = Client::connect(&env, &first_addr, &credentials)
            .await
            .unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut puts = Vec::with_capacity(small);
        for i in 0..small {
            let mut body = vec![0u8; 4096];
            rng.fill_bytes(&mut body);
            let start = Instant::now();
            client
                .put(&format!("small/{i}"), &mut body.as_slice(), &mut |_| {})
                .await
                .unwrap();
            puts.push(start.elapsed());
        }
        let mut gets = Vec::with_capacity(small);
        for i in 0..small {
            let mut out = Vec::new();
            let start = Instant::now();
            client
                .get(
                    GetTarget::Name(format!("small/{i}")),
                    None,
                    &mut out,
                    &mut |_, _| {},
                )
                .await
                .unwrap();
            gets.push(start.elapsed());
            assert_eq!(out.len(), 4096);
        }
        puts.sort();
        gets.sort();
        (puts, gets)
    });

    let s3 = s3_figures(&first_dir, &s3_endpoints, &input, small);

    let rss: Vec<f64> = nodes
        .iter()
        .map(|(child, _, _)| peak_rss_mib(child.id()))
        .collect();
    for (child, _, _) in &mut nodes {
        let _ = child.kill();
        let _ = child.wait();
    }

    let machine = before.best(machine_limits(dir.path()));
    let combined = machine.serial;
    let PrimitiveCost {
        sha,
        aead,
        tag_check,
        fastcdc: cdc,
    } = machine.seconds_per_gib();
    let cost = |readings, floor_node, floor_client| {
        CpuCost::between(3, size, readings, floor_node, floor_client)
    };
    // A put: the coordinator decrypts, hashes, seals the chunk and
    // encrypts the sealed chunk to each of the two other owners, which
    // decrypt it and check its tag. A get through an owner: it opens its
    // copy and encrypts.
    let put_cost = cost(
        (cpu_before_put, cpu_after_put),
        4.0 * aead + sha + 2.0 * (aead + tag_check),
        cdc + sha + aead,
    );
    let get_cost = cost((cpu_after_put, cpu_after_get), 2.0 * aead, aead + sha);
    let put = mib_per_s(size, put_seconds);
    let get = mib_per_s(size, get_seconds);
    println!(
        "3 nodes, R=3 W=2: put {mib} MiB: {put:.0} MiB/s ({:.2} x one core's hash+seal); {}",
        put / combined,
        put_cost.describe(put)
    );
    println!(
        "3 nodes, R=3 W=2: get {mib} MiB through another node: {get:.0} MiB/s ({:.2} x one core's hash+seal); {}",
        get / combined,
        get_cost.describe(get)
    );
    println!(
        "4 KiB put latency over {small}: p50 {:.2} ms, p99 {:.2} ms",
        percentile(&put_latency, 0.5).as_secs_f64() * 1e3,
        percentile(&put_latency, 0.99).as_secs_f64() * 1e3
    );
    println!(
        "4 KiB get latency over {small}: p50 {:.2} ms, p99 {:.2} ms",
        percentile(&get_latency, 0.5).as_secs_f64() * 1e3,
        percentile(&get_latency, 0.99).as_secs_f64() * 1e3
    );
    match s3 {
        Some(s3) => {
            let up = mib_per_s(size, s3.upload_s);
            let down = mib_per_s(size, s3.download_s);
            println!(
                "S3 (boto3, default multipart): upload {mib} MiB: {up:.0} MiB/s ({:.2} x the native put), download through another node: {down:.0} MiB/s ({:.2} x the native get)",
                up / put,
                down / get
            );
            println!(
                "S3 4 KiB PutObject over {small}: p50 {:.2} ms, p99 {:.2} ms; GetObject: p50 {:.2} ms, p99 {:.2} ms (boto3 itself spends {:.2} ms per PutObject with no server)",
                percentile(&s3.put, 0.5).as_secs_f64() * 1e3,
                percentile(&s3.put, 0.99).as_secs_f64() * 1e3,
                percentile(&s3.get, 0.5).as_secs_f64() * 1e3,
                percentile(&s3.get, 0.99).as_secs_f64() * 1e3,
                s3.client_put_overhead_s * 1e3
            );
        }
        None => println!("S3: skipped (needs python3 with boto3)"),
    }
    println!(
        "peak RSS per node: {}",
        rss.iter()
            .map(|r| format!("{r:.1} MiB"))
            .collect::<Vec<_>>()
            .join(", ")
    );
}

struct S3Figures {
    upload_s: f64,
    download_s: f64,
    put: Vec<Duration>,
    get: Vec<Duration>,
    client_put_overhead_s: f64,
}

/// Run `s3_bench.py` against the cluster (`None` when boto3 is missing).
fn s3_figures(
    first_dir: &Path,
    endpoints: &[String],
    input: &Path,
    small: usize,
) -> Option<S3Figures> {
    let credentials = std::fs::read_to_string(first_dir.join("credentials")).unwrap();
    let field = |name: &str| {
        credentials
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|rest| rest.trim_start_matches([' ', '=']).trim().to_string())
            .unwrap()
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/s3_bench.py");
    let output = Command::new("python3")
        .arg(script)
        .env("DFS_S3", &endpoints[0])
        .env("DFS_S3_OTHER", &endpoints[1])
        .env("DFS_KEY_ID", field("access_key_id"))
        .env("DFS_SECRET", field("secret_access_key"))
        .env("DFS_BENCH_FILE", input)
        .env("DFS_BENCH_SMALL", small.to_string())
        .output()
        .ok()?;
    if !output.status.success() {
        eprintln!(
            "S3 bench failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        return None;
    }
    let figures: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        figures["same_size"], true,
        "the S3 download has the wrong size"
    );
    let durations = |name: &str| {
        let mut all: Vec<Duration> = figures[name]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| Duration::from_secs_f64(v.as_f64().unwrap()))
            .collect();
        all.sort();
        all
    };
    Some(S3Figures {
        upload_s: figures["upload_s"].as_f64().unwrap(),
        download_s: figures["download_s"].as_f64().unwrap(),
        put: durations("put_s"),
        get: durations("get_s"),
        client_put_overhead_s: figures["client_put_overhead_s"].as_f64().unwrap(),
    })
}
