//! Who a member is, as SWIM sees it.

use serde::{Deserialize, Serialize};

use crate::keys::NodeId;
use crate::limits::PEER_ADDR_BYTES_MAX;

/// A member's identity in SWIM: its node id (authenticated by the Noise
/// handshake), the address it listens on, and an incarnation counter.
///
/// foca keys members by [`foca::Identity::addr`], which here is the node id:
/// a node that restarts on another port is the same member. `bump` makes a
/// restarted or rejoining node a *new* identity of the same member, which
/// wins over the old one; it starts at the wall clock of the node's start.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct PeerIdentity {
    pub node: NodeId,
    pub addr: String,
    pub bump: u64,
}

impl PeerIdentity {
    /// Whether the advertised address is plausible: bounded, non-empty and
    /// `host:port`. A hostile one is refused before it is dialed or stored.
    pub fn check(&self) -> Result<(), String> {
        let addr = &self.addr;
        if addr.is_empty() || addr.len() > PEER_ADDR_BYTES_MAX {
            return Err(format!(
                "advertised address is {} bytes (1 to {PEER_ADDR_BYTES_MAX})",
                addr.len()
            ));
        }
        match addr.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
            _ => Err(format!("advertised address {addr:?} is not host:port")),
        }
    }
}

impl foca::Identity for PeerIdentity {
    type Addr = NodeId;

    fn renew(&self) -> Option<Self> {
        Some(Self {
            bump: self.bump.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> NodeId {
        self.node
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.bump > adversary.bump
    }
}

#[cfg(test)]
mod tests {
    use foca::Identity;

    use super::*;

    fn identity(addr: &str, bump: u64) -> PeerIdentity {
        PeerIdentity {
            node: NodeId([1; 32]),
            addr: addr.into(),
            bump,
        }
    }

    #[test]
    fn a_renewed_identity_is_the_same_member_and_wins() {
        let old = identity("127.0.0.1:7400", 5);
        let new = old.renew().unwrap();
        assert_eq!(new.addr(), old.addr());
        assert!(new.win_addr_conflict(&old));
        assert!(!old.win_addr_conflict(&new));
    }

    #[test]
    fn hostile_addresses_are_refused() {
        assert!(identity("127.0.0.1:7400", 0).check().is_ok());
        assert!(identity("node3:7400", 0).check().is_ok());
        assert!(identity("[::1]:7400", 0).check().is_ok());
        assert!(identity("", 0).check().is_err());
        assert!(identity("no-port", 0).check().is_err());
        assert!(identity(":7400", 0).check().is_err());
        assert!(identity("h:99999", 0).check().is_err());
        assert!(identity(&"a".repeat(300), 0).check().is_err());
    }
}
