//! The small-blob table: sealed blobs up to the node's
//! `--small-blob-bytes-max` (64 KiB by default) kept as values of one redb
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
//! by the caller ([`super::ChunkStore`]). What the table does not cover as
//! a file would: rot of one of redb's own pages (a branch page rather than
//! a value). redb checks its page checksums only when it recovers from a
//! crash, so a lookup through a rotten branch page finds nothing (the blob
//! reads as missing, and repair fetches another copy) or fails with an
//! error; the blobs under that page are unreachable until repair replaces
//! them. The version index has the same exposure.

use std::collections::BTreeSet;
use std::io;
use std::path::Path;
use std::sync::Mutex;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{StoreError, Usage};
use crate::cas::ChunkId;
use crate::env::Env;
use crate::limits::SMALL_BLOB_CACHE_BYTES;
use crate::meta::group_commit::GroupCommit;
use crate::meta::redb_file::{RedbErrors, RedbFile};

/// Blob id -> sealed bytes.
const BLOBS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("blobs");
/// The same ids, without their values: a listing (the repair loop lists
/// the store every few seconds) reads 32 bytes a blob, not its value
/// (redb keeps values in the leaves, beside their keys).
const IDS: TableDefinition<&[u8; 32], ()> = TableDefinition::new("ids");
/// [`STAT_BLOBS`] and [`STAT_BYTES`]: what [`BLOBS`] holds, kept by every
/// commit, so that an open need not read every value to count them.
const STATS: TableDefinition<&str, u64> = TableDefinition::new("stats");
const STAT_BLOBS: &str = "blobs";
const STAT_BYTES: &str = "sealed_bytes";

/// The file's name in the data dir.
pub const FILE_NAME: &str = "small-blobs.redb";

impl RedbErrors for StoreError {
    fn open_failed(error: io::Error) -> Self {
        StoreError::io(format!("opening {FILE_NAME}"), error)
    }

    fn storage(error: redb::Error) -> Self {
        match error {
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
}

fn storage<E: Into<redb::Error>>(error: E) -> StoreError {
    StoreError::storage(error.into())
}

/// One change of a batch.
enum Change {
    Insert { id: ChunkId, sealed: Vec<u8> },
    Remove(ChunkId),
}

/// What a committed change did: the bytes of the value it removed or
/// replaced (`None`: there was none).
type Replaced = Option<u64>;

#[derive(Debug)]
pub(super) struct SmallBlobs {
    file: RedbFile<StoreError>,
    changes: GroupCommit<Change, Result<Replaced, StoreError>>,
    /// Blobs inserted by a commit that is running or failed: a failed
    /// commit's outcome is unknown (its disk sync may have failed after
    /// redb wrote it), so a value the table shows may not survive a crash.
    /// Such a blob does not count as held until a commit that inserts or
    /// removes it succeeds. Bounded by the blobs stored.
    not_durable: Mutex<BTreeSet<ChunkId>>,
}

impl SmallBlobs {
    /// Open (or create) `small-blobs.redb` in `data_dir`, and count what
    /// it holds.
    pub fn open(env: &Env, data_dir: &Path) -> Result<(Self, Usage), StoreError> {
        let file = RedbFile::open(
            env,
            &data_dir.join(FILE_NAME),
            |db| {
                let txn = db.begin_write().map_err(storage)?;
                txn.open_table(BLOBS).map_err(storage)?;
                txn.open_table(IDS).map_err(storage)?;
                txn.open_table(STATS).map_err(storage)?;
                txn.commit().map_err(storage)
            },
            SMALL_BLOB_CACHE_BYTES,
        )?;
        let blobs = Self {
            file,
            changes: GroupCommit::default(),
            not_durable: Mutex::new(BTreeSet::new()),
        };
        let usage = blobs.file.with_db(
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
        )?;
        Ok((blobs, usage))
    }

    fn read<T>(
        &self,
        operation: impl FnOnce(&redb::ReadOnlyTable<&[u8; 32], &[u8]>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.file.with_db(
            |db| {
                let txn = db.begin_read().map_err(storage)?;
                let table = txn.open_table(BLOBS).map_err(storage)?;
                operation(&table)
            },
            || {},
        )
    }

    /// Whether the table holds `id` (durably or not). Asks [`IDS`]: its
    /// pages are 32 bytes a blob, so they stay in the cache.
    pub fn contains(&self, id: &ChunkId) -> Result<bool, StoreError> {
        self.file.with_db(
            |db| {
                let txn = db.begin_read().map_err(storage)?;
                let ids = txn.open_table(IDS).map_err(storage)?;
                Ok(ids.get(&id.0).map_err(storage)?.is_some())
            },
            || {},
        )
    }

    /// Whether `id` is held, and its last commit is known durable.
    pub fn holds_durably(&self, id: &ChunkId) -> Result<bool, StoreError> {
        Ok(self.contains(id)? && !self.is_suspect(id))
    }

    /// Whether the last commit touching `id` failed (see `not_durable`).
    pub fn is_suspect(&self, id: &ChunkId) -> bool {
        self.not_durable.lock().unwrap().contains(id)
    }

    /// The sealed bytes of `id`, if held (not verified: the caller opens
    /// them).
    pub fn get(&self, id: &ChunkId) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|table| {
            Ok(table
                .get(&id.0)
                .map_err(storage)?
                .map(|value| value.value().to_vec()))
        })
    }

    /// The sealed length of `id`, if held.
    pub fn sealed_len(&self, id: &ChunkId) -> Result<Option<u64>, StoreError> {
        self.read(|table| {
            Ok(table
                .get(&id.0)
                .map_err(storage)?
                .map(|value| value.value().len() as u64))
        })
    }

    /// Every id held, sorted.
    pub fn list(&self) -> Result<Vec<ChunkId>, StoreError> {
        self.file.with_db(
            |db| {
                let txn = db.begin_read().map_err(storage)?;
                let table = txn.open_table(IDS).map_err(storage)?;
                let mut ids = Vec::new();
                for entry in table.iter().map_err(storage)? {
                    let (key, _) = entry.map_err(storage)?;
                    ids.push(ChunkId(*key.value()));
                }
                Ok(ids)
            },
            || {},
        )
    }

    /// Store `sealed` as `id`, durably on return (replacing a value
    /// already there: a copy whose commit was in doubt is written again).
    /// Returns the bytes of the value it replaced.
    pub fn insert(&self, id: &ChunkId, sealed: Vec<u8>) -> Result<Replaced, StoreError> {
        let weight = sealed.len();
        self.submit(Change::Insert { id: *id, sealed }, weight)
    }

    /// Remove `id` durably. Returns the bytes of the value it removed.
    pub fn remove(&self, id: &ChunkId) -> Result<Replaced, StoreError> {
        self.submit(Change::Remove(*id), 64)
    }

    fn submit(&self, change: Change, weight: usize) -> Result<Replaced, StoreError> {
        self.changes
            .submit(change, weight, |batch| self.commit(batch))
    }

    /// One transaction for the whole batch, in arrival order; a failure
    /// fails every change of it (its outcome is unknown for all alike).
    ///
    /// The blobs it inserts count as not durable from before the commit
    /// until it is known to have succeeded: a commit whose disk sync fails
    /// may leave its values readable (after the reopen) but not durable.
    fn commit(&self, batch: Vec<Change>) -> Vec<Result<Replaced, StoreError>> {
        let count = batch.len();
        let inserted = || {
            batch.iter().filter_map(|change| match change {
                Change::Insert { id, .. } => Some(*id),
                Change::Remove(_) => None,
            })
        };
        self.not_durable.lock().unwrap().extend(inserted());
        let committed = self.file.with_db(
            |db: &Database| {
                let txn = db.begin_write().map_err(storage)?;
                let mut replaced = Vec::with_capacity(count);
                {
                    let mut table = txn.open_table(BLOBS).map_err(storage)?;
                    let mut ids = txn.open_table(IDS).map_err(storage)?;
                    let mut stats = txn.open_table(STATS).map_err(storage)?;
                    let stat = |stats: &redb::Table<&str, u64>, name| -> Result<u64, StoreError> {
                        Ok(stats.get(name).map_err(storage)?.map_or(0, |v| v.value()))
                    };
                    let (mut blobs, mut bytes) =
                        (stat(&stats, STAT_BLOBS)?, stat(&stats, STAT_BYTES)?);
                    for change in &batch {
                        let (old, new) = match change {
                            Change::Insert { id, sealed } => {
                                ids.insert(&id.0, ()).map_err(storage)?;
                                (
                                    table.insert(&id.0, sealed.as_slice()).map_err(storage)?,
                                    Some(sealed.len() as u64),
                                )
                            }
                            Change::Remove(id) => {
                                ids.remove(&id.0).map_err(storage)?;
                                (table.remove(&id.0).map_err(storage)?, None)
                            }
                        };
                        let old = old.map(|value| value.value().len() as u64);
                        blobs = (blobs + u64::from(new.is_some()))
                            .saturating_sub(u64::from(old.is_some()));
                        bytes = (bytes + new.unwrap_or(0)).saturating_sub(old.unwrap_or(0));
                        replaced.push(old);
                    }
                    stats.insert(STAT_BLOBS, blobs).map_err(storage)?;
                    stats.insert(STAT_BYTES, bytes).map_err(storage)?;
                }
                txn.commit().map_err(storage)?;
                Ok(replaced)
            },
            || {},
        );
        match committed {
            Ok(replaced) => {
                let mut not_durable = self.not_durable.lock().unwrap();
                for change in &batch {
                    match change {
                        Change::Insert { id, .. } | Change::Remove(id) => not_durable.remove(id),
                    };
                }
                drop(not_durable);
                replaced.into_iter().map(Ok).collect()
            }
            Err(error) => {
                let text = error.to_string();
                let is_full = matches!(error, StoreError::DiskFull { .. });
                let mut results = vec![Err(error)];
                results.extend((1..count).map(|_| {
                    Err(if is_full {
                        StoreError::DiskFull {
                            context: text.clone(),
                        }
                    } else {
                        StoreError::Io {
                            context: "committing to the small-blob table".into(),
                            source: io::Error::other(text.clone()),
                        }
                    })
                }));
                results
            }
        }
    }

    /// Commits made and changes they held since open: how well group
    /// commit batches.
    pub fn commit_counts(&self) -> (u64, u64) {
        self.changes.counts()
    }
}
