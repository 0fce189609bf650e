//! Bodies between HTTP and the node's operations, streamed both ways:
//! an upload is pulled piece by piece into the put pipeline, a download is
//! pushed chunk by chunk from the read pipeline, through a channel of two.

use bytes::Bytes;
use dfs::node::ops::{Body, ObjectReader};
use futures::StreamExt;
use s3s::dto::StreamingBlob;
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body (s3s has already removed any `aws-chunked` framing and
/// checked its signatures).
pub struct BlobBody(pub Option<StreamingBlob>);

impl Body for BlobBody {
    type Error = BoxError;

    async fn next(&mut self) -> Result<Option<Bytes>, BoxError> {
        let Some(blob) = &mut self.0 else {
            return Ok(None);
        };
        loop {
            match blob.next().await {
                Some(Ok(bytes)) if bytes.is_empty() => continue,
                Some(Ok(bytes)) => return Ok(Some(bytes)),
                Some(Err(error)) => return Err(error),
                None => return Ok(None),
            }
        }
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

/// Pieces sent ahead of the client: the reader prefetches its own chunks,
/// so two here only keep the socket busy.
const RESPONSE_PIECES_AHEAD: usize = 2;

/// A response body reading `reader` as the client takes it. The task that
/// feeds it is aborted when the body is dropped (a client gone), and with
/// it the reader's prefetches.
pub fn response_body(mut reader: ObjectReader) -> StreamingBlob {
    let (tx, rx) = mpsc::channel(RESPONSE_PIECES_AHEAD);
    let feeder = AbortOnDropHandle::new(tokio::spawn(async move {
        while let Some(piece) = reader.next().await {
            let failed = piece.is_err();
            let piece = piece.map_err(|error| std::io::Error::other(error.message));
            if tx.send(piece).await.is_err() || failed {
                return;
            }
        }
    }));
    let stream = futures::stream::unfold((rx, feeder), |(mut rx, feeder)| async move {
        rx.recv().await.map(|piece| (piece, (rx, feeder)))
    });
    StreamingBlob::wrap(stream)
}
