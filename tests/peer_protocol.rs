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
