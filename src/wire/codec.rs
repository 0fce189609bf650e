use super::Envelope;
use super::frame::{FRAME_HEADER_BYTES, encode_frame_header};

/// First byte of every frame payload. A peer speaking another version is
/// refused, never misread.
/// Version 2 added replication (the peer storage requests, `Prune`,
/// `Restore`, and `quorum` on `Get`). Version 3: `SyncDigests` carries the
/// key a pass continues after, and `RecordsApplied` lists the records kept
/// out by a prune floor. Version 4: `KeepBlobs`, `HasBlobs.verify`.
/// Version 5: access keys (the `Key*` requests, `ApplyKeys`, `FetchKeys`,
/// the key digest in `SyncDigests`/`SyncKeys`, error codes `Unauthorized`
/// and `Forbidden`). Version 6: records carry `etag` and `null_version`
/// (S3). Version 7: `StatusReport` says readiness, disk space, uptime,
/// version and repair copies, and peers answer `Status` too; chunked puts
/// (`PutBaseOf`, `PutChunkedStart`, `PutChunk`, `PutReuse`). Version 8:
/// `StoreBlob` and `BlobData` carry blobs sealed, as stored, not plaintext.
pub const PROTOCOL_VERSION: u8 = 8;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("empty frame")]
    Empty,
    #[error("peer speaks protocol version {0}; this build speaks {PROTOCOL_VERSION}")]
    Version(u8),
    #[error("undecodable message: {0}")]
    Undecodable(String),
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
    #[error("message is not in canonical form (overlong integer encoding)")]
    NonCanonical,
}

/// A frame's payload: the version byte, then the postcard message.
pub fn encode(envelope: &Envelope) -> Vec<u8> {
    encode_after(envelope, 0)
}

/// A whole frame: the length prefix, then [`encode`]'s payload, in one
/// allocation of exactly its size, so a message carrying a chunk is copied
/// once on its way to the cipher.
pub fn encode_frame(envelope: &Envelope) -> Vec<u8> {
    let mut frame = encode_after(envelope, FRAME_HEADER_BYTES);
    let header = encode_frame_header(frame.len() - FRAME_HEADER_BYTES);
    frame[..FRAME_HEADER_BYTES].copy_from_slice(&header);
    frame
}

/// The payload after `reserved` zero bytes, sized before it is written.
fn encode_after(envelope: &Envelope, reserved: usize) -> Vec<u8> {
    let size = postcard::serialize_with_flavor::<_, postcard::ser_flavors::Size, usize>(
        envelope,
        Default::default(),
    )
    .expect("sizing a message cannot fail");
    let mut out = Vec::with_capacity(reserved + 1 + size);
    out.resize(reserved, 0);
    out.push(PROTOCOL_VERSION);
    postcard::to_io(envelope, &mut out).expect("writing to a Vec cannot fail");
    out
}

pub fn decode(payload: &[u8]) -> Result<Envelope, WireError> {
    let (&version, body) = payload.split_first().ok_or(WireError::Empty)?;
    if version != PROTOCOL_VERSION {
        return Err(WireError::Version(version));
    }
    let (envelope, rest) =
        postcard::take_from_bytes(body).map_err(|e| WireError::Undecodable(e.to_string()))?;
    if !rest.is_empty() {
        return Err(WireError::Trailing(rest.len()));
    }
    // postcard accepts overlong varints, and those are the only non-canonical
    // forms it accepts (bools, option tags and UTF-8 are strict). Canonical
    // integers are minimal, so "same length as the canonical encoding" means
    // "is the canonical encoding": every message has exactly one wire form,
    // which the fuzz target `message` checks by re-encoding.
    let canonical =
        postcard::serialize_with_flavor(&envelope, postcard::ser_flavors::Size::default())
            .map_err(|e| WireError::Undecodable(e.to_string()))?;
    if canonical != body.len() {
        return Err(WireError::NonCanonical);
    }
    Ok(envelope)
}

/// Decode `bytes` as one postcard value with nothing after it, in its one
/// canonical spelling (no overlong varint: see [`decode`]). For every
/// postcard layout read from strangers or disks: handshake payloads,
/// stored records.
pub fn decode_canonical<T: serde::de::DeserializeOwned + serde::Serialize>(
    bytes: &[u8],
) -> Result<T, String> {
    let (value, rest): (T, _) = postcard::take_from_bytes(bytes).map_err(|e| e.to_string())?;
    if !rest.is_empty() {
        return Err(format!("{} bytes after the value", rest.len()));
    }
    let canonical = postcard::serialize_with_flavor(&value, postcard::ser_flavors::Size::default())
        .map_err(|e| e.to_string())?;
    if canonical != bytes.len() {
        return Err("not in its canonical encoding (an overlong integer)".into());
    }
    Ok(value)
}
