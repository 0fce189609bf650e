//! Length-prefixed frames over a byte stream: `u32 big-endian length ‖ payload`.

use bytes::{Buf, Bytes, BytesMut};

use crate::limits::FRAME_BYTES_MAX;

/// Bytes of the length prefix.
pub const FRAME_HEADER_BYTES: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("peer announced a {0}-byte frame; the limit is {FRAME_BYTES_MAX}")]
    TooLarge(u64),
}

pub fn encode_frame_header(payload_len: usize) -> [u8; FRAME_HEADER_BYTES] {
    assert!(
        payload_len <= FRAME_BYTES_MAX,
        "tried to send a {payload_len}-byte frame"
    );
    (payload_len as u32).to_be_bytes()
}

/// Cuts frames out of a growing buffer. An incomplete frame is a state, not
/// an error: `decode` returns `Ok(None)` until the whole frame is there.
#[derive(Debug, Default)]
pub struct FrameDecoder;

impl FrameDecoder {
    /// The next whole frame's payload, if `buffer` holds one. The announced
    /// length is checked against the cap before any byte is reserved for it.
    pub fn decode(&mut self, buffer: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        if buffer.len() < FRAME_HEADER_BYTES {
            return Ok(None);
        }
        let len = u32::from_be_bytes(buffer[..FRAME_HEADER_BYTES].try_into().unwrap()) as usize;
        if len > FRAME_BYTES_MAX {
            return Err(FrameError::TooLarge(len as u64));
        }
        if buffer.len() < FRAME_HEADER_BYTES + len {
            // Reserve only up to the (checked) frame size.
            buffer.reserve(FRAME_HEADER_BYTES + len - buffer.len());
            return Ok(None);
        }
        buffer.advance(FRAME_HEADER_BYTES);
        Ok(Some(buffer.split_to(len).freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_frames_wait_and_oversize_is_refused_before_allocating() {
        let mut decoder = FrameDecoder;
        let mut buffer = BytesMut::new();
        buffer.extend_from_slice(&encode_frame_header(3));
        buffer.extend_from_slice(b"ab");
        assert_eq!(decoder.decode(&mut buffer), Ok(None));
        buffer.extend_from_slice(b"c");
        assert_eq!(
            decoder.decode(&mut buffer),
            Ok(Some(Bytes::from_static(b"abc")))
        );
        assert!(buffer.is_empty());

        let mut hostile = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
        assert_eq!(
            decoder.decode(&mut hostile),
            Err(FrameError::TooLarge(u32::MAX as u64))
        );
        assert!(hostile.capacity() < 1024, "allocated for a hostile length");
    }
}
