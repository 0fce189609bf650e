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

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::limits::{CONNECTIONS_MAX, HANDSHAKES_MAX, HANDSHAKES_PER_HOST_MAX};

/// The slots of one listening node.
#[derive(Debug)]
pub struct Admission {
    handshakes: Arc<Semaphore>,
    per_host: Arc<Mutex<BTreeMap<String, usize>>>,
    connections: Arc<Semaphore>,
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
}
