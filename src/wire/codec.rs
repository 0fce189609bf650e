use super::Envelope;

/// First byte of every frame payload. A peer speaking another version is
/// refused, never misread.
/// Version 2 added replication (the peer storage requests, `Prune`,
/// `Restore`, and `quorum` on `Get`).
pub const PROTOCOL_VERSION: u8 = 2;

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

pub fn encode(envelope: &Envelope) -> Vec<u8> {
    let mut out = vec![PROTOCOL_VERSION];
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
