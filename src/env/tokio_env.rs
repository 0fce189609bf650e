//! The production [`Env`]: tokio sockets, `std::fs` files, the OS clock and
//! OS randomness. This file (with the rest of `src/env/`) is the only place
//! allowed to touch them (clippy.toml).

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::net::{TcpListener, TcpStream};

use super::{
    BoxFuture, BoxStream, Clock, DirEntry, Disk, DiskFile, Env, Executor, Listener, OpenMode,
    Random, Transport,
};

/// Build the production environment. Must be called inside a tokio runtime
/// (the executor hands jobs to its blocking pool).
pub fn tokio_env() -> Env {
    Env {
        disk: Arc::new(RealDisk::default()),
        net: Arc::new(TcpTransport),
        clock: Arc::new(SystemClock),
        rng: Arc::new(OsRandom),
        executor: Arc::new(TokioBlockingPool),
    }
}

/// Files and directories through `std::fs`. Files are created 0600 and
/// directories 0700: a data dir holds keys and sealed chunks, nobody
/// else's. (The one exception is a file made for the user,
/// [`OpenMode::CreateOutputUncached`].)
#[derive(Debug, Default)]
struct RealDisk {
    /// A file system refused `O_DIRECT` at an open: later uncached files
    /// are opened cached at once (a node writes blobs into one data dir,
    /// the CLI one output file).
    direct_refused: AtomicBool,
}

#[derive(Debug)]
struct RealFile {
    file: fs::File,
    /// Opened `O_DIRECT` (an uncached mode of [`OpenMode`]).
    opened_direct: bool,
}

impl RealFile {
    fn new(file: fs::File, opened_direct: bool) -> Self {
        Self {
            file,
            opened_direct,
        }
    }

    /// Turn the file's writes back to cached ones (idempotent: writes in
    /// flight on other threads may all come here).
    #[cfg(target_os = "linux")]
    fn stop_direct(&self) -> io::Result<()> {
        let flags = rustix::fs::fcntl_getfl(&self.file)?;
        if flags.contains(rustix::fs::OFlags::DIRECT) {
            rustix::fs::fcntl_setfl(&self.file, flags - rustix::fs::OFlags::DIRECT)?;
        }
        Ok(())
    }

    /// Elsewhere no file is opened direct.
    #[cfg(not(target_os = "linux"))]
    fn stop_direct(&self) -> io::Result<()> {
        Ok(())
    }
}

impl DiskFile for RealFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.file.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        match self.file.write_at(buf, offset) {
            // A device or file system whose O_DIRECT wants another
            // alignment (a logical block above 4 KiB), or a short write
            // that left an unaligned offset: this file goes on through the
            // page cache. (A write that fails with EINVAL for its own
            // reason fails again, cached, and that error is returned.)
            Err(error) if error.raw_os_error() == Some(libc::EINVAL) && self.opened_direct => {
                self.stop_direct()?;
                self.file.write_at(buf, offset)
            }
            written => written,
        }
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// `options`, opening `O_DIRECT`.
#[cfg(target_os = "linux")]
fn with_o_direct(mut options: fs::OpenOptions) -> fs::OpenOptions {
    options.custom_flags(libc::O_DIRECT);
    options
}

/// (Not reached: only Linux opens files direct.)
#[cfg(not(target_os = "linux"))]
fn with_o_direct(options: fs::OpenOptions) -> fs::OpenOptions {
    options
}

impl RealDisk {
    /// Create `path` (which must not exist) with permissions `mode` (less
    /// the umask) for an uncached [`OpenMode`]: `O_DIRECT` where the file
    /// system takes it, else cached.
    fn create_uncached(&self, path: &Path, mode: u32) -> io::Result<RealFile> {
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true).mode(mode);
        // O_DIRECT is Linux's (macOS has F_NOCACHE, not used here).
        if !cfg!(target_os = "linux") || self.direct_refused.load(Ordering::Relaxed) {
            return Ok(RealFile::new(options.open(path)?, false));
        }
        match with_o_direct(options.clone()).open(path) {
            Ok(file) => Ok(RealFile::new(file, true)),
            Err(error) if error.raw_os_error() == Some(libc::EINVAL) => {
                // The file system refuses O_DIRECT (tmpfs before Linux
                // 6.6), after creating the file: it is ours (create_new,
                // which fails on an existing file before this check), so
                // remove it and create it cached.
                self.direct_refused.store(true, Ordering::Relaxed);
                let _ = fs::remove_file(path);
                Ok(RealFile::new(options.open(path)?, false))
            }
            Err(error) => Err(error),
        }
    }
}

impl Disk for RealDisk {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn DiskFile>> {
        let mut options = fs::OpenOptions::new();
        match mode {
            OpenMode::Read => options.read(true),
            OpenMode::ReadWrite => options.read(true).write(true),
            OpenMode::CreateOrOpen => options.read(true).write(true).create(true).mode(0o600),
            OpenMode::CreateNew => options.read(true).write(true).create_new(true).mode(0o600),
            OpenMode::CreateNewUncached => return Ok(Box::new(self.create_uncached(path, 0o600)?)),
            OpenMode::CreateOutputUncached => {
                return Ok(Box::new(self.create_uncached(path, 0o666)?));
            }
        };
        Ok(Box::new(RealFile::new(options.open(path)?, false)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        fs::File::open(path)?.sync_all()
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        let mut entries = Vec::new();
        for entry in fs::read_dir(path)? {
            let entry = entry?;
            // Names that are not UTF-8 were not written by dfs; skip them.
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
        path.try_exists()
    }

    fn space(&self, path: &Path) -> io::Result<crate::wire::DiskSpace> {
        let stat = rustix::fs::statvfs(path)?;
        Ok(crate::wire::DiskSpace {
            total_bytes: stat.f_blocks.saturating_mul(stat.f_frsize),
            free_bytes: stat.f_bavail.saturating_mul(stat.f_frsize),
        })
    }

    fn lock_exclusive(&self, path: &Path) -> io::Result<Box<dyn std::any::Any + Send + Sync>> {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)?;
        file.try_lock().map_err(|e| match e {
            fs::TryLockError::WouldBlock => {
                io::Error::new(io::ErrorKind::WouldBlock, "locked by another process")
            }
            fs::TryLockError::Error(e) => e,
        })?;
        Ok(Box::new(file))
    }
}

struct TcpTransport;

struct TcpAcceptor(TcpListener);

impl Listener for TcpAcceptor {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxStream, String)>> {
        Box::pin(async move {
            let (stream, peer) = self.0.accept().await?;
            stream.set_nodelay(true)?;
            Ok((Box::new(stream) as BoxStream, peer.to_string()))
        })
    }
    fn local_addr(&self) -> io::Result<String> {
        Ok(self.0.local_addr()?.to_string())
    }
}

impl Transport for TcpTransport {
    fn bind<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, io::Result<Box<dyn Listener>>> {
        Box::pin(async move {
            Ok(Box::new(TcpAcceptor(TcpListener::bind(addr).await?)) as Box<dyn Listener>)
        })
    }
    fn connect<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, io::Result<BoxStream>> {
        Box::pin(async move {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as BoxStream)
        })
    }
}

struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one production wall clock
    fn unix_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    fn monotonic_ms(&self) -> u64 {
        self.monotonic_micros() / 1000
    }

    #[allow(clippy::disallowed_methods)] // the one production monotonic clock
    fn monotonic_micros(&self) -> u64 {
        static ORIGIN: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
        let origin = *ORIGIN.get_or_init(tokio::time::Instant::now);
        origin.elapsed().as_micros() as u64
    }
}

struct OsRandom;

impl Random for OsRandom {
    fn fill(&self, buf: &mut [u8]) {
        // Without OS randomness no key or nonce would be safe: stop.
        getrandom::fill(buf).expect("the operating system's random source failed");
    }
}

struct TokioBlockingPool;

impl Executor for TokioBlockingPool {
    #[allow(clippy::disallowed_methods)] // the one production blocking pool
    fn run_blocking(&self, job: Box<dyn FnOnce() + Send>) {
        tokio::task::spawn_blocking(job);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::{UNCACHED_BLOCK_BYTES, write_uncached};

    /// Every length, block-aligned or not, shorter or longer than one
    /// bounce buffer, reads back exactly (no padding left behind).
    #[test]
    fn uncached_writes_read_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let disk = RealDisk::default();
        for (i, len) in [
            0,
            1,
            UNCACHED_BLOCK_BYTES - 1,
            UNCACHED_BLOCK_BYTES,
            UNCACHED_BLOCK_BYTES + 1,
            1 << 20,
            (1 << 20) + 4099,
            (3 << 20) + 5,
        ]
        .into_iter()
        .enumerate()
        {
            let bytes: Vec<u8> = (0..len).map(|b| (b * 31 + i) as u8).collect();
            let path = dir.path().join(format!("blob-{i}"));
            let file = disk.open(&path, OpenMode::CreateNewUncached).unwrap();
            write_uncached(file.as_ref(), &bytes).unwrap();
            file.sync_data().unwrap();
            drop(file);
            assert_eq!(fs::read(&path).unwrap(), bytes, "{len} bytes");
            assert!(
                disk.open(&path, OpenMode::CreateNewUncached).is_err(),
                "a new file only"
            );
        }
    }

    /// A write O_DIRECT refuses (here: unaligned memory, length and
    /// offset) goes through the page cache instead, and the file stays
    /// whole.
    #[test]
    fn a_write_o_direct_refuses_goes_through_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let file = RealDisk::default()
            .open(&path, OpenMode::CreateNewUncached)
            .unwrap();
        crate::env::write_all_at(file.as_ref(), b"not aligned", 3).unwrap();
        file.sync_data().unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"\0\0\0not aligned");
    }

    /// Writes in flight at once on one O_DIRECT file that O_DIRECT all
    /// refuse: every one of them goes through the cache, not only the
    /// first to find out.
    #[test]
    #[allow(clippy::disallowed_methods, reason = "real threads, real races")]
    fn concurrent_refused_writes_all_go_through_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..20 {
            let path = dir.path().join(format!("blob-{round}"));
            let file: Arc<dyn DiskFile> = Arc::from(
                RealDisk::default()
                    .open(&path, OpenMode::CreateNewUncached)
                    .unwrap(),
            );
            let writers: Vec<_> = (0..4u8)
                .map(|i| {
                    let file = file.clone();
                    std::thread::spawn(move || {
                        crate::env::write_all_at(file.as_ref(), &[b'a' + i; 3], 1 + 3 * i as u64)
                    })
                })
                .collect();
            for writer in writers {
                writer.join().unwrap().unwrap();
            }
            assert_eq!(fs::read(&path).unwrap(), b"\0aaabbbcccddd");
        }
    }
}
