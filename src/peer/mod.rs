//! Peers: authenticated connections between nodes and SWIM membership
//! (DESIGN §6, §7).
//!
//! - [`Peers`] keeps one multiplexed connection per peer pair, dials with
//!   jittered exponential backoff and accepts connections whose first
//!   message is a `PeerHello`.
//! - [`membership`] runs foca over those connections, keeps the
//!   [`MemberView`] that `status` (and later placement) reads, and persists
//!   the member list.

mod backoff;
mod conn;
mod identity;
pub mod membership;
mod peers;
mod view;

pub use conn::{Datagram, PeerConnection, PeerTraffic};
pub use identity::PeerIdentity;
pub use membership::{MembershipTask, SwimTiming};
pub use peers::Peers;
pub use view::MemberView;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::keys::NodeId;
use crate::wire::Message;

use crate::secure::SecureError;
use crate::wire::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("peer unreachable: {0}")]
    Unreachable(String),
    #[error("peer refused: {0}")]
    Refused(String),
    #[error(transparent)]
    Secure(#[from] SecureError),
    #[error("the connection closed")]
    Closed,
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("too many requests in flight to this peer")]
    Busy,
    #[error("the peer answered {code:?}: {message}")]
    Remote { code: ErrorCode, message: String },
}

/// The future of one served peer request: the reply to send.
pub type ServiceFuture = Pin<Box<dyn Future<Output = Message> + Send>>;

/// What answers the requests peers send (storage and index requests; the
/// connection itself answers pings and carries SWIM).
pub trait PeerService: Send + Sync {
    /// Serve `request` from the authenticated node `from`; the reply is
    /// sent with the request's id. Errors are `Message::Error` replies.
    fn serve(&self, from: NodeId, request: Message) -> ServiceFuture;
}
