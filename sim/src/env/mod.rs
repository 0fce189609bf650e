//! `SimEnv`: the node's [`Env`] over turmoil (DESIGN §9).
//!
//! - `net`: `turmoil::net`, so partitions, holds and latency apply; a
//!   crashed node's connections close in the order they were opened.
//! - `disk`: turmoil's fs shim (crash discards unsynced writes; torn
//!   writes by `block_size`; random early syncs by `sync_probability`),
//!   behind a disk that adds what turmoil does not model the way we need:
//!   injected EIO on reads, writes and syncs, and transient read corruption
//!   of chunk files, both switchable off for the final checks; and the
//!   crash *fence*: once set, every call fails without touching the fs, so
//!   `Drop`s that run during `Sim::crash` cannot make anything durable.
//! - Clock: turmoil's simulated wall clock, plus a per-node offset the
//!   nemesis moves (a clock running ahead or behind, stepped either way);
//!   the monotonic clock is the simulation's elapsed time, which no offset
//!   touches. Randomness: ChaCha8 seeded from
//!   (seed, node, incarnation). Blocking work runs inline (turmoil's fs
//!   context is the host's task).

mod disk;
mod net;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use dfs::env::{Clock, Env, Executor, Random};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

pub use disk::{DiskFaults, DiskState};
pub use net::{CloseInOrder, WireTraffic};

/// One node incarnation's [`Env`], and what makes its crash replayable.
pub struct SimEnv {
    pub env: Env,
    sockets: Arc<net::Sockets>,
}

impl SimEnv {
    /// Wrap the host's software: a crash drops this future after every
    /// task of the node, and it then closes the connections those tasks
    /// left, in the order they were opened (see [`CloseInOrder`]).
    pub fn host_software<F: Future>(&self, software: F) -> CloseInOrder<F> {
        CloseInOrder::new(software, self.sockets.clone())
    }

    /// Bytes this incarnation's connections wrote and read.
    pub fn traffic(&self) -> Arc<WireTraffic> {
        self.sockets.traffic.clone()
    }
}

/// Build the Env of one node incarnation. `faults.fenced` is also the
/// incarnation's crash switch for its connections.
pub fn sim_env(rng_seed: u64, faults: Arc<DiskFaults>) -> SimEnv {
    sim_env_with_clock(rng_seed, faults, Arc::new(AtomicI64::new(0)))
}

/// [`sim_env`] whose wall clock is off by `clock_offset_ms` (shared with
/// the nemesis, and kept across a node's incarnations like its hardware
/// clock).
pub fn sim_env_with_clock(
    rng_seed: u64,
    faults: Arc<DiskFaults>,
    clock_offset_ms: Arc<AtomicI64>,
) -> SimEnv {
    let rng = Arc::new(SimRandom(Mutex::new(ChaCha8Rng::seed_from_u64(rng_seed))));
    let disk_rng = ChaCha8Rng::seed_from_u64(rng_seed ^ 0x5EED_D15C);
    let sockets = Arc::new(net::Sockets::new(faults.clone()));
    let disk_state = faults.rot.clone();
    SimEnv {
        env: Env {
            disk: Arc::new(disk::SimDisk::new(faults, disk_rng)),
            net: Arc::new(net::SimNet::new(sockets.clone())),
            clock: Arc::new(SimClock {
                offset_ms: clock_offset_ms,
            }),
            rng,
            executor: Arc::new(Inline { disk: disk_state }),
        },
        sockets,
    }
}

/// The Env of a client host: clients are never crashed and inject no
/// disk faults.
pub fn client_env(rng_seed: u64) -> Env {
    sim_env(rng_seed, DiskFaults::new(0, 0)).env
}

struct SimRandom(Mutex<ChaCha8Rng>);

impl Random for SimRandom {
    fn fill(&self, buf: &mut [u8]) {
        self.0.lock().unwrap().fill_bytes(buf);
    }
}

struct SimClock {
    offset_ms: Arc<AtomicI64>,
}

impl Clock for SimClock {
    fn unix_ms(&self) -> u64 {
        let true_ms = turmoil::since_epoch()
            .map(|d| d.as_millis() as u64)
            .expect("SimClock used outside a turmoil host");
        true_ms.saturating_add_signed(self.offset_ms.load(Ordering::Relaxed))
    }

    fn monotonic_ms(&self) -> u64 {
        turmoil::sim_elapsed()
            .map(|d| d.as_millis() as u64)
            .expect("SimClock used outside a turmoil host")
    }
}

/// Runs blocking jobs inline, or, while the node's disk is slow, after a
/// delay of simulated time (a spawned task of the host: a crash drops it,
/// job and all, like the process it stands for).
struct Inline {
    disk: Arc<DiskState>,
}

impl Executor for Inline {
    fn run_blocking(&self, job: Box<dyn FnOnce() + Send>) {
        let delay_ms = self.disk.slow_ms.load(Ordering::Relaxed);
        if delay_ms == 0 {
            job();
            return;
        }
        self.disk.slow_jobs.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
            job();
        });
    }
}
