#![allow(clippy::disallowed_methods)] // Real processes: these tests wait on the real clock.
//! Real processes under real faults: `kill -9` in the middle of puts, and a
//! disk that fills up. Whatever was acknowledged reads back byte for byte.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

mod common;

use common::{BIN, Node, read_listen_addr, start_cluster, wait_until};

/// One acknowledged put: what was sent and the version it got.
#[derive(Debug, Clone)]
struct Acknowledged {
    name: String,
    version: String,
    bytes: Vec<u8>,
}

/// Put random files through `addr` until `stop`, recording what was
/// acknowledged. Puts that fail (the node was killed) are not recorded.
fn writer(
    addr: String,
    data_dir: PathBuf,
    scratch: PathBuf,
    seed: u64,
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<Vec<Acknowledged>>>,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        // Sizes from a few bytes to a few chunks (chunks are ~1 MiB).
        let len = match rng.next_u64() % 4 {
            0 => (rng.next_u64() % 64) as usize,
            1 => (rng.next_u64() % 200_000) as usize,
            _ => (rng.next_u64() % 3_000_000) as usize,
        };
        let mut bytes = vec![0u8; len];
        rng.fill_bytes(&mut bytes);
        let name = format!("file-{}", rng.next_u64() % 5);
        let path = scratch.join(format!("put-{n}"));
        n += 1;
        std::fs::write(&path, &bytes).unwrap();
        let output = Command::new(BIN)
            .args(["put", path.to_str().unwrap(), "--name", &name, "--json"])
            .args(["--node", &addr, "--data-dir"])
            .arg(&data_dir)
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&path);
        if output.status.success() {
            let reply: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
            acknowledged.lock().unwrap().push(Acknowledged {
                name,
                version: reply["version"].as_str().unwrap().to_string(),
                bytes,
            });
        } else {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Read every acknowledged version back through `node`, byte for byte. A
/// node that was down learns of versions acknowledged meanwhile through
/// anti-entropy, so "no version" is retried for a while (convergence), any
/// other failure is not.
fn check_all(node: &Node, acknowledged: &[Acknowledged], scratch: &Path, seed: u64) {
    for (i, put) in acknowledged.iter().enumerate() {
        let out = scratch.join(format!("get-{i}"));
        let get = || {
            node.cli(&[
                "get",
                &put.name,
                "--version",
                &put.version,
                "-o",
                out.to_str().unwrap(),
            ])
        };
        let mut got = get();
        let started = std::time::Instant::now();
        while !got.status.success()
            && String::from_utf8_lossy(&got.stderr).contains("has no version")
            && started.elapsed() < Duration::from_secs(30)
        {
            std::thread::sleep(Duration::from_millis(200));
            got = get();
        }
        assert!(
            got.status.success(),
            "seed {seed}: acknowledged version {} of {} unreadable: {}",
            put.version,
            put.name,
            String::from_utf8_lossy(&got.stderr)
        );
        let bytes = std::fs::read(&out).unwrap();
        assert!(
            bytes == put.bytes,
            "seed {seed}: version {} of {} reads back different bytes",
            put.version,
            put.name
        );
        std::fs::remove_file(&out).unwrap();
    }
}

/// `kill -9` a single node at random moments during a stream of puts,
/// restart it, and read back everything it acknowledged, every round.
#[test]
fn kill_9_during_puts_loses_no_acknowledged_put() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let data_dir = dir.path().join("n0");
    let mut node = Node::start(&data_dir, "127.0.0.1:0", &[]);
    let addr = node.addr.clone();
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let seed = 0x4B49_4C4C;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for round in 0..6 {
        let stop = Arc::new(AtomicBool::new(false));
        let writing = {
            let (addr, data_dir, scratch) = (addr.clone(), data_dir.clone(), scratch.clone());
            let (stop, acknowledged) = (stop.clone(), acknowledged.clone());
            std::thread::spawn(move || {
                writer(addr, data_dir, scratch, seed + round, stop, acknowledged)
            })
        };
        // Let some puts through, then kill at a random moment.
        std::thread::sleep(Duration::from_millis(300 + rng.next_u64() % 1_200));
        node.kill_9();
        stop.store(true, Ordering::Relaxed);
        writing.join().unwrap();
        node = Node::start(&data_dir, &addr, &[]);
        check_all(&node, &acknowledged.lock().unwrap(), &scratch, seed);
    }
    let acknowledged = acknowledged.lock().unwrap().len();
    assert!(
        acknowledged >= 6,
        "too few puts got through to test anything: {acknowledged}"
    );
}

/// Three nodes (R=3, W=2): a random node is killed during puts through the
/// first and restarted; every acknowledged put reads back through each.
#[test]
fn kill_9_of_any_node_during_puts_loses_no_acknowledged_put() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = dir.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let mut nodes = start_cluster(dir.path(), 3);
    wait_until(Duration::from_secs(30), "all 3 alive on every node", || {
        nodes.iter().all(|n| n.alive_count() == 3)
    });
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let seed = 0x4B49_4C33;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for round in 0..4 {
        let stop = Arc::new(AtomicBool::new(false));
        let writing = {
            let (addr, data_dir) = (nodes[0].addr.clone(), nodes[0].data_dir.clone());
            let scratch = scratch.clone();
            let (stop, acknowledged) = (stop.clone(), acknowledged.clone());
            std::thread::spawn(move || {
                writer(addr, data_dir, scratch, seed + round, stop, acknowledged)
            })
        };
        std::thread::sleep(Duration::from_millis(300 + rng.next_u64() % 1_200));
        let victim = (rng.next_u64() % 3) as usize;
        nodes[victim].kill_9();
        std::thread::sleep(Duration::from_millis(rng.next_u64() % 1_000));
        stop.store(true, Ordering::Relaxed);
        writing.join().unwrap();
        let (data_dir, addr) = (nodes[victim].data_dir.clone(), nodes[victim].addr.clone());
        let extra = match victim {
            0 => vec![],
            _ => vec!["--bootstrap".to_string(), nodes[0].addr.clone()],
        };
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let credentials = nodes[victim].credentials.clone();
        nodes[victim] = Node::start(&data_dir, &addr, &extra);
        nodes[victim].credentials = credentials;
        wait_until(Duration::from_secs(30), "all 3 alive again", || {
            nodes.iter().all(|n| n.alive_count() == 3)
        });
        for node in &nodes {
            check_all(node, &acknowledged.lock().unwrap(), &scratch, seed);
        }
    }
    let acknowledged = acknowledged.lock().unwrap().len();
    assert!(
        acknowledged >= 4,
        "too few puts got through to test anything: {acknowledged}"
    );
}

/// A process killed (and reaped) when the test ends, passing or not.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run `serve` with its data dir on a new 8 MiB tmpfs, in a mount namespace
/// of its own (`unshare`, as root or with user namespaces). `None` when
/// this machine allows neither.
fn serve_on_small_fs(dir: &Path) -> Option<(KillOnDrop, String)> {
    let mount_point = dir.join("small");
    std::fs::create_dir_all(&mount_point).unwrap();
    let script = format!(
        "mount -t tmpfs -o size=8m dfs-test {mp} && exec {bin} serve --data-dir {mp}/data --listen 127.0.0.1:0 --s3-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0",
        mp = mount_point.display(),
        bin = BIN
    );
    for unshare in [&["-m"][..], &["-r", "-m"][..]] {
        let probe = Command::new("unshare")
            .args(unshare)
            .args([
                "sh",
                "-c",
                &format!("mount -t tmpfs -o size=1m probe {}", mount_point.display()),
            ])
            .stderr(Stdio::null())
            .status();
        if probe.is_ok_and(|s| s.success()) {
            let mut child = KillOnDrop(
                Command::new("unshare")
                    .args(unshare)
                    .args(["sh", "-c", &script])
                    .stdout(Stdio::piped())
                    .stderr(std::fs::File::create(dir.join("small.log")).unwrap())
                    .spawn()
                    .unwrap(),
            );
            let addr = read_listen_addr(&mut child.0);
            return Some((child, addr));
        }
    }
    None
}

/// A node whose disk fills up refuses puts with a clear error, keeps
/// serving what it acknowledged, lists no version of the refused put, and
/// still takes a file small enough for the space left.
#[test]
fn a_full_disk_gives_clear_errors_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Some((child, addr)) = serve_on_small_fs(dir.path()) else {
        eprintln!("SKIPPED: this machine cannot mount a small tmpfs (no root, no user namespaces)");
        return;
    };
    // The admin key lives on the small fs, inside the namespace; read it
    // through the node's own process view.
    let credentials = std::fs::read_to_string(format!(
        "/proc/{}/root{}/small/data/credentials",
        child.0.id(),
        dir.path().display()
    ))
    .expect("the node's admin access key");
    let key_file = dir.path().join("credentials");
    std::fs::write(&key_file, credentials).unwrap();
    let scratch = dir.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let put = |name: &str, bytes: &[u8]| {
        let path = scratch.join(name);
        std::fs::write(&path, bytes).unwrap();
        Command::new(BIN)
            .args(["put", path.to_str().unwrap(), "--name", name, "--json"])
            .args(["--node", &addr, "--credentials", key_file.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let mut rng = ChaCha8Rng::seed_from_u64(0xF011);
    let mut acknowledged = Vec::new();
    let mut refusal = None;
    for i in 0..40 {
        let mut bytes = vec![0u8; 700_000];
        rng.fill_bytes(&mut bytes);
        let name = format!("f{i}");
        let output = put(&name, &bytes);
        if output.status.success() {
            acknowledged.push((name, bytes));
        } else {
            refusal = Some(String::from_utf8_lossy(&output.stderr).to_string());
            break;
        }
    }
    let refusal = refusal.expect("8 MiB took 40 puts of 700 kB");
    eprintln!("refused after {} puts: {refusal}", acknowledged.len());
    // The chunk store says "the disk is full"; the index, if it is the
    // one that hits the limit, passes on the OS's "No space left".
    assert!(
        refusal.contains("disk is full") || refusal.contains("No space left"),
        "the refusal does not say the disk is full: {refusal}"
    );
    assert!(!acknowledged.is_empty());
    // Everything acknowledged reads back, and the failed put left no version.
    for (name, bytes) in &acknowledged {
        let out = scratch.join(format!("{name}.out"));
        let got = Command::new(BIN)
            .args(["get", name, "-o", out.to_str().unwrap()])
            .args(["--node", &addr, "--credentials", key_file.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            got.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&got.stderr)
        );
        assert!(std::fs::read(&out).unwrap() == *bytes, "{name} differs");
    }
    let listed = Command::new(BIN)
        .args(["ls", "--json", "--node", &addr, "--credentials"])
        .arg(&key_file)
        .output()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(acknowledged.len()),
        "ls lists exactly the acknowledged files"
    );
    // A small file still fits in what is left (the node did not wedge).
    assert!(put("small", b"a few bytes").status.success());
}

/// Issue 9, item 9: a stopping node dropped its peer connections before the
/// client requests in flight drained, so a put caught by a SIGTERM failed
/// (or worse, lost its quorum half-way). Now the put finishes: the node
/// stops taking connections, lets the put reach W nodes, then stops.
#[test]
fn a_put_in_flight_when_its_node_is_stopped_completes() {
    use std::io::Write as _;

    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(dir.path(), 3);
    wait_until(Duration::from_secs(30), "all 3 alive on every node", || {
        nodes.iter().all(|n| n.alive_count() == 3)
    });
    let mut rng = ChaCha8Rng::seed_from_u64(0x5354_4F50);
    let mut data = vec![0u8; 8 << 20];
    rng.fill_bytes(&mut data);
    let mut put = Command::new(common::BIN)
        .args(["put", "-", "--name", "drained", "--node", &nodes[0].addr])
        .arg("--data-dir")
        .arg(&nodes[0].data_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = put.stdin.take().unwrap();
    stdin.write_all(&data[..4 << 20]).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let stopped = Command::new("kill")
        .args(["-TERM", &nodes[0].child.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    std::thread::sleep(Duration::from_millis(500));
    stdin.write_all(&data[4 << 20..]).unwrap();
    drop(stdin);
    let output = put.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the put in flight at shutdown failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let exit = nodes[0].child.wait().unwrap();
    assert!(exit.success(), "the stopped node exited with {exit}");
    assert!(nodes[0].log_text().contains("draining in-flight requests"));
    let read = dir.path().join("read");
    let got = nodes[1].cli(&["get", "drained", "-o", read.to_str().unwrap()]);
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert!(
        std::fs::read(&read).unwrap() == data,
        "the put read back differently"
    );
}
