//! The I/O seam (DESIGN §3): every byte of I/O, every clock reading and every
//! random byte the node uses comes through [`Env`].
//!
//! Production uses [`TokioEnv`](tokio_env::tokio_env): real sockets, real files,
//! the OS clock and OS randomness. The `sim` crate builds an `Env` over turmoil,
//! so the same node code runs in a deterministic simulation where a failure
//! replays from its seed.
//!
//! The disk API is synchronous, like `std::fs` (turmoil's shim and redb's
//! `StorageBackend` are synchronous too). Async node code runs disk work
//! through [`Env::blocking`], which the Env maps to tokio's blocking pool in
//! production and runs inline in the simulation.

pub mod timed_syncs;
pub mod tokio_env;

use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

pub use tokio_env::tokio_env;

/// A boxed future, for trait methods that must be object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How [`Disk::open`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Read only; the file must exist.
    Read,
    /// Read and write; the file must exist.
    ReadWrite,
    /// Read and write; the file is created if absent (mode 0600).
    CreateOrOpen,
    /// Write a new file; fails if it exists (mode 0600).
    CreateNew,
    /// Write a new file whose bytes need not stay in memory (a blob:
    /// written once, synced, rarely read again soon); fails if it exists
    /// (mode 0600). Where the file system allows, its writes bypass the
    /// page cache (Linux `O_DIRECT`), so write it with [`write_uncached`]
    /// or [`write_uncached_at`] only (whole aligned blocks), and do not
    /// read through this handle.
    CreateNewUncached,
    /// [`OpenMode::CreateNewUncached`] for a file made for the user (a
    /// `get -o` output): mode 0666 less the umask, as any program's output.
    CreateOutputUncached,
}

/// An open file. Positional I/O only: no cursor, so a handle can be shared.
#[allow(clippy::len_without_is_empty)] // a file length, not a collection
pub trait DiskFile: Send + Sync + fmt::Debug {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize>;
    fn len(&self) -> io::Result<u64>;
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Make the file's data durable (fdatasync).
    fn sync_data(&self) -> io::Result<()>;
}

/// One entry of [`Disk::list_dir`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DirEntry {
    pub name: String,
    pub is_dir: bool,
}

/// A file system, std::fs-like and synchronous.
pub trait Disk: Send + Sync + 'static {
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn DiskFile>>;
    /// Atomically replace `to` with `from`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Make the directory's entries durable (fsync of the directory).
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Entries of a directory, sorted by name (so callers never depend on the
    /// order a file system happens to return).
    fn list_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>>;
    fn exists(&self, path: &Path) -> io::Result<bool>;
    /// Take an exclusive lock on `path` (created if absent), held until the
    /// returned guard drops; fails at once if another process holds it.
    fn lock_exclusive(&self, path: &Path) -> io::Result<Box<dyn std::any::Any + Send + Sync>>;
    /// The size of the file system holding `path` and its bytes free for
    /// an unprivileged writer (statvfs). A disk that cannot tell (the
    /// simulation's) says `Unsupported`.
    fn space(&self, path: &Path) -> io::Result<crate::wire::DiskSpace> {
        let _ = path;
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
}

/// A connected, ordered byte stream (TCP in production, turmoil TCP in the sim).
pub trait ByteStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> ByteStream for T {}

/// An owned, type-erased byte stream.
pub type BoxStream = Box<dyn ByteStream>;

/// A bound listening socket.
pub trait Listener: Send {
    /// Wait for the next connection; returns the stream and the peer address.
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxStream, String)>>;
    fn local_addr(&self) -> io::Result<String>;
}

/// The network: listen and dial by `host:port`.
pub trait Transport: Send + Sync + 'static {
    fn bind<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, io::Result<Box<dyn Listener>>>;
    fn connect<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, io::Result<BoxStream>>;
}

/// Time. (Timers use `tokio::time`, which turmoil drives in the
/// simulation.)
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch: wall time, for version ids (the
    /// hybrid logical clock). It may jump either way (an operator or NTP
    /// stepping it); the simulation makes it.
    fn unix_ms(&self) -> u64;
    /// Milliseconds since an arbitrary origin on a clock that never jumps,
    /// for measuring periods (timeouts, grace periods, backoff). Comparable
    /// only within one process.
    fn monotonic_ms(&self) -> u64;
    /// [`monotonic_ms`](Self::monotonic_ms) in microseconds, for timing
    /// requests (a clock without them counts whole milliseconds).
    fn monotonic_micros(&self) -> u64 {
        self.monotonic_ms() * 1000
    }
}

/// Every random byte the node uses: keys, nonces, temp names, jitter.
pub trait Random: Send + Sync + 'static {
    fn fill(&self, buf: &mut [u8]);
}

/// Runs synchronous (disk or CPU-heavy) jobs off the async threads.
pub trait Executor: Send + Sync + 'static {
    fn run_blocking(&self, job: Box<dyn FnOnce() + Send>);
}

/// The bundle of I/O and nondeterminism a node runs on. Cheap to clone.
#[derive(Clone)]
pub struct Env {
    pub disk: Arc<dyn Disk>,
    pub net: Arc<dyn Transport>,
    pub clock: Arc<dyn Clock>,
    pub rng: Arc<dyn Random>,
    pub executor: Arc<dyn Executor>,
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Env")
    }
}

impl Env {
    /// Submit `job` now and return a future of its result. The job starts
    /// before the future is first polled, so several jobs can run at once.
    ///
    /// A panic inside the job is a bug; it resurfaces here as a panic.
    pub fn blocking<T, F>(&self, job: F) -> impl Future<Output = T> + Send + use<T, F>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (result_tx, result_rx) = tokio::sync::oneshot::channel();
        self.executor.run_blocking(Box::new(move || {
            // The receiver may be gone if the caller stopped waiting; the
            // job's effects stand either way.
            let _ = result_tx.send(job());
        }));
        async move {
            match result_rx.await {
                Ok(value) => value,
                Err(_) => panic!("a blocking job panicked or was dropped by its executor"),
            }
        }
    }

    pub fn random_u64(&self) -> u64 {
        let mut bytes = [0u8; 8];
        self.rng.fill(&mut bytes);
        u64::from_le_bytes(bytes)
    }

    pub fn random_array<const N: usize>(&self) -> [u8; N] {
        let mut bytes = [0u8; N];
        self.rng.fill(&mut bytes);
        bytes
    }
}

/// Read exactly `buf.len()` bytes at `offset`, or fail with `UnexpectedEof`.
pub fn read_exact_at(file: &dyn DiskFile, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match file.read_at(buf, offset)? {
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file is shorter than expected",
                ));
            }
            n => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

/// Write all of `buf` at `offset`.
pub fn write_all_at(file: &dyn DiskFile, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match file.write_at(buf, offset)? {
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "disk accepted no bytes",
                ));
            }
            n => {
                buf = &buf[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

/// The unit [`write_uncached`] writes in, and aligns its memory and file
/// offsets to, as `O_DIRECT` demands: a multiple of the usual logical
/// block sizes (512 B, 4 KiB). A device with larger blocks refuses the
/// writes, and they go through the page cache instead.
pub const UNCACHED_BLOCK_BYTES: usize = 4096;

/// Bytes one write of [`write_uncached`] takes at most (its bounce
/// buffer's size): small, since every write in flight holds one, and
/// large enough that a 1 MiB chunk costs four system calls.
const UNCACHED_WRITE_BYTES: usize = 256 << 10;

/// Bounce buffers [`write_uncached`] keeps for the next writes (1 MiB).
const BOUNCE_BUFFERS_KEPT: usize = 4;

/// Write `bytes` as the whole content of `file`, a new file opened with
/// [`OpenMode::CreateNewUncached`] (or [`OpenMode::CreateOutputUncached`]):
/// copied through an aligned buffer, in whole blocks of
/// [`UNCACHED_BLOCK_BYTES`], the last one padded with zeros and the file
/// then cut back to `bytes.len()`. Not durable until the caller's
/// `sync_data` (which makes the length durable too).
///
/// Why bypass the page cache: a blob is written once and synced at once,
/// and read back rarely soon, so caching it costs a copy into pages the
/// kernel must allocate, track and write back, for nothing; on a VM whose
/// host reclaims free guest memory, each new page-cache page costs a
/// fault in the host too (`dd` wrote 1 GiB buffered in 2.5 s of CPU on
/// this project's 2-core VM, direct in 0.13 s of CPU and 0.7 s). On a
/// file system without `O_DIRECT` the same calls write through the cache,
/// correctly.
pub fn write_uncached(file: &dyn DiskFile, bytes: &[u8]) -> io::Result<()> {
    write_uncached_at(file, bytes, 0)?;
    if !bytes.len().is_multiple_of(UNCACHED_BLOCK_BYTES) {
        file.set_len(bytes.len() as u64)?;
    }
    Ok(())
}

/// Write `bytes` at `offset` (a multiple of [`UNCACHED_BLOCK_BYTES`]) of
/// a file opened with an uncached [`OpenMode`], the way
/// [`write_uncached`] does, for a file written in pieces: every piece but
/// the last must be whole blocks; the last one's padding is for the
/// caller to cut off (`set_len`) once the file is complete.
pub fn write_uncached_at(file: &dyn DiskFile, bytes: &[u8], offset: u64) -> io::Result<()> {
    debug_assert!(offset.is_multiple_of(UNCACHED_BLOCK_BYTES as u64));
    let mut bounce = BounceBuffer::take();
    let mut done = 0;
    while done < bytes.len() {
        let piece = &bytes[done..bytes.len().min(done + UNCACHED_WRITE_BYTES)];
        let block = bounce.aligned(piece.len().next_multiple_of(UNCACHED_BLOCK_BYTES));
        let (data, padding) = block.split_at_mut(piece.len());
        data.copy_from_slice(piece);
        padding.fill(0);
        write_all_at(file, block, offset + done as u64)?;
        done += piece.len();
    }
    Ok(())
}

/// Aligned memory for [`write_uncached`], taken from and given back to a
/// small pool: a fresh allocation is fresh memory for the OS to fault in,
/// the very cost the uncached write avoids.
struct BounceBuffer(Vec<u8>);

static BOUNCE_BUFFERS: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());

impl BounceBuffer {
    fn take() -> Self {
        let kept = BOUNCE_BUFFERS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop();
        Self(kept.unwrap_or_else(|| vec![0; UNCACHED_WRITE_BYTES + UNCACHED_BLOCK_BYTES]))
    }

    /// `len` (at most `UNCACHED_WRITE_BYTES`) bytes at an aligned address.
    fn aligned(&mut self, len: usize) -> &mut [u8] {
        let address = self.0.as_ptr() as usize;
        let start = address.next_multiple_of(UNCACHED_BLOCK_BYTES) - address;
        &mut self.0[start..start + len]
    }
}

impl Drop for BounceBuffer {
    fn drop(&mut self) {
        let mut kept = BOUNCE_BUFFERS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if kept.len() < BOUNCE_BUFFERS_KEPT {
            kept.push(std::mem::take(&mut self.0));
        }
    }
}

/// Read a whole (small) file, refusing files above `bytes_max`.
pub fn read_file(disk: &dyn Disk, path: &Path, bytes_max: u64) -> io::Result<Vec<u8>> {
    let file = disk.open(path, OpenMode::Read)?;
    let len = file.len()?;
    if len > bytes_max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is {len} bytes, more than the {bytes_max} allowed",
                path.display()
            ),
        ));
    }
    let mut buf = vec![0u8; len as usize];
    read_exact_at(file.as_ref(), &mut buf, 0)?;
    Ok(buf)
}

/// Create directory `path` and any missing ancestors so that they survive a
/// crash: each new directory's entry is synced in its parent. (A file or
/// directory whose entry was never synced can vanish at a crash even though
/// its contents were synced.)
///
/// `path`'s own entry is synced even when it already exists: an earlier
/// process may have created it and failed (or crashed) before its sync, and
/// finding it present says nothing about whether a crash keeps it.
pub fn create_dir_durably(disk: &dyn Disk, path: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut cursor = Some(path);
    while let Some(dir) = cursor {
        if dir.as_os_str().is_empty() || disk.exists(dir)? {
            break;
        }
        missing.push(dir);
        cursor = dir.parent();
    }
    if missing.is_empty() {
        return disk.sync_dir(parent_dir(path));
    }
    for dir in missing.into_iter().rev() {
        disk.create_dir_all(dir)?;
        disk.sync_dir(parent_dir(dir))?;
    }
    Ok(())
}

/// The directory holding `path`'s entry (`.` for a bare name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Create `path` durably with `contents`: write a temp file beside it, sync,
/// rename into place, sync the directory. Fails if `path` exists.
pub fn write_file_durably(env: &Env, path: &Path, contents: &[u8]) -> io::Result<()> {
    let disk = env.disk.as_ref();
    if disk.exists(path)? {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists", path.display()),
        ));
    }
    replace_file_durably(env, path, contents)
}

/// Write `path` durably with `contents`, replacing any previous file
/// atomically: a crash leaves either the old or the new contents.
pub fn replace_file_durably(env: &Env, path: &Path, contents: &[u8]) -> io::Result<()> {
    let disk = env.disk.as_ref();
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    create_dir_durably(disk, &dir)?;
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{file_name}.tmp-{:016x}", env.random_u64()));
    let result = (|| {
        let file = disk.open(&tmp, OpenMode::CreateNew)?;
        write_all_at(file.as_ref(), contents, 0)?;
        file.sync_data()?;
        drop(file);
        disk.rename(&tmp, path)?;
        disk.sync_dir(&dir)
    })();
    if result.is_err() {
        let _ = disk.remove_file(&tmp);
    }
    result
}
