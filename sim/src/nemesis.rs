//! The network and crash nemesis shared by the multi-node scenarios.
//!
//! Every few (seed-derived) seconds it picks one action: split the cluster
//! in two, cut one direction of one link, hold one link, crash a node or
//! restart a crashed one, or heal every link. Which classes are on is part
//! of the seed's swarm configuration.
//!
//! Bit rot (a few stored chunk files of one node go bad for good, on a
//! node the scenario allows disk damage on), full disks (one node's, for a
//! few seconds), slow disks (each operation of one node delayed, for a
//! while) and clocks (when the seed
//! turns them on) act on schedules and rngs of their own, for the same
//! reason. Clocks: a node's wall clock is set ahead or
//! behind, mostly within the maximum offset the nodes allow
//! ([`dfs::limits::CLOCK_OFFSET_MAX`]) and sometimes beyond it, and set
//! right again at the heal.
//!
//! A restart can come with two more faults, drawn from a second rng so
//! that seeds without them keep their schedules:
//! - *isolated restart*: the node comes back cut off from every other
//!   node (it must not take writes it cannot make durable on W nodes);
//! - *disk loss*: the node comes back on an empty disk, a new identity
//!   joining through a bootstrap address (a replaced drive). The scenario
//!   decides how many disks may be lost (W - 1 for the replication
//!   scenario: an acknowledged write survives fewer losses than W).

use std::collections::BTreeMap;
use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use crate::harness::Trace;

/// Which faults a seed turns on, and how often they strike.
#[derive(Debug, Clone)]
pub struct Faults {
    /// Mean time between nemesis actions.
    pub every: Duration,
    pub crashes: bool,
    pub partitions: bool,
    pub one_way: bool,
    pub holds: bool,
    /// Restarts sometimes come back cut off from every other node.
    pub isolated_restarts: bool,
    /// Restarts sometimes come back on an empty disk.
    pub disk_loss: bool,
    /// Wall clocks are set ahead and behind.
    pub clock_jumps: bool,
    /// Stored chunk files rot (bad bytes that stay bad).
    pub bit_rot: bool,
    /// A node's disk runs full for a few seconds.
    pub disk_full: bool,
    /// A node's disk turns slow (every operation delayed) for a while.
    pub slow_disk: bool,
}

/// What the nemesis needs from the scenario to crash a node.
pub trait Crashable {
    /// Whether node `i` may be crashed now (e.g. it has joined, so it can
    /// rejoin after a restart).
    fn may_crash(&self, i: usize) -> bool;
    /// Called just before `sim.crash`: fence the node's disk.
    fn before_crash(&self, i: usize);
    /// Node `i` (crashed) is about to restart on an empty disk, if the
    /// scenario allows another loss; returns whether it does.
    fn lose_disk(&self, _i: usize) -> bool {
        false
    }
    /// Set node `i`'s wall clock `offset_ms` away from true time.
    fn set_clock_offset(&self, _i: usize, _offset_ms: i64) {}
    /// Rot `files` chunk files of node `i`'s disk, if the scenario allows
    /// damage to this node's disk; returns whether it does.
    fn rot_disk(&self, _i: usize, _files: u64) -> bool {
        false
    }
    /// Make node `i`'s disk full (or not).
    fn set_disk_full(&self, _i: usize, _full: bool) {}
    /// Delay each of node `i`'s disk operations by `delay_ms` (0: not slow).
    fn set_disk_slow(&self, _i: usize, _delay_ms: u64) {}
}

pub struct Nemesis {
    rng: ChaCha8Rng,
    /// For the restart faults only (see the module docs).
    restart_rng: ChaCha8Rng,
    /// For clock jumps only (see the module docs).
    clock_rng: ChaCha8Rng,
    next_clock_ms: u64,
    /// For bit rot only.
    rot_rng: ChaCha8Rng,
    next_rot_ms: u64,
    /// For full disks only; and until when each node's disk is full.
    full_rng: ChaCha8Rng,
    next_full_ms: u64,
    full_until: Vec<Option<u64>>,
    /// For slow disks only; and until when each node's disk is slow.
    slow_rng: ChaCha8Rng,
    next_slow_ms: u64,
    slow_until: Vec<Option<u64>>,
    faults: Faults,
    names: Vec<String>,
    crashed: Vec<bool>,
    next_action_ms: u64,
    pub counters: BTreeMap<&'static str, u64>,
}

impl Nemesis {
    pub fn new(seed: u64, faults: Faults, names: Vec<String>, first_action_ms: u64) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x4E45_4D45),
            restart_rng: ChaCha8Rng::seed_from_u64(seed ^ 0x5245_5354),
            clock_rng: ChaCha8Rng::seed_from_u64(seed ^ 0x434C_4F43),
            next_clock_ms: first_action_ms,
            rot_rng: ChaCha8Rng::seed_from_u64(seed ^ 0x524F_5421),
            next_rot_ms: first_action_ms,
            full_rng: ChaCha8Rng::seed_from_u64(seed ^ 0x4655_4C4C),
            next_full_ms: first_action_ms,
            full_until: vec![None; names.len()],
            slow_rng: ChaCha8Rng::seed_from_u64(seed ^ 0x534C_4F57),
            next_slow_ms: first_action_ms,
            slow_until: vec![None; names.len()],
            crashed: vec![false; names.len()],
            faults,
            names,
            next_action_ms: first_action_ms,
            counters: BTreeMap::new(),
        }
    }

    fn pick(&mut self, n: usize) -> usize {
        (self.rng.next_u64() % n as u64) as usize
    }

    fn count(&mut self, what: &'static str) {
        *self.counters.entry(what).or_default() += 1;
    }

    /// Act if an action is due at `now_ms`.
    pub fn tick(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        now_ms: u64,
        nodes: &dyn Crashable,
        trace: &mut Trace,
    ) {
        self.clock_tick(now_ms, nodes, trace);
        self.rot_tick(now_ms, nodes, trace);
        self.full_tick(now_ms, nodes, trace);
        self.slow_tick(now_ms, nodes, trace);
        if now_ms < self.next_action_ms {
            return;
        }
        let every = self.faults.every.as_millis() as u64;
        self.next_action_ms = now_ms + 1 + self.rng.next_u64() % (2 * every);
        let n = self.names.len();
        let action = self.pick(6);
        let a = self.pick(n);
        let b = self.pick(n);
        match action {
            0 if self.faults.partitions => {
                // Split into two sides at a random point of a shuffled order.
                let cut = 1 + self.pick(n - 1);
                let mut order: Vec<usize> = (0..n).collect();
                for i in (1..n).rev() {
                    let j = self.pick(i + 1);
                    order.swap(i, j);
                }
                for &x in &order[..cut] {
                    for &y in &order[cut..] {
                        sim.partition(self.names[x].as_str(), self.names[y].as_str());
                    }
                }
                self.count("partitions");
                trace.record(&format!(
                    "{now_ms} partition {:?} | {:?}",
                    &order[..cut],
                    &order[cut..]
                ));
            }
            1 if self.faults.partitions && self.faults.one_way && a != b => {
                sim.partition_oneway(self.names[a].as_str(), self.names[b].as_str());
                self.count("one_way_partitions");
                trace.record(&format!("{now_ms} oneway {a}->{b}"));
            }
            2 if self.faults.holds && a != b => {
                sim.hold(self.names[a].as_str(), self.names[b].as_str());
                self.count("holds");
                trace.record(&format!("{now_ms} hold {a} {b}"));
            }
            3 if self.faults.crashes => {
                if self.crashed[a] {
                    self.restart_faults(sim, a, nodes, now_ms, trace);
                    sim.bounce(self.names[a].as_str());
                    self.crashed[a] = false;
                    self.count("restarts");
                    trace.record(&format!("{now_ms} restart {a}"));
                } else if nodes.may_crash(a) {
                    nodes.before_crash(a);
                    sim.crash(self.names[a].as_str());
                    self.crashed[a] = true;
                    self.count("crashes");
                    trace.record(&format!("{now_ms} crash {a}"));
                }
            }
            _ => {
                self.heal_links(sim);
                trace.record(&format!("{now_ms} heal links"));
            }
        }
    }

    /// Before node `a` restarts: maybe lose its disk, maybe cut it off from
    /// every other node (until the next heal).
    fn restart_faults(
        &mut self,
        sim: &mut turmoil::Sim<'_>,
        a: usize,
        nodes: &dyn Crashable,
        now_ms: u64,
        trace: &mut Trace,
    ) {
        self.maybe_lose_disk(a, nodes, now_ms, trace);
        if self.faults.isolated_restarts && self.restart_rng.next_u64().is_multiple_of(2) {
            for (b, other) in self.names.iter().enumerate() {
                if b != a {
                    sim.partition(self.names[a].as_str(), other.as_str());
                }
            }
            self.count("isolated_restarts");
            trace.record(&format!("{now_ms} isolate {a}"));
        }
    }

    fn maybe_lose_disk(&mut self, a: usize, nodes: &dyn Crashable, now_ms: u64, trace: &mut Trace) {
        if self.faults.disk_loss
            && self.restart_rng.next_u64().is_multiple_of(2)
            && nodes.lose_disk(a)
        {
            self.count("disk_losses");
            trace.record(&format!("{now_ms} lose disk {a}"));
        }
    }

    /// Set a random node's clock off, if a jump is due.
    fn clock_tick(&mut self, now_ms: u64, nodes: &dyn Crashable, trace: &mut Trace) {
        if !self.faults.clock_jumps || now_ms < self.next_clock_ms {
            return;
        }
        let every = 2 * self.faults.every.as_millis() as u64;
        self.next_clock_ms = now_ms + 1 + self.clock_rng.next_u64() % (2 * every);
        let node = (self.clock_rng.next_u64() % self.names.len() as u64) as usize;
        let max = dfs::limits::CLOCK_OFFSET_MAX.as_millis() as i64;
        let sign = if self.clock_rng.next_u64().is_multiple_of(2) {
            1
        } else {
            -1
        };
        let beyond = self.clock_rng.next_u64().is_multiple_of(4);
        let offset_ms = if beyond {
            // 1.05 to 1.3 times the maximum offset.
            sign * (max + max / 20 + (self.clock_rng.next_u64() % (max as u64 / 4)) as i64)
        } else {
            sign * (self.clock_rng.next_u64() % (max as u64 * 9 / 10)) as i64
        };
        nodes.set_clock_offset(node, offset_ms);
        self.count("clock_jumps");
        if beyond {
            self.count("clock_jumps_beyond_max_offset");
        }
        trace.record(&format!("{now_ms} clock {node} {offset_ms:+} ms"));
    }

    /// Rot a few chunk files of a random node, if rot is due.
    fn rot_tick(&mut self, now_ms: u64, nodes: &dyn Crashable, trace: &mut Trace) {
        if !self.faults.bit_rot || now_ms < self.next_rot_ms {
            return;
        }
        let every = 4 * self.faults.every.as_millis() as u64;
        self.next_rot_ms = now_ms + 1 + self.rot_rng.next_u64() % (2 * every);
        let node = (self.rot_rng.next_u64() % self.names.len() as u64) as usize;
        let files = 1 + self.rot_rng.next_u64() % 3;
        if nodes.rot_disk(node, files) {
            self.count("bit_rot_orders");
            trace.record(&format!("{now_ms} rot {node} {files} files"));
        }
    }

    /// Free the disks whose time is up; fill one, if due.
    fn full_tick(&mut self, now_ms: u64, nodes: &dyn Crashable, trace: &mut Trace) {
        for (node, until) in self.full_until.iter_mut().enumerate() {
            if until.is_some_and(|until| now_ms >= until) {
                *until = None;
                nodes.set_disk_full(node, false);
                trace.record(&format!("{now_ms} disk {node} has space again"));
            }
        }
        if !self.faults.disk_full || now_ms < self.next_full_ms {
            return;
        }
        let every = 3 * self.faults.every.as_millis() as u64;
        self.next_full_ms = now_ms + 1 + self.full_rng.next_u64() % (2 * every);
        let node = (self.full_rng.next_u64() % self.names.len() as u64) as usize;
        let lasts_ms = 1_000 + self.full_rng.next_u64() % 7_000;
        self.full_until[node] = Some(now_ms + lasts_ms);
        nodes.set_disk_full(node, true);
        self.count("disk_full_periods");
        trace.record(&format!("{now_ms} disk {node} full for {lasts_ms} ms"));
    }

    /// Make the disks whose time is up fast again; slow one, if due.
    fn slow_tick(&mut self, now_ms: u64, nodes: &dyn Crashable, trace: &mut Trace) {
        for (node, until) in self.slow_until.iter_mut().enumerate() {
            if until.is_some_and(|until| now_ms >= until) {
                *until = None;
                nodes.set_disk_slow(node, 0);
                trace.record(&format!("{now_ms} disk {node} fast again"));
            }
        }
        if !self.faults.slow_disk || now_ms < self.next_slow_ms {
            return;
        }
        let every = 3 * self.faults.every.as_millis() as u64;
        self.next_slow_ms = now_ms + 1 + self.slow_rng.next_u64() % (2 * every);
        let node = (self.slow_rng.next_u64() % self.names.len() as u64) as usize;
        let lasts_ms = 2_000 + self.slow_rng.next_u64() % 15_000;
        // From a sluggish disk to one that stalls each operation for a
        // second (a dying drive, a saturated array).
        let delay_ms = [5, 50, 300, 1_000][(self.slow_rng.next_u64() % 4) as usize];
        self.slow_until[node] = Some(now_ms + lasts_ms);
        nodes.set_disk_slow(node, delay_ms);
        self.count("slow_disk_periods");
        trace.record(&format!(
            "{now_ms} disk {node} slow ({delay_ms} ms) for {lasts_ms} ms"
        ));
    }

    /// Repair every link and release every hold.
    pub fn heal_links(&self, sim: &turmoil::Sim<'_>) {
        for a in &self.names {
            for b in &self.names {
                if a < b {
                    sim.repair(a.as_str(), b.as_str());
                    sim.release(a.as_str(), b.as_str());
                }
            }
        }
    }

    /// End of chaos: heal every link and restart every crashed node (a
    /// disk may be lost here too; no node stays cut off).
    pub fn heal(&mut self, sim: &mut turmoil::Sim<'_>, nodes: &dyn Crashable, trace: &mut Trace) {
        self.heal_links(sim);
        let now_ms = sim.elapsed().as_millis() as u64;
        if self.faults.clock_jumps {
            for i in 0..self.names.len() {
                nodes.set_clock_offset(i, 0);
            }
            trace.record(&format!("{now_ms} clocks set right"));
        }
        for (node, until) in self.full_until.iter_mut().enumerate() {
            if until.take().is_some() {
                nodes.set_disk_full(node, false);
            }
        }
        for (node, until) in self.slow_until.iter_mut().enumerate() {
            if until.take().is_some() {
                nodes.set_disk_slow(node, 0);
            }
        }
        for i in 0..self.names.len() {
            if self.crashed[i] {
                self.maybe_lose_disk(i, nodes, now_ms, trace);
                sim.bounce(self.names[i].as_str());
                self.crashed[i] = false;
                self.count("restarts");
            }
        }
    }
}
