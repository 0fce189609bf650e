//! The simulated network: `turmoil::net`, with connections that a crash
//! closes in a replayable order.
//!
//! Why the order needs care: `Sim::crash` drops the host's tokio runtime,
//! and tokio shuts its tasks down shard by shard, a task's shard being the
//! low bits of its id, which comes from a process-wide counter. So the order in which a
//! crashed node's tasks (and the connections they own) are dropped differs
//! between two runs of one seed in one process, and with whatever else the
//! process runs at the time. Every dropped connection sends a FIN, and
//! turmoil draws each message's latency from the seeded rng as it is sent:
//! a different order changes every later draw, and the run no longer
//! replays. So while a node is fenced (crashing), a connection that is
//! dropped is parked in its [`Sockets`] instead. The host's software future
//! is wrapped in [`CloseInOrder`]; turmoil drops that future after the
//! runtime (so after every task), and it then closes the parked connections
//! by the number they were given when they opened.

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use dfs::env::{BoxFuture, BoxStream, Listener, Transport};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use turmoil::net::{TcpListener, TcpStream};

use super::DiskFaults;

/// The connections of one node incarnation: numbered as they open, and
/// parked instead of closed while the incarnation is crashing.
pub(super) struct Sockets {
    /// The incarnation's crash switch (set just before `Sim::crash`).
    faults: Arc<DiskFaults>,
    opened: AtomicU64,
    parked: Mutex<BTreeMap<u64, TcpStream>>,
    /// Bytes its connections wrote and read (for the cost measurement).
    pub(super) traffic: Arc<WireTraffic>,
}

/// Bytes a node's connections wrote and read, Noise framing included.
#[derive(Debug, Default)]
pub struct WireTraffic {
    pub sent: AtomicU64,
    pub received: AtomicU64,
}

impl Sockets {
    pub(super) fn new(faults: Arc<DiskFaults>) -> Self {
        Sockets {
            faults,
            opened: AtomicU64::new(0),
            parked: Mutex::new(BTreeMap::new()),
            traffic: Arc::default(),
        }
    }

    fn track(self: &Arc<Self>, stream: TcpStream) -> BoxStream {
        Box::new(SimStream {
            number: self.opened.fetch_add(1, Ordering::Relaxed),
            stream: Some(stream),
            sockets: self.clone(),
        })
    }

    /// Close every parked connection, lowest number first.
    fn close_parked(&self) {
        let parked = std::mem::take(&mut *self.parked.lock().unwrap());
        for (_, stream) in parked {
            drop(stream);
        }
    }
}

/// A host's software future; dropping it (the host crashed, after all of
/// its tasks were dropped) closes the connections they left, in order.
pub struct CloseInOrder<F> {
    // Fields drop in declaration order: whatever the software itself still
    // holds is parked too before the parked connections are closed.
    software: Pin<Box<F>>,
    _close: CloseParked,
}

impl<F> CloseInOrder<F> {
    pub(super) fn new(software: F, sockets: Arc<Sockets>) -> Self {
        CloseInOrder {
            software: Box::pin(software),
            _close: CloseParked(sockets),
        }
    }
}

impl<F: Future> Future for CloseInOrder<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.software.as_mut().poll(cx)
    }
}

/// Closes the parked connections when dropped. That happens inside
/// `Sim::crash`, so turmoil still knows which host the FINs come from.
struct CloseParked(Arc<Sockets>);

impl Drop for CloseParked {
    fn drop(&mut self) {
        self.0.close_parked();
    }
}

/// A turmoil connection that knows its number and its node's [`Sockets`].
struct SimStream {
    number: u64,
    /// Always `Some` until dropped.
    stream: Option<TcpStream>,
    sockets: Arc<Sockets>,
}

impl SimStream {
    fn stream(&mut self) -> Pin<&mut TcpStream> {
        Pin::new(
            self.stream
                .as_mut()
                .expect("a connection is present until dropped"),
        )
    }
}

impl Drop for SimStream {
    fn drop(&mut self) {
        let Some(stream) = self.stream.take() else {
            return;
        };
        if self.sockets.faults.fenced.load(Ordering::SeqCst) {
            // Crashing: `CloseParked` closes it, in order, after every task.
            self.sockets
                .parked
                .lock()
                .unwrap()
                .insert(self.number, stream);
        }
        // Otherwise `stream` is dropped here and closes as usual.
    }
}

impl AsyncRead for SimStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = this.stream().poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before);
        this.sockets
            .traffic
            .received
            .fetch_add(n as u64, Ordering::Relaxed);
        read
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = this.stream().poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &written {
            this.sockets
                .traffic
                .sent
                .fetch_add(*n as u64, Ordering::Relaxed);
        }
        written
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().stream().poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().stream().poll_shutdown(cx)
    }
}

pub(super) struct SimNet {
    sockets: Arc<Sockets>,
}

impl SimNet {
    pub(super) fn new(sockets: Arc<Sockets>) -> Self {
        SimNet { sockets }
    }
}

struct SimListener {
    listener: TcpListener,
    sockets: Arc<Sockets>,
}

impl Listener for SimListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxStream, String)>> {
        Box::pin(async move {
            let (stream, peer) = self.listener.accept().await?;
            Ok((self.sockets.track(stream), peer.to_string()))
        })
    }
    fn local_addr(&self) -> io::Result<String> {
        Ok(self.listener.local_addr()?.to_string())
    }
}

impl Transport for SimNet {
    fn bind<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, io::Result<Box<dyn Listener>>> {
        Box::pin(async move {
            let listener = TcpListener::bind(addr).await?;
            Ok(Box::new(SimListener {
                listener,
                sockets: self.sockets.clone(),
            }) as Box<dyn Listener>)
        })
    }
    fn connect<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, io::Result<BoxStream>> {
        Box::pin(async move { Ok(self.sockets.track(TcpStream::connect(addr).await?)) })
    }
}
