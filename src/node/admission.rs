//! Who gets a connection slot, and when.
//!
//! A socket first needs a *handshake* slot: at most [`HANDSHAKES_MAX`] run
//! at once, at most [`HANDSHAKES_PER_HOST_MAX`] from one IP address, each
//! within [`HANDSHAKE_TIMEOUT`](crate::limits::HANDSHAKE_TIMEOUT). Only an
//! authenticated connection then takes one of the [`CONNECTIONS_MAX`]
//! serving slots. So sockets that never complete a handshake (no key, a
//! port scanner, a slowloris) cannot lock out clients and peers: they
//! exhaust at most their own host's share of handshake slots, for at most
//! the handshake timeout.
//!
//! A client whose host's access keys keep failing (unknown, removed, wrong
//! secret) waits before its handshake goes on: nothing for the first
//! [`FAILURES_FREE`] failures, then 100 ms doubling up to
//! [`FAILURE_PENALTY_MAX`], holding its handshake slot meanwhile. A
//! client's success, or a minute without failures, clears it. Nodes (who
//! say so in their first message and must then prove the cluster key) are
//! never slowed, so a client with a bad key cannot slow the cluster's own
//! connections from a shared address.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use std::time::Duration;

use crate::limits::{CONNECTIONS_MAX, HANDSHAKES_MAX, HANDSHAKES_PER_HOST_MAX};

/// Failed handshakes a host may have before its next ones wait.
pub const FAILURES_FREE: u32 = 3;
/// The longest a failing host waits before a handshake.
pub const FAILURE_PENALTY_MAX: Duration = Duration::from_secs(5);
/// A host's failures are forgotten after this long without one.
const FAILURES_FORGOTTEN_AFTER_MS: u64 = 60_000;
/// Hosts whose failures are remembered; past it the longest quiet is
/// forgotten first.
const FAILING_HOSTS_MAX: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last_ms: u64,
}

/// The slots of one listening node.
#[derive(Debug)]
pub struct Admission {
    handshakes: Arc<Semaphore>,
    per_host: Arc<Mutex<BTreeMap<String, usize>>>,
    connections: Arc<Semaphore>,
    failures: Mutex<BTreeMap<String, Failures>>,
}

/// A handshake slot; freed on drop.
#[derive(Debug)]
pub struct HandshakeSlot {
    _permit: OwnedSemaphorePermit,
    host: String,
    per_host: Arc<Mutex<BTreeMap<String, usize>>>,
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut per_host = self.per_host.lock().expect("admission poisoned");
        if let Some(count) = per_host.get_mut(&self.host) {
            *count -= 1;
            if *count == 0 {
                per_host.remove(&self.host);
            }
        }
    }
}

/// Why a socket was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("{HANDSHAKES_MAX} handshakes are in progress")]
    Handshakes,
    #[error("{HANDSHAKES_PER_HOST_MAX} handshakes from this host are in progress")]
    HandshakesFromHost,
    #[error("{CONNECTIONS_MAX} connections are being served")]
    Connections,
}

impl Default for Admission {
    fn default() -> Self {
        Self {
            handshakes: Arc::new(Semaphore::new(HANDSHAKES_MAX)),
            per_host: Arc::new(Mutex::new(BTreeMap::new())),
            connections: Arc::new(Semaphore::new(CONNECTIONS_MAX)),
            failures: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Admission {
    /// A handshake slot for a socket from `peer` (`ip:port`), if one is free.
    pub fn handshake(&self, peer: &str) -> Result<HandshakeSlot, Refused> {
        let host = host_of(peer).to_string();
        let mut per_host = self.per_host.lock().expect("admission poisoned");
        let count = per_host.get(&host).copied().unwrap_or(0);
        if count >= HANDSHAKES_PER_HOST_MAX {
            return Err(Refused::HandshakesFromHost);
        }
        let permit = self
            .handshakes
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Handshakes)?;
        // Bounded: at most HANDSHAKES_MAX hosts hold a permit at once.
        per_host.insert(host.clone(), count + 1);
        Ok(HandshakeSlot {
            _permit: permit,
            host,
            per_host: self.per_host.clone(),
        })
    }

    /// How long a handshake from `peer` waits first (monotonic `now_ms`).
    pub fn penalty(&self, peer: &str, now_ms: u64) -> Duration {
        let failures = self.failures.lock().expect("admission poisoned");
        match failures.get(host_of(peer)) {
            Some(f) if now_ms.saturating_sub(f.last_ms) < FAILURES_FORGOTTEN_AFTER_MS => {
                let over = f.count.saturating_sub(FAILURES_FREE);
                if over == 0 {
                    Duration::ZERO
                } else {
                    let doublings = (over - 1).min(16);
                    (Duration::from_millis(100) * 2u32.pow(doublings)).min(FAILURE_PENALTY_MAX)
                }
            }
            _ => Duration::ZERO,
        }
    }

    /// A handshake from `peer` failed.
    pub fn note_failure(&self, peer: &str, now_ms: u64) {
        let host = host_of(peer);
        let mut failures = self.failures.lock().expect("admission poisoned");
        let entry = failures.entry(host.to_string()).or_insert(Failures {
            count: 0,
            last_ms: now_ms,
        });
        if now_ms.saturating_sub(entry.last_ms) >= FAILURES_FORGOTTEN_AFTER_MS {
            entry.count = 0;
        }
        entry.count = entry.count.saturating_add(1);
        entry.last_ms = now_ms;
        if failures.len() > FAILING_HOSTS_MAX {
            let quietest = failures
                .iter()
                .min_by_key(|(_, f)| f.last_ms)
                .map(|(host, _)| host.clone());
            if let Some(host) = quietest {
                failures.remove(&host);
            }
        }
    }

    /// A handshake from `peer` succeeded: its failures are forgiven.
    pub fn note_success(&self, peer: &str) {
        let mut failures = self.failures.lock().expect("admission poisoned");
        failures.remove(host_of(peer));
    }

    /// A serving slot for an authenticated connection, if one is free.
    pub fn connection(&self) -> Result<OwnedSemaphorePermit, Refused> {
        self.connections
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Connections)
    }
}

/// The host part of `ip:port` (`[v6]:port` included); the whole string when
/// it has no port.
fn host_of(peer: &str) -> &str {
    match peer.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => peer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_host_cannot_take_every_handshake_slot() {
        let admission = Admission::default();
        let mut held = Vec::new();
        for port in 0..HANDSHAKES_PER_HOST_MAX {
            held.push(admission.handshake(&format!("10.0.0.1:{port}")).unwrap());
        }
        assert_eq!(
            admission.handshake("10.0.0.1:9999").unwrap_err(),
            Refused::HandshakesFromHost
        );
        // Another host still gets in, and the first does once one finishes.
        let other = admission.handshake("10.0.0.2:1").unwrap();
        held.pop();
        let again = admission.handshake("10.0.0.1:9999").unwrap();
        drop((other, again, held));
        assert!(admission.per_host.lock().unwrap().is_empty());
    }

    #[test]
    fn handshake_slots_are_bounded_across_hosts() {
        let admission = Admission::default();
        let held: Vec<_> = (0..HANDSHAKES_MAX)
            .map(|i| admission.handshake(&format!("10.1.{}.{}:1", i / 256, i % 256)))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            admission.handshake("10.9.9.9:1").unwrap_err(),
            Refused::Handshakes
        );
        drop(held);
        assert!(admission.handshake("10.9.9.9:1").is_ok());
    }

    #[test]
    fn hosts_are_told_apart_without_their_ports() {
        assert_eq!(host_of("127.0.0.1:7400"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7400"), "[::1]");
        assert_eq!(host_of("node3"), "node3");
    }

    #[test]
    fn a_host_that_keeps_failing_waits_longer_and_is_forgiven() {
        let admission = Admission::default();
        let host = "10.0.0.9:1234";
        for i in 0..FAILURES_FREE {
            assert_eq!(
                admission.penalty(host, 1_000),
                Duration::ZERO,
                "failure {i}"
            );
            admission.note_failure(host, 1_000);
        }
        assert_eq!(admission.penalty(host, 1_000), Duration::ZERO);
        admission.note_failure(host, 1_000);
        assert_eq!(
            admission.penalty("10.0.0.9:999", 1_000),
            Duration::from_millis(100)
        );
        admission.note_failure(host, 1_000);
        assert_eq!(admission.penalty(host, 1_000), Duration::from_millis(200));
        for _ in 0..20 {
            admission.note_failure(host, 1_000);
        }
        assert_eq!(admission.penalty(host, 1_000), FAILURE_PENALTY_MAX);
        // Another host is not affected; a quiet minute or a success clears.
        assert_eq!(admission.penalty("10.0.0.8:1", 1_000), Duration::ZERO);
        assert_eq!(admission.penalty(host, 61_000), Duration::ZERO);
        admission.note_success(host);
        assert_eq!(admission.penalty(host, 1_000), Duration::ZERO);
    }

    #[test]
    fn remembered_hosts_are_bounded() {
        let admission = Admission::default();
        for i in 0..FAILING_HOSTS_MAX + 100 {
            admission.note_failure(
                &format!("10.{}.{}.{}:1", i >> 16, (i >> 8) & 255, i & 255),
                i as u64,
            );
        }
        assert!(admission.failures.lock().unwrap().len() <= FAILING_HOSTS_MAX);
    }
}
