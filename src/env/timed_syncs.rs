//! A [`Disk`] that times its syncs: every `fdatasync` of a file and
//! `fsync` of a directory is reported, with its duration on the Env's
//! monotonic clock, to a callback (the node's fsync latency histogram).
//! Durability is bounded by these calls, so their latency is the first
//! thing to look at when writes slow down.

use std::io;
use std::path::Path;
use std::sync::Arc;

use super::{Clock, DirEntry, Disk, DiskFile, OpenMode};

/// What was made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncKind {
    /// A file's data (`fdatasync`).
    File,
    /// A directory's entries (`fsync` of the directory).
    Dir,
}

/// Called after each sync with its kind and duration in microseconds
/// (failed syncs too: a slow failure is as telling as a slow success).
pub type SyncObserver = Arc<dyn Fn(SyncKind, u64) + Send + Sync>;

/// `inner`, with every sync reported to `observe`.
pub struct TimedSyncs {
    inner: Arc<dyn Disk>,
    clock: Arc<dyn Clock>,
    observe: SyncObserver,
}

impl TimedSyncs {
    pub fn new(inner: Arc<dyn Disk>, clock: Arc<dyn Clock>, observe: SyncObserver) -> Self {
        Self {
            inner,
            clock,
            observe,
        }
    }
}

fn timed<T>(
    clock: &dyn Clock,
    observe: &SyncObserver,
    kind: SyncKind,
    sync: impl FnOnce() -> io::Result<T>,
) -> io::Result<T> {
    let started = clock.monotonic_micros();
    let result = sync();
    observe(kind, clock.monotonic_micros().saturating_sub(started));
    result
}

struct TimedFile {
    inner: Box<dyn DiskFile>,
    clock: Arc<dyn Clock>,
    observe: SyncObserver,
}

impl std::fmt::Debug for TimedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl DiskFile for TimedFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        self.inner.write_at(buf, offset)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        timed(self.clock.as_ref(), &self.observe, SyncKind::File, || {
            self.inner.sync_data()
        })
    }
}

impl Disk for TimedSyncs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.create_dir_all(path)
    }
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn DiskFile>> {
        Ok(Box::new(TimedFile {
            inner: self.inner.open(path, mode)?,
            clock: self.clock.clone(),
            observe: self.observe.clone(),
        }))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        timed(self.clock.as_ref(), &self.observe, SyncKind::Dir, || {
            self.inner.sync_dir(path)
        })
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        self.inner.list_dir(path)
    }
    fn exists(&self, path: &Path) -> io::Result<bool> {
        self.inner.exists(path)
    }
    fn lock_exclusive(&self, path: &Path) -> io::Result<Box<dyn std::any::Any + Send + Sync>> {
        self.inner.lock_exclusive(path)
    }
    fn space(&self, path: &Path) -> io::Result<crate::wire::DiskSpace> {
        self.inner.space(path)
    }
}
