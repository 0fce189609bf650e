//! Anti-entropy digests of the version index (DESIGN §8).
//!
//! Names fall into [`SYNC_BUCKETS`] buckets by the hash of the name. A
//! bucket's digest is the XOR of a 128-bit hash of each record key and floor
//! in it: order-free, so two replicas holding the same keys compute the same
//! digest whatever order the records arrived in, and a single differing key
//! changes it (short of a 2^-128 accident). Peers compare the 256 digests and
//! exchange keys only for the buckets that differ, then only the records one
//! side lacks: the cost of a sync follows the difference, not the index.
//!
//! Record keys, not whole records, are hashed: a correct node never creates
//! two records with one key, and the merge keeps the greater if corrupt
//! input ever does. The one change a record has is being forgotten (its
//! stub replaces it), and the key says so.

use sha2::{Digest, Sha256};

use super::{Floor, RecordKey};

/// How many buckets the index is split into for comparison.
pub const SYNC_BUCKETS: usize = 256;

/// The bucket of `name`.
pub fn bucket_of(name: &str) -> usize {
    let digest = Sha256::digest(name.as_bytes());
    usize::from(digest[0]) % SYNC_BUCKETS
}

fn hash128(domain: u8, parts: &[&[u8]]) -> u128 {
    let mut hasher = Sha256::new();
    hasher.update([domain]);
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    let digest = hasher.finalize();
    u128::from_le_bytes(digest[..16].try_into().expect("16 bytes"))
}

/// A forgotten version's stub hashes apart from the record it replaced, so
/// a node that missed the forgetting differs, and syncs.
pub fn record_hash(key: &RecordKey) -> u128 {
    let domain = if key.forgotten { b'x' } else { b'r' };
    hash128(domain, &[key.name.as_bytes(), &key.vid.to_key()])
}

pub fn floor_hash(floor: &Floor) -> u128 {
    hash128(b'f', &[floor.name.as_bytes(), &floor.floor.to_key()])
}

/// Which buckets differ between two digest vectors (a vector of the wrong
/// length, from a confused peer, differs everywhere).
pub fn differing(ours: &[u128], theirs: &[u128]) -> Vec<bool> {
    if ours.len() != SYNC_BUCKETS || theirs.len() != SYNC_BUCKETS {
        return vec![true; SYNC_BUCKETS];
    }
    ours.iter().zip(theirs).map(|(a, b)| a != b).collect()
}
