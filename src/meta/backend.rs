//! redb's `StorageBackend` over the [`Disk`](crate::env::Disk) seam, so the
//! index is written through the same file API the simulation faults.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::StorageBackend;

use crate::env::{DiskFile, read_exact_at, write_all_at};

#[derive(Debug)]
pub struct DiskBackend {
    file: Box<dyn DiskFile>,
    /// Counts the syncs that failed: after one, what the OS had not yet
    /// written may be lost even though later syncs succeed (Linux may
    /// mark the pages it failed to write clean), so the caller decides
    /// what to trust.
    sync_failures: Arc<AtomicU64>,
}

impl DiskBackend {
    pub fn new(file: Box<dyn DiskFile>, sync_failures: Arc<AtomicU64>) -> Self {
        Self {
            file,
            sync_failures,
        }
    }
}

impl StorageBackend for DiskBackend {
    fn len(&self) -> Result<u64, io::Error> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        read_exact_at(self.file.as_ref(), out, offset)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.file.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        let synced = self.file.sync_data();
        if synced.is_err() {
            self.sync_failures.fetch_add(1, Ordering::Relaxed);
        }
        synced
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        write_all_at(self.file.as_ref(), data, offset)
    }
}
