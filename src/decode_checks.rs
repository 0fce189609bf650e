//! The properties the decoders promise on hostile input, as functions that
//! panic when a property fails. The fuzz targets in `fuzz/` call them on
//! generated input; `tests/fuzz_corpus.rs` calls them on the committed seed
//! corpus and on every crash input the fuzzer ever found, so a fixed crash
//! stays fixed under `cargo test`.

use bytes::BytesMut;

use crate::cas::Manifest;
use crate::limits::FRAME_BYTES_MAX;
use crate::wire::frame::FRAME_HEADER_BYTES;
use crate::wire::{self, Envelope, FrameDecoder};

/// Feed `data` to a frame decoder in pieces whose sizes come from the data
/// itself. Frames come out in order, none above the cap, and the bytes they
/// account for are exactly a prefix of the input.
pub fn frame_decoder(data: &[u8]) {
    let Some((&step, stream)) = data.split_first() else {
        return;
    };
    let step = usize::from(step).max(1);
    let mut decoder = FrameDecoder;
    let mut buffer = BytesMut::new();
    let mut consumed = 0usize;
    for piece in stream.chunks(step) {
        buffer.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buffer) {
                Ok(Some(frame)) => {
                    assert!(frame.len() <= FRAME_BYTES_MAX);
                    let start = consumed + FRAME_HEADER_BYTES;
                    assert_eq!(&frame[..], &stream[start..start + frame.len()]);
                    consumed = start + frame.len();
                }
                Ok(None) => break,
                // An oversize prefix ends the connection; nothing more to read.
                Err(_) => return,
            }
        }
        assert!(
            buffer.capacity() <= 2 * (FRAME_HEADER_BYTES + FRAME_BYTES_MAX) + step,
            "buffer grew past what one capped frame needs"
        );
    }
}

/// Decode raw bytes as a message. Whatever decodes re-encodes to the very
/// same bytes: the protocol has one spelling per message.
pub fn message_decode(data: &[u8]) {
    if let Ok(envelope) = wire::decode(data) {
        assert_eq!(wire::encode(&envelope), data, "{envelope:?}");
    }
}

/// Any message encodes, and decodes back to itself.
pub fn envelope_round_trip(envelope: &Envelope) {
    let bytes = wire::encode(envelope);
    assert_eq!(wire::decode(&bytes).as_ref(), Ok(envelope));
}

/// Decode raw bytes as a manifest. What decodes is consistent and
/// re-encodes to the same bytes (so it has exactly one content id).
pub fn manifest_decode(data: &[u8]) {
    if let Ok(manifest) = Manifest::decode(data) {
        assert_eq!(manifest.encode(), data);
        let total: u64 = manifest.chunks.iter().map(|c| u64::from(c.len)).sum();
        assert_eq!(total, manifest.size);
    }
}

/// Decode raw bytes as each thing the access-key layer reads from strangers
/// or disks: a handshake's party claim and verdict, a stored key record,
/// a credentials file. What decodes re-encodes to the same bytes (the
/// postcard ones), and nothing panics.
pub fn credentials_decode(data: &[u8]) {
    use crate::keys::credentials::Credentials;
    use crate::meta::KeyRecord;
    use crate::secure::{Party, Verdict, decode_payload};

    if let Ok(party) = decode_payload::<Party>(data) {
        assert_eq!(postcard::to_stdvec(&party).unwrap(), data, "{party:?}");
    }
    if let Ok(verdict) = decode_payload::<Verdict>(data) {
        assert_eq!(postcard::to_stdvec(&verdict).unwrap(), data, "{verdict:?}");
    }
    if let Ok(record) = KeyRecord::decode(data) {
        assert_eq!(record.encode(), data, "{record:?}");
        assert!(record.validate().is_ok());
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(credentials) = Credentials::parse(text)
    {
        assert_eq!(
            Credentials::parse(&credentials.to_file_text()).unwrap(),
            credentials
        );
    }
}
