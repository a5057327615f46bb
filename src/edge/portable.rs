//! Connection readiness for smol::Server where there is no epoll: async-io's, as it is.

use std::io;
use std::net::TcpStream;
use std::sync::Arc;

/// Stands for the Linux server's epoll instance: async-io registers each socket itself.
pub(crate) struct Edge;

impl Edge {
    /// Nothing to make.
    ///
    /// # Errors
    /// None.
    pub(crate) fn new() -> io::Result<Arc<Self>> {
        Ok(Arc::new(Edge))
    }

    /// Nothing to dispatch: async-io wakes each connection itself.
    pub(crate) async fn dispatch(self: Arc<Self>) {}

    /// Registers a listening socket with async-io.
    ///
    /// # Errors
    /// When async-io cannot register it.
    pub(crate) fn listen(
        self: &Arc<Self>,
        listener: std::net::TcpListener,
    ) -> io::Result<Listening> {
        Ok(Listening(async_io::Async::new(listener)?))
    }

    /// Registers an accepted connection with async-io.
    ///
    /// # Errors
    /// When async-io cannot register it.
    pub(crate) fn register(self: &Arc<Self>, stream: TcpStream) -> io::Result<Tcp> {
        Ok(Tcp {
            io: async_io::Async::new(stream)?,
            drained: false,
            blocked: false,
        })
    }
}

/// A listening socket on smol's reactor (async-io).
pub(crate) struct Listening(async_io::Async<std::net::TcpListener>);

impl Listening {
    /// The next connection. Not async-io's `read_with`: its wait ends at its second poll
    /// whether or not the listener became readable (an `accept4` in vain each time).
    ///
    /// # Errors
    /// `accept4`'s (too many open files, say), and the reactor's.
    pub(crate) async fn accept(&self) -> io::Result<(TcpStream, std::net::SocketAddr)> {
        loop {
            match self.0.get_ref().accept() {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.0.readable().await?,
                accepted => return accepted,
            }
        }
    }
}

#[cfg(test)]
impl Tcp {
    /// The socket.
    pub(crate) fn get_ref(&self) -> &TcpStream {
        self.io.get_ref()
    }
}

/// A TCP connection as a session reads and writes it, on smol's reactor (async-io): a read
/// that filled less than its buffer took all the socket had, so the next read waits for
/// readiness first instead of trying the socket once more in vain (a `recvfrom` per message
/// saved, as tokio does for its streams).
pub(crate) struct Tcp {
    io: async_io::Async<TcpStream>,
    /// The last read came up short: wait for readiness before the next.
    drained: bool,
    /// The last write would have blocked: wait for writability before the next.
    blocked: bool,
}

impl futures_io::AsyncRead for Tcp {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<io::Result<usize>> {
        use std::io::Read;
        use std::task::{Poll, ready};
        loop {
            // Every wait goes through here, so that the wake-up it ends with is taken
            // (async-io remembers a delivered readiness until `poll_readable` sees it: a
            // read that skipped it would find it later, stale, and try the socket in vain).
            if self.drained {
                ready!(self.io.poll_readable(cx))?;
                self.drained = false;
            }
            match self.io.get_ref().read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.drained = true,
                Ok(n) => {
                    self.drained = n > 0 && n < buf.len();
                    return Poll::Ready(Ok(n));
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl Tcp {
    /// `write` on the socket, waiting for it to be writable while it would block; like
    /// reads, every wait goes through `poll_writable` first.
    fn poll_write_with(
        &mut self,
        cx: &mut std::task::Context<'_>,
        mut write: impl FnMut(&TcpStream) -> io::Result<usize>,
    ) -> std::task::Poll<io::Result<usize>> {
        use std::task::{Poll, ready};
        loop {
            if self.blocked {
                ready!(self.io.poll_writable(cx))?;
                self.blocked = false;
            }
            match write(self.io.get_ref()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.blocked = true,
                done => return Poll::Ready(done),
            }
        }
    }
}

impl futures_io::AsyncWrite for Tcp {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        use std::io::Write;
        self.poll_write_with(cx, |mut s| s.write(buf))
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        use std::io::Write;
        self.poll_write_with(cx, |mut s| s.write_vectored(bufs))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_close(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(self.io.get_ref().shutdown(std::net::Shutdown::Write))
    }
}
