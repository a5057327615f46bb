//! The listener loop on tokio (feature `tokio`): the library's only tokio code.
//!
//! A thin accept loop over [`crate::Server`], as [`smol::Server`](crate::smol::Server) is
//! on smol: the same connection caps, admission, shutdown, log lines and counters. Each
//! connection is a task of the tokio runtime that polls [`Server::serve`], its socket turned
//! into a `futures-io` stream by `tokio_util::compat`.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::compat::TokioAsyncReadCompatExt;

use crate::{Acceptor, Handler, Shutdown};

/// The listener loop on tokio: what it listens with and the settings of the
/// [`crate::Server`] it runs (the connection caps, graceful shutdown), apart from the
/// per-connection [`Limits`](crate::Limits) that the [`Acceptor`] carries.
///
/// ```no_run
/// use std::sync::Arc;
/// use wssd::{Acceptor, Config, Connection, Handler, Message};
///
/// struct Echo;
/// impl Handler for Echo {
///     fn on_message(&self, conn: &Connection, msg: Message) {
///         let _ = conn.try_send(msg);
///     }
/// }
///
/// #[tokio::main]
/// async fn main() -> std::io::Result<()> {
///     let listener = tokio::net::TcpListener::bind("127.0.0.1:8282").await?;
///     wssd::tokio::Server::new(Acceptor::new(Config::default()), Arc::new(Echo))
///         .max_connections(1_000)
///         .serve(listener)
///         .await
/// }
/// ```
#[derive(Debug)]
pub struct Server<H> {
    core: crate::Server<H>,
}

impl<H: Handler> Server<H> {
    /// A server that accepts with `acceptor` and hands connections to `handler`, with the
    /// defaults of [`crate::Server::new`] (10,000 connections at most, 1,000 from one client
    /// address, 10 s to finish on shutdown).
    pub fn new(acceptor: Acceptor, handler: Arc<H>) -> Self {
        Server {
            core: crate::Server::new(acceptor, handler),
        }
    }

    /// As [`crate::Server::max_connections`]: the most connections at once (default 10,000).
    pub fn max_connections(mut self, max: usize) -> Self {
        self.core = self.core.max_connections(max);
        self
    }

    /// As [`crate::Server::max_connections_per_address`]: the most connections at once from
    /// one client address, 0 for no cap (default 1,000).
    pub fn max_connections_per_address(mut self, max: usize) -> Self {
        self.core = self.core.max_connections_per_address(max);
        self
    }

    /// The switch that stops this server gracefully (keep a clone to trigger it).
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.core = self.core.with_shutdown(shutdown);
        self
    }

    /// How long connections get to finish after [`Shutdown::trigger`], in seconds of
    /// [`Duration`]; then they are dropped. Default 10 s.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.core = self.core.shutdown_timeout(timeout);
        self
    }

    /// Accepts connections on `listener` until the shutdown is triggered, each one a task
    /// (`tokio::spawn`) running [`crate::Server::connection`] after `TCP_NODELAY`; then
    /// returns once they have all ended or the shutdown timeout passed. Call it inside a
    /// tokio runtime.
    ///
    /// On shutdown: no new connections, and every live one is closed with 1001 (going
    /// away, RFC 6455 section 7.4.1) after the messages already queued on it are written.
    ///
    /// # Errors
    /// None today (accept errors, such as running out of file descriptors, are logged and
    /// accepting resumes after 100 ms); the `Result` leaves room for a listener that fails.
    pub async fn serve(self, listener: TcpListener) -> io::Result<()> {
        let core = self.core;
        let start = |stream: tokio::net::TcpStream, peer| {
            let _ = stream.set_nodelay(true);
            tokio::spawn(core.connection(stream.compat(), peer));
        };
        core.accept_loop(|| listener.accept(), start).await;
        Ok(())
    }
}
