//! The small-blob table: sealed blobs up to the node's
//! `--small-blob-bytes-max` (8 KiB by default) kept as values of one redb
//! table in `small-blobs.redb`, instead of a file each.
//!
//! Why: a blob file costs a create, a data sync, a rename and a directory
//! sync. For a 4 KiB put that is nearly all its cost (issue 12's profile:
//! 70% of the CPU in the kernel, a quarter of it in syncs, a sixth in
//! creating files). Here, puts that arrive while a commit runs share the
//! next transaction and its one disk sync ([`GroupCommit`]), and a blob is
//! durable when its commit returns: there is no directory entry to sync.
//!
//! A value is the same sealed bytes a file would hold (the blob id is the
//! AEAD's associated data), so a read is verified exactly as a file's is,
//! by the caller ([`super::ChunkStore`]).
//!
//! What a file does not share with its neighbours and a table value does:
//! its pages. So the table is *distrusted*, for good (a marker file beside
//! it says so across restarts), when
//! - a disk sync of it fails: Linux may mark the pages it failed to write
//!   clean, and later commits build on them, so any value may be missing
//!   on disk after a machine crash, whatever later syncs said;
//! - redb reports it inconsistent (a rotten page: redb checks its page
//!   checksums only when it recovers from a crash, so bad bytes show up on
//!   the way to a value as errors, as panics, which `meta::redb_file`
//!   catches and turns into errors, or as an id whose value is missing).
//!
//! A distrusted table is still read (every value is verified), but holds
//! nothing durably: other nodes keep their copies, repair sends them here
//! again, and they are written as files. New blobs go to files too.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{StoreError, Usage};
use crate::cas::ChunkId;
use crate::env::{Env, write_file_durably};
use crate::limits::SMALL_BLOB_CACHE_BYTES;
use crate::meta::group_commit::GroupCommit;
use crate::meta::redb_file::{RedbErrors, RedbFile};

/// Blob id -> sealed bytes.
const BLOBS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("blobs");
/// The same ids -> their sealed length: a listing (the repair loop lists
/// the store every few seconds) and a presence check read 40 bytes a
/// blob, not its value (redb keeps values in the leaves, beside their keys).
const IDS: TableDefinition<&[u8; 32], u64> = TableDefinition::new("ids");
/// [`STAT_BLOBS`] and [`STAT_BYTES`]: what [`BLOBS`] holds, kept by every
/// commit, so that an open need not read every value to count them.
const STATS: TableDefinition<&str, u64> = TableDefinition::new("stats");
const STAT_BLOBS: &str = "blobs";
const STAT_BYTES: &str = "sealed_bytes";

/// The table's file name in the data dir.
pub const FILE_NAME: &str = "small-blobs.redb";

/// Present while the table is distrusted (see the module doc).
const DISTRUSTED_FILE: &str = "small-blobs.distrusted";

impl RedbErrors for StoreError {
    fn open_failed(error: io::Error) -> Self {
        StoreError::io(format!("opening {FILE_NAME}"), error)
    }

    fn storage(error: redb::Error) -> Self {
        match error {
            // redb's own verdict on bytes it read (a bad magic number, a
            // header that does not check, a file shorter than its header
            // says: cut short), not the disk's.
            redb::Error::Io(source)
                if matches!(
                    source.kind(),
                    io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
                ) =>
            {
                StoreError::Table(source.to_string())
            }
            redb::Error::Io(source) => {
                StoreError::io("reading or writing the small-blob table", source)
            }
            redb::Error::PreviousIo => StoreError::Io {
                context: "using the small-blob table".into(),
                source: io::Error::other("an earlier disk failure"),
            },
            error => StoreError::Table(error.to_string()),
        }
    }

    fn is_io(&self) -> bool {
        matches!(self, StoreError::Io { .. } | StoreError::DiskFull { .. })
    }

    fn closed() -> Self {
        StoreError::Io {
            context: "using the small-blob table".into(),
            source: io::Error::other("it is closed after a disk failure"),
        }
    }

    fn inconsistent(what: String) -> Self {
        StoreError::Table(what)
    }
}

fn storage<E: Into<redb::Error>>(error: E) -> StoreError {
    StoreError::storage(error.into())
}

/// One change of a batch.
enum Change {
    Insert {
        id: ChunkId,
        sealed: Vec<u8>,
    },
    Remove(ChunkId),
    /// Remove the value only if it still is these bytes (a quarantine:
    /// a good copy put back meanwhile stays).
    RemoveIfEqual {
        id: ChunkId,
        sealed: Vec<u8>,
    },
}

/// What a committed change did: the bytes of the value it removed or
/// replaced (`None`: there was none).
pub(super) type Replaced = Option<u64>;

#[derive(Debug)]
pub(super) struct SmallBlobs {
    env: Env,
    file: RedbFile<StoreError>,
    distrusted_marker: PathBuf,
    distrusted: AtomicBool,
    /// The marker is on disk (its write is retried at each commit until).
    marker_written: AtomicBool,
    changes: GroupCommit<Change, Result<Replaced, StoreError>>,
    /// Blobs inserted by a commit that is running or failed: a failed
    /// commit's outcome is unknown, so a value the table shows may not
    /// survive a crash. Such a blob does not count as held until a commit
    /// that inserts or removes it succeeds. Bounded by the failed inserts
    /// since start.
    not_durable: Mutex<BTreeSet<ChunkId>>,
    /// What the table holds, from [`STATS`] as the last commit left it.
    usage: Mutex<Usage>,
}

impl SmallBlobs {
    /// Open `small-blobs.redb` in `data_dir`: create it if `create`, and
    /// return `None` if it does not exist and is not to be created.
    pub fn open(env: &Env, data_dir: &Path, create: bool) -> Result<Option<Self>, StoreError> {
        let path = data_dir.join(FILE_NAME);
        let exists = env
            .disk
            .exists(&path)
            .map_err(|e| StoreError::io(format!("checking for {FILE_NAME}"), e))?;
        if !exists && !create {
            return Ok(None);
        }
        // A table redb cannot open (a rotten header, or a format this
        // build does not read, as after a rollback) fails the start: moving
        // it aside on its own would drop its blobs, and after a rollback
        // every node would do so at once, with no copy left to repair from.
        let file = Self::open_file(env, &path).map_err(|error| match error {
            StoreError::Table(text) => StoreError::Table(format!(
                "{text}; {FILE_NAME} cannot be opened. If another build wrote it, start that build. If it is corrupt, move it out of the data dir while the node is stopped: the node then starts without its blobs, and other nodes send them again"
            )),
            error => error,
        })?;
        let distrusted_marker = data_dir.join(DISTRUSTED_FILE);
        let distrusted = env
            .disk
            .exists(&distrusted_marker)
            .map_err(|e| StoreError::io(format!("checking for {DISTRUSTED_FILE}"), e))?;
        if distrusted {
            tracing::error!(
                "the small-blob table is distrusted (see {DISTRUSTED_FILE}): its blobs are read but not counted as held, and are written again as files as other nodes send them"
            );
        }
        let blobs = Self {
            env: env.clone(),
            file,
            distrusted_marker,
            distrusted: AtomicBool::new(distrusted),
            marker_written: AtomicBool::new(distrusted),
            changes: GroupCommit::default(),
            not_durable: Mutex::new(BTreeSet::new()),
            usage: Mutex::new(Usage::default()),
        };
        let counted = blobs.file.with_db(
            |db| {
                let txn = db.begin_read().map_err(storage)?;
                let stats = txn.open_table(STATS).map_err(storage)?;
                let stat = |name| -> Result<u64, StoreError> {
                    Ok(stats.get(name).map_err(storage)?.map_or(0, |v| v.value()))
                };
                Ok(Usage {
                    blobs: stat(STAT_BLOBS)?,
                    bytes: stat(STAT_BYTES)?,
                })
            },
            || {},
        );
        // A stats page redb cannot read distrusts the table; it counts as
        // empty (usage is a figure, not a decision).
        let usage = blobs.or_distrust(counted, Usage::default())?;
        *blobs.usage.lock().unwrap() = usage;
        Ok(Some(blobs))
    }

    fn open_file(env: &Env, path: &Path) -> Result<RedbFile<StoreError>, StoreError> {
        RedbFile::open(
            env,
            path,
            |db| {
                let txn = db.begin_write().map_err(storage)?;
                txn.open_table(BLOBS).map_err(storage)?;
                txn.open_table(IDS).map_err(storage)?;
                txn.open_table(STATS).map_err(storage)?;
                txn.commit().map_err(storage)
            },
            "small_blobs_open_dir_sync_failed",
            SMALL_BLOB_CACHE_BYTES,
        )
    }

    /// Whether the table is trusted: no sync of it ever failed (any
    /// sync: a commit's, or redb's own at a close or a reopen), and redb
    /// never found it inconsistent.
    pub fn is_trusted(&self) -> bool {
        if self.file.sync_failures() > 0 {
            self.distrust("a disk sync of the table failed");
        }
        !self.distrusted.load(Ordering::SeqCst)
    }

    /// Stop trusting the table, for good (see the module doc). The
    /// marker is written at once; if that fails, at each later commit (not
    /// at each read that finds the table distrusted: a failing disk would
    /// get a write per presence check).
    fn distrust(&self, why: &str) {
        if self.distrusted.swap(true, Ordering::SeqCst) {
            return;
        }
        crate::marks::hit("small_blob_table_distrusted");
        tracing::error!(
            why,
            "the small-blob table is distrusted from now on: its blobs are read but not counted as held, and are written again as files as other nodes send them; check the disk (dmesg, smartctl)"
        );
        self.record_distrust(why);
    }

    /// Write the marker, if not yet done (a failure is retried at the next
    /// commit: the disk that failed a sync may refuse this write too).
    fn record_distrust(&self, why: &str) {
        if self.marker_written.load(Ordering::SeqCst) {
            return;
        }
        match write_file_durably(&self.env, &self.distrusted_marker, why.as_bytes()) {
            Ok(()) => self.marker_written.store(true, Ordering::SeqCst),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                self.marker_written.store(true, Ordering::SeqCst)
            }
            Err(error) => {
                tracing::error!(%error, "cannot record that the small-blob table is distrusted (will retry); until it is, a restart would trust it again")
            }
        }
    }

    /// `result`, unless it is an inconsistency redb found: then the table
    /// is distrusted and `absent` returned instead.
    fn or_distrust<T>(&self, result: Result<T, StoreError>, absent: T) -> Result<T, StoreError> {
        match result {
            Err(StoreError::Table(error)) => {
                self.distrust(&format!("redb found the table inconsistent: {error}"));
                Ok(absent)
            }
            other => other,
        }
    }

    fn read<T>(
        &self,
        operation: impl FnOnce(&redb::ReadTransaction) -> Result<T, StoreError>,
        absent: T,
    ) -> Result<T, StoreError> {
        let result = self
            .file
            .with_db(|db| operation(&db.begin_read().map_err(storage)?), || {});
        self.or_distrust(result, absent)
    }

    /// The sealed length of `id`, if the table holds it (durably or not).
    pub fn sealed_len(&self, id: &ChunkId) -> Result<Option<u64>, StoreError> {
        self.read(
            |txn| {
                let ids = txn.open_table(IDS).map_err(storage)?;
                Ok(ids.get(&id.0).map_err(storage)?.map(|len| len.value()))
            },
            None,
        )
    }

    /// Whether the table may hold `id` (durably or not): when redb finds
    /// the table inconsistent, `true` (maybe), so that a put of it counts
    /// as a put again for the garbage collector.
    pub fn contains(&self, id: &ChunkId) -> Result<bool, StoreError> {
        self.read(
            |txn| {
                let ids = txn.open_table(IDS).map_err(storage)?;
                Ok(ids.get(&id.0).map_err(storage)?.is_some())
            },
            true,
        )
    }

    /// Whether `id` is held, and known durable: the table is trusted and
    /// the last commit touching `id` succeeded. Presence is read first: a
    /// commit that fails after it was read marked its blobs suspect before
    /// it ran, and distrusts the table after.
    pub fn holds_durably(&self, id: &ChunkId) -> Result<bool, StoreError> {
        Ok(self.contains(id)? && !self.is_suspect(id) && self.is_trusted())
    }

    /// Whether the last commit touching `id` failed (see `not_durable`).
    pub fn is_suspect(&self, id: &ChunkId) -> bool {
        self.not_durable.lock().unwrap().contains(id)
    }

    /// The sealed bytes of `id`, if held (not verified: the caller opens
    /// them). An id without its value, seen in one read transaction (the
    /// two are written in one), distrusts the table: only a rotten page
    /// tells them apart.
    pub fn get(&self, id: &ChunkId) -> Result<Option<Vec<u8>>, StoreError> {
        let found = self.read(
            |txn| {
                let table = txn.open_table(BLOBS).map_err(storage)?;
                if let Some(value) = table.get(&id.0).map_err(storage)? {
                    return Ok(Some(Some(value.value().to_vec())));
                }
                let ids = txn.open_table(IDS).map_err(storage)?;
                Ok(match ids.get(&id.0).map_err(storage)? {
                    Some(_) => None,
                    None => Some(None),
                })
            },
            Some(None),
        )?;
        match found {
            Some(value) => Ok(value),
            None => {
                self.distrust(&format!(
                    "the ids table holds {id}, the values' table does not"
                ));
                Ok(None)
            }
        }
    }

    /// Drop redb's page cache, so that the next read of a value comes from
    /// the file (after a value failed its check once).
    pub fn reread_from_disk(&self) -> Result<(), StoreError> {
        self.file.reopen()
    }

    /// Every id held, sorted. From [`IDS`]; if redb finds that table
    /// inconsistent, from the values' table (slower: it reads every
    /// value); if that fails too, none (logged: the table is distrusted
    /// by then, and other copies of its blobs are sent here again).
    pub fn list(&self) -> Result<Vec<ChunkId>, StoreError> {
        if !self.is_trusted() {
            // The repair loop lists every few seconds: a marker write that
            // failed is retried here too (inserts, refused, never commit).
            self.record_distrust("the table is distrusted");
        }
        fn keys<V: redb::Value + 'static>(
            txn: &redb::ReadTransaction,
            definition: TableDefinition<&[u8; 32], V>,
        ) -> Result<Vec<ChunkId>, StoreError> {
            let table = txn.open_table(definition).map_err(storage)?;
            let mut ids = Vec::new();
            for entry in table.iter().map_err(storage)? {
                let (key, _) = entry.map_err(storage)?;
                ids.push(ChunkId(*key.value()));
            }
            Ok(ids)
        }
        let listed = self
            .file
            .with_db(|db| keys(&db.begin_read().map_err(storage)?, IDS), || {});
        let Err(StoreError::Table(error)) = listed else {
            return listed;
        };
        self.distrust(&format!("redb found the ids table inconsistent: {error}"));
        let listed = self
            .file
            .with_db(|db| keys(&db.begin_read().map_err(storage)?, BLOBS), || {});
        self.or_distrust(listed, Vec::new()).inspect(|ids| {
            if ids.is_empty() {
                tracing::error!(
                    "cannot list the small-blob table: its blobs are left out of repair and scrub"
                );
            }
        })
    }

    /// What the table holds.
    pub fn usage(&self) -> Usage {
        *self.usage.lock().unwrap()
    }

    /// Store `sealed` as `id`, durably on return (replacing a value
    /// already there: a copy whose commit was in doubt is written again).
    /// Returns the bytes of the value it replaced. Refused with
    /// [`StoreError::Table`] once the table is distrusted: the caller
    /// writes a file.
    pub fn insert(&self, id: &ChunkId, sealed: Vec<u8>) -> Result<Replaced, StoreError> {
        self.insert_all(vec![(*id, sealed)])
            .pop()
            .expect("one result per blob")
    }

    /// [`SmallBlobs::insert`] of several blobs with one wait: they are
    /// queued together, so one commit usually takes them all.
    pub fn insert_all(&self, blobs: Vec<(ChunkId, Vec<u8>)>) -> Vec<Result<Replaced, StoreError>> {
        if !self.is_trusted() {
            return blobs
                .iter()
                .map(|_| Err(StoreError::Table("the table is distrusted".into())))
                .collect();
        }
        let changes = blobs
            .into_iter()
            .map(|(id, sealed)| {
                let weight = sealed.len();
                (Change::Insert { id, sealed }, weight)
            })
            .collect();
        self.changes.submit_all(changes, |batch| self.commit(batch))
    }

    /// Remove `id` durably. Returns the bytes of the value it removed.
    pub fn remove(&self, id: &ChunkId) -> Result<Replaced, StoreError> {
        self.changes
            .submit(Change::Remove(*id), 64, |batch| self.commit(batch))
    }

    /// Remove `id` durably if its value is still `sealed`.
    pub fn remove_if_equal(&self, id: &ChunkId, sealed: Vec<u8>) -> Result<Replaced, StoreError> {
        let weight = sealed.len();
        self.changes
            .submit(Change::RemoveIfEqual { id: *id, sealed }, weight, |batch| {
                self.commit(batch)
            })
    }

    /// One transaction for the whole batch, in arrival order; a failure
    /// fails every change of it (its outcome is unknown for all alike).
    ///
    /// The blobs it inserts count as not durable from before the commit
    /// until it is known to have succeeded: a commit whose disk sync fails
    /// may leave its values readable (after the reopen) but not durable.
    fn commit(&self, batch: Vec<Change>) -> Vec<Result<Replaced, StoreError>> {
        if self.is_trusted() {
            return self.commit_changes(batch);
        }
        // Inserts queued before the table was distrusted are refused
        // (their callers write files); removals still apply.
        self.record_distrust("the table is distrusted");
        let count = batch.len();
        let (removals, order): (Vec<Change>, Vec<usize>) = batch
            .into_iter()
            .enumerate()
            .filter(|(_, change)| !matches!(change, Change::Insert { .. }))
            .map(|(at, change)| (change, at))
            .unzip();
        let mut results: Vec<Result<Replaced, StoreError>> = (0..count)
            .map(|_| Err(StoreError::Table("the table is distrusted".into())))
            .collect();
        if !removals.is_empty() {
            for (at, result) in order.into_iter().zip(self.commit_changes(removals)) {
                results[at] = result;
            }
        }
        results
    }

    fn commit_changes(&self, batch: Vec<Change>) -> Vec<Result<Replaced, StoreError>> {
        let count = batch.len();
        self.not_durable
            .lock()
            .unwrap()
            .extend(batch.iter().filter_map(|change| match change {
                Change::Insert { id, .. } => Some(*id),
                Change::Remove(_) | Change::RemoveIfEqual { .. } => None,
            }));
        let committed = self.file.with_db(|db| Self::apply(db, &batch), || {});
        // A failed sync distrusts the table (is_trusted reads the count).
        self.is_trusted();
        match committed {
            Ok((replaced, usage)) => {
                let mut not_durable = self.not_durable.lock().unwrap();
                for change in &batch {
                    match change {
                        Change::Insert { id, .. }
                        | Change::Remove(id)
                        | Change::RemoveIfEqual { id, .. } => not_durable.remove(id),
                    };
                }
                drop(not_durable);
                *self.usage.lock().unwrap() = usage;
                // Distrusted while it ran (a read found the table
                // inconsistent): what it inserted is not vouched for, and
                // its callers write files instead.
                let trusted = self.is_trusted();
                batch
                    .iter()
                    .zip(replaced)
                    .map(|(change, replaced)| match change {
                        Change::Insert { .. } if !trusted => {
                            Err(StoreError::Table("the table is distrusted".into()))
                        }
                        _ => Ok(replaced),
                    })
                    .collect()
            }
            Err(error) => {
                if let StoreError::Table(text) = &error {
                    self.distrust(&format!("redb found the table inconsistent: {text}"));
                }
                let text = error.to_string();
                let kind = match &error {
                    StoreError::DiskFull { .. } => 0,
                    StoreError::Table(_) => 1,
                    _ => 2,
                };
                let mut results = vec![Err(error)];
                results.extend((1..count).map(|_| {
                    Err(match kind {
                        0 => StoreError::DiskFull {
                            context: text.clone(),
                        },
                        // Each caller writes a file instead.
                        1 => StoreError::Table(text.clone()),
                        _ => StoreError::Io {
                            context: "committing to the small-blob table".into(),
                            source: io::Error::other(text.clone()),
                        },
                    })
                }));
                results
            }
        }
    }

    /// Apply `batch` in one write transaction, and commit it (durable on
    /// return). Returns what each change replaced, and the table's usage.
    fn apply(db: &Database, batch: &[Change]) -> Result<(Vec<Replaced>, Usage), StoreError> {
        let txn = db.begin_write().map_err(storage)?;
        let mut replaced = Vec::with_capacity(batch.len());
        let usage;
        {
            let mut table = txn.open_table(BLOBS).map_err(storage)?;
            let mut ids = txn.open_table(IDS).map_err(storage)?;
            let mut stats = txn.open_table(STATS).map_err(storage)?;
            let stat = |stats: &redb::Table<&str, u64>, name| -> Result<u64, StoreError> {
                Ok(stats.get(name).map_err(storage)?.map_or(0, |v| v.value()))
            };
            let (mut blobs, mut bytes) = (stat(&stats, STAT_BLOBS)?, stat(&stats, STAT_BYTES)?);
            for change in batch {
                let (old, new) = match change {
                    Change::Insert { id, sealed } => {
                        let len = sealed.len() as u64;
                        table.insert(&id.0, sealed.as_slice()).map_err(storage)?;
                        (ids.insert(&id.0, len).map_err(storage)?, Some(len))
                    }
                    Change::Remove(id) => {
                        table.remove(&id.0).map_err(storage)?;
                        (ids.remove(&id.0).map_err(storage)?, None)
                    }
                    Change::RemoveIfEqual { id, sealed } => {
                        let equal = table
                            .get(&id.0)
                            .map_err(storage)?
                            .is_some_and(|value| value.value() == sealed.as_slice());
                        if !equal {
                            replaced.push(None);
                            continue;
                        }
                        table.remove(&id.0).map_err(storage)?;
                        (ids.remove(&id.0).map_err(storage)?, None)
                    }
                };
                let old = old.map(|len| len.value());
                blobs = (blobs + u64::from(new.is_some())).saturating_sub(u64::from(old.is_some()));
                bytes = (bytes + new.unwrap_or(0)).saturating_sub(old.unwrap_or(0));
                replaced.push(old);
            }
            stats.insert(STAT_BLOBS, blobs).map_err(storage)?;
            stats.insert(STAT_BYTES, bytes).map_err(storage)?;
            usage = Usage { blobs, bytes };
        }
        txn.commit().map_err(storage)?;
        Ok((replaced, usage))
    }

    /// Commits made and changes they held since open: how well group
    /// commit batches.
    pub fn commit_counts(&self) -> (u64, u64) {
        self.changes.counts()
    }
}

#[cfg(test)]
impl SmallBlobs {
    /// Distrust the table as a failed sync would.
    pub fn distrust_for_test(&self) {
        self.distrust("a test");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::tokio_env;

    fn table(dir: &Path) -> SmallBlobs {
        SmallBlobs::open(&tokio_env(), dir, true).unwrap().unwrap()
    }

    /// An insert queued before the table was distrusted is refused at its
    /// commit (its caller writes a file), while a removal still applies;
    /// the marker is written.
    #[test]
    fn a_distrusted_table_commits_no_insert_queued_before() {
        let dir = tempfile::tempdir().unwrap();
        let small = table(dir.path());
        let (kept, new) = (ChunkId::of(b"kept"), ChunkId::of(b"new"));
        small.insert(&kept, vec![1; 10]).unwrap();
        small.distrust_for_test();
        let results = small.commit(vec![
            Change::Insert {
                id: new,
                sealed: vec![2; 10],
            },
            Change::Remove(kept),
        ]);
        assert!(matches!(results[0], Err(StoreError::Table(_))));
        assert_eq!(results[1].as_ref().unwrap(), &Some(10));
        assert!(!small.contains(&new).unwrap());
        assert!(!small.contains(&kept).unwrap());
        assert!(dir.path().join(DISTRUSTED_FILE).exists());
        assert_eq!(small.usage(), Usage::default());
    }

    /// A quarantine removes the bad bytes it read, not a good copy put
    /// back meanwhile.
    #[test]
    fn a_quarantine_spares_a_copy_put_back_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let small = table(dir.path());
        let id = ChunkId::of(b"blob");
        small.insert(&id, vec![0xBA; 10]).unwrap();
        small.insert(&id, vec![0x60; 10]).unwrap();
        assert_eq!(small.remove_if_equal(&id, vec![0xBA; 10]).unwrap(), None);
        assert_eq!(small.get(&id).unwrap(), Some(vec![0x60; 10]));
        assert_eq!(
            small.remove_if_equal(&id, vec![0x60; 10]).unwrap(),
            Some(10)
        );
        assert!(!small.contains(&id).unwrap());
    }
}
