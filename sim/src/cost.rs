//! What a cluster spends as it grows: the simulation runs clusters of N
//! nodes without faults and counts, per node, the bytes its connections
//! write (Noise framing included) and the frames it sends to other nodes:
//! at idle (membership and anti-entropy), per put and per get (through
//! one node, 256 KiB objects: one chunk and a manifest), and what the
//! cluster moves when a node joins and when one leaves for good (repair).
//!
//! A measurement, not a check: `cargo test -p sim --release --test cost --
//! --ignored --nocapture` prints the table README's Limits shows; CI runs
//! N = 3 to keep the code working.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use dfs::client::Client;
use dfs::node::{NodeConfig, Server};
use dfs::peer::MemberView;
use dfs::wire::{GetTarget, MemberState};

use crate::env::{DiskFaults, WireTraffic, client_env, sim_env};
use crate::harness::sim_builder;

const PORT: u16 = 7400;
/// Objects put, then read back, per measurement.
const OPS: usize = 20;
const OBJECT_BYTES: usize = 256 * 1024;
/// Idle measurement window; join and leave windows.
const IDLE: Duration = Duration::from_secs(60);
const MOVE_WINDOW: Duration = Duration::from_secs(120);

fn host(i: usize) -> String {
    format!("node{i}")
}

/// What one node exposes to the measurement.
#[derive(Default)]
struct Probe {
    traffic: Option<Arc<WireTraffic>>,
    frames: Option<Arc<dyn Fn() -> u64>>,
    view: Option<Arc<MemberView>>,
}

type Probes = Rc<RefCell<Vec<Probe>>>;

/// One row of the table.
#[derive(Debug, Clone, Copy)]
pub struct CostRow {
    pub nodes: usize,
    /// Per node per second at idle, the test's objects in the index.
    pub idle_bytes: f64,
    pub idle_frames: f64,
    /// The whole cluster, per operation: what the nodes write, so a get
    /// includes the object sent to the client and a put does not include
    /// what the client sent.
    pub put_bytes: f64,
    pub put_frames: f64,
    pub get_bytes: f64,
    pub get_frames: f64,
    /// The whole cluster, above idle, in the window after a node joins
    /// and after one leaves for good; the data stored then.
    pub join_bytes: f64,
    pub leave_bytes: f64,
    pub stored_bytes: f64,
}

/// Totals over the live nodes: (bytes written, peer frames sent).
fn totals(probes: &Probes, skip: Option<usize>) -> (f64, f64) {
    let probes = probes.borrow();
    let mut bytes = 0u64;
    let mut frames = 0u64;
    for (i, probe) in probes.iter().enumerate() {
        if Some(i) == skip {
            continue;
        }
        if let Some(traffic) = &probe.traffic {
            bytes += traffic.sent.load(std::sync::atomic::Ordering::Relaxed);
        }
        if let Some(frames_sent) = &probe.frames {
            frames += frames_sent();
        }
    }
    (bytes as f64, frames as f64)
}

fn add_node(sim: &mut turmoil::Sim<'_>, seed: u64, index: usize, probes: &Probes) {
    let probes = probes.clone();
    sim.host(host(index), move || {
        let node_env = sim_env(
            seed.wrapping_mul(7_919).wrapping_add(index as u64),
            DiskFaults::new(0, 0),
        );
        let config = NodeConfig {
            data_dir: "/data".into(),
            listen: format!("0.0.0.0:{PORT}"),
            bootstrap: if index == 0 {
                Vec::new()
            } else {
                vec![format!("{}:{PORT}", host(0))]
            },
            advertise: Some(format!("{}:{PORT}", host(index))),
            cluster_key: dfs::keys::ClusterKey::from_bytes([7; 32]),
            swim: Default::default(),
            replication: Default::default(),
            maintenance: Default::default(),
            disk_free_min_percent: dfs::health::DEFAULT_DISK_FREE_MIN_PERCENT,
            admin_credentials_file: None,
            provisioned_keys: crate::workload::provisioned_keys(seed),
            small_blob_bytes_max: crate::workload::small_blob_bytes_max(seed),
        };
        probes.borrow_mut()[index].traffic = Some(node_env.traffic());
        let env = node_env.env.clone();
        let probes = probes.clone();
        node_env.host_software(async move {
            let server = Server::start(env, config).await?;
            {
                let node = server.node().clone();
                let mut probes = probes.borrow_mut();
                probes[index].view = Some(server.node().members().clone());
                probes[index].frames = Some(Arc::new(move || {
                    node.peer_traffic()
                        .frames_sent
                        .load(std::sync::atomic::Ordering::Relaxed)
                }));
            }
            server.run(std::future::pending()).await;
            Ok(())
        })
    });
}

/// Every one of the first `nodes` nodes sees the others alive.
fn formed(probes: &Probes, nodes: usize) -> bool {
    let probes = probes.borrow();
    probes[..nodes].iter().all(|p| {
        p.view.as_ref().is_some_and(|v| {
            v.members()
                .iter()
                .filter(|m| m.state == MemberState::Alive)
                .count()
                >= nodes - 1
        })
    })
}

/// Measure a cluster of `nodes` nodes.
pub fn measure(nodes: usize, seed: u64) -> Result<CostRow, String> {
    let mut sim = sim_builder(seed, Duration::from_millis(5))
        .simulation_duration(Duration::from_secs(3600))
        .build();
    let probes: Probes = Rc::new(RefCell::new(
        (0..=nodes).map(|_| Probe::default()).collect(),
    ));
    for i in 0..nodes {
        add_node(&mut sim, seed, i, &probes);
    }
    // The client waits for its turn: 1 = put, 3 = get; it answers 2, 4.
    let phase = Rc::new(Cell::new(0u8));
    {
        let phase = phase.clone();
        sim.client("client", async move {
            let env = client_env(seed ^ 0xC11E);
            let credentials = crate::workload::client_credentials(seed);
            while phase.get() != 1 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let mut client = Client::connect(&env, &format!("{}:{PORT}", host(0)), &credentials)
                .await
                .map_err(|e| e.to_string())?;
            for i in 0..OPS {
                let body = vec![i as u8; OBJECT_BYTES];
                client
                    .put(&format!("cost/{i}"), &mut body.as_slice(), &mut |_| {})
                    .await
                    .map_err(|e| e.to_string())?;
            }
            phase.set(2);
            while phase.get() != 3 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let mut client = Client::connect(&env, &format!("{}:{PORT}", host(1)), &credentials)
                .await
                .map_err(|e| e.to_string())?;
            for i in 0..OPS {
                let mut out = Vec::new();
                client
                    .get(
                        GetTarget::Name(format!("cost/{i}")),
                        None,
                        &mut out,
                        &mut |_, _| {},
                    )
                    .await
                    .map_err(|e| e.to_string())?;
            }
            phase.set(4);
            std::future::pending::<()>().await;
            Ok(())
        });
    }
    let run_for = |sim: &mut turmoil::Sim<'_>, span: Duration| -> Result<(), String> {
        let until = sim.elapsed() + span;
        while sim.elapsed() < until {
            sim.step().map_err(|e| format!("simulation error: {e}"))?;
        }
        Ok(())
    };
    let step_until = |sim: &mut turmoil::Sim<'_>, what: &str, done: &dyn Fn() -> bool| {
        let give_up = sim.elapsed() + Duration::from_secs(600);
        while !done() {
            if sim.elapsed() > give_up {
                return Err(format!("{what}: not within 600 s"));
            }
            sim.step().map_err(|e| format!("simulation error: {e}"))?;
        }
        Ok(())
    };
    step_until(&mut sim, "the cluster forms", &|| formed(&probes, nodes))?;
    // Let the first anti-entropy and key exchanges settle.
    run_for(&mut sim, Duration::from_secs(30))?;

    // Idle per node per second, over `IDLE` from now.
    let idle = |sim: &mut turmoil::Sim<'_>, skip: Option<usize>, live: usize| {
        let (b0, f0) = totals(&probes, skip);
        run_for(sim, IDLE)?;
        let (b1, f1) = totals(&probes, skip);
        let per = live as f64 * IDLE.as_secs_f64();
        Ok::<_, String>(((b1 - b0) / per, (f1 - f0) / per))
    };
    // The cluster's background while its index is still almost empty:
    // subtracted from the put and get windows (a second or two).
    let (empty_bytes, empty_frames) = idle(&mut sim, None, nodes)?;
    let (b1, f1) = totals(&probes, None);
    let above_idle = |bytes: f64, frames: f64, span: f64| {
        (
            bytes - empty_bytes * nodes as f64 * span,
            frames - empty_frames * nodes as f64 * span,
        )
    };

    let started = sim.elapsed();
    phase.set(1);
    step_until(&mut sim, "the puts", &|| phase.get() == 2)?;
    let (b2, f2) = totals(&probes, None);
    let (put_bytes, put_frames) =
        above_idle(b2 - b1, f2 - f1, (sim.elapsed() - started).as_secs_f64());
    // The pushes of the last put settle before the gets are counted.
    run_for(&mut sim, Duration::from_secs(5))?;
    let (b3, f3) = totals(&probes, None);
    let started = sim.elapsed();
    phase.set(3);
    step_until(&mut sim, "the gets", &|| phase.get() == 4)?;
    let (b4, f4) = totals(&probes, None);
    let (get_bytes, get_frames) =
        above_idle(b4 - b3, f4 - f3, (sim.elapsed() - started).as_secs_f64());

    // Idle with the objects in the index (every digest bucket in use
    // costs more to send than an empty one): the idle of the table, and
    // the background the join window is measured above.
    let (idle_bytes, idle_frames) = idle(&mut sim, None, nodes)?;
    let window = MOVE_WINDOW.as_secs_f64();

    // A node joins: what the cluster moves to it (records by anti-entropy,
    // its share of the blobs by repair) in the window after, above the
    // idle of the nodes that were there (the new node's own idle is
    // counted in: a window's worth of it is small).
    add_node(&mut sim, seed, nodes, &probes);
    let (b5, _) = totals(&probes, None);
    run_for(&mut sim, MOVE_WINDOW)?;
    let (b6, _) = totals(&probes, None);
    let join_bytes = b6 - b5 - idle_bytes * nodes as f64 * window;

    // A node leaves for good (crashed, never back): the copies repair
    // makes on the others, above their idle (measured again: one more
    // member).
    let leaving = 1;
    let (after_join_bytes, _) = idle(&mut sim, None, nodes + 1)?;
    sim.crash(host(leaving));
    let (b7, _) = totals(&probes, Some(leaving));
    run_for(&mut sim, MOVE_WINDOW)?;
    let (b8, _) = totals(&probes, Some(leaving));
    let leave_bytes = b8 - b7 - after_join_bytes * nodes as f64 * window;

    Ok(CostRow {
        nodes,
        idle_bytes,
        idle_frames,
        put_bytes: put_bytes / OPS as f64,
        put_frames: put_frames / OPS as f64,
        get_bytes: get_bytes / OPS as f64,
        get_frames: get_frames / OPS as f64,
        join_bytes,
        leave_bytes,
        stored_bytes: (OPS * OBJECT_BYTES) as f64,
    })
}
