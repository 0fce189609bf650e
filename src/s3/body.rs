//! Bodies between HTTP and the node's operations, streamed both ways:
//! an upload is pulled piece by piece into the put pipeline, a download is
//! pushed chunk by chunk from the read pipeline, through a channel of two.
//! Uploads are checked against the checksums they were sent with.

use bytes::Bytes;
use dfs::node::ops::{Body, ObjectReader};
use futures::StreamExt;
use s3s::checksum::ChecksumHasher;
use s3s::dto::{Checksum, StreamingBlob};
use s3s::stream::ByteStream;
use s3s::{S3Error, S3Result, TrailingHeaders, s3_error};
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body (s3s has already removed any `aws-chunked` framing and
/// checked its signatures), with the `x-amz-checksum-*` it was sent with,
/// in a header or in the trailer. Each is verified when the body ends,
/// before the put records anything: a mismatch ends the body with
/// BadDigest, so the put fails and no version is made.
pub struct BlobBody {
    blob: Option<StreamingBlob>,
    /// Checksums sent as headers.
    expected: Checksum,
    /// Where a trailing checksum arrives, and which header it is.
    trailer: Option<(TrailingHeaders, String)>,
    hasher: ChecksumHasher,
    ended: bool,
}

/// The longest a request body may pause between two pieces.
pub const BODY_STALL_MAX: std::time::Duration = std::time::Duration::from_secs(60);

/// The checksum headers S3 defines, by algorithm.
const CHECKSUM_HEADERS: [&str; 5] = [
    "x-amz-checksum-crc32",
    "x-amz-checksum-crc32c",
    "x-amz-checksum-crc64nvme",
    "x-amz-checksum-sha1",
    "x-amz-checksum-sha256",
];

impl BlobBody {
    /// `expected` holds the checksum headers of the request; `headers` and
    /// `trailer` say whether one comes after the body (`x-amz-trailer`).
    pub fn new(
        blob: Option<StreamingBlob>,
        expected: Checksum,
        headers: &hyper::HeaderMap,
        trailer: Option<TrailingHeaders>,
    ) -> S3Result<Self> {
        let trailing = headers
            .get("x-amz-trailer")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_ascii_lowercase())
            .filter(|name| CHECKSUM_HEADERS.contains(&name.as_str()));
        let trailer = match (trailing, trailer) {
            (Some(name), Some(handle)) => Some((handle, name)),
            _ => None,
        };
        let wants =
            |name: &str, sent: bool| sent || trailer.as_ref().is_some_and(|(_, t)| t == name);
        let hasher = ChecksumHasher {
            crc32: wants(CHECKSUM_HEADERS[0], expected.checksum_crc32.is_some())
                .then(Default::default),
            crc32c: wants(CHECKSUM_HEADERS[1], expected.checksum_crc32c.is_some())
                .then(Default::default),
            crc64nvme: wants(CHECKSUM_HEADERS[2], expected.checksum_crc64nvme.is_some())
                .then(Default::default),
            sha1: wants(CHECKSUM_HEADERS[3], expected.checksum_sha1.is_some())
                .then(Default::default),
            sha256: wants(CHECKSUM_HEADERS[4], expected.checksum_sha256.is_some())
                .then(Default::default),
        };
        Ok(Self {
            blob,
            expected,
            trailer,
            hasher,
            ended: false,
        })
    }

    /// Compare what was computed with what was sent.
    fn verify(&mut self) -> Result<(), S3Error> {
        let computed = std::mem::take(&mut self.hasher).finalize();
        let mut expected = self.expected.clone();
        if let Some((handle, name)) = &self.trailer {
            let value = handle
                .read(|headers| {
                    headers
                        .get(name.as_str())
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string)
                })
                .flatten()
                .ok_or_else(|| {
                    s3_error!(
                        InvalidRequest,
                        "the trailer announced {name} but did not send it"
                    )
                })?;
            let slot = match name.as_str() {
                "x-amz-checksum-crc32" => &mut expected.checksum_crc32,
                "x-amz-checksum-crc32c" => &mut expected.checksum_crc32c,
                "x-amz-checksum-crc64nvme" => &mut expected.checksum_crc64nvme,
                "x-amz-checksum-sha1" => &mut expected.checksum_sha1,
                _ => &mut expected.checksum_sha256,
            };
            *slot = Some(value);
        }
        let pairs = [
            ("CRC32", &expected.checksum_crc32, &computed.checksum_crc32),
            (
                "CRC32C",
                &expected.checksum_crc32c,
                &computed.checksum_crc32c,
            ),
            (
                "CRC64NVME",
                &expected.checksum_crc64nvme,
                &computed.checksum_crc64nvme,
            ),
            ("SHA1", &expected.checksum_sha1, &computed.checksum_sha1),
            (
                "SHA256",
                &expected.checksum_sha256,
                &computed.checksum_sha256,
            ),
        ];
        for (algorithm, sent, actual) in pairs {
            if let Some(sent) = sent
                && Some(sent) != actual.as_ref()
            {
                return Err(s3_error!(
                    BadDigest,
                    "The {algorithm} you specified did not match the calculated checksum."
                ));
            }
        }
        Ok(())
    }
}

impl Body for BlobBody {
    type Error = BoxError;

    async fn next(&mut self) -> Result<Option<Bytes>, BoxError> {
        if self.ended {
            return Ok(None);
        }
        if let Some(blob) = &mut self.blob {
            loop {
                // A body that stops arriving frees its slot (and the large
                // put's) rather than holding it for good.
                let Ok(next) = tokio::time::timeout(BODY_STALL_MAX, blob.next()).await else {
                    return Err(Box::new(s3_error!(
                        RequestTimeout,
                        "no part of the request body arrived for {} s",
                        BODY_STALL_MAX.as_secs()
                    )));
                };
                match next {
                    Some(Ok(bytes)) if bytes.is_empty() => continue,
                    Some(Ok(bytes)) => {
                        self.hasher.update(&bytes);
                        return Ok(Some(bytes));
                    }
                    Some(Err(error)) => return Err(error),
                    None => break,
                }
            }
        }
        self.ended = true;
        self.verify().map_err(|error| Box::new(error) as BoxError)?;
        Ok(None)
    }

    fn len_hint(&self) -> Option<u64> {
        let blob = self.blob.as_ref()?;
        let len = blob.remaining_length().exact()?;
        u64::try_from(len).ok()
    }
}

/// A body of bytes already in memory (a bucket's settings file).
pub struct BytesBody(pub Option<Bytes>);

impl Body for BytesBody {
    type Error = std::convert::Infallible;

    async fn next(&mut self) -> Result<Option<Bytes>, Self::Error> {
        Ok(self.0.take())
    }
}

/// A body read from a version already stored (UploadPartCopy).
pub struct ReaderBody(pub ObjectReader);

impl Body for ReaderBody {
    type Error = dfs::node::ops::OpError;

    async fn next(&mut self) -> Result<Option<Bytes>, Self::Error> {
        self.0.next().await.transpose()
    }
}

/// Pieces sent ahead of the client: the reader prefetches its own chunks,
/// so two here only keep the socket busy.
const RESPONSE_PIECES_AHEAD: usize = 2;

/// A response body reading `reader` as the client takes it. The task that
/// feeds it is aborted when the body is dropped (a client gone), and with
/// it the reader's prefetches.
pub fn response_body(mut reader: ObjectReader) -> StreamingBlob {
    let (tx, rx) = mpsc::channel(RESPONSE_PIECES_AHEAD);
    let feeder = AbortOnDropHandle::new(tokio::spawn(async move {
        // Each piece keeps its chunk's share of the node's read memory
        // until hyper has written it: the budget bounds this queue too.
        while let Some(piece) = reader.next_held().await {
            let failed = piece.is_err();
            let piece = piece.map_err(|error| std::io::Error::other(error.message));
            // A client that stops reading gives up its read (and the
            // node's read-ahead budget it holds) after BODY_STALL_MAX.
            match tokio::time::timeout(BODY_STALL_MAX, tx.send(piece)).await {
                Ok(Ok(())) if !failed => {}
                _ => return,
            }
        }
    }));
    let stream = futures::stream::unfold((rx, feeder), |(mut rx, feeder)| async move {
        rx.recv().await.map(|piece| (piece, (rx, feeder)))
    });
    StreamingBlob::wrap(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;

    fn blob_of(pieces: Vec<&'static [u8]>, then_stall: bool) -> StreamingBlob {
        let items = stream::iter(
            pieces
                .into_iter()
                .map(|piece| Ok::<_, std::io::Error>(Bytes::from_static(piece))),
        );
        if then_stall {
            StreamingBlob::wrap(items.chain(stream::pending()))
        } else {
            StreamingBlob::wrap(items)
        }
    }

    // tokio's own (paused) clock is what the stall limit runs on.
    #[allow(clippy::disallowed_methods)]
    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_arriving_is_given_up_after_the_stall_limit() {
        let blob = blob_of(vec![b"first piece"], true);
        let mut body =
            BlobBody::new(Some(blob), Checksum::default(), &Default::default(), None).unwrap();
        assert_eq!(body.next().await.unwrap().unwrap(), &b"first piece"[..]);
        let started = tokio::time::Instant::now();
        let error = body.next().await.unwrap_err();
        assert!(
            started.elapsed() >= BODY_STALL_MAX,
            "{:?}",
            started.elapsed()
        );
        assert!(
            error
                .to_string()
                .contains("no part of the request body arrived"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_body_whose_checksum_differs_ends_in_bad_digest() {
        let sent = Checksum {
            // CRC32 of "hello world", base64.
            checksum_crc32: Some("DUoRhQ==".into()),
            ..Default::default()
        };
        let mut good = BlobBody::new(
            Some(blob_of(vec![b"hello ", b"world"], false)),
            sent.clone(),
            &Default::default(),
            None,
        )
        .unwrap();
        while good.next().await.unwrap().is_some() {}
        let mut bad = BlobBody::new(
            Some(blob_of(vec![b"hello ", b"World"], false)),
            sent,
            &Default::default(),
            None,
        )
        .unwrap();
        assert!(bad.next().await.unwrap().is_some());
        assert!(bad.next().await.unwrap().is_some());
        let error = bad.next().await.unwrap_err();
        let error = error.downcast::<S3Error>().unwrap();
        assert_eq!(*error.code(), s3s::S3ErrorCode::BadDigest);
    }
}
