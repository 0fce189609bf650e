//! What each verb prints: one line per fact for people, one JSON value
//! with `--json` (shapes in README.md).

use std::path::Path;

use dfs::client::Fetched;
use dfs::health;
use dfs::meta::{VersionId, VersionRecord};
use dfs::wire::{MemberState, StatusReport};
use serde_json::json;

fn warn_truncated(truncated: bool) {
    if truncated {
        eprintln!(
            "dfs-node: note: the list is longer than one reply; only the first part is shown"
        );
    }
}

fn record_json(record: &VersionRecord) -> serde_json::Value {
    json!({
        "name": record.name,
        "version": record.vid.to_string(),
        "content_id": record.content.map(|c| c.to_string()),
        "size": record.size,
    })
}

/// `get`: a summary of what was written (on stderr when the file itself
/// went to stdout).
pub fn fetched(fetched: &Fetched, output: Option<&Path>, json: bool) {
    let version = fetched.record.as_ref().map(|r| r.vid.to_string());
    let to_stdout = output.is_none_or(|p| p == Path::new("-"));
    if json {
        let summary = json!({
            "name": fetched.record.as_ref().map(|r| r.name.clone()),
            "version": version,
            "content_id": fetched.content.to_string(),
            "size": fetched.size,
        });
        if to_stdout {
            eprintln!("{summary}");
        } else {
            println!("{summary}");
        }
    } else if !to_stdout {
        let path = output.expect("not stdout").display();
        match version {
            Some(version) => println!("wrote {} bytes to {path} (version {version})", fetched.size),
            None => println!(
                "wrote {} bytes to {path} (content {})",
                fetched.size, fetched.content
            ),
        }
    }
}

/// `status`: the node, its health and its members. Returns whether the
/// node is healthy (see [`dfs::health`]).
pub fn status(report: &StatusReport, json: bool) -> bool {
    let state = |s: MemberState| match s {
        MemberState::Alive => "alive",
        MemberState::Suspect => "suspect",
        MemberState::Down => "down",
    };
    let problems = health::problems(report);
    let healthy = problems
        .iter()
        .all(|p| p.severity != health::Severity::Unhealthy);
    if json {
        let members: Vec<_> = report
            .members
            .iter()
            .map(|m| json!({"node_id": m.node_id.to_string(), "addr": m.addr, "state": state(m.state)}))
            .collect();
        let problems: Vec<_> = problems
            .iter()
            .map(|p| json!({"severity": p.severity.label(), "what": p.what, "what_to_do": p.what_to_do}))
            .collect();
        println!(
            "{}",
            json!({
                "node_id": report.node_id.to_string(), "listen": report.listen, "members": members,
                "healthy": healthy, "problems": problems, "not_ready": report.not_ready,
                "disk": report.disk.map(|d| json!({"total_bytes": d.total_bytes, "free_bytes": d.free_bytes})),
                "disk_free_min_percent": report.disk_free_min_percent,
                "uptime_s": report.uptime_s, "version": report.version,
                "chunks": report.chunks, "bytes_stored": report.bytes_stored, "quarantined": report.quarantined,
                "under_replicated": report.under_replicated,
                "under_replicated_bytes": report.under_replicated_bytes,
                "scrubbed": report.scrubbed, "scrub_passes": report.scrub_passes,
                "repair_copies_made": report.repair_copies_made,
            })
        );
        return healthy;
    }
    let verdict = match problems.first() {
        None => "healthy",
        Some(_) if healthy => "degraded",
        Some(_) => "UNHEALTHY",
    };
    println!("health    {verdict}");
    for problem in &problems {
        println!("  {}: {}", problem.severity.label(), problem.what);
        println!("    what to do: {}", problem.what_to_do);
    }
    println!(
        "node      {} (version {}, up {})",
        report.node_id,
        report.version,
        health::seconds(report.uptime_s)
    );
    println!("listen    {}", report.listen);
    println!(
        "chunks    {} ({} sealed on disk)",
        report.chunks,
        health::bytes(report.bytes_stored)
    );
    match report.disk {
        Some(disk) => println!(
            "disk      {} free of {}",
            health::bytes(disk.free_bytes),
            health::bytes(disk.total_bytes)
        ),
        None => println!("disk      size unknown"),
    }
    println!(
        "repair    {} blobs ({}) below R copies at the last scan; {} copies made since start",
        report.under_replicated,
        health::bytes(report.under_replicated_bytes),
        report.repair_copies_made
    );
    println!(
        "scrub     {} blobs read back verified, {} full passes since start",
        report.scrubbed, report.scrub_passes
    );
    println!("members   {}", report.members.len());
    for member in &report.members {
        println!(
            "  {}  {:<21}  {}",
            member.node_id.short(),
            member.addr,
            state(member.state)
        );
    }
    healthy
}

/// `put`: the new version.
pub fn stored(record: &VersionRecord, json: bool) {
    if json {
        println!("{}", record_json(record));
    } else {
        println!(
            "stored {} version {} content {} ({} bytes)",
            record.name,
            record.vid,
            record.content.map(|c| c.to_string()).unwrap_or_default(),
            record.size
        );
    }
}

/// `rm`: the tombstone.
pub fn removed(record: &VersionRecord, json: bool) {
    if json {
        println!(
            "{}",
            json!({"name": record.name, "version": record.vid.to_string(), "deleted": true})
        );
    } else {
        println!("removed {} (version {})", record.name, record.vid);
    }
}

/// `rm --version`: the version deleted for good.
pub fn forgotten(record: &VersionRecord, json: bool) {
    if json {
        println!(
            "{}",
            json!({"name": record.name, "version": record.vid.to_string(), "forgotten": true})
        );
    } else {
        println!("deleted version {} of {} for good", record.vid, record.name);
    }
}

/// `ls`: the current version of every live file.
pub fn listing(records: &[VersionRecord], truncated: bool, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::Value::Array(records.iter().map(record_json).collect())
        );
    } else {
        for record in records {
            println!("{}\t{}\t{}", record.name, record.size, record.vid);
        }
    }
    warn_truncated(truncated);
}

/// `versions`: a file's history, newest first.
pub fn history(records: &[VersionRecord], truncated: bool, json: bool) {
    if json {
        let versions = records.iter().map(|r| {
            json!({"version": r.vid.to_string(), "content_id": r.content.map(|c| c.to_string()),
                   "size": r.size, "deleted": r.is_tombstone(),
                   "by": r.by.map(|k| k.to_string())})
        });
        println!("{}", serde_json::Value::Array(versions.collect()));
    } else {
        for r in records {
            let content = r
                .content
                .map(|c| c.to_string())
                .unwrap_or_else(|| "(deleted)".into());
            let by = r.by.map_or_else(|| "-".to_string(), |k| k.to_string());
            println!("{}\t{}\t{}\t{by}", r.vid, r.size, content);
        }
    }
    warn_truncated(truncated);
}

/// `prune`: how many versions went, and the new floor.
pub fn pruned(name: &str, keep: u32, floor: Option<VersionId>, removed: u64, json: bool) {
    if json {
        println!(
            "{}",
            json!({"name": name, "removed": removed, "floor": floor.map(|f| f.to_string())})
        );
    } else if removed == 0 {
        println!("{name} has {keep} or fewer versions; nothing pruned");
    } else {
        println!("pruned {removed} old versions of {name}");
    }
}

/// `restore`: the new version, which carries the old content.
pub fn restored(record: &VersionRecord, json: bool) {
    if json {
        println!("{}", record_json(record));
    } else {
        println!(
            "restored {} as version {} (content {})",
            record.name,
            record.vid,
            record.content.map(|c| c.to_string()).unwrap_or_default()
        );
    }
}
