//! Version records across the cluster: quorum writes, pushes, quorum reads.

use std::sync::Arc;

use tokio::task::JoinSet;

use super::{Cluster, ClusterError, ReplicationCounters};
use crate::keys::NodeId;
use crate::meta::{Floor, MergeOutcome, VersionId, VersionRecord};
use crate::peer::PeerIdentity;
use crate::wire::Message;

/// What [`Cluster::refuse_ahead`] took out, and why.
pub(super) struct Refused {
    pub reason: String,
    pub records: Vec<VersionRecord>,
}

impl Cluster {
    /// Take out of `records` and `floors` (from peer `from`) those whose
    /// version id is further ahead of this node's clock than the maximum
    /// offset ([`crate::limits::CLOCK_OFFSET_MAX`]), and say why for the
    /// sender. Nothing is lost: the sender keeps them and anti-entropy
    /// offers them again, merged once this clock has caught up.
    pub(super) fn refuse_ahead(
        &self,
        from: NodeId,
        records: &mut Vec<VersionRecord>,
        floors: &mut Vec<Floor>,
    ) -> Option<Refused> {
        let horizon = self.horizon_ms();
        let mut furthest: Option<VersionId> = None;
        let mut ahead = |vid: &VersionId| {
            let refuse = vid.wall_ms > horizon;
            if refuse && furthest.is_none_or(|f| *vid > f) {
                furthest = Some(*vid);
            }
            refuse
        };
        let (refused, kept): (Vec<VersionRecord>, Vec<VersionRecord>) = std::mem::take(records)
            .into_iter()
            .partition(|r| ahead(&r.vid));
        *records = kept;
        floors.retain(|f| !ahead(&f.floor));
        let vid = furthest?;
        crate::marks::hit("record_beyond_the_clock_offset_refused");
        let now = self.env.clock.unix_ms();
        let ahead_s = vid.wall_ms.saturating_sub(now) / 1000;
        let offset_s = crate::limits::CLOCK_OFFSET_MAX.as_secs();
        tracing::warn!(peer = %from.short(), version = %vid, ahead_s, offset_s, "refused a version id from the future: the peer's clock runs ahead of this node's (or this one's behind) by more than the maximum offset; check both clocks (NTP)");
        Some(Refused {
            reason: format!(
                "version id {vid} is {ahead_s} s ahead of node {}'s clock, more than the {offset_s} s the clocks may differ; check the clocks (NTP)",
                self.me.short()
            ),
            records: refused,
        })
    }

    /// Merge records and floors into this node's index (durably) and note
    /// their ids in the clock.
    pub async fn merge_local(
        &self,
        records: Vec<VersionRecord>,
        floors: Vec<Floor>,
    ) -> Result<MergeOutcome, ClusterError> {
        // Floors too: a version created after a prune must sort above its
        // floor, or the prune's floor would drop it everywhere.
        self.observe(
            records
                .iter()
                .map(|r| r.vid)
                .chain(floors.iter().map(|f| f.floor)),
        );
        use crate::limits::DISK_WRITE_WAIT_MAX;
        if records.is_empty() && floors.is_empty() {
            // Nothing to make durable (an anti-entropy pull that found
            // nothing, a peer's records all refused).
            return Ok(MergeOutcome::default());
        }
        // The slot goes with the queued merge, which outlives a dropped
        // caller.
        let slot = tokio::time::timeout(
            DISK_WRITE_WAIT_MAX,
            self.index_merges.clone().acquire_owned(),
        )
        .await
        .map_err(|_| {
            ClusterError::Local(format!(
                "the index is busy: no merge slot freed within {DISK_WRITE_WAIT_MAX:?}"
            ))
        })?
        .expect("the merge semaphore is never closed");
        let (sender, merged) = tokio::sync::oneshot::channel();
        let start = self.index.queue_merge(
            records,
            floors,
            Box::new(move |outcome| {
                drop(slot);
                let _ = sender.send(outcome);
            }),
        );
        if start {
            let index = self.index.clone();
            // Submitted at once; it runs whether or not anyone waits.
            drop(self.env.blocking(move || index.run_queued_merges()));
        }
        match merged.await {
            Ok(outcome) => outcome.map_err(|e| ClusterError::Local(e.to_string())),
            Err(_) => Err(ClusterError::Local(
                "the index merge batch that held these records failed".into(),
            )),
        }
    }

    /// Make records and floors durable in the index of this node and of
    /// every alive member. Returns once W indexes (this one included) hold
    /// them; the pushes to the rest go on in the background. Anti-entropy
    /// delivers them to nodes that are down now.
    ///
    /// On `Err`, some nodes may hold the records anyway (the write is then
    /// indeterminate, like any write whose acknowledgement was lost); the
    /// caller checks [`Cluster::check_quorum_reachable`] first so that the
    /// common failure, too few nodes up, writes nothing anywhere.
    pub async fn commit(
        self: &Arc<Self>,
        records: Vec<VersionRecord>,
        floors: Vec<Floor>,
    ) -> Result<usize, ClusterError> {
        let needed = self.quorum();
        let local = self.merge_local(records.clone(), floors.clone()).await?;
        // A forgotten stub below the floor forgets what the prune already
        // dropped: nothing is refused.
        if let Some(key) = local.below_floor.iter().find(|key| !key.forgotten) {
            return Err(ClusterError::Pruned(key.name.clone(), key.vid.to_string()));
        }
        let mut pushes = JoinSet::new();
        for peer in self.members.alive() {
            let cluster = self.clone();
            let message = Message::ApplyRecords {
                records: records.clone(),
                floors: floors.clone(),
            };
            pushes.spawn(async move { cluster.push_to(peer, message).await });
        }
        let (acknowledged, failures) = until_quorum(pushes, 1, needed).await;
        if acknowledged < needed {
            let what = match records.first() {
                Some(record) => format!("version {} of {}", record.vid, record.name),
                None => "a prune".to_string(),
            };
            return Err(ClusterError::QuorumNotReached {
                what,
                acknowledged,
                needed,
                detail: failures.join("; "),
            });
        }
        if needed < self.replication.write_quorum {
            ReplicationCounters::bump(&self.counters.writes_below_write_quorum, 1);
        }
        Ok(acknowledged)
    }

    async fn push_to(&self, peer: PeerIdentity, message: Message) -> Result<(), String> {
        match self.request(&peer, || message.clone()).await {
            Ok(Message::RecordsApplied { below_floor })
                if below_floor.iter().all(|key| key.forgotten) =>
            {
                Ok(())
            }
            // The peer did not keep the record: a prune it knows of is past
            // this version. It does not count toward the quorum.
            Ok(Message::RecordsApplied { below_floor }) => {
                crate::marks::hit("commit_refused_below_peer_floor");
                Err(format!(
                    "{}: a prune of {} is past this version",
                    peer.node.short(),
                    below_floor
                        .iter()
                        .find(|key| !key.forgotten)
                        .map_or("", |key| key.name.as_str())
                ))
            }
            Ok(other) => Err(format!("{}: answered {}", peer.node.short(), other.kind())),
            Err(error) => Err(format!("{}: {error}", peer.node.short())),
        }
    }

    /// The greatest current record of `name` among the answers of enough
    /// nodes (this one included) that they meet every write acknowledged by
    /// W of them: N - W + 1 of the N members known now, and at least a
    /// majority. So the answer is the newest acknowledged version, or newer.
    /// A newer record than ours is merged here too, so later local reads
    /// see it, and so are the stubs of versions deleted for good that the
    /// answers bring. Returns this node's current record after that merge.
    pub async fn quorum_current(
        self: &Arc<Self>,
        name: &str,
    ) -> Result<Option<VersionRecord>, ClusterError> {
        // N counts the members known now (alive or not): the largest
        // cluster ever known would also count identities replaced with a
        // disk, and make the read unreachable for good.
        // A view still filling in after a restart would count too few
        // nodes, and a read of too few need not meet the write.
        if !self.members.complete(self.elapsed_ms()) {
            crate::marks::hit("quorum_read_waits_for_a_complete_view");
            return Err(ClusterError::QuorumNotReached {
                what: format!("a quorum read of {name}"),
                acknowledged: self.members.nodes(),
                needed: self.members.expected_at_start(),
                detail: "this node has not yet reached the members it knew before it restarted; retry shortly".into(),
            });
        }
        let known = self.members.nodes();
        let needed = (known / 2 + 1).max((known + 1).saturating_sub(self.quorum()));
        let mut answered = 1;
        let mut asks = JoinSet::new();
        for peer in self.members.alive() {
            let cluster = self.clone();
            let name = name.to_string();
            asks.spawn(async move {
                let ask = || Message::CurrentOf { name: name.clone() };
                match cluster.request(&peer, ask).await {
                    Ok(Message::Records { records }) => Ok((peer.node, records)),
                    // A build that answers with its current record alone.
                    Ok(Message::Current { record }) => {
                        Ok((peer.node, record.into_iter().collect()))
                    }
                    Ok(other) => Err(format!("answered {}", other.kind())),
                    Err(error) => Err(error.to_string()),
                }
            });
        }
        // This node's own current record, read while the others answer.
        let here = self.current_here(name).await?;
        // Each member answers with its current record and the stubs of the
        // versions above it it deleted for good (which this node must not
        // serve).
        let mut newest: Vec<VersionRecord> = Vec::new();
        // Enough answers meet every acknowledged write; the slowest member
        // is not waited for (the asks left are dropped with the set).
        while answered < needed
            && let Some(joined) = asks.join_next().await
        {
            if let Ok(Ok((from, record))) = joined {
                answered += 1;
                let mut records = record;
                if let Some(Refused { reason, .. }) =
                    self.refuse_ahead(from, &mut records, &mut Vec::new())
                {
                    // A newer version exists that this node cannot take:
                    // answering with an older one would break the promise.
                    crate::marks::hit("quorum_read_met_a_version_beyond_the_clock");
                    return Err(ClusterError::Clock(format!(
                        "a quorum read of {name} found a newer version this node cannot take yet: {reason}"
                    )));
                }
                newest.extend(records.into_iter().filter(|r| r.name == name));
            }
        }
        if answered < needed {
            return Err(ClusterError::QuorumNotReached {
                what: format!("a quorum read of {name}"),
                acknowledged: answered,
                needed,
                detail: "too few members answered".into(),
            });
        }
        let learned = to_learn(here.as_ref(), newest);
        if learned.is_empty() {
            return Ok(here);
        }
        // Read again after the merge, whatever it took: a push may have
        // brought the same records meanwhile (then the merge takes none,
        // and `here` is stale all the same).
        let merged = self.merge_local(learned, Vec::new()).await?;
        if merged.records.iter().any(|r| r.forgotten) {
            crate::marks::hit("quorum_read_learned_a_deletion_for_good");
        }
        if merged.records.iter().any(|r| !r.forgotten) {
            crate::marks::hit("quorum_read_learned_a_newer_record");
        }
        self.current_here(name).await
    }

    /// `name`'s current record in this node's index.
    async fn current_here(&self, name: &str) -> Result<Option<VersionRecord>, ClusterError> {
        let index = self.index.clone();
        let lookup = name.to_string();
        self.blocking(move || index.current(&lookup))
            .await
            .map_err(|e| ClusterError::Local(e.to_string()))
    }
}

/// What a quorum read takes into this node's index from the members'
/// newest records: every stub (a version deleted for good, which this
/// node must not serve even if it is the newest it holds), and the newest
/// version not deleted if it is newer than `here`, this node's current.
fn to_learn(here: Option<&VersionRecord>, newest: Vec<VersionRecord>) -> Vec<VersionRecord> {
    let forgotten: Vec<VersionId> = newest
        .iter()
        .filter(|r| r.forgotten)
        .map(|r| r.vid)
        .collect();
    let best_elsewhere = newest
        .iter()
        .filter(|r| !r.forgotten && !forgotten.contains(&r.vid))
        .max_by_key(|r| r.vid)
        .cloned();
    let mut learned: Vec<VersionRecord> = newest.into_iter().filter(|r| r.forgotten).collect();
    // What this node would serve once the stubs are taken: not a version
    // they delete.
    let here = here.filter(|h| !forgotten.contains(&h.vid));
    if let Some(record) = best_elsewhere
        && here.is_none_or(|h| record.vid > h.vid)
    {
        learned.push(record);
    }
    learned
}

/// Wait for pushes until `needed` acknowledgements (counting the
/// `acknowledged` already had, this node's own) or until none is left;
/// returns the count and the failures seen. The pushes still running
/// finish on their own (detached, not aborted): the write reaches every
/// node it can.
pub(super) async fn until_quorum(
    mut pushes: JoinSet<Result<(), String>>,
    mut acknowledged: usize,
    needed: usize,
) -> (usize, Vec<String>) {
    let mut failures = Vec::new();
    while acknowledged < needed {
        match pushes.join_next().await {
            Some(Ok(Ok(()))) => acknowledged += 1,
            Some(Ok(Err(error))) => failures.push(error),
            Some(Err(error)) => failures.push(format!("a push task failed: {error}")),
            None => break,
        }
    }
    pushes.detach_all();
    (acknowledged, failures)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::NodeId;

    fn version(wall_ms: u64) -> VersionRecord {
        VersionRecord {
            name: "a".into(),
            vid: VersionId {
                wall_ms,
                counter: 0,
                node: NodeId([1; 32]),
            },
            forgotten: false,
            content: None,
            size: 0,
            by: None,
            etag: None,
            null_version: false,
        }
    }

    #[test]
    fn a_quorum_read_learns_deletions_and_newer_versions_only() {
        let (old, new) = (version(1), version(2));
        let deleted = VersionRecord::forgetting("a", new.vid);
        // Our newest was deleted for good where the others answered: the
        // stub is learned, and the version under it with it (this node may
        // lack it; merging one it holds changes nothing).
        assert_eq!(
            to_learn(Some(&new), vec![deleted.clone(), old.clone()]),
            vec![deleted.clone(), old.clone()]
        );
        // A member that missed the deletion does not bring it back.
        assert_eq!(
            to_learn(Some(&old), vec![new.clone(), deleted.clone()]),
            vec![deleted]
        );
        // A newer version is learned; an older or the same one is not.
        assert_eq!(to_learn(Some(&old), vec![new.clone()]), vec![new.clone()]);
        assert_eq!(to_learn(None, vec![old.clone()]), vec![old.clone()]);
        assert!(to_learn(Some(&new), vec![old, new.clone()]).is_empty());
    }
}
