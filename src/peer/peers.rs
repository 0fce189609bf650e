//! The registry of peer connections: dial, accept, one connection per pair.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::backoff::Backoff;
use super::conn::{self, Datagram, Inbound, PeerConnection, PeerTraffic};
use super::{PeerError, PeerIdentity, PeerService};
use crate::env::Env;
use crate::keys::{ClusterKey, NodeId, StaticKeypair};
use crate::limits::{CONNECT_TIMEOUT, PEER_DIAL_BACKLOG, PEER_QUEUE_FRAMES};
use crate::secure::{Credential, SecureStream, connect};
use crate::wire::{Envelope, Message};

/// All peer connections of one node.
///
/// A peer is known by the node id its Noise static key proves, never by the
/// address it connects from. Between two nodes there is at most one
/// connection in use: when both dial at once, both keep the one dialed by
/// the smaller node id (each side decides alone, and the same way).
pub struct Peers {
    env: Env,
    keypair: StaticKeypair,
    cluster_key: ClusterKey,
    me: Mutex<PeerIdentity>,
    swim_inbox: mpsc::Sender<Datagram>,
    service: Arc<OnceLock<Arc<dyn PeerService>>>,
    state: Mutex<State>,
    tasks: Mutex<JoinSet<()>>,
    traffic: Arc<PeerTraffic>,
}

#[derive(Default)]
struct State {
    connections: BTreeMap<NodeId, Arc<PeerConnection>>,
    /// Peers being dialed, with the datagrams waiting for the connection.
    dialing: BTreeMap<NodeId, Vec<Message>>,
    backoff: BTreeMap<NodeId, Backoff>,
    next_connection_id: u64,
    shut_down: bool,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers")
            .field("me", &self.identity())
            .finish_non_exhaustive()
    }
}

impl Peers {
    pub fn new(
        env: Env,
        keypair: StaticKeypair,
        cluster_key: ClusterKey,
        me: PeerIdentity,
        swim_inbox: mpsc::Sender<Datagram>,
    ) -> Arc<Self> {
        Arc::new(Self {
            env,
            keypair,
            cluster_key,
            me: Mutex::new(me),
            swim_inbox,
            service: Arc::new(OnceLock::new()),
            state: Mutex::new(State::default()),
            tasks: Mutex::new(JoinSet::new()),
            traffic: Arc::default(),
        })
    }

    /// Serve peers' requests with `service` (set once, at node start;
    /// until then requests are answered `Unavailable`).
    pub fn set_service(&self, service: Arc<dyn PeerService>) {
        if self.service.set(service).is_err() {
            tracing::error!("the peer service was set twice; keeping the first");
        }
    }

    /// The connection to `peer`, dialing it if there is none.
    pub async fn connect(
        self: &Arc<Self>,
        peer: &PeerIdentity,
    ) -> Result<Arc<PeerConnection>, PeerError> {
        if let Some(connection) = self.state().connections.get(&peer.node) {
            return Ok(connection.clone());
        }
        peer.check().map_err(PeerError::Refused)?;
        self.dial(&peer.addr, Some(peer.node)).await
    }

    /// Stop handing out `connection` (it is being closed); the next
    /// [`Peers::connect`] dials afresh.
    pub fn forget(&self, connection: &PeerConnection) {
        let mut state = self.state();
        let node = connection.remote().node;
        if state
            .connections
            .get(&node)
            .is_some_and(|c| c.id() == connection.id())
        {
            state.connections.remove(&node);
        }
    }

    /// Frames exchanged with other nodes since start.
    pub fn traffic(&self) -> &PeerTraffic {
        &self.traffic
    }

    /// Connections to other nodes open now.
    pub fn connected(&self) -> usize {
        self.state
            .lock()
            .expect("peer state poisoned")
            .connections
            .len()
    }

    /// This node's current SWIM identity.
    pub fn identity(&self) -> PeerIdentity {
        self.me.lock().expect("identity poisoned").clone()
    }

    /// Adopt a renewed identity (after SWIM declared the old one down).
    pub fn set_identity(&self, identity: PeerIdentity) {
        *self.me.lock().expect("identity poisoned") = identity;
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("peer state poisoned")
    }

    /// Send a loss-tolerant message (a SWIM datagram) to `to`, dialing it in
    /// the background when there is no connection. Never waits: with a full
    /// queue, a dial in backoff or a full dial backlog, the message is
    /// dropped, which SWIM treats as packet loss.
    pub fn send_datagram(self: &Arc<Self>, to: &PeerIdentity, message: Message) {
        let now_ms = self.env.clock.monotonic_ms();
        let mut state = self.state();
        if state.shut_down {
            return;
        }
        if let Some(connection) = state.connections.get(&to.node) {
            if !connection.try_send(message) {
                tracing::debug!(peer = %to.node.short(), "peer queue full; dropping a datagram");
            }
            return;
        }
        if let Some(backlog) = state.dialing.get_mut(&to.node) {
            if backlog.len() < PEER_DIAL_BACKLOG {
                backlog.push(message);
            }
            return;
        }
        if !state
            .backoff
            .get(&to.node)
            .is_none_or(|b| b.may_dial(now_ms))
        {
            return;
        }
        if let Err(reason) = to.check() {
            tracing::warn!(peer = %to.node.short(), %reason, "not dialing a member with a bad address");
            return;
        }
        state.dialing.insert(to.node, vec![message]);
        drop(state);
        let peers = self.clone();
        let to = to.clone();
        self.spawn(async move {
            let result = peers.dial(&to.addr, Some(to.node)).await;
            peers.dial_finished(to.node, result.is_ok());
            if let Err(error) = result {
                tracing::debug!(peer = %to.node.short(), addr = %to.addr, %error, "dial failed");
            }
        });
    }

    fn dial_finished(&self, node: NodeId, connected: bool) {
        let now_ms = self.env.clock.monotonic_ms();
        let random = self.env.random_u64();
        let mut state = self.state();
        let backlog = state.dialing.remove(&node).unwrap_or_default();
        let backoff = state.backoff.entry(node).or_default();
        if connected {
            backoff.succeeded();
        } else {
            backoff.failed(now_ms, random);
        }
        if let Some(connection) = state.connections.get(&node) {
            for message in backlog {
                connection.try_send(message);
            }
        }
    }

    /// Dial `addr`, authenticate, exchange hellos and register the
    /// connection. With `expected`, the node there must be that node.
    pub async fn dial(
        self: &Arc<Self>,
        addr: &str,
        expected: Option<NodeId>,
    ) -> Result<Arc<PeerConnection>, PeerError> {
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, self.env.net.connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return Err(PeerError::Unreachable(error.to_string())),
            Err(_) => {
                return Err(PeerError::Unreachable(format!(
                    "no answer within {CONNECT_TIMEOUT:?}"
                )));
            }
        };
        let mut secure = connect(
            &self.env,
            stream,
            &self.keypair,
            Credential::Node(&self.cluster_key),
        )
        .await?;
        let remote = secure.remote();
        if let Some(expected) = expected
            && expected != remote
        {
            return Err(PeerError::Refused(format!(
                "{addr} answered as node {} instead of {}",
                remote.short(),
                expected.short()
            )));
        }
        secure.send(&self.hello()).await?;
        let identity = match secure.expect().await?.message {
            Message::PeerHello { identity } => identity,
            other => {
                return Err(PeerError::Refused(format!(
                    "{addr} answered the hello with {}",
                    other.kind()
                )));
            }
        };
        self.check_hello(&secure, &identity)?;
        let me = self.identity().node;
        self.register(secure, identity, me)
    }

    /// Take over an inbound connection whose first message was `hello`:
    /// answer with our hello and register it.
    pub async fn accept(
        self: &Arc<Self>,
        mut secure: SecureStream,
        hello: PeerIdentity,
    ) -> Result<(), PeerError> {
        self.check_hello(&secure, &hello)?;
        secure.send(&self.hello()).await?;
        let dialer = hello.node;
        self.register(secure, hello, dialer).map(|_| ())
    }

    /// Our `PeerHello`, the first message each way on a peer connection.
    fn hello(&self) -> Envelope {
        Envelope {
            request_id: 0,
            message: Message::PeerHello {
                identity: self.identity(),
            },
        }
    }

    fn check_hello(&self, secure: &SecureStream, hello: &PeerIdentity) -> Result<(), PeerError> {
        if hello.node != secure.remote() {
            return Err(PeerError::Refused(format!(
                "hello claims node {} but the handshake authenticated {}",
                hello.node.short(),
                secure.remote().short()
            )));
        }
        if hello.node == self.identity().node {
            return Err(PeerError::Refused(
                "connected to itself (is a bootstrap address this node's own?)".into(),
            ));
        }
        hello.check().map_err(PeerError::Refused)
    }

    /// Make `secure` the connection to `remote`, or drop it in favour of the
    /// one already there. Returns the connection in use.
    fn register(
        self: &Arc<Self>,
        secure: SecureStream,
        remote: PeerIdentity,
        dialed_by: NodeId,
    ) -> Result<Arc<PeerConnection>, PeerError> {
        let me = self.identity().node;
        let (queue_tx, queue_rx) = mpsc::channel(PEER_QUEUE_FRAMES);
        let mut state = self.state();
        if state.shut_down {
            return Err(PeerError::Closed);
        }
        if let Some(existing) = state.connections.get(&remote.node) {
            // Keep the existing one unless the new one is from a restarted
            // peer (higher bump), is a redial in the same direction (the old
            // one is likely dead), or was dialed by the preferred side.
            let preferred_dialer = me.min(remote.node);
            let replace = remote.bump > existing.remote().bump
                || dialed_by == existing.dialed_by()
                || (dialed_by == preferred_dialer && existing.dialed_by() != preferred_dialer);
            if !replace {
                tracing::debug!(peer = %remote.node.short(), "keeping the existing connection; dropping a duplicate");
                return Ok(existing.clone());
            }
            existing.retire();
        }
        state.next_connection_id += 1;
        let connection = Arc::new(PeerConnection::new(
            state.next_connection_id,
            remote.clone(),
            dialed_by,
            queue_tx,
        ));
        let first = state.connections.insert(remote.node, connection.clone());
        if let Some(backlog) = state.dialing.get_mut(&remote.node) {
            for message in backlog.drain(..) {
                connection.try_send(message);
            }
        }
        drop(state);
        if first.is_none() {
            tracing::info!(peer = %remote.node.short(), addr = %remote.addr, "peer connected");
        }
        let (reader, writer) = secure.into_split();
        let peers = self.clone();
        let running = connection.clone();
        let inbound = Inbound {
            swim_inbox: self.swim_inbox.clone(),
            service: self.service.clone(),
            traffic: self.traffic.clone(),
        };
        self.spawn(async move {
            let reason = conn::run(&running, reader, writer, queue_rx, inbound).await;
            let mut state = peers.state();
            let current = state
                .connections
                .get(&running.remote().node)
                .is_some_and(|c| c.id() == running.id());
            if current {
                state.connections.remove(&running.remote().node);
                drop(state);
                tracing::info!(peer = %running.remote().node.short(), %reason, "peer connection closed");
            }
        });
        Ok(connection)
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut tasks = self.tasks.lock().expect("task set poisoned");
        // Reap finished tasks so the set stays as large as what runs.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(task);
    }

    /// Close every connection and stop dialing.
    pub async fn shutdown(&self) {
        let connections: Vec<_> = {
            let mut state = self.state();
            state.shut_down = true;
            state.dialing.clear();
            state.connections.values().cloned().collect()
        };
        for connection in connections {
            connection.close();
        }
        let mut tasks = std::mem::take(&mut *self.tasks.lock().expect("task set poisoned"));
        let drained = tokio::time::timeout(std::time::Duration::from_secs(1), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tasks.abort_all();
        }
    }
}
