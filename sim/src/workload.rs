//! Pieces the client workloads of the scenarios share: the content model,
//! what the clients attempted (and the checks it explains), timeouts that
//! turn into "indeterminate", the cluster key of a seed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use dfs::cas::{ChunkId, Chunker, ContentId, Manifest};
use dfs::client::ClientError;
use dfs::keys::credentials::{Credentials, ProvisionedKey};
use dfs::keys::{AccessKeyId, ClusterKey, Permission, SecretKey};
use dfs::limits::CHUNK_AVG_BYTES;
use dfs::meta::VersionRecord;
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

/// The access key the clients of seed `seed` use: an admin key every node
/// is provisioned with (the same record everywhere, so it costs the
/// schedule nothing).
pub fn client_credentials(seed: u64) -> Credentials {
    const ID: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    const SECRET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x4143_4345_5353);
    let mut pick = |alphabet: &[u8], n: usize| -> String {
        (0..n)
            .map(|_| alphabet[(rng.next_u32() as usize) % alphabet.len()] as char)
            .collect()
    };
    let id = format!("DFS{}", pick(ID, 17));
    let secret = pick(SECRET, 40);
    Credentials {
        id: AccessKeyId::parse(&id).expect("a well-formed id"),
        secret: SecretKey::parse(&secret).expect("a well-formed secret"),
    }
}

/// Seeds named in regression tests before the small-blob table existed:
/// they keep every blob a file (and no table is created), so that they
/// take the schedule, and the path, they were named for.
const SEEDS_NAMED_BEFORE_THE_TABLE: &[u64] = &[
    3,
    26,
    35,
    66,
    135,
    164,
    345,
    507,
    513,
    1000,
    1047,
    1266,
    1270,
    20089,
    20113,
    30078,
    40382,
    8800445,
    8800469,
    8800490,
    8800587,
    8801260,
    61000890,
    62000482,
    71000086,
    71000155,
    71000331,
    2592800576392,
    2828046376229,
];

/// The small-blob size limit of every node of seed `seed`: in half the
/// seeds the default (most blobs go into the small-blob table, group
/// committed), in the other half 0, so that every blob is a file and the
/// disk's rot and read corruption, which reach only files under `chunks/`,
/// reach every blob. Drawn from the seed, not the workload's RNG, so that
/// schedules keep their order of draws.
pub fn small_blob_bytes_max(seed: u64) -> usize {
    let mixed = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29);
    if mixed & 1 == 0 && !SEEDS_NAMED_BEFORE_THE_TABLE.contains(&seed) {
        dfs::limits::SMALL_BLOB_BYTES_DEFAULT
    } else {
        0
    }
}

/// What every node of seed `seed` is provisioned with: the clients' key.
pub fn provisioned_keys(seed: u64) -> Vec<ProvisionedKey> {
    vec![ProvisionedKey {
        name: "simulation".into(),
        credentials: client_credentials(seed),
        permission: Permission::admin(),
    }]
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

/// Random content of 2 to 4 MiB: about two to four chunks, so that an
/// [`edited`] version of it reuses most of them.
pub fn a_few_chunks(rng: &mut ChaCha8Rng) -> Vec<u8> {
    let len = 2 * CHUNK_AVG_BYTES + (rng.next_u64() % (2 * CHUNK_AVG_BYTES as u64)) as usize;
    let mut bytes = vec![0u8; len];
    rng.fill_bytes(&mut bytes);
    bytes
}

/// A new version of `original` that differs in one place: a range
/// overwritten, bytes inserted, or the tail cut or extended, so that a
/// chunked put of it reuses the chunks around the change.
pub fn edited(rng: &mut ChaCha8Rng, original: &[u8]) -> Vec<u8> {
    let mut bytes = original.to_vec();
    let at = (rng.next_u64() % (bytes.len() as u64 + 1)) as usize;
    let len = 1 + (rng.next_u64() % 8192) as usize;
    let mut fresh = vec![0u8; len];
    rng.fill_bytes(&mut fresh);
    match rng.next_u64() % 4 {
        0 => {
            let end = (at + len).min(bytes.len());
            bytes[at..end].copy_from_slice(&fresh[..end - at]);
        }
        1 => {
            bytes.splice(at..at, fresh);
        }
        2 => bytes.truncate(at),
        _ => bytes.extend_from_slice(&fresh),
    }
    bytes
}

/// What the clients tried to write, acknowledged or not. Every version a
/// node lists and every read it serves must be explained by it.
#[derive(Default)]
pub struct Attempts {
    /// Content ids of every put attempted, by name.
    puts: BTreeMap<String, BTreeSet<ContentId>>,
    /// Names a remove was attempted on.
    removes: BTreeSet<String>,
    /// The bytes of every content put.
    contents: BTreeMap<ContentId, Vec<u8>>,
    /// The content of the latest put attempted, by name.
    latest: BTreeMap<String, ContentId>,
}

impl Attempts {
    pub fn put(&mut self, name: &str, content: ContentId, bytes: &[u8]) {
        self.puts
            .entry(name.to_owned())
            .or_default()
            .insert(content);
        self.contents.insert(content, bytes.to_vec());
        self.latest.insert(name.to_owned(), content);
    }

    pub fn remove(&mut self, name: &str) {
        self.removes.insert(name.to_owned());
    }

    /// The bytes of every content put (for [`random_content`]'s reuse).
    pub fn contents(&self) -> &BTreeMap<ContentId, Vec<u8>> {
        &self.contents
    }

    /// The content of the latest put attempted under `name` (most likely
    /// its current version).
    pub fn latest_of(&self, name: &str) -> Option<&[u8]> {
        self.contents.get(self.latest.get(name)?).map(Vec::as_slice)
    }

    /// Every name a put or remove was attempted on.
    pub fn names(&self) -> BTreeSet<String> {
        self.puts.keys().chain(&self.removes).cloned().collect()
    }

    /// No invention: what is wrong with `versions name` listing `records`,
    /// one message per record no operation wrote.
    pub fn unexplained(&self, name: &str, records: &[VersionRecord]) -> Vec<String> {
        records
            .iter()
            .filter(|record| {
                let written = match record.content {
                    Some(content) => self.puts.get(name).is_some_and(|c| c.contains(&content)),
                    None => self.removes.contains(name),
                };
                record.name != name || !written
            })
            .map(|record| {
                format!("no invention: versions {name} lists {record:?}, which no operation wrote")
            })
            .collect()
    }

    /// No invention and integrity: what is wrong with a get of `name` that
    /// returned `bytes` as `content`, if anything.
    pub fn wrong_read(&self, name: &str, content: ContentId, bytes: &[u8]) -> Option<String> {
        if !self.puts.get(name).is_some_and(|c| c.contains(&content)) {
            Some(format!(
                "no invention: get {name} returned content {content} never put under that name"
            ))
        } else if !self.holds(content, bytes) {
            Some(format!(
                "integrity: get {name} returned bytes that differ from what was put"
            ))
        } else {
            None
        }
    }

    /// Whether `bytes` are what was put as `content`.
    pub fn holds(&self, content: ContentId, bytes: &[u8]) -> bool {
        self.contents
            .get(&content)
            .is_some_and(|put| put[..] == *bytes)
    }
}

#[cfg(test)]
mod tests {
    use dfs::keys::NodeId;
    use dfs::meta::VersionId;

    use super::*;

    fn record(name: &str, content: Option<ContentId>) -> VersionRecord {
        VersionRecord {
            name: name.into(),
            vid: VersionId {
                wall_ms: 1,
                counter: 0,
                node: NodeId([7; 32]),
            },
            forgotten: false,
            content,
            size: 0,
            by: None,
            etag: None,
            null_version: false,
        }
    }

    /// The checkers are only as good as these answers: an invented or
    /// altered read, and a version nobody wrote, must each be reported.
    #[test]
    fn attempts_report_what_no_client_did() {
        let (a, b) = (b"first".as_slice(), b"second".as_slice());
        let (ca, cb) = (expected_content_id(a), expected_content_id(b));
        let mut attempts = Attempts::default();
        attempts.put("x", ca, a);
        attempts.put("y", cb, b);
        attempts.remove("y");

        assert_eq!(attempts.wrong_read("x", ca, a), None);
        assert!(
            attempts
                .wrong_read("x", cb, b)
                .unwrap()
                .starts_with("no invention")
        );
        assert!(
            attempts
                .wrong_read("x", ca, b)
                .unwrap()
                .starts_with("integrity")
        );

        let written = [record("y", Some(cb)), record("y", None)];
        assert!(attempts.unexplained("y", &written).is_empty());
        assert_eq!(attempts.unexplained("x", &[record("x", None)]).len(), 1);
        assert_eq!(attempts.unexplained("x", &[record("y", Some(cb))]).len(), 1);
        assert_eq!(
            attempts.names().into_iter().collect::<Vec<_>>(),
            ["x".to_string(), "y".to_string()]
        );
    }
}
