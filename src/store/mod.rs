//! The chunk store of one node, on a [`Disk`](crate::env::Disk) (DESIGN §5).
//!
//! Blobs live in one of two places under the data dir:
//! - `small-blobs.redb`: blobs of up to the node's `--small-blob-bytes-max`
//!   bytes of plaintext (8 KiB by default), sealed, as values of one
//!   table keyed by id (`small.rs`: one group-committed transaction for
//!   many puts, where a file costs each put four metadata operations);
//! - `chunks/<first 2 hex>/<64 hex>`: one sealed blob per file, for larger
//!   blobs (`files.rs`, with `tmp/` and `quarantine/`).
//!
//! Chunks and manifests alike are addressed by the SHA-256 of their
//! plaintext. This module seals, verifies and routes: a blob may be in
//! either place whatever the limit says now (it changed, or an older build
//! stored it as a file), so every read looks in both, the table first.
//!
//! A put is durable before it returns. A file: see `files.rs` (a crash at
//! any point leaves either no blob or a whole one). A table value: its
//! transaction committed (redb syncs before it returns); a commit that
//! fails leaves the value's standing unknown, so it does not count as held
//! until a commit of it succeeds, and a failed sync distrusts the whole
//! table (see `small.rs`), whose blobs are then written again as files.
//!
//! A get returns plaintext only after the AEAD tag checks; a blob that
//! fails twice in a row is quarantined and reported as
//! [`StoreError::Corrupt`]. Plaintext never reaches the disk. A put takes
//! a [`SealedBlob`]: sealed here by the node that hashed its plaintext,
//! or received from a peer and its tag checked, and the sealed bytes go
//! to the disk as they are (nodes send each other blobs sealed, see
//! `cluster::blobs`). [`ChunkStore::get_sealed`] reads one back, tag
//! checked, without decrypting it, to send it on.
//!
//! Why the tag is the check at rest, and not a second SHA-256: the id is
//! associated data, so a tag that checks proves these bytes are the ones a
//! holder of the cluster key sealed for this id (the store seals only
//! plaintext whose hash its caller computed or verified). Bit rot, a torn
//! write, a blob moved to another id's path and a forgery all fail the tag.
//! A read hashes every chunk against its id anyway before any byte
//! reaches the user (the native client, or the node for S3: see
//! `node::ops::read`).
//!
//! All methods are synchronous: async callers run them through
//! [`Env::blocking`](crate::env::Env::blocking).

mod files;
mod queued;
mod seal;
mod small;

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

pub use seal::{SEAL_OVERHEAD_BYTES, SealError, SealedBlob, Sealer};
pub use small::FILE_NAME as SMALL_BLOBS_FILE;

use crate::meta::group_commit::{Done, Queued};
use files::BlobFiles;
use small::SmallBlobs;

use crate::cas::ChunkId;
use crate::env::Env;
use crate::keys::ClusterKey;
use crate::limits::{BLOB_BYTES_MAX, SMALL_BLOB_BYTES_MAX, SMALL_BLOB_TABLE_FREE_MIN_BYTES};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("blob {0} is not stored on this node")]
    NotFound(ChunkId),
    #[error("blob {0} failed verification and was quarantined")]
    Corrupt(ChunkId),
    #[error("the disk is full ({context})")]
    DiskFull { context: String },
    #[error("disk I/O failed while {context}: {source}")]
    Io { context: String, source: io::Error },
    #[error("blob of {0} bytes is above the {BLOB_BYTES_MAX}-byte limit")]
    TooLarge(usize),
    #[error("the disk is busy: no write slot freed within {0:?}; try again")]
    Busy(std::time::Duration),
    /// A peer sent bytes whose tag does not check for the id it named.
    #[error("the bytes sent as blob {0} are not sealed for it under this cluster's key")]
    NotSealedFor(ChunkId),
    /// redb failed other than on I/O (an undecodable page: corruption).
    #[error("the small-blob table failed: {0}")]
    Table(String),
}

impl StoreError {
    fn io(context: impl Into<String>, source: io::Error) -> Self {
        let context = context.into();
        if source.raw_os_error() == Some(libc::ENOSPC)
            || source.kind() == io::ErrorKind::StorageFull
        {
            return StoreError::DiskFull { context };
        }
        StoreError::Io { context, source }
    }
}

/// What a put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    Written,
    AlreadyPresent,
}

/// The outcome of a put that had to write: a blob present but not durably
/// was there already.
fn written(present: bool) -> PutOutcome {
    if present {
        PutOutcome::AlreadyPresent
    } else {
        PutOutcome::Written
    }
}

/// What receives a queued put's outcome ([`ChunkStore::queue_put`]).
pub type PutDone = Done<Result<PutOutcome, StoreError>>;

/// Space used by the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub blobs: u64,
    /// Sealed bytes on disk.
    pub bytes: u64,
}

/// Events a store has seen since it opened.
#[derive(Debug, Default)]
pub struct StoreCounters {
    /// Reads that failed verification once and then passed (a transient fault).
    pub transient_read_faults: AtomicU64,
    pub quarantined: AtomicU64,
}

#[derive(Debug)]
pub struct ChunkStore {
    sealer: Sealer,
    /// Blobs up to `small_bytes_max` bytes of plaintext. `None`: the
    /// limit is 0 and no table was ever made here.
    small: Option<SmallBlobs>,
    small_bytes_max: usize,
    files: BlobFiles,
    /// Blobs put again while already present, since the garbage collector
    /// last took them. A put of content the store already holds (a file put
    /// again after it was pruned) must restart the blob's grace period, or
    /// the collector, deciding from records read before the new version
    /// existed, deletes it under the new version. The lock also orders
    /// such a put against [`ChunkStore::delete_unless_put_again`]. Bounded
    /// by the puts between two collector rounds.
    put_again: Mutex<BTreeSet<ChunkId>>,
    /// Small-blob puts of async callers ([`ChunkStore::queue_put`]).
    queued: Queued<SealedBlob, Result<PutOutcome, StoreError>>,
    pub counters: StoreCounters,
}

impl ChunkStore {
    /// Open (or create) the store in `data_dir`: its blob files (leftovers
    /// of interrupted writes deleted, usage counted) and the small-blob
    /// table. Blobs of up to `small_bytes_max` bytes of plaintext go into
    /// the table (0: none do); blobs already stored stay where they are
    /// whatever it says, and are found in either place.
    pub fn open(
        env: Env,
        data_dir: &Path,
        cluster_key: &ClusterKey,
        small_bytes_max: usize,
    ) -> Result<Self, StoreError> {
        let small = SmallBlobs::open(&env, data_dir, small_bytes_max > 0)?;
        Ok(Self {
            small,
            small_bytes_max: small_bytes_max.min(SMALL_BLOB_BYTES_MAX),
            files: BlobFiles::open(env, data_dir)?,
            sealer: Sealer::new(cluster_key),
            put_again: Mutex::new(BTreeSet::new()),
            queued: Queued::default(),
            counters: StoreCounters::default(),
        })
    }

    /// The file system the blobs are on: its size and free bytes
    /// (blocking).
    pub fn space(&self) -> io::Result<crate::wire::DiskSpace> {
        self.files.space()
    }

    /// Blobs and sealed bytes, in files and in the table (a blob held in
    /// both is counted twice).
    pub fn usage(&self) -> Usage {
        let files = self.files.usage();
        let table = self
            .small
            .as_ref()
            .map(SmallBlobs::usage)
            .unwrap_or_default();
        Usage {
            blobs: files.blobs + table.blobs,
            bytes: files.bytes + table.bytes,
        }
    }

    /// Whether the small-blob table is distrusted (`store::small`): its
    /// blobs are written again as files as other nodes send them.
    pub fn small_blob_table_distrusted(&self) -> bool {
        self.small.as_ref().is_some_and(|small| !small.is_trusted())
    }

    /// Seals blobs for this node's cluster key (and checks sealed ones).
    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    /// Where the sealed blob `id` lives when it is a file.
    pub fn blob_path(&self, id: &ChunkId) -> PathBuf {
        self.files.path(id)
    }

    /// Whether blob `id` is stored (in the table or as a file).
    pub fn contains(&self, id: &ChunkId) -> Result<bool, StoreError> {
        Ok(self.in_table(id)? || self.files.exists(id)?)
    }

    fn in_table(&self, id: &ChunkId) -> Result<bool, StoreError> {
        match &self.small {
            Some(small) => small.contains(id),
            None => Ok(false),
        }
    }

    fn table_holds_durably(&self, id: &ChunkId) -> Result<bool, StoreError> {
        match &self.small {
            Some(small) => small.holds_durably(id),
            None => Ok(false),
        }
    }

    /// Whether blob `id` is stored durably (a copy that survives a crash:
    /// a committed value, or a file with a durable directory entry),
    /// without reading it.
    pub fn holds_durably(&self, id: &ChunkId) -> Result<bool, StoreError> {
        Ok(self.table_holds_durably(id)? || self.files.holds_durably(id)?)
    }

    /// Whether blob `id` is stored durably *and* reads back verified: what
    /// a node must know before it deletes another copy on the strength of
    /// this one. A copy that fails twice is quarantined (and not held).
    pub fn verify(&self, id: &ChunkId) -> Result<bool, StoreError> {
        if !self.holds_durably(id)? {
            return Ok(false);
        }
        match self.get_sealed(id) {
            Ok(_) => Ok(true),
            Err(StoreError::NotFound(_) | StoreError::Corrupt(_)) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// For the scrub: read blob `id` back verified (a copy that fails twice
    /// is quarantined: [`StoreError::Corrupt`]), and make it durable if its
    /// put could not (a directory entry synced, a table value written
    /// again).
    pub fn scrub(&self, id: &ChunkId) -> Result<(), StoreError> {
        let blob = self.get_sealed(id)?;
        if !self.holds_durably(id)? {
            if self.files.exists(id)? {
                self.files.make_entry_durable(id)?;
            } else if self.in_table(id)? {
                // In the table only, and its commit failed or the table is
                // distrusted: written again (a file, if distrusted).
                self.write(&blob)?;
            }
            crate::marks::hit("scrub_made_a_blob_durable");
        }
        Ok(())
    }

    /// Store `blob` durably. Returns once it survives a crash. An id
    /// already present is not rewritten, unless its copy is not known
    /// durable.
    pub fn put(&self, blob: &SealedBlob) -> Result<PutOutcome, StoreError> {
        let Some(present) = self.needs_write(blob)? else {
            return Ok(PutOutcome::AlreadyPresent);
        };
        self.write(blob)?;
        Ok(written(present))
    }

    /// The first half of a put: `None` if `blob` is held durably already
    /// (made so now if only its directory entry was not), else whether it
    /// is present at all (not durably) when it must be written.
    fn needs_write(&self, blob: &SealedBlob) -> Result<Option<bool>, StoreError> {
        if blob.plaintext_len() > BLOB_BYTES_MAX {
            return Err(StoreError::TooLarge(blob.plaintext_len()));
        }
        let id = blob.id();
        let present = {
            let mut put_again = self.put_again.lock().unwrap();
            let present = self.contains(id)?;
            if present {
                put_again.insert(*id);
            }
            present
        };
        if present {
            // Present is not the same as durable: an earlier put may have
            // renamed this blob into place and then failed to sync the
            // directory, or its commit to the table may have failed (or the
            // table is distrusted). Make it durable before acknowledging on
            // the strength of it.
            if self.files.exists(id)? {
                self.files.make_entry_durable(id)?;
                return Ok(None);
            }
            if self.table_holds_durably(id)? {
                return Ok(None);
            }
        }
        Ok(Some(present))
    }

    /// Blobs of up to this many bytes of plaintext go into the small-blob
    /// table.
    pub fn small_blob_bytes_max(&self) -> usize {
        self.small_bytes_max
    }

    /// Write blob `id` durably: into the table if it is small enough and
    /// the table trusted, else as a file.
    fn write(&self, blob: &SealedBlob) -> Result<(), StoreError> {
        if let Some(small) = &self.small
            && self.small_bytes_max > 0
            && blob.plaintext_len() <= self.small_bytes_max
            && small.is_trusted()
            && self.room_for_the_table()
        {
            match small.insert(blob.id(), blob.bytes().to_vec()) {
                Ok(_) => return Ok(()),
                // Distrusted meanwhile: a file, then.
                Err(StoreError::Table(_)) => {}
                Err(error) => return Err(error),
            }
        }
        self.files.write(blob.id(), blob.bytes())
    }

    /// Whether the disk has more than a reserve free. Below it a small
    /// blob is written as a file: a write that fails for want of space
    /// inside redb fails the database until it is reopened, and a reopen
    /// after a failure is redb's crash recovery, which reads the whole
    /// table. A file that does not fit fails alone. (A disk that cannot
    /// say how full it is has room.)
    fn room_for_the_table(&self) -> bool {
        self.space().map_or(true, |space| {
            space.free_bytes >= SMALL_BLOB_TABLE_FREE_MIN_BYTES
        })
    }

    /// Read, authenticate and decrypt blob `id`.
    ///
    /// A failed check is read once more: if the second read verifies, the
    /// fault was transient (a bus or cache error) and is only counted. If it
    /// fails again, the blob is moved to `quarantine/` and
    /// [`StoreError::Corrupt`] returned: the caller fetches another replica.
    pub fn get(&self, id: &ChunkId) -> Result<Vec<u8>, StoreError> {
        self.read_checked(id, |sealer, id, sealed| sealer.open(id, sealed).ok())
    }

    /// Read blob `id` and check its tag, without decrypting it: to send it
    /// to a peer (which stores it as it is), or to write it again. Fails
    /// as [`ChunkStore::get`] does.
    pub fn get_sealed(&self, id: &ChunkId) -> Result<SealedBlob, StoreError> {
        self.read_checked(id, |sealer, id, sealed| {
            sealer.checked(*id, sealed.into()).ok()
        })
    }

    /// Read blob `id` and pass it through `check` (`None`: it failed),
    /// from the table or its file, reading it again once and then
    /// quarantining it if it fails.
    fn read_checked<T>(
        &self,
        id: &ChunkId,
        check: impl Fn(&Sealer, &ChunkId, Vec<u8>) -> Option<T>,
    ) -> Result<T, StoreError> {
        if let Some(small) = &self.small {
            match self.get_from_table(small, id, &check) {
                Ok(Some(checked)) => return Ok(checked),
                Ok(None) => {}
                // A file copy, if any, is the same blob (written again
                // after the table was distrusted): try it.
                Err(StoreError::Corrupt(_)) if self.files.exists(id)? => {}
                Err(error) => return Err(error),
            }
        }
        match self.read_verified(id, &check)? {
            Some(checked) => return Ok(checked),
            None => tracing::warn!(blob = %id, "blob failed verification; reading it again"),
        }
        match self.read_verified(id, &check)? {
            Some(checked) => {
                self.counters
                    .transient_read_faults
                    .fetch_add(1, Ordering::Relaxed);
                Ok(checked)
            }
            None => {
                self.quarantine(id)?;
                Err(StoreError::Corrupt(*id))
            }
        }
    }

    /// [`ChunkStore::get`] from the table (read first: a blob may be in
    /// both places after the size limit changed, and either copy is the
    /// same blob). `None`: not in the table.
    ///
    /// The second read comes from the file (through the OS), not from
    /// redb's page cache, which would hand back the same bad bytes: only
    /// bytes that fail twice, the second time read anew, are quarantined.
    fn get_from_table<T>(
        &self,
        small: &SmallBlobs,
        id: &ChunkId,
        check: &impl Fn(&Sealer, &ChunkId, Vec<u8>) -> Option<T>,
    ) -> Result<Option<T>, StoreError> {
        let Some(sealed) = small.get(id)? else {
            return Ok(None);
        };
        if let Some(checked) = check(&self.sealer, id, sealed) {
            return Ok(Some(checked));
        }
        tracing::warn!(blob = %id, "blob failed verification; reading it again from the disk");
        small.reread_from_disk()?;
        let Some(sealed) = small.get(id)? else {
            // Deleted meanwhile.
            return Ok(None);
        };
        match check(&self.sealer, id, sealed.clone()) {
            Some(checked) => {
                self.counters
                    .transient_read_faults
                    .fetch_add(1, Ordering::Relaxed);
                Ok(Some(checked))
            }
            None => {
                self.quarantine_value(small, id, sealed)?;
                Err(StoreError::Corrupt(*id))
            }
        }
    }

    /// [`ChunkStore::put`] of `sealed`, received as blob `id`, once its
    /// tag checks ([`StoreError::NotSealedFor`] if not). The check runs
    /// here, on the caller's blocking thread, not on the async runtime.
    pub fn put_checked(&self, id: ChunkId, sealed: Bytes) -> Result<PutOutcome, StoreError> {
        let blob = self
            .sealer
            .checked(id, sealed)
            .map_err(|_| StoreError::NotSealedFor(id))?;
        self.put(&blob)
    }

    /// [`ChunkStore::put`] of `plaintext`, sealed here.
    #[cfg(test)]
    fn put_plaintext(&self, id: &ChunkId, plaintext: &[u8]) -> Result<PutOutcome, StoreError> {
        self.put(&self.sealer.seal_blob(*id, plaintext))
    }

    /// Blob file `id`, through `check`. `Ok(None)`: the bytes are there
    /// but do not verify.
    fn read_verified<T>(
        &self,
        id: &ChunkId,
        check: &impl Fn(&Sealer, &ChunkId, Vec<u8>) -> Option<T>,
    ) -> Result<Option<T>, StoreError> {
        Ok(self
            .files
            .read(id)?
            .and_then(|sealed| check(&self.sealer, id, sealed)))
    }

    /// Move a blob file that failed verification out of the way.
    fn quarantine(&self, id: &ChunkId) -> Result<(), StoreError> {
        let to = self.files.quarantine(id)?;
        self.counters.quarantined.fetch_add(1, Ordering::Relaxed);
        tracing::error!(blob = %id, quarantined_to = %to.display(), "blob is corrupt on disk; quarantined");
        Ok(())
    }

    /// A table value that failed verification: written to `quarantine/`
    /// (durably, before it leaves the table), then removed unless a good
    /// copy replaced it meanwhile.
    fn quarantine_value(
        &self,
        small: &SmallBlobs,
        id: &ChunkId,
        sealed: Vec<u8>,
    ) -> Result<(), StoreError> {
        let to = self.files.quarantine_table_value(id, &sealed)?;
        small.remove_if_equal(id, sealed)?;
        self.counters.quarantined.fetch_add(1, Ordering::Relaxed);
        tracing::error!(blob = %id, quarantined_to = %to.display(), "blob is corrupt in the small-blob table; quarantined");
        Ok(())
    }

    /// The plaintext size of blob `id`, from its sealed length (not verified).
    pub fn plaintext_len(&self, id: &ChunkId) -> Result<u64, StoreError> {
        let sealed_len = match &self.small {
            Some(small) => small.sealed_len(id)?,
            None => None,
        };
        let sealed_len = match sealed_len {
            Some(len) => len,
            None => self.files.sealed_len(id)?,
        };
        Ok(sealed_len.saturating_sub(SEAL_OVERHEAD_BYTES as u64))
    }

    /// The blobs put again while present since the last call (see
    /// `put_again`), for the garbage collector.
    pub fn take_put_again(&self) -> BTreeSet<ChunkId> {
        std::mem::take(&mut *self.put_again.lock().unwrap())
    }

    /// Which of `ids` are stored, and restart the garbage collector's grace
    /// period of those that are, as a put of them would: a put in flight
    /// longer than the grace period keeps the chunks it already stored
    /// this way before it commits its version. Atomic with respect to
    /// [`ChunkStore::delete_unless_put_again`], so a blob reported present
    /// is not collected under the caller.
    pub fn keep(&self, ids: &[ChunkId]) -> Result<Vec<bool>, StoreError> {
        let mut put_again = self.put_again.lock().unwrap();
        let mut present = Vec::with_capacity(ids.len());
        for id in ids {
            let here = self.holds_durably(id)?;
            if here {
                put_again.insert(*id);
            }
            present.push(here);
        }
        Ok(present)
    }

    /// Delete blob `id` for the garbage collector, unless it was put again
    /// since the collector last took those (then it is kept, and `false`
    /// returned). Atomic with respect to puts of the same blob.
    pub fn delete_unless_put_again(&self, id: &ChunkId) -> Result<bool, StoreError> {
        let put_again = self.put_again.lock().unwrap();
        if put_again.contains(id) {
            crate::marks::hit("gc_spared_a_blob_put_again");
            return Ok(false);
        }
        self.delete(id)?;
        drop(put_again);
        Ok(true)
    }

    /// Delete blob `id` (absent is fine), from the table and as a file.
    pub fn delete(&self, id: &ChunkId) -> Result<(), StoreError> {
        if let Some(small) = &self.small
            && small.contains(id)?
        {
            match small.remove(id) {
                // An inconsistent table (distrusted by now) cannot take
                // the removal; its copy counts for nothing, and the file is
                // deleted all the same.
                Ok(_) | Err(StoreError::Table(_)) => {}
                Err(error) => return Err(error),
            }
        }
        self.files.delete(id)
    }

    /// Ids of all stored blobs, sorted, each once.
    pub fn list(&self) -> Result<Vec<ChunkId>, StoreError> {
        let mut ids = match &self.small {
            Some(small) => small.list()?,
            None => Vec::new(),
        };
        self.files.list_into(&mut ids)?;
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// Commits of the small-blob table and the changes they held since
    /// open (group commit: several puts per commit under load).
    pub fn small_blob_commits(&self) -> (u64, u64) {
        self.small
            .as_ref()
            .map_or((0, 0), SmallBlobs::commit_counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::tokio_env;

    fn store(dir: &Path) -> ChunkStore {
        store_with_small(dir, 0)
    }

    fn store_with_small(dir: &Path, small_bytes_max: usize) -> ChunkStore {
        let env = tokio_env();
        let key = ClusterKey::from_bytes([7; 32]);
        ChunkStore::open(env, dir, &key, small_bytes_max).unwrap()
    }

    /// Blobs up to the limit go into the table, larger ones into files;
    /// both read back verified after a restart, are listed and counted,
    /// and are deleted for good.
    #[test]
    fn small_blobs_live_in_the_table_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let small = vec![0x11; 4096];
        let large = vec![0x22; 100_000];
        let (small_id, large_id) = (ChunkId::of(&small), ChunkId::of(&large));
        {
            let store = store_with_small(dir.path(), 64 << 10);
            assert_eq!(
                store.put_plaintext(&small_id, &small).unwrap(),
                PutOutcome::Written
            );
            assert_eq!(
                store.put_plaintext(&large_id, &large).unwrap(),
                PutOutcome::Written
            );
            assert_eq!(
                store.put_plaintext(&small_id, &small).unwrap(),
                PutOutcome::AlreadyPresent
            );
            assert!(!store.blob_path(&small_id).exists(), "no file for it");
            assert!(store.blob_path(&large_id).exists());
            assert_eq!(store.small_blob_commits(), (1, 1));
        }
        let store = store_with_small(dir.path(), 64 << 10);
        assert_eq!(store.get(&small_id).unwrap(), small);
        assert_eq!(store.get(&large_id).unwrap(), large);
        assert!(store.verify(&small_id).unwrap());
        assert_eq!(store.plaintext_len(&small_id).unwrap(), 4096);
        let mut both = vec![small_id, large_id];
        both.sort();
        assert_eq!(store.list().unwrap(), both);
        let usage = store.usage();
        assert_eq!(usage.blobs, 2);
        assert_eq!(
            usage.bytes,
            (4096 + 100_000 + 2 * SEAL_OVERHEAD_BYTES) as u64
        );
        store.delete(&small_id).unwrap();
        assert!(!store.contains(&small_id).unwrap());
        assert!(matches!(store.get(&small_id), Err(StoreError::NotFound(_))));
        assert_eq!(store.usage().blobs, 1);
        drop(store);
        let store = store_with_small(dir.path(), 64 << 10);
        assert_eq!(store.list().unwrap(), vec![large_id]);
    }

    /// The bytes of a small-blob table in `dir` holding one blob.
    fn table_holding_a_blob(dir: &Path) -> Vec<u8> {
        let blob = vec![0x88; 500];
        store_with_small(dir, 64 << 10)
            .put_plaintext(&ChunkId::of(&blob), &blob)
            .unwrap();
        std::fs::read(dir.join(SMALL_BLOBS_FILE)).unwrap()
    }

    /// With `damaged` as its table, a store in `dir` fails to start as
    /// corrupt, says what to do, and leaves the file as it was.
    fn assert_start_refuses_damaged_table(dir: &Path, damaged: &[u8]) {
        let path = dir.join(SMALL_BLOBS_FILE);
        std::fs::write(&path, damaged).unwrap();
        let key = ClusterKey::from_bytes([7; 32]);
        let error = ChunkStore::open(tokio_env(), dir, &key, 64 << 10).unwrap_err();
        let len = damaged.len();
        assert!(
            matches!(error, StoreError::Table(_)),
            "{len} bytes: {error:?}"
        );
        assert!(
            error.to_string().contains("move it out of the data dir"),
            "{error}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), damaged, "kept as it was");
    }

    /// A table redb cannot open (a rotten header) fails the start with
    /// what to do, and is left where it is: moving it aside on its own
    /// would drop its blobs (on every node at once, after a rollback to a
    /// build that cannot read it).
    #[test]
    fn an_unreadable_table_fails_the_start_and_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = table_holding_a_blob(dir.path());
        for byte in &mut bytes[..4096] {
            *byte ^= 0x5A;
        }
        assert_start_refuses_damaged_table(dir.path(), &bytes);
    }

    /// A table cut short (a copy that stopped half way, a file system
    /// that lost its tail) is corrupt, not a disk failure: the start fails
    /// with what to do, and the file is kept.
    #[test]
    fn a_truncated_table_fails_the_start_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = table_holding_a_blob(dir.path());
        // (Cut to nothing, it opens as a new, empty table: nothing was
        // left to lose.)
        for len in [
            bytes.len() - 1,
            bytes.len() - 4096,
            bytes.len() / 2,
            4096,
            100,
        ] {
            assert_start_refuses_damaged_table(dir.path(), &bytes[..len]);
        }
    }

    /// A store whose limit is 0 makes no table (nor disk work for one)
    /// unless an earlier one left a table to read.
    #[test]
    fn no_table_is_made_without_a_limit() {
        let dir = tempfile::tempdir().unwrap();
        let blob = vec![0x55; 100];
        let id = ChunkId::of(&blob);
        store(dir.path()).put_plaintext(&id, &blob).unwrap();
        assert!(!dir.path().join(SMALL_BLOBS_FILE).exists());
        assert!(store(dir.path()).blob_path(&id).exists());
    }

    /// Once the table is distrusted (a failed sync of it), none of its
    /// blobs counts as held, a put of one writes it again as a file, new
    /// small blobs are files, and the distrust survives a restart.
    #[test]
    fn a_distrusted_table_holds_nothing_and_blobs_move_to_files() {
        let dir = tempfile::tempdir().unwrap();
        let old = vec![0x66; 300];
        let new = vec![0x77; 300];
        let (old_id, new_id) = (ChunkId::of(&old), ChunkId::of(&new));
        {
            let store = store_with_small(dir.path(), 64 << 10);
            store.put_plaintext(&old_id, &old).unwrap();
            assert!(store.holds_durably(&old_id).unwrap());
            store.small.as_ref().unwrap().distrust_for_test();
            assert!(store.small_blob_table_distrusted());
            assert!(!store.holds_durably(&old_id).unwrap());
            assert!(!store.verify(&old_id).unwrap());
            assert_eq!(store.keep(&[old_id]).unwrap(), vec![false]);
            // Still readable, verified.
            assert_eq!(store.get(&old_id).unwrap(), old);
        }
        let store = store_with_small(dir.path(), 64 << 10);
        assert!(store.small_blob_table_distrusted(), "across a restart");
        assert!(!store.holds_durably(&old_id).unwrap());
        assert_eq!(
            store.put_plaintext(&old_id, &old).unwrap(),
            PutOutcome::AlreadyPresent
        );
        assert!(store.blob_path(&old_id).exists(), "written again as a file");
        assert!(store.holds_durably(&old_id).unwrap());
        assert_eq!(
            store.put_plaintext(&new_id, &new).unwrap(),
            PutOutcome::Written
        );
        assert!(store.blob_path(&new_id).exists());
        assert_eq!(store.list().unwrap().len(), 2);
    }

    /// A store whose limit changed finds blobs where the old limit put
    /// them, lists a blob held in both places once, and deletes both.
    #[test]
    fn a_changed_limit_keeps_every_blob_reachable() {
        let dir = tempfile::tempdir().unwrap();
        let blob = vec![0x33; 1000];
        let id = ChunkId::of(&blob);
        store(dir.path()).put_plaintext(&id, &blob).unwrap();
        let store = store_with_small(dir.path(), 64 << 10);
        assert_eq!(store.get(&id).unwrap(), blob);
        assert_eq!(
            store.put_plaintext(&id, &blob).unwrap(),
            PutOutcome::AlreadyPresent
        );
        // Both copies, as after a rollback and an upgrade.
        let small = store.small.as_ref().unwrap();
        small.insert(&id, store.sealer.seal(&id, &blob)).unwrap();
        assert_eq!(store.list().unwrap(), vec![id]);
        store.delete(&id).unwrap();
        assert!(!store.contains(&id).unwrap());
        assert!(!store.blob_path(&id).exists());
    }

    /// A table value that fails its check is never returned: it goes to
    /// `quarantine/` and leaves the table, and a good copy put back is
    /// held again.
    #[test]
    fn a_rotten_table_value_is_quarantined() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_small(dir.path(), 64 << 10);
        let blob = vec![0x44; 2000];
        let id = ChunkId::of(&blob);
        store.put_plaintext(&id, &blob).unwrap();
        let small = store.small.as_ref().unwrap();
        let mut sealed = small.get(&id).unwrap().unwrap();
        sealed[1000] ^= 0x01;
        small.insert(&id, sealed).unwrap();
        assert!(
            store.holds_durably(&id).unwrap(),
            "presence alone cannot tell"
        );
        assert!(!store.verify(&id).unwrap());
        assert!(!store.contains(&id).unwrap());
        assert_eq!(store.counters.quarantined.load(Ordering::Relaxed), 1);
        assert_eq!(
            std::fs::read_dir(dir.path().join("quarantine"))
                .unwrap()
                .count(),
            1
        );
        assert_eq!(store.usage().blobs, 0);
        assert_eq!(
            store.put_plaintext(&id, &blob).unwrap(),
            PutOutcome::Written
        );
        assert_eq!(store.get(&id).unwrap(), blob);
    }

    #[test]
    fn a_kept_blob_survives_the_collector_until_it_takes_the_put_again_set() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let chunk = b"a chunk of a put in flight";
        let id = ChunkId::of(chunk);
        let absent = ChunkId::of(b"never stored");
        store.put_plaintext(&id, chunk).unwrap();
        // A round took the set (empty) before the put: the blob is fair game.
        assert!(store.take_put_again().is_empty());
        assert_eq!(store.keep(&[id, absent]).unwrap(), vec![true, false]);
        assert!(!store.delete_unless_put_again(&id).unwrap());
        assert_eq!(store.get(&id).unwrap(), chunk);
        // The next round restarts its grace from what it takes.
        assert_eq!(store.take_put_again(), BTreeSet::from([id]));
        assert!(store.delete_unless_put_again(&id).unwrap());
        assert_eq!(store.keep(&[id]).unwrap(), vec![false]);
    }

    /// A copy that rotted on disk is present but not good: `verify` (what an
    /// owner answers before another node drops its copy) and the scrub say
    /// so, and quarantine it, while a plain presence check cannot tell.
    #[test]
    fn verify_and_scrub_catch_a_copy_rotten_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let chunk = vec![0x5A; 10_000];
        let id = ChunkId::of(&chunk);
        store.put_plaintext(&id, &chunk).unwrap();
        assert!(store.verify(&id).unwrap());
        let path = store.blob_path(&id);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[5_000] ^= 0x01;
        std::fs::write(&path, bytes).unwrap();
        assert!(
            store.holds_durably(&id).unwrap(),
            "presence alone cannot tell"
        );
        assert!(!store.verify(&id).unwrap());
        assert!(
            !store.contains(&id).unwrap(),
            "the rotten copy is quarantined"
        );
        // A good copy put back is held again; the scrub then finds it sound.
        store.put_plaintext(&id, &chunk).unwrap();
        store.scrub(&id).unwrap();
        std::fs::write(&path, b"garbage").unwrap();
        assert!(matches!(store.scrub(&id), Err(StoreError::Corrupt(_))));
    }
}
/// What the table costs on disk against files, by blob size:
/// `cargo test --release -p dfs --lib table_space -- --ignored --nocapture`.
#[cfg(test)]
mod table_space {
    use super::*;

    #[test]
    #[ignore = "a measurement: run by hand"]
    fn table_space_against_files() {
        for size in [
            100usize,
            1000,
            4096,
            8000,
            10_000,
            16 << 10,
            33_000,
            64 << 10,
        ] {
            let dir = tempfile::tempdir().unwrap();
            let key = ClusterKey::from_bytes([1; 32]);
            let store =
                ChunkStore::open(crate::env::tokio_env(), dir.path(), &key, 1 << 20).unwrap();
            let count = 2000;
            for i in 0..count {
                let mut blob = vec![0u8; size];
                blob[..8].copy_from_slice(&(i as u64).to_le_bytes());
                store.put_plaintext(&ChunkId::of(&blob), &blob).unwrap();
            }
            let sealed = ((size + SEAL_OVERHEAD_BYTES) * count) as f64;
            let table = std::fs::metadata(dir.path().join(SMALL_BLOBS_FILE))
                .unwrap()
                .len();
            // A file takes whole 4 KiB blocks (and an inode, not counted).
            let files = (size + SEAL_OVERHEAD_BYTES).div_ceil(4096) * 4096 * count;
            println!(
                "{size} B blobs: the table file is {:.2}x their sealed bytes, files take {:.2}x",
                table as f64 / sealed,
                files as f64 / sealed
            );
            if size <= crate::limits::SMALL_BLOB_BYTES_DEFAULT {
                assert!(
                    table as f64 <= 2.5 * files as f64,
                    "{size} B: the table wastes space"
                );
            }
        }
    }
}
