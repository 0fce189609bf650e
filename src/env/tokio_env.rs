//! The production [`Env`]: tokio sockets, `std::fs` files, the OS clock and
//! OS randomness. This file (with the rest of `src/env/`) is the only place
//! allowed to touch them (clippy.toml).

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;
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
        disk: Arc::new(RealDisk),
        net: Arc::new(TcpTransport),
        clock: Arc::new(SystemClock),
        rng: Arc::new(OsRandom),
        executor: Arc::new(TokioBlockingPool),
    }
}

/// Files and directories through `std::fs`. Files are created 0600 and
/// directories 0700: a data dir holds keys and sealed chunks, nobody else's.
#[derive(Debug)]
struct RealDisk;

#[derive(Debug)]
struct RealFile(fs::File);

impl DiskFile for RealFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.0.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
        self.0.write_at(buf, offset)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
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
        };
        Ok(Box::new(RealFile(options.open(path)?)))
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
