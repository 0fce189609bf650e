//! The operations every frontend calls: the native protocol
//! (`requests.rs`, over Noise) and the S3 API (at the production edge, over
//! HTTP). A put takes a byte stream and returns a durable version record; a
//! read gives verified bytes by range; the rest act on the version index.
//! Frontends only translate: a request in, an operation, an answer out, so
//! every protocol takes the same durability-ordered path (rust-analyzer's
//! `ide` boundary, Garage's `api/s3` over `model`).
//!
//! Errors are [`OpError`]: an [`ErrorCode`] each frontend maps to its own
//! (the native `Message::Error`, S3's XML codes), and a message for people.

use std::future::Future;

use bytes::Bytes;

use crate::cluster::ClusterError;
use crate::meta::IndexError;
use crate::store::StoreError;
use crate::wire::ErrorCode;

mod catalog;
mod delta;
mod put;
mod read;

pub use catalog::{ListPage, Listed, VersionPick};
pub use delta::{ChunkedBody, ChunkedPiece};
pub use put::PutOptions;
pub use read::ObjectReader;

/// A failed operation: what the client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpError {
    pub code: ErrorCode,
    pub message: String,
}

impl OpError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<StoreError> for OpError {
    fn from(error: StoreError) -> Self {
        let code = match &error {
            StoreError::NotFound(_) => ErrorCode::NotFound,
            StoreError::Corrupt(_) => ErrorCode::Corrupt,
            StoreError::DiskFull { .. } => ErrorCode::DiskFull,
            StoreError::TooLarge(_) => ErrorCode::InvalidRequest,
            StoreError::Io { .. } | StoreError::Table(_) | StoreError::NotSealedFor(_) => {
                ErrorCode::Internal
            }
            StoreError::Busy(_) => ErrorCode::Unavailable,
        };
        // A client's mistake is the client's to hear, not the log's.
        match &error {
            StoreError::NotFound(_) | StoreError::TooLarge(_) => {
                tracing::debug!(%error, "request refused by the chunk store")
            }
            StoreError::Busy(_) => {
                tracing::warn!(%error, "request failed: the disk is slower than the writes; see dfs_disk_sync_duration_seconds")
            }
            StoreError::DiskFull { .. } => {
                tracing::error!(%error, "request failed: the disk is full; free space, or add disk or nodes")
            }
            StoreError::NotSealedFor(_) => {
                tracing::error!(%error, "request failed: bytes not sealed for their id reached the store")
            }
            StoreError::Corrupt(_) | StoreError::Io { .. } | StoreError::Table(_) => {
                tracing::error!(%error, "request failed in the chunk store; check the disk (dmesg, smartctl)")
            }
        }
        OpError::new(code, error.to_string())
    }
}

impl From<ClusterError> for OpError {
    fn from(error: ClusterError) -> Self {
        let code = match &error {
            ClusterError::TooFewNodes { .. }
            | ClusterError::QuorumNotReached { .. }
            | ClusterError::Pruned(..) => ErrorCode::Unavailable,
            ClusterError::NotFound(_) => ErrorCode::NotFound,
            ClusterError::Corrupt(_) => ErrorCode::Corrupt,
            ClusterError::Invalid(_) => ErrorCode::InvalidRequest,
            ClusterError::Local(_) | ClusterError::Clock(_) => ErrorCode::Internal,
        };
        match &error {
            ClusterError::NotFound(_) | ClusterError::Invalid(_) | ClusterError::Pruned(..) => {
                tracing::debug!(%error, "request refused")
            }
            ClusterError::TooFewNodes { .. } | ClusterError::QuorumNotReached { .. } => {
                tracing::warn!(%error, "request failed: too few members answered; see which are down (dfs-node status, or the status page)")
            }
            ClusterError::Corrupt(_) => {
                tracing::error!(%error, "request failed: every copy read was corrupt; check the disks of the nodes that hold it")
            }
            ClusterError::Local(_) => {
                tracing::error!(%error, "request failed on this node's storage; check the disk (dmesg, smartctl)")
            }
            ClusterError::Clock(_) => {
                tracing::error!(%error, "request failed: the clocks differ too much; check NTP on every node")
            }
        }
        OpError::new(code, error.to_string())
    }
}

impl From<IndexError> for OpError {
    fn from(error: IndexError) -> Self {
        tracing::error!(%error, "request failed in the version index; check the disk (dmesg, smartctl)");
        OpError::new(ErrorCode::Internal, error.to_string())
    }
}

/// `record` and the stubs forgetting `forget` (versions of its name that
/// it replaces for good), to be committed together.
fn with_forgotten(
    record: &crate::meta::VersionRecord,
    forget: &[crate::meta::VersionId],
) -> Vec<crate::meta::VersionRecord> {
    std::iter::once(record.clone())
        .chain(
            forget
                .iter()
                .map(|vid| crate::meta::VersionRecord::forgetting(&record.name, *vid)),
        )
        .collect()
}

/// The bytes of a put as its frontend receives them: Noise frames, an HTTP
/// body. Pulled one piece at a time, so a put holds only what its pipeline
/// bounds, at any size.
pub trait Body: Send {
    /// A failure of the transport, which ends the put (and is the
    /// frontend's to handle: the native protocol closes the connection).
    type Error: Send;

    /// The next bytes; `None` at the end of the body.
    fn next(&mut self) -> impl Future<Output = Result<Option<Bytes>, Self::Error>> + Send;

    /// How many bytes the body will have, when the frontend knows before
    /// reading any (an HTTP Content-Length). A put that will be large
    /// then waits for its slot before it takes a byte in, rather than
    /// holding its first bytes while it waits.
    fn len_hint(&self) -> Option<u64> {
        None
    }
}

/// Why a put failed: its body broke, or the put was refused.
#[derive(Debug)]
pub enum PutError<E> {
    Body(E),
    Refused(OpError),
}

impl<E> From<OpError> for PutError<E> {
    fn from(error: OpError) -> Self {
        PutError::Refused(error)
    }
}
