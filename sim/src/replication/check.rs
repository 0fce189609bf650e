//! The checks after healing: liveness, convergence, durability and no
//! invention, read from the [`History`].

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use dfs::meta::{VersionId, VersionRecord, VersionSelector};
use dfs::wire::GetTarget;

use super::nodes::connect;
use super::session::History;
use super::{Config, NAMES, OPERATION_TIMEOUT, QUIESCE_WITHIN};
use crate::env::client_env;
use crate::workload::with_timeout;

/// Reads of an acknowledged version after healing, before it counts as lost.
const READ_TRIES: usize = 10;

/// After healing: convergence, durability, no invention, liveness.
pub(super) async fn check(
    seed: u64,
    config: Config,
    history: Rc<RefCell<History>>,
) -> turmoil::Result {
    let env = client_env(seed ^ 0xC11E_C4EC);
    let names: Vec<String> = (0..NAMES).map(|i| format!("file-{i}")).collect();

    // Liveness: a put and a get through every node (membership may need a
    // moment to settle after the heal, so a few tries each).
    for node in 0..config.nodes {
        let bytes = format!("liveness probe through node {node}").into_bytes();
        let name = format!("liveness-{node}");
        let mut ok = false;
        for _ in 0..10 {
            let result = with_timeout(OPERATION_TIMEOUT, async {
                let mut c = connect(&env, seed, node).await?;
                c.put(&name, &mut bytes.as_slice(), &mut |_| {}).await?;
                let mut out = Vec::new();
                c.get(
                    GetTarget::Name(name.clone()),
                    None,
                    &mut out,
                    &mut |_, _| {},
                )
                .await?;
                Ok(out)
            })
            .await;
            if result.as_ref().is_ok_and(|out| *out == bytes) {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        if !ok {
            history.borrow_mut().violations.push(format!(
                "liveness: no put and get through node{node} succeeded after healing"
            ));
        }
    }

    // Convergence: every node lists the same versions of every name.
    let started_ms = env.clock.unix_ms();
    let listings = loop {
        let mut listings: Vec<BTreeMap<String, Vec<VersionRecord>>> = Vec::new();
        for node in 0..config.nodes {
            let mut listing = BTreeMap::new();
            for name in &names {
                let result = with_timeout(OPERATION_TIMEOUT, async {
                    let mut c = connect(&env, seed, node).await?;
                    c.versions(name).await
                })
                .await;
                match result {
                    Ok((records, _)) => {
                        listing.insert(name.clone(), records);
                    }
                    Err(error) if error.contains("no file named") => {
                        listing.insert(name.clone(), Vec::new());
                    }
                    Err(_) => {}
                }
            }
            listings.push(listing);
        }
        let complete = listings.iter().all(|l| l.len() == names.len());
        if complete && listings.windows(2).all(|w| w[0] == w[1]) {
            break Some(listings.swap_remove(0));
        }
        if env.clock.unix_ms().saturating_sub(started_ms) > QUIESCE_WITHIN.as_millis() as u64 {
            let summary: Vec<String> = listings
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    let counts: Vec<usize> = l.values().map(Vec::len).collect();
                    format!("node{i}: {counts:?}")
                })
                .collect();
            history.borrow_mut().violations.push(format!(
                "convergence: the version lists still differ {QUIESCE_WITHIN:?} after healing ({})",
                summary.join(", ")
            ));
            break None;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let Some(listing) = listings else {
        return Ok(());
    };

    // No invention and durability.
    let acknowledged = history.borrow().acknowledged.clone();
    for (name, records) in &listing {
        history.borrow_mut().check_explained(name, records);
        let listed: BTreeSet<VersionId> = records.iter().map(|r| r.vid).collect();
        let oldest = records.last().map(|r| r.vid);
        let h = history.borrow();
        let pruned_below = if h.prunes_indeterminate.contains(name) {
            oldest
        } else {
            h.floors.get(name).copied()
        };
        drop(h);
        let forgotten = history.borrow().forget_attempts.clone();
        // A version deleted for good (acknowledged) never comes back.
        for record in records {
            if history
                .borrow()
                .forgotten
                .contains(&(name.clone(), record.vid))
            {
                history.borrow_mut().violations.push(format!(
                    "forgetting: version {} of {name} was deleted for good and is listed again",
                    record.vid
                ));
            }
        }
        let disk_lost = history.borrow().single_copy_disk_lost.clone();
        for lost in acknowledged.iter().filter(|r| {
            &r.name == name
                && !listed.contains(&r.vid)
                && !disk_lost.contains(&(name.clone(), r.vid))
                && pruned_below.is_none_or(|floor| r.vid >= floor)
                && !forgotten.contains(&(name.clone(), r.vid))
        }) {
            history.borrow_mut().violations.push(format!(
                "durability: acknowledged version {} of {name} is gone",
                lost.vid
            ));
        }
    }
    for (i, record) in acknowledged
        .iter()
        .filter(|r| !r.is_tombstone())
        .enumerate()
    {
        let retained = listing
            .get(&record.name)
            .is_some_and(|records| records.iter().any(|r| r.vid == record.vid));
        if !retained {
            continue;
        }
        // Its one copy may have gone with its node's disk: it must read
        // back right, if at all.
        let may_be_unreadable = history
            .borrow()
            .single_copy
            .contains(&(record.name.clone(), record.vid));
        let node = i % config.nodes;
        let selector: VersionSelector = record.vid.to_string().parse().expect("ids parse");
        let mut out = Vec::new();
        // A few tries: after healing, membership needs a moment to settle
        // (a node that came back may not yet be known to the one read
        // through, and it may hold the only copy). A copy that is gone
        // stays unreadable through every try.
        let mut result = Err("not tried".to_string());
        for _ in 0..READ_TRIES {
            out.clear();
            result = with_timeout(OPERATION_TIMEOUT, async {
                let mut c = connect(&env, seed, node).await?;
                c.get(
                    GetTarget::Name(record.name.clone()),
                    Some(selector.clone()),
                    &mut out,
                    &mut |_, _| {},
                )
                .await
            })
            .await;
            if result.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        let mut h = history.borrow_mut();
        match result {
            Ok(fetched) => {
                let content = record.content.expect("not a tombstone");
                if fetched.content != content || !h.attempts.holds(content, &out) {
                    h.violations.push(format!(
                        "durability: version {} of {} reads back different bytes through node{node}",
                        record.vid, record.name
                    ));
                }
            }
            Err(_) if may_be_unreadable => {}
            Err(error) => h.violations.push(format!(
                "durability: version {} of {} unreadable through node{node}: {error}",
                record.vid, record.name
            )),
        }
    }
    Ok(())
}
