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

/// CPU seconds (user + system) process `pid` has used so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command name (which may hold spaces): state is field 3,
    // utime and stime are fields 14 and 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = fields
        .get(11..13)
        .map(|t| t.iter().filter_map(|v| v.parse::<f64>().ok()).sum())
        .unwrap_or(f64::NAN);
    ticks / clock_ticks_per_second()
}

/// CPU seconds (user + system) used by this process's children that have
/// been waited for (each [`run`] of the CLI).
pub fn children_cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole rusage into the pointer it is given.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr());
        usage.assume_init()
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// What one transfer cost in CPU, per GiB, beside the least its hashing,
/// chunking and AEAD work could cost on one core (`floor_*`, seconds per
/// GiB), and the fastest both processes could then go sharing this
/// machine's cores.
pub struct CpuCost {
    /// How many nodes `node` and `floor_node` add up.
    pub nodes: usize,
    pub node: f64,
    pub client: f64,
    pub floor_node: f64,
    pub floor_client: f64,
}

/// CPU seconds (of the nodes together, of the CLI) read at one moment.
pub type CpuReading = (f64, f64);

/// One core's seconds per GiB of each primitive a transfer pays.
pub struct PrimitiveCost {
    pub sha: f64,
    pub aead: f64,
    /// Checking a sealed blob's tag without decrypting it (`Sealer::check`).
    pub tag_check: f64,
    pub fastcdc: f64,
}

impl MachineLimits {
    pub fn seconds_per_gib(&self) -> PrimitiveCost {
        let per_gib = |mib_per_s: f64| 1024.0 / mib_per_s;
        PrimitiveCost {
            sha: per_gib(self.sha),
            aead: per_gib(self.aead),
            tag_check: per_gib(self.tag_check),
            fastcdc: per_gib(self.fastcdc),
        }
    }
}

impl CpuCost {
    /// What moving `bytes` cost between two readings, per GiB, beside the
    /// floors (seconds per GiB) of `nodes` nodes and of the CLI.
    pub fn between(
        nodes: usize,
        bytes: usize,
        (before, after): (CpuReading, CpuReading),
        floor_node: f64,
        floor_client: f64,
    ) -> Self {
        let gib = bytes as f64 / (1u64 << 30) as f64;
        Self {
            nodes,
            node: (after.0 - before.0) / gib,
            client: (after.1 - before.1) / gib,
            floor_node,
            floor_client,
        }
    }

    /// One line: the costs, and the ceiling they put on MiB/s (`measured`)
    /// when node and client share this machine's cores.
    pub fn describe(&self, measured: f64) -> String {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let ceiling = 1024.0 * cores / (self.node + self.client);
        let nodes = match self.nodes {
            1 => "node".to_string(),
            n => format!("{n} nodes together"),
        };
        format!(
            "CPU per GiB: {nodes} {:.2} s (their hashing, chunking and AEAD alone: {:.2} s), client {:.2} s ({:.2} s); \
{cores:.0} cores spending {:.2} s per GiB go at most {ceiling:.0} MiB/s (this run: {:.2} of that)",
            self.node,
            self.floor_node,
            self.client,
            self.floor_client,
            self.node + self.client,
            measured / ceiling
        )
    }
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

/// What this machine can do, measured in the same run as the figures
/// compared with it.
#[derive(Debug, Clone, Copy)]
pub struct MachineLimits {
    /// Single-core MiB/s.
    pub sha: f64,
    pub aead: f64,
    pub tag_check: f64,
    pub fastcdc: f64,
    pub memcpy: f64,
    /// 1 / (1/sha + 1/aead): one core hashing and sealing every byte once.
    pub serial: f64,
    /// Median time to write and fdatasync 4 KiB and 1 MiB, and to fsync a
    /// directory after creating a file in it (ms).
    pub fsync_4k_ms: f64,
    pub fsync_1m_ms: f64,
    pub dir_fsync_ms: f64,
    /// Writes of a new 4 KiB file with fdatasync per second the disk
    /// sustains with 16 writers at once (what small puts are bounded by).
    pub parallel_syncs_per_s: f64,
}

impl MachineLimits {
    /// The better of two measurements: on a shared host the rates drift
    /// with the neighbours' load, and the higher bar is the honest one.
    pub fn best(self, other: Self) -> Self {
        Self {
            sha: self.sha.max(other.sha),
            aead: self.aead.max(other.aead),
            tag_check: self.tag_check.max(other.tag_check),
            fastcdc: self.fastcdc.max(other.fastcdc),
            memcpy: self.memcpy.max(other.memcpy),
            serial: self.serial.max(other.serial),
            fsync_4k_ms: self.fsync_4k_ms.min(other.fsync_4k_ms),
            fsync_1m_ms: self.fsync_1m_ms.min(other.fsync_1m_ms),
            dir_fsync_ms: self.dir_fsync_ms.min(other.dir_fsync_ms),
            parallel_syncs_per_s: self.parallel_syncs_per_s.max(other.parallel_syncs_per_s),
        }
    }
}

/// Measure and print [`MachineLimits`]; the disk ones write their files
/// under `scratch` (the bench's own temporary directory), where they stay
/// until the bench ends.
///
/// Why not delete them at once: on ext4 without a journal (this kind of
/// machine's root file system), allocating an inode skips every inode
/// freed in the last minute or more, reading each one's block to find out
/// (`recently_deleted` in `fs/ext4/ialloc.c`). Tens of thousands of
/// calibration files deleted just before a transfer made every file the
/// node then created cost up to a millisecond of CPU, a quarter of the
/// node's CPU in a 1 GiB put: the bench was measuring its own cleanup.
pub fn machine_limits(scratch: &Path) -> MachineLimits {
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
    let sealer = dfs::store::Sealer::new(&dfs::keys::ClusterKey::from_bytes([7; 32]));
    let sealed: Vec<_> = buffer
        .chunks(1 << 20)
        .map(|piece| {
            let id = dfs::cas::ChunkId::of(piece);
            (id, sealer.seal(&id, piece))
        })
        .collect();
    let tag_check = rate(&mut buffer, |_| {
        for (id, blob) in &sealed {
            sealer.check(id, blob).unwrap();
        }
    });
    drop(sealed);
    let fastcdc = rate(&mut buffer, |b| {
        let mut chunker = dfs::cas::Chunker::default();
        for piece in b.chunks(256 << 10) {
            chunker.push(piece);
            while std::hint::black_box(chunker.next_chunk()).is_some() {}
        }
        chunker.finish();
        while std::hint::black_box(chunker.next_chunk()).is_some() {}
    });
    let mut target = vec![0u8; buffer.len()];
    let memcpy = rate(&mut buffer, |b| {
        for (from, to) in b.chunks(1 << 20).zip(target.chunks_mut(1 << 20)) {
            to.copy_from_slice(from);
        }
        std::hint::black_box(&target);
    });
    drop(target);
    let serial = 1.0 / (1.0 / sha + 1.0 / aead);
    let (fsync_4k_ms, fsync_1m_ms, dir_fsync_ms) = disk_sync_times(scratch, &buffer);
    let parallel_syncs_per_s = parallel_syncs_per_s(scratch, 16, std::time::Duration::from_secs(2));
    println!(
        "machine (one core, as the node does it): sha256 {sha:.0} MiB/s, chacha20poly1305 {aead:.0} MiB/s, \
tag check {tag_check:.0} MiB/s, \
hash+seal (serial limit) {serial:.0} MiB/s, fastcdc {fastcdc:.0} MiB/s, memcpy {memcpy:.0} MiB/s; \
disk: write+fdatasync 4 KiB {fsync_4k_ms:.2} ms, 1 MiB {fsync_1m_ms:.2} ms, directory fsync {dir_fsync_ms:.2} ms (medians); \
16 writers at once: {parallel_syncs_per_s:.0} new 4 KiB files synced/s"
    );
    MachineLimits {
        sha,
        aead,
        tag_check,
        fastcdc,
        memcpy,
        serial,
        fsync_4k_ms,
        fsync_1m_ms,
        dir_fsync_ms,
        parallel_syncs_per_s,
    }
}

/// A new directory under `scratch` for one calibration's files, kept
/// until `scratch` is removed (see [`machine_limits`]).
fn calibration_dir(scratch: &Path) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("calibration-")
        .disable_cleanup(true)
        .tempdir_in(scratch)
        .unwrap()
}

/// New 4 KiB files written and fdatasync'd per second by `writers`
/// threads at once, for `period`, in a new directory under `scratch`.
pub fn parallel_syncs_per_s(scratch: &Path, writers: usize, period: std::time::Duration) -> f64 {
    let dir = calibration_dir(scratch);
    let start = Instant::now();
    let done: usize = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..writers)
            .map(|w| {
                let dir = dir.path();
                scope.spawn(move || {
                    let block = [w as u8; 4096];
                    let mut count = 0;
                    while start.elapsed() < period {
                        let path = dir.join(format!("{w}-{count}"));
                        let mut file = std::fs::File::create(&path).unwrap();
                        file.write_all(&block).unwrap();
                        file.sync_data().unwrap();
                        count += 1;
                    }
                    count
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).sum()
    });
    done as f64 / start.elapsed().as_secs_f64()
}

/// Medians over 20 rounds of: a new file written with 4 KiB and
/// fdatasync'd, the same with 1 MiB, and its directory fsync'd.
fn disk_sync_times(scratch: &Path, bytes: &[u8]) -> (f64, f64, f64) {
    let dir = calibration_dir(scratch);
    let (mut small, mut large, mut directory) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..20 {
        for (size, times) in [(4096, &mut small), (1 << 20, &mut large)] {
            let path = dir.path().join(format!("{round}-{size}"));
            let mut file = std::fs::File::create(&path).unwrap();
            let start = Instant::now();
            file.write_all(&bytes[..size]).unwrap();
            file.sync_data().unwrap();
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
        let start = Instant::now();
        std::fs::File::open(dir.path()).unwrap().sync_all().unwrap();
        directory.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (median(small), median(large), median(directory))
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
    let (child, addr, s3, _) = spawn_node_with_endpoints(data_dir, extra);
    (child, addr, s3)
}

/// [`spawn_node`], with the node's S3 and admin endpoints (`http://ADDR`).
/// `DFS_BENCH_NODE_ARGS` adds settings to every node a bench starts, to
/// compare them (say `--small-blob-bytes-max 0`).
pub fn spawn_node_with_endpoints(
    data_dir: &Path,
    extra: &[&str],
) -> (Child, String, String, String) {
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
        // Node settings to compare (say `--small-blob-bytes-max 0`).
        .args(
            std::env::var("DFS_BENCH_NODE_ARGS")
                .unwrap_or_default()
                .split_whitespace(),
        )
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
    (
        child,
        field("listening on "),
        field("S3 on "),
        field("admin on "),
    )
}

/// The size in MiB of the big file (`DFS_BENCH_MIB`, default 1024).
pub fn bench_mib() -> usize {
    std::env::var("DFS_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

/// `GET path` of an admin endpoint `http://ADDR`: the body.
pub fn http_get(endpoint: &str, path: &str) -> String {
    use std::io::Read;
    let addr = endpoint.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

/// The sum of every series of a metric whose name and labels start with
/// `prefix` (0 when absent).
pub fn metric_sum(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
        .sum()
}
