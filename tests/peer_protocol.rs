//! The peer protocol against an in-process node on 127.0.0.1, speaking it by
//! hand: what a well-behaved peer gets, and what a hostile key holder cannot
//! do (claim another node's identity, park a huge datagram).

use std::time::Duration;

use dfs::env::{Env, tokio_env};
use dfs::keys::{ClusterKey, NodeId};
use dfs::node::{NodeConfig, Server};
use dfs::peer::PeerIdentity;
use dfs::secure::{Role, SecureStream, generate_keypair, handshake};
use dfs::wire::{Envelope, Message};

struct Running {
    env: Env,
    addr: String,
    key: ClusterKey,
    _dir: tempfile::TempDir,
}

async fn start_node() -> Running {
    let env = tokio_env();
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
            replication: Default::default(),
            maintenance: Default::default(),
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
        _dir: dir,
    }
}

/// Handshake as a fresh node; returns the stream and our node id.
async fn connect_as_peer(node: &Running) -> (SecureStream, NodeId) {
    let keypair = generate_keypair(&node.env);
    let stream = node.env.net.connect(&node.addr).await.unwrap();
    let secure = handshake(&node.env, stream, Role::Initiator, &keypair, &node.key)
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
        content: None,
        size: 0,
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
            Message::Current { record } => assert_eq!(record, expected, "{name}"),
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
    let mut client = Client::connect(&node.env, &node.addr, &node.key)
        .await
        .expect("a client with the key is served while idle sockets wait");
    let record = client
        .put("still-served", &mut &b"hello"[..], &mut |_| {})
        .await
        .unwrap();
    assert_eq!(record.size, 5);
    drop(idle);
}
