//! The listener loop on smol's multi-threaded executor (feature `smol`, on by default).
//!
//! A thin accept loop over [`crate::Server`], which applies the connection caps, admission,
//! shutdown, the log lines and the counters on every runtime; `tokio::serve` (feature
//! `tokio`) is the same loop on tokio.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use smol::Executor;
use smol::net::TcpListener;

use crate::{Acceptor, Handler};

pub use crate::server::Shutdown;

/// The listener loop on smol: what it listens with, its threads, and the settings of the
/// [`crate::Server`] it runs (the connection caps, graceful shutdown), apart from the
/// per-connection [`Limits`](crate::Limits) that the [`Acceptor`] carries.
///
/// It logs through the [`log`](https://docs.rs/log) facade (one `open` and one `close` line
/// per connection at info level, refusals and failures at warn), which prints nothing until
/// the application installs a logger, such as `simple_logger::SimpleLogger::new().init()` or
/// `env_logger::init()`, before [`Server::run`].
///
/// ```no_run
/// use std::sync::Arc;
/// use wssd::{Acceptor, Config, Connection, Handler, Message};
///
/// struct Echo;
/// impl Handler for Echo {
///     fn on_message(&self, conn: &Connection, msg: wssd::Data) {
///         let _ = conn.try_send(msg);
///     }
/// }
///
/// let listener = smol::block_on(smol::net::TcpListener::bind("127.0.0.1:8282"))?;
/// wssd::smol::Server::new(Acceptor::new(Config::default()), Arc::new(Echo))
///     .max_connections(1_000)
///     .threads(2)
///     .run(listener)?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug)]
pub struct Server<H> {
    core: crate::Server<H>,
    threads: usize,
}

impl<H: Handler> Server<H> {
    /// A server that accepts with `acceptor` and hands connections to `handler`, with the
    /// defaults of [`crate::Server::new`] (10,000 connections at most, 1,000 from one client
    /// address, 10 s to finish on shutdown) and one thread per CPU core.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use wssd::{Acceptor, Config, Connection, Data, Handler};
    ///
    /// struct Echo;
    /// impl Handler for Echo {
    ///     fn on_message(&self, conn: &Connection, msg: Data) {
    ///         let _ = conn.try_send(msg);
    ///     }
    /// }
    /// let server = wssd::smol::Server::new(Acceptor::new(Config::default()), Arc::new(Echo));
    /// ```
    pub fn new(acceptor: Acceptor, handler: Arc<H>) -> Self {
        Server {
            core: crate::Server::new(acceptor, handler),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }

    /// As [`crate::Server::max_connections`]: the most connections at once (default 10,000).
    ///
    /// ```
    /// # let server = include!("doc_smol_server.rs");
    /// let server = server.max_connections(50_000);
    /// ```
    pub fn max_connections(mut self, max: usize) -> Self {
        self.core = self.core.max_connections(max);
        self
    }

    /// As [`crate::Server::max_connections_per_address`]: the most connections at once from
    /// one client address, 0 for no cap (default 1,000).
    ///
    /// ```
    /// # let server = include!("doc_smol_server.rs");
    /// let server = server.max_connections_per_address(0); // no cap: a load test from one address
    /// ```
    pub fn max_connections_per_address(mut self, max: usize) -> Self {
        self.core = self.core.max_connections_per_address(max);
        self
    }

    /// The threads [`Server::run`] runs connections and the accept loop on (at least 1),
    /// the calling thread included. Default: the number of CPU cores.
    ///
    /// ```
    /// # let server = include!("doc_smol_server.rs");
    /// let server = server.threads(4);
    /// ```
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// The switch that stops this server gracefully (keep a clone to trigger it).
    ///
    /// ```
    /// # let server = include!("doc_smol_server.rs");
    /// let shutdown = wssd::smol::Shutdown::default();
    /// let server = server.shutdown(shutdown.clone()); // shutdown.trigger() from a signal handler
    /// ```
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.core = self.core.with_shutdown(shutdown);
        self
    }

    /// How long connections get to finish after [`Shutdown::trigger`], in seconds of
    /// [`Duration`]; then they are dropped. Default 10 s.
    ///
    /// ```
    /// # let server = include!("doc_smol_server.rs");
    /// let server = server.shutdown_timeout(std::time::Duration::from_secs(30));
    /// ```
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.core = self.core.shutdown_timeout(timeout);
        self
    }

    /// Runs the server on a new multi-threaded executor with [`Server::threads`] threads
    /// (the calling thread is one of them), blocking until the shutdown is triggered and
    /// connections are done. Its log lines go to the `log` facade: install a logger first
    /// to see them.
    ///
    /// Accepting and the handshakes are tasks like the connections; each session yields
    /// to the executor after a bounded run of work (64 events), so however busy clients
    /// keep every thread, new clients are accepted and their handshakes get their turn.
    ///
    /// Each thread runs the executor under `smol::block_on`. On Linux the connections are
    /// registered once, edge-triggered, in an epoll instance of the server's own, whose
    /// events one task hands to them (see [`Server::serve`]).
    ///
    /// # Errors
    /// As [`Server::serve`], and when a thread cannot be started, or the epoll instance
    /// cannot be made (out of file descriptors).
    ///
    /// ```
    /// # let server = include!("doc_smol_server.rs");
    /// let shutdown = wssd::smol::Shutdown::default();
    /// let server = server.shutdown(shutdown.clone());
    /// shutdown.trigger(); // here at once; a server stops on a signal
    /// let listener = smol::block_on(smol::net::TcpListener::bind("127.0.0.1:0"))?;
    /// server.run(listener)?; // blocks until shut down
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn run(self, listener: TcpListener) -> io::Result<()> {
        let executor = Arc::new(Executor::new());
        let stop = Shutdown::default(); // ends the worker threads once serving is over
        for n in 1..self.threads {
            let (executor, stop) = (executor.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("wssd-{n}"))
                .spawn(move || smol::block_on(executor.run(stop.wait())))?;
        }
        // The calling thread is one of the executor's: it accepts and runs connections.
        // Accepting is a task like the connections; each session yields after a bounded
        // run of work, so it is never starved.
        let served = smol::block_on(executor.run(self.serve(listener, executor.clone())));
        stop.trigger();
        served
    }

    /// Accepts connections on `listener` until the shutdown is triggered, running each on
    /// `executor` (whose threads the caller runs).
    ///
    /// Each connection gets `TCP_NODELAY`, then [`crate::Server::connection`]: the caps,
    /// [`Acceptor::accept`] (with its handshake timeout), [`Handler::admit`], then
    /// [`Accepted::serve`](crate::Accepted::serve). One info line is logged
    /// per open and one per close (client IP and peer, path, TLS version, duration in
    /// seconds, messages in and out, close code); a failed handshake is one warn line.
    /// What the client sent is escaped in them. One bad client never affects another.
    ///
    /// On shutdown: no new connections, and every live one is closed with 1001 (going
    /// away, RFC 6455 section 7.4.1) after the messages already queued on it are written;
    /// it returns once they have all ended or the shutdown timeout passed.
    ///
    /// On Linux each connection is registered once, edge-triggered, in an epoll instance of
    /// the server's own, whose events a task on `executor` hands to the connections (see
    /// the README's "Speed and footprint"); elsewhere async-io registers each socket.
    ///
    /// # Errors
    /// When the epoll instance cannot be made (out of file descriptors) at the start.
    /// Otherwise none: accept errors (such as running out of file descriptors) are logged,
    /// and accepting resumes after 100 ms; a connection the kernel will not register is
    /// logged and closed.
    ///
    /// ```
    /// # let server = include!("doc_smol_server.rs");
    /// use std::sync::Arc;
    /// let (shutdown, executor) = (wssd::smol::Shutdown::default(), Arc::new(smol::Executor::new()));
    /// let server = server.shutdown(shutdown.clone());
    /// shutdown.trigger();
    /// smol::block_on(executor.run(async {
    ///     let listener = smol::net::TcpListener::bind("127.0.0.1:0").await?;
    ///     server.serve(listener, executor.clone()).await
    /// }))?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub async fn serve(
        self,
        listener: TcpListener,
        executor: Arc<Executor<'static>>,
    ) -> io::Result<()> {
        let edge = crate::edge::Edge::new()?;
        let core = self.core;
        // Connections are registered once, edge-triggered, in the server's own epoll
        // instance, whose events one task takes a batch at a time (see `edge`).
        let dispatcher = executor.spawn(edge.clone().dispatch());
        // A duplicate of the socket is registered: the caller may hold clones of `listener`.
        let socket: Arc<smol::Async<std::net::TcpListener>> = listener.into();
        let listener = edge.listen(socket.get_ref().try_clone()?)?;
        let start = |stream: std::net::TcpStream, peer: SocketAddr| {
            let _ = stream.set_nodelay(true);
            match edge.register(stream) {
                Ok(stream) => executor.spawn(core.connection(stream, peer)).detach(),
                Err(e) => log::warn!("{peer}: cannot register the connection with epoll: {e}"),
            }
        };
        let all_ended = core.accept_loop(|| listener.accept(), start).await;
        drop((listener, socket));
        // When connections are still open (on an executor that outlives this call), they
        // still need their wake-ups; else none is left to wake.
        if !all_ended {
            dispatcher.detach();
        }
        Ok(())
    }
}
