//! A client-key intruder (issue 10): it holds the clients' access key (an
//! admin key, the strongest a client has) and, throughout the run, speaks
//! as a node to random nodes: a `PeerHello`, a prune floor that would
//! erase every name's history on every node, a removal of its own key, a
//! blob, a keep, a key fetch. None may be served. A served one is a
//! violation at once; one that slipped through unnoticed would show as a
//! lost acknowledged version or clients refused (durability, liveness).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use dfs::cas::ChunkId;
use dfs::keys::{NodeId, StaticKeypair};
use dfs::meta::{Floor, KeyRecord, VersionId};
use dfs::peer::PeerIdentity;
use dfs::secure::{Credential, SecureStream, connect};
use dfs::wire::{Envelope, Message};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use super::session::History;
use super::{Config, NAMES, PORT};
use crate::env::client_env;
use crate::replication::nodes::host;

/// What the intruder sends on one connection, in order.
fn attempts(now_ms: u64, me: NodeId, seed: u64) -> Vec<Message> {
    let floor = |name: String| Floor {
        name,
        floor: VersionId {
            // Within the clock offset: a node that took it would drop
            // every version of the name.
            wall_ms: now_ms,
            counter: u32::MAX,
            node: NodeId([0xFF; 32]),
        },
    };
    let credentials = crate::workload::client_credentials(seed);
    let removal = KeyRecord {
        id: credentials.id,
        name: "simulation".into(),
        permission: dfs::keys::Permission::admin(),
        sealed_secret: Vec::new(),
        created_ms: 0,
        version: VersionId {
            wall_ms: now_ms,
            counter: 0,
            node: me,
        },
        removed: true,
    };
    // Sealed as a node would seal it (the intruder learnt the cluster's
    // data key, say), so only the refusal of a client key as a peer can
    // keep it out.
    let blob = b"an intruder's blob".to_vec();
    let sealed = dfs::store::Sealer::new(&crate::workload::cluster_key(seed))
        .seal_blob(ChunkId::of(&blob), &blob);
    vec![
        Message::ApplyRecords {
            records: Vec::new(),
            floors: (0..NAMES).map(|n| floor(format!("file-{n}"))).collect(),
        },
        Message::ApplyKeys {
            keys: vec![removal],
        },
        Message::StoreBlob {
            id: *sealed.id(),
            sealed: sealed.into_bytes(),
        },
        Message::KeepBlobs {
            ids: vec![ChunkId([7; 32])],
        },
        Message::FetchKeys { digest: [0; 32] },
        Message::PeerHello {
            identity: PeerIdentity {
                node: me,
                addr: "intruder:7400".into(),
                bump: 1,
            },
        },
    ]
}

/// Whether a reply means the request was served.
fn served(reply: &Message) -> bool {
    !matches!(reply, Message::Error { .. })
}

pub(super) async fn intruder(
    seed: u64,
    config: Config,
    history: Rc<RefCell<History>>,
) -> turmoil::Result {
    let env = client_env(seed ^ 0x1A7B_C11E);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x1A7B_C11F);
    let credentials = crate::workload::client_credentials(seed);
    let identity = StaticKeypair::generate(&env);
    // While the workload runs (its sessions take about this long).
    for _ in 0..config.operations {
        tokio::time::sleep(Duration::from_millis(500 + rng.next_u64() % 2_500)).await;
        let node = (rng.next_u64() % config.nodes as u64) as usize;
        let Ok(Ok(stream)) = tokio::time::timeout(
            Duration::from_secs(5),
            env.net.connect(&format!("{}:{PORT}", host(node))),
        )
        .await
        else {
            continue;
        };
        let Ok(mut secure) =
            connect(&env, stream, &identity, Credential::Client(&credentials)).await
        else {
            continue;
        };
        let now_ms = env.clock.unix_ms();
        for (i, attempt) in attempts(now_ms, identity.node_id(), seed)
            .into_iter()
            .enumerate()
        {
            let kind = attempt.kind();
            match exchange(&mut secure, i as u64 + 1, attempt).await {
                Some(reply) if served(&reply) => {
                    history.borrow_mut().violations.push(format!(
                        "admission: node{node} served a client-key holder's {kind} (answered {})",
                        reply.kind()
                    ));
                }
                Some(_) => history.borrow_mut().intruder_refusals += 1,
                // Closed (a PeerHello) or cut by the nemesis: nothing served.
                None => {
                    history.borrow_mut().intruder_refusals += 1;
                    break;
                }
            }
        }
    }
    Ok(())
}

/// Send one request and wait for its reply; `None` if the connection ends.
async fn exchange(secure: &mut SecureStream, request_id: u64, message: Message) -> Option<Message> {
    let envelope = Envelope {
        request_id,
        message,
    };
    tokio::time::timeout(Duration::from_secs(10), secure.send(&envelope))
        .await
        .ok()?
        .ok()?;
    let reply = tokio::time::timeout(Duration::from_secs(10), secure.recv())
        .await
        .ok()?
        .ok()??;
    Some(reply.message)
}
