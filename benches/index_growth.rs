//! How the version index grows: bytes per version on disk, and what one
//! anti-entropy round costs, at 10^4, 10^5 and 10^6 versions (DFS_INDEX_MAX
//! to stop earlier). `cargo bench --bench index_growth`
//!
//! Versions are merged 1000 per transaction. A round sends 256 bucket
//! digests whatever the size; the responder
//! computes them, and when a bucket differs it lists that bucket's keys:
//! both are printed, with the time to compute the digests on this machine.

// A benchmark measures real time; the determinism rule is for node logic.
#![allow(clippy::disallowed_methods)]

use std::time::Instant;

use dfs::cas::ContentId;
use dfs::env::tokio_env;
use dfs::keys::NodeId;
use dfs::meta::digest::SYNC_BUCKETS;
use dfs::meta::{VersionId, VersionIndex, VersionRecord};
use dfs::wire::{Envelope, Message, encode};

/// Versions per name: a history like a file edited now and then.
const VERSIONS_PER_NAME: u64 = 4;

fn record(i: u64) -> VersionRecord {
    let name = format!(
        "projects/team-{}/reports/2026/report-{:08}.pdf",
        i % 97,
        i / VERSIONS_PER_NAME
    );
    VersionRecord {
        name,
        vid: VersionId {
            wall_ms: 1_780_000_000_000 + i,
            counter: 0,
            node: NodeId([(i % 5) as u8; 32]),
        },
        forgotten: false,
        content: Some(ContentId(dfs::cas::sha256(&i.to_le_bytes()))),
        size: 1 << 20,
        by: None,
        etag: None,
        null_version: false,
    }
}

fn encoded_len(message: Message) -> usize {
    encode(&Envelope {
        request_id: 1,
        message,
    })
    .len()
}

fn main() {
    let max: u64 = std::env::var("DFS_INDEX_MAX")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let index = VersionIndex::open(&tokio_env(), &dir.path().join("meta.redb")).unwrap();
    // As a node does at its first sync round: from then on the merges
    // keep the digests.
    index.digests().unwrap();
    let mut written = 0u64;
    println!(
        "{:>9} | {:>10} | {:>9} | {:>13} | {:>13} | {:>16} | {:>18}",
        "versions",
        "index file",
        "B/version",
        "digests (ms)",
        "by scan (ms)",
        "in-sync round B",
        "1 bucket differs B"
    );
    for target in [10_000u64, 100_000, 1_000_000] {
        if target > max {
            break;
        }
        while written < target {
            let batch: Vec<VersionRecord> = (written..(written + 1000).min(target))
                .map(record)
                .collect();
            written += batch.len() as u64;
            index.merge(&batch, &[]).unwrap();
        }
        let bytes = index.file_bytes().unwrap();
        // What a sync round reads (kept by the merges), and what it would
        // cost to compute them from the records (as every round did before).
        let start = Instant::now();
        let digests = index.digests().unwrap();
        let digest_ms = start.elapsed().as_secs_f64() * 1e3;
        let start = Instant::now();
        assert_eq!(index.digests_by_scan().unwrap(), digests);
        let scan_ms = start.elapsed().as_secs_f64() * 1e3;
        let in_sync = encoded_len(Message::SyncDigests {
            digests: digests.clone(),
            after: None,
            keys_digest: [0; 32],
        });
        let mut differing = vec![false; SYNC_BUCKETS];
        differing[0] = true;
        let (keys, floors, truncated) = index
            .keys_in_buckets(&differing, dfs::limits::SYNC_BATCH_BYTES, None)
            .unwrap();
        let one_bucket = encoded_len(Message::SyncKeys {
            buckets: vec![0],
            keys,
            floors,
            truncated,
            keys_differ: false,
        });
        println!(
            "{target:>9} | {:>7.1} MiB | {:>9.0} | {digest_ms:>13.3} | {scan_ms:>13.1} | {in_sync:>16} | {one_bucket:>18}",
            bytes as f64 / 1048576.0,
            bytes as f64 / target as f64,
        );
    }
}
