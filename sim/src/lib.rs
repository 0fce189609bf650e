//! Deterministic simulation of dfs nodes under turmoil (DESIGN §9).
//!
//! - [`env`](mod@env): `SimEnv`, the node's I/O seam over turmoil's network and file
//!   system, with a crash fence, injected disk faults, and a crash that
//!   closes the node's connections in a replayable order.
//! - [`harness`]: seeds (`SIM_SEED`, `SIM_SEEDS`, `SIM_SEED_BASE`), the
//!   reproduce line on failure, trace hashes and the determinism check.
//! - [`single_node`]: the first scenario: one node, crashes at random
//!   points, torn writes, early syncs, I/O errors and read corruption,
//!   against a workload whose history the checkers read.
//! - [`membership`]: 3 to 9 nodes join through one, under partitions,
//!   holds, crashes, latency and link flaps, plus an intruder without the
//!   key; after healing every node must see every other alive. Its join
//!   storm starts every node within seconds through one, with slow links
//!   and stalled nodes, and wants each listed alive once within 30 s.
//! - [`nemesis`]: partitions, one-way cuts, holds, crashes and restarts,
//!   shared by the multi-node scenarios.
//! - [`replication`]: 3 to 7 nodes, clients putting, reading, removing,
//!   pruning and restoring through different nodes under the nemesis and
//!   disk faults; checks the six guarantees of DESIGN §8.
//! - [`cost`]: what a cluster of N nodes spends at idle, per put and get,
//!   and when a node joins or leaves (a measurement, printed, not checked).
//! - [`workload`]: the content model, `Attempts` (what the clients tried to
//!   write, which every listed version and every read must be explained
//!   by), and helpers the client workloads share.

// turmoil seeds each host's tokio runtime (the order `tokio::select!` polls
// its branches) only under this cfg, which `.cargo/config.toml` sets; a
// RUSTFLAGS variable replaces that setting, and seeds would stop replaying.
#[cfg(not(tokio_unstable))]
compile_error!(
    "the simulation needs `--cfg tokio_unstable` (set in .cargo/config.toml; a RUSTFLAGS \
     variable replaces it, so add it there too), or its seeds do not replay"
);

pub mod cost;
pub mod env;
pub mod harness;
pub mod membership;
pub mod nemesis;
pub mod replication;
pub mod single_node;
pub mod workload;
