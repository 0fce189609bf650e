//! End to end on one node: put and get of a 1 GiB file through the real
//! binary over loopback, printed next to this machine's single-core SHA-256
//! and ChaCha20-Poly1305 rates measured in the same run, and the node's peak
//! RSS. `cargo bench --bench throughput` (DFS_BENCH_MIB=N for another size).
//!
//! Target (issue 2): put and get each >= 0.5 x 1/(1/sha + 1/aead), and the
//! node's peak RSS during the put below 64 MiB.

// A benchmark measures real time; the determinism rule is for node logic.
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_dfs-node");
const MIB: f64 = 1024.0 * 1024.0;

fn mib_per_s(bytes: usize, seconds: f64) -> f64 {
    bytes as f64 / MIB / seconds
}

/// Single-core rate of `f` over `buffer`, best of three.
fn rate(buffer: &mut [u8], mut f: impl FnMut(&mut [u8])) -> f64 {
    (0..3)
        .map(|_| {
            let start = Instant::now();
            f(buffer);
            mib_per_s(buffer.len(), start.elapsed().as_secs_f64())
        })
        .fold(0.0, f64::max)
}

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    kib / 1024.0
}

fn run(args: &[&str], node: &str, data_dir: &Path) -> f64 {
    let start = Instant::now();
    let status = Command::new(BIN)
        .args(args)
        .args(["--node", node, "--data-dir"])
        .arg(data_dir)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{args:?} failed");
    start.elapsed().as_secs_f64()
}

fn main() {
    // `cargo bench` passes --bench; ignore arguments.
    let mib: usize = std::env::var("DFS_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let size = mib << 20;

    let mut buffer = vec![0u8; 64 << 20];
    ChaCha8Rng::seed_from_u64(1).fill_bytes(&mut buffer);
    let sha = rate(&mut buffer, |b| {
        std::hint::black_box(Sha256::digest(&*b));
    });
    let cipher = ChaCha20Poly1305::new(Key::from_slice(&[7; 32]));
    let aead = rate(&mut buffer, |b| {
        for piece in b.chunks_mut(1 << 20) {
            std::hint::black_box(
                cipher
                    .encrypt_in_place_detached(Nonce::from_slice(&[0; 12]), b"", piece)
                    .unwrap(),
            );
        }
    });
    let combined = 1.0 / (1.0 / sha + 1.0 / aead);
    println!(
        "machine: sha256 {sha:.0} MiB/s, chacha20poly1305 {aead:.0} MiB/s, hash+seal {combined:.0} MiB/s (one core)"
    );

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.bin");
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let mut block = vec![0u8; 4 << 20];
        for _ in 0..size / block.len() {
            rng.fill_bytes(&mut block);
            file.write_all(&block).unwrap();
        }
        file.flush().unwrap();
    }
    let data_dir = dir.path().join("data");
    let mut node = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(node.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split("listening on ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .to_string();

    let put_seconds = run(
        &["put", input.to_str().unwrap(), "--name", "big"],
        &addr,
        &data_dir,
    );
    let rss_after_put = peak_rss_mib(node.id());
    let output = dir.path().join("output.bin");
    let get_seconds = run(
        &["get", "big", "-o", output.to_str().unwrap()],
        &addr,
        &data_dir,
    );
    let rss_after_get = peak_rss_mib(node.id());
    let _ = node.kill();
    let _ = node.wait();

    let put = mib_per_s(size, put_seconds);
    let get = mib_per_s(size, get_seconds);
    println!(
        "put {mib} MiB: {put:.0} MiB/s ({:.2} x hash+seal; target >= 0.5)",
        put / combined
    );
    println!(
        "get {mib} MiB: {get:.0} MiB/s ({:.2} x hash+seal; target >= 0.5)",
        get / combined
    );
    println!(
        "node peak RSS: {rss_after_put:.1} MiB through the put (target < 64), {rss_after_get:.1} MiB through the get"
    );
    let same = {
        use std::io::Read;
        let (mut a, mut b) = (
            std::fs::File::open(&input).unwrap(),
            std::fs::File::open(&output).unwrap(),
        );
        let (mut x, mut y) = (vec![0u8; 4 << 20], vec![0u8; 4 << 20]);
        loop {
            let n = a.read(&mut x).unwrap();
            let m = b.read(&mut y).unwrap();
            if n != m || x[..n] != y[..m] {
                break false;
            }
            if n == 0 {
                break true;
            }
        }
    };
    assert!(same, "the file read back differs");
}
