//! Shared by the end-to-end benches: the machine's own hash and seal rates,
//! running the CLI, and a process's peak RSS.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

pub const BIN: &str = env!("CARGO_BIN_EXE_dfs-node");
pub const MIB: f64 = 1024.0 * 1024.0;

pub fn mib_per_s(bytes: usize, seconds: f64) -> f64 {
    bytes as f64 / MIB / seconds
}

/// Single-core rate of `f` over `buffer`, best of three.
pub fn rate(buffer: &mut [u8], mut f: impl FnMut(&mut [u8])) -> f64 {
    (0..3)
        .map(|_| {
            let start = Instant::now();
            f(buffer);
            mib_per_s(buffer.len(), start.elapsed().as_secs_f64())
        })
        .fold(0.0, f64::max)
}

pub fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    kib / 1024.0
}

pub fn run(args: &[&str], node: &str, data_dir: &Path) -> f64 {
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

/// Measure and print this machine's single-core SHA-256 and
/// ChaCha20-Poly1305 rates, with the implementations the node uses (ring's
/// assembly; the at-rest XChaCha20 adds one HChaCha20 block per blob);
/// returns the combined hash+seal rate (MiB/s).
pub fn machine_rates() -> f64 {
    let mut buffer = vec![0u8; 64 << 20];
    ChaCha8Rng::seed_from_u64(1).fill_bytes(&mut buffer);
    let sha = rate(&mut buffer, |b| {
        std::hint::black_box(dfs::cas::sha256(b));
    });
    let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &[7; 32]).unwrap());
    let aead = rate(&mut buffer, |b| {
        for piece in b.chunks_mut(1 << 20) {
            let _tag = std::hint::black_box(
                key.seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key([0; 12]),
                    Aad::empty(),
                    piece,
                )
                .unwrap(),
            );
        }
    });
    let combined = 1.0 / (1.0 / sha + 1.0 / aead);
    println!(
        "machine: sha256 {sha:.0} MiB/s, chacha20poly1305 {aead:.0} MiB/s, hash+seal {combined:.0} MiB/s (one core, ring as in the node)"
    );
    combined
}

/// Write `size` bytes of seeded random data to `path`.
pub fn write_random_file(path: &Path, size: usize) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let mut block = vec![0u8; 4 << 20];
    for _ in 0..size / block.len() {
        rng.fill_bytes(&mut block);
        file.write_all(&block).unwrap();
    }
    file.flush().unwrap();
}

/// Start `dfs-node serve` on a free 127.0.0.1 port; returns it and its address.
pub fn spawn_node(data_dir: &Path, extra: &[&str]) -> (Child, String) {
    let (child, addr, _) = spawn_node_with_s3(data_dir, extra);
    (child, addr)
}

/// [`spawn_node`], with the node's S3 endpoint (`http://ADDR`).
pub fn spawn_node_with_s3(data_dir: &Path, extra: &[&str]) -> (Child, String, String) {
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--s3-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let field = |marker: &str| {
        line.split(marker)
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap()
            .trim_end_matches([';', ','])
            .to_string()
    };
    (child, field("listening on "), field("S3 on "))
}

/// The size in MiB of the big file (`DFS_BENCH_MIB`, default 1024).
pub fn bench_mib() -> usize {
    std::env::var("DFS_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}
