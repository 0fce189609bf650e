//! The member view: what the rest of the node reads about membership
//! (members and their states, the largest cluster known, whether the view
//! is complete after a start). The membership task writes it.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::PeerIdentity;
use crate::keys::NodeId;
use crate::wire::{MemberState, MemberStatus};

/// What the rest of the node reads about membership.
#[derive(Debug)]
pub struct MemberView {
    members: Mutex<BTreeMap<NodeId, (PeerIdentity, MemberState)>>,
    /// The largest cluster (nodes, this one included) this node has been
    /// part of, or more (see [`MemberView::largest_cluster`]).
    largest_cluster: AtomicUsize,
    /// How many nodes the view must count before it is complete after a
    /// start (see [`MemberView::complete`]), and whether it has been.
    expected_at_start: usize,
    /// When the view counts as complete regardless (monotonic ms).
    complete_by_ms: u64,
    completed: std::sync::atomic::AtomicBool,
    /// Members SWIM forgot since start.
    forgotten: std::sync::atomic::AtomicU64,
    /// Joins, state changes and forgettings seen (see `changes_counter`).
    changes: std::sync::atomic::AtomicU64,
}

impl Default for MemberView {
    fn default() -> Self {
        Self::new(1)
    }
}

impl MemberView {
    /// A view of a node that has been part of a cluster of
    /// `largest_cluster` nodes (1: it has only ever been alone).
    pub fn new(largest_cluster: usize) -> Self {
        Self::expecting(largest_cluster, largest_cluster, (0, Duration::ZERO))
    }

    /// A view that is complete once it counts `expected_at_start` nodes
    /// (this one included): the members this node persisted when it last
    /// ran, or, without that list, the largest cluster it has known.
    ///
    /// `(started_ms, forget_after)`: when this node started (monotonic ms)
    /// and how long SWIM remembers a down member. A member that has not
    /// been seen that long after the start would have been forgotten by
    /// now anyway (decommissioned, or gone for good), so the view counts as
    /// complete then too, rather than stop collection until a restart.
    pub fn expecting(
        largest_cluster: usize,
        expected_at_start: usize,
        (started_ms, forget_after): (u64, Duration),
    ) -> Self {
        Self {
            members: Mutex::new(BTreeMap::new()),
            largest_cluster: AtomicUsize::new(largest_cluster.max(1)),
            expected_at_start: expected_at_start.max(1),
            complete_by_ms: started_ms.saturating_add(forget_after.as_millis() as u64),
            completed: std::sync::atomic::AtomicBool::new(false),
            forgotten: std::sync::atomic::AtomicU64::new(0),
            changes: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// How many nodes the view must count to be complete after a start.
    pub fn expected_at_start(&self) -> usize {
        self.expected_at_start
    }

    /// Whether the view holds every node this node knew when it last ran:
    /// after a start it fills in as members are reached, and a partial view
    /// proves nothing (the garbage collector waits for this). Once
    /// complete, the view is authoritative: a member SWIM forgets (down for
    /// a day, decommissioned) is not waited for again.
    pub fn complete(&self, now_ms: u64) -> bool {
        if self.completed.load(Ordering::Relaxed) {
            return true;
        }
        let complete = self.nodes() >= self.expected_at_start || now_ms >= self.complete_by_ms;
        if complete {
            self.completed.store(true, Ordering::Relaxed);
        }
        complete
    }

    /// The size of the largest cluster this node has been part of: never
    /// less than the addresses of the members it knows now (alive or not)
    /// plus itself, and never shrinking, across restarts too (it is
    /// persisted). A node that has only ever been alone writes one copy,
    /// any other W; and the garbage collector meets every record through
    /// N - W members of it. Addresses, not identities, are counted: a node
    /// that lost its disk and came back at its address under a new
    /// identity is one node, also in the seconds both identities look
    /// alive (counting two would hold the collector back for good).
    pub fn largest_cluster(&self) -> usize {
        let known = self.addresses();
        self.largest_cluster
            .fetch_max(known, Ordering::Relaxed)
            .max(known)
    }

    /// The distinct addresses among the members this node knows, plus
    /// itself.
    fn addresses(&self) -> usize {
        let members = self.members.lock().expect("member view poisoned");
        members
            .values()
            .map(|(identity, _)| identity.addr.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            + 1
    }

    /// The nodes this node knows now, itself included, not counting an
    /// identity replaced at its address ([`MemberView::distinct`]): a node
    /// that lost its disk rejoins under a new identity, and its old one
    /// stays listed (down) until SWIM forgets it.
    pub fn nodes(&self) -> usize {
        self.distinct().len() + 1
    }

    /// The known members, less each identity that is not alive and was
    /// replaced by a later start at its address (a node that lost its disk
    /// rejoins there under a new identity). A replaced identity will not
    /// come back, so nothing waits for it (the garbage collector's passes,
    /// quorum reads).
    pub fn distinct(&self) -> Vec<MemberStatus> {
        let members = self.members.lock().expect("member view poisoned");
        // The latest start at each address.
        let mut latest: BTreeMap<&str, u64> = BTreeMap::new();
        for (identity, _) in members.values() {
            let bump = latest
                .entry(identity.addr.as_str())
                .or_insert(identity.bump);
            *bump = (*bump).max(identity.bump);
        }
        members
            .values()
            // Only an identity not seen alive gives way, and only to a later
            // start at its address: two alive members sharing an address
            // (a wildcard advertised by mistake) are two nodes.
            .filter(|(identity, state)| {
                *state == MemberState::Alive || latest[identity.addr.as_str()] <= identity.bump
            })
            .map(|(identity, state)| MemberStatus {
                node_id: identity.node,
                addr: identity.addr.clone(),
                state: *state,
            })
            .collect()
    }

    /// Every known member except this node, sorted by node id.
    pub fn members(&self) -> Vec<MemberStatus> {
        self.members
            .lock()
            .expect("member view poisoned")
            .values()
            .map(|(identity, state)| MemberStatus {
                node_id: identity.node,
                addr: identity.addr.clone(),
                state: *state,
            })
            .collect()
    }

    /// Members currently alive (not suspect, not down), excluding this node.
    pub fn alive(&self) -> Vec<PeerIdentity> {
        self.members
            .lock()
            .expect("member view poisoned")
            .values()
            .filter(|(_, state)| *state == MemberState::Alive)
            .map(|(identity, _)| identity.clone())
            .collect()
    }

    /// Members this node does not see alive now (suspect or down),
    /// excluding this node: a read that found no copy on the alive nodes
    /// asks these last, since views differ for a while after a partition or
    /// a restart and a copy may sit on a node this one has not seen come back.
    pub fn not_alive(&self) -> Vec<PeerIdentity> {
        self.members
            .lock()
            .expect("member view poisoned")
            .values()
            .filter(|(_, state)| *state != MemberState::Alive)
            .map(|(identity, _)| identity.clone())
            .collect()
    }

    pub(super) fn replace(&self, members: BTreeMap<NodeId, (PeerIdentity, MemberState)>) {
        let mut view = self.members.lock().expect("member view poisoned");
        let forgotten = view
            .keys()
            .filter(|node| !members.contains_key(node))
            .count();
        let changed = members
            .iter()
            .filter(|(node, (_, state))| view.get(node).is_none_or(|(_, was)| was != state))
            .count()
            + forgotten;
        self.changes.fetch_add(changed as u64, Ordering::Relaxed);
        if forgotten > 0 {
            crate::marks::hit("swim_forgot_a_member");
            self.forgotten
                .fetch_add(forgotten as u64, Ordering::Relaxed);
        }
        *view = members;
    }

    /// Members that joined, changed state or were forgotten since start:
    /// the counter itself, for the metrics.
    pub fn changes_counter(&self) -> &std::sync::atomic::AtomicU64 {
        &self.changes
    }

    /// Members SWIM forgot (down for `forget_down_after`) since start.
    pub fn forgotten(&self) -> u64 {
        self.forgotten.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(node: u8, addr: &str, bump: u64) -> PeerIdentity {
        PeerIdentity {
            node: NodeId([node; 32]),
            addr: addr.into(),
            bump,
        }
    }

    /// A node that lost its disk and rejoined at its address under a new
    /// identity is one node: counted twice, even for the seconds both
    /// identities look alive, the largest cluster would grow for good and
    /// hold the garbage collector back (it needs N - W members).
    #[test]
    fn a_replaced_identity_at_one_address_counts_once() {
        let view = MemberView::new(1);
        let mut members = BTreeMap::new();
        for (node, addr, bump) in [(1, "b:7400", 1), (2, "c:7400", 1), (3, "c:7400", 2)] {
            let identity = identity(node, addr, bump);
            members.insert(identity.node, (identity, MemberState::Alive));
        }
        view.replace(members);
        assert_eq!(view.largest_cluster(), 3);
        assert_eq!(
            view.nodes(),
            4,
            "two alive identities at one address are two members"
        );
    }
}
