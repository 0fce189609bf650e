//! The simulated disk: turmoil's fs shim with injected faults and the
//! crash fence (see the module above).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dfs::env::{DirEntry, Disk, DiskFile, OpenMode};
use rand_chacha::ChaCha8Rng;
use rand_core::RngCore;
use turmoil::fs::shim::std::fs as simfs;

/// What happens to one node's physical disk, kept across its incarnations
/// (the nemesis orders it; the disk applies it): persistent bit rot,
/// running full, and slowness.
#[derive(Debug, Default)]
pub struct DiskState {
    /// Chunk files still to rot: the next ones read while faults are on.
    pub pending: AtomicU64,
    /// Files whose bytes are bad: every read of them returns a flipped
    /// byte. A file renamed away takes its rot along (quarantine); one
    /// renamed into the path is new and sound.
    rotten: Mutex<BTreeSet<PathBuf>>,
    /// Files that rotted so far.
    pub rotted: AtomicU64,
    /// The disk is full: writes that would take space fail with ENOSPC
    /// (while faults are on).
    pub full: AtomicBool,
    /// Writes refused for want of space so far.
    pub refused_full: AtomicU64,
    /// The disk is slow: every blocking job (each disk operation of the
    /// node) waits this long first (0: not slow).
    pub slow_ms: AtomicU64,
    /// Jobs delayed so far.
    pub slow_jobs: AtomicU64,
}

/// Fault switches and counters shared by the harness and one node's disk.
#[derive(Debug, Default)]
pub struct DiskFaults {
    /// Set just before a crash: every later call fails.
    pub fenced: AtomicBool,
    /// Faults are injected only while this is set.
    pub enabled: AtomicBool,
    /// Probability (in millionths) of EIO on a read, write or sync.
    pub io_error_ppm: AtomicU64,
    /// Probability (in millionths) of a corrupted chunk read.
    pub corruption_ppm: AtomicU64,
    pub injected_io_errors: AtomicU64,
    pub injected_corruptions: AtomicU64,
    /// This disk's bit rot (shared with its other incarnations).
    pub rot: Arc<DiskState>,
}

impl DiskFaults {
    pub fn new(io_error_ppm: u64, corruption_ppm: u64) -> Arc<Self> {
        Self::with_rot(io_error_ppm, corruption_ppm, Arc::default())
    }

    /// [`DiskFaults::new`] on a disk whose bit rot is `rot`.
    pub fn with_rot(io_error_ppm: u64, corruption_ppm: u64, rot: Arc<DiskState>) -> Arc<Self> {
        let faults = Self {
            rot,
            ..Self::default()
        };
        faults.io_error_ppm.store(io_error_ppm, Ordering::Relaxed);
        faults
            .corruption_ppm
            .store(corruption_ppm, Ordering::Relaxed);
        faults.enabled.store(true, Ordering::Relaxed);
        Arc::new(faults)
    }
}

#[derive(Clone)]
pub(super) struct SimDisk {
    faults: Arc<DiskFaults>,
    rng: Arc<Mutex<ChaCha8Rng>>,
    /// Whether the last read of a path was corrupted: a transient fault is
    /// never injected twice in a row on one file (that would be bit rot,
    /// which on a single node is data loss, not a transient fault).
    last_read_corrupt: Arc<Mutex<BTreeMap<PathBuf, bool>>>,
}

impl SimDisk {
    pub(super) fn new(faults: Arc<DiskFaults>, rng: ChaCha8Rng) -> Self {
        SimDisk {
            faults,
            rng: Arc::new(Mutex::new(rng)),
            last_read_corrupt: Arc::default(),
        }
    }
}

fn fenced() -> io::Error {
    io::Error::other("simulated crash: the process is gone")
}

impl SimDisk {
    fn check_fence(&self) -> io::Result<()> {
        if self.faults.fenced.load(Ordering::SeqCst) {
            Err(fenced())
        } else {
            Ok(())
        }
    }

    fn roll(&self, ppm: &AtomicU64) -> bool {
        if !self.faults.enabled.load(Ordering::Relaxed) {
            return false;
        }
        let ppm = ppm.load(Ordering::Relaxed);
        ppm > 0 && self.rng.lock().unwrap().next_u64() % 1_000_000 < ppm
    }

    /// Whether the file at `path` (a chunk being read) is rotten, rotting
    /// it now if rot is pending and faults are on.
    fn rots(&self, path: &Path) -> bool {
        let rot = &self.faults.rot;
        let mut rotten = rot.rotten.lock().unwrap();
        if rotten.contains(path) {
            return true;
        }
        let due = self.faults.enabled.load(Ordering::Relaxed)
            && rot
                .pending
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| p.checked_sub(1))
                .is_ok();
        if due {
            rotten.insert(path.to_path_buf());
            rot.rotted.fetch_add(1, Ordering::Relaxed);
        }
        due
    }

    /// ENOSPC, when the disk is full and faults are on.
    fn check_space(&self) -> io::Result<()> {
        if self.faults.enabled.load(Ordering::Relaxed)
            && self.faults.rot.full.load(Ordering::Relaxed)
        {
            self.faults.rot.refused_full.fetch_add(1, Ordering::Relaxed);
            return Err(io::Error::from_raw_os_error(28)); // ENOSPC
        }
        Ok(())
    }

    fn maybe_io_error(&self) -> io::Result<()> {
        if self.roll(&self.faults.io_error_ppm) {
            self.faults
                .injected_io_errors
                .fetch_add(1, Ordering::Relaxed);
            return Err(io::Error::other("injected EIO"));
        }
        Ok(())
    }
}

#[derive(Debug)]
struct SimFile {
    file: simfs::File,
    path: PathBuf,
    disk: DiskHandle,
}

/// The parts of SimDisk a file needs (SimDisk itself is not Debug).
#[derive(Clone)]
struct DiskHandle(SimDisk);

impl std::fmt::Debug for DiskHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SimDisk")
    }
}

impl SimFile {
    fn check(&self) -> io::Result<()> {
        self.disk.0.check_fence()
    }
}

impl DiskFile for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.check()?;
        self.disk.0.maybe_io_error()?;
        let n = self.file.read_at(buf, offset)?;
        let is_chunk = self.path.components().any(|c| c.as_os_str() == "chunks");
        if is_chunk && n > 0 && self.disk.0.rots(&self.path) {
            // Bad bytes stay bad: the same byte of every read.
            buf[n / 2] ^= 0x20;
            return Ok(n);
        }
        if is_chunk && n > 0 {
            let mut last = self.disk.0.last_read_corrupt.lock().unwrap();
            let was_corrupt = last.get(&self.path).copied().unwrap_or(false);
            let corrupt = !was_corrupt && self.disk.0.roll(&self.disk.0.faults.corruption_ppm);
            if corrupt {
                let at = (self.disk.0.rng.lock().unwrap().next_u64() % n as u64) as usize;
                buf[at] ^= 0x10;
                self.disk
                    .0
                    .faults
                    .injected_corruptions
                    .fetch_add(1, Ordering::Relaxed);
            }
            last.insert(self.path.clone(), corrupt);
        }
        Ok(n)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        self.check()?;
        self.disk.0.check_space()?;
        self.disk.0.maybe_io_error()?;
        self.file.write_at(buf, offset)
    }
    fn len(&self) -> io::Result<u64> {
        self.check()?;
        Ok(self.file.metadata()?.len())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check()?;
        if len > self.file.metadata()?.len() {
            self.disk.0.check_space()?;
        }
        self.file.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.check()?;
        self.disk.0.maybe_io_error()?;
        self.file.sync_data()
    }
}

impl Disk for SimDisk {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.check_fence()?;
        if !simfs::exists(path) {
            self.check_space()?;
        }
        simfs::create_dir_all(path)
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn DiskFile>> {
        self.check_fence()?;
        let mut options = simfs::OpenOptions::new();
        match mode {
            OpenMode::Read => options.read(true),
            OpenMode::ReadWrite => options.read(true).write(true),
            OpenMode::CreateOrOpen => options.read(true).write(true).create(true),
            // The simulated disk has no page cache to bypass.
            OpenMode::CreateNew | OpenMode::CreateNewUncached | OpenMode::CreateOutputUncached => {
                options.read(true).write(true).create_new(true)
            }
        };
        let file = options.open(path)?;
        Ok(Box::new(SimFile {
            file,
            path: path.to_path_buf(),
            disk: DiskHandle(self.clone()),
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.check_fence()?;
        simfs::rename(from, to)?;
        let mut rotten = self.faults.rot.rotten.lock().unwrap();
        let moved = rotten.remove(from);
        rotten.remove(to);
        if moved {
            rotten.insert(to.to_path_buf());
        }
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.check_fence()?;
        self.maybe_io_error()?;
        simfs::sync_dir(path)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.check_fence()?;
        simfs::remove_file(path)?;
        self.faults.rot.rotten.lock().unwrap().remove(path);
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        self.check_fence()?;
        let mut entries = Vec::new();
        for entry in simfs::read_dir(path)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            entries.push(DirEntry {
                name,
                is_dir: entry.file_type()?.is_dir(),
            });
        }
        entries.sort();
        Ok(entries)
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        self.check_fence()?;
        Ok(simfs::exists(path))
    }

    fn lock_exclusive(&self, _path: &Path) -> io::Result<Box<dyn std::any::Any + Send + Sync>> {
        // One process per simulated host: nothing to exclude.
        self.check_fence()?;
        Ok(Box::new(()))
    }
}
