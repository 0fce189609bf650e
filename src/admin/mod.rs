//! The admin listener (`serve --admin-listen`, default `127.0.0.1:7420`):
//! what operators and their tools read over HTTP, at the production edge
//! like `cli/` and `s3/`.
//!
//! - `/metrics`: the node's Prometheus registry ([`dfs::metrics`]), in
//!   OpenMetrics to a scraper that asks for it (Prometheus does), else in
//!   the classic text format (what `promtool check metrics` and older
//!   tools read);
//! - `/health`: 200 while the node runs (liveness);
//! - `/ready`: 200 once the node has reached the members it knew and a
//!   write quorum is alive, else 503 with the reason (for load balancers:
//!   send it no writes before);
//! - `/`: the status page ([`page`]), for people.
//!
//! Nothing here names a file, so nothing needs a key (the page's recent
//! errors keep only fields that cannot, see [`recent_errors`]). Bounds: at most
//! [`CONNECTIONS_MAX`] connections, headers within [`HEADER_READ_TIMEOUT`];
//! request bodies are never read.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dfs::env::Listener;

pub mod page;
pub mod recent_errors;

use dfs::node::Node;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use recent_errors::RecentErrors;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Most admin connections served at once (scrapers and probes).
pub const CONNECTIONS_MAX: usize = 32;

/// How long a client has to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The status page, with headers that keep it from loading anything from
/// elsewhere or being cached.
fn html(body: String) -> Response<Full<Bytes>> {
    static POLICY: std::sync::LazyLock<hyper::header::HeaderValue> =
        std::sync::LazyLock::new(|| {
            hyper::header::HeaderValue::from_str(&page::content_security_policy())
                .expect("the policy is ASCII")
        });
    let mut response = text(StatusCode::OK, body);
    let headers = response.headers_mut();
    for (name, value) in [
        ("content-type", "text/html; charset=utf-8"),
        ("cache-control", "no-store"),
        ("x-content-type-options", "nosniff"),
    ] {
        headers.insert(name, hyper::header::HeaderValue::from_static(value));
    }
    headers.insert("content-security-policy", POLICY.clone());
    response
}

/// How long one admin request may take: a hung disk or slow members must
/// not hold the connection slots that `/health` needs too.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// The answer to one request.
async fn answer(
    node: &Node,
    recent: &RecentErrors,
    request: &Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n".into());
    }
    match request.uri().path() {
        "/" => {
            let members = node.member_reports().await;
            let synced = node.last_complete_passes();
            let recent = recent.list();
            html(page::render(&page::PageView {
                members: &members,
                synced: &synced,
                recent: &recent,
                now_ms: node.env().clock.unix_ms(),
            }))
        }
        "/metrics" => {
            let openmetrics = request
                .headers()
                .get_all(hyper::header::ACCEPT)
                .iter()
                .any(|v| {
                    v.to_str()
                        .is_ok_and(|v| v.contains("application/openmetrics-text"))
                });
            let metrics = node.encode_metrics().await;
            let (body, content_type) = if openmetrics {
                (
                    metrics,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )
            } else {
                (
                    classic_text(&metrics),
                    "text/plain; version=0.0.4; charset=utf-8",
                )
            };
            let mut response = text(StatusCode::OK, body);
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(content_type),
            );
            response
        }
        "/health" => text(StatusCode::OK, "ok\n".into()),
        "/ready" => match node.readiness() {
            Ok(()) => text(StatusCode::OK, "ready\n".into()),
            Err(reason) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {reason}\n"),
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /, /metrics, /health or /ready\n".into(),
        ),
    }
}

/// OpenMetrics text (what prometheus-client writes) as the classic
/// Prometheus text format: a counter's family is named with its `_total`
/// (OpenMetrics names it without), and the `# UNIT` and `# EOF` lines go.
/// Written here because prometheus-client writes only OpenMetrics.
fn classic_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if line.starts_with("# HELP ") {
            // Written with its TYPE, which says whether it is a counter.
            help = Some(line);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let family = if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_string()
            };
            if let Some(text) = help.take().and_then(|h| h.strip_prefix("# HELP ")) {
                let text = text.split_once(' ').map_or("", |(_, text)| text);
                out.push_str(&format!("# HELP {family} {text}\n"));
            }
            out.push_str(&format!("# TYPE {family} {kind}\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Serve the admin endpoints on `listener` until `stopping` completes.
pub async fn serve(
    node: Arc<Node>,
    recent: RecentErrors,
    mut listener: Box<dyn Listener>,
    stopping: impl std::future::Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    let mut connections = JoinSet::new();
    tokio::pin!(stopping);
    loop {
        tokio::select! {
            _ = &mut stopping => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(permit) = permits.clone().try_acquire_owned() else {
                        node.connections().refused("admin", "busy");
                        tracing::warn!(%peer, "refusing an admin connection: {CONNECTIONS_MAX} are open");
                        continue;
                    };
                    let node = node.clone();
                    let recent = recent.clone();
                    connections.spawn(async move {
                        let _permit = permit;
                        let _open = node.connections().opened("admin");
                        let service = hyper::service::service_fn(move |request| {
                            let node = node.clone();
                            let recent = recent.clone();
                            async move {
                                let answered =
                                    tokio::time::timeout(ANSWER_TIMEOUT, answer(&node, &recent, &request))
                                        .await
                                        .unwrap_or_else(|_| {
                                            text(
                                                StatusCode::SERVICE_UNAVAILABLE,
                                                format!(
                                                    "no answer within {} s (a slow disk or slow members?)\n",
                                                    ANSWER_TIMEOUT.as_secs()
                                                ),
                                            )
                                        });
                                Ok::<_, Infallible>(answered)
                            }
                        });
                        let served = hyper::server::conn::http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(HEADER_READ_TIMEOUT)
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                        if let Err(error) = served {
                            tracing::debug!(%peer, %error, "admin connection ended");
                        }
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    // Scrapes are short: the ones in flight are dropped with the set.
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_counters_become_classic_families() {
        let openmetrics = "# HELP dfs_requests Requests served.\n# TYPE dfs_requests counter\n\
dfs_requests_total{kind=\"Get\"} 3\n# HELP dfs_store Sealed bytes.\n# TYPE dfs_store gauge\n\
# UNIT dfs_store bytes\ndfs_store_bytes 10\n# EOF\n";
        assert_eq!(
            classic_text(openmetrics),
            "# HELP dfs_requests_total Requests served.\n# TYPE dfs_requests_total counter\n\
dfs_requests_total{kind=\"Get\"} 3\n# HELP dfs_store Sealed bytes.\n# TYPE dfs_store gauge\n\
dfs_store_bytes 10\n"
        );
    }
}
