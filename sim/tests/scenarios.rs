//! The simulation scenarios. `cargo test -p sim` runs every seed sweep;
//! a failure prints the line that replays it.

use sim::harness::{check_regression, check_regressions, check_replays, run_scenario, seeds};
use sim::{membership, replication, single_node};

#[test]
fn single_node_crash() {
    let totals = run_scenario(
        "single_node_crash",
        64,
        single_node::describe,
        single_node::run,
    );
    // Across a full sweep the faults must really have happened; a sweep of a
    // single seed (SIM_SEED) need not show every one.
    if seeds(64).len() >= 32 {
        for counter in [
            "crashes",
            "injected_io_errors",
            "injected_corruptions",
            "acknowledged_puts",
        ] {
            assert!(
                totals.get(counter).copied().unwrap_or(0) > 0,
                "no {counter} across the sweep: the scenario is not testing it"
            );
        }
    }
}

#[test]
fn determinism() {
    check_replays("determinism", &seeds(3), single_node::run);
}

/// Seed 26 found that a dedup hit was acknowledged on a chunk whose rename
/// had never been made durable (an earlier put's directory sync failed with
/// EIO), so a crash lost an acknowledged version. The seed stays as a named
/// regression check (the workload must keep its RNG order for it to stay
/// the same schedule).
#[test]
fn regression_dedup_hit_after_failed_directory_sync() {
    single_node::run(26).unwrap_or_else(|e| panic!("seed 26: {e}"));
}

/// Seeds 8800200, 8800458, 8800587, 8800692, 8801260 and 8801381 (a sweep
/// of 1500 from 8800000) found a node restarting with an empty version
/// index, every acknowledged record gone, without any crash before the
/// last: a start renamed the new index file into place, its directory sync
/// failed (EIO), and the next start found the file present and never synced
/// the entry, so the final crash unnamed it. Every open now syncs the
/// index's directory entry, and a start syncs the data dir. The fix moved
/// the schedules; 8800587 and 8801260 still go through a failed directory
/// sync at open, and fail without the fix.
#[test]
fn regression_index_entry_durable_after_failed_start() {
    for seed in [8800587, 8801260] {
        check_regression(
            "single_node_crash",
            seed,
            &["index_open_dir_sync_failed"],
            single_node::run,
        );
    }
}

#[test]
fn membership_partitions_and_crashes() {
    let totals = run_scenario(
        "membership_partitions_and_crashes",
        48,
        membership::describe,
        membership::run,
    );
    if seeds(48).len() >= 8 {
        for counter in ["partitions", "crashes", "restarts", "holds"] {
            assert!(
                totals.get(counter).copied().unwrap_or(0) > 0,
                "no {counter} across the sweep: the scenario is not testing it"
            );
        }
    }
}

#[test]
fn membership_join_storm() {
    let totals = run_scenario(
        "membership_join_storm",
        32,
        membership::describe_join,
        membership::join_storm,
    );
    if seeds(32).len() >= 8 {
        assert!(
            totals.get("stalls").copied().unwrap_or(0) > 0,
            "no stalls across the sweep: the scenario is not testing them"
        );
    }
}

#[test]
fn membership_join_storm_determinism() {
    check_replays(
        "membership_join_storm_determinism",
        &seeds(2),
        membership::join_storm,
    );
}

#[test]
fn membership_determinism() {
    check_replays("membership_determinism", &seeds(2), membership::run);
}

/// Seed 135 found that when every node but one restarted, the restarted
/// nodes found each other and never looked for the fourth: a node dialed
/// its persisted members only while it had no live peer. Now it keeps
/// reaching out to known addresses it does not see alive.
#[test]
fn regression_restarted_majority_finds_the_node_that_stayed_up() {
    membership::run(135).unwrap_or_else(|e| panic!("seed 135: {e}"));
}

/// Seeds 1000, 1047, 1266 and 1270 found a member stuck as "suspect" for
/// good after a partition healed: the suspicion reached other nodes by
/// gossip, the node whose probe had failed renewed its identity (voiding
/// its suspicion timer), and the suspect, never told, could not refute it.
/// Every node now times out the suspicions it holds.
#[test]
fn regression_a_gossiped_suspicion_always_ends() {
    for seed in [1000, 1047, 1266, 1270] {
        membership::run(seed).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    }
}

#[test]
fn replication_under_faults() {
    let totals = run_scenario(
        "replication_under_faults",
        80,
        replication::describe,
        replication::run,
    );
    // Across a full sweep every fault class and every repair path must
    // really have been exercised.
    if seeds(80).len() >= 16 {
        for counter in [
            "crashes",
            "partitions",
            "crashes_with_torn_writes",
            "injected_io_errors",
            "injected_corruptions",
            "read_repairs",
            "stand_ins",
            "sync_records_received",
            "repair_copies",
            "acknowledged_puts",
            "chunks_reused",
            "quorum_reads",
            "quorum_reads_checked",
            "intruder_refusals",
            "restores",
            "prunes",
            "isolated_restarts",
            "disk_losses",
            "clock_jumps",
            "clock_jumps_beyond_max_offset",
            "bit_rot_files",
            "scrubbed",
            "scrub_corrupt_found",
            "disk_full_periods",
            "writes_refused_disk_full",
            "slow_disk_periods",
            "disk_jobs_delayed",
            "members_forgotten",
            "garbage_collected",
            "sync_passes",
        ] {
            assert!(
                totals.get(counter).copied().unwrap_or(0) > 0,
                "no {counter} across the sweep: the scenario is not testing it"
            );
        }
    }
}

#[test]
fn replication_determinism() {
    check_replays("replication_determinism", &seeds(2), replication::run);
}

/// Seeds the replication sweep failed on, each a named check now:
/// - 3 (R=1): a blob read failed because the only holder's connection was
///   replaced under the request; replaced connections now retire (finish
///   what is in flight) and a request whose connection dies is retried on
///   a fresh one.
/// - 66: a node could never start again: a failed first creation of the
///   version index left bytes the next attempt's file inherited; each
///   attempt now uses a fresh temporary name.
/// - 164, 345 (R=1): after a partition healed, the two ends of a pair took
///   a moment to agree on their connection and a read's single retry hit
///   the doomed one; requests now retry up to three times, with a pause.
#[test]
fn regression_replication_seeds() {
    for seed in [3, 66, 164, 345] {
        replication::run(seed).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    }
}

/// Seeds CI's sweeps failed on a checker that asked more than README
/// promises (no node fault):
/// - 2592800576392: bit rot on a node still alone lost puts it had
///   acknowledged with one copy (a node with no record of another member
///   takes writes below W). The checker now excuses such a version only if
///   its node's disk rotted or was lost; the seed must still take writes
///   below W.
/// - 2828046376229: a quorum read overlapped a deletion for good of the
///   version it was held to; it is now held to the newest still kept when
///   it ends.
#[test]
fn regression_checker_model_seeds() {
    let outcome = replication::run(2592800576392).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        outcome
            .counters
            .get("writes_below_write_quorum")
            .copied()
            .unwrap_or(0)
            > 0,
        "seed 2592800576392 no longer takes a write below W: pick a new one"
    );
    replication::run(2828046376229).unwrap_or_else(|e| panic!("{e}"));
}

/// Seeds 8800467, 8800883 and 8801354 (R=1, W=1; a sweep of 1500 from
/// 8800000) found acknowledged versions unreadable after healing: the only
/// copy sat on its owner, a node the reading node did not yet see alive
/// (views differ for a while after a partition or a restart), and a read
/// asked only the nodes it saw alive. A read now asks the members it does
/// not see alive last. (The short maintenance periods moved the schedules
/// of 8800883 and 8801354 off this path, the client-key intruder 8800467,
/// access keys 8800406; three R=1 seeds that take it now stand in, any of
/// which may drift. With the fix taken out they still pass, as later
/// retries and repair find the copy: they keep the path covered, no longer
/// the failure.)
#[test]
fn regression_read_asks_members_not_seen_alive() {
    check_regressions(
        "replication_under_faults",
        &[8800445, 8800469, 8800490],
        &["blob_found_on_member_not_alive"],
        replication::run,
    );
}

/// Seed 20005 (found once isolated restarts and disk loss joined the
/// nemesis) lost acknowledged versions: a node restarted cut off from the
/// cluster counted a write quorum of one (W capped by the members it knew,
/// none yet), took writes, and then lost its disk. The quorum now counts
/// the largest cluster the node has known, persisted. Clock faults and
/// the scrub moved 20005 off the path; with the old rule put back, seeds
/// 20089 and 20113 lose acknowledged versions, and each reaches the
/// refusal. (20263 failed too, with a session's read going back in time,
/// and drifted off the path with the quorum-read changes.)
#[test]
fn regression_quorum_after_isolated_restart() {
    for seed in [20089, 20113] {
        check_regression(
            "replication_under_faults",
            seed,
            &["quorum_above_known_members"],
            replication::run,
        );
    }
}

/// Seed 30078 (R=1, W=1, GC grace 10 s) lost an acknowledged version: a
/// put stored its chunk on a node, took longer than the GC grace period to
/// commit (retries across a partition), and that node collected the chunk,
/// not yet referenced by any version, just before the commit. A put now
/// asks its blobs' holders to keep them once half the grace is gone, and
/// the GC waits for a pass that started after the grace ended
/// (`cluster/in_flight.rs`).
#[test]
fn regression_put_outlasting_gc_grace() {
    check_regression(
        "replication_under_faults",
        30078,
        &["put_kept_its_blobs_before_commit"],
        replication::run,
    );
}

/// Seed 40382 (3 nodes, W=3, clocks set back) took no write after healing:
/// a node restarted with its clock an offset behind came back with an
/// identity bump (then the wall clock) below its previous incarnation's,
/// so the cluster kept declaring it down, and it kept rejoining one bump
/// higher, for good. A start's bump is now above every earlier start's
/// (recorded in the data dir).
#[test]
fn regression_restart_with_the_clock_set_back() {
    check_regression(
        "replication_under_faults",
        40382,
        &["identity_bump_above_a_clock_set_back"],
        replication::run,
    );
}

/// Seed 35 (3 nodes, W=2, clocks off): `get --quorum` through a node whose
/// clock ran an offset behind returned an older version than one
/// acknowledged before the read: the newer record came back from a peer,
/// and the reading node, refusing it as from the future, answered with
/// what it had. Such a read now fails with the reason.
#[test]
fn regression_quorum_read_behind_the_clock() {
    check_regression(
        "replication_under_faults",
        35,
        &["quorum_read_met_a_version_beyond_the_clock"],
        replication::run,
    );
}

/// Seeds that replayed differently within one process, because a crashed
/// node's connections closed in an order that followed tokio's task ids
/// (see `sim/src/env/net.rs`): replication seed 513 and membership seed
/// 507. Connections now close in the order they opened; with that undone,
/// this check fails (which of the two seeds shows it depends on the build
/// profile and on the schedule).
#[test]
fn regression_crashes_replay_in_one_process() {
    check_replays("replication_determinism", &[513], replication::run);
    check_replays("membership_determinism", &[507], membership::run);
}

/// Seed 61000890 (3 nodes, R = W = 3, bit rot on up to two disks) lost an
/// acknowledged version: the third node had not joined yet, so the write
/// quorum was capped at the two nodes of the forming cluster, and both
/// copies rotted. A forming cluster no longer shrinks W (only a node that
/// has never had another member writes with fewer copies); the seed's
/// puts are refused until the third node joins.
#[test]
fn regression_forming_cluster_keeps_the_write_quorum() {
    check_regression(
        "replication_under_faults",
        61000890,
        &["write_refused_while_the_cluster_forms"],
        replication::run,
    );
}

/// Seed 62000482 (3 nodes, R = W = 1, members forgotten after 15 s) lost
/// an acknowledged version: its manifest's only copy was on a node that,
/// partitioned long enough to forget both other members, had "synced with
/// every member" (none left) and collected it, while the record lived on
/// the forgotten side. The collector now also needs complete passes with
/// N - W members (N the largest cluster known), which meet every record.
/// The seed drifted off the path when the workload began deleting versions
/// for good; 71000086, 71000155 and 71000331 (R = W = 1, members forgotten
/// after 15 s) take it. They cover the path, not the failure: with the rule
/// taken out, 500 seeds from 71000000 still passed (the bug showed once in
/// about 5,000 seeds).
#[test]
fn regression_gc_meets_every_record_after_members_are_forgotten() {
    check_regressions(
        "replication_under_faults",
        &[62000482, 71000086, 71000155, 71000331],
        &["gc_waits_for_enough_members_to_meet_every_record"],
        replication::run,
    );
}

/// When a regression seed drifts off its path, find seeds that take it:
/// `SIM_MARK=<mark> SIM_SEEDS=200 SIM_SEED_BASE=<b> cargo test -p sim
/// --release --test scenarios find_seeds_hitting_a_mark -- --ignored
/// --nocapture` prints the replication seeds (from the usual seed range)
/// that pass and hit the mark; with `SIM_SCENARIO=single_node`, the
/// single-node crash scenario's.
#[test]
#[ignore = "a tool: run by hand with SIM_MARK"]
fn find_seeds_hitting_a_mark() {
    let mark = std::env::var("SIM_MARK").expect("SIM_MARK=<coverage mark>");
    let single_node = std::env::var("SIM_SCENARIO").is_ok_and(|s| s == "single_node");
    for seed in seeds(100) {
        dfs::marks::take();
        let (passed, describe) = if single_node {
            (single_node::run(seed).is_ok(), single_node::describe(seed))
        } else {
            (replication::run(seed).is_ok(), replication::describe(seed))
        };
        let hits = dfs::marks::take().get(mark.as_str()).copied().unwrap_or(0);
        if passed && hits > 0 {
            println!("seed {seed} ({describe}) hits {mark} {hits} times");
        }
    }
}
