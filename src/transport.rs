//! The byte stream under the frame codec (`crate::frames`), the only one, which
//! [`Accepted::serve`](crate::Accepted::serve) runs and the [`WebSocket`](crate::WebSocket) of
//! [`Accepted::into_parts`](crate::Accepted::into_parts) wraps, in two layers:
//! - [`MaybeTls`]: `S` itself for `ws://`, or TLS over `S` for `wss://`
//!   ([`crate::tls_stream`]);
//! - the deferred `101`: written ahead of anything else on the first read, write or flush,
//!   so that [`Handler::on_open`](crate::Handler::on_open) runs before the client knows.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures_io::{AsyncRead, AsyncWrite};

use crate::tls_stream::TlsStream;

/// The transport under a [`WebSocket`](crate::WebSocket): plain or TLS, then the deferred
/// `101`. It is what [`crate::Acceptor::accept`] builds; you only name it.
#[derive(Debug)]
pub struct Transport<S> {
    io: MaybeTls<S>,
    /// The 101 response, written ahead of anything else on the first write, flush or read.
    preamble: Vec<u8>,
}

/// `S` itself, or TLS over `S` (boxed: the TLS state is about 1 KiB).
#[derive(Debug)]
pub(crate) enum MaybeTls<S> {
    Plain(S),
    Tls(Box<TlsStream<S>>),
}

impl<S> Transport<S> {
    /// `io`, with nothing deferred.
    pub(crate) fn new(io: MaybeTls<S>) -> Self {
        Transport {
            io,
            preamble: Vec::new(),
        }
    }

    /// Whether small frames are best joined into one buffer before a write: over plain TCP
    /// one `write` beats a `writev` of their parts, while TLS copies a vectored write's
    /// parts into its records anyway (a join would be a second copy).
    pub(crate) fn joins_small_writes(&self) -> bool {
        matches!(self.io, MaybeTls::Plain(_))
    }

    /// Defers the `101` answer to the first read, write or flush.
    pub(crate) fn defer(&mut self, response: Vec<u8>) {
        self.preamble = response;
    }

    /// The deferred `101`, to edit or replace (with a refusal), if it is not sent yet.
    pub(crate) fn deferred_mut(&mut self) -> Option<&mut Vec<u8>> {
        (!self.preamble.is_empty()).then_some(&mut self.preamble)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Transport<S> {
    /// Writes and flushes what is left of the deferred `101`.
    #[inline]
    fn poll_preamble(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.preamble.is_empty() {
            return Poll::Ready(Ok(()));
        }
        self.poll_preamble_write(cx)
    }

    #[inline(never)]
    fn poll_preamble_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.preamble.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.preamble))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.preamble.drain(..n);
            if self.preamble.is_empty() {
                self.preamble = Vec::new(); // sent: free it
                return Pin::new(&mut self.io).poll_flush(cx);
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Transport<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_preamble(cx))?;
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Transport<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_preamble(cx))?;
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_preamble(cx))?;
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_preamble(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_close(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for MaybeTls<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for MaybeTls<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            MaybeTls::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_close(cx),
            MaybeTls::Tls(s) => Pin::new(s).poll_close(cx),
        }
    }
}
