//! The S3 API: an HTTP frontend over the node's operations
//! ([`dfs::node::ops`]), at the production edge like `cli/` (the
//! simulation drives the node's own protocol; this is translation only).
//!
//! [`s3s`] does the routing, the XML, and SigV4 (headers, presigned URLs,
//! `aws-chunked` bodies); [`auth`] gives it each access key's secret, and
//! [`service`] implements the operations on dfs names: bucket `b`, key `k`
//! is the dfs name `b/k` ([`names`]), so a file put with the CLI is an
//! object to S3 and the reverse.
//!
//! Bounds: at most [`CONNECTIONS_MAX`] connections (more are closed at
//! once); a request's headers must arrive within [`HEADER_READ_TIMEOUT`],
//! and a body may not pause longer than `body::BODY_STALL_MAX`; bodies
//! stream through the node's bounded put and read pipelines.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use dfs::env::Listener;
use dfs::node::Node;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub use hosts::VirtualHosts;

mod auth;
mod body;
mod buckets;
mod chunk_guard;
mod errors;
mod headers;
mod hosts;
mod listing;
mod multipart;
mod names;
mod operation;
mod reads;
mod service;
mod sweep;
mod versions;

/// Most S3 connections served at once. Memory is bounded apart from this
/// (large uploads by `LARGE_PUTS_IN_FLIGHT`, reads by `READ_AHEAD_BYTES_MAX`), so
/// this bounds sockets and tasks: twice the native protocol's, for S3
/// clients keep pools of idle connections (boto3: 10 each).
pub const CONNECTIONS_MAX: usize = 128;

/// How long a client has to send a request's headers (slowloris bound).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// `service`, closing the connection after an error answered to a request
/// with a body. A request refused before its body was read (a missing
/// bucket, a failed precondition) leaves that body unread, and a client
/// that sent `Expect: 100-continue` may never send it: the connection's
/// byte stream is then ambiguous, and reusing it answered a later request
/// with an earlier response (seen with boto3). A new connection is cheap.
fn closing_after_refused_uploads(
    service: s3s::service::S3Service,
    node: Arc<Node>,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = s3s::HttpResponse,
    Error = s3s::HttpError,
    Future = impl Future<Output = Result<s3s::HttpResponse, s3s::HttpError>> + Send,
> + Clone {
    hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        let has_body = !hyper::body::Body::is_end_stream(request.body());
        // `aws-chunked` bodies pass a guard on their chunk sizes (s3s
        // buffers each chunk whole).
        let chunked = request
            .headers()
            .get("x-amz-content-sha256")
            .is_some_and(|v| v.as_bytes().starts_with(b"STREAMING-"));
        let request = request.map(|body| {
            if chunked {
                s3s::Body::http_body_unsync(chunk_guard::ChunkGuard::new(body))
            } else {
                s3s::Body::from(body)
            }
        });
        let mut request = request;
        let operation = operation::OperationSlot::default();
        request.extensions_mut().insert(operation.clone());
        let service = service.clone();
        let node = node.clone();
        let sent_bytes = content_length(request.headers());
        let started = node.env().clock.monotonic_micros();
        async move {
            let mut response = service.call(request).await?;
            let outcome = match response.status().as_u16() {
                ..400 => dfs::metrics::Outcome::Ok,
                400..500 => dfs::metrics::Outcome::Refused,
                _ => dfs::metrics::Outcome::Failed,
            };
            let micros = node.env().clock.monotonic_micros().saturating_sub(started);
            let bytes = sent_bytes + content_length(response.headers());
            node.requests()
                .record("s3", operation.name(), outcome, micros, bytes);
            if has_body && !response.status().is_success() {
                response.headers_mut().insert(
                    hyper::header::CONNECTION,
                    hyper::header::HeaderValue::from_static("close"),
                );
            }
            Ok(response)
        }
    })
}

/// The Content-Length a message declares (0 without one).
fn content_length(headers: &hyper::HeaderMap) -> u64 {
    headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Serve S3 on `listener` until `stopping` completes; then stop accepting,
/// let requests in flight finish, and return.
pub async fn serve(
    node: Arc<Node>,
    mut listener: Box<dyn Listener>,
    hosts: VirtualHosts,
    stopping: impl std::future::Future<Output = ()>,
) {
    let service = service::build(node.clone(), hosts);
    let (sweep_stop, mut sweep_stopped) = tokio::sync::watch::channel(false);
    let sweep = tokio::spawn(sweep::sweep_abandoned(node.clone(), async move {
        let _ = sweep_stopped.wait_for(|stop| *stop).await;
    }));
    let permits = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(stopping);
    loop {
        tokio::select! {
            _ = &mut stopping => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(permit) = permits.clone().try_acquire_owned() else {
                        node.connections().refused("s3", "busy");
                        tracing::warn!(%peer, "refusing an S3 connection: {CONNECTIONS_MAX} are open");
                        continue;
                    };
                    let open = node.connections().opened("s3");
                    let service = closing_after_refused_uploads(service.clone(), node.clone());
                    let mut stop = stop_rx.clone();
                    connections.spawn(async move {
                        let _permit = permit;
                        let _open = open;
                        let connection = hyper::server::conn::http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(HEADER_READ_TIMEOUT)
                            .serve_connection(TokioIo::new(stream), service);
                        tokio::pin!(connection);
                        tokio::select! {
                            served = connection.as_mut() => {
                                if let Err(error) = served {
                                    tracing::debug!(%peer, %error, "S3 connection ended");
                                }
                                return;
                            }
                            _ = stop.wait_for(|stop| *stop) => {}
                        }
                        // Finish the request in flight, then close.
                        connection.as_mut().graceful_shutdown();
                        let _ = connection.await;
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "S3 accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(joined) = connections.join_next(), if !connections.is_empty() => {
                if let Err(error) = joined {
                    tracing::error!(%error, "an S3 connection task failed");
                }
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let _ = sweep_stop.send(true);
    while connections.join_next().await.is_some() {}
    let _ = sweep.await;
}
