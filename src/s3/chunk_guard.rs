//! A bound s3s leaves out: it buffers each chunk of an `aws-chunked` body
//! whole (to check the chunk's signature before passing on a byte), at the
//! size the chunk's header declares, up to 4 GiB. This guard reads the
//! chunk sizes as the body passes by, untouched, and ends the body with an
//! error once a header declares more than [`AWS_CHUNK_BYTES_MAX`]. Parsing
//! and checking the framing stay s3s's: the guard stops looking at any
//! framing it cannot read (s3s then refuses it). Written by hand: no crate
//! bounds this.

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
#[error("an aws-chunked chunk of {0} bytes is larger than the {AWS_CHUNK_BYTES_MAX} accepted")]
pub struct ChunkTooLarge(u64);

enum State {
    /// In a chunk header line: the bytes of it so far.
    Header(Vec<u8>),
    /// In a chunk's data, with this many bytes (and its CRLF) to go.
    Data(u64),
    /// Past the last chunk (trailers follow), or framing this guard does
    /// not read: nothing more to check.
    Done,
}

/// `inner`, ended by [`ChunkTooLarge`] at the first oversized chunk.
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
    fn scan(&mut self, mut data: &[u8]) -> Result<(), ChunkTooLarge> {
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
                            Some(0) | None => State::Done,
                            Some(size) if size > AWS_CHUNK_BYTES_MAX => {
                                return Err(ChunkTooLarge(size));
                            }
                            // The data, then its CRLF.
                            Some(size) => State::Data(size + 2),
                        };
                    }
                    None => {
                        line.extend_from_slice(data);
                        data = &[];
                        if line.len() > HEADER_BYTES_MAX {
                            self.state = State::Done;
                        }
                    }
                },
            }
        }
        Ok(())
    }
}

/// The size a chunk header line declares: hex digits up to `;` or CR.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let end = line.iter().position(|&b| b == b';' || b == b'\r')?;
    let digits = std::str::from_utf8(&line[..end]).ok()?;
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
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

    fn scan_in_pieces(body: &[u8], piece: usize) -> Result<(), ChunkTooLarge> {
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
    }

    #[test]
    fn framing_it_cannot_read_is_left_to_s3s() {
        assert!(scan_in_pieces(b"zz;chunk-signature=ab\r\nffffffffff\r\n", 4).is_ok());
        assert!(scan_in_pieces(&[b'1'; 5000], 100).is_ok());
    }
}
