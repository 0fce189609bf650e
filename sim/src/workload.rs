//! Pieces the client workloads of the scenarios share: the content model,
//! timeouts that turn into "indeterminate", the cluster key of a seed.

use std::collections::BTreeMap;
use std::time::Duration;

use dfs::cas::{ChunkId, Chunker, ContentId, Manifest};
use dfs::client::ClientError;
use dfs::keys::ClusterKey;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

/// The content id a node must assign to `bytes` (computed independently).
pub fn expected_content_id(bytes: &[u8]) -> ContentId {
    let mut chunker = Chunker::default();
    let mut manifest = Manifest::default();
    chunker.push(bytes);
    chunker.finish();
    while let Some(chunk) = chunker.next_chunk() {
        manifest.push(ChunkId::of(&chunk), chunk.len()).unwrap();
    }
    manifest.content_id()
}

/// The cluster key every node of seed `seed` shares.
pub fn cluster_key(seed: u64) -> ClusterKey {
    let mut bytes = [0u8; 32];
    ChaCha8Rng::seed_from_u64(seed ^ 0x4B45_5953).fill_bytes(&mut bytes);
    ClusterKey::from_bytes(bytes)
}

/// Run a client operation; past `limit` it is indeterminate ("timed out").
pub async fn with_timeout<T>(
    limit: Duration,
    operation: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, String> {
    match tokio::time::timeout(limit, operation).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// File contents for a put: one in `one_in` repeats earlier content
/// (dedup); otherwise one in `one_in` is empty, a bit under half are small
/// (< 4 KiB) and the rest up to `bytes_max` random bytes. (Each scenario
/// keeps its own `one_in`: changing it changes every seed's schedule, and
/// the named regression seeds with it.)
pub fn random_content(
    rng: &mut ChaCha8Rng,
    bytes_max: usize,
    one_in: u64,
    earlier: &BTreeMap<ContentId, Vec<u8>>,
) -> Vec<u8> {
    let reuse = rng.next_u64().is_multiple_of(one_in);
    let pick = (rng.next_u64() % earlier.len().max(1) as u64) as usize;
    if reuse && let Some(existing) = earlier.values().nth(pick) {
        return existing.clone();
    }
    let bucket = rng.next_u64() % one_in;
    let len = if bucket == 0 {
        0
    } else if bucket < one_in / 2 {
        (rng.next_u64() % 4096) as usize
    } else {
        (rng.next_u64() % bytes_max as u64) as usize
    };
    let mut bytes = vec![0u8; len];
    rng.fill_bytes(&mut bytes);
    bytes
}
