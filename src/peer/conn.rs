//! One authenticated connection to one peer, shared by many requests.
//!
//! A connection runs as one task with three parts raced together: the reader
//! (owns the socket's read half, routes each frame), the writer (drains a
//! bounded queue into the write half) and the keepalive (a `Ping` request
//! every [`PEER_KEEPALIVE_INTERVAL`]). When any part ends, the connection
//! ends: pending requests fail with [`PeerError::Closed`] and the registry
//! forgets it.
//!
//! Requests carry ids chosen by their sender; a reply carries the id of its
//! request. Each side keeps its own table of pending ids, so the two
//! directions never collide: a frame is matched against the table only when
//! its message [is a reply](Message::is_reply).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::{Notify, Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;

use super::{PeerError, PeerIdentity, PeerService};
use crate::keys::NodeId;
use crate::limits::{
    PEER_HANDLERS_PER_CONNECTION, PEER_KEEPALIVE_INTERVAL, PEER_REQUEST_TIMEOUT,
    PEER_REQUESTS_IN_FLIGHT, SWIM_PACKET_BYTES_MAX,
};
use crate::secure::{SecureReader, SecureWriter};
use crate::wire::{Envelope, ErrorCode, Message};

/// A SWIM datagram received from an authenticated peer.
#[derive(Debug)]
pub struct Datagram {
    pub from: NodeId,
    pub bytes: Vec<u8>,
}

/// The shared handle of a live connection.
#[derive(Debug)]
pub struct PeerConnection {
    /// Distinguishes this connection from a later one to the same peer.
    id: u64,
    remote: PeerIdentity,
    /// The node that dialed: decides which of two simultaneous connections
    /// between a pair survives (see `Peers::register`).
    dialed_by: NodeId,
    outbound: mpsc::Sender<Envelope>,
    pending: Mutex<BTreeMap<u64, oneshot::Sender<Message>>>,
    next_request: AtomicU64,
    closing: Notify,
    /// Replaced by another connection to the same peer: it takes no new
    /// requests and ends once its own requests are answered and the
    /// peer's requests on it are served.
    retiring: AtomicBool,
    /// Peer requests being served on this connection now.
    serving: AtomicUsize,
    /// Frames received so far: the keepalive pings only a connection that
    /// has been silent for a whole interval.
    frames_received: AtomicU64,
}

impl PeerConnection {
    pub(super) fn new(
        id: u64,
        remote: PeerIdentity,
        dialed_by: NodeId,
        outbound: mpsc::Sender<Envelope>,
    ) -> Self {
        Self {
            id,
            remote,
            dialed_by,
            outbound,
            pending: Mutex::new(BTreeMap::new()),
            next_request: AtomicU64::new(1),
            closing: Notify::new(),
            retiring: AtomicBool::new(false),
            serving: AtomicUsize::new(0),
            frames_received: AtomicU64::new(0),
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn remote(&self) -> &PeerIdentity {
        &self.remote
    }

    pub fn dialed_by(&self) -> NodeId {
        self.dialed_by
    }

    /// Queue a one-way message. Returns false (and drops it) when the queue
    /// is full or the connection is gone: only for messages whose loss the
    /// protocol tolerates (SWIM datagrams).
    pub fn try_send(&self, message: Message) -> bool {
        self.outbound
            .try_send(Envelope {
                request_id: 0,
                message,
            })
            .is_ok()
    }

    /// Send a request and wait for its reply, within [`PEER_REQUEST_TIMEOUT`]
    /// in all (queueing included: a full queue is backpressure, not loss).
    pub async fn call(&self, message: Message) -> Result<Message, PeerError> {
        let request_id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (reply_tx, reply_rx) = oneshot::channel();
        {
            let mut pending = self.pending.lock().expect("pending table poisoned");
            if pending.len() >= PEER_REQUESTS_IN_FLIGHT {
                return Err(PeerError::Busy);
            }
            pending.insert(request_id, reply_tx);
        }
        let exchange = async {
            self.outbound
                .send(Envelope {
                    request_id,
                    message,
                })
                .await
                .map_err(|_| PeerError::Closed)?;
            reply_rx.await.map_err(|_| PeerError::Closed)
        };
        let result = tokio::time::timeout(PEER_REQUEST_TIMEOUT, exchange).await;
        // On every exit path the table forgets the id (a late reply is then
        // logged and dropped by the reader).
        self.pending
            .lock()
            .expect("pending table poisoned")
            .remove(&request_id);
        match result {
            Ok(Ok(Message::Error { code, message })) => Err(PeerError::Remote { code, message }),
            Ok(reply) => reply,
            Err(_) => Err(PeerError::Timeout(PEER_REQUEST_TIMEOUT)),
        }
    }

    /// Ask the connection to end (it finishes its current frame first).
    pub fn close(&self) {
        self.closing.notify_one();
    }

    /// End the connection gracefully: requests in flight either way finish
    /// first. Used when a simultaneous dial replaced it: both sides retire
    /// the same loser, so no request is cut off by the replacement.
    pub fn retire(&self) {
        self.retiring.store(true, Ordering::Relaxed);
    }

    fn idle(&self) -> bool {
        self.serving.load(Ordering::Relaxed) == 0
            && self
                .pending
                .lock()
                .expect("pending table poisoned")
                .is_empty()
    }

    fn complete(&self, request_id: u64, reply: Message) -> bool {
        let waiter = self
            .pending
            .lock()
            .expect("pending table poisoned")
            .remove(&request_id);
        match waiter {
            Some(waiter) => waiter.send(reply).is_ok(),
            None => false,
        }
    }
}

/// Frames exchanged with other nodes since start, over every connection
/// (what a node's membership, replication and anti-entropy cost it).
#[derive(Debug, Default)]
pub struct PeerTraffic {
    pub frames_sent: AtomicU64,
    pub frames_received: AtomicU64,
}

/// Where a connection hands what it receives: SWIM datagrams to the
/// membership inbox, requests to the service (once the node set one).
pub(super) struct Inbound {
    pub swim_inbox: mpsc::Sender<Datagram>,
    pub service: Arc<OnceLock<Arc<dyn PeerService>>>,
    pub traffic: Arc<PeerTraffic>,
}

/// Run a registered connection until it fails or is closed. Returns why it
/// ended, for the log.
pub(super) async fn run(
    conn: &Arc<PeerConnection>,
    reader: SecureReader,
    writer: SecureWriter,
    queue: mpsc::Receiver<Envelope>,
    inbound: Inbound,
) -> String {
    let ended = tokio::select! {
        _ = conn.closing.notified() => "closed by this node".to_string(),
        reason = read_loop(conn, reader, &inbound) => reason,
        reason = write_loop(writer, queue, &inbound.traffic) => reason,
        reason = keepalive_loop(conn) => reason,
        reason = retire_when_idle(conn) => reason,
    };
    // Dropping the waiters fails every pending call at once.
    conn.pending.lock().expect("pending table poisoned").clear();
    ended
}

async fn read_loop(
    conn: &Arc<PeerConnection>,
    mut reader: SecureReader,
    inbound: &Inbound,
) -> String {
    // Requests are served concurrently, at most PEER_HANDLERS_PER_CONNECTION
    // at a time, each until its reply is queued; beyond that the reader
    // waits, which backs the peer's writes up through TCP. A handler waits
    // for queue space at most a request timeout, so two nodes that both
    // stopped reading free each other. Dropping the set (the connection
    // ended) aborts them.
    let handlers_allowed = Arc::new(Semaphore::new(PEER_HANDLERS_PER_CONNECTION));
    let mut handlers = JoinSet::new();
    loop {
        while handlers.try_join_next().is_some() {}
        let envelope = match reader.recv().await {
            Ok(Some(envelope)) => envelope,
            Ok(None) => return "the peer closed the connection".into(),
            Err(error) => return error.to_string(),
        };
        conn.frames_received.fetch_add(1, Ordering::Relaxed);
        inbound
            .traffic
            .frames_received
            .fetch_add(1, Ordering::Relaxed);
        let Envelope {
            request_id,
            message,
        } = envelope;
        if message.is_reply() {
            if request_id == 0 {
                return format!(
                    "protocol violation: {} without a request id",
                    message.kind()
                );
            }
            if !conn.complete(request_id, message) {
                tracing::debug!(peer = %conn.remote.node.short(), request_id, "reply to a request that already timed out");
            }
            continue;
        }
        match message {
            Message::Swim { bytes } => {
                // The inbox holds SWIM_INBOX datagrams: each must be small,
                // or a hostile peer could park gigabytes in it.
                if bytes.len() > SWIM_PACKET_BYTES_MAX {
                    return format!(
                        "protocol violation: a {}-byte SWIM datagram (limit {SWIM_PACKET_BYTES_MAX})",
                        bytes.len()
                    );
                }
                let datagram = Datagram {
                    from: conn.remote.node,
                    bytes,
                };
                if inbound.swim_inbox.try_send(datagram).is_err() {
                    tracing::debug!("membership inbox full; dropping a SWIM datagram");
                }
            }
            Message::Ping => {
                let pong = Envelope {
                    request_id,
                    message: Message::Pong,
                };
                // Never block the reader on our own writer: that could
                // deadlock two nodes whose queues are both full. A lost Pong
                // makes the peer's keepalive fail, which is the right outcome
                // for a connection that backed up for so long.
                let _ = conn.outbound.try_send(pong);
            }
            Message::PeerHello { .. } => {
                return "protocol violation: a second PeerHello".into();
            }
            request if is_peer_request(&request) => {
                let Some(service) = inbound.service.get().cloned() else {
                    let refusal = Envelope {
                        request_id,
                        message: Message::Error {
                            code: ErrorCode::Unavailable,
                            message: "this node is still starting".into(),
                        },
                    };
                    let _ = conn.outbound.try_send(refusal);
                    continue;
                };
                let Ok(permit) = handlers_allowed.clone().acquire_owned().await else {
                    return "handler limit closed".into();
                };
                let from = conn.remote.node;
                let serving = conn.clone();
                serving.serving.fetch_add(1, Ordering::Relaxed);
                handlers.spawn(async move {
                    let reply = service.serve(from, request).await;
                    // The permit is held until the reply is queued: a peer
                    // that does not read its replies must not make this
                    // node hold an unbounded number of them (each can be
                    // a 4 MiB blob). The wait is bounded too: by then the
                    // requester has given up, and two nodes whose queues
                    // are both full must not wait on each other for good.
                    let envelope = Envelope {
                        request_id,
                        message: reply,
                    };
                    let queued = tokio::time::timeout(
                        PEER_REQUEST_TIMEOUT,
                        serving.outbound.send(envelope),
                    )
                    .await;
                    if queued.is_err() {
                        tracing::debug!(peer = %from.short(), request_id, "the peer reads no replies; dropping one");
                    }
                    drop(permit);
                    serving.serving.fetch_sub(1, Ordering::Relaxed);
                });
            }
            other => {
                let refusal = Envelope {
                    request_id,
                    message: Message::Error {
                        code: ErrorCode::InvalidRequest,
                        message: format!("{} is not a peer request", other.kind()),
                    },
                };
                let _ = conn.outbound.try_send(refusal);
            }
        }
    }
}

/// Requests a node serves for its peers (through [`PeerService`]).
fn is_peer_request(message: &Message) -> bool {
    matches!(
        message,
        Message::StoreBlob { .. }
            | Message::FetchBlob { .. }
            | Message::ApplyRecords { .. }
            | Message::SyncDigests { .. }
            | Message::FetchRecords { .. }
            | Message::CurrentOf { .. }
            | Message::HasBlobs { .. }
            | Message::KeepBlobs { .. }
            | Message::ApplyKeys { .. }
            | Message::FetchKeys { .. }
            | Message::Status
    )
}

async fn write_loop(
    mut writer: SecureWriter,
    mut queue: mpsc::Receiver<Envelope>,
    traffic: &PeerTraffic,
) -> String {
    while let Some(envelope) = queue.recv().await {
        if let Err(error) = writer.send(&envelope).await {
            return error.to_string();
        }
        traffic.frames_sent.fetch_add(1, Ordering::Relaxed);
    }
    // Unreachable while the connection holds its sender; kept total.
    let _ = writer.shutdown().await;
    "queue closed".into()
}

/// Ends a retiring connection once nothing is in flight on it (checked
/// every few milliseconds; a retiring connection lives at most one request
/// timeout).
async fn retire_when_idle(conn: &PeerConnection) -> String {
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        if conn.retiring.load(Ordering::Relaxed) && conn.idle() {
            return "replaced by another connection to the same peer".into();
        }
    }
}

/// Ping a connection that has been silent for a whole interval; end it if
/// the ping goes unanswered. A busy connection is not pinged: what it
/// receives proves the peer alive, and a ping queued behind a full queue of
/// blobs on a slow link would time out and kill a healthy connection. With
/// every request slot taken, the requests' own timeouts free them first.
async fn keepalive_loop(conn: &PeerConnection) -> String {
    loop {
        let heard = conn.frames_received.load(Ordering::Relaxed);
        tokio::time::sleep(PEER_KEEPALIVE_INTERVAL).await;
        if conn.frames_received.load(Ordering::Relaxed) != heard {
            continue;
        }
        match conn.call(Message::Ping).await {
            Ok(Message::Pong) | Err(PeerError::Busy) => {}
            Ok(other) => return format!("keepalive answered with {}", other.kind()),
            Err(error) => return format!("keepalive failed: {error}"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Paused tokio time is the clock these tests read.
mod tests {
    //! A connection run against a hand-driven remote end over an in-memory
    //! pipe, with paused time: what it holds for a peer that reads nothing,
    //! and when its keepalive ends it.

    use std::time::Duration;

    use super::*;
    use crate::cas::ChunkId;
    use crate::env::tokio_env;
    use crate::keys::ClusterKey;
    use crate::peer::ServiceFuture;
    use crate::secure::{Credential, NodesOnly, SecureStream, accept, connect};

    /// Answers every request with a 64 KiB blob and counts the requests.
    struct BigReplies(Arc<AtomicUsize>);

    impl PeerService for BigReplies {
        fn serve(&self, _from: NodeId, _request: Message) -> ServiceFuture {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(async {
                Message::BlobData {
                    sealed: vec![7; 64 * 1024].into(),
                }
            })
        }
    }

    struct Running {
        task: tokio::task::JoinHandle<String>,
        remote: SecureStream,
        _swim: mpsc::Receiver<Datagram>,
    }

    /// Run a connection whose requests `service` answers; the returned
    /// `remote` is the peer's end, driven by the test.
    async fn connection(service: Arc<dyn PeerService>) -> Running {
        let env = tokio_env();
        let key = ClusterKey::from_bytes([5; 32]);
        let (here, there) = tokio::io::duplex(64 * 1024);
        let (local_keys, remote_keys) = (
            crate::keys::StaticKeypair::generate(&env),
            crate::keys::StaticKeypair::generate(&env),
        );
        let authority = NodesOnly(key.clone());
        let (local, remote) = tokio::join!(
            accept(
                &env,
                Box::new(here),
                &local_keys,
                &authority,
                Duration::ZERO
            ),
            connect(&env, Box::new(there), &remote_keys, Credential::Node(&key)),
        );
        let (local, remote) = (local.unwrap().0, remote.unwrap());
        let identity = PeerIdentity {
            node: remote.remote(),
            addr: "remote:1".into(),
            bump: 1,
        };
        let (queue_tx, queue_rx) = mpsc::channel(crate::limits::PEER_QUEUE_FRAMES);
        let conn = Arc::new(PeerConnection::new(1, identity, remote.remote(), queue_tx));
        let (swim_tx, swim_rx) = mpsc::channel(4);
        let slot = Arc::new(OnceLock::new());
        let _ = slot.set(service);
        let inbound = Inbound {
            swim_inbox: swim_tx,
            service: slot,
            traffic: Arc::default(),
        };
        let (reader, writer) = local.into_split();
        let task = tokio::spawn(async move { run(&conn, reader, writer, queue_rx, inbound).await });
        Running {
            task,
            remote,
            _swim: swim_rx,
        }
    }

    /// Issue 9, item 8: the handler permit was released before the reply
    /// was queued, so a peer that sends requests and never reads the
    /// replies made the node build them without bound (each can be 4 MiB).
    #[tokio::test(start_paused = true)]
    async fn a_peer_that_reads_no_replies_gets_only_a_bounded_number_built() {
        let served = Arc::new(AtomicUsize::new(0));
        let running = connection(Arc::new(BigReplies(served.clone()))).await;
        let (_remote_reader, mut remote_writer) = running.remote.into_split();
        let requests = 600usize;
        let sender = tokio::spawn(async move {
            for request_id in 1..=requests as u64 {
                let request = Envelope {
                    request_id,
                    message: Message::FetchBlob {
                        id: ChunkId([1; 32]),
                    },
                };
                if remote_writer.send(&request).await.is_err() {
                    break;
                }
            }
            remote_writer
        });
        // Well inside the request timeout, after which blocked handlers
        // drop their replies and the next ones are served.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let built = served.load(Ordering::SeqCst);
        // The outbound queue, the handlers waiting to queue, and the reply
        // the writer is stuck sending.
        let bound = crate::limits::PEER_QUEUE_FRAMES + PEER_HANDLERS_PER_CONNECTION + 2;
        assert!(
            built <= bound,
            "{built} replies built for a peer that reads none (bound {bound})"
        );
        assert!(built >= PEER_HANDLERS_PER_CONNECTION, "only {built} served");
        assert!(!running.task.is_finished());
        sender.abort();
    }

    /// A peer that keeps sending but never answers a ping keeps its
    /// connection: what it sends proves it alive, and pinging a busy
    /// connection (its ping queued behind blobs on a slow link) killed
    /// healthy connections.
    #[tokio::test(start_paused = true)]
    async fn a_busy_connection_is_not_pinged_to_death() {
        let served = Arc::new(AtomicUsize::new(0));
        let running = connection(Arc::new(BigReplies(served))).await;
        let (_remote_reader, mut remote_writer) = running.remote.into_split();
        let chatter = async {
            loop {
                let datagram = Envelope {
                    request_id: 0,
                    message: Message::Swim { bytes: vec![1; 8] },
                };
                remote_writer.send(&datagram).await.unwrap();
                tokio::time::sleep(PEER_KEEPALIVE_INTERVAL / 3).await;
            }
        };
        let lasted = tokio::time::timeout(PEER_KEEPALIVE_INTERVAL * 20, async {
            tokio::select! {
                reason = running.task => reason.unwrap(),
                _ = chatter => unreachable!(),
            }
        })
        .await;
        assert!(lasted.is_err(), "the connection ended: {lasted:?}");
    }

    /// A peer that sends nothing and answers no ping is dropped within a
    /// keepalive interval and a request timeout or so.
    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_that_answers_no_ping_is_dropped() {
        let served = Arc::new(AtomicUsize::new(0));
        let running = connection(Arc::new(BigReplies(served))).await;
        let started = tokio::time::Instant::now();
        let reason = tokio::time::timeout(PEER_KEEPALIVE_INTERVAL * 20, running.task)
            .await
            .expect("a silent peer kept its connection")
            .unwrap();
        assert!(reason.starts_with("keepalive failed"), "{reason}");
        assert!(started.elapsed() <= PEER_KEEPALIVE_INTERVAL * 2 + PEER_REQUEST_TIMEOUT);
        drop(running.remote);
    }
}
