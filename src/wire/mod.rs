//! The dfs wire protocol: how a client and a node, and two nodes, talk.
//!
//! # Participants
//! A *node* (`dfs-node serve`) listens on TCP. A *client* (the CLI verbs, or
//! any program using [`client`](crate::client)) connects to one node and
//! makes requests, one at a time. Nodes talk to each other over the same
//! layers on *peer connections* (below).
//!
//! # Goals
//! - Confidentiality and authenticity against anyone without the cluster key
//!   (provided by [`secure`](crate::secure), below this module).
//! - Bounded memory: no length read off the wire is allocated before it is
//!   checked against [`limits`](crate::limits).
//! - A stable, documented encoding: postcard, whose format is specified, with
//!   a version byte in front so that a future format is recognised rather
//!   than misread.
//!
//! # Non-goals
//! - Compatibility across protocol versions: a peer with another version is
//!   refused with a clear error, not translated.
//!
//! # Layers
//! 1. **Noise records** ([`secure`](crate::secure)): after the
//!    `Noise_XXpsk3_25519_ChaChaPoly_SHA256` handshake, the stream is a
//!    sequence of `u16 big-endian length ‖ Noise transport message`; each
//!    message carries at most 65 519 bytes of plaintext.
//! 2. **Frames** ([`frame`]): the decrypted byte stream is a sequence of
//!    `u32 big-endian length ‖ payload`, length at most
//!    [`FRAME_BYTES_MAX`](crate::limits::FRAME_BYTES_MAX). A frame may span
//!    several records.
//! 3. **Envelopes** (`codec`): a payload is `PROTOCOL_VERSION (1 byte) ‖
//!    postcard(Envelope)`, and an [`Envelope`] is a request id plus a
//!    [`Message`]. Replies carry the id of their request. Byte fields are
//!    postcard byte strings (varint length ‖ bytes), never element-by-element
//!    sequences. Trailing bytes after the envelope and overlong varints are
//!    errors, so each message has exactly one encoding (fuzzed: `fuzz/`).
//!
//! # Requests
//! | request | replies |
//! |---|---|
//! | `PutStart{name}`, then `PutData{bytes}`..., then `PutFinish` | `PutDone{record}` |
//! | `PutBaseOf{name}` | `PutBase{record, manifest}`: the current version a chunked put may reuse chunks of (`None` if there is none) |
//! | `PutChunkedStart{name, base}`, then in file order `PutChunk{bytes}` (a chunk the client cut) or `PutReuse{ids}` (chunks of version `base`)..., then `PutFinish` | `PutDone{record}` |
//! | `Get{target, version, quorum}` | `GetStart{record, content, manifest}`, one `ChunkData{bytes}` per manifest chunk in order, `GetEnd` |
//! | `Remove{name}` | `Removed{record}` (a tombstone version) |
//! | `List` | `Listing{records, truncated}` |
//! | `Versions{name}` | `History{records, truncated}`, newest first |
//! | `Status` | `StatusReply(StatusReport)` |
//! | `Prune{name, keep}` | `Pruned{floor, removed}` |
//! | `Restore{name, version}` | `PutDone{record}` (a new version with the old content) |
//! | `KeyCreate{name, permission}` | `KeyCreated{key, secret}` (admin keys only; the only time a secret is shown) |
//! | `KeyList` | `KeyListing{keys}` (admin) |
//! | `KeyRemove{id}`, `KeySetPermission{id, permission}` | `KeyChanged{key}` (admin) |
//!
//! A client connection is authenticated by an access key (see
//! [`secure`](crate::secure)); every request is checked against the key's
//! current permission: `Error{Forbidden}` when it may not, and
//! `Error{Unauthorized}` (then the connection closes) once the key is
//! removed.
//!
//! Any node serves any request: it coordinates the replicated work (chunks
//! to their owners, records to every member, see
//! [`cluster`](crate::cluster)). With `quorum`, a get by name first asks
//! the other members for their current version of the name and serves the
//! greatest a majority reports.
//!
//! Any request may instead get `Error{code, message}`, which ends it; so may
//! a get stream part way through (then the client discards what it got).
//! The client verifies the manifest against the content id and every chunk
//! against its id before it writes a byte, so a faulty node cannot make a
//! client accept wrong data.
//!
//! # Peer connections
//! A connection authenticated with the cluster key (a node) must send
//! `PeerHello{identity}` first; the acceptor answers with its own
//! `PeerHello`. A client connection that sends one is closed. The identity's
//! node id must equal the one the Noise handshake authenticated (else the
//! connection is refused and the refusal logged). Between two nodes one
//! connection is used; if both dial at once, both keep the one dialed by
//! the smaller node id. Then, in both directions and interleaved:
//!
//! | message | meaning |
//! |---|---|
//! | `Swim{bytes}` (request id 0) | a SWIM datagram in foca's postcard encoding, at most [`SWIM_PACKET_BYTES_MAX`](crate::limits::SWIM_PACKET_BYTES_MAX); its header's sender must be the connection's node |
//! | `Ping` -> `Pong` | keepalive, every [`PEER_KEEPALIVE_INTERVAL`](crate::limits::PEER_KEEPALIVE_INTERVAL); no `Pong` within the request timeout ends the connection |
//! | `StoreBlob{id, sealed}` -> `BlobStored` | store a chunk or manifest durably, sent sealed as at rest; the receiver checks its tag for `id` and stores the bytes as they are |
//! | `FetchBlob{id}` -> `BlobData{sealed}` | read a blob, sent sealed; its tag is checked by the sender before it sends and by the receiver as it opens it |
//! | `ApplyRecords{records, floors}` -> `RecordsApplied{below_floor}` | merge version records and prune floors into the index, durably; lists the records a floor kept out |
//! | `SyncDigests{digests, after, keys_digest}` -> `SyncKeys{buckets, keys, floors, truncated, keys_differ}` | anti-entropy: 256 bucket digests in, the responder's keys (after `after`) and floors of the differing buckets out; and whether its access key records differ |
//! | `FetchRecords{keys}` -> `Records{records}` | anti-entropy: the records for these keys |
//! | `CurrentOf{name}` -> `Current{record}` | a quorum read: the responder's current record of a name |
//! | `HasBlobs{ids, verify}` -> `BlobPresence{present}` | repair: which of these blobs the responder holds durably (and, with `verify`, reads back verified) |
//! | `KeepBlobs{ids}` -> `BlobPresence{present}` | a long put: which it holds, each one's GC grace restarted |
//! | `ApplyKeys{keys}` -> `KeysApplied` | merge access key records (last writer wins per key), durably |
//! | `FetchKeys{digest}` -> `KeyRecords{keys}` | anti-entropy of keys (when `SyncKeys` said they differ): all the responder's key records, or `None` when its digest is the same |
//!
//! A node serves at most
//! [`PEER_HANDLERS_PER_CONNECTION`](crate::limits::PEER_HANDLERS_PER_CONNECTION)
//! storage requests of one peer at a time; further requests wait in TCP.
//!
//! Request ids are chosen by the sender of a request; a message that is a
//! reply (`Message::is_reply`) is matched against the receiver's own pending
//! requests, so the two directions never collide. A request a node does not
//! serve on a peer connection is answered `Error{InvalidRequest}`.
//!
//! A round trip in code (an envelope survives encode and decode unchanged):
//! ```
//! use dfs::wire::{Envelope, Message, decode, encode};
//! let request = Envelope { request_id: 7, message: Message::Versions { name: "notes.txt".into() } };
//! let bytes = encode(&request);
//! assert_eq!(bytes[0], dfs::wire::PROTOCOL_VERSION);
//! assert_eq!(decode(&bytes).unwrap(), request);
//! ```

mod codec;
pub mod frame;
mod message;

pub use codec::{PROTOCOL_VERSION, WireError, decode, decode_canonical, encode, encode_frame};
pub use frame::{FrameDecoder, FrameError, encode_frame_header};
pub use message::{
    DiskSpace, Envelope, ErrorCode, GetTarget, KeyInfo, MemberState, MemberStatus, Message,
    StatusReport,
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cas::{ChunkId, ContentId};
    use crate::keys::NodeId;
    use crate::meta::{Floor, VersionId, VersionRecord, VersionSelector};
    use crate::peer::PeerIdentity;

    fn record(content: Option<ContentId>) -> VersionRecord {
        VersionRecord {
            name: "a.txt".into(),
            vid: VersionId {
                wall_ms: 1_790_000_000_000,
                counter: 2,
                node: NodeId([0x11; 32]),
            },
            forgotten: false,
            content,
            size: 5,
            by: Some(key_id()),
            etag: None,
            null_version: false,
        }
    }

    /// One of each message kind. A change to the wire format shows up as a
    /// snapshot diff: deliberate changes bump PROTOCOL_VERSION.
    fn every_kind() -> Vec<(&'static str, Message)> {
        let content = ContentId([0x22; 32]);
        vec![
            (
                "put_start",
                Message::PutStart {
                    name: "a.txt".into(),
                },
            ),
            (
                "put_data",
                Message::PutData {
                    bytes: b"hello".to_vec(),
                },
            ),
            ("put_finish", Message::PutFinish),
            (
                "get_by_name",
                Message::Get {
                    target: GetTarget::Name("a.txt".into()),
                    version: Some(VersionSelector {
                        wall_ms: 1,
                        counter: 2,
                        node_prefix: "ab".into(),
                    }),
                    quorum: true,
                },
            ),
            (
                "get_by_content",
                Message::Get {
                    target: GetTarget::Content(content),
                    version: None,
                    quorum: false,
                },
            ),
            (
                "remove",
                Message::Remove {
                    name: "a.txt".into(),
                },
            ),
            ("list", Message::List),
            (
                "versions",
                Message::Versions {
                    name: "a.txt".into(),
                },
            ),
            ("status", Message::Status),
            (
                "put_done",
                Message::PutDone {
                    record: record(Some(content)),
                },
            ),
            (
                "get_start",
                Message::GetStart {
                    record: Some(record(Some(content))),
                    content,
                    manifest: vec![0, 0],
                },
            ),
            (
                "chunk_data",
                Message::ChunkData {
                    bytes: b"hello".to_vec(),
                },
            ),
            ("get_end", Message::GetEnd),
            (
                "removed",
                Message::Removed {
                    record: record(None),
                },
            ),
            (
                "listing",
                Message::Listing {
                    records: vec![record(Some(content))],
                    truncated: false,
                },
            ),
            (
                "history",
                Message::History {
                    records: vec![record(None), record(Some(content))],
                    truncated: true,
                },
            ),
            (
                "status_reply",
                Message::StatusReply(StatusReport {
                    node_id: NodeId([0x33; 32]),
                    listen: "127.0.0.1:7400".into(),
                    members: vec![MemberStatus {
                        node_id: NodeId([0x33; 32]),
                        addr: "127.0.0.1:7400".into(),
                        state: MemberState::Alive,
                    }],
                    chunks: 3,
                    bytes_stored: 4096,
                    quarantined: 0,
                    under_replicated: 1,
                    under_replicated_bytes: 1024,
                    scrubbed: 12,
                    scrub_passes: 1,
                    repair_copies_made: 0,
                    not_ready: Some("still reaching the 3 members known before this start".into()),
                    disk: Some(DiskSpace {
                        total_bytes: 1 << 40,
                        free_bytes: 1 << 39,
                    }),
                    disk_free_min_percent: 5,
                    uptime_s: 3600,
                    version: "0.1.0".into(),
                }),
            ),
            (
                "error",
                Message::Error {
                    code: ErrorCode::NotFound,
                    message: "no file named a.txt".into(),
                },
            ),
            (
                "peer_hello",
                Message::PeerHello {
                    identity: PeerIdentity {
                        node: NodeId([0x33; 32]),
                        addr: "127.0.0.1:7400".into(),
                        bump: 1_790_000_000_000,
                    },
                },
            ),
            (
                "swim",
                Message::Swim {
                    bytes: vec![1, 2, 3],
                },
            ),
            ("ping", Message::Ping),
            ("pong", Message::Pong),
            (
                "prune",
                Message::Prune {
                    name: "a.txt".into(),
                    keep: 2,
                },
            ),
            (
                "forget",
                Message::Forget {
                    name: "a.txt".into(),
                    version: VersionSelector {
                        wall_ms: 1,
                        counter: 2,
                        node_prefix: "ab".into(),
                    },
                },
            ),
            (
                "forgotten",
                Message::Forgotten {
                    record: record(None),
                },
            ),
            (
                "put_base_of",
                Message::PutBaseOf {
                    name: "a.txt".into(),
                },
            ),
            (
                "put_base",
                Message::PutBase {
                    record: Some(record(Some(content))),
                    manifest: vec![0, 0],
                },
            ),
            (
                "put_chunked_start",
                Message::PutChunkedStart {
                    name: "a.txt".into(),
                    base: Some(record(Some(content)).vid),
                },
            ),
            (
                "put_chunk",
                Message::PutChunk {
                    bytes: bytes::Bytes::from_static(b"hello"),
                },
            ),
            (
                "put_reuse",
                Message::PutReuse {
                    ids: vec![ChunkId([0x44; 32])],
                },
            ),
            (
                "restore",
                Message::Restore {
                    name: "a.txt".into(),
                    version: VersionSelector {
                        wall_ms: 1,
                        counter: 2,
                        node_prefix: "ab".into(),
                    },
                },
            ),
            (
                "pruned",
                Message::Pruned {
                    floor: Some(record(None).vid),
                    removed: 3,
                },
            ),
            (
                "store_blob",
                Message::StoreBlob {
                    id: ChunkId([0x44; 32]),
                    sealed: bytes::Bytes::from_static(b"hello"),
                },
            ),
            ("blob_stored", Message::BlobStored),
            (
                "fetch_blob",
                Message::FetchBlob {
                    id: ChunkId([0x44; 32]),
                },
            ),
            (
                "blob_data",
                Message::BlobData {
                    sealed: bytes::Bytes::from_static(b"hello"),
                },
            ),
            (
                "apply_records",
                Message::ApplyRecords {
                    records: vec![record(Some(content))],
                    floors: vec![Floor {
                        name: "a.txt".into(),
                        floor: record(None).vid,
                    }],
                },
            ),
            (
                "records_applied",
                Message::RecordsApplied {
                    below_floor: vec![record(None).key()],
                },
            ),
            (
                "sync_digests",
                Message::SyncDigests {
                    digests: vec![0, 1, u128::MAX],
                    after: Some(record(None).key()),
                    keys_digest: [0x5A; 32],
                },
            ),
            (
                "sync_keys",
                Message::SyncKeys {
                    buckets: vec![0, 255],
                    keys: vec![record(None).key()],
                    floors: Vec::new(),
                    truncated: false,
                    keys_differ: true,
                },
            ),
            (
                "fetch_records",
                Message::FetchRecords {
                    keys: vec![record(None).key()],
                },
            ),
            (
                "records",
                Message::Records {
                    records: vec![record(None)],
                },
            ),
            (
                "current_of",
                Message::CurrentOf {
                    name: "a.txt".into(),
                },
            ),
            (
                "current",
                Message::Current {
                    record: Some(record(Some(content))),
                },
            ),
            (
                "has_blobs",
                Message::HasBlobs {
                    ids: vec![ChunkId([0x44; 32])],
                    verify: true,
                },
            ),
            (
                "blob_presence",
                Message::BlobPresence {
                    present: vec![true, false],
                },
            ),
            (
                "keep_blobs",
                Message::KeepBlobs {
                    ids: vec![ChunkId([0x45; 32])],
                },
            ),
            (
                "key_create",
                Message::KeyCreate {
                    name: "ci".into(),
                    permission: read_only_team(),
                },
            ),
            (
                "key_created",
                Message::KeyCreated {
                    key: key_info(),
                    secret: "s".repeat(40),
                },
            ),
            ("key_list", Message::KeyList),
            (
                "key_listing",
                Message::KeyListing {
                    keys: vec![key_info()],
                },
            ),
            ("key_remove", Message::KeyRemove { id: key_id() }),
            (
                "key_set_permission",
                Message::KeySetPermission {
                    id: key_id(),
                    permission: read_only_team(),
                },
            ),
            ("key_changed", Message::KeyChanged { key: key_info() }),
            (
                "apply_keys",
                Message::ApplyKeys {
                    keys: vec![key_record()],
                },
            ),
            ("keys_applied", Message::KeysApplied),
            ("fetch_keys", Message::FetchKeys { digest: [0x6B; 32] }),
            (
                "key_records",
                Message::KeyRecords {
                    keys: Some(vec![key_record()]),
                },
            ),
            (
                "error_forbidden",
                Message::Error {
                    code: ErrorCode::Forbidden,
                    message: "no".into(),
                },
            ),
            (
                "error_unauthorized",
                Message::Error {
                    code: ErrorCode::Unauthorized,
                    message: "removed".into(),
                },
            ),
        ]
    }

    fn key_id() -> crate::keys::AccessKeyId {
        crate::keys::AccessKeyId::parse("DFSABCDEFGHIJKLMNOPQ").unwrap()
    }

    fn read_only_team() -> crate::keys::Permission {
        crate::keys::Permission {
            access: crate::keys::Access::ReadOnly,
            prefixes: vec!["team/".into()],
        }
    }

    fn key_info() -> KeyInfo {
        KeyInfo {
            id: key_id(),
            name: "ci".into(),
            permission: read_only_team(),
            created_ms: 1_790_000_000_000,
            last_used_ms: Some(1_790_000_001_000),
        }
    }

    fn key_record() -> crate::meta::KeyRecord {
        crate::meta::KeyRecord {
            id: key_id(),
            name: "ci".into(),
            permission: read_only_team(),
            sealed_secret: vec![0x77; 68],
            created_ms: 1_790_000_000_000,
            version: crate::meta::VersionId {
                wall_ms: 1_790_000_000_000,
                counter: 1,
                node: NodeId([0x12; 32]),
            },
            removed: false,
        }
    }

    #[test]
    fn wire_bytes_of_every_message_kind() {
        for (kind, message) in every_kind() {
            let envelope = Envelope {
                request_id: 1,
                message: message.clone(),
            };
            let bytes = encode(&envelope);
            // The framed form is the length prefix and the same bytes, and
            // the frame decoder cuts exactly those bytes back out.
            let frame = encode_frame(&envelope);
            assert_eq!(frame[..4], encode_frame_header(bytes.len()));
            let mut buffer = bytes::BytesMut::from(&frame[..]);
            let cut = FrameDecoder.decode(&mut buffer).unwrap().unwrap();
            assert_eq!(cut[..], bytes[..]);
            assert!(buffer.is_empty());
            assert_eq!(
                decode(&bytes).unwrap(),
                Envelope {
                    request_id: 1,
                    message
                }
            );
            insta::assert_snapshot!(kind, hex::encode(&bytes));
        }
    }

    #[test]
    fn hostile_payloads_are_refused_not_misread() {
        assert_eq!(decode(&[]), Err(WireError::Empty));
        assert_eq!(decode(&[9, 0]), Err(WireError::Version(9)));
        assert!(matches!(
            decode(&[PROTOCOL_VERSION, 1, 200]),
            Err(WireError::Undecodable(_))
        ));
        let mut trailing = encode(&Envelope {
            request_id: 1,
            message: Message::List,
        });
        trailing.push(0);
        assert_eq!(decode(&trailing), Err(WireError::Trailing(1)));
        // A byte string claiming 4 GiB inside a tiny frame.
        let mut huge = vec![PROTOCOL_VERSION, 1, 1];
        huge.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(matches!(decode(&huge), Err(WireError::Undecodable(_))));
        // request_id 1 written as an overlong varint (0x81 0x00): same value,
        // second spelling, refused.
        let canonical = encode(&Envelope {
            request_id: 1,
            message: Message::List,
        });
        let mut overlong = vec![PROTOCOL_VERSION, 0x81, 0x00];
        overlong.extend_from_slice(&canonical[2..]);
        assert_eq!(decode(&overlong), Err(WireError::NonCanonical));
    }
}
