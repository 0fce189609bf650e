//! SWIM membership (DESIGN §7): foca, driven by one task.
//!
//! foca is sans-io: this task hands it datagrams from the authenticated peer
//! connections, fires its timers (deadlines on the Env clock, sleeps on
//! `tokio::time`, which turmoil drives) and carries what it wants sent as
//! `Message::Swim` over the [`Peers`] connections. Its randomness is the
//! Env's, so a simulated cluster replays from its seed.
//!
//! A datagram's SWIM header names its sender; it is accepted only when that
//! is the node the connection's handshake authenticated, so a member is only
//! ever learned from a holder of the cluster key.
//!
//! Joining: while no other member is alive, the task dials the seed
//! addresses (`--bootstrap`, then those of the persisted member list, then
//! any member it has known) with backoff, and announces itself to whoever
//! answers; while it has peers, it still reaches out to one such address
//! every few seconds, so clusters that formed apart (after a full restart,
//! or a partition of a lone node, when foca stops its own timers) merge. The member list is
//! written to `members.json` in the data dir when it changes, so a restarted
//! node finds its cluster without a bootstrap flag.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::num::{NonZeroU8, NonZeroUsize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use foca::{Codec, Config, Foca, NoCustomBroadcast, OwnedNotification, PostcardCodec, Timer};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::backoff::Backoff;
use super::conn::Datagram;
use super::view::MemberView;
use super::{PeerIdentity, Peers};
use crate::env::{Env, Random};
use crate::limits::{MEMBERS_MAX, SWIM_PACKET_BYTES_MAX, SWIM_TIMERS_MAX};
use crate::wire::{MemberState, Message};

/// While the node has live peers, how often it still dials one known
/// address whose member it does not see alive.
const REACH_OUT_EVERY: Duration = Duration::from_secs(5);

/// Name of the persisted member list in the data dir.
pub const MEMBERS_FILE: &str = "members.json";

/// Name of the file holding the size of the largest cluster this node has
/// been part of (see [`MemberView::largest_cluster`]).
pub const CLUSTER_SIZE_FILE: &str = "cluster_size";

/// SWIM timing. Detection of a crashed member takes up to one probe round
/// (members are probed in a shuffled round robin, so about
/// `probe_period x members`) plus `suspect_to_down`.
#[derive(Debug, Clone, Copy)]
pub struct SwimTiming {
    pub probe_period: Duration,
    pub probe_rtt: Duration,
    pub suspect_to_down: Duration,
    /// How long a down member is remembered (its address lets a healed
    /// partition merge) before it is forgotten: a day by default; the
    /// simulation forgets within seconds, so that forgotten members race
    /// the rest.
    pub forget_down_after: Duration,
}

impl Default for SwimTiming {
    fn default() -> Self {
        Self {
            probe_period: Duration::from_secs(1),
            probe_rtt: Duration::from_millis(400),
            suspect_to_down: Duration::from_secs(3),
            forget_down_after: Duration::from_secs(24 * 3600),
        }
    }
}

fn foca_config(timing: SwimTiming) -> Config {
    let mut config = Config::new_lan(std::num::NonZeroU32::new(8).expect("non-zero"));
    config.probe_period = timing.probe_period;
    config.probe_rtt = timing.probe_rtt;
    config.suspect_to_down_after = timing.suspect_to_down;
    config.max_packet_size = NonZeroUsize::new(SWIM_PACKET_BYTES_MAX).expect("non-zero");
    config.max_transmissions = NonZeroU8::new(8).expect("non-zero");
    // Remember down members (their addresses let a healed partition merge)
    // for a while; a member that comes back renews its identity anyway.
    config.remove_down_after = Some(timing.forget_down_after);
    // Announcing to a random member, and to down members, is what merges two
    // sides of a healed partition; the defaults (30 s and 65 s) are tuned for
    // large clusters, ours are small.
    config.periodic_announce = Some(foca::PeriodicParams {
        frequency: Duration::from_secs(5),
        num_members: NonZeroUsize::new(1).expect("non-zero"),
    });
    config.periodic_announce_to_down_members = Some(foca::PeriodicParams {
        frequency: Duration::from_secs(3),
        num_members: NonZeroUsize::new(2).expect("non-zero"),
    });
    config
}

/// foca's RNG: the Env's randomness behind rand 0.10's trait.
struct EnvRng(Arc<dyn Random>);

impl rand_core_010::TryRng for EnvRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut bytes = [0u8; 4];
        self.0.fill(&mut bytes);
        Ok(u32::from_le_bytes(bytes))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut bytes = [0u8; 8];
        self.0.fill(&mut bytes);
        Ok(u64::from_le_bytes(bytes))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.0.fill(dst);
        Ok(())
    }
}

type Swim = Foca<PeerIdentity, PostcardCodec, EnvRng, NoCustomBroadcast>;

/// One entry of `members.json`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct PersistedMember {
    node_id: String,
    addr: String,
}

/// Load the persisted member addresses; a missing or corrupt file yields
/// none (with a warning): the node then needs `--bootstrap` again.
pub fn load_member_addrs(env: &Env, data_dir: &std::path::Path) -> Vec<String> {
    let path = data_dir.join(MEMBERS_FILE);
    let bytes = match crate::env::read_file(env.disk.as_ref(), &path, 1 << 20) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "cannot read the member list");
            return Vec::new();
        }
    };
    match serde_json::from_slice::<Vec<PersistedMember>>(&bytes) {
        Ok(members) => members
            .into_iter()
            .take(MEMBERS_MAX)
            .map(|m| m.addr)
            .collect(),
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "ignoring a corrupt member list");
            Vec::new()
        }
    }
}

/// Load the largest cluster size this node has recorded. `None` when it has
/// recorded none (a new node, or a data dir from before the file existed).
/// An unreadable or corrupt file counts as `unreadable` (the caller passes
/// the write quorum, so that no write is taken below it), with a warning.
pub fn load_largest_cluster(
    env: &Env,
    data_dir: &std::path::Path,
    unreadable: usize,
) -> Option<usize> {
    let path = data_dir.join(CLUSTER_SIZE_FILE);
    let bytes = match crate::env::read_file(env.disk.as_ref(), &path, 64) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "cannot read the recorded cluster size; counting the full write quorum");
            return Some(unreadable);
        }
    };
    match std::str::from_utf8(&bytes)
        .ok()
        .and_then(|text| text.trim().parse::<usize>().ok())
        .filter(|size| (1..=MEMBERS_MAX + 1).contains(size))
    {
        Some(size) => Some(size),
        None => {
            tracing::warn!(path = %path.display(), "the recorded cluster size is corrupt; counting the full write quorum");
            Some(unreadable)
        }
    }
}

/// Everything the membership task needs.
pub struct MembershipTask {
    pub env: Env,
    pub peers: Arc<Peers>,
    pub view: Arc<MemberView>,
    pub inbox: mpsc::Receiver<Datagram>,
    /// Addresses to join through: bootstrap flags, then persisted members.
    pub seeds: Vec<String>,
    pub data_dir: PathBuf,
    pub timing: SwimTiming,
    /// The cluster size recorded in [`CLUSTER_SIZE_FILE`] at start (1 if none).
    pub recorded_cluster_size: usize,
}

struct Driver {
    env: Env,
    peers: Arc<Peers>,
    view: Arc<MemberView>,
    swim: Swim,
    runtime: foca::AccumulatingRuntime<PeerIdentity>,
    /// Pending timers: (due unix ms, sequence) -> timer. Ordered so the
    /// earliest fires first and ties fire in submission order.
    timers: BTreeMap<(u64, u64), Timer<PeerIdentity>>,
    timer_sequence: u64,
    data_dir: PathBuf,
    persisted: Vec<PersistedMember>,
    /// The cluster size last written to [`CLUSTER_SIZE_FILE`].
    recorded_cluster_size: usize,
    /// Members we hold suspect, with the incarnation suspected and since
    /// when (unix ms): see [`Driver::expire_stale_suspicions`].
    suspected_since: BTreeMap<PeerIdentity, (foca::Incarnation, u64)>,
    suspect_to_down: Duration,
}

impl MembershipTask {
    /// Run until `shutdown` completes, then leave the cluster gracefully
    /// (members learn it at once instead of after a failure timeout).
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        let identity = self.peers.identity();
        let swim = Foca::new(
            identity,
            foca_config(self.timing),
            EnvRng(self.env.rng.clone()),
            PostcardCodec,
        );
        let mut driver = Driver {
            env: self.env.clone(),
            peers: self.peers.clone(),
            view: self.view.clone(),
            swim,
            runtime: foca::AccumulatingRuntime::new(),
            timers: BTreeMap::new(),
            timer_sequence: 0,
            data_dir: self.data_dir.clone(),
            persisted: Vec::new(),
            recorded_cluster_size: self.recorded_cluster_size,
            suspected_since: BTreeMap::new(),
            suspect_to_down: self.timing.suspect_to_down,
        };
        driver.flush().await;

        let (joined_tx, mut joined_rx) = mpsc::channel::<PeerIdentity>(16);
        let mut join_backoff = Backoff::default();
        let mut join_attempt: Option<tokio::task::JoinHandle<()>> = None;
        let mut next_seed = 0usize;
        let mut next_reach_out_ms = 0u64;
        tokio::pin!(shutdown);
        loop {
            let now = self.env.clock.monotonic_ms();
            let next_timer = driver
                .timers
                .keys()
                .next()
                .map(|(due, _)| due.saturating_sub(now))
                .unwrap_or(1_000);
            // Dial (one at a time) addresses of the cluster that are not
            // alive in our view: with backoff while alone, and every
            // REACH_OUT_EVERY otherwise. The second case merges clusters
            // that formed apart, e.g. when all but one node restarted and
            // found each other first.
            let lonely = driver.view.alive().is_empty();
            let due = if lonely {
                join_backoff.may_dial(now)
            } else {
                now >= next_reach_out_ms
            };
            let idle = join_attempt.as_ref().is_none_or(|a| a.is_finished());
            if due && idle {
                let candidates = self.join_candidates();
                if !candidates.is_empty() {
                    let seed = candidates[next_seed % candidates.len()].clone();
                    next_seed += 1;
                    if lonely {
                        join_backoff.failed(now, self.env.random_u64());
                    }
                    next_reach_out_ms = now + REACH_OUT_EVERY.as_millis() as u64;
                    let peers = self.peers.clone();
                    let joined = joined_tx.clone();
                    join_attempt = Some(tokio::spawn(async move {
                        match peers.dial(&seed, None).await {
                            Ok(connection) => {
                                let _ = joined.send(connection.remote().clone()).await;
                            }
                            Err(error) => {
                                tracing::info!(%seed, %error, "cannot reach this cluster address yet")
                            }
                        }
                    }));
                }
            }
            let wake = Duration::from_millis(next_timer.clamp(1, 250));
            tokio::select! {
                _ = &mut shutdown => break,
                Some(datagram) = self.inbox.recv() => driver.receive(datagram),
                Some(identity) = joined_rx.recv() => {
                    join_backoff.succeeded();
                    tracing::info!(peer = %identity.node.short(), addr = %identity.addr, "announcing to the cluster");
                    if let Err(error) = driver.swim.announce(identity, &mut driver.runtime) {
                        tracing::warn!(%error, "cannot announce");
                    }
                }
                _ = tokio::time::sleep(wake) => driver.fire_due_timers(),
            }
            driver.expire_stale_suspicions();
            driver.flush().await;
        }
        if let Some(attempt) = join_attempt {
            attempt.abort();
        }
        if let Err(error) = driver.swim.leave_cluster(&mut driver.runtime) {
            tracing::debug!(%error, "leaving the cluster");
        }
        driver.flush().await;
        // Give the goodbye datagrams a moment to reach the writers' queues.
        tokio::time::sleep(Duration::from_millis(100)).await;
        tracing::info!("left the cluster");
    }
}

impl MembershipTask {
    /// Cluster addresses not alive in our view: the seeds, then every
    /// member known (a healed partition or a restarted cluster is found
    /// through them).
    fn join_candidates(&self) -> Vec<String> {
        let members = self.view.members();
        let alive: Vec<&str> = members
            .iter()
            .filter(|m| m.state == MemberState::Alive)
            .map(|m| m.addr.as_str())
            .collect();
        let mut candidates: Vec<String> = Vec::new();
        let known = self.seeds.iter().chain(members.iter().map(|m| &m.addr));
        for addr in known {
            if !alive.contains(&addr.as_str()) && !candidates.contains(addr) {
                candidates.push(addr.clone());
            }
        }
        candidates
    }
}

impl Driver {
    fn receive(&mut self, datagram: Datagram) {
        let header = PostcardCodec.decode_header(&datagram.bytes[..]);
        let header: foca::Header<PeerIdentity> = match header {
            Ok(header) => header,
            Err(error) => {
                tracing::warn!(peer = %datagram.from.short(), %error, "undecodable SWIM datagram");
                return;
            }
        };
        if header.src.node != datagram.from {
            tracing::warn!(
                peer = %datagram.from.short(), claimed = %header.src.node.short(),
                "SWIM datagram claims another sender; dropped"
            );
            return;
        }
        if let Err(error) = self.swim.handle_data(&datagram.bytes, &mut self.runtime) {
            tracing::debug!(peer = %datagram.from.short(), %error, "SWIM datagram refused");
        }
    }

    fn fire_due_timers(&mut self) {
        let now = self.env.clock.monotonic_ms();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let timer = entry.remove();
            if let Err(error) = self.swim.handle_timer(timer, &mut self.runtime) {
                tracing::debug!(%error, "SWIM timer");
            }
        }
    }

    /// Declare down a member whose suspicion nobody refuted within twice
    /// the suspicion timeout.
    ///
    /// foca runs the suspicion timeout only on the member whose probe
    /// failed. A member that learned the suspicion by gossip keeps it until
    /// the suspect refutes it, and the suspect refutes only if the gossip
    /// reaches it; when the prober then restarted or renewed its identity
    /// (its timers are void) and the gossip's transmissions were spent
    /// inside a partition, the suspect stayed "suspect" forever while it
    /// answered every probe (simulation seed 1047). The SWIM paper has every
    /// member that holds a suspicion time it out; this does that, with a
    /// margin so the prober's own timer normally acts first. Down makes the
    /// member hear `TurnUndead` and rejoin under a new identity.
    fn expire_stale_suspicions(&mut self) {
        let now = self.env.clock.monotonic_ms();
        let limit = 2 * self.suspect_to_down.as_millis() as u64;
        let mut stale = Vec::new();
        let mut suspected = BTreeMap::new();
        for member in self.swim.iter_membership_state().take(MEMBERS_MAX) {
            if member.state() != foca::State::Suspect {
                continue;
            }
            let since = match self.suspected_since.get(member.id()) {
                Some(&(incarnation, since)) if incarnation == member.incarnation() => since,
                _ => now,
            };
            if now.saturating_sub(since) >= limit {
                stale.push(member.clone());
            } else {
                suspected.insert(member.id().clone(), (member.incarnation(), since));
            }
        }
        self.suspected_since = suspected;
        if stale.is_empty() {
            return;
        }
        for member in &stale {
            tracing::info!(
                peer = %member.id().node.short(), addr = %member.id().addr,
                "a suspicion was never refuted; declaring the member down"
            );
        }
        let down = stale
            .into_iter()
            .map(|m| foca::Member::new(m.id().clone(), m.incarnation(), foca::State::Down));
        if let Err(error) = self.swim.apply_many(down, true, &mut self.runtime) {
            tracing::debug!(%error, "declaring stale suspects down");
        }
    }

    /// Carry out what foca asked for, then refresh the view.
    async fn flush(&mut self) {
        while let Some((to, bytes)) = self.runtime.to_send() {
            self.peers.send_datagram(
                &to,
                Message::Swim {
                    bytes: bytes.to_vec(),
                },
            );
        }
        let now = self.env.clock.monotonic_ms();
        while let Some((after, timer)) = self.runtime.to_schedule() {
            if self.timers.len() >= SWIM_TIMERS_MAX {
                tracing::error!("SWIM timer table full; dropping a timer");
                continue;
            }
            self.timer_sequence += 1;
            let due = now.saturating_add(after.as_millis() as u64);
            self.timers.insert((due, self.timer_sequence), timer);
        }
        while let Some(notification) = self.runtime.to_notify() {
            self.log(notification);
        }
        self.refresh_view().await;
    }

    fn log(&mut self, notification: OwnedNotification<PeerIdentity>) {
        match notification {
            OwnedNotification::MemberUp(member) => {
                tracing::info!(peer = %member.node.short(), addr = %member.addr, "member joined (alive)")
            }
            OwnedNotification::MemberDown(member) => {
                tracing::info!(peer = %member.node.short(), addr = %member.addr, "member down")
            }
            OwnedNotification::Rename(old, new) => tracing::info!(
                peer = %new.node.short(), addr = %new.addr, old_addr = %old.addr,
                "member restarted or rejoined"
            ),
            OwnedNotification::Active => tracing::info!("joined the cluster"),
            OwnedNotification::Idle => {
                tracing::info!("no other member is reachable; will keep trying to rejoin")
            }
            OwnedNotification::Defunct => {
                tracing::warn!("this node was declared down and could not rejoin")
            }
            OwnedNotification::Rejoin(identity) => {
                tracing::info!(
                    bump = identity.bump,
                    "declared down by the cluster; rejoined"
                );
                self.peers.set_identity(identity);
            }
        }
    }

    async fn refresh_view(&mut self) {
        let me = self.peers.identity().node;
        let my_addr = self.peers.identity().addr;
        let members: BTreeMap<_, _> = self
            .swim
            .iter_membership_state()
            // foca can list an earlier identity of this very node (after a
            // rejoin, as suspect or down): it is not another member. Nor is
            // an identity at this node's address that is not alive: this
            // node before it lost its disk.
            .filter(|member| member.id().node != me)
            .filter(|member| member.id().addr != my_addr || member.state() == foca::State::Alive)
            .take(MEMBERS_MAX)
            .map(|member| {
                let state = match member.state() {
                    foca::State::Alive => MemberState::Alive,
                    foca::State::Suspect => MemberState::Suspect,
                    foca::State::Down => MemberState::Down,
                };
                (member.id().node, (member.id().clone(), state))
            })
            .collect();
        let mut persisted: Vec<PersistedMember> = members
            .values()
            .map(|(identity, _)| PersistedMember {
                node_id: identity.node.to_hex(),
                addr: identity.addr.clone(),
            })
            .collect();
        persisted.sort();
        self.view.replace(members);
        // Record a larger cluster before the member list that shows it: a
        // restart must never count fewer nodes than this one has known.
        let size = self.view.largest_cluster();
        if size > self.recorded_cluster_size {
            self.record_cluster_size(size).await;
        }
        // A view still filling in after a start is not saved: the list is
        // what the next start expects to see before it trusts its view.
        let complete = self.view.complete(self.env.clock.monotonic_ms());
        if persisted != self.persisted && !persisted.is_empty() && complete {
            self.persist(persisted).await;
        }
    }

    async fn record_cluster_size(&mut self, size: usize) {
        let path = self.data_dir.join(CLUSTER_SIZE_FILE);
        let env = self.env.clone();
        let text = format!("{size}\n");
        let written = self
            .env
            .blocking(move || crate::env::replace_file_durably(&env, &path, text.as_bytes()))
            .await;
        match written {
            Ok(()) => self.recorded_cluster_size = size,
            // Retried at the next change; members.json still counts.
            Err(error) => tracing::warn!(%error, "cannot record the cluster size"),
        }
    }

    async fn persist(&mut self, members: Vec<PersistedMember>) {
        let path = self.data_dir.join(MEMBERS_FILE);
        let json = serde_json::to_vec_pretty(&members).expect("member list serializes");
        let env = self.env.clone();
        let written = self
            .env
            .blocking(move || crate::env::replace_file_durably(&env, &path, &json))
            .await;
        match written {
            Ok(()) => self.persisted = members,
            // Retried at the next change; the in-memory view is unaffected.
            Err(error) => tracing::warn!(%error, "cannot save the member list"),
        }
    }
}
