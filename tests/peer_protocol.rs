//! The peer protocol against an in-process node on 127.0.0.1, speaking it by
//! hand: what a well-behaved peer gets, what a hostile key holder cannot
//! do (claim another node's identity, park a huge datagram), and what a
//! client with only an access key cannot do (anything a node does).

use std::time::Duration;

use dfs::cas::ChunkId;
use dfs::env::{Env, tokio_env};
use dfs::keys::credentials::{Credentials, ProvisionedKey};
use dfs::keys::{AccessKeyId, ClusterKey, NodeId, Permission, SecretKey};
use dfs::node::{NodeConfig, Server};
use dfs::peer::PeerIdentity;
use dfs::secure::{Credential, SecureError, SecureStream, connect};
use dfs::wire::{Envelope, ErrorCode, Message};

struct Running {
    env: Env,
    addr: String,
    key: ClusterKey,
    /// An admin access key every test node is provisioned with.
    credentials: Credentials,
    _dir: tempfile::TempDir,
}

fn admin_credentials() -> Credentials {
    Credentials {
        id: AccessKeyId::parse("DFSTESTADMINAAAAAAAA").unwrap(),
        secret: SecretKey::parse(&"A".repeat(40)).unwrap(),
    }
}

async fn start_node() -> Running {
    start_node_on(tokio_env()).await
}

async fn start_node_on(env: Env) -> Running {
    start_node_with(env, Default::default()).await
}

async fn start_node_with(env: Env, replication: dfs::placement::Replication) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let key = ClusterKey::from_bytes([7; 32]);
    let server = Server::start(
        env.clone(),
        NodeConfig {
            data_dir: dir.path().join("data"),
            listen: "127.0.0.1:0".into(),
            bootstrap: Vec::new(),
            advertise: None,
            cluster_key: key.clone(),
            swim: Default::default(),
            replication,
            maintenance: Default::default(),
            disk_free_min_percent: dfs::health::DEFAULT_DISK_FREE_MIN_PERCENT,
            admin_credentials_file: None,
            provisioned_keys: vec![ProvisionedKey {
                name: "test admin".into(),
                credentials: admin_credentials(),
                permission: Permission::admin(),
            }],
            small_blob_bytes_max: dfs::limits::SMALL_BLOB_BYTES_DEFAULT,
        },
    )
    .await
    .unwrap();
    let addr = server.local_addr().to_string();
    tokio::spawn(server.run(std::future::pending()));
    Running {
        env,
        addr,
        key,
        credentials: admin_credentials(),
        _dir: dir,
    }
}

/// Handshake as a fresh node; returns the stream and our node id.
/// `plaintext` sealed as the node's peers send it.
fn sealed(node: &Running, plaintext: &[u8]) -> dfs::store::SealedBlob {
    dfs::store::Sealer::new(&node.key).seal_blob(ChunkId::of(plaintext), plaintext)
}

async fn connect_as_peer(node: &Running) -> (SecureStream, NodeId) {
    let keypair = dfs::keys::StaticKeypair::generate(&node.env);
    let stream = node.env.net.connect(&node.addr).await.unwrap();
    let secure = connect(&node.env, stream, &keypair, Credential::Node(&node.key))
        .await
        .unwrap();
    (secure, keypair.node_id())
}

fn hello(node: NodeId) -> Envelope {
    Envelope {
        request_id: 0,
        message: Message::PeerHello {
            identity: PeerIdentity {
                node,
                addr: "127.0.0.1:1".into(),
                bump: 1,
            },
        },
    }
}

/// The node must close the connection (clean close or error), not answer.
async fn assert_closed(secure: &mut SecureStream) {
    let next = tokio::time::timeout(Duration::from_secs(5), secure.recv())
        .await
        .expect("the node neither answered nor closed");
    assert!(!matches!(next, Ok(Some(_))), "the node answered: {next:?}");
}

#[tokio::test]
async fn a_peer_gets_a_hello_and_multiplexed_replies() {
    let node = start_node().await;
    let (mut secure, me) = connect_as_peer(&node).await;
    secure.send(&hello(me)).await.unwrap();
    let reply = secure.expect().await.unwrap();
    assert!(matches!(reply.message, Message::PeerHello { .. }));
    // Three requests in flight at once, each answered under its own id.
    for id in [5, 6, 7] {
        secure
            .send(&Envelope {
                request_id: id,
                message: Message::Ping,
            })
            .await
            .unwrap();
    }
    let mut answered = Vec::new();
    while answered.len() < 3 {
        let envelope = secure.expect().await.unwrap();
        match envelope.message {
            Message::Pong => answered.push(envelope.request_id),
            // The node's own keepalive or SWIM traffic may interleave.
            Message::Ping | Message::Swim { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    answered.sort();
    assert_eq!(answered, vec![5, 6, 7]);
    // A client request on a peer connection is refused, not served.
    secure
        .send(&Envelope {
            request_id: 9,
            message: Message::List,
        })
        .await
        .unwrap();
    loop {
        let envelope = secure.expect().await.unwrap();
        if envelope.request_id == 9 {
            assert!(matches!(envelope.message, Message::Error { .. }));
            break;
        }
    }
}

#[tokio::test]
async fn a_hello_claiming_another_node_is_refused() {
    let node = start_node().await;
    let (mut secure, _me) = connect_as_peer(&node).await;
    secure.send(&hello(NodeId([0xEE; 32]))).await.unwrap();
    assert_closed(&mut secure).await;
}

#[tokio::test]
async fn an_oversize_swim_datagram_closes_the_connection() {
    let node = start_node().await;
    let (mut secure, me) = connect_as_peer(&node).await;
    secure.send(&hello(me)).await.unwrap();
    secure.expect().await.unwrap();
    secure
        .send(&Envelope {
            request_id: 0,
            message: Message::Swim {
                bytes: vec![0; 1 << 20],
            },
        })
        .await
        .unwrap();
    // Traffic queued before the violation may still arrive; then it closes.
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_secs(5), secure.recv())
        .await
        .expect("the node kept the connection open")
    {}
    // The node still serves a fresh connection.
    let (mut again, me) = connect_as_peer(&node).await;
    again.send(&hello(me)).await.unwrap();
    assert!(matches!(
        again.expect().await.unwrap().message,
        Message::PeerHello { .. }
    ));
}

/// Send one request on a peer connection and wait for its reply (the
/// node's own keepalive and SWIM traffic may interleave).
async fn call(secure: &mut SecureStream, request_id: u64, message: Message) -> Message {
    secure
        .send(&Envelope {
            request_id,
            message,
        })
        .await
        .unwrap();
    loop {
        let envelope = secure.expect().await.unwrap();
        if envelope.request_id == request_id && envelope.message.is_reply() {
            return envelope.message;
        }
    }
}

/// Peers send blobs sealed, as stored: a node stores only bytes whose tag
/// checks for the id they are sent as (plaintext, a blob sealed for
/// another id, one with a byte changed, and one sealed under another
/// cluster's key are refused and not stored), and serves them back sealed.
#[tokio::test]
async fn a_peer_blob_is_stored_only_if_sealed_for_its_id() {
    let node = start_node().await;
    let (mut secure, me) = connect_as_peer(&node).await;
    secure.send(&hello(me)).await.unwrap();
    secure.expect().await.unwrap();
    let plaintext = b"a blob sent by a peer".to_vec();
    let blob = sealed(&node, &plaintext);
    let id = *blob.id();
    let mut changed = blob.bytes().to_vec();
    changed[7] ^= 1;
    let other = sealed(&node, b"another blob");
    let foreign =
        dfs::store::Sealer::new(&ClusterKey::from_bytes([9; 32])).seal_blob(id, &plaintext);
    let wrong: [(&str, bytes::Bytes); 4] = [
        ("plaintext", plaintext.clone().into()),
        ("a byte changed", changed.into()),
        ("sealed for another id", other.into_bytes()),
        ("another cluster's key", foreign.into_bytes()),
    ];
    for (request_id, (what, sealed)) in (10..).zip(wrong) {
        let reply = call(&mut secure, request_id, Message::StoreBlob { id, sealed }).await;
        assert!(
            matches!(
                reply,
                Message::Error {
                    code: ErrorCode::InvalidRequest,
                    ..
                }
            ),
            "{what}: {reply:?}"
        );
        let reply = call(&mut secure, request_id + 100, Message::FetchBlob { id }).await;
        assert!(
            matches!(
                reply,
                Message::Error {
                    code: ErrorCode::NotFound,
                    ..
                }
            ),
            "{what} was stored: {reply:?}"
        );
    }
    let reply = call(
        &mut secure,
        20,
        Message::StoreBlob {
            id,
            sealed: blob.bytes().clone(),
        },
    )
    .await;
    assert!(matches!(reply, Message::BlobStored), "{reply:?}");
    match call(&mut secure, 21, Message::FetchBlob { id }).await {
        Message::BlobData { sealed } => assert_eq!(&sealed, blob.bytes()),
        other => panic!("{other:?}"),
    }
}

/// A manifest whose tag checks but whose bytes are not the ones its id
/// names (sealed wrong by a node's bug or memory error) is refused as
/// corrupt, not served: a valid manifest, of another content, stored
/// under this id by a peer.
#[tokio::test]
async fn a_manifest_sealed_wrong_is_refused_not_served() {
    use dfs::cas::{ContentId, Manifest};
    use dfs::wire::GetTarget;
    let node = start_node().await;
    let (mut secure, me) = connect_as_peer(&node).await;
    secure.send(&hello(me)).await.unwrap();
    secure.expect().await.unwrap();
    let named = ChunkId::of(b"the manifest this id names");
    let other = Manifest::default().encode();
    let sealed = dfs::store::Sealer::new(&node.key).seal(&named, &other);
    let reply = call(
        &mut secure,
        1,
        Message::StoreBlob {
            id: named,
            sealed: sealed.into(),
        },
    )
    .await;
    assert!(matches!(reply, Message::BlobStored), "{reply:?}");
    let mut client = connect_as_client(&node, &admin_credentials())
        .await
        .unwrap();
    let reply = call(
        &mut client,
        2,
        Message::Get {
            target: GetTarget::Content(ContentId(named.0)),
            version: None,
            quorum: false,
        },
    )
    .await;
    assert!(
        matches!(
            reply,
            Message::Error {
                code: ErrorCode::Corrupt,
                ..
            }
        ),
        "{reply:?}"
    );
}

/// README, Versions: a record or floor more than the maximum clock offset
/// ahead of the node's clock is refused (the sender counts no
/// acknowledgement); one within the offset is merged.
#[tokio::test]
async fn records_from_beyond_the_clock_offset_are_refused() {
    use dfs::limits::CLOCK_OFFSET_MAX;
    use dfs::meta::{Floor, VersionId, VersionRecord};

    let node = start_node().await;
    let (mut secure, me) = connect_as_peer(&node).await;
    secure.send(&hello(me)).await.unwrap();
    secure.expect().await.unwrap();
    let offset_ms = CLOCK_OFFSET_MAX.as_millis() as u64;
    let record = |name: &str, ahead_ms: u64| VersionRecord {
        name: name.into(),
        vid: VersionId {
            wall_ms: node.env.clock.unix_ms() + ahead_ms,
            counter: 0,
            node: me,
        },
        forgotten: false,
        content: None,
        size: 0,
        by: None,
        etag: None,
        null_version: false,
    };
    let far = record("far", offset_ms + 60_000);
    let near = record("near", offset_ms / 2);
    let reply = call(
        &mut secure,
        1,
        Message::ApplyRecords {
            records: vec![far.clone(), near.clone()],
            floors: Vec::new(),
        },
    )
    .await;
    match reply {
        Message::Error { message, .. } => assert!(message.contains("ahead"), "{message}"),
        other => panic!("a record from the future was acknowledged: {other:?}"),
    }
    let floor = Floor {
        name: "near".into(),
        floor: record("near", offset_ms + 60_000).vid,
    };
    let reply = call(
        &mut secure,
        2,
        Message::ApplyRecords {
            records: Vec::new(),
            floors: vec![floor],
        },
    )
    .await;
    assert!(matches!(reply, Message::Error { .. }), "{reply:?}");
    // The record within the offset was merged, the far one and the floor
    // (which would have erased "near") were not.
    for (id, name, expected) in [(3, "far", None), (4, "near", Some(near))] {
        let reply = call(&mut secure, id, Message::CurrentOf { name: name.into() }).await;
        match reply {
            // The current record (and the stubs of deletions above it).
            Message::Records { records } => {
                assert_eq!(records, Vec::from_iter(expected), "{name}")
            }
            other => panic!("{other:?}"),
        }
    }
}

/// Sockets that never authenticate (no key, a port scan, a slowloris) do
/// not lock clients out: they wait for handshake slots, bounded per host,
/// not for the serving slots of authenticated connections.
#[tokio::test]
async fn idle_unauthenticated_sockets_do_not_lock_out_a_client() {
    use dfs::client::Client;
    use dfs::limits::CONNECTIONS_MAX;

    let node = start_node().await;
    let target: std::net::SocketAddr = node.addr.parse().unwrap();
    // More idle sockets than there are serving slots, from another host
    // (127.0.0.2: every 127/8 address is this machine on Linux).
    let mut idle = Vec::new();
    for _ in 0..CONNECTIONS_MAX + 16 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        idle.push(socket.connect(target).await.unwrap());
    }
    let mut client = Client::connect(&node.env, &node.addr, &node.credentials)
        .await
        .expect("a client with the key is served while idle sockets wait");
    let record = client
        .put("still-served", &mut &b"hello"[..], &mut |_| {})
        .await
        .unwrap();
    assert_eq!(record.size, 5);
    drop(idle);
}

/// A disk that can stall: while stalled, blocking jobs wait in a queue
/// (each keeps what it captured, a blob's bytes for a write).
#[derive(Default)]
struct StallingDisk {
    stalled: std::sync::atomic::AtomicBool,
    parked: std::sync::Mutex<Vec<Box<dyn FnOnce() + Send>>>,
}

impl StallingDisk {
    fn parked(&self) -> usize {
        self.parked.lock().unwrap().len()
    }

    #[allow(clippy::disallowed_methods)] // This is the executor.
    fn resume(&self) {
        self.stalled
            .store(false, std::sync::atomic::Ordering::SeqCst);
        for job in std::mem::take(&mut *self.parked.lock().unwrap()) {
            std::thread::spawn(job);
        }
    }
}

/// The test's own blocking pool: one thread per job (the node's jobs are
/// few here), parked while the disk is stalled.
struct Stalling(std::sync::Arc<StallingDisk>);

impl dfs::env::Executor for Stalling {
    #[allow(clippy::disallowed_methods)] // This is the executor.
    fn run_blocking(&self, job: Box<dyn FnOnce() + Send>) {
        if self.0.stalled.load(std::sync::atomic::Ordering::SeqCst) {
            self.0.parked.lock().unwrap().push(job);
        } else {
            std::thread::spawn(job);
        }
    }
}

/// Issue 9, item 8: the work a request starts must not outlive it without
/// bound. A disk job runs to its end even when its request is gone, so a
/// peer (or client) that sends blobs to a stalled disk, disconnects and
/// comes back could pile up blob writes, each holding its bytes, for as
/// long as it liked. Writes submitted to the disk are bounded, and a
/// request waiting for one is dropped with its connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_sent_to_a_stalled_disk_by_reconnecting_peers_pile_up_only_to_a_bound() {
    use dfs::limits::DISK_WRITES_IN_FLIGHT;

    let disk = std::sync::Arc::new(StallingDisk::default());
    let mut env = tokio_env();
    env.executor = std::sync::Arc::new(Stalling(disk.clone()));
    let node = start_node_on(env).await;
    disk.stalled
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let connections = 12;
    let blobs_each = 8;
    for c in 0..connections {
        let (mut secure, me) = connect_as_peer(&node).await;
        secure.send(&hello(me)).await.unwrap();
        secure.expect().await.unwrap();
        for b in 0..blobs_each {
            let blob = sealed(&node, &[(c * blobs_each + b) as u8; 64 * 1024]);
            secure
                .send(&Envelope {
                    request_id: 1 + b as u64,
                    message: Message::StoreBlob {
                        id: *blob.id(),
                        sealed: blob.into_bytes(),
                    },
                })
                .await
                .unwrap();
        }
        // Let the node read them, then go away without waiting.
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(secure);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let parked = disk.parked();
    // The node's own background work (membership, sync, repair, scrub)
    // may park a few jobs of its own beside the writes.
    assert!(
        parked <= DISK_WRITES_IN_FLIGHT + 8,
        "{parked} disk jobs wait on the stalled disk for {} blobs sent by peers that left (bound {DISK_WRITES_IN_FLIGHT})",
        connections * blobs_each
    );
    // The disk comes back and the node serves as before.
    disk.resume();
    let (mut secure, me) = connect_as_peer(&node).await;
    secure.send(&hello(me)).await.unwrap();
    secure.expect().await.unwrap();
    let blob = sealed(&node, b"after the stall");
    let reply = call(
        &mut secure,
        100,
        Message::StoreBlob {
            id: *blob.id(),
            sealed: blob.into_bytes(),
        },
    )
    .await;
    assert!(matches!(reply, Message::BlobStored), "{reply:?}");
}

/// A source that yields `left` bytes of varied data, then never ends (a
/// client that stalls mid-upload).
struct StallsAfter {
    left: usize,
    state: u64,
}

impl tokio::io::AsyncRead for StallsAfter {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.left == 0 {
            return std::task::Poll::Pending;
        }
        let n = buf.remaining().min(self.left).min(64 * 1024);
        let mut chunk = vec![0u8; n];
        for byte in chunk.iter_mut() {
            self.state = self
                .state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            *byte = (self.state >> 56) as u8;
        }
        self.left -= n;
        buf.put_slice(&chunk);
        std::task::Poll::Ready(Ok(()))
    }
}

/// Issue 9, item 8: a put's chunk stores ran on after their client went
/// away, outside every connection bound. Clients that upload to a stalled
/// disk and give up leave no task behind: the put's pipeline is dropped
/// with its connection. (A put whose pipeline is full waits on the disk
/// before it reads again, so it notices its client's departure only once
/// the disk moves: its tasks stay inside its connection slot.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_abandoned_on_a_stalled_disk_leave_no_tasks_behind() {
    let disk = std::sync::Arc::new(StallingDisk::default());
    let mut env = tokio_env();
    env.executor = std::sync::Arc::new(Stalling(disk.clone()));
    let replication = dfs::placement::Replication {
        replicas: 1,
        write_quorum: 1,
    };
    let node = start_node_with(env, replication).await;
    // The disk stalls: every chunk store the puts below start waits on it.
    disk.stalled
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let mut baseline = None;
    for round in 0..8u64 {
        let mut client = dfs::client::Client::connect(&node.env, &node.addr, &node.credentials)
            .await
            .unwrap();
        let mut source = StallsAfter {
            left: 3 << 20,
            state: round + 1,
        };
        let name = format!("abandoned-{round}");
        let mut progress = |_| {};
        let put = client.put(&name, &mut source, &mut progress);
        assert!(
            tokio::time::timeout(Duration::from_millis(800), put)
                .await
                .is_err(),
            "a put to a stalled disk finished"
        );
        drop(client);
        tokio::time::sleep(Duration::from_millis(100)).await;
        if round == 1 {
            baseline = Some(tasks());
        }
    }
    let baseline = baseline.unwrap();
    let now = tasks();
    // Six more abandoned puts of 3 MiB: a chunk or two each (the chunker
    // first looks for a cut once it holds two average chunks), fewer than
    // the put pipeline holds, so the node is reading when the client goes;
    // without the abort, each left its chunk stores waiting on the disk.
    assert!(
        now <= baseline + 4,
        "{now} tasks alive after six more abandoned puts (was {baseline})"
    );
    disk.resume();
}

/// Connect as a client with `credentials`.
async fn connect_as_client(
    node: &Running,
    credentials: &Credentials,
) -> Result<SecureStream, SecureError> {
    let keypair = dfs::keys::StaticKeypair::generate(&node.env);
    let stream = node.env.net.connect(&node.addr).await.unwrap();
    connect(&node.env, stream, &keypair, Credential::Client(credentials)).await
}

/// Issue 10: a client holding only an access key (even an admin key)
/// cannot speak as a node: its PeerHello closes the connection, and peer
/// requests (a floor that would erase a history everywhere) are refused
/// and change nothing.
#[tokio::test]
async fn a_client_with_an_access_key_gets_no_peer_message_served() {
    use dfs::meta::{Floor, VersionId};

    let node = start_node().await;
    let mut client = dfs::client::Client::connect(&node.env, &node.addr, &node.credentials)
        .await
        .unwrap();
    client
        .put("precious", &mut &b"history"[..], &mut |_| {})
        .await
        .unwrap();

    let mut secure = connect_as_client(&node, &node.credentials).await.unwrap();
    let floor = Floor {
        name: "precious".into(),
        floor: VersionId {
            wall_ms: node.env.clock.unix_ms(),
            counter: u32::MAX,
            node: NodeId([0xFF; 32]),
        },
    };
    let forged = Message::ApplyRecords {
        records: Vec::new(),
        floors: vec![floor],
    };
    let reply = call(&mut secure, 1, forged).await;
    assert!(
        matches!(reply, Message::Error { .. }),
        "a client's ApplyRecords was answered {reply:?}"
    );
    let reply = call(&mut secure, 2, Message::FetchKeys { digest: [0; 32] }).await;
    assert!(matches!(reply, Message::Error { .. }), "{reply:?}");
    // A PeerHello on a client connection closes it.
    let me = dfs::keys::StaticKeypair::generate(&node.env).node_id();
    secure.send(&hello(me)).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), secure.recv())
        .await
        .expect("the node neither answered nor closed");
    assert!(
        !matches!(
            next,
            Ok(Some(Envelope {
                message: Message::PeerHello { .. },
                ..
            }))
        ),
        "a client was taken for a peer"
    );
    // The history is whole.
    let mut client = dfs::client::Client::connect(&node.env, &node.addr, &node.credentials)
        .await
        .unwrap();
    let (history, _) = client.versions("precious").await.unwrap();
    assert_eq!(history.len(), 1);
}

/// Unknown key, wrong secret: refused in the handshake with the reason,
/// and no request is served.
#[tokio::test]
async fn unknown_keys_and_wrong_secrets_are_refused_in_the_handshake() {
    let node = start_node().await;
    let unknown = Credentials {
        id: AccessKeyId::parse("DFSUNKNOWNKEYAAAAAAA").unwrap(),
        secret: SecretKey::parse(&"u".repeat(40)).unwrap(),
    };
    match connect_as_client(&node, &unknown).await {
        Err(SecureError::AccessKeyRefused { reason, .. }) => {
            assert!(reason.contains("unknown access key"), "{reason}")
        }
        other => panic!(
            "an unknown key got {other:?}",
            other = other.map(|_| "a session")
        ),
    }
    let wrong = Credentials {
        id: node.credentials.id,
        secret: SecretKey::parse(&"w".repeat(40)).unwrap(),
    };
    match connect_as_client(&node, &wrong).await {
        Err(SecureError::AccessKeyRefused { reason, .. }) => {
            assert!(reason.contains("wrong secret"), "{reason}")
        }
        other => panic!(
            "a wrong secret got {other:?}",
            other = other.map(|_| "a session")
        ),
    }
    // A node credential without the cluster key fails too.
    let keypair = dfs::keys::StaticKeypair::generate(&node.env);
    let stream = node.env.net.connect(&node.addr).await.unwrap();
    let stranger = ClusterKey::from_bytes([0x55; 32]);
    assert!(
        connect(&node.env, stream, &keypair, Credential::Node(&stranger))
            .await
            .is_err()
    );
}

/// A holder of the cluster key that sends client requests instead of a
/// PeerHello is not served: clients need an access key.
#[tokio::test]
async fn the_cluster_key_alone_serves_no_client_request() {
    let node = start_node().await;
    let (mut secure, _) = connect_as_peer(&node).await;
    secure
        .send(&Envelope {
            request_id: 1,
            message: Message::List,
        })
        .await
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), secure.recv())
        .await
        .expect("the node neither answered nor closed");
    assert!(
        !matches!(
            next,
            Ok(Some(Envelope {
                message: Message::Listing { .. },
                ..
            }))
        ),
        "a cluster key holder was served a listing"
    );
}

#[allow(clippy::disallowed_methods)] // Measures a wait on the real clock.
/// Repeated failures from one address are slowed down: after a few
/// refused secrets, each new client handshake from that host waits longer
/// (100 ms doubling). A node's handshake from the same host is not slowed.
#[tokio::test]
async fn a_host_that_keeps_presenting_wrong_secrets_is_slowed_down() {
    let node = start_node().await;
    let wrong = Credentials {
        id: node.credentials.id,
        secret: SecretKey::parse(&"w".repeat(40)).unwrap(),
    };
    let mut took = Vec::new();
    for _ in 0..8 {
        let started = std::time::Instant::now();
        assert!(connect_as_client(&node, &wrong).await.is_err());
        took.push(started.elapsed());
    }
    // Failures 1-3 are free; the 8th attempt follows 7 failures: 800 ms.
    assert!(
        took[7] >= Duration::from_millis(800),
        "the 8th wrong secret was answered after {:?} ({took:?})",
        took[7]
    );
    let started = std::time::Instant::now();
    let (mut secure, me) = connect_as_peer(&node).await;
    secure.send(&hello(me)).await.unwrap();
    assert!(matches!(
        secure.expect().await.unwrap().message,
        Message::PeerHello { .. }
    ));
    assert!(
        started.elapsed() < Duration::from_millis(800),
        "a node's handshake waited {:?}",
        started.elapsed()
    );
    // The right key still gets in (after its wait), and clears the slate.
    connect_as_client(&node, &node.credentials).await.unwrap();
    let started = std::time::Instant::now();
    connect_as_client(&node, &node.credentials).await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(800));
}

/// A key removed while a connection with it is open: that connection's
/// next request is refused (Unauthorized) and the connection closes. An
/// admin cannot remove the last admin key, nor make an admin key limited
/// to a prefix.
#[tokio::test]
async fn a_key_removed_while_its_connection_is_open_is_refused_at_the_next_request() {
    use dfs::client::Client;
    use dfs::keys::Access;

    let node = start_node().await;
    let mut admin = Client::connect(&node.env, &node.addr, &node.credentials)
        .await
        .unwrap();
    let writer = Permission {
        access: Access::ReadWrite,
        prefixes: Vec::new(),
    };
    let (key, secret) = admin.create_key("leaving", writer).await.unwrap();
    let leaving = Credentials {
        id: key.id,
        secret: SecretKey::parse(&secret).unwrap(),
    };
    let mut open = Client::connect(&node.env, &node.addr, &leaving)
        .await
        .unwrap();
    open.list().await.unwrap();
    admin.remove_key(key.id).await.unwrap();
    let refused = open.list().await.unwrap_err();
    assert!(refused.is_refused_key(), "{refused}");
    assert!(open.list().await.is_err(), "the connection stayed open");

    let last = admin.remove_key(node.credentials.id).await.unwrap_err();
    assert!(last.to_string().contains("last admin key"), "{last}");
    let scoped = Permission {
        access: Access::Admin,
        prefixes: vec!["team/".into()],
    };
    let refused = admin.create_key("scoped", scoped).await.unwrap_err();
    assert!(
        refused.to_string().contains("admin key cannot be limited"),
        "{refused}"
    );
}

/// A chunked put, spoken by hand: the node hashes what it is sent and
/// takes references only to chunks of the named base. Hostile pieces (a
/// chunk id not in the base, a reference without a base, an empty chunk,
/// a base that does not exist) are refused with a clear error, record
/// nothing, and leave the connection usable; an honest one stores what
/// the references and new chunks spell, in order.
#[tokio::test]
async fn a_chunked_put_reuses_only_chunks_of_its_base() {
    use dfs::cas::{ChunkId, Chunker};
    use dfs::wire::{ErrorCode, GetTarget};

    let node = start_node().await;
    let mut client = dfs::client::Client::connect(&node.env, &node.addr, &node.credentials)
        .await
        .unwrap();
    // Several chunks (the node's chunker cuts at 256 KiB or more).
    let mut original = vec![0u8; 3 << 20];
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for byte in &mut original {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *byte = (state >> 56) as u8;
    }
    let base = client
        .put_reusing("doc", &mut original.as_slice(), &mut |_| {})
        .await
        .unwrap();
    let mut chunker = Chunker::default();
    chunker.push(&original[..]);
    chunker.finish();
    let chunks: Vec<_> = std::iter::from_fn(|| chunker.next_chunk()).collect();
    assert!(chunks.len() >= 3, "{} chunks", chunks.len());
    let ids: Vec<ChunkId> = chunks.iter().map(|c| ChunkId::of(c)).collect();

    let mut secure = connect_as_client(&node, &node.credentials).await.unwrap();
    let mut refusals = Vec::new();
    for (pieces, base) in [
        // A chunk id that is not in the base (a guess at someone's data).
        (
            vec![Message::PutReuse {
                ids: vec![ChunkId([0xAB; 32])],
            }],
            Some(base.vid),
        ),
        // References without a base.
        (vec![Message::PutReuse { ids: vec![ids[0]] }], None),
        // An empty chunk.
        (
            vec![Message::PutChunk {
                bytes: Default::default(),
            }],
            None,
        ),
        // A base that does not exist.
        (
            vec![Message::PutReuse { ids: vec![ids[0]] }],
            Some(dfs::meta::VersionId {
                wall_ms: 1,
                counter: 0,
                node: NodeId([1; 32]),
            }),
        ),
    ] {
        match chunked_put(&mut secure, "doc", base, pieces).await {
            Message::Error { code, message } => refusals.push((code, message)),
            other => panic!("a hostile chunked put was answered {other:?}"),
        }
    }
    let codes: Vec<_> = refusals.iter().map(|(code, _)| *code).collect();
    assert_eq!(
        codes,
        [
            ErrorCode::InvalidRequest,
            ErrorCode::InvalidRequest,
            ErrorCode::InvalidRequest,
            ErrorCode::NotFound
        ],
        "{refusals:?}"
    );
    assert!(
        refusals[0].1.contains("is not one of version"),
        "{refusals:?}"
    );
    let (history, _) = client.versions("doc").await.unwrap();
    assert_eq!(history.len(), 1, "a refused put recorded a version");

    // Honest: the first chunk reused, a new chunk, then the rest reused.
    let new_chunk = bytes::Bytes::from(vec![7u8; 300_000]);
    let pieces = vec![
        Message::PutReuse { ids: vec![ids[0]] },
        Message::PutChunk {
            bytes: new_chunk.clone(),
        },
        Message::PutReuse {
            ids: ids[1..].to_vec(),
        },
    ];
    let reply = chunked_put(&mut secure, "doc", Some(base.vid), pieces).await;
    let Message::PutDone { record } = reply else {
        panic!("an honest chunked put was answered {reply:?}");
    };
    let mut expected = chunks[0].to_vec();
    expected.extend_from_slice(&new_chunk);
    for chunk in &chunks[1..] {
        expected.extend_from_slice(chunk);
    }
    assert_eq!(record.size, expected.len() as u64);
    let mut read = Vec::new();
    client
        .get(
            GetTarget::Name("doc".into()),
            None,
            &mut read,
            &mut |_, _| {},
        )
        .await
        .unwrap();
    assert!(
        read == expected,
        "the new version reads back different bytes"
    );
}

/// Send a chunked put of `name` by hand (start, `pieces`, finish) on a
/// client connection and return its answer.
async fn chunked_put(
    secure: &mut SecureStream,
    name: &str,
    base: Option<dfs::meta::VersionId>,
    pieces: Vec<Message>,
) -> Message {
    let start = Message::PutChunkedStart {
        name: name.into(),
        base,
    };
    let frames = std::iter::once(start)
        .chain(pieces)
        .chain(std::iter::once(Message::PutFinish));
    for message in frames {
        secure
            .send(&Envelope {
                request_id: 1,
                message,
            })
            .await
            .unwrap();
    }
    let reply = secure.expect().await.unwrap();
    assert_eq!(reply.request_id, 1);
    reply.message
}
