//! The cost of a cluster as it grows (see `sim::cost`).
//!
//! `cargo test -p sim --release --test cost -- --ignored --nocapture`
//! prints the table for N = 3, 5, 9, 17, 33 (README, Limits). The quick
//! test keeps the measurement working on N = 3 and checks what it must
//! find: a put moves its object to every replica, and idle costs something
//! but not a put's worth per second.

use sim::cost::{CostRow, measure};

const SEED: u64 = 12_000;

fn print(row: &CostRow) {
    println!(
        "| {:>2} | {:>7.0} B/s, {:>5.1} frames/s | {:>8.0} B, {:>5.1} frames | {:>8.0} B, {:>5.1} frames | {:>6.2} MiB | {:>6.2} MiB |",
        row.nodes,
        row.idle_bytes,
        row.idle_frames,
        row.put_bytes,
        row.put_frames,
        row.get_bytes,
        row.get_frames,
        row.join_bytes / 1048576.0,
        row.leave_bytes / 1048576.0,
    );
}

#[test]
fn three_nodes_cost_what_replication_must() {
    let row = measure(3, SEED).unwrap();
    print(&row);
    // R = 3: the object reaches the two other replicas (and the client
    // sends it once, which the node does not count as written).
    assert!(row.put_bytes > 2.0 * 256.0 * 1024.0, "{row:?}");
    assert!(row.get_bytes > 256.0 * 1024.0, "{row:?}");
    // Idle is membership and in-sync anti-entropy rounds: about 1 KB/s; a
    // round that always found a difference would cost several times that.
    assert!(row.idle_bytes > 0.0 && row.idle_bytes < 4096.0, "{row:?}");
    // A join and a leave each move a replica's share of what is stored:
    // with R = 3 of 4 nodes, three quarters of it; at least half.
    assert!(row.join_bytes > row.stored_bytes / 2.0, "{row:?}");
    assert!(row.leave_bytes > row.stored_bytes / 2.0, "{row:?}");
}

#[test]
#[ignore = "a measurement: several minutes in release"]
fn cost_table() {
    println!(
        "| N | idle, per node | per put (256 KiB), cluster | per get, cluster | join moves | leave moves |"
    );
    println!("|---|---|---|---|---|---|");
    for nodes in [3, 5, 9, 17, 33] {
        match measure(nodes, SEED + nodes as u64) {
            Ok(row) => print(&row),
            Err(error) => println!("| {nodes} | failed: {error} |"),
        }
    }
}
