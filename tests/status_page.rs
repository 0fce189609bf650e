//! The status page (`/` on the admin listener) in a real headless browser:
//! Chromium (Debian `chromium`) driven by Playwright (`playwright-core`
//! from npm), both installed by `.ci/run`. A 3-node cluster shows three
//! alive members; after one is killed the open page shows it down by
//! itself, without a reload, and loads nothing from elsewhere. And
//! `dfs-node status` says the same: degraded with one member down (exit
//! 0), unhealthy once a write quorum is lost (exit 7).
//!
//! `DFS_STATUS_PAGE_SCREENSHOT=docs/status-page.png cargo test --test
//! status_page` writes the screenshot README shows.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{DETECTION_BUDGET, http_get, start_cluster, wait_until};
use serde_json::Value;

/// Where `.ci/run` installs playwright-core (`DFS_NODE_MODULES` overrides).
fn node_modules() -> PathBuf {
    if let Some(dir) = std::env::var_os("DFS_NODE_MODULES") {
        return dir.into();
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache"));
    cache.join("dfs-ci-node/node_modules")
}

#[test]
fn the_status_page_shows_members_and_sees_one_go_down() {
    let modules = node_modules();
    assert!(
        modules.join("playwright-core").exists() && Path::new("/usr/bin/chromium").exists(),
        "this test needs Chromium (Debian package chromium) and playwright-core in {} \
         (npm install --prefix {} playwright-core); .ci/run installs both",
        modules.display(),
        modules.parent().unwrap().display()
    );
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(dir.path(), 3);
    wait_until(Duration::from_secs(30), "3 alive members", || {
        nodes[0].alive_count() == 3
    });
    // Something stored, so the page has figures to show.
    let file = dir.path().join("file");
    std::fs::write(&file, vec![5u8; 3 << 20]).unwrap();
    let put = nodes[0].cli(&["put", file.to_str().unwrap(), "--name", "photos/cat.jpg"]);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let admin = nodes[0].admin.clone().unwrap();
    let (status, page) = http_get(&admin, "/");
    assert_eq!(status, 200, "{page}");
    // Open to anyone who reaches the admin address: no file names.
    assert!(!page.contains("cat.jpg"), "{page}");

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/status_page.cjs");
    let screenshot = std::env::var("DFS_STATUS_PAGE_SCREENSHOT")
        .map(|path| Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|_| dir.path().join("status-page.png"));
    let mut browser = Command::new("node")
        .arg(&script)
        .arg(format!("{admin}/"))
        .arg("3")
        .arg(&screenshot)
        .env("NODE_PATH", &modules)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node (Node.js) runs the browser script");
    let mut said = BufReader::new(browser.stdout.take().unwrap());
    let mut next = || -> Value {
        let mut line = String::new();
        said.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|_| {
            let mut stderr = String::new();
            let _ = std::io::Read::read_to_string(browser.stderr.as_mut().unwrap(), &mut stderr);
            panic!("the browser script failed: {line}{stderr}")
        })
    };

    let alive = next();
    let rows = alive["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{alive}");
    for node in &nodes {
        assert!(
            rows.iter()
                .any(|r| r["text"].as_str().unwrap().contains(&node.addr)),
            "{} not on the page: {alive}",
            node.addr
        );
    }

    // Kill node 2; the page, left open, must show it down by itself.
    let killed_addr = nodes[2].addr.clone();
    nodes[2].kill_9();
    browser
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"killed\n")
        .unwrap();
    let down = next();
    let rows = down["rows"].as_array().unwrap();
    let down_rows: Vec<_> = rows.iter().filter(|r| r["state"] == "down").collect();
    assert_eq!(down_rows.len(), 1, "{down}");
    assert!(
        down_rows[0]["text"]
            .as_str()
            .unwrap()
            .contains(&killed_addr),
        "{down}"
    );
    assert_eq!(
        down["reloaded"], false,
        "the page reloaded instead of refreshing: {down}"
    );
    assert_eq!(down["elsewhere"], serde_json::json!([]), "{down}");
    assert_eq!(down["errors"], serde_json::json!([]), "{down}");
    assert_eq!(down["health"]["class"], "degraded", "{down}");
    assert!(
        down["summary"]
            .as_str()
            .unwrap()
            .contains("2 alive, 0 suspect, 1 down"),
        "{down}"
    );
    assert!(browser.wait().unwrap().success());
    assert!(screenshot.exists());

    // `status`: one member down of three (W=2) is degraded, not unhealthy.
    let status = nodes[0].cli(&["status"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{text}");
    assert!(text.contains("health    degraded"), "{text}");
    assert!(text.contains("(down)"), "{text}");

    // Two down: no write quorum, so unhealthy, exit 7, and the page says so.
    nodes[1].kill_9();
    wait_until(
        DETECTION_BUDGET * 2,
        "node 0 sees it cannot take writes",
        || nodes[0].cli(&["status"]).status.code() == Some(7),
    );
    let status = nodes[0].cli(&["status", "--json"]);
    let report: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(report["healthy"], false, "{report}");
    assert_eq!(report["problems"][0]["severity"], "unhealthy", "{report}");
    assert!(
        String::from_utf8_lossy(&status.stderr).contains("not healthy"),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let (_, page) = http_get(&admin, "/");
    assert!(page.contains("class=\"unhealthy\""), "{page}");
    assert!(page.contains("cannot take writes"), "{page}");
}
