//! Anti-entropy: periodic, pairwise repair of the version index.
//!
//! One round, started by A with a random alive peer B:
//! 1. A sends the digests of its index buckets (`SyncDigests`); B compares
//!    them with its own and answers with its record keys and floors in the
//!    buckets that differ (`SyncKeys`).
//!    The same exchange compares the digests of both nodes' access key
//!    records; when they differ, A fetches B's and sends B those of its own
//!    that B lacks or that supersede B's (see `keys`).
//! 2. A lists its own keys in those buckets. Keys only B has, A fetches
//!    (`FetchRecords`); records only A has, A sends (`ApplyRecords`).
//!    Floors are merged both ways the same way.
//!
//! Both lists are in key order and cut at the same byte budget, so when a
//! list was truncated only keys up to its last one are compared, and the
//! next round with that peer lists only the keys after it (`after`): a pass
//! over a large difference advances round by round instead of comparing the
//! same first keys for ever. A *pass* is the rounds from the first key to
//! the last; when one completes, this node holds every record the peer held
//! when the pass started, which the garbage collector waits for (see
//! `repair`). The cost of a round is the keys of the differing buckets after
//! the cursor plus the missing records, never the whole index.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Cluster, ReplicationCounters};
use crate::cas::ContentId;
use crate::keys::NodeId;
use crate::limits::{DEFERRED_CONTENTS_MAX, SYNC_BATCH_BYTES, SYNC_ENTRY_OVERHEAD};
use crate::meta::digest::SYNC_BUCKETS;
use crate::meta::{Floor, RecordKey, VersionRecord};
use crate::peer::{PeerError, PeerIdentity};
use crate::wire::Message;

/// What one round moved.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    pub differing_buckets: usize,
    pub records_received: usize,
    pub records_sent: usize,
    pub floors_sent: usize,
    /// The last key this round compared, when the pass continues after it
    /// (`None`: the pass is complete, unless `stalled`).
    pub continue_after: Option<RecordKey>,
    /// The round could not compare any key (see `sync_with`); the pass
    /// stays where it was.
    pub stalled: bool,
    /// Contents of the peer's records this node refused as from beyond its
    /// clock (see `Cluster::pass_completed`).
    pub deferred: BTreeSet<ContentId>,
    /// The peer's access key records differ from this node's.
    pub keys_differ: bool,
}

/// Where a pass with one peer stands.
#[derive(Debug, Clone, Default)]
pub struct SyncPass {
    /// When the pass's first round started ([`Cluster::elapsed_ms`]).
    pub started_ms: u64,
    /// The key the next round continues after (`None`: a new pass).
    pub after: Option<RecordKey>,
    /// Contents of records refused so far in this pass (bounded by
    /// [`DEFERRED_CONTENTS_MAX`]).
    pub deferred: BTreeSet<ContentId>,
}

/// The background loop: one round with a random alive peer every
/// `sync_interval` (jittered, so nodes do not sync in lockstep).
pub struct SyncTask {
    pub cluster: Arc<Cluster>,
}

impl SyncTask {
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        // One pass in progress per peer; members come and go, so the map is
        // pruned to the current members (bounded by MEMBERS_MAX).
        let mut passes: BTreeMap<NodeId, SyncPass> = BTreeMap::new();
        loop {
            let wait = self
                .cluster
                .jittered(self.cluster.maintenance.sync_interval);
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(wait) => {}
            }
            let alive = self.cluster.members.alive();
            if alive.is_empty() {
                continue;
            }
            let peer = &alive[(self.cluster.env.random_u64() % alive.len() as u64) as usize];
            let members: BTreeSet<NodeId> = self
                .cluster
                .members
                .members()
                .iter()
                .map(|m| m.node_id)
                .collect();
            passes.retain(|node, _| members.contains(node));
            let now = self.cluster.elapsed_ms();
            let pass = passes.entry(peer.node).or_insert_with(|| SyncPass {
                started_ms: now,
                after: None,
                deferred: BTreeSet::new(),
            });
            if pass.after.is_none() {
                pass.started_ms = now;
                pass.deferred.clear();
            }
            let after = pass.after.clone();
            let round = tokio::select! {
                _ = &mut shutdown => break,
                round = self.cluster.sync_with(peer, after) => round,
            };
            // Access keys ride along: the round compared their digests,
            // and records move only when they differ.
            if matches!(&round, Ok(report) if report.keys_differ) {
                let keys = tokio::select! {
                    _ = &mut shutdown => break,
                    keys = self.cluster.sync_keys_with(peer) => keys,
                };
                if let Err(error) = keys {
                    tracing::debug!(peer = %peer.node.short(), %error, "access key sync failed");
                }
            }
            match round {
                Ok(report) => {
                    if report.differing_buckets > 0 {
                        tracing::debug!(peer = %peer.node.short(), ?report, "anti-entropy round");
                    }
                    pass.deferred.extend(report.deferred);
                    if pass.deferred.len() > DEFERRED_CONTENTS_MAX {
                        // Too much to hold as referenced: this pass does
                        // not count, and collection waits.
                        pass.after = None;
                        continue;
                    }
                    if report.stalled {
                        continue;
                    }
                    pass.after = report.continue_after;
                    if pass.after.is_none() {
                        let deferred = std::mem::take(&mut pass.deferred);
                        self.cluster
                            .pass_completed(peer.node, pass.started_ms, deferred);
                    } else {
                        crate::marks::hit("sync_pass_continues");
                    }
                }
                Err(error) => {
                    // The pass starts over: what the failed round compared
                    // is not known to have been merged.
                    pass.after = None;
                    tracing::debug!(peer = %peer.node.short(), %error, "anti-entropy round failed")
                }
            }
        }
    }
}

/// Split `items` into batches of at most [`SYNC_BATCH_BYTES`] by `cost`.
fn batches<T>(items: Vec<T>, cost: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    let mut batch = Vec::new();
    let mut used = 0;
    for item in items {
        let c = cost(&item);
        if !batch.is_empty() && used + c > SYNC_BATCH_BYTES {
            out.push(std::mem::take(&mut batch));
            used = 0;
        }
        used += c;
        batch.push(item);
    }
    if !batch.is_empty() {
        out.push(batch);
    }
    out
}

fn key_cost(key: &RecordKey) -> usize {
    key.name.len() + SYNC_ENTRY_OVERHEAD
}

impl Cluster {
    /// Note that a complete pass with `peer` started at `started_ms` (and
    /// ends now), and the contents of the peer's records it refused as from
    /// beyond the clock: until the next complete pass with that peer, the
    /// garbage collector counts them as referenced (the records are not in
    /// the index, yet the peer holds them).
    fn pass_completed(&self, peer: NodeId, started_ms: u64, deferred: BTreeSet<ContentId>) {
        let now = self.elapsed_ms();
        let members: BTreeSet<NodeId> = self.members.members().iter().map(|m| m.node_id).collect();
        {
            let mut by_peer = self.deferred_contents.lock().expect("deferred poisoned");
            by_peer.retain(|node, _| members.contains(node));
            if deferred.is_empty() {
                by_peer.remove(&peer);
            } else {
                crate::marks::hit("sync_deferred_records_beyond_the_clock");
                by_peer.insert(peer, deferred);
            }
        }
        let mut synced = self.synced_with.lock().expect("sync state poisoned");
        synced.retain(|node, _| members.contains(node));
        synced.insert(peer, (started_ms, now));
        ReplicationCounters::bump(&self.counters.sync_passes, 1);
    }

    /// Every content deferred by the latest complete pass with each member.
    pub(super) fn deferred_contents(&self) -> BTreeSet<ContentId> {
        let by_peer = self.deferred_contents.lock().expect("deferred poisoned");
        by_peer.values().flatten().copied().collect()
    }

    /// How long ago (ms) the last complete anti-entropy pass with each
    /// current member ended, for members with one since this node started.
    pub fn last_complete_passes(&self) -> Vec<(NodeId, u64)> {
        let members: std::collections::BTreeSet<NodeId> =
            self.members.members().iter().map(|m| m.node_id).collect();
        let now = self.elapsed_ms();
        let synced = self.synced_with.lock().expect("sync state poisoned");
        synced
            .iter()
            .filter(|(node, _)| members.contains(node))
            .map(|(node, (_, ended))| (*node, now.saturating_sub(*ended)))
            .collect()
    }

    /// Whether this node has compared its whole index with every member:
    /// for each member it knows (alive or not; one per address, see
    /// [`MemberView::distinct`](crate::peer::MemberView::distinct)) a complete pass that started
    /// after `since_ms` and ended before `records_read_ms` (when the caller read
    /// the records it decides from, so what the pass merged is in them),
    /// in a view that holds every node it knew when it last ran (an empty
    /// or partial view after a restart cut off from the cluster proves
    /// nothing: [`MemberView::complete`](crate::peer::MemberView::complete)),
    /// and with at least N - W members, N the largest cluster this node has
    /// known: a version record sits on W nodes, so this node and N - W
    /// others meet it, even when the nodes that hold it were forgotten
    /// (down longer than SWIM remembers: sim seed 62000482 collected the
    /// manifest of an acknowledged version whose only holder of the record
    /// its node had forgotten).
    pub(super) fn synced_with_every_member_since(
        &self,
        since_ms: u64,
        records_read_ms: u64,
    ) -> bool {
        let synced = self.synced_with.lock().expect("sync state poisoned");
        let members = self.members.distinct();
        let qualifies = |node: &NodeId| {
            synced
                .get(node)
                .is_some_and(|&(started, ended)| started > since_ms && ended < records_read_ms)
        };
        if !members.iter().all(|m| qualifies(&m.node_id))
            || !self.members.complete(self.elapsed_ms())
        {
            return false;
        }
        let others_needed = self.members.largest_cluster().saturating_sub(self.quorum());
        let others = members.iter().filter(|m| qualifies(&m.node_id)).count();
        if others < others_needed {
            crate::marks::hit("gc_waits_for_enough_members_to_meet_every_record");
            self.note_gc_held(others, others_needed);
            return false;
        }
        true
    }

    /// Say (once per change) that garbage collection waits for members it
    /// cannot reach: silent, it would look like a disk filling for no
    /// reason.
    fn note_gc_held(&self, members: usize, needed: usize) {
        let key = ((members as u64) << 32) | needed as u64;
        if self.gc_held_logged.swap(key, Ordering::Relaxed) != key {
            tracing::warn!(
                members,
                needed,
                largest_cluster = self.members.largest_cluster(),
                "garbage collection waits: it must compare indexes with {needed} members to meet every version's holders and knows {members}; it resumes when they are reachable (after removing nodes for good, lower cluster_size in the data dir)"
            );
        }
    }

    /// One anti-entropy round with `peer`, comparing the keys after `after`
    /// (`None`: from the first). The report says where the next round of
    /// the pass continues.
    pub async fn sync_with(
        self: &Arc<Self>,
        peer: &PeerIdentity,
        after: Option<RecordKey>,
    ) -> Result<SyncReport, String> {
        let index = self.index.clone();
        let digests = self
            .blocking(move || index.digests())
            .await
            .map_err(|e| e.to_string())?;
        let connection = self.connect(peer).await.map_err(|e| e.to_string())?;
        let reply = connection
            .call(Message::SyncDigests {
                digests,
                after: after.clone(),
                keys_digest: self.keyring.digest(),
            })
            .await
            .map_err(|e| e.to_string())?;
        let Message::SyncKeys {
            buckets,
            keys: their_keys,
            floors: their_floors,
            truncated: their_truncated,
            keys_differ,
        } = reply
        else {
            return Err(format!("SyncDigests answered with {}", reply.kind()));
        };
        let mut report = SyncReport {
            differing_buckets: buckets.len(),
            keys_differ,
            ..SyncReport::default()
        };
        if buckets.is_empty() {
            ReplicationCounters::bump(&self.counters.sync_rounds, 1);
            return Ok(report);
        }
        let mut wanted = vec![false; SYNC_BUCKETS];
        for bucket in buckets {
            if let Some(slot) = wanted.get_mut(usize::from(bucket)) {
                *slot = true;
            }
        }
        let index = self.index.clone();
        let (our_keys, our_floors, our_truncated) = self
            .blocking(move || index.keys_in_buckets(&wanted, SYNC_BATCH_BYTES, after.as_ref()))
            .await
            .map_err(|e| e.to_string())?;

        // Compare only up to where both lists are complete.
        let horizon = [
            their_truncated
                .then(|| their_keys.last().cloned())
                .flatten(),
            our_truncated.then(|| our_keys.last().cloned()).flatten(),
        ]
        .into_iter()
        .flatten()
        .min();
        // A truncated list without a single key (its floors alone filled the
        // budget) compared nothing: the pass makes no progress and must not
        // count as complete.
        if (their_truncated && their_keys.is_empty()) || (our_truncated && our_keys.is_empty()) {
            crate::marks::hit("sync_round_without_progress");
            report.stalled = true;
        }
        report.continue_after = horizon.clone();
        // By name and version only: a forgotten stub and its record share
        // a position (the next round starts after it, whatever the flag),
        // so both must be compared in this one.
        let within = |key: &RecordKey| {
            horizon
                .as_ref()
                .is_none_or(|h| (&key.name, key.vid) <= (&h.name, h.vid))
        };
        let ours: BTreeSet<&RecordKey> = our_keys.iter().collect();
        let theirs: BTreeSet<&RecordKey> = their_keys.iter().collect();
        let missing_here: Vec<RecordKey> = their_keys
            .iter()
            .filter(|k| within(k) && !ours.contains(k))
            .cloned()
            .collect();
        let missing_there: Vec<RecordKey> = our_keys
            .iter()
            .filter(|k| within(k) && !theirs.contains(k))
            .cloned()
            .collect();
        let floors_there: Vec<Floor> = our_floors
            .iter()
            .filter(|ours| {
                !their_floors
                    .iter()
                    .any(|t| t.name == ours.name && t.floor >= ours.floor)
            })
            .cloned()
            .collect();

        // Pull: their floors and the records we lack.
        let mut pulled: Vec<VersionRecord> = Vec::new();
        for batch in batches(missing_here, key_cost) {
            match connection
                .call(Message::FetchRecords { keys: batch })
                .await
                .map_err(|e| e.to_string())?
            {
                Message::Records { records } => pulled.extend(records),
                other => return Err(format!("FetchRecords answered with {}", other.kind())),
            }
        }
        let mut their_floors = their_floors;
        let refused = self.refuse_ahead(peer.node, &mut pulled, &mut their_floors);
        let merged = self
            .merge_local(pulled, their_floors)
            .await
            .map_err(|e| e.to_string())?;
        // A record left out (from beyond the clock offset) is not in the
        // index, so the garbage collector would not count its content: the
        // pass carries it (see `pass_completed`).
        if let Some(refused) = refused {
            report
                .deferred
                .extend(refused.records.iter().filter_map(|r| r.content));
        }
        report.records_received = merged.records.len();
        ReplicationCounters::bump(
            &self.counters.sync_records_received,
            report.records_received as u64,
        );

        // Push: our floors they lack and the records they lack.
        let index = self.index.clone();
        let records = self
            .blocking(move || index.records(&missing_there))
            .await
            .map_err(|e| e.to_string())?;
        report.floors_sent = floors_there.len();
        let mut floors = Some(floors_there);
        let mut record_batches = batches(records, |r| r.name.len() + SYNC_ENTRY_OVERHEAD);
        if record_batches.is_empty() && floors.as_ref().is_some_and(|f| !f.is_empty()) {
            record_batches.push(Vec::new());
        }
        for batch in record_batches {
            let sent = batch.len();
            let message = Message::ApplyRecords {
                records: batch,
                floors: floors.take().unwrap_or_default(),
            };
            match connection.call(message).await {
                // Records below the peer's floor are dropped there; that
                // floor reaches this node in a first round of a pass (they
                // list floors), which drops them here too.
                Ok(Message::RecordsApplied { .. }) => {
                    report.records_sent += sent;
                    ReplicationCounters::bump(&self.counters.sync_records_sent, sent as u64);
                }
                // The peer refused some (from beyond its clock): offered
                // again next pass. A pass is about what this node pulled,
                // so it goes on.
                Err(PeerError::Remote { message, .. }) => {
                    tracing::debug!(peer = %peer.node.short(), %message, "the peer refused records this node pushed");
                }
                Ok(other) => return Err(format!("ApplyRecords answered with {}", other.kind())),
                Err(error) => return Err(error.to_string()),
            }
        }
        ReplicationCounters::bump(&self.counters.sync_rounds, 1);
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_respect_the_budget_and_keep_everything() {
        let items: Vec<usize> = (0..100).map(|i| i * SYNC_BATCH_BYTES / 250).collect();
        let all = batches(items.clone(), |c| *c);
        assert_eq!(all.concat(), items);
        for batch in &all {
            let total: usize = batch.iter().sum();
            assert!(batch.len() == 1 || total <= SYNC_BATCH_BYTES);
        }
    }
}
