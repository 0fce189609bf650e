//! A client session, sticky to one node, and the [`History`] all sessions
//! record for the checkers.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use dfs::limits::CHUNK_AVG_BYTES;
use dfs::meta::{VersionId, VersionRecord, VersionSelector};
use dfs::wire::GetTarget;
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use super::nodes::{Probes, connect, host};
use super::{Config, NAMES, OPERATION_TIMEOUT, PORT};
use crate::env::client_env;
use crate::harness::Trace;
use crate::workload::{
    Attempts, a_few_chunks, edited, expected_content_id, random_content, with_timeout,
};

/// What the clients did, for the checkers.
#[derive(Default)]
pub(super) struct History {
    pub(super) attempts: Attempts,
    /// Names with a prune whose outcome is unknown (it may have dropped
    /// any version but the newest).
    pub(super) prunes_indeterminate: BTreeSet<String>,
    /// The highest floor an acknowledged prune set, by name.
    pub(super) floors: BTreeMap<String, VersionId>,
    pub(super) acknowledged: Vec<VersionRecord>,
    /// The newest version id acknowledged so far, by name, and the node
    /// that acknowledged it: a quorum read that starts later, through a
    /// node that knows that one, must return it or a newer one.
    pub(super) newest_acknowledged: BTreeMap<String, (VersionId, usize)>,
    /// The node that acknowledged each version.
    pub(super) writers: BTreeMap<(String, VersionId), usize>,
    /// Versions acknowledged by a node that had never had another member
    /// (README: such a write needs one durable copy, its own, until repair
    /// copies it). (Any write the same node acknowledged while this one was
    /// in flight is counted too: a little weaker, never wrong.) Before the
    /// check, narrowed to those whose node's disk rotted or was lost.
    pub(super) single_copy: BTreeSet<(String, VersionId)>,
    /// Of those, the ones whose node lost its disk: their records may be
    /// gone too (rot takes chunk files only, never the index).
    pub(super) single_copy_disk_lost: BTreeSet<(String, VersionId)>,
    pub(super) violations: Vec<String>,
    pub(super) trace: Trace,
    pub(super) indeterminate: u64,
    pub(super) quorum_reads: u64,
    /// Quorum reads held to the newest acknowledged write.
    pub(super) quorum_reads_checked: u64,
    pub(super) restores: u64,
    pub(super) prunes: u64,
    /// Versions a client asked to delete for good (acknowledged or not):
    /// they may be gone, and reads may go back past them.
    pub(super) forget_attempts: BTreeSet<(String, VersionId)>,
    /// Versions whose deletion for good was acknowledged: gone for good.
    pub(super) forgotten: BTreeSet<(String, VersionId)>,
    pub(super) forgets: u64,
    /// Peer messages the client-key intruder sent that were refused.
    pub(super) intruder_refusals: u64,
}

impl History {
    fn acknowledge(&mut self, record: VersionRecord, node: usize, single_copy: bool) {
        if single_copy {
            self.single_copy.insert((record.name.clone(), record.vid));
        }
        let newest = self
            .newest_acknowledged
            .entry(record.name.clone())
            .or_insert((record.vid, node));
        if record.vid > newest.0 {
            *newest = (record.vid, node);
        }
        self.writers.insert((record.name.clone(), record.vid), node);
        self.acknowledged.push(record);
    }

    /// The acknowledged versions of `name` no client asked to delete for
    /// good and no prune dropped, oldest first, with their writers: a
    /// quorum read must return the newest, or newer.
    fn kept(&self, name: &str) -> Vec<(VersionId, usize)> {
        // A prune may have dropped any (one whose outcome is unknown, any
        // version but the newest).
        if self.prunes_indeterminate.contains(name) {
            return Vec::new();
        }
        let floor = self.floors.get(name).copied();
        self.writers
            .range((name.to_string(), VersionId::MIN)..)
            .take_while(|((n, _), _)| n == name)
            .filter(|(key, _)| !self.forget_attempts.contains(key))
            .map(|((_, vid), writer)| (*vid, *writer))
            .filter(|(vid, _)| floor.is_none_or(|floor| *vid >= floor))
            .collect()
    }

    /// The versions of `name` whose deletion for good was acknowledged.
    fn forgotten_of(&self, name: &str) -> BTreeSet<VersionId> {
        self.forgotten
            .range((name.to_string(), VersionId::MIN)..)
            .take_while(|(n, _)| n == name)
            .map(|(_, vid)| *vid)
            .collect()
    }

    /// No invention: each listed record was written by some operation.
    pub(super) fn check_explained(&mut self, name: &str, records: &[VersionRecord]) {
        let unexplained = self.attempts.unexplained(name, records);
        self.violations.extend(unexplained);
    }
}

/// Writes node `node` (every incarnation) acknowledged below W.
fn writes_below_w(probes: &Probes, node: usize) -> u64 {
    probes.borrow()[node]
        .clusters
        .iter()
        .map(|cluster| {
            cluster
                .counters
                .writes_below_write_quorum
                .load(Ordering::Relaxed)
        })
        .sum()
}

/// One client session, sticky to one node.
pub(super) async fn session(
    seed: u64,
    client: usize,
    config: Config,
    history: Rc<RefCell<History>>,
    probes: Probes,
) -> turmoil::Result {
    let env = client_env(seed ^ (0xC11E_0000 + client as u64));
    let node = client % config.nodes;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x574F_524B ^ ((client as u64) << 40));
    // How each put is sent (streamed, chunked, a chunked edit).
    let mut put_style = ChaCha8Rng::seed_from_u64(seed ^ 0x5354_594C ^ ((client as u64) << 40));
    // The newest version of each name this session has seen. A node that
    // lost its disk forgot what it served (README: the promise holds
    // unless it did), so the session starts over then.
    let mut seen: BTreeMap<String, VersionId> = BTreeMap::new();
    let disks_lost = |probes: &Probes| probes.borrow()[node].disks_lost;
    let mut seen_on_disk = disks_lost(&probes);
    let probes_for_observe = probes.clone();
    let mut observe = |h: &mut History, name: &str, vid: VersionId, what: &str| {
        let now_on_disk = disks_lost(&probes_for_observe);
        if now_on_disk != seen_on_disk {
            seen.clear();
            seen_on_disk = now_on_disk;
        }
        // A version deleted for good (by any client) may have been the
        // newest this session saw: reads then rightly go back past it.
        let forgotten_since = |previous: VersionId| {
            h.forget_attempts
                .range((name.to_string(), vid)..)
                .take_while(|(n, _)| n == name)
                .any(|(_, forgotten)| *forgotten > vid && *forgotten <= previous)
        };
        if let Some(previous) = seen.get(name).copied()
            && vid < previous
            && forgotten_since(previous)
        {
            seen.insert(name.to_string(), vid);
            return;
        }
        if let Some(previous) = seen.get(name)
            && vid < *previous
        {
            h.violations.push(format!(
                "monotonic reads: client {client} saw {name} at {previous} and then at {vid} ({what})"
            ));
        }
        let newest = seen.entry(name.to_string()).or_insert(vid);
        *newest = (*newest).max(vid);
    };
    // Let the cluster form first.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for op in 0..config.operations {
        let name = format!("file-{}", rng.next_u64() % NAMES);
        let tag = format!("c{client} {op}");
        match rng.next_u64() % 20 {
            0..=8 => {
                // A third of puts stream the bytes for the node to cut; the
                // rest cut them here and send only the chunks the name's
                // current version lacks, half of them of an edit of the
                // latest version put (so that most chunks are reused).
                // (Drawn from a generator of their own, so the rest of
                // the schedule stays what it was before chunked puts.)
                let fresh = random_content(
                    &mut rng,
                    config.file_bytes_max,
                    8,
                    history.borrow().attempts.contents(),
                );
                let how = put_style.next_u64() % 3;
                let earlier = (how == 2)
                    .then(|| {
                        history
                            .borrow()
                            .attempts
                            .latest_of(&name)
                            .map(<[u8]>::to_vec)
                    })
                    .flatten();
                // Where the seed allows large files, half the edits of a
                // name whose latest version is under 2 MiB (or that has
                // none) put a 2-4 MiB version instead (a few chunks, past
                // the seed's `file_bytes_max`), for the next edits of it
                // to reuse chunks of: most files are one chunk, and an
                // edit of a one-chunk file changes its only chunk. The
                // other half edit the small version, as in other seeds.
                let large_files = config.file_bytes_max >= 2 * CHUNK_AVG_BYTES;
                let grow = how == 2 && large_files && put_style.next_u64() % 2 == 0;
                let bytes = match earlier {
                    Some(earlier) if !grow || earlier.len() >= 2 * CHUNK_AVG_BYTES => {
                        edited(&mut put_style, &earlier)
                    }
                    _ if grow => a_few_chunks(&mut put_style),
                    _ => fresh,
                };
                let content = expected_content_id(&bytes);
                history.borrow_mut().attempts.put(&name, content, &bytes);
                let below_before = writes_below_w(&probes, node);
                let result = with_timeout(OPERATION_TIMEOUT, async {
                    let mut c = connect(&env, seed, node).await?;
                    if how == 0 {
                        c.put(&name, &mut bytes.as_slice(), &mut |_| {}).await
                    } else {
                        c.put_reusing(&name, &mut bytes.as_slice(), &mut |_| {})
                            .await
                    }
                })
                .await;
                let mut h = history.borrow_mut();
                match result {
                    Ok(record) => {
                        if record.content != Some(content) || record.name != name {
                            h.violations
                                .push(format!("put {name} acknowledged {record:?}"));
                        }
                        observe(&mut h, &name, record.vid, "its own put");
                        h.trace
                            .record(&format!("{tag} put {name} ok {}", record.vid));
                        h.acknowledge(record, node, below_before < writes_below_w(&probes, node));
                    }
                    Err(error) => {
                        h.indeterminate += 1;
                        h.trace.record(&format!("{tag} put {name} failed {error}"));
                    }
                }
            }
            9..=13 => {
                let quorum = rng.next_u64().is_multiple_of(3);
                // Quorum reads meet every acknowledged write only while no
                // node lost the disk holding it and views stay trusted
                // (SWIM forgets down members after a day in production;
                // some seeds forget within seconds). README says so.
                // (A version deleted for good is not one it must return.)
                let promise_holds = quorum_promise_holds(&config, &probes);
                // What it must return, or newer: the newest of these still
                // kept when it ends (a deletion for good asked for while it
                // ran may have taken the newest; the next one stands).
                // The reader must know the writer when the read starts.
                let kept_before: Vec<(VersionId, bool)> = history
                    .borrow()
                    .kept(&name)
                    .into_iter()
                    .map(|(vid, writer)| (vid, knows(&probes, node, writer)))
                    .collect();
                // Versions whose deletion for good was acknowledged before
                // the read started: a quorum read never returns them.
                let forgotten_before = history.borrow().forgotten_of(&name);
                let mut out = Vec::new();
                let result = with_timeout(OPERATION_TIMEOUT, async {
                    let mut c = connect(&env, seed, node).await?;
                    c.get_with(
                        GetTarget::Name(name.clone()),
                        None,
                        quorum,
                        &mut out,
                        &mut |_, _| {},
                    )
                    .await
                })
                .await;
                let mut h = history.borrow_mut();
                let still_kept = h.kept(&name);
                let acknowledged_before = kept_before
                    .iter()
                    .rev()
                    .find(|(vid, _)| still_kept.iter().any(|(kept, _)| kept == vid))
                    .filter(|(_, writer_known)| promise_holds && *writer_known)
                    .map(|(vid, _)| *vid);
                if quorum {
                    h.quorum_reads += 1;
                    if acknowledged_before.is_some() {
                        h.quorum_reads_checked += 1;
                    }
                }
                match result {
                    Ok(fetched) => {
                        if let Some(wrong) = h.attempts.wrong_read(&name, fetched.content, &out) {
                            h.violations.push(wrong);
                        }
                        if let Some(record) = &fetched.record {
                            observe(&mut h, &name, record.vid, "a get");
                            if quorum
                                && let Some(newest) = acknowledged_before
                                && record.vid < newest
                            {
                                h.violations.push(format!(
                                    "quorum read: get --quorum of {name} through node{node} returned {}, older than {newest} acknowledged before it started",
                                    record.vid
                                ));
                            }
                            if quorum
                                && quorum_promise_holds(&config, &probes)
                                && forgotten_before.contains(&record.vid)
                            {
                                h.violations.push(format!(
                                    "quorum read: get --quorum of {name} through node{node} returned {}, deleted for good before it started",
                                    record.vid
                                ));
                            }
                        }
                        h.trace
                            .record(&format!("{tag} get {name} ok {}", fetched.content));
                    }
                    Err(error) => {
                        if error.contains("verification failed") {
                            h.violations.push(format!("integrity: get {name}: {error}"));
                        }
                        // No record at all, after one was acknowledged (a
                        // prune keeps the newest, a removal is a record).
                        if quorum
                            && let Some(newest) = acknowledged_before
                            && error.contains("no file named")
                        {
                            h.violations.push(format!(
                                "quorum read: get --quorum of {name} through node{node} found no file, after {newest} was acknowledged"
                            ));
                        }
                        h.trace.record(&format!("{tag} get {name} failed {error}"));
                    }
                }
            }
            14 => {
                history.borrow_mut().attempts.remove(&name);
                let below_before = writes_below_w(&probes, node);
                let result = with_timeout(OPERATION_TIMEOUT, async {
                    let mut c = connect(&env, seed, node).await?;
                    c.remove(&name).await
                })
                .await;
                let mut h = history.borrow_mut();
                match result {
                    Ok(record) => {
                        observe(&mut h, &name, record.vid, "its own remove");
                        h.trace
                            .record(&format!("{tag} rm {name} ok {}", record.vid));
                        h.acknowledge(record, node, below_before < writes_below_w(&probes, node));
                    }
                    Err(error) => h.trace.record(&format!("{tag} rm {name} failed {error}")),
                }
            }
            15..=16 => {
                let result = with_timeout(OPERATION_TIMEOUT, async {
                    let mut c = connect(&env, seed, node).await?;
                    c.versions(&name).await
                })
                .await;
                let mut h = history.borrow_mut();
                match result {
                    Ok((records, _)) => {
                        h.check_explained(&name, &records);
                        if let Some(newest) = records.first() {
                            observe(&mut h, &name, newest.vid, "versions");
                        }
                        h.trace
                            .record(&format!("{tag} versions {name} ok {}", records.len()));
                    }
                    Err(error) => h
                        .trace
                        .record(&format!("{tag} versions {name} failed {error}")),
                }
            }
            17 => {
                let keep = 2 + (rng.next_u64() % 3) as u32;
                history.borrow_mut().prunes += 1;
                let result = with_timeout(OPERATION_TIMEOUT, async {
                    let mut c = connect(&env, seed, node).await?;
                    c.prune(&name, keep).await
                })
                .await;
                let mut h = history.borrow_mut();
                match result {
                    Ok((floor, removed)) => {
                        if let Some(floor) = floor {
                            let entry = h.floors.entry(name.clone()).or_insert(floor);
                            *entry = (*entry).max(floor);
                        }
                        h.trace
                            .record(&format!("{tag} prune {name} keep {keep} ok {removed}"));
                    }
                    Err(error) => {
                        h.prunes_indeterminate.insert(name.clone());
                        h.trace
                            .record(&format!("{tag} prune {name} failed {error}"));
                    }
                }
            }
            _ if forgets_now(seed, client, op as u64) => {
                // Delete an acknowledged version for good, the newest too
                // (S3 deletes the current version by id): quorum reads must
                // then return the newest version kept.
                let candidates: Vec<VersionRecord> = {
                    let h = history.borrow();
                    h.acknowledged
                        .iter()
                        .filter(|r| r.name == name)
                        .cloned()
                        .collect()
                };
                if candidates.is_empty() {
                    continue;
                }
                let old = candidates[(rng.next_u64() % candidates.len() as u64) as usize].clone();
                let selector: VersionSelector = old.vid.to_string().parse().expect("ids parse");
                {
                    let mut h = history.borrow_mut();
                    h.forgets += 1;
                    h.forget_attempts.insert((name.clone(), old.vid));
                }
                let result = with_timeout(OPERATION_TIMEOUT, async {
                    let mut c = connect(&env, seed, node).await?;
                    c.forget(&name, selector).await
                })
                .await;
                let mut h = history.borrow_mut();
                match result {
                    Ok(record) => {
                        if record.vid != old.vid {
                            h.violations.push(format!(
                                "forget of {} of {name} deleted {} instead",
                                old.vid, record.vid
                            ));
                        }
                        h.forgotten.insert((name.clone(), old.vid));
                        h.trace
                            .record(&format!("{tag} forget {name} {} ok", old.vid));
                    }
                    Err(error) => h
                        .trace
                        .record(&format!("{tag} forget {name} {} failed {error}", old.vid)),
                }
            }
            _ => {
                // Restore a random acknowledged version of this name.
                let candidates: Vec<VersionRecord> = history
                    .borrow()
                    .acknowledged
                    .iter()
                    .filter(|r| r.name == name && !r.is_tombstone())
                    .cloned()
                    .collect();
                if candidates.is_empty() {
                    continue;
                }
                let old = candidates[(rng.next_u64() % candidates.len() as u64) as usize].clone();
                let selector: VersionSelector = old.vid.to_string().parse().expect("ids parse");
                history.borrow_mut().restores += 1;
                let below_before = writes_below_w(&probes, node);
                let result = with_timeout(OPERATION_TIMEOUT, async {
                    let mut c = connect(&env, seed, node).await?;
                    c.restore(&name, selector).await
                })
                .await;
                let mut h = history.borrow_mut();
                match result {
                    Ok(record) => {
                        if record.content != old.content {
                            h.violations.push(format!(
                                "restore of {} made {record:?}, not the old content",
                                old.vid
                            ));
                        }
                        observe(&mut h, &name, record.vid, "its own restore");
                        h.trace
                            .record(&format!("{tag} restore {name} ok {}", record.vid));
                        h.acknowledge(record, node, below_before < writes_below_w(&probes, node));
                    }
                    Err(error) => h
                        .trace
                        .record(&format!("{tag} restore {name} failed {error}")),
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.next_u64() % 500)).await;
    }
    Ok(())
}

/// Whether operation `op` of `client`, drawn as a restore, deletes a
/// version for good instead (one in three). Decided from its own hash, not
/// the session's random stream, so the other operations draw as before.
fn forgets_now(seed: u64, client: usize, op: u64) -> bool {
    let mut x = seed ^ ((client as u64) << 32) ^ op ^ 0xF0F0_5EED;
    // splitmix64
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (x ^ (x >> 31)).is_multiple_of(3)
}

/// Whether node `reader` knows node `writer` (itself, or a member of its
/// view). A quorum read counts the members its node knows: while a node
/// joins, a write through it can be missed by a reader that has not heard
/// of it yet, which README states.
fn knows(probes: &Probes, reader: usize, writer: usize) -> bool {
    if reader == writer {
        return true;
    }
    let addr = format!("{}:{PORT}", host(writer));
    probes.borrow()[reader]
        .view
        .as_ref()
        .is_some_and(|view| view.members().iter().any(|m| m.addr == addr))
}

/// Whether a quorum read now must meet every acknowledged write: no disk
/// lost so far, and down members remembered as long as in production.
fn quorum_promise_holds(config: &Config, probes: &Probes) -> bool {
    config.forget_down_after >= Duration::from_secs(3600)
        && probes.borrow().iter().all(|p| p.disks_lost == 0)
}
