//! Whether a node is healthy, judged from its [`StatusReport`]: the one
//! rule behind `dfs-node status`'s exit code and the status page's
//! summary, so both always agree.
//!
//! A node is *unhealthy* when it cannot do its job: it cannot take writes
//! (a write quorum is out of reach, or it is still reaching the members it
//! knew), or its disk is nearly full. It is *degraded* when it works but
//! something needs attention: members down, blobs with fewer than R
//! copies, corrupt blobs found.

use crate::wire::{MemberState, StatusReport};

/// By default a node whose disk has less free than this fraction (in
/// percent) of its size is unhealthy: writes fail once it is full. Like
/// Ceph's full ratio (95%), it leaves room to act before writes fail;
/// `serve --disk-free-min-percent` sets it per node.
pub const DEFAULT_DISK_FREE_MIN_PERCENT: u8 = 5;

/// How serious a [`Problem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Works, but needs attention.
    Degraded,
    /// Cannot do its job: `dfs-node status` exits non-zero.
    Unhealthy,
}

impl Severity {
    pub fn label(self) -> &'static str {
        match self {
            Severity::Degraded => "degraded",
            Severity::Unhealthy => "unhealthy",
        }
    }
}

/// One thing wrong, and what an operator can do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub severity: Severity,
    pub what: String,
    pub what_to_do: String,
}

/// Everything wrong with the node that sent `report`, the most serious
/// first; empty when it is healthy.
pub fn problems(report: &StatusReport) -> Vec<Problem> {
    let mut found = Vec::new();
    if let Some(reason) = &report.not_ready {
        found.push(Problem {
            severity: Severity::Unhealthy,
            what: format!("cannot take writes: {reason}"),
            what_to_do: "start the members that are down, or check the network between the nodes"
                .into(),
        });
    }
    if let Some(disk) = report.disk
        && disk.total_bytes > 0
        && u128::from(disk.free_bytes) * 100
            < u128::from(disk.total_bytes) * u128::from(report.disk_free_min_percent)
    {
        found.push(Problem {
            severity: Severity::Unhealthy,
            what: format!(
                "the disk is nearly full: {} of {} free",
                bytes(disk.free_bytes),
                bytes(disk.total_bytes)
            ),
            what_to_do:
                "free or add disk space, or add nodes; writes to this node fail once it is full"
                    .into(),
        });
    }
    let away: Vec<String> = report
        .members
        .iter()
        .filter(|m| m.state != MemberState::Alive)
        .map(|m| {
            let state = if m.state == MemberState::Down {
                "down"
            } else {
                "suspect"
            };
            format!("{} at {} ({state})", m.node_id.short(), m.addr)
        })
        .collect();
    if !away.is_empty() {
        found.push(Problem {
            severity: Severity::Degraded,
            what: format!("{} member(s) not alive: {}", away.len(), away.join(", ")),
            what_to_do: "restart them or check the network; the blobs they own are copied to other nodes meanwhile"
                .into(),
        });
    }
    if report.under_replicated > 0 {
        found.push(Problem {
            severity: Severity::Degraded,
            what: format!(
                "{} blobs ({}) have fewer than R copies",
                report.under_replicated,
                bytes(report.under_replicated_bytes)
            ),
            what_to_do: "nothing if it shrinks: the repair loop is copying them; if it does not, bring the down members back"
                .into(),
        });
    }
    if report.quarantined > 0 {
        found.push(Problem {
            severity: Severity::Degraded,
            what: format!(
                "{} blobs found corrupt on disk since start (quarantined; good copies replace them)",
                report.quarantined
            ),
            what_to_do: "check the disk's health (smartctl, dmesg); replace it if corruption keeps appearing"
                .into(),
        });
    }
    found.sort_by_key(|p| std::cmp::Reverse(p.severity));
    found
}

/// A duration in seconds for people: `42 s`, `5 min`, `3 h`, `2 days`.
pub fn seconds(seconds: u64) -> String {
    if seconds < 120 {
        format!("{seconds} s")
    } else if seconds < 7200 {
        format!("{} min", seconds / 60)
    } else if seconds < 172_800 {
        format!("{} h", seconds / 3600)
    } else {
        format!("{} days", seconds / 86_400)
    }
}

/// `n` bytes for people: B, KiB, MiB, GiB or TiB, one decimal.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::NodeId;
    use crate::wire::{DiskSpace, MemberStatus};

    fn healthy() -> StatusReport {
        StatusReport {
            node_id: NodeId([1; 32]),
            listen: "127.0.0.1:7400".into(),
            members: vec![MemberStatus {
                node_id: NodeId([1; 32]),
                addr: "127.0.0.1:7400".into(),
                state: MemberState::Alive,
            }],
            chunks: 0,
            bytes_stored: 0,
            quarantined: 0,
            under_replicated: 0,
            under_replicated_bytes: 0,
            scrubbed: 0,
            scrub_passes: 0,
            repair_copies_made: 0,
            not_ready: None,
            disk: Some(DiskSpace {
                total_bytes: 100 << 30,
                free_bytes: 50 << 30,
            }),
            disk_free_min_percent: DEFAULT_DISK_FREE_MIN_PERCENT,
            uptime_s: 10,
            version: "0".into(),
        }
    }

    #[test]
    fn a_node_that_can_write_with_room_on_disk_is_healthy() {
        assert_eq!(problems(&healthy()), vec![]);
    }

    #[test]
    fn no_write_quorum_or_a_full_disk_is_unhealthy_and_listed_first() {
        let mut report = healthy();
        report.members.push(MemberStatus {
            node_id: NodeId([2; 32]),
            addr: "127.0.0.1:7401".into(),
            state: MemberState::Down,
        });
        report.not_ready = Some("only 1 of the 2 nodes a write needs are reachable".into());
        report.disk = Some(DiskSpace {
            total_bytes: 100 << 30,
            free_bytes: 4 << 30,
        });
        let found = problems(&report);
        let severities: Vec<_> = found.iter().map(|p| p.severity).collect();
        assert_eq!(
            severities,
            [Severity::Unhealthy, Severity::Unhealthy, Severity::Degraded]
        );
        assert!(
            found[1].what.contains("4.0 GiB of 100.0 GiB free"),
            "{found:?}"
        );
        assert!(found[2].what.contains("(down)"), "{found:?}");
    }

    #[test]
    fn repair_backlog_and_corruption_degrade_but_do_not_fail_the_node() {
        let mut report = healthy();
        report.under_replicated = 3;
        report.under_replicated_bytes = 3 << 20;
        report.quarantined = 1;
        // Exactly 5% free is still enough.
        report.disk = Some(DiskSpace {
            total_bytes: 100,
            free_bytes: 5,
        });
        let found = problems(&report);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found.iter().all(|p| p.severity == Severity::Degraded));
        assert!(found[0].what.contains("3.0 MiB"), "{found:?}");
    }

    #[test]
    fn each_node_judges_its_disk_by_its_own_threshold() {
        let mut report = healthy();
        report.disk = Some(DiskSpace {
            total_bytes: 100 << 30,
            free_bytes: 20 << 30,
        });
        assert_eq!(problems(&report), vec![]);
        report.disk_free_min_percent = 25;
        let found = problems(&report);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].severity, Severity::Unhealthy);
        // 0 turns the rule off, even for a disk with nothing free.
        report.disk_free_min_percent = 0;
        report.disk = Some(DiskSpace {
            total_bytes: 100 << 30,
            free_bytes: 0,
        });
        assert_eq!(problems(&report), vec![]);
    }
}
