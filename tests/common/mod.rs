//! Shared by the real-process tests: starting `dfs-node serve`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_dfs-node");

/// Start `dfs-node serve --data-dir DIR ARGS...` and wait for its
/// "listening on ADDR" line; returns the process and the address.
pub fn spawn_serve(data_dir: &Path, args: &[&str], stderr: Stdio) -> (Child, String) {
    let mut child = Command::new(BIN)
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("start dfs-node");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line from serve: {line:?}"))
        .to_string();
    (child, addr)
}
