use std::path::Path;
use std::sync::Mutex;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::digest::{SYNC_BUCKETS, bucket_of, floor_hash, record_hash};
use super::group_commit::{Done, GroupCommit, Queued};
use super::record::{LegacyRecord, VERSION_KEY_BYTES};
use super::redb_file::{RedbErrors, RedbFile};
use super::{
    Floor, History, IndexState, KeyRecord, RecordKey, VersionId, VersionRecord, validate_name,
};
use crate::env::Env;
use crate::limits::INDEX_CACHE_BYTES;

/// `name ‖ 0x00 ‖ VersionId::to_key()` -> [`VersionRecord::encode_stored`]
/// (a format byte, then postcard). Names contain no NUL, so all of a
/// name's records are one key range, in version order.
const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records_v2");
/// The same keys, before access keys: postcard of [`LegacyRecord`] without
/// a format byte. Migrated into [`RECORDS`] (and dropped) at open.
const LEGACY_RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
/// What the legacy table holds after a migration: a key no name makes
/// (0xFF is never in UTF-8) and a value no older build decodes (a length
/// varint that never ends).
const UPGRADED_SENTINEL: (&[u8], &[u8]) = (b"\xffdfs: migrated to records_v2", &[0xFF; 12]);
/// name -> VersionId::to_key() of its prune floor.
const FLOORS: TableDefinition<&str, &[u8]> = TableDefinition::new("floors");
/// Access key id -> [`KeyRecord::encode`].
const ACCESS_KEYS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("access_keys");

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("version index storage failed: {0}")]
    Storage(String),
    /// The disk failed under redb; the database is reopened before the next
    /// operation (redb refuses all work after an I/O error until then).
    #[error("version index disk I/O failed: {0}")]
    Io(String),
    #[error("version index holds an undecodable entry (disk corruption?): {0}")]
    Corrupt(String),
    #[error("cannot open the version index file: {0}")]
    Open(std::io::Error),
}

fn storage<E: Into<redb::Error>>(error: E) -> IndexError {
    IndexError::storage(error.into())
}

impl RedbErrors for IndexError {
    fn open_failed(error: std::io::Error) -> Self {
        IndexError::Open(error)
    }

    fn storage(error: redb::Error) -> Self {
        match error {
            error @ (redb::Error::Io(_) | redb::Error::PreviousIo) => {
                IndexError::Io(error.to_string())
            }
            error => IndexError::Storage(error.to_string()),
        }
    }

    fn is_io(&self) -> bool {
        matches!(self, IndexError::Io(_))
    }

    fn closed() -> Self {
        IndexError::Io("the index is closed after a disk failure".into())
    }

    fn inconsistent(what: String) -> Self {
        IndexError::Corrupt(format!("the index is inconsistent: {what}"))
    }
}

fn record_key(name: &str, vid: &VersionId) -> Vec<u8> {
    let mut key = Vec::with_capacity(name.len() + 1 + VERSION_KEY_BYTES);
    key.extend_from_slice(name.as_bytes());
    key.push(0);
    key.extend_from_slice(&vid.to_key());
    key
}

/// The key range holding all of `name`'s records: `name ‖ 0x00 ..  name ‖ 0x01`.
fn name_range(name: &str) -> (Vec<u8>, Vec<u8>) {
    let mut start = name.as_bytes().to_vec();
    start.push(0);
    let mut end = name.as_bytes().to_vec();
    end.push(1);
    (start, end)
}

/// The least key above every key that starts with `prefix` (`None`: no
/// such key, the range runs to the end).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The keys a listing of `prefix` from `from` reads: `None` when there
/// are none. Keys are name ‖ 0 ‖ version: a name's records sort before
/// any longer name's, so `after ‖ 1` is past every record of `after`.
fn list_range(prefix: &str, from: &ListFrom) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
    let mut start = prefix.as_bytes().to_vec();
    match from {
        ListFrom::Start => {}
        ListFrom::After(after) => {
            if after.as_bytes() >= prefix.as_bytes() {
                start = after.as_bytes().to_vec();
                start.push(1);
            }
        }
        ListFrom::PastPrefix(skipped) => match prefix_end(skipped.as_bytes()) {
            Some(past) if past.as_slice() > prefix.as_bytes() => start = past,
            Some(_) => {}
            None => return None,
        },
    }
    let end = prefix_end(prefix.as_bytes());
    if end.as_ref().is_some_and(|end| start >= *end) {
        return None;
    }
    Some((start, end))
}

/// The inverse of [`record_key`].
fn split_record_key(key: &[u8]) -> Option<(&str, VersionId)> {
    let split = key.len().checked_sub(VERSION_KEY_BYTES + 1)?;
    if key[split] != 0 {
        return None;
    }
    let name = std::str::from_utf8(&key[..split]).ok()?;
    Some((name, VersionId::from_key(&key[split + 1..])?))
}

fn decode_record(bytes: &[u8]) -> Result<VersionRecord, IndexError> {
    VersionRecord::decode_stored(bytes).map_err(IndexError::Corrupt)
}

/// What a [`VersionIndex::merge`] changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MergeOutcome {
    /// Records that were new (or replaced a lesser record with their id).
    pub records: Vec<VersionRecord>,
    /// Floors that were raised.
    pub floors: Vec<Floor>,
    /// Records dropped below raised floors.
    pub dropped: usize,
    /// Records given to the merge that it did not keep because their
    /// name's floor is above them (they were pruned, or arrive after a
    /// prune passed them).
    pub below_floor: Vec<RecordKey>,
}

/// Where a listing starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListFrom {
    /// At the prefix.
    Start,
    /// After this name.
    After(String),
    /// After every name that starts with this.
    PastPrefix(String),
}

/// A merge's weight for the group commit: about its bytes.
fn merge_weight(records: &[VersionRecord], floors: &[Floor]) -> usize {
    records
        .iter()
        .map(|r| r.name.len() + 128)
        .chain(floors.iter().map(|f| f.name.len() + 64))
        .sum()
}

/// The persisted version index. Every mutation is one redb transaction,
/// committed durably (fsync) before the method returns.
#[derive(Debug)]
pub struct VersionIndex {
    file: RedbFile<IndexError>,
    /// Concurrent merges share one transaction and one disk sync.
    merges: GroupCommit<(Vec<VersionRecord>, Vec<Floor>), Result<MergeOutcome, IndexError>>,
    /// Merges of async callers, waiting for a blocking run to submit them
    /// ([`VersionIndex::queue_merge`]).
    queued: Queued<(Vec<VersionRecord>, Vec<Floor>), Result<MergeOutcome, IndexError>>,
    /// The anti-entropy digests of the committed index, kept up to date by
    /// every merge (XOR is incremental): a sync round reads 256 numbers
    /// instead of hashing the whole index. `None`: not known (at open, or
    /// after a commit whose outcome is unknown); the next read scans.
    /// Held across each commit and each scan, so the two never interleave.
    digests: Mutex<Option<Vec<u128>>>,
    /// Transactions committed by merges (each one disk sync).
    commits: std::sync::atomic::AtomicU64,
}

impl VersionIndex {
    /// Open the index at `path`, creating it on first start (atomically:
    /// see `meta::redb_file`).
    pub fn open(env: &Env, path: &Path) -> Result<Self, IndexError> {
        let file = RedbFile::open(
            env,
            path,
            Self::create_tables,
            "index_open_dir_sync_failed",
            INDEX_CACHE_BYTES,
        )?;
        Ok(Self {
            file,
            merges: GroupCommit::default(),
            queued: Queued::default(),
            digests: Mutex::new(None),
            commits: Default::default(),
        })
    }

    /// Run `operation` on the database; after an I/O failure, forget the
    /// kept digests (what the reopened file holds is what counts: they are
    /// scanned again from it) and reopen it ([`RedbFile::with_db`]).
    fn with_db<T>(
        &self,
        operation: impl FnOnce(&Database) -> Result<T, IndexError>,
    ) -> Result<T, IndexError> {
        self.file.with_db(operation, || {
            *self.digests.lock().expect("digests poisoned") = None;
        })
    }

    /// The size of the index file on disk (blocking).
    pub fn file_bytes(&self) -> std::io::Result<u64> {
        self.file.file_bytes()
    }

    /// Create the tables if absent (so read transactions always find them).
    /// The commit is durable, so the database's header is on disk too.
    fn create_tables(db: &Database) -> Result<(), IndexError> {
        let txn = db.begin_write().map_err(storage)?;
        Self::migrate_legacy_records(&txn)?;
        txn.open_table(RECORDS).map_err(storage)?;
        txn.open_table(FLOORS).map_err(storage)?;
        txn.open_table(ACCESS_KEYS).map_err(storage)?;
        txn.commit().map_err(storage)
    }

    /// An index written before access keys holds its records in the legacy
    /// table: copy them into the current one (`by: None`), in the
    /// transaction that opens the index (a crash leaves either layout
    /// whole). The legacy table then holds only [`UPGRADED_SENTINEL`], in
    /// every index this build opens, new ones too: an older build cannot
    /// decode it, so rolled back by mistake it fails to list or collect
    /// rather than find an empty index and let its garbage collector
    /// delete every chunk.
    fn migrate_legacy_records(txn: &redb::WriteTransaction) -> Result<(), IndexError> {
        let mut migrated = 0usize;
        {
            let old = txn.open_table(LEGACY_RECORDS).map_err(storage)?;
            let mut new = txn.open_table(RECORDS).map_err(storage)?;
            for entry in old.iter().map_err(storage)? {
                let (key, value) = entry.map_err(storage)?;
                if key.value() == UPGRADED_SENTINEL.0 {
                    continue;
                }
                let record: LegacyRecord = postcard::from_bytes(value.value())
                    .map_err(|e| IndexError::Corrupt(format!("a record of the old format: {e}")))?;
                let record = VersionRecord::from(record);
                new.insert(key.value(), record.encode_stored().as_slice())
                    .map_err(storage)?;
                migrated += 1;
            }
        }
        let sentinel_only = {
            let table = txn.open_table(LEGACY_RECORDS).map_err(storage)?;
            table.len().map_err(storage)? == 1
                && table.get(UPGRADED_SENTINEL.0).map_err(storage)?.is_some()
        };
        if sentinel_only {
            return Ok(());
        }
        // A new index gets the sentinel too: an older build must not take
        // it for an empty one either.
        txn.delete_table(LEGACY_RECORDS).map_err(storage)?;
        txn.open_table(LEGACY_RECORDS)
            .map_err(storage)?
            .insert(UPGRADED_SENTINEL.0, UPGRADED_SENTINEL.1)
            .map_err(storage)?;
        if migrated > 0 {
            tracing::info!(
                migrated,
                "version index: records moved to the format with access keys (an older dfs cannot open this index)"
            );
        }
        Ok(())
    }

    /// Merge access key records (last writer wins per key), durable on
    /// return; returns those that changed the index. Malformed records are
    /// skipped: a peer's corrupt record must not poison the index.
    pub fn merge_keys(&self, records: &[KeyRecord]) -> Result<Vec<KeyRecord>, IndexError> {
        self.with_db(|db| {
            let txn = db.begin_write().map_err(storage)?;
            let mut changed = Vec::new();
            {
                let mut table = txn.open_table(ACCESS_KEYS).map_err(storage)?;
                for record in records {
                    if record.validate().is_err() {
                        continue;
                    }
                    let id: &[u8] = record.id.as_str().as_bytes();
                    let wins = match table.get(id).map_err(storage)? {
                        // An undecodable stored record loses to any valid one.
                        Some(existing) => KeyRecord::decode(existing.value())
                            .map_or(true, |existing| record.supersedes(&existing)),
                        None => true,
                    };
                    if wins {
                        table
                            .insert(id, record.encode().as_slice())
                            .map_err(storage)?;
                        changed.push(record.clone());
                    }
                }
            }
            txn.commit().map_err(storage)?;
            Ok(changed)
        })
    }

    /// Every access key record, removed ones included, by id.
    pub fn keys(&self) -> Result<Vec<KeyRecord>, IndexError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(storage)?;
            let table = txn.open_table(ACCESS_KEYS).map_err(storage)?;
            let mut keys = Vec::new();
            for entry in table.iter().map_err(storage)? {
                let (_, value) = entry.map_err(storage)?;
                keys.push(KeyRecord::decode(value.value()).map_err(IndexError::Corrupt)?);
            }
            Ok(keys)
        })
    }

    /// Merge `records` in (the CRDT insert of [`History`]); returns the ones
    /// that changed the index. Durable on return.
    pub fn apply(&self, records: &[VersionRecord]) -> Result<Vec<VersionRecord>, IndexError> {
        Ok(self.merge(records, &[])?.records)
    }

    /// Raise `name`'s prune floor and drop its records below it; returns how
    /// many records were dropped. Durable on return.
    pub fn raise_floor(&self, name: &str, floor: VersionId) -> Result<usize, IndexError> {
        let floor = Floor {
            name: name.to_string(),
            floor,
        };
        Ok(self.merge(&[], &[floor])?.dropped)
    }

    /// Merge floors (max) and records (union above the floor), durable on
    /// return. Invalid names are skipped: a peer's corrupt record must not
    /// poison the index. Merges that arrive while another commits share
    /// the next transaction (group commit): one disk sync for all of them,
    /// each applied in arrival order as if alone.
    pub fn merge(
        &self,
        records: &[VersionRecord],
        floors: &[Floor],
    ) -> Result<MergeOutcome, IndexError> {
        let weight = merge_weight(records, floors);
        self.merges
            .submit((records.to_vec(), floors.to_vec()), weight, |batch| {
                self.merge_batch(batch)
            })
    }

    /// [`VersionIndex::merge`] for an async caller: queued for the next
    /// batch (`meta::group_commit::Queued`: the caller is woken once,
    /// instead of holding a blocking thread while the group commit runs);
    /// `done` gets the outcome, once durable, on the thread of the run.
    /// Returns whether the caller must start
    /// [`VersionIndex::run_queued_merges`] on a blocking thread.
    pub fn queue_merge(
        &self,
        records: Vec<VersionRecord>,
        floors: Vec<Floor>,
        done: Done<Result<MergeOutcome, IndexError>>,
    ) -> bool {
        let weight = merge_weight(&records, &floors);
        self.queued.push((records, floors), weight, done)
    }

    /// Submit the queued merges to the group commit, a batch at a time,
    /// until none is left. Blocking.
    pub fn run_queued_merges(&self) {
        self.queued.run(|merges| {
            self.merges
                .submit_all(merges, |batch| self.merge_batch(batch))
        });
    }

    /// Merges and the commits that made them durable since open: how well
    /// group commit batches.
    pub fn merge_counts(&self) -> (u64, u64) {
        let (_, merges) = self.merges.counts();
        (
            merges,
            self.commits.load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// One transaction for every merge of `batch`; one outcome each. If
    /// the batch fails, each merge is tried again alone, so that one bad
    /// merge (a corrupt entry it touches) fails only its own caller
    /// (merges are idempotent: a batch whose commit's outcome is unknown
    /// may be applied again).
    fn merge_batch(
        &self,
        batch: Vec<(Vec<VersionRecord>, Vec<Floor>)>,
    ) -> Vec<Result<MergeOutcome, IndexError>> {
        if batch.len() == 1 {
            return vec![
                self.merge_in_one_transaction(&batch)
                    .map(|mut outcomes| outcomes.remove(0)),
            ];
        }
        match self.merge_in_one_transaction(&batch) {
            Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
            // A disk failure fails them all alike (each retry would reopen
            // the index again).
            Err(IndexError::Io(text)) => (0..batch.len())
                .map(|_| Err(IndexError::Io(text.clone())))
                .collect(),
            Err(_) => batch
                .into_iter()
                .map(|job| {
                    self.merge_in_one_transaction(std::slice::from_ref(&job))
                        .map(|mut outcomes| outcomes.remove(0))
                })
                .collect(),
        }
    }

    /// Apply every merge of `batch` in one transaction, committed (one
    /// disk sync) unless it changed nothing.
    fn merge_in_one_transaction(
        &self,
        batch: &[(Vec<VersionRecord>, Vec<Floor>)],
    ) -> Result<Vec<MergeOutcome>, IndexError> {
        let count = batch.len();
        self.with_db(|db| {
            let txn = db.begin_write().map_err(storage)?;
            let mut outcomes = Vec::with_capacity(count);
            let mut delta = vec![0u128; SYNC_BUCKETS];
            {
                let mut table = txn.open_table(RECORDS).map_err(storage)?;
                let mut floor_table = txn.open_table(FLOORS).map_err(storage)?;
                for (records, floors) in batch {
                    outcomes.push(Self::merge_into(
                        &mut table,
                        &mut floor_table,
                        records,
                        floors,
                        &mut delta,
                    )?);
                }
            }
            if outcomes
                .iter()
                .all(|o| o.records.is_empty() && o.floors.is_empty())
            {
                // Nothing new (a push or a sync of what is already here):
                // no commit, and so no disk sync.
                txn.abort().map_err(storage)?;
            } else {
                let mut digests = self.digests.lock().expect("digests poisoned");
                match txn.commit().map_err(storage) {
                    Ok(()) => {
                        self.commits
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if let Some(digests) = digests.as_mut() {
                            for (digest, change) in digests.iter_mut().zip(&delta) {
                                *digest ^= change;
                            }
                        }
                    }
                    Err(error) => {
                        // Committed or not, nobody can say: scan next time.
                        *digests = None;
                        return Err(error);
                    }
                }
            }
            Ok(outcomes)
        })
    }

    /// One merge, inside a batch's transaction.
    fn merge_into(
        table: &mut redb::Table<&[u8], &[u8]>,
        floor_table: &mut redb::Table<&str, &[u8]>,
        records: &[VersionRecord],
        floors: &[Floor],
        delta: &mut [u128],
    ) -> Result<MergeOutcome, IndexError> {
        let mut outcome = MergeOutcome::default();
        {
            for floor in floors {
                if validate_name(&floor.name).is_err() {
                    continue;
                }
                let current = floor_table
                    .get(floor.name.as_str())
                    .map_err(storage)?
                    .and_then(|f| VersionId::from_key(f.value()));
                if current.is_some_and(|current| current >= floor.floor) {
                    continue;
                }
                floor_table
                    .insert(floor.name.as_str(), floor.floor.to_key().as_slice())
                    .map_err(storage)?;
                let bucket = bucket_of(&floor.name);
                if let Some(current) = current {
                    delta[bucket] ^= floor_hash(&Floor {
                        name: floor.name.clone(),
                        floor: current,
                    });
                }
                delta[bucket] ^= floor_hash(floor);
                let (start, _) = name_range(&floor.name);
                let below = record_key(&floor.name, &floor.floor);
                let mut doomed: Vec<Vec<u8>> = Vec::new();
                for entry in table
                    .range(start.as_slice()..below.as_slice())
                    .map_err(storage)?
                {
                    let (key, value) = entry.map_err(storage)?;
                    delta[bucket] ^= record_hash(&decode_record(value.value())?.key());
                    doomed.push(key.value().to_vec());
                }
                for key in &doomed {
                    table.remove(key.as_slice()).map_err(storage)?;
                }
                outcome.dropped += doomed.len();
                outcome.floors.push(floor.clone());
            }
            for record in records {
                if validate_name(&record.name).is_err() {
                    continue;
                }
                if let Some(floor) = floor_table.get(record.name.as_str()).map_err(storage)?
                    && VersionId::from_key(floor.value()).is_some_and(|floor| record.vid < floor)
                {
                    outcome.below_floor.push(record.key());
                    continue;
                }
                let key = record_key(&record.name, &record.vid);
                let existing = match table.get(key.as_slice()).map_err(storage)? {
                    Some(existing) => Some(decode_record(existing.value())?),
                    None => None,
                };
                if existing.as_ref().is_none_or(|existing| existing < record) {
                    let bucket = bucket_of(&record.name);
                    if let Some(existing) = &existing {
                        delta[bucket] ^= record_hash(&existing.key());
                    }
                    delta[bucket] ^= record_hash(&record.key());
                    let value = record.encode_stored();
                    table
                        .insert(key.as_slice(), value.as_slice())
                        .map_err(storage)?;
                    outcome.records.push(record.clone());
                }
            }
        }
        Ok(outcome)
    }

    /// `name`'s history as readers see it: its records oldest first (not
    /// the stubs of forgotten versions), and its floor. A name no record
    /// can have (a NUL in it would make its key range another name's) has
    /// an empty history.
    pub fn history(&self, name: &str) -> Result<History, IndexError> {
        if validate_name(name).is_err() {
            return Ok(History::default());
        }
        self.with_db(|db| {
            let txn = db.begin_read().map_err(storage)?;
            let table = txn.open_table(RECORDS).map_err(storage)?;
            let floors = txn.open_table(FLOORS).map_err(storage)?;
            let mut history = History {
                floor: floors
                    .get(name)
                    .map_err(storage)?
                    .and_then(|f| VersionId::from_key(f.value())),
                ..History::default()
            };
            let (start, end) = name_range(name);
            for entry in table
                .range(start.as_slice()..end.as_slice())
                .map_err(storage)?
            {
                let (_, value) = entry.map_err(storage)?;
                let record = decode_record(value.value())?;
                if !record.forgotten {
                    history.records.insert(record.vid, record);
                }
            }
            Ok(history)
        })
    }

    /// The current version of `name` (possibly a tombstone); none for a name
    /// no record can have (see [`VersionIndex::history`]).
    /// `name`'s current record and, newest first before it, the stubs of
    /// the versions above it that were deleted for good (at most
    /// `stubs_max` of them): what a quorum read is answered with, so that
    /// the asking node learns that versions it holds were deleted
    /// elsewhere, and which version is current there.
    pub fn current_with_stubs(
        &self,
        name: &str,
        stubs_max: usize,
    ) -> Result<Vec<VersionRecord>, IndexError> {
        if validate_name(name).is_err() {
            return Ok(Vec::new());
        }
        self.with_db(|db| {
            let txn = db.begin_read().map_err(storage)?;
            let table = txn.open_table(RECORDS).map_err(storage)?;
            let (start, end) = name_range(name);
            let mut answer = Vec::new();
            for entry in table
                .range(start.as_slice()..end.as_slice())
                .map_err(storage)?
                .rev()
            {
                let record = decode_record(entry.map_err(storage)?.1.value())?;
                let current = !record.forgotten;
                answer.push(record);
                if current || answer.len() > stubs_max {
                    break;
                }
            }
            Ok(answer)
        })
    }

    pub fn current(&self, name: &str) -> Result<Option<VersionRecord>, IndexError> {
        if validate_name(name).is_err() {
            return Ok(None);
        }
        self.with_db(|db| {
            let txn = db.begin_read().map_err(storage)?;
            let table = txn.open_table(RECORDS).map_err(storage)?;
            let (start, end) = name_range(name);
            for entry in table
                .range(start.as_slice()..end.as_slice())
                .map_err(storage)?
                .rev()
            {
                let record = decode_record(entry.map_err(storage)?.1.value())?;
                if !record.forgotten {
                    return Ok(Some(record));
                }
            }
            Ok(None)
        })
    }

    /// The current version of every name that is not deleted, by name, at
    /// most `limit` of them.
    pub fn list_current(&self, limit: usize) -> Result<Vec<VersionRecord>, IndexError> {
        self.list_current_under("", None, limit)
    }

    /// [`VersionIndex::list_current`] of the names starting with `prefix`
    /// and sorting after `start_after`: one range of the index, read from
    /// its start, however many names lie outside it.
    pub fn list_current_under(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<VersionRecord>, IndexError> {
        let from = start_after.map_or(ListFrom::Start, |after| ListFrom::After(after.into()));
        self.list_current_from(prefix, &from, limit)
    }

    /// As [`VersionIndex::list_current_under`], from any [`ListFrom`]
    /// (S3 listings skip a whole common prefix at once).
    pub fn list_current_from(
        &self,
        prefix: &str,
        from: &ListFrom,
        limit: usize,
    ) -> Result<Vec<VersionRecord>, IndexError> {
        let Some((start, end)) = list_range(prefix, from) else {
            return Ok(Vec::new());
        };
        self.with_db(|db| {
            let txn = db.begin_read().map_err(storage)?;
            let table = txn.open_table(RECORDS).map_err(storage)?;
            let range = match &end {
                Some(end) => table.range(start.as_slice()..end.as_slice()),
                None => table.range(start.as_slice()..),
            }
            .map_err(storage)?;
            let mut live = Vec::new();
            let mut last: Option<VersionRecord> = None;
            for entry in range {
                let (_, value) = entry.map_err(storage)?;
                let record = decode_record(value.value())?;
                if record.forgotten {
                    continue;
                }
                if let Some(previous) = last.take()
                    && previous.name != record.name
                    && !previous.is_tombstone()
                {
                    live.push(previous);
                    if live.len() >= limit {
                        return Ok(live);
                    }
                }
                last = Some(record);
            }
            if let Some(previous) = last.filter(|r| !r.is_tombstone()) {
                live.push(previous);
            }
            live.truncate(limit);
            Ok(live)
        })
    }

    /// Up to `limit` names under `prefix`, from `from`, in order, that
    /// have a version readers see: removed names too (S3 lists their
    /// delete markers), not names whose every version was forgotten. One
    /// seek per name.
    pub fn names_from(
        &self,
        prefix: &str,
        from: &ListFrom,
        limit: usize,
    ) -> Result<Vec<String>, IndexError> {
        let Some((mut start, end)) = list_range(prefix, from) else {
            return Ok(Vec::new());
        };
        self.with_db(|db| {
            let txn = db.begin_read().map_err(storage)?;
            let table = txn.open_table(RECORDS).map_err(storage)?;
            let mut names = Vec::new();
            while names.len() < limit {
                let mut range = match &end {
                    Some(end) => table.range(start.as_slice()..end.as_slice()),
                    None => table.range(start.as_slice()..),
                }
                .map_err(storage)?;
                let Some(entry) = range.next() else { break };
                let (key, _) = entry.map_err(storage)?;
                let Some((name, _)) = split_record_key(key.value()) else {
                    return Err(IndexError::Corrupt("a malformed record key".into()));
                };
                let name = name.to_string();
                let (first, past) = name_range(&name);
                let mut seen = false;
                for entry in table
                    .range(first.as_slice()..past.as_slice())
                    .map_err(storage)?
                {
                    if !decode_record(entry.map_err(storage)?.1.value())?.forgotten {
                        seen = true;
                        break;
                    }
                }
                if seen {
                    names.push(name);
                }
                start = past;
            }
            Ok(names)
        })
    }

    /// Up to `limit` versions of `name` that readers see, newest first;
    /// with `before`, only those older than it (a listing's next page).
    pub fn versions_desc(
        &self,
        name: &str,
        before: Option<VersionId>,
        limit: usize,
    ) -> Result<Vec<VersionRecord>, IndexError> {
        if validate_name(name).is_err() {
            return Ok(Vec::new());
        }
        self.with_db(|db| {
            let txn = db.begin_read().map_err(storage)?;
            let table = txn.open_table(RECORDS).map_err(storage)?;
            let (start, mut end) = name_range(name);
            if let Some(before) = before {
                end = record_key(name, &before);
            }
            let mut versions = Vec::new();
            for entry in table
                .range(start.as_slice()..end.as_slice())
                .map_err(storage)?
                .rev()
            {
                if versions.len() >= limit {
                    break;
                }
                let record = decode_record(entry.map_err(storage)?.1.value())?;
                if !record.forgotten {
                    versions.push(record);
                }
            }
            Ok(versions)
        })
    }

    /// The whole index as a CRDT state (the simulation's convergence check
    /// and tests compare these).
    pub fn snapshot(&self) -> Result<IndexState, IndexError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(storage)?;
            let table = txn.open_table(RECORDS).map_err(storage)?;
            let floors = txn.open_table(FLOORS).map_err(storage)?;
            let mut state = IndexState::default();
            for entry in table.iter().map_err(storage)? {
                let (_, value) = entry.map_err(storage)?;
                state.insert(decode_record(value.value())?);
            }
            for entry in floors.iter().map_err(storage)? {
                let (name, floor) = entry.map_err(storage)?;
                if let Some(floor) = VersionId::from_key(floor.value()) {
                    state
                        .names
                        .entry(name.value().to_string())
                        .or_default()
                        .floor = Some(floor);
                }
            }
            Ok(state)
        })
    }

    /// The anti-entropy digest of every bucket (see [`super::digest`]):
    /// kept by the merges, computed by a scan only the first time.
    pub fn digests(&self) -> Result<Vec<u128>, IndexError> {
        // Lock order, everywhere: the database handle (`with_db`), then
        // the digests. The reopen after an I/O error takes the handle's
        // write lock only once this closure has let go of the digests.
        self.with_db(|db| {
            let mut digests = self.digests.lock().expect("digests poisoned");
            if let Some(digests) = digests.as_ref() {
                return Ok(digests.clone());
            }
            let scanned = Self::scan_digests(db)?;
            *digests = Some(scanned.clone());
            Ok(scanned)
        })
    }

    /// Compare the kept digests with a full scan (commits wait meanwhile,
    /// so both see one state); on a difference, keep the scan's and say
    /// `false`. The scrub calls it once per pass: a kept digest that were
    /// wrong would hide a difference from anti-entropy for good.
    pub fn check_digests(&self) -> Result<bool, IndexError> {
        self.with_db(|db| {
            // Commits happen under the digests' lock: a read transaction
            // begun under it sees exactly the state the kept digests
            // describe, and the scan then runs without holding commits up.
            let (kept, snapshot) = {
                let digests = self.digests.lock().expect("digests poisoned");
                let Some(kept) = digests.clone() else {
                    return Ok(true);
                };
                (kept, db.begin_read().map_err(storage)?)
            };
            let scanned = Self::scan_snapshot(&snapshot)?;
            if kept == scanned {
                return Ok(true);
            }
            // Scanned again from the state of the next read.
            *self.digests.lock().expect("digests poisoned") = None;
            Ok(false)
        })
    }

    /// The digests computed from every record and floor (what
    /// [`VersionIndex::digests`] must always equal).
    pub fn digests_by_scan(&self) -> Result<Vec<u128>, IndexError> {
        self.with_db(Self::scan_digests)
    }

    fn scan_digests(db: &Database) -> Result<Vec<u128>, IndexError> {
        Self::scan_snapshot(&db.begin_read().map_err(storage)?)
    }

    fn scan_snapshot(txn: &redb::ReadTransaction) -> Result<Vec<u128>, IndexError> {
        {
            let table = txn.open_table(RECORDS).map_err(storage)?;
            let floors = txn.open_table(FLOORS).map_err(storage)?;
            let mut digests = vec![0u128; SYNC_BUCKETS];
            for entry in table.iter().map_err(storage)? {
                let (_, value) = entry.map_err(storage)?;
                let record = decode_record(value.value())?;
                digests[bucket_of(&record.name)] ^= record_hash(&record.key());
            }
            for entry in floors.iter().map_err(storage)? {
                let (name, floor) = entry.map_err(storage)?;
                if let Some(floor) = VersionId::from_key(floor.value()) {
                    let floor = Floor {
                        name: name.value().to_string(),
                        floor,
                    };
                    digests[bucket_of(&floor.name)] ^= floor_hash(&floor);
                }
            }
            Ok(digests)
        }
    }

    /// The floors and record keys in `buckets`, as many as fit in
    /// `byte_budget` (each costs its name plus `SYNC_ENTRY_OVERHEAD`); the
    /// bool says whether some were left out. With `after`, only the record
    /// keys after it are listed, and no floors: the continuation of a pass
    /// whose earlier rounds listed them.
    pub fn keys_in_buckets(
        &self,
        buckets: &[bool],
        byte_budget: usize,
        after: Option<&RecordKey>,
    ) -> Result<(Vec<RecordKey>, Vec<Floor>, bool), IndexError> {
        let cost = |name: &str| name.len() + crate::limits::SYNC_ENTRY_OVERHEAD;
        let wanted = |name: &str| buckets.get(bucket_of(name)).copied().unwrap_or(false);
        self.with_db(|db| {
            let txn = db.begin_read().map_err(storage)?;
            let table = txn.open_table(RECORDS).map_err(storage)?;
            let floor_table = txn.open_table(FLOORS).map_err(storage)?;
            let mut used = 0;
            let mut truncated = false;
            let mut floors = Vec::new();
            let floor_entries = match after {
                Some(_) => None,
                None => Some(floor_table.iter().map_err(storage)?),
            };
            for entry in floor_entries.into_iter().flatten() {
                let (name, floor) = entry.map_err(storage)?;
                if let Some(floor) = VersionId::from_key(floor.value())
                    && wanted(name.value())
                {
                    used += cost(name.value());
                    if used > byte_budget {
                        truncated = true;
                        break;
                    }
                    floors.push(Floor {
                        name: name.value().to_string(),
                        floor,
                    });
                }
            }
            let mut keys = Vec::new();
            let start = after.map(|key| record_key(&key.name, &key.vid));
            let entries = match &start {
                Some(start) => table.range(start.as_slice()..).map_err(storage)?,
                None => table.iter().map_err(storage)?,
            };
            for entry in entries {
                if truncated {
                    break;
                }
                let (key, value) = entry.map_err(storage)?;
                let Some((name, _)) = split_record_key(key.value()) else {
                    return Err(IndexError::Corrupt("a malformed record key".into()));
                };
                if !wanted(name) || start.as_deref() == Some(key.value()) {
                    continue;
                }
                used += cost(name);
                if used > byte_budget {
                    truncated = true;
                    break;
                }
                // The value says whether the record is a forgotten stub.
                keys.push(decode_record(value.value())?.key());
            }
            Ok((keys, floors, truncated))
        })
    }

    /// The records with these keys (absent ones are skipped).
    pub fn records(&self, keys: &[RecordKey]) -> Result<Vec<VersionRecord>, IndexError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(storage)?;
            let table = txn.open_table(RECORDS).map_err(storage)?;
            let mut records = Vec::with_capacity(keys.len());
            for key in keys {
                let raw = record_key(&key.name, &key.vid);
                if let Some(value) = table.get(raw.as_slice()).map_err(storage)? {
                    records.push(decode_record(value.value())?);
                }
            }
            Ok(records)
        })
    }

    /// Every record in the index (records are small; the caller bounds
    /// how often it asks).
    pub fn all_records(&self) -> Result<Vec<VersionRecord>, IndexError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(storage)?;
            let table = txn.open_table(RECORDS).map_err(storage)?;
            let mut records = Vec::new();
            for entry in table.iter().map_err(storage)? {
                let (_, value) = entry.map_err(storage)?;
                records.push(decode_record(value.value())?);
            }
            Ok(records)
        })
    }

    /// The greatest version id in the index (records and floors), to seed the
    /// clock after a restart.
    pub fn max_vid(&self) -> Result<Option<VersionId>, IndexError> {
        self.with_db(|db| {
            let txn = db.begin_read().map_err(storage)?;
            let table = txn.open_table(RECORDS).map_err(storage)?;
            let mut max: Option<VersionId> = None;
            for entry in table.iter().map_err(storage)? {
                let (key, _) = entry.map_err(storage)?;
                let key = key.value();
                if key.len() >= VERSION_KEY_BYTES
                    && let Some(vid) = VersionId::from_key(&key[key.len() - VERSION_KEY_BYTES..])
                {
                    max = max.max(Some(vid));
                }
            }
            // Floors too: a floor can arrive before the record it keeps,
            // and a version created below it would be dropped at once.
            let floors = txn.open_table(FLOORS).map_err(storage)?;
            for entry in floors.iter().map_err(storage)? {
                let (_, floor) = entry.map_err(storage)?;
                max = max.max(VersionId::from_key(floor.value()));
            }
            Ok(max)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::tokio_env;
    use crate::keys::NodeId;

    /// A removal of `name` at `wall_ms` (by node 1…1): the least record.
    fn removal(name: &str, wall_ms: u64) -> VersionRecord {
        VersionRecord {
            name: name.into(),
            vid: VersionId {
                wall_ms,
                counter: 0,
                node: NodeId([1; 32]),
            },
            forgotten: false,
            content: None,
            size: 0,
            by: None,
            etag: None,
            null_version: false,
        }
    }

    /// The digests the merges keep always equal the digests of a full
    /// scan, whatever is merged: records, newer copies of a record, stubs
    /// replacing records, floors raised over records (and raised again),
    /// records below a floor (kept out), invalid names (skipped), in one
    /// transaction of several merges (a group commit) or in several. A
    /// wrong digest would make anti-entropy skip a bucket that differs.
    #[test]
    fn kept_digests_equal_a_full_scan_after_any_merges() {
        use proptest::prelude::*;
        let op = (0u8..5, 0u64..4, 1u64..40, any::<bool>(), any::<bool>());
        let transaction = proptest::collection::vec(proptest::collection::vec(op, 1..6), 1..4);
        let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
            cases: 64,
            ..Default::default()
        });
        runner
            .run(
                &proptest::collection::vec(transaction, 1..5),
                |transactions| {
                    let dir = tempfile::tempdir().unwrap();
                    let index =
                        VersionIndex::open(&tokio_env(), &dir.path().join("meta.redb")).unwrap();
                    // Read (and so keep) the digests of the empty index first.
                    prop_assert_eq!(index.digests().unwrap(), index.digests_by_scan().unwrap());
                    for merges in transactions {
                        let mut batch = Vec::new();
                        for ops in merges {
                            let mut records = Vec::new();
                            let mut floors = Vec::new();
                            for (kind, name, wall_ms, forgotten, with_content) in ops {
                                let name = match kind {
                                    4 => "bad\0name".to_string(),
                                    _ => format!("n{name}"),
                                };
                                if kind == 3 {
                                    floors.push(Floor {
                                        name,
                                        floor: removal("x", wall_ms).vid,
                                    });
                                    continue;
                                }
                                let mut record = removal(&name, wall_ms);
                                record.forgotten = forgotten;
                                if with_content {
                                    record.content =
                                        Some(crate::cas::ContentId([wall_ms as u8; 32]));
                                    record.size = wall_ms;
                                }
                                records.push(record);
                            }
                            batch.push((records, floors));
                        }
                        for outcome in index.merge_batch(batch) {
                            outcome.unwrap();
                        }
                        prop_assert_eq!(index.digests().unwrap(), index.digests_by_scan().unwrap());
                    }
                    Ok(())
                },
            )
            .unwrap();
    }

    /// A quorum read is answered with the current record and the stubs
    /// of deletions above it: the asking node may still hold those.
    #[test]
    fn a_quorum_answer_holds_the_current_record_and_the_deletions_above_it() {
        let dir = tempfile::tempdir().unwrap();
        let index = VersionIndex::open(&tokio_env(), &dir.path().join("meta.redb")).unwrap();
        let (old, new) = (removal("a", 1), removal("a", 2));
        index.merge(&[old.clone(), new.clone()], &[]).unwrap();
        assert_eq!(
            index.current_with_stubs("a", 10).unwrap(),
            vec![new.clone()]
        );
        let stub = VersionRecord::forgetting("a", new.vid);
        index.merge(std::slice::from_ref(&stub), &[]).unwrap();
        assert_eq!(
            index.current_with_stubs("a", 10).unwrap(),
            vec![stub.clone(), old.clone()]
        );
        assert_eq!(index.current_with_stubs("a", 0).unwrap(), vec![stub]);
        assert_eq!(index.current("a").unwrap(), Some(old));
        // A merge that brings nothing new changes nothing.
        assert!(index.merge(&[new], &[]).unwrap().records.is_empty());
    }

    /// A NUL in a name would make its key range part of another name's:
    /// "a\0ABC" must not read the records of "a".
    #[test]
    fn a_name_with_nul_reads_nothing_of_another_name() {
        let dir = tempfile::tempdir().unwrap();
        let index = VersionIndex::open(&tokio_env(), &dir.path().join("meta.redb")).unwrap();
        // Its key is "a\0ABC\0\0\0\0\0...", inside "a\0ABC"'s range.
        let record = removal("a", 0x4142_4300_0000_0000);
        index.apply(std::slice::from_ref(&record)).unwrap();
        assert_eq!(index.current("a").unwrap(), Some(record));
        assert_eq!(index.current("a\0ABC").unwrap(), None);
        assert!(index.history("a\0ABC").unwrap().records.is_empty());
    }

    /// A restart seeds the clock above a floor whose kept record has not
    /// arrived yet: a put there would otherwise sort below it and be
    /// dropped at once.
    #[test]
    fn the_clock_seed_counts_floors() {
        let dir = tempfile::tempdir().unwrap();
        let index = VersionIndex::open(&tokio_env(), &dir.path().join("meta.redb")).unwrap();
        let floor = VersionId {
            wall_ms: 1_790_000_000_000,
            counter: 3,
            node: NodeId([2; 32]),
        };
        index.raise_floor("f", floor).unwrap();
        assert_eq!(index.max_vid().unwrap(), Some(floor));
    }

    /// Key records merge last-writer-wins, durably, and a late older copy
    /// never brings a removed key back.
    #[test]
    fn key_records_merge_last_writer_wins_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        let env = tokio_env();
        let created = KeyRecord {
            id: crate::keys::AccessKeyId::parse("DFSABCDEFGHIJKLMNOPQ").unwrap(),
            name: "ci".into(),
            permission: crate::keys::Permission::admin(),
            sealed_secret: vec![1; 68],
            created_ms: 5,
            version: VersionId {
                wall_ms: 10,
                counter: 0,
                node: NodeId([1; 32]),
            },
            removed: false,
        };
        let removed = created.removal(VersionId {
            wall_ms: 20,
            ..created.version
        });
        {
            let index = VersionIndex::open(&env, &path).unwrap();
            assert_eq!(
                index
                    .merge_keys(std::slice::from_ref(&created))
                    .unwrap()
                    .len(),
                1
            );
            assert_eq!(
                index
                    .merge_keys(std::slice::from_ref(&removed))
                    .unwrap()
                    .len(),
                1
            );
            assert!(
                index
                    .merge_keys(std::slice::from_ref(&created))
                    .unwrap()
                    .is_empty()
            );
            let mut malformed = created.clone();
            malformed.name = String::new();
            assert!(index.merge_keys(&[malformed]).unwrap().is_empty());
        }
        let index = VersionIndex::open(&env, &path).unwrap();
        assert_eq!(index.keys().unwrap(), vec![removed]);
    }

    /// A data dir from before access keys opens: its records move to the
    /// current table with `by: None`, every one, and the old table goes.
    #[test]
    fn an_index_from_before_access_keys_is_migrated_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        let old: Vec<LegacyRecord> = (0..50u64)
            .map(|i| LegacyRecord {
                name: format!("f{}", i % 7),
                vid: VersionId {
                    wall_ms: 1_790_000_000_000 + i,
                    counter: 0,
                    node: NodeId([3; 32]),
                },
                content: (i % 5 != 0).then_some(crate::cas::ContentId([i as u8; 32])),
                size: i,
            })
            .collect();
        {
            // Written as the previous version did: postcard values in
            // "records", keys name ‖ 0 ‖ version key.
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut table = txn.open_table(LEGACY_RECORDS).unwrap();
                for record in &old {
                    let value = postcard::to_stdvec(record).unwrap();
                    table
                        .insert(
                            record_key(&record.name, &record.vid).as_slice(),
                            value.as_slice(),
                        )
                        .unwrap();
                }
                txn.open_table(FLOORS).unwrap();
            }
            txn.commit().unwrap();
        }
        let index = VersionIndex::open(&tokio_env(), &path).unwrap();
        let mut expected: Vec<VersionRecord> = old.into_iter().map(VersionRecord::from).collect();
        expected.sort();
        let mut all = index.all_records().unwrap();
        all.sort();
        assert_eq!(all, expected);
        assert!(all.iter().all(|r| r.by.is_none()));
        drop(index);
        // The old table holds only the sentinel, and a second open changes
        // nothing.
        let index = VersionIndex::open(&tokio_env(), &path).unwrap();
        assert_eq!(index.all_records().unwrap().len(), 50);
        index
            .with_db(|db| {
                let txn = db.begin_read().map_err(storage)?;
                let names: Vec<String> = txn
                    .list_tables()
                    .map_err(storage)?
                    .map(|t| redb::TableHandle::name(&t).to_string())
                    .collect();
                assert!(names.contains(&"records".to_string()), "{names:?}");
                // What an older build finds there: one entry it cannot
                // decode (so it fails, rather than see an empty index).
                let legacy = txn.open_table(LEGACY_RECORDS).map_err(storage)?;
                let entries: Vec<_> = legacy
                    .iter()
                    .map_err(storage)?
                    .map(|e| e.unwrap().1.value().to_vec())
                    .collect();
                assert_eq!(entries.len(), 1);
                assert!(postcard::from_bytes::<LegacyRecord>(&entries[0]).is_err());
                Ok(())
            })
            .unwrap();
    }

    /// A new index carries the sentinel too: an older build opening it
    /// fails instead of taking it for an empty index.
    #[test]
    fn a_new_index_is_unreadable_to_older_builds() {
        let dir = tempfile::tempdir().unwrap();
        let index = VersionIndex::open(&tokio_env(), &dir.path().join("meta.redb")).unwrap();
        index
            .with_db(|db| {
                let txn = db.begin_read().map_err(storage)?;
                let legacy = txn.open_table(LEGACY_RECORDS).map_err(storage)?;
                let value = legacy.get(UPGRADED_SENTINEL.0).map_err(storage)?.unwrap();
                assert!(postcard::from_bytes::<LegacyRecord>(value.value()).is_err());
                Ok(())
            })
            .unwrap();
    }

    /// A forgotten version is gone for readers (history, current, lists),
    /// the previous version is current again, the stub wins over the
    /// record arriving late, and anti-entropy tells the two apart.
    #[test]
    fn a_forgotten_version_is_gone_and_stays_gone() {
        let dir = tempfile::tempdir().unwrap();
        let index = VersionIndex::open(&tokio_env(), &dir.path().join("a.redb")).unwrap();
        let other = VersionIndex::open(&tokio_env(), &dir.path().join("b.redb")).unwrap();
        let record = |wall_ms: u64| VersionRecord {
            name: "doc".into(),
            vid: VersionId {
                wall_ms,
                counter: 0,
                node: NodeId([1; 32]),
            },
            forgotten: false,
            content: Some(crate::cas::ContentId([wall_ms as u8; 32])),
            size: 1,
            by: None,
            etag: None,
            null_version: false,
        };
        let (old, new) = (record(1), record(2));
        index.apply(&[old.clone(), new.clone()]).unwrap();
        other.apply(&[old.clone(), new.clone()]).unwrap();
        assert_eq!(index.digests().unwrap(), other.digests().unwrap());
        let stub = VersionRecord::forgetting("doc", new.vid);
        assert_eq!(
            index.apply(std::slice::from_ref(&stub)).unwrap(),
            vec![stub.clone()]
        );
        assert_eq!(index.current("doc").unwrap(), Some(old.clone()));
        let history = index.history("doc").unwrap();
        assert_eq!(history.records.values().collect::<Vec<_>>(), vec![&old]);
        assert_eq!(index.list_current(10).unwrap(), vec![old.clone()]);
        // The late record does not come back.
        assert!(index.apply(std::slice::from_ref(&new)).unwrap().is_empty());
        assert_eq!(index.current("doc").unwrap(), Some(old.clone()));
        // The digests differ until the other index forgets it too.
        assert_ne!(index.digests().unwrap(), other.digests().unwrap());
        let (keys, _, _) = index
            .keys_in_buckets(&[true; SYNC_BUCKETS], 1 << 20, None)
            .unwrap();
        assert!(keys.contains(&stub.key()) && stub.key().forgotten);
        other.apply(&index.records(&keys).unwrap()).unwrap();
        assert_eq!(index.digests().unwrap(), other.digests().unwrap());
        assert_eq!(index.snapshot().unwrap(), other.snapshot().unwrap());
        assert_eq!(
            index.versions_desc("doc", None, 10).unwrap(),
            vec![old.clone()]
        );
        assert_eq!(index.names_from("", &ListFrom::Start, 10).unwrap(), ["doc"]);
        // Forgetting the last version leaves no current version at all.
        index
            .apply(&[VersionRecord::forgetting("doc", old.vid)])
            .unwrap();
        assert_eq!(index.current("doc").unwrap(), None);
        assert!(index.list_current(10).unwrap().is_empty());
        assert!(
            index
                .names_from("", &ListFrom::Start, 10)
                .unwrap()
                .is_empty()
        );
    }

    /// Listing under a prefix reads only that range, after a start name,
    /// and skips deleted names.
    #[test]
    fn listing_under_a_prefix_reads_its_range_only() {
        let dir = tempfile::tempdir().unwrap();
        let index = VersionIndex::open(&tokio_env(), &dir.path().join("meta.redb")).unwrap();
        let record = |name: &str, wall_ms: u64, deleted: bool| VersionRecord {
            name: name.into(),
            vid: VersionId {
                wall_ms,
                counter: 0,
                node: NodeId([1; 32]),
            },
            forgotten: false,
            content: (!deleted).then_some(crate::cas::ContentId([1; 32])),
            size: 1,
            by: None,
            etag: None,
            null_version: false,
        };
        let mut records = Vec::new();
        for name in [
            "a",
            "team",
            "team/a",
            "team/b",
            "team/c",
            "teammates/x",
            "z",
        ] {
            records.push(record(name, 10, false));
        }
        records.push(record("team/b", 20, true));
        index.apply(&records).unwrap();
        let names = |list: Vec<VersionRecord>| list.into_iter().map(|r| r.name).collect::<Vec<_>>();
        assert_eq!(
            names(index.list_current_under("team/", None, 100).unwrap()),
            ["team/a", "team/c"]
        );
        assert_eq!(
            names(index.list_current_under("team", None, 100).unwrap()),
            ["team", "team/a", "team/c", "teammates/x"]
        );
        assert_eq!(
            names(
                index
                    .list_current_under("team/", Some("team/a"), 100)
                    .unwrap()
            ),
            ["team/c"]
        );
        assert_eq!(
            names(index.list_current_under("", Some("team/c"), 1).unwrap()),
            ["teammates/x"]
        );
        assert_eq!(index.list_current(100).unwrap().len(), 6);
        // A listing can skip every name under a prefix at once.
        let past = |prefix: &str, skipped: &str| {
            names(
                index
                    .list_current_from(prefix, &ListFrom::PastPrefix(skipped.into()), 100)
                    .unwrap(),
            )
        };
        assert_eq!(past("", "team/"), ["teammates/x", "z"]);
        assert_eq!(past("team", "team/"), ["teammates/x"]);
        assert_eq!(past("team/", "t"), Vec::<String>::new());
        assert_eq!(
            past("", "a"),
            ["team", "team/a", "team/c", "teammates/x", "z"]
        );
        assert_eq!(prefix_end(&[0x61, 0xff]), Some(vec![0x62]));
        assert_eq!(prefix_end(&[0xff]), None);
    }
}
