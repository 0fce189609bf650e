//! The status page (`/` on the admin listener): what an operator on call
//! reads first. This node's health and what to do about each problem, every
//! member with its state as this node sees it and what it reports about
//! itself (storage, disk, repair backlog), the cluster's repair backlog,
//! and this node's recent warnings and errors.
//!
//! One self-contained HTML document: inline style and script, nothing
//! loaded from anywhere (the response's Content-Security-Policy forbids
//! it). The script fetches the page again every [`REFRESH_MS`] and swaps
//! in its `<main>`; when the node stops answering it says so and since
//! when, keeping the last figures. Without script, the page reloads
//! itself. Every text from the cluster is escaped: a member's address is
//! whatever that member claims.

use std::fmt::Write;

use dfs::cluster::MemberReport;
use dfs::health::{self, Problem, Severity};
use dfs::keys::NodeId;
use dfs::wire::MemberState;

use super::recent_errors::Recent;

/// How often the page refreshes itself.
pub const REFRESH_MS: u64 = 2000;

/// What the page shows, gathered by the admin listener.
pub struct PageView<'a> {
    /// This node first, then every member it knows.
    pub members: &'a [MemberReport],
    /// How long ago (ms) the last complete anti-entropy pass with each
    /// member ended.
    pub synced: &'a [(NodeId, u64)],
    pub recent: &'a [Recent],
    /// Now (unix ms).
    pub now_ms: u64,
}

/// `text` safe inside HTML text and quoted attributes.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `text` cut to `chars` characters: what a member says about itself is
/// shown, not trusted to be short.
fn clip(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

fn state_label(state: MemberState) -> &'static str {
    match state {
        MemberState::Alive => "alive",
        MemberState::Suspect => "suspect",
        MemberState::Down => "down",
    }
}

/// Unix ms as `YYYY-MM-DD HH:MM:SS UTC`.
fn utc(unix_ms: u64) -> String {
    let seconds = i64::try_from(unix_ms / 1000).unwrap_or(i64::MAX);
    match time::OffsetDateTime::from_unix_timestamp(seconds) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("{unix_ms} ms"),
    }
}

const STYLE: &str = "\
body{font:14px/1.4 system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:0 16px;color:#1b1b1b;background:#fafafa}\
header{display:flex;gap:16px;align-items:baseline;flex-wrap:wrap;border-bottom:1px solid #ddd}\
h1{font-size:20px;margin:12px 0}h2{font-size:16px;margin:20px 0 8px}\
.muted{color:#666}table{border-collapse:collapse;width:100%;background:#fff}\
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eee;vertical-align:top}\
th{font-weight:600;background:#f0f0f0}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}\
.state{font-weight:600}.alive{color:#17653a}.suspect{color:#9a6700}.down{color:#b3261e}\
#health{padding:8px 12px;border-radius:6px;border:1px solid}\
#health.healthy{background:#e9f7ef;border-color:#9bd3ae}#health.degraded{background:#fff7e0;border-color:#e6c76a}\
#health.unhealthy{background:#fdecea;border-color:#e59c96}#health h2{margin:4px 0}\
#stale{background:#b3261e;color:#fff;padding:8px 12px;border-radius:6px;margin-top:8px}\
code{font-size:12px}";

const SCRIPT: &str = "\
(function(){\
var failingSince=null;\
function refresh(){\
fetch(location.pathname,{cache:'no-store'}).then(function(r){\
if(!r.ok){throw new Error('HTTP '+r.status);}return r.text();\
}).then(function(text){\
var next=new DOMParser().parseFromString(text,'text/html').getElementById('status');\
if(!next){throw new Error('not a status page');}\
document.getElementById('status').replaceWith(next);\
document.getElementById('stale').hidden=true;failingSince=null;\
}).catch(function(e){\
failingSince=failingSince||new Date();\
var stale=document.getElementById('stale');stale.hidden=false;\
stale.textContent='This node has not answered since '+failingSince.toLocaleTimeString()+' ('+e.message+'): the figures below are older. Check whether the node is running.';\
}).finally(function(){setTimeout(refresh,REFRESH);});\
}\
setTimeout(refresh,REFRESH);\
})();";

/// The inline script, exactly as the page carries it.
fn script() -> String {
    format!("var REFRESH={REFRESH_MS};{SCRIPT}")
}

/// The Content-Security-Policy of the page: its own inline style and
/// script (by their SHA-256) and requests to its own origin, nothing else.
pub fn content_security_policy() -> String {
    use base64::Engine;
    let hash = |text: &str| {
        base64::engine::general_purpose::STANDARD.encode(dfs::cas::sha256(text.as_bytes()))
    };
    format!(
        "default-src 'none'; style-src 'sha256-{}'; script-src 'sha256-{}'; connect-src 'self'",
        hash(STYLE),
        hash(&script())
    )
}

/// The whole page.
pub fn render(view: &PageView<'_>) -> String {
    let mut page = String::with_capacity(16 * 1024);
    let this = view.members.first();
    let title = this.map_or("dfs node".to_string(), |m| {
        format!("dfs node {}", m.member.node_id.short())
    });
    let _ = write!(
        page,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<title>{title}</title><style>{STYLE}</style>\
<noscript><meta http-equiv=\"refresh\" content=\"{}\"></noscript></head><body>\
<header><h1>{title}</h1><span class=\"muted\">refreshes every {} s</span></header>\
<div id=\"stale\" hidden></div>",
        REFRESH_MS.div_ceil(1000),
        REFRESH_MS / 1000,
        title = escape(&title),
    );
    main(&mut page, view);
    let _ = writeln!(page, "<script>{}</script></body></html>", script());
    page
}

/// `<main id="status">`: the part the script swaps in at each refresh.
fn main(page: &mut String, view: &PageView<'_>) {
    let _ = write!(
        page,
        "<main id=\"status\"><p class=\"muted\">as of {}</p>",
        utc(view.now_ms)
    );
    let problems = match view.members.first().map(|m| &m.report) {
        Some(Ok(report)) => health::problems(report),
        _ => Vec::new(),
    };
    health_section(page, &problems);
    cluster_section(page, view);
    recent_section(page, view);
    page.push_str("</main>");
}

fn health_section(page: &mut String, problems: &[Problem]) {
    let class = match problems.first() {
        None => "healthy",
        Some(p) if p.severity == Severity::Unhealthy => "unhealthy",
        Some(_) => "degraded",
    };
    let _ = write!(
        page,
        "<section id=\"health\" class=\"{class}\"><h2>This node: {class}</h2>"
    );
    if problems.is_empty() {
        page.push_str(
            "<p>Nothing to do: it takes writes, every member is alive, and no repair or corruption is pending.</p>",
        );
    } else {
        page.push_str("<ul>");
        for problem in problems {
            let _ = write!(
                page,
                "<li><strong>{}</strong>: {}. <span class=\"muted\">What to do: {}.</span></li>",
                problem.severity.label(),
                escape(&problem.what),
                escape(&problem.what_to_do)
            );
        }
        page.push_str("</ul>");
    }
    page.push_str("</section>");
}

fn cluster_section(page: &mut String, view: &PageView<'_>) {
    let count = |state| {
        view.members
            .iter()
            .filter(|m| m.member.state == state)
            .count()
    };
    let reports: Vec<_> = view
        .members
        .iter()
        .filter_map(|m| m.report.as_ref().ok())
        .collect();
    // Each holder of a blob below R counts it: the largest count is how
    // many blobs at least are short, and summing would count them again.
    let (under, under_bytes) = reports
        .iter()
        .map(|r| (r.under_replicated, r.under_replicated_bytes))
        .max()
        .unwrap_or((0, 0));
    let stored = reports
        .iter()
        .fold(0u64, |sum, r| sum.saturating_add(r.bytes_stored));
    let repaired = reports
        .iter()
        .fold(0u64, |sum, r| sum.saturating_add(r.repair_copies_made));
    let _ = write!(
        page,
        "<section><h2>Cluster</h2><p id=\"summary\">{} members: {} alive, {} suspect, {} down. \
{} stored in all (sealed, every copy). ",
        view.members.len(),
        count(MemberState::Alive),
        count(MemberState::Suspect),
        count(MemberState::Down),
        health::bytes(stored),
    );
    if under == 0 {
        page.push_str(
            "No member holds a blob with fewer than R copies, as of its last complete repair scan",
        );
    } else {
        let _ = write!(
            page,
            "Repair backlog: {under} blobs ({}) with fewer than R copies on the member that counts most, being copied",
            health::bytes(under_bytes)
        );
    }
    let _ = write!(
        page,
        "; {repaired} copies made by repair since the members started."
    );
    if reports.len() < view.members.len() {
        let _ = write!(
            page,
            " ({} of {} members reported.)",
            reports.len(),
            view.members.len()
        );
    }
    page.push_str(
        "</p><table id=\"members\"><thead><tr><th>Node</th><th>Address</th><th>State</th>\
<th>Stored</th><th>Blobs</th><th>Disk free</th><th>Under-replicated</th><th>Corrupt found</th>\
<th>Last anti-entropy</th><th>Up</th><th>Version</th></tr></thead><tbody>",
    );
    for (i, member) in view.members.iter().enumerate() {
        let state = state_label(member.member.state);
        let synced = if i == 0 {
            "(this node)".to_string()
        } else {
            view.synced
                .iter()
                .find(|(node, _)| *node == member.member.node_id)
                .map_or("none since start".into(), |(_, ago_ms)| {
                    format!("{} ago", health::seconds(ago_ms / 1000))
                })
        };
        let _ = write!(
            page,
            "<tr data-node=\"{}\" data-state=\"{state}\"><td title=\"{}\"><code>{}</code></td>\
<td>{}</td><td class=\"state {state}\">{state}</td>",
            member.member.node_id.short(),
            member.member.node_id,
            member.member.node_id.short(),
            escape(&clip(&member.member.addr, 100)),
        );
        match &member.report {
            Ok(report) => {
                let disk = report.disk.map_or("unknown".into(), |d| {
                    format!(
                        "{} of {}",
                        health::bytes(d.free_bytes),
                        health::bytes(d.total_bytes)
                    )
                });
                let _ = write!(
                    page,
                    "<td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
<td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    health::bytes(report.bytes_stored),
                    report.chunks,
                    disk,
                    report.under_replicated,
                    report.quarantined,
                    synced,
                    health::seconds(report.uptime_s),
                    escape(&clip(&report.version, 32)),
                );
            }
            Err(why) => {
                let _ = write!(
                    page,
                    "<td colspan=\"5\" class=\"muted\">no report: {}</td><td>{}</td><td></td><td></td></tr>",
                    escape(&clip(why, 200)),
                    synced
                );
            }
        }
    }
    page.push_str("</tbody></table></section>");
}

fn recent_section(page: &mut String, view: &PageView<'_>) {
    page.push_str("<section><h2>Recent warnings and errors on this node</h2>");
    if view.recent.is_empty() {
        page.push_str("<p id=\"recent\">None since the node started.</p></section>");
        return;
    }
    page.push_str(
        "<table id=\"recent\"><thead><tr><th>Last</th><th>Level</th><th>Times</th><th>What</th></tr></thead><tbody>",
    );
    for recent in view.recent {
        let fields: Vec<String> = recent
            .fields
            .iter()
            .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
            .collect();
        let _ = write!(
            page,
            "<tr><td>{} ago</td><td>{}</td><td class=\"num\">{}</td><td>{} <span class=\"muted\">{} <code>{}</code></span></td></tr>",
            health::seconds(view.now_ms.saturating_sub(recent.last_ms) / 1000),
            recent.level.as_str().to_ascii_lowercase(),
            recent.count,
            escape(&recent.message),
            escape(&recent.target),
            fields.join(" "),
        );
    }
    page.push_str(
        "</tbody></table><p class=\"muted\">File names and error details are left out here; the node's log has them.</p></section>",
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use dfs::wire::{MemberStatus, StatusReport};

    fn report(node: NodeId, under_replicated: u64) -> StatusReport {
        StatusReport {
            node_id: node,
            listen: "127.0.0.1:7400".into(),
            members: vec![MemberStatus {
                node_id: node,
                addr: "127.0.0.1:7400".into(),
                state: MemberState::Alive,
            }],
            chunks: 2,
            bytes_stored: 3 << 20,
            quarantined: 0,
            under_replicated,
            under_replicated_bytes: under_replicated << 20,
            scrubbed: 0,
            scrub_passes: 0,
            repair_copies_made: 0,
            not_ready: None,
            disk: None,
            disk_free_min_percent: 5,
            uptime_s: 30,
            version: "0.1.0".into(),
        }
    }

    #[test]
    fn lists_every_member_sums_the_backlog_and_escapes_what_members_claim() {
        let (a, b, c) = (NodeId([1; 32]), NodeId([2; 32]), NodeId([3; 32]));
        let members = vec![
            MemberReport {
                member: MemberStatus {
                    node_id: a,
                    addr: "127.0.0.1:7400".into(),
                    state: MemberState::Alive,
                },
                report: Ok(report(a, 1)),
            },
            MemberReport {
                member: MemberStatus {
                    node_id: b,
                    addr: "<script>alert(1)</script>".into(),
                    state: MemberState::Alive,
                },
                report: Ok(report(b, 2)),
            },
            MemberReport {
                member: MemberStatus {
                    node_id: c,
                    addr: "127.0.0.1:7402".into(),
                    state: MemberState::Down,
                },
                report: Err("down".into()),
            },
        ];
        let page = render(&PageView {
            members: &members,
            synced: &[(b, 60_000)],
            recent: &[],
            now_ms: 61_000,
        });
        assert!(!page.contains("<script>alert"), "unescaped address");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert_eq!(page.matches("data-state=\"alive\"").count(), 2);
        assert_eq!(page.matches("data-state=\"down\"").count(), 1);
        assert!(page.contains("3 members: 2 alive, 0 suspect, 1 down"));
        assert!(page.contains("Repair backlog: 2 blobs (2.0 MiB)"));
        assert!(page.contains("; 0 copies made by repair"));
        assert!(page.contains("60 s ago"), "last anti-entropy with b");
        assert!(page.contains("(2 of 3 members reported.)"));
        assert!(!page.contains("http://") && !page.contains("https://"));
    }
}
