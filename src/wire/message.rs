use serde::{Deserialize, Serialize};

use crate::cas::ContentId;
use crate::keys::NodeId;
use crate::meta::{VersionRecord, VersionSelector};

/// One framed message and the request it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Envelope {
    pub request_id: u64,
    pub message: Message,
}

/// What a `Get` names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum GetTarget {
    /// A file name: its current version, or the one `version` selects.
    Name(String),
    /// Immutable content by id.
    Content(ContentId),
}

/// Why a request failed. The client maps these to exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum ErrorCode {
    NotFound,
    InvalidRequest,
    DiskFull,
    /// Stored data failed verification and no good copy is available.
    Corrupt,
    /// The node cannot serve this now (overloaded, shutting down).
    Unavailable,
    Internal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum MemberState {
    Alive,
    Suspect,
    Down,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct MemberStatus {
    pub node_id: NodeId,
    pub addr: String,
    pub state: MemberState,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct StatusReport {
    pub node_id: NodeId,
    pub listen: String,
    pub members: Vec<MemberStatus>,
    /// Blobs (chunks and manifests) in this node's store.
    pub chunks: u64,
    /// Sealed bytes on this node's disk.
    pub bytes_stored: u64,
    /// Blobs found corrupt on disk since the node started.
    pub quarantined: u64,
}

/// Every message of the protocol. See the [module docs](super) for which
/// replies each request gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Message {
    PutStart {
        name: String,
    },
    PutData {
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    PutFinish,
    Get {
        target: GetTarget,
        version: Option<VersionSelector>,
    },
    Remove {
        name: String,
    },
    List,
    Versions {
        name: String,
    },
    Status,

    PutDone {
        record: VersionRecord,
    },
    GetStart {
        /// The version served, when the get was by name.
        record: Option<VersionRecord>,
        content: ContentId,
        #[serde(with = "serde_bytes")]
        manifest: Vec<u8>,
    },
    ChunkData {
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    GetEnd,
    Removed {
        record: VersionRecord,
    },
    Listing {
        records: Vec<VersionRecord>,
        truncated: bool,
    },
    History {
        records: Vec<VersionRecord>,
        truncated: bool,
    },
    StatusReply(StatusReport),
    Error {
        code: ErrorCode,
        message: String,
    },
}
