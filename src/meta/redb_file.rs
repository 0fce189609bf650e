//! One redb database in one file of the data dir, written through the
//! [`Disk`](crate::env::Disk) seam (so the simulation's crashes and disk
//! faults reach it): created atomically, its directory entry made durable
//! at every open, and closed and reopened after a disk failure (redb
//! refuses all work after an I/O error; reopening recovers its last
//! durable commit). The version index and the small-blob store each hold
//! one.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use redb::Database;

use super::backend::DiskBackend;
use crate::env::{Env, OpenMode};

/// How a layer's error type says what redb and the disk did.
pub(crate) trait RedbErrors: Sized + fmt::Display {
    /// The file could not be created, named or opened.
    fn open_failed(error: io::Error) -> Self;
    /// redb failed: an I/O error ([`redb::Error::Io`],
    /// [`redb::Error::PreviousIo`]) must map to a value
    /// [`RedbErrors::is_io`] accepts, so the database is reopened.
    fn storage(error: redb::Error) -> Self;
    fn is_io(&self) -> bool;
    /// The database is closed: its last reopen failed.
    fn closed() -> Self;
    /// The database is inconsistent: redb panicked (it indexes page bytes
    /// unchecked: a rotten page can panic where a check would have
    /// failed), or it cannot be reopened for a reason other than I/O. Must
    /// not be [`RedbErrors::is_io`]: no reopen follows.
    fn inconsistent(what: String) -> Self;
}

/// `operation`, with a panic inside it turned into an error.
fn unwind_to_error<T, E: RedbErrors>(operation: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(operation)) {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            Err(E::inconsistent(format!("redb panicked: {what}")))
        }
    }
}

pub(crate) struct RedbFile<E> {
    env: Env,
    path: PathBuf,
    /// `None` after a failed reopen; the next operation tries again. With
    /// the count of opens: an operation that failed reopens only the
    /// database it failed on, so that many failing at once reopen once.
    db: RwLock<(Option<Database>, u64)>,
    /// Run at every open: creates the tables (so that read transactions
    /// always find them), migrates old layouts.
    init: fn(&Database) -> Result<(), E>,
    /// redb's page cache (its default is 1 GiB, more than a node's memory
    /// bound: the cache would grow with every page read).
    cache_bytes: usize,
    /// Disk syncs of the file that failed since open (see [`DiskBackend`]).
    sync_failures: Arc<AtomicU64>,
    /// Why the last reopen failed, when not for I/O (redb found the file
    /// inconsistent): operations then fail at once rather than each
    /// reopen again, which is a recovery pass over the whole file.
    unusable: std::sync::Mutex<Option<String>>,
}

impl<E> fmt::Debug for RedbFile<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedbFile({})", self.path.display())
    }
}

impl<E: RedbErrors> RedbFile<E> {
    /// Open the database at `path`, creating it on first start.
    ///
    /// Creation is atomic: the database is initialized under a temporary
    /// name, synced, and renamed into place. A crash during redb's own
    /// initialization would otherwise leave a file with no valid header,
    /// which redb (rightly) refuses to open ever after. `dir_sync_failed`
    /// is the mark hit when the directory sync of an open fails;
    /// `cache_bytes` bounds redb's page cache.
    pub fn open(
        env: &Env,
        path: &Path,
        init: fn(&Database) -> Result<(), E>,
        dir_sync_failed: &'static str,
        cache_bytes: usize,
    ) -> Result<Self, E> {
        let disk = env.disk.as_ref();
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !disk.exists(path).map_err(E::open_failed)? {
            let base = path
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            let prefix = format!("{base}.creating");
            // Leftovers of failed creations, removed best effort. Each
            // attempt uses a fresh name: a file removed while a failed
            // attempt may still hold it open is not guaranteed gone (the
            // simulation's fs handed its bytes to the next file of the same
            // name, seed 66), and redb refuses a non-empty file without its
            // header.
            if let Ok(entries) = disk.list_dir(dir) {
                for entry in entries.iter().filter(|e| e.name.starts_with(&prefix)) {
                    let _ = disk.remove_file(&dir.join(&entry.name));
                }
            }
            let tmp = dir.join(format!("{prefix}.{:016x}", env.random_u64()));
            let file = disk
                .open(&tmp, OpenMode::CreateNew)
                .map_err(E::open_failed)?;
            let db = Database::builder()
                .set_cache_size(cache_bytes)
                .create_with_backend(DiskBackend::new(file, Arc::default()))
                .map_err(|e| E::storage(e.into()))?;
            init(&db)?;
            drop(db);
            disk.rename(&tmp, path).map_err(E::open_failed)?;
        }
        // Sync the directory entry on every open, not only after creating
        // the file: a start whose sync failed after the rename leaves a file
        // that the next start finds present but that a crash can still
        // unname, taking every acknowledged commit with it (sim seed
        // 8800200: the node then restarted with an empty index).
        if let Err(error) = disk.sync_dir(dir) {
            crate::marks::hit(dir_sync_failed);
            return Err(E::open_failed(error));
        }
        let mut file = Self {
            env: env.clone(),
            path: path.to_path_buf(),
            db: RwLock::new((None, 0)),
            init,
            cache_bytes,
            sync_failures: Arc::default(),
            unusable: Default::default(),
        };
        file.db = RwLock::new((Some(file.open_existing()?), 0));
        Ok(file)
    }

    fn open_existing(&self) -> Result<Database, E> {
        unwind_to_error(|| self.open_existing_inner())
    }

    fn open_existing_inner(&self) -> Result<Database, E> {
        let file = self
            .env
            .disk
            .open(&self.path, OpenMode::ReadWrite)
            .map_err(E::open_failed)?;
        let db = Database::builder()
            .set_cache_size(self.cache_bytes)
            .create_with_backend(DiskBackend::new(file, self.sync_failures.clone()))
            .map_err(|e| E::storage(e.into()))?;
        (self.init)(&db)?;
        Ok(db)
    }

    /// Run `operation` on the database. After an I/O failure, run
    /// `on_reopen` (what the caller keeps about the file's contents is no
    /// longer known), then close and reopen the database, so that one
    /// transient disk error does not fail every later operation.
    pub fn with_db<T>(
        &self,
        operation: impl FnOnce(&Database) -> Result<T, E>,
        on_reopen: impl FnOnce(),
    ) -> Result<T, E> {
        let (result, opened) = {
            let guard = self.db.read().unwrap();
            let result = match guard.0.as_ref() {
                Some(db) => unwind_to_error(|| operation(db)),
                None => match self.unusable.lock().unwrap().clone() {
                    Some(why) => Err(E::inconsistent(why)),
                    None => Err(E::closed()),
                },
            };
            (result, guard.1)
        };
        if result.as_ref().is_err_and(E::is_io) {
            let mut guard = self.db.write().unwrap();
            if guard.1 == opened {
                on_reopen();
                self.reopen_locked(&mut guard);
            }
        }
        result
    }

    /// Close and reopen the database, dropping redb's page cache: what
    /// the next read returns comes from the file again (after a value
    /// failed its check, so that a fault in one read is not taken for
    /// bad bytes on disk). A database closed without an I/O error reopens
    /// without a recovery pass.
    pub fn reopen(&self) -> Result<(), E> {
        let mut guard = self.db.write().unwrap();
        self.reopen_locked(&mut guard);
        match guard.0 {
            Some(_) => Ok(()),
            None => Err(E::closed()),
        }
    }

    fn reopen_locked(&self, guard: &mut (Option<Database>, u64)) {
        // Close before reopening: two handles on one file must not coexist.
        drop(guard.0.take());
        guard.1 += 1;
        match self.open_existing() {
            Ok(db) => {
                guard.0 = Some(db);
                *self.unusable.lock().unwrap() = None;
            }
            Err(error) if error.is_io() => {
                tracing::error!(%error, path = %self.path.display(), "cannot reopen a database; will retry")
            }
            Err(error) => {
                tracing::error!(%error, path = %self.path.display(), "cannot reopen a database: it is inconsistent; not retrying until restart");
                *self.unusable.lock().unwrap() = Some(error.to_string());
            }
        }
    }

    /// Disk syncs of the file that failed since open.
    pub fn sync_failures(&self) -> u64 {
        self.sync_failures.load(Ordering::Relaxed)
    }

    /// The size of the file on disk (blocking).
    pub fn file_bytes(&self) -> io::Result<u64> {
        self.env
            .disk
            .open(&self.path, OpenMode::Read)
            .and_then(|file| file.len())
    }
}
