//! `get -o`'s output file, written around the page cache as it arrives.
//!
//! The output is synced before `get` says it is done, so caching its bytes
//! on the way only costs a copy into pages the kernel must allocate and
//! write back (and, on a VM whose host takes free guest memory back, a
//! host fault per new page: half the CLI's CPU in a 1 GiB get on this
//! project's VMs). Pieces of [`OUTPUT_WRITE_BYTES`] go to the disk through
//! [`write_uncached_at`] on the blocking pool, up to
//! [`OUTPUT_WRITES_IN_FLIGHT`] at once while the next fills (an uncached
//! write returns only once the device has taken the bytes: with one at a
//! time the download waited on the disk), so the disk writes the file as
//! it arrives and the final sync (which makes it durable) has little left
//! to do. On a file system without `O_DIRECT` the same calls go through
//! the cache, and the final sync writes the file.
//!
//! The first failed write fails every later call, `finish` included: a
//! file with a hole must never be synced and named.

use std::collections::VecDeque;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use dfs::env::{BoxFuture, DiskFile, Env, OpenMode, write_uncached_at};
use tokio::io::AsyncWrite;

/// Bytes of output one write takes (a multiple of the block size).
const OUTPUT_WRITE_BYTES: usize = 1 << 20;

/// Writes in flight at most (the output's memory: this many buffers and
/// the one filling).
const OUTPUT_WRITES_IN_FLIGHT: usize = 4;

pub(super) struct UncachedOutput {
    env: Env,
    file: Arc<dyn DiskFile>,
    /// Bytes not yet handed to a write (fewer than `OUTPUT_WRITE_BYTES`,
    /// or exactly that many waiting for a write to finish).
    buffer: Vec<u8>,
    /// Finished writes' buffers, emptied, for the next.
    spare: Vec<Vec<u8>>,
    /// The writes in flight, oldest first; each gives its buffer back.
    writing: VecDeque<BoxFuture<'static, io::Result<Vec<u8>>>>,
    /// Bytes handed to writes: the file offset of `buffer`'s first byte.
    written: u64,
    /// The first write that failed (kind and message: `io::Error` is not
    /// `Clone`).
    failed: Option<(io::ErrorKind, String)>,
}

impl UncachedOutput {
    /// Create `path`, which must not exist.
    pub(super) async fn create(env: &Env, path: &Path) -> io::Result<Self> {
        let disk = env.disk.clone();
        let owned = path.to_path_buf();
        let file = env
            .blocking(move || disk.open(&owned, OpenMode::CreateOutputUncached))
            .await?;
        Ok(Self {
            env: env.clone(),
            file: Arc::from(file),
            buffer: Vec::with_capacity(OUTPUT_WRITE_BYTES),
            spare: Vec::new(),
            writing: VecDeque::new(),
            written: 0,
            failed: None,
        })
    }

    /// Wait until at most `in_flight` writes are in flight.
    fn poll_writes_below(
        &mut self,
        cx: &mut Context<'_>,
        in_flight: usize,
    ) -> Poll<io::Result<()>> {
        self.check()?;
        while self.writing.len() > in_flight {
            let oldest = self.writing.front_mut().expect("more than none");
            let outcome = ready!(oldest.as_mut().poll(cx));
            self.writing.pop_front();
            match outcome {
                Ok(buffer) => self.spare.push(buffer),
                Err(error) => {
                    self.failed = Some((error.kind(), error.to_string()));
                    return Poll::Ready(Err(error));
                }
            }
        }
        Poll::Ready(Ok(()))
    }

    /// The first failure again, if a write failed.
    fn check(&self) -> io::Result<()> {
        match &self.failed {
            Some((kind, message)) => Err(io::Error::new(*kind, message.clone())),
            None => Ok(()),
        }
    }

    /// Wait for every write in flight.
    fn poll_written(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_writes_below(cx, 0)
    }

    /// Hand the full buffer to a write (fewer than the most in flight).
    fn start_write(&mut self) {
        let next = self
            .spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(OUTPUT_WRITE_BYTES));
        let mut full = std::mem::replace(&mut self.buffer, next);
        let (file, offset) = (self.file.clone(), self.written);
        self.written += full.len() as u64;
        self.writing.push_back(Box::pin(self.env.blocking(move || {
            write_uncached_at(file.as_ref(), &full, offset)?;
            full.clear();
            Ok(full)
        })));
    }

    /// Write what is left, cut the last block's padding off, and sync:
    /// the file's bytes are durable when this returns `Ok`.
    pub(super) async fn finish(mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_written(cx)).await?;
        let (file, offset, tail) = (self.file.clone(), self.written, self.buffer);
        self.env
            .blocking(move || {
                write_uncached_at(file.as_ref(), &tail, offset)?;
                let len = offset + tail.len() as u64;
                if !tail.len().is_multiple_of(dfs::env::UNCACHED_BLOCK_BYTES) {
                    file.set_len(len)?;
                }
                file.sync_data()
            })
            .await
    }
}

impl AsyncWrite for UncachedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check()?;
        if this.buffer.len() == OUTPUT_WRITE_BYTES {
            ready!(this.poll_writes_below(cx, OUTPUT_WRITES_IN_FLIGHT - 1))?;
            this.start_write();
        }
        let taken = bytes.len().min(OUTPUT_WRITE_BYTES - this.buffer.len());
        this.buffer.extend_from_slice(&bytes[..taken]);
        Poll::Ready(Ok(taken))
    }

    /// Waits for the writes in flight; the last, partial piece is written
    /// by [`UncachedOutput::finish`] (a block written padded now would
    /// have to be written again).
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_written(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_written(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dfs::env::{DirEntry, Disk};
    use tokio::io::AsyncWriteExt;

    /// The real disk, whose files fail the write of one piece: the one
    /// at `fail_from` (the writes before and after it succeed, so only
    /// the remembered failure can stop `finish`).
    struct FailingWrites {
        disk: Arc<dyn Disk>,
        fail_from: u64,
    }

    #[derive(Debug)]
    struct FailingFile {
        file: Box<dyn DiskFile>,
        fail_from: u64,
    }

    impl DiskFile for FailingFile {
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            self.file.read_at(buf, offset)
        }
        fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<usize> {
            if (self.fail_from..self.fail_from + OUTPUT_WRITE_BYTES as u64).contains(&offset) {
                return Err(io::Error::other("injected write failure"));
            }
            self.file.write_at(buf, offset)
        }
        fn len(&self) -> io::Result<u64> {
            self.file.len()
        }
        fn set_len(&self, len: u64) -> io::Result<()> {
            self.file.set_len(len)
        }
        fn sync_data(&self) -> io::Result<()> {
            self.file.sync_data()
        }
    }

    impl Disk for FailingWrites {
        fn create_dir_all(&self, path: &Path) -> io::Result<()> {
            self.disk.create_dir_all(path)
        }
        fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn DiskFile>> {
            Ok(Box::new(FailingFile {
                file: self.disk.open(path, mode)?,
                fail_from: self.fail_from,
            }))
        }
        fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
            self.disk.rename(from, to)
        }
        fn sync_dir(&self, path: &Path) -> io::Result<()> {
            self.disk.sync_dir(path)
        }
        fn remove_file(&self, path: &Path) -> io::Result<()> {
            self.disk.remove_file(path)
        }
        fn list_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
            self.disk.list_dir(path)
        }
        fn exists(&self, path: &Path) -> io::Result<bool> {
            self.disk.exists(path)
        }
        fn lock_exclusive(&self, path: &Path) -> io::Result<Box<dyn std::any::Any + Send + Sync>> {
            self.disk.lock_exclusive(path)
        }
    }

    /// A write that fails fails the output for good: whatever is written
    /// or flushed after, `finish` reports the failure rather than syncing
    /// a file with a hole.
    #[tokio::test]
    async fn a_failed_write_fails_every_later_call_and_finish() {
        let mut env = dfs::env::tokio_env();
        env.disk = Arc::new(FailingWrites {
            disk: env.disk.clone(),
            fail_from: OUTPUT_WRITE_BYTES as u64,
        });
        let dir = tempfile::tempdir().unwrap();
        let mut output = UncachedOutput::create(&env, &dir.path().join("out"))
            .await
            .unwrap();
        let piece = vec![7u8; OUTPUT_WRITE_BYTES];
        let mut failed = false;
        for _ in 0..(OUTPUT_WRITES_IN_FLIGHT + 3) {
            if output.write_all(&piece).await.is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed, "the second piece's write failed");
        assert!(output.write_all(&piece).await.is_err());
        assert!(output.flush().await.is_err());
        assert!(output.finish().await.is_err());
    }

    /// The output is the user's file: its mode is what any program's
    /// output gets (0666 less the umask), not the node's private 0600.
    #[tokio::test]
    async fn the_output_gets_the_mode_of_any_new_file() {
        use std::os::unix::fs::PermissionsExt;
        let env = dfs::env::tokio_env();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        UncachedOutput::create(&env, &path)
            .await
            .unwrap()
            .finish()
            .await
            .unwrap();
        let reference = dir.path().join("reference");
        std::fs::File::create(&reference).unwrap();
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), mode(&reference));
    }

    /// Whatever the pieces it is written in, the file holds exactly the
    /// bytes written (no padding left), at lengths on and off a block.
    #[tokio::test]
    async fn the_output_holds_exactly_what_was_written() {
        let env = dfs::env::tokio_env();
        let dir = tempfile::tempdir().unwrap();
        for (i, len) in [
            0,
            1,
            4096,
            4097,
            OUTPUT_WRITE_BYTES,
            3 * OUTPUT_WRITE_BYTES + 123,
        ]
        .into_iter()
        .enumerate()
        {
            let bytes: Vec<u8> = (0..len).map(|b| (b * 7 + i) as u8).collect();
            let path = dir.path().join(format!("out-{i}"));
            let mut output = UncachedOutput::create(&env, &path).await.unwrap();
            for piece in bytes.chunks(65_537) {
                output.write_all(piece).await.unwrap();
            }
            output.flush().await.unwrap();
            output.finish().await.unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), bytes, "{len} bytes");
        }
    }
}
