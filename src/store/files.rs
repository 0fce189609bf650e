//! Sealed blobs as files, one per blob: the half of the chunk store that
//! holds every blob above the small-blob limit (and every blob when there
//! is no table). Sealing, verifying and choosing between the table and
//! files are the store's (`store/mod.rs`); this module only keeps sealed
//! bytes and their directory entries durable.
//!
//! Layout under the data dir:
//! - `chunks/<first 2 hex>/<64 hex>`: one sealed blob;
//! - `tmp/`: writes in progress, emptied at every open;
//! - `quarantine/`: blobs that failed verification, kept for inspection.
//!
//! A write is durable before it returns: `tmp/<random>` (written around
//! the page cache where the file system allows: see
//! [`write_uncached`](crate::env::write_uncached)), `sync_data`, rename
//! into place, `sync_dir`. A crash at any point leaves either no
//! blob or a whole one. A rename whose directory sync failed leaves a
//! file that is present but not durable; it does not count as held
//! ([`BlobFiles::holds_durably`]) until a later sync succeeds.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{SEAL_OVERHEAD_BYTES, StoreError, Usage};
use crate::cas::ChunkId;
use crate::env::{
    Env, OpenMode, create_dir_durably, read_exact_at, write_file_durably, write_uncached,
};
use crate::limits::BLOB_BYTES_MAX;

#[derive(Debug)]
pub(super) struct BlobFiles {
    env: Env,
    chunks_dir: PathBuf,
    tmp_dir: PathBuf,
    quarantine_dir: PathBuf,
    usage: Mutex<Usage>,
    /// Prefix dirs whose entry in `chunks/` is known durable (at most 256).
    durable_prefixes: Mutex<BTreeSet<String>>,
    /// Blobs whose file may exist without a durable directory entry: a
    /// write renamed it into place and has not (yet, or ever: its
    /// `sync_dir` failed) synced the directory. Such a copy must not count
    /// as a copy: a crash can unname it. Cleared by the next successful
    /// write or sync of the blob, or its deletion; bounded by the blobs
    /// stored.
    not_durable: Mutex<BTreeSet<ChunkId>>,
}

impl BlobFiles {
    /// Open (or create) the blob files of `data_dir`: create the
    /// directories, delete leftovers of interrupted writes in `tmp/`,
    /// count usage, and make every directory entry durable.
    pub(super) fn open(env: Env, data_dir: &Path) -> Result<Self, StoreError> {
        let files = Self {
            chunks_dir: data_dir.join("chunks"),
            tmp_dir: data_dir.join("tmp"),
            quarantine_dir: data_dir.join("quarantine"),
            usage: Mutex::new(Usage::default()),
            durable_prefixes: Mutex::new(BTreeSet::new()),
            not_durable: Mutex::new(BTreeSet::new()),
            env,
        };
        let disk = files.env.disk.as_ref();
        for dir in [&files.chunks_dir, &files.tmp_dir, &files.quarantine_dir] {
            create_dir_durably(disk, dir)
                .map_err(|e| StoreError::io(format!("creating {}", dir.display()), e))?;
        }
        let leftovers = disk
            .list_dir(&files.tmp_dir)
            .map_err(|e| StoreError::io("listing tmp/", e))?;
        for entry in leftovers.iter().filter(|e| !e.is_dir) {
            let path = files.tmp_dir.join(&entry.name);
            disk.remove_file(&path)
                .map_err(|e| StoreError::io(format!("removing {}", path.display()), e))?;
        }
        // One pass over chunks/: count usage, and make every entry durable.
        // What a previous process left may sit in the page cache only (a
        // process crash does not lose it, an OS crash would), so sync each
        // prefix dir once before acknowledging anything that relies on it.
        let mut usage = Usage::default();
        let prefixes = disk
            .list_dir(&files.chunks_dir)
            .map_err(|e| StoreError::io("listing chunks/", e))?;
        for prefix in prefixes
            .into_iter()
            .filter(|p| p.is_dir && p.name.len() == 2)
        {
            let dir = files.chunks_dir.join(&prefix.name);
            for entry in disk
                .list_dir(&dir)
                .map_err(|e| StoreError::io("listing a chunk dir", e))?
            {
                if entry.name.parse::<ChunkId>().is_ok()
                    && let Ok(file) = disk.open(&dir.join(&entry.name), OpenMode::Read)
                {
                    usage.blobs += 1;
                    usage.bytes += file.len().unwrap_or(0);
                }
            }
            disk.sync_dir(&dir)
                .map_err(|e| StoreError::io("syncing a chunk dir", e))?;
            files.durable_prefixes.lock().unwrap().insert(prefix.name);
        }
        disk.sync_dir(&files.chunks_dir)
            .map_err(|e| StoreError::io("syncing chunks/", e))?;
        *files.usage.lock().unwrap() = usage;
        Ok(files)
    }

    /// The file system the blobs are on: its size and free bytes.
    pub(super) fn space(&self) -> io::Result<crate::wire::DiskSpace> {
        self.env.disk.space(&self.chunks_dir)
    }

    /// Blob files and their sealed bytes.
    pub(super) fn usage(&self) -> Usage {
        *self.usage.lock().unwrap()
    }

    fn prefix_dir(&self, id: &ChunkId) -> PathBuf {
        self.chunks_dir.join(&id.to_hex()[..2])
    }

    /// Where the sealed blob `id` lives.
    pub(super) fn path(&self, id: &ChunkId) -> PathBuf {
        self.prefix_dir(id).join(id.to_hex())
    }

    pub(super) fn exists(&self, id: &ChunkId) -> Result<bool, StoreError> {
        self.env
            .disk
            .exists(&self.path(id))
            .map_err(|e| StoreError::io("checking for a blob", e))
    }

    /// Whether a file of `id` exists with a durable directory entry.
    pub(super) fn holds_durably(&self, id: &ChunkId) -> Result<bool, StoreError> {
        Ok(self.exists(id)? && !self.not_durable.lock().unwrap().contains(id))
    }

    /// Write sealed blob `id` as a file: `tmp/`, sync, rename, sync the
    /// directory.
    pub(super) fn write(&self, id: &ChunkId, sealed: &[u8]) -> Result<(), StoreError> {
        let disk = self.env.disk.as_ref();
        let tmp = self
            .tmp_dir
            .join(format!("{}.{:016x}", id.to_hex(), self.env.random_u64()));
        let written = (|| {
            let file = disk
                .open(&tmp, OpenMode::CreateNewUncached)
                .map_err(|e| StoreError::io("creating a temp file", e))?;
            write_uncached(file.as_ref(), sealed)
                .map_err(|e| StoreError::io("writing a blob", e))?;
            file.sync_data()
                .map_err(|e| StoreError::io("syncing a blob", e))?;
            drop(file);
            let prefix = self.prefix_dir(id);
            self.ensure_prefix_durable(id)?;
            self.not_durable.lock().unwrap().insert(*id);
            disk.rename(&tmp, &self.path(id))
                .map_err(|e| StoreError::io("renaming a blob into place", e))?;
            disk.sync_dir(&prefix)
                .map_err(|e| StoreError::io("syncing a chunk dir", e))?;
            self.not_durable.lock().unwrap().remove(id);
            Ok(())
        })();
        if let Err(error) = written {
            // The temp file may or may not exist; either way it must not stay.
            let _ = disk.remove_file(&tmp);
            return Err(error);
        }
        let mut usage = self.usage.lock().unwrap();
        usage.blobs += 1;
        usage.bytes += sealed.len() as u64;
        Ok(())
    }

    /// Make the directory entry of stored blob `id` durable (its prefix's
    /// entry in `chunks/`, then its own), and count it as held again.
    pub(super) fn make_entry_durable(&self, id: &ChunkId) -> Result<(), StoreError> {
        self.ensure_prefix_durable(id)?;
        self.env
            .disk
            .sync_dir(&self.prefix_dir(id))
            .map_err(|e| StoreError::io("syncing a chunk dir", e))?;
        self.not_durable.lock().unwrap().remove(id);
        Ok(())
    }

    /// Create `id`'s prefix dir if needed and make its entry in `chunks/`
    /// durable (once per prefix; a failed sync is retried next time).
    fn ensure_prefix_durable(&self, id: &ChunkId) -> Result<(), StoreError> {
        let name = id.to_hex()[..2].to_string();
        if self.durable_prefixes.lock().unwrap().contains(&name) {
            return Ok(());
        }
        let disk = self.env.disk.as_ref();
        let prefix = self.prefix_dir(id);
        if !disk
            .exists(&prefix)
            .map_err(|e| StoreError::io("checking a chunk dir", e))?
        {
            disk.create_dir_all(&prefix)
                .map_err(|e| StoreError::io("creating a chunk dir", e))?;
        }
        disk.sync_dir(&self.chunks_dir)
            .map_err(|e| StoreError::io("syncing chunks/", e))?;
        self.durable_prefixes.lock().unwrap().insert(name);
        Ok(())
    }

    /// The sealed bytes of blob `id`, unverified. `Ok(None)`: the file is
    /// longer than any sealed blob can be (it cannot verify; not read).
    pub(super) fn read(&self, id: &ChunkId) -> Result<Option<Vec<u8>>, StoreError> {
        let file = match self.env.disk.open(&self.path(id), OpenMode::Read) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StoreError::NotFound(*id)),
            Err(e) => return Err(StoreError::io("opening a blob", e)),
        };
        let len = file
            .len()
            .map_err(|e| StoreError::io("reading a blob's length", e))? as usize;
        if len > BLOB_BYTES_MAX + SEAL_OVERHEAD_BYTES {
            return Ok(None);
        }
        let mut sealed = vec![0u8; len];
        read_exact_at(file.as_ref(), &mut sealed, 0)
            .map_err(|e| StoreError::io("reading a blob", e))?;
        Ok(Some(sealed))
    }

    /// The sealed length of blob `id`'s file.
    pub(super) fn sealed_len(&self, id: &ChunkId) -> Result<u64, StoreError> {
        match self.env.disk.open(&self.path(id), OpenMode::Read) {
            Ok(file) => file
                .len()
                .map_err(|e| StoreError::io("reading a blob's length", e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::NotFound(*id)),
            Err(e) => Err(StoreError::io("opening a blob", e)),
        }
    }

    /// Move blob file `id`, which failed verification, to `quarantine/`.
    /// Returns where it went.
    pub(super) fn quarantine(&self, id: &ChunkId) -> Result<PathBuf, StoreError> {
        let disk = self.env.disk.as_ref();
        let from = self.path(id);
        let len = disk
            .open(&from, OpenMode::Read)
            .and_then(|f| f.len())
            .unwrap_or(0);
        let to =
            self.quarantine_dir
                .join(format!("{}.{:016x}", id.to_hex(), self.env.random_u64()));
        disk.rename(&from, &to)
            .map_err(|e| StoreError::io("quarantining a corrupt blob", e))?;
        disk.sync_dir(&self.prefix_dir(id))
            .map_err(|e| StoreError::io("syncing a chunk dir", e))?;
        disk.sync_dir(&self.quarantine_dir)
            .map_err(|e| StoreError::io("syncing quarantine/", e))?;
        let mut usage = self.usage.lock().unwrap();
        usage.blobs = usage.blobs.saturating_sub(1);
        usage.bytes = usage.bytes.saturating_sub(len);
        Ok(to)
    }

    /// Keep `sealed`, the bytes of a small-blob table value of `id` that
    /// failed verification, in `quarantine/`, durably (one file per blob,
    /// however often its quarantine is retried). Returns where.
    pub(super) fn quarantine_table_value(
        &self,
        id: &ChunkId,
        sealed: &[u8],
    ) -> Result<PathBuf, StoreError> {
        let to = self.quarantine_dir.join(format!("{}.table", id.to_hex()));
        match write_file_durably(&self.env, &to, sealed) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(StoreError::io("quarantining a corrupt blob", e)),
        }
        Ok(to)
    }

    /// Delete blob file `id` (absent is fine).
    pub(super) fn delete(&self, id: &ChunkId) -> Result<(), StoreError> {
        let disk = self.env.disk.as_ref();
        let path = self.path(id);
        let len = match disk.open(&path, OpenMode::Read) {
            Ok(file) => file.len().unwrap_or(0),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StoreError::io("opening a blob", e)),
        };
        disk.remove_file(&path)
            .map_err(|e| StoreError::io("deleting a blob", e))?;
        self.not_durable.lock().unwrap().remove(id);
        disk.sync_dir(&self.prefix_dir(id))
            .map_err(|e| StoreError::io("syncing a chunk dir", e))?;
        let mut usage = self.usage.lock().unwrap();
        usage.blobs = usage.blobs.saturating_sub(1);
        usage.bytes = usage.bytes.saturating_sub(len);
        Ok(())
    }

    /// Add the ids of all blob files to `ids` (unsorted). File names that
    /// are not blob ids are skipped.
    pub(super) fn list_into(&self, ids: &mut Vec<ChunkId>) -> Result<(), StoreError> {
        let disk = self.env.disk.as_ref();
        for prefix in disk
            .list_dir(&self.chunks_dir)
            .map_err(|e| StoreError::io("listing chunks/", e))?
        {
            if !prefix.is_dir || prefix.name.len() != 2 {
                continue;
            }
            let dir = self.chunks_dir.join(&prefix.name);
            for entry in disk
                .list_dir(&dir)
                .map_err(|e| StoreError::io("listing a chunk dir", e))?
            {
                if let Ok(id) = entry.name.parse::<ChunkId>() {
                    ids.push(id);
                }
            }
        }
        Ok(())
    }
}
