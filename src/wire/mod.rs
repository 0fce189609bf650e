//! The dfs wire protocol: how a client and a node (and, later, two nodes)
//! talk.
//!
//! # Participants
//! A *node* (`dfs-node serve`) listens on TCP. A *client* (the CLI verbs, or
//! any program using [`client`](crate::client)) connects to one node and
//! makes requests. Nodes will use the same protocol among themselves.
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
//! 3. **Envelopes** ([`codec`]): a payload is `PROTOCOL_VERSION (1 byte) ‖
//!    postcard(Envelope)`, and an [`Envelope`] is a request id plus a
//!    [`Message`]. Replies carry the id of their request. Byte fields are
//!    postcard byte strings (varint length ‖ bytes), never element-by-element
//!    sequences. Trailing bytes after the envelope are an error, so each
//!    message has exactly one encoding.
//!
//! # Requests
//! | request | replies |
//! |---|---|
//! | `PutStart{name}`, then `PutData{bytes}`..., then `PutFinish` | `PutDone{record}` |
//! | `Get{target, version}` | `GetStart{record, content, manifest}`, one `ChunkData{bytes}` per manifest chunk in order, `GetEnd` |
//! | `Remove{name}` | `Removed{record}` (a tombstone version) |
//! | `List` | `Listing{records, truncated}` |
//! | `Versions{name}` | `History{records, truncated}`, newest first |
//! | `Status` | `StatusReply(StatusReport)` |
//!
//! Any request may instead get `Error{code, message}`, which ends it; so may
//! a get stream part way through (then the client discards what it got).
//! The client verifies the manifest against the content id and every chunk
//! against its id before it writes a byte, so a faulty node cannot make a
//! client accept wrong data.
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

pub use codec::{PROTOCOL_VERSION, WireError, decode, encode};
pub use frame::{FrameDecoder, FrameError, encode_frame_header};
pub use message::{
    Envelope, ErrorCode, GetTarget, MemberState, MemberStatus, Message, StatusReport,
};
