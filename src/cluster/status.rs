//! What a node reports about itself (`Status`, asked by an admin client or
//! by a peer) and what it gathers from every member for the status page
//! and `dfs-node status`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::task::JoinSet;

use super::Cluster;
use crate::keys::NodeId;
use crate::limits::{DISK_SPACE_TIMEOUT, MEMBER_REPORT_TIMEOUT, MEMBER_REPORTS_REUSED_FOR};
use crate::wire::{MemberState, MemberStatus, Message, StatusReport};

/// A member as this node sees it, and what it reported about itself.
#[derive(Debug, Clone)]
pub struct MemberReport {
    /// This node's view of the member (this node itself: alive).
    pub member: MemberStatus,
    /// The member's own report, or why there is none (down, no answer in
    /// [`MEMBER_REPORT_TIMEOUT`], a build that does not answer peers).
    pub report: Result<StatusReport, String>,
}

/// The members' answers to `Status`, by node, gathered at a time
/// (monotonic ms) and reused for a while.
pub(super) type ReportsCache =
    tokio::sync::Mutex<Option<(u64, Arc<BTreeMap<NodeId, Result<StatusReport, String>>>)>>;

impl Cluster {
    /// Whether this node can take writes: it has reached the members it
    /// knew before it started, and a write quorum of them is alive.
    pub fn readiness(&self) -> Result<(), String> {
        if !self.members.complete(self.env.clock.monotonic_ms()) {
            return Err(format!(
                "still reaching the {} members known before this start",
                self.members.expected_at_start()
            ));
        }
        self.check_quorum_reachable()
            .map_err(|error| error.to_string())
    }

    /// This node's report about itself.
    pub async fn status(&self) -> StatusReport {
        let me = self.peers.identity();
        let usage = self.store.usage();
        // A hung file system must not hang the report: it says "unknown".
        // Nor pile up threads: while one query is stuck, no other starts.
        let disk = if self.disk_space_asked.swap(true, Ordering::AcqRel) {
            None
        } else {
            let store = self.store.clone();
            let asked = self.disk_space_asked.clone();
            let query = self.blocking(move || {
                let space = store.space();
                asked.store(false, Ordering::Release);
                space
            });
            tokio::time::timeout(DISK_SPACE_TIMEOUT, query)
                .await
                .ok()
                .and_then(Result::ok)
        };
        let read = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        StatusReport {
            node_id: me.node,
            listen: me.addr.clone(),
            members: std::iter::once(MemberStatus {
                node_id: me.node,
                addr: me.addr,
                state: MemberState::Alive,
            })
            .chain(self.members.members())
            .collect(),
            chunks: usage.blobs,
            bytes_stored: usage.bytes,
            quarantined: read(&self.store.counters.quarantined),
            under_replicated: read(&self.repair.under_replicated),
            under_replicated_bytes: read(&self.repair.under_replicated_bytes),
            scrubbed: read(&self.scrub.blobs_verified),
            scrub_passes: read(&self.scrub.passes),
            repair_copies_made: read(&self.repair.copies_made),
            not_ready: self.readiness().err(),
            disk,
            disk_free_min_percent: self.disk_free_min_percent,
            uptime_s: self
                .env
                .clock
                .monotonic_ms()
                .saturating_sub(self.started_ms)
                / 1000,
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// This node's report and each member's, this node first, then the
    /// members by node id. This node's report and the members' states are
    /// always current; what the members say of themselves is asked of
    /// those not down, all at once, each for at most
    /// [`MEMBER_REPORT_TIMEOUT`], and reused for
    /// [`MEMBER_REPORTS_REUSED_FOR`], so open status pages cost the members
    /// a bounded number of requests.
    pub async fn member_reports(self: &Arc<Self>) -> Vec<MemberReport> {
        let here = self.status().await;
        let members = self.members.members();
        let answers = self.members_answers(&members).await;
        let mut reports = vec![MemberReport {
            member: here.members[0].clone(),
            report: Ok(here),
        }];
        for member in members {
            let report = match answers.get(&member.node_id) {
                Some(answer) if member.state != MemberState::Down => answer.clone(),
                _ => Err("down".to_string()),
            };
            reports.push(MemberReport { member, report });
        }
        reports
    }

    /// Each member's answer to `Status` (members down are not asked),
    /// from the last [`MEMBER_REPORTS_REUSED_FOR`] if asked since.
    async fn members_answers(
        self: &Arc<Self>,
        members: &[MemberStatus],
    ) -> Arc<BTreeMap<NodeId, Result<StatusReport, String>>> {
        let mut cache = self.member_reports.lock().await;
        let now = self.env.clock.monotonic_ms();
        if let Some((at, answers)) = cache.as_ref()
            && now.saturating_sub(*at) < MEMBER_REPORTS_REUSED_FOR.as_millis() as u64
        {
            return answers.clone();
        }
        let mut asks = JoinSet::new();
        let identities: BTreeMap<_, _> = self
            .members
            .alive()
            .into_iter()
            .chain(self.members.not_alive())
            .map(|identity| (identity.node, identity))
            .collect();
        for member in members {
            if member.state == MemberState::Down {
                continue;
            }
            let Some(identity) = identities.get(&member.node_id).cloned() else {
                continue;
            };
            let cluster = self.clone();
            asks.spawn(async move {
                let asked = tokio::time::timeout(
                    MEMBER_REPORT_TIMEOUT,
                    cluster.request(&identity, || Message::Status),
                )
                .await;
                let report = match asked {
                    Ok(Ok(Message::StatusReply(report))) => Ok(report),
                    Ok(Ok(Message::Error { message, .. })) => Err(message),
                    Ok(Ok(other)) => Err(format!("answered {}", other.kind())),
                    Ok(Err(error)) => Err(error.to_string()),
                    Err(_) => Err(format!(
                        "no answer within {} s",
                        MEMBER_REPORT_TIMEOUT.as_secs()
                    )),
                };
                (identity.node, report)
            });
        }
        let mut answers = BTreeMap::new();
        while let Some(joined) = asks.join_next().await {
            if let Ok((node, report)) = joined {
                answers.insert(node, report);
            }
        }
        let answers = Arc::new(answers);
        *cache = Some((self.env.clock.monotonic_ms(), answers.clone()));
        answers
    }
}
