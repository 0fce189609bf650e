//! Where a blob lives: rendezvous (highest random weight) hashing
//! (DESIGN §8).
//!
//! Every node ranks the candidate nodes for a blob by
//! `score = first 8 bytes of SHA-256(node id ‖ blob id)`, highest first; the
//! first R of the ranking own the blob. Each node computes this alone from
//! the membership it sees, with no coordination, and a member joining or
//! leaving changes only the blobs whose top R it enters or leaves (about
//! R/N of them), because the scores of the other nodes do not move.
//!
//! When an owner is down, the next node of the ranking stands in; the
//! repair loop moves the copy home when the owner is back.

use sha2::{Digest, Sha256};

use crate::cas::ChunkId;
use crate::keys::NodeId;

/// Replication settings: R copies of each blob, W durable acknowledgements
/// before a write counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replication {
    pub replicas: usize,
    pub write_quorum: usize,
}

impl Default for Replication {
    fn default() -> Self {
        Self {
            replicas: 3,
            write_quorum: 2,
        }
    }
}

impl Replication {
    /// Settings that satisfy `1 <= W <= R`.
    pub fn new(replicas: usize, write_quorum: usize) -> Result<Self, String> {
        if replicas == 0 {
            return Err("--replicas must be at least 1".into());
        }
        if write_quorum == 0 || write_quorum > replicas {
            return Err(format!(
                "--write-quorum must be between 1 and --replicas ({replicas}), not {write_quorum}"
            ));
        }
        if replicas > crate::limits::MEMBERS_MAX {
            return Err(format!(
                "--replicas cannot exceed {}",
                crate::limits::MEMBERS_MAX
            ));
        }
        Ok(Self {
            replicas,
            write_quorum,
        })
    }

    /// The quorum a write needs where the largest cluster a node has been
    /// part of had `nodes` members: W, except on a node that has never had
    /// another member (a one-node cluster still works, with one copy). A
    /// cluster still forming does not shrink W: with W = 3, two nodes that
    /// have found each other refuse writes until the third joins, rather
    /// than acknowledge versions with two copies (simulation seed
    /// 61000890 lost such a version when both copies rotted).
    pub fn quorum_in(&self, nodes: usize) -> usize {
        if nodes <= 1 { 1 } else { self.write_quorum }
    }
}

/// `node`'s rendezvous score for `blob`.
pub fn score(node: &NodeId, blob: &ChunkId) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(node.0);
    hasher.update(blob.0);
    let digest = hasher.finalize();
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// `nodes` in the order they should hold `blob`: best first. Ties (never
/// seen with SHA-256, but possible in principle) break by node id, so every
/// node computes the same order.
pub fn rank(blob: &ChunkId, nodes: &[NodeId]) -> Vec<NodeId> {
    let mut scored: Vec<(u64, NodeId)> = nodes.iter().map(|n| (score(n, blob), *n)).collect();
    scored.sort_unstable_by(|a, b| b.cmp(a));
    scored.dedup_by_key(|(_, node)| *node);
    scored.into_iter().map(|(_, node)| node).collect()
}

/// The R owners of `blob` among `nodes`.
pub fn owners(blob: &ChunkId, nodes: &[NodeId], replicas: usize) -> Vec<NodeId> {
    let mut ranked = rank(blob, nodes);
    ranked.truncate(replicas);
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node(i: u16) -> NodeId {
        let mut id = [0u8; 32];
        id[..2].copy_from_slice(&i.to_be_bytes());
        NodeId(crate::cas::sha256(&id))
    }

    fn blob(i: u32) -> ChunkId {
        ChunkId(crate::cas::sha256(&i.to_le_bytes()))
    }

    #[test]
    fn replication_settings_are_checked() {
        assert!(Replication::new(3, 2).is_ok());
        assert!(Replication::new(1, 1).is_ok());
        assert!(Replication::new(0, 0).is_err());
        assert!(Replication::new(3, 0).is_err());
        assert!(Replication::new(2, 3).is_err());
        assert_eq!(Replication::new(3, 2).unwrap().quorum_in(1), 1);
        assert_eq!(Replication::new(3, 2).unwrap().quorum_in(5), 2);
        // A forming cluster does not shrink W.
        assert_eq!(Replication::new(3, 3).unwrap().quorum_in(2), 3);
    }

    #[test]
    fn fewer_members_than_replicas_means_every_member_holds_it() {
        let nodes = [node(1), node(2)];
        let mut got = owners(&blob(7), &nodes, 3);
        got.sort();
        let mut want = nodes.to_vec();
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn blobs_spread_evenly() {
        let nodes: Vec<NodeId> = (0..5).map(node).collect();
        let mut counts = [0usize; 5];
        for b in 0..5000 {
            for owner in owners(&blob(b), &nodes, 3) {
                counts[nodes.iter().position(|n| *n == owner).unwrap()] += 1;
            }
        }
        // 3000 each on average; a skewed hash would show far outside this.
        for count in counts {
            assert!((2700..=3300).contains(&count), "{counts:?}");
        }
    }

    proptest! {
        // Each case ranks thousands of blobs; a few dozen cases cover the
        // shapes (member counts, R) well.
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Whoever computes it, and in whatever order the members are
        /// listed, the owners are the same.
        #[test]
        fn ranking_ignores_member_order(mut ids in prop::collection::vec(0u16..500, 1..12), b in any::<u32>()) {
            let nodes: Vec<NodeId> = ids.iter().map(|i| node(*i)).collect();
            let first = rank(&blob(b), &nodes);
            ids.reverse();
            let reversed: Vec<NodeId> = ids.iter().map(|i| node(*i)).collect();
            prop_assert_eq!(first, rank(&blob(b), &reversed));
        }

        /// A joining member takes over only blobs it now owns: every blob
        /// whose owner set changed gained the newcomer, and about R/(N+1)
        /// of all blobs moved.
        #[test]
        fn a_join_moves_only_what_the_newcomer_gains(n in 3u16..10, r in 1usize..4, newcomer in 1000u16..2000) {
            let before: Vec<NodeId> = (0..n).map(node).collect();
            let mut after = before.clone();
            after.push(node(newcomer));
            let blobs = 2000u32;
            let mut moved = 0;
            for b in 0..blobs {
                let old = owners(&blob(b), &before, r);
                let new = owners(&blob(b), &after, r);
                if old != new {
                    moved += 1;
                    prop_assert!(new.contains(&node(newcomer)));
                    // Exactly one old owner was displaced, the rest stayed.
                    let kept = old.iter().filter(|o| new.contains(o)).count();
                    prop_assert_eq!(kept, r.min(n as usize) - usize::from(old.len() == new.len()));
                }
            }
            let expected = blobs as f64 * r.min(n as usize + 1) as f64 / (n as f64 + 1.0);
            prop_assert!((moved as f64) < expected * 1.3 + 20.0, "moved {moved}, expected about {expected}");
            prop_assert!((moved as f64) > expected * 0.7 - 20.0, "moved {moved}, expected about {expected}");
        }

        /// A leaving member's blobs move to the next in line; nothing else moves.
        #[test]
        fn a_leave_moves_only_what_the_leaver_held(n in 4u16..10, r in 1usize..4, leaver in 0u16..4) {
            let before: Vec<NodeId> = (0..n).map(node).collect();
            let after: Vec<NodeId> = before.iter().copied().filter(|x| *x != node(leaver)).collect();
            for b in 0..1000u32 {
                let old = owners(&blob(b), &before, r);
                let new = owners(&blob(b), &after, r);
                if old.contains(&node(leaver)) {
                    let kept = old.iter().filter(|o| new.contains(o)).count();
                    prop_assert_eq!(kept, r - 1);
                } else {
                    prop_assert_eq!(old, new);
                }
            }
        }
    }
}
