//! A bound s3s leaves out: it buffers each chunk of an `aws-chunked` body
//! whole (to check the chunk's signature before passing on a byte), at the
//! size the chunk's header declares, up to 4 GiB. This guard reads the
//! chunk sizes as the body passes by, untouched, and ends the body with an
//! error once a header declares more than [`AWS_CHUNK_BYTES_MAX`], or
//! cannot be read. Checking the signatures stays s3s's; the size is read
//! as s3s reads it (the first hex digits before `;` or CR, at most 8).
//! Written by hand: no crate bounds this.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// Largest `aws-chunked` chunk accepted. SDKs send 64 KiB to 1 MiB.
pub const AWS_CHUNK_BYTES_MAX: u64 = 16 << 20;

/// Longest chunk header line (size, `;chunk-signature=`, 64 hex digits);
/// s3s's own bound.
const HEADER_BYTES_MAX: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ChunkRefused {
    #[error("an aws-chunked chunk of {0} bytes is larger than the {AWS_CHUNK_BYTES_MAX} accepted")]
    TooLarge(u64),
    #[error("an aws-chunked chunk header does not say its size")]
    Unreadable,
}

enum State {
    /// In a chunk header line: the bytes of it so far.
    Header(Vec<u8>),
    /// In a chunk's data, with this many bytes (and its CRLF) to go.
    Data(u64),
    /// Past the last chunk (trailers follow): nothing more to check.
    Done,
}

/// `inner`, ended by [`ChunkRefused`] at the first oversized or
/// unreadable chunk header.
pub struct ChunkGuard<B> {
    inner: B,
    state: State,
}

impl<B> ChunkGuard<B> {
    pub fn new(inner: B) -> Self {
        Self {
            inner,
            state: State::Header(Vec::new()),
        }
    }

    /// Follow the framing through `data`.
    fn scan(&mut self, mut data: &[u8]) -> Result<(), ChunkRefused> {
        while !data.is_empty() {
            match &mut self.state {
                State::Done => return Ok(()),
                State::Data(remaining) => {
                    let passed = (*remaining).min(data.len() as u64);
                    *remaining -= passed;
                    data = &data[passed as usize..];
                    if *remaining == 0 {
                        self.state = State::Header(Vec::new());
                    }
                }
                State::Header(line) => match data.iter().position(|&b| b == b'\n') {
                    Some(end) => {
                        line.extend_from_slice(&data[..=end]);
                        data = &data[end + 1..];
                        self.state = match chunk_size(line) {
                            None => return Err(ChunkRefused::Unreadable),
                            Some(0) => State::Done,
                            Some(size) if size > AWS_CHUNK_BYTES_MAX => {
                                return Err(ChunkRefused::TooLarge(size));
                            }
                            // The data, then its CRLF.
                            Some(size) => State::Data(size + 2),
                        };
                    }
                    None => {
                        line.extend_from_slice(data);
                        data = &[];
                        if line.len() > HEADER_BYTES_MAX {
                            return Err(ChunkRefused::Unreadable);
                        }
                    }
                },
            }
        }
        Ok(())
    }
}

/// The size a chunk header line declares, read as s3s reads it: the hex
/// digits that begin it (at most 8; what follows them up to `;` or CR is
/// ignored, as nom's `hex_u32` does).
fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits: Vec<u8> = line
        .iter()
        .take_while(|b| b.is_ascii_hexdigit())
        .take(8)
        .copied()
        .collect();
    if digits.is_empty() {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(&digits).ok()?, 16).ok()
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<B> Body for ChunkGuard<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(error)) => return Poll::Ready(Some(Err(error.into()))),
            None => return Poll::Ready(None),
        };
        if let Some(data) = frame.data_ref()
            && let Err(error) = this.scan(data)
        {
            return Poll::Ready(Some(Err(Box::new(error))));
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_in_pieces(body: &[u8], piece: usize) -> Result<(), ChunkRefused> {
        let mut guard = ChunkGuard::new(());
        body.chunks(piece).try_for_each(|part| guard.scan(part))
    }

    fn framed(sizes: &[usize]) -> Vec<u8> {
        let mut body = Vec::new();
        for &size in sizes {
            body.extend_from_slice(
                format!("{size:x};chunk-signature={}\r\n", "a".repeat(64)).as_bytes(),
            );
            body.extend(std::iter::repeat_n(b'x', size));
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"0;chunk-signature=0000\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n");
        body
    }

    #[test]
    fn chunks_up_to_the_bound_pass_in_any_pieces() {
        let body = framed(&[65536, 65536, 17]);
        for piece in [1, 7, 100, 65536, body.len()] {
            assert!(scan_in_pieces(&body, piece).is_ok(), "piece {piece}");
        }
    }

    #[test]
    fn a_chunk_declared_larger_than_the_bound_ends_the_body() {
        let mut body = b"3e8;chunk-signature=ab\r\n".to_vec();
        body.extend([b'x'; 1000]);
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(
            format!("{:x};chunk-signature=ab\r\n", AWS_CHUNK_BYTES_MAX + 1).as_bytes(),
        );
        for piece in [1, 13, body.len()] {
            assert!(scan_in_pieces(&body, piece).is_err(), "piece {piece}");
        }
        assert!(scan_in_pieces(b"ffffffff\r\n", 3).is_err());
        // Read as s3s reads them: trailing junk and extra digits ignored.
        assert!(scan_in_pieces(b"ffffffffx;chunk-signature=ab\r\n", 5).is_err());
        assert!(scan_in_pieces(b"ffffffff000000000;chunk-signature=ab\r\n", 5).is_err());
    }

    #[test]
    fn a_header_without_a_size_or_too_long_ends_the_body() {
        assert!(scan_in_pieces(b"zz;chunk-signature=ab\r\nffffffffff\r\n", 4).is_err());
        assert!(scan_in_pieces(&[b'1'; 5000], 100).is_err());
    }
}
