use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::cas::{ChunkId, ContentId};
use crate::keys::{AccessKeyId, NodeId, Permission};
use crate::meta::{Floor, KeyRecord, RecordKey, VersionId, VersionRecord, VersionSelector};
use crate::peer::PeerIdentity;

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
    /// The connection's access key is no longer valid (it was removed).
    Unauthorized,
    /// The connection's access key may not do this.
    Forbidden,
    /// The body does not match the digest the client sent with it.
    BadDigest,
}

/// An access key as `key ls` shows it (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct KeyInfo {
    pub id: AccessKeyId,
    pub name: String,
    pub permission: Permission,
    pub created_ms: u64,
    /// When the answering node last accepted a connection with it (unix
    /// ms; each node knows only its own).
    pub last_used_ms: Option<u64>,
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
    /// Blobs this node holds that, at its last repair scan, had fewer than
    /// R copies on their owners (copies are being made).
    pub under_replicated: u64,
    /// Their size in bytes (plaintext).
    pub under_replicated_bytes: u64,
    /// Blobs the scrub read back verified since the node started.
    pub scrubbed: u64,
    /// Complete scrub passes over this node's store since it started.
    pub scrub_passes: u64,
    /// Copies this node's repair sent to owners that lacked them since it
    /// started (with `under_replicated`: whether repair keeps up).
    pub repair_copies_made: u64,
    /// Why this node cannot take writes now (`None`: it can): it is still
    /// reaching the members it knew, or a write quorum is not alive.
    pub not_ready: Option<String>,
    /// The file system of the data dir (`None` where it cannot be read).
    pub disk: Option<DiskSpace>,
    /// Below this much free space (percent of the disk's size) the node
    /// calls its disk nearly full (`serve --disk-free-min-percent`).
    pub disk_free_min_percent: u8,
    /// Seconds since this node started.
    pub uptime_s: u64,
    /// The build's version (`dfs` crate version).
    pub version: String,
}

/// A file system's size and the bytes still free for this node's writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct DiskSpace {
    pub total_bytes: u64,
    /// Available to an unprivileged writer (what the node can still use).
    pub free_bytes: u64,
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
        /// Serve the greatest current version a majority of the cluster
        /// knows, rather than this node's own.
        quorum: bool,
    },
    Remove {
        name: String,
    },
    List,
    Versions {
        name: String,
    },
    Status,
    /// Keep the newest `keep` versions of `name`; older ones are forgotten
    /// on every node.
    Prune {
        name: String,
        keep: u32,
    },
    /// Make the content of an earlier version current again, as a new version.
    Restore {
        name: String,
        version: VersionSelector,
    },

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
    Pruned {
        /// The new floor: versions below it are gone.
        floor: Option<VersionId>,
        /// How many versions this node dropped.
        removed: u64,
    },
    Error {
        code: ErrorCode,
        message: String,
    },

    // Between nodes (a connection whose first message is `PeerHello`).
    /// First message each way on a peer connection: who is speaking, at
    /// which address it listens, and its membership incarnation. The node
    /// id must be the one the Noise handshake authenticated.
    PeerHello {
        identity: PeerIdentity,
    },
    /// A SWIM datagram (foca's encoding), one-way, request id 0.
    Swim {
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// Keepalive request; answered by `Pong`.
    Ping,
    Pong,
    /// Store a blob (chunk or manifest) durably, sent sealed (as at rest,
    /// `store::seal`: every node seals a blob into the same bytes); the
    /// receiver checks the tag for `id` and stores the bytes as they are.
    /// Answered by `BlobStored` once durable.
    StoreBlob {
        id: ChunkId,
        /// Shared, not copied, when one blob is sent to several owners (the
        /// wire form is the same byte string as a `serde_bytes` vector's).
        #[cfg_attr(feature = "arbitrary", arbitrary(with = arbitrary_bytes))]
        sealed: Bytes,
    },
    BlobStored,
    /// Read a blob; answered by `BlobData`, sealed (its tag checked by the
    /// sender, and by the receiver as it opens it), or `Error`
    /// (`NotFound`, `Corrupt`).
    FetchBlob {
        id: ChunkId,
    },
    BlobData {
        #[cfg_attr(feature = "arbitrary", arbitrary(with = arbitrary_bytes))]
        sealed: Bytes,
    },
    /// Merge version records and prune floors into the index, durably;
    /// answered by `RecordsApplied`.
    ApplyRecords {
        records: Vec<VersionRecord>,
        floors: Vec<Floor>,
    },
    /// The records and floors are durable, except the records listed in
    /// `below_floor`: the receiver's prune floor for their name is above
    /// them, so it did not keep them (a write must not count such a node
    /// toward its quorum).
    RecordsApplied {
        below_floor: Vec<RecordKey>,
    },
    /// Anti-entropy, step 1: a digest of each of the index's buckets.
    /// Answered by `SyncKeys` for the buckets that differ, listing only
    /// keys after `after` (a pass over a large difference continues where
    /// the previous round stopped).
    SyncDigests {
        digests: Vec<u128>,
        after: Option<RecordKey>,
        /// The digest of the sender's access key records: the answer says
        /// whether the responder's differs (then `FetchKeys` follows).
        keys_digest: [u8; 32],
    },
    /// The responder's record keys and floors in the differing buckets.
    SyncKeys {
        buckets: Vec<u16>,
        keys: Vec<RecordKey>,
        floors: Vec<Floor>,
        /// More differing keys exist than fit; the next round continues.
        truncated: bool,
        /// The responder's access key records differ from the sender's.
        keys_differ: bool,
    },
    /// Anti-entropy, step 2: the records for these keys; answered by
    /// `Records` (keys the responder no longer has are skipped).
    FetchRecords {
        keys: Vec<RecordKey>,
    },
    Records {
        records: Vec<VersionRecord>,
    },
    /// The responder's current record of `name`, for quorum reads:
    /// answered by `Records` holding it and, before it, the stubs of the
    /// versions above it that were deleted for good (a build before this
    /// one answers `Current`).
    CurrentOf {
        name: String,
    },
    Current {
        record: Option<VersionRecord>,
    },
    /// Repair: which of these blobs does the responder hold durably? With
    /// `verify`, only those that also read back verified (it reads each
    /// one; at most `VERIFY_BATCH` ids): asked before a copy elsewhere is
    /// deleted on the strength of these. Answered by `BlobPresence`, one
    /// flag per id, in order.
    HasBlobs {
        ids: Vec<ChunkId>,
        verify: bool,
    },
    BlobPresence {
        present: Vec<bool>,
    },
    /// A put in flight: which of these blobs does the responder hold? It
    /// restarts the garbage collector's grace period of each one it holds,
    /// as a put of it would. Answered by `BlobPresence`.
    KeepBlobs {
        ids: Vec<ChunkId>,
    },

    // Access keys: client requests of an admin key...
    /// Create a key; answered by `KeyCreated`, the only time its secret is
    /// ever shown.
    KeyCreate {
        name: String,
        permission: Permission,
    },
    KeyCreated {
        key: KeyInfo,
        secret: String,
    },
    /// Every key not removed; answered by `KeyListing`.
    KeyList,
    KeyListing {
        keys: Vec<KeyInfo>,
    },
    /// Remove a key: every node refuses it from then on. Answered by
    /// `KeyChanged`.
    KeyRemove {
        id: AccessKeyId,
    },
    /// Change a key's permission (its secret stays). Answered by
    /// `KeyChanged`.
    KeySetPermission {
        id: AccessKeyId,
        permission: Permission,
    },
    KeyChanged {
        key: KeyInfo,
    },
    // ...and between nodes.
    /// Merge these key records (last writer wins per key), durably;
    /// answered by `KeysApplied`.
    ApplyKeys {
        keys: Vec<KeyRecord>,
    },
    KeysApplied,
    /// Anti-entropy of keys: the digest of the sender's key records.
    /// Answered by `KeyRecords`: `None` when the responder's digest is the
    /// same, else all its records.
    FetchKeys {
        digest: [u8; 32],
    },
    KeyRecords {
        keys: Option<Vec<KeyRecord>>,
    },
    /// Delete one version of a name for good, on every node (S3's
    /// DeleteObject with a version id). Answered by `Forgotten`.
    Forget {
        name: String,
        version: VersionSelector,
    },
    /// The version a `Forget` deleted.
    Forgotten {
        record: VersionRecord,
    },
    /// The current version of `name` and its manifest: the base a chunked
    /// put may reuse chunks of. Answered by `PutBase`.
    PutBaseOf {
        name: String,
    },
    /// `record` is `None` (and `manifest` empty) when `name` has no
    /// current version with content: a new name, or one removed.
    PutBase {
        record: Option<VersionRecord>,
        #[serde(with = "serde_bytes")]
        manifest: Vec<u8>,
    },
    /// A put whose client cut the file into chunks itself. Then, in file
    /// order, `PutChunk` for each chunk it sends and `PutReuse` for runs of
    /// chunks of version `base` of the same name, then `PutFinish`.
    /// Answered by `PutDone`.
    PutChunkedStart {
        name: String,
        base: Option<VersionId>,
    },
    /// One chunk's bytes (at most `CHUNK_MAX_BYTES`): the node hashes it.
    PutChunk {
        #[cfg_attr(feature = "arbitrary", arbitrary(with = arbitrary_bytes))]
        bytes: Bytes,
    },
    /// Chunks of the base, by id, in file order.
    PutReuse {
        ids: Vec<ChunkId>,
    },
}

impl Message {
    /// The variant's name, for logs and error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::PutStart { .. } => "PutStart",
            Message::PutData { .. } => "PutData",
            Message::PutFinish => "PutFinish",
            Message::Get { .. } => "Get",
            Message::Remove { .. } => "Remove",
            Message::List => "List",
            Message::Versions { .. } => "Versions",
            Message::Status => "Status",
            Message::PutDone { .. } => "PutDone",
            Message::GetStart { .. } => "GetStart",
            Message::ChunkData { .. } => "ChunkData",
            Message::GetEnd => "GetEnd",
            Message::Removed { .. } => "Removed",
            Message::Listing { .. } => "Listing",
            Message::History { .. } => "History",
            Message::StatusReply(_) => "StatusReply",
            Message::Error { .. } => "Error",
            Message::PeerHello { .. } => "PeerHello",
            Message::Swim { .. } => "Swim",
            Message::Ping => "Ping",
            Message::Pong => "Pong",
            Message::Prune { .. } => "Prune",
            Message::Restore { .. } => "Restore",
            Message::Pruned { .. } => "Pruned",
            Message::StoreBlob { .. } => "StoreBlob",
            Message::BlobStored => "BlobStored",
            Message::FetchBlob { .. } => "FetchBlob",
            Message::BlobData { .. } => "BlobData",
            Message::ApplyRecords { .. } => "ApplyRecords",
            Message::RecordsApplied { .. } => "RecordsApplied",
            Message::SyncDigests { .. } => "SyncDigests",
            Message::SyncKeys { .. } => "SyncKeys",
            Message::FetchRecords { .. } => "FetchRecords",
            Message::Records { .. } => "Records",
            Message::CurrentOf { .. } => "CurrentOf",
            Message::Current { .. } => "Current",
            Message::HasBlobs { .. } => "HasBlobs",
            Message::BlobPresence { .. } => "BlobPresence",
            Message::KeepBlobs { .. } => "KeepBlobs",
            Message::KeyCreate { .. } => "KeyCreate",
            Message::KeyCreated { .. } => "KeyCreated",
            Message::KeyList => "KeyList",
            Message::KeyListing { .. } => "KeyListing",
            Message::KeyRemove { .. } => "KeyRemove",
            Message::KeySetPermission { .. } => "KeySetPermission",
            Message::KeyChanged { .. } => "KeyChanged",
            Message::ApplyKeys { .. } => "ApplyKeys",
            Message::KeysApplied => "KeysApplied",
            Message::FetchKeys { .. } => "FetchKeys",
            Message::KeyRecords { .. } => "KeyRecords",
            Message::Forget { .. } => "Forget",
            Message::Forgotten { .. } => "Forgotten",
            Message::PutBaseOf { .. } => "PutBaseOf",
            Message::PutBase { .. } => "PutBase",
            Message::PutChunkedStart { .. } => "PutChunkedStart",
            Message::PutChunk { .. } => "PutChunk",
            Message::PutReuse { .. } => "PutReuse",
        }
    }

    /// Whether this message answers a request (and so is matched to a
    /// pending request by id) rather than asking something.
    pub fn is_reply(&self) -> bool {
        matches!(
            self,
            Message::PutDone { .. }
                | Message::GetStart { .. }
                | Message::ChunkData { .. }
                | Message::GetEnd
                | Message::Removed { .. }
                | Message::Listing { .. }
                | Message::History { .. }
                | Message::StatusReply(_)
                | Message::Pruned { .. }
                | Message::Error { .. }
                | Message::Pong
                | Message::BlobStored
                | Message::BlobData { .. }
                | Message::RecordsApplied { .. }
                | Message::SyncKeys { .. }
                | Message::Records { .. }
                | Message::Current { .. }
                | Message::BlobPresence { .. }
                | Message::KeyCreated { .. }
                | Message::KeyListing { .. }
                | Message::KeyChanged { .. }
                | Message::KeysApplied
                | Message::KeyRecords { .. }
                | Message::Forgotten { .. }
                | Message::PutBase { .. }
        )
    }
}

#[cfg(feature = "arbitrary")]
fn arbitrary_bytes(u: &mut arbitrary::Unstructured<'_>) -> arbitrary::Result<Bytes> {
    let bytes: Vec<u8> = arbitrary::Arbitrary::arbitrary(u)?;
    Ok(Bytes::from(bytes))
}
