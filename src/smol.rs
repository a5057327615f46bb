//! The listener loop on smol's multi-threaded executor (feature `smol`, on by default).
//!
//! This is the only module that knows which executor runs it. Embedders on
//! another runtime write their own accept loop around [`Acceptor::accept`] and
//! [`Accepted::serve`](crate::Accepted::serve); [`Server`] is a short example of one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use std::{fmt, io};

use event_listener::Event;
use smol::io::AsyncWriteExt;
use smol::net::{TcpListener, TcpStream};
use smol::{Executor, Timer, future};

use crate::edge::Tcp;
use crate::{
    AcceptError, Acceptor, CloseCode, CloseFrame, Connection, ConnectionId, Handler, Message,
};

/// Stops a running server gracefully; cheap to clone, and every clone is the same switch.
///
/// [`Shutdown::trigger`] makes [`Server::serve`] stop accepting, close every connection with
/// 1001 (going away, RFC 6455 section 7.4.1) after the messages already queued on it
/// are written, and return once they have all ended or the shutdown timeout passed.
/// The `wssd` binary triggers it on SIGINT and SIGTERM.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    inner: Arc<ShutdownInner>,
}

#[derive(Default)]
struct ShutdownInner {
    triggered: AtomicBool,
    event: Event,
    /// The open connections, closed by the trigger: a session is not also polling a
    /// shutdown listener at each of its wake-ups.
    open: Mutex<HashMap<ConnectionId, Connection>>,
}

impl fmt::Debug for ShutdownInner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownInner")
            .field("triggered", &self.triggered)
            .finish_non_exhaustive()
    }
}

impl Shutdown {
    /// Starts the graceful shutdown. Calling it again does nothing more.
    pub fn trigger(&self) {
        self.inner.triggered.store(true, Ordering::SeqCst);
        self.inner.event.notify(usize::MAX);
        let open = std::mem::take(&mut *self.open());
        for conn in open.values() {
            conn.close(CloseCode::Away, "server shutting down");
        }
    }

    /// Closes `conn` with the others on shutdown (at once if it started already).
    fn register(&self, conn: &Connection) {
        self.open().insert(conn.id(), conn.clone());
        // Registered first, then checked: a trigger in between closes it either way.
        if self.is_triggered() {
            self.open().remove(&conn.id());
            conn.close(CloseCode::Away, "server shutting down");
        }
    }

    fn forget(&self, id: ConnectionId) {
        self.open().remove(&id);
    }

    fn open(&self) -> MutexGuard<'_, HashMap<ConnectionId, Connection>> {
        self.inner.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether [`Shutdown::trigger`] was called.
    pub fn is_triggered(&self) -> bool {
        self.inner.triggered.load(Ordering::SeqCst)
    }

    /// Resolves once [`Shutdown::trigger`] is called.
    pub async fn wait(&self) {
        loop {
            let listener = self.inner.event.listen();
            if self.is_triggered() {
                return;
            }
            listener.await;
        }
    }
}

/// The listener loop on smol: what it listens with, and its own settings (the connection
/// cap, threads, graceful shutdown), apart from the per-connection [`Limits`](crate::Limits)
/// that the [`Acceptor`] carries.
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
///     fn on_message(&self, conn: &Connection, msg: Message) {
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
    acceptor: Acceptor,
    handler: Arc<H>,
    max_connections: usize,
    threads: usize,
    shutdown: Shutdown,
    shutdown_timeout: Duration,
}

impl<H: Handler> Server<H> {
    /// A server that accepts with `acceptor` and hands connections to `handler`, with the
    /// defaults: 10,000 connections at most, one thread per CPU core, a [`Shutdown`] of its
    /// own (see [`Server::shutdown`]), and 10 s to finish connections on shutdown.
    pub fn new(acceptor: Acceptor, handler: Arc<H>) -> Self {
        Server {
            acceptor,
            handler,
            max_connections: 10_000,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            shutdown: Shutdown::default(),
            shutdown_timeout: Duration::from_secs(10),
        }
    }

    /// The most connections served at once. Past it, a new connection on a plain port gets
    /// HTTP 503 and on a TLS port is closed, with a warning at most once a second.
    /// Default 10,000: about 0.2 GB of a small box's memory with the default buffers.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max;
        self
    }

    /// The threads [`Server::run`] runs connections and the accept loop on (at least 1),
    /// the calling thread included. Default: the number of CPU cores.
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// The switch that stops this server gracefully (keep a clone to trigger it).
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// How long connections get to finish after [`Shutdown::trigger`], in seconds of
    /// [`Duration`]; then they are dropped. Default 10 s.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
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
    /// On Linux an idle thread sleeps in the server's own epoll instance, where the listener
    /// and the connections are registered, and wakes the connections its events name; other
    /// async-io sources and timers of the process (a handler's, say) are served by
    /// async-io's own thread. Elsewhere the threads run `smol::block_on`.
    ///
    /// # Errors
    /// As [`Server::serve`], and when a thread cannot be started, or the epoll instance
    /// cannot be made (out of file descriptors).
    pub fn run(self, listener: TcpListener) -> io::Result<()> {
        let executor = Arc::new(Executor::new());
        let stop = Shutdown::default(); // ends the worker threads once serving is over
        // The server's own epoll instance (Linux): each thread of the executor sleeps in it
        // when idle and wakes the connections its events name (see `edge`); the listener
        // and the connections are registered there, not with async-io.
        let edge = crate::edge::Edge::new()?;
        for n in 1..self.threads {
            let (executor, stop, edge) = (executor.clone(), stop.clone(), edge.clone());
            std::thread::Builder::new()
                .name(format!("wssd-{n}"))
                .spawn(move || edge.block_on(executor.run(stop.wait())))?;
        }
        // The calling thread is one of the executor's: it accepts and runs connections.
        // Accepting is a task like the connections; each session yields after a bounded
        // run of work, so it is never starved.
        let serve = self.serve_on(listener, executor.clone(), edge.clone(), false);
        let served = edge.block_on(executor.run(serve));
        stop.trigger();
        served
    }

    /// Accepts connections on `listener` until the shutdown is triggered, running each on
    /// `executor` (whose threads the caller runs).
    ///
    /// Each connection gets `TCP_NODELAY`, [`Acceptor::accept`] (with its handshake
    /// timeout), then [`Accepted::serve`](crate::Accepted::serve). One info line is logged
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
    pub async fn serve(
        self,
        listener: TcpListener,
        executor: Arc<Executor<'static>>,
    ) -> io::Result<()> {
        let edge = crate::edge::Edge::new()?;
        self.serve_on(listener, executor, edge, true).await
    }

    /// [`Server::serve`] with `edge` for the connections' readiness; with `dispatch`, a
    /// task on `executor` takes its events (through async-io's reactor), else the
    /// executor's threads do ([`Server::run`]).
    async fn serve_on(
        self,
        listener: TcpListener,
        executor: Arc<Executor<'static>>,
        edge: Arc<crate::edge::Edge>,
        dispatch: bool,
    ) -> io::Result<()> {
        let Server {
            acceptor,
            handler,
            max_connections: max,
            shutdown,
            shutdown_timeout,
            ..
        } = self;
        let open = Arc::new(AtomicUsize::new(0));
        // Each connection task holds a clone; `recv` fails once all are dropped.
        let (done_tx, done_rx) = async_channel::bounded::<()>(1);
        let mut refusals = Refusals::default();
        // Connections are registered once, edge-triggered, in the server's own epoll
        // instance, whose events one task takes a batch at a time (see `edge`) or the
        // executor's threads do.
        let dispatcher = dispatch.then(|| executor.spawn(edge.clone().dispatch()));
        // A duplicate of the socket is registered: the caller may hold clones of `listener`.
        let socket: Arc<smol::Async<std::net::TcpListener>> = listener.into();
        let listener = edge.listen(socket.get_ref().try_clone()?)?;
        loop {
            let accept = listener.accept();
            let accepted = future::or(async { Some(accept.await) }, async {
                shutdown.wait().await;
                None
            });
            let (stream, peer) = match accepted.await {
                None => break,
                Some(Ok(accepted)) => accepted,
                Some(Err(e)) => {
                    log::warn!("accept failed: {e} (too many open files? raise `ulimit -n`)");
                    Timer::after(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if open.load(Ordering::Acquire) >= max {
                refusals.refused(max);
                if acceptor.config().tls.is_none() {
                    executor.spawn(busy(stream)).detach();
                }
                continue;
            }
            let stream = match edge.register(stream) {
                Ok(stream) => stream,
                Err(e) => {
                    log::warn!("{peer}: cannot register the connection with epoll: {e}");
                    continue;
                }
            };
            open.fetch_add(1, Ordering::AcqRel);
            let guard = OpenGuard {
                open: open.clone(),
                _done: done_tx.clone(),
            };
            let (acceptor, handler, shutdown) =
                (acceptor.clone(), handler.clone(), shutdown.clone());
            executor
                .spawn(connection(stream, peer, acceptor, handler, shutdown, guard))
                .detach();
        }

        // Graceful shutdown: no new connections; each live one closes itself with 1001
        // after its queue drains (see `connection`).
        drop((listener, socket));
        log::info!(
            "shutting down: closing {} connections with 1001 (up to {} s)",
            open.load(Ordering::Acquire),
            shutdown_timeout.as_secs()
        );
        drop(done_tx);
        let all_done = async { while done_rx.recv().await.is_ok() {} };
        let finished = future::or(
            async {
                all_done.await;
                true
            },
            async {
                Timer::after(shutdown_timeout).await;
                false
            },
        );
        if finished.await {
            drop(dispatcher); // no connection is left to wake
            log::info!("shutdown complete");
        } else {
            // The connections still open (on an executor that outlives this call) still
            // need their wake-ups.
            if let Some(dispatcher) = dispatcher {
                dispatcher.detach();
            }
            log::warn!(
                "shutdown timeout: {} connections still open, dropped",
                open.load(Ordering::Acquire)
            );
        }
        Ok(())
    }
}

/// The handler of one connection: the embedder's, plus a note of the connection so that
/// shutdown can close it.
struct Watched<H> {
    inner: Arc<H>,
    shutdown: Shutdown,
}

impl<H: Handler> Handler for Watched<H> {
    fn on_open(&self, conn: &Connection) {
        self.shutdown.register(conn);
        self.inner.on_open(conn);
    }
    fn on_message(&self, conn: &Connection, msg: Message) {
        self.inner.on_message(conn, msg);
    }
    fn on_close(&self, conn: &Connection, close: Option<&CloseFrame>) {
        self.inner.on_close(conn, close);
    }
}

/// Counts a connection as open until dropped; its `_done` sender tells shutdown when
/// the last connection has ended.
struct OpenGuard {
    open: Arc<AtomicUsize>,
    _done: async_channel::Sender<()>,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Refused connections, and when the last warning was logged.
#[derive(Default)]
struct Refusals {
    since_warning: u64,
    last_warning: Option<Instant>,
}

impl Refusals {
    fn refused(&mut self, max: usize) {
        self.since_warning += 1;
        if self
            .last_warning
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            log::warn!(
                "{max} connections open (Server::max_connections, --max-connections): refused {} new ones",
                self.since_warning
            );
            self.since_warning = 0;
            self.last_warning = Some(Instant::now());
        }
    }
}

/// Answers 503 on a plain port that is at its connection limit.
async fn busy(stream: std::net::TcpStream) {
    let Ok(mut stream) = TcpStream::try_from(stream) else {
        return;
    };
    let body = "Too many connections: try again later\n";
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nRetry-After: 5\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let write = async {
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.close().await;
    };
    let give_up = async {
        Timer::after(Duration::from_secs(1)).await;
    };
    future::or(write, give_up).await;
}

/// One connection, from accept to close, with its open and close log lines; `guard` counts
/// it as open until it ends.
///
/// A function that returns an `async move` block rather than an `async fn`: the block keeps
/// what it captured once, where an `async fn`'s state keeps its arguments twice (as passed,
/// and as the locals its body moves them into).
#[allow(clippy::manual_async_fn)]
fn connection<H: Handler>(
    stream: Tcp,
    peer: SocketAddr,
    acceptor: Acceptor,
    handler: Arc<H>,
    shutdown: Shutdown,
    guard: OpenGuard,
) -> impl Future<Output = ()> + Send + 'static {
    async move {
        let started = Instant::now();
        let watched = Watched {
            inner: handler,
            shutdown: shutdown.clone(),
        };
        // The accept step and admission run on the heap while they last, and `accepted` lives
        // in a block of its own, which ends before the session runs: the connection's task then
        // holds little more than the session's future (a local that was borrowed keeps its
        // room in an async fn's state until its scope ends, moved out or not).
        let (serving, id, opened) = {
            let opening = Box::pin(open(stream, peer, &acceptor, &*watched.inner));
            let Some((accepted, opened)) = contained(peer, opening).await.flatten() else {
                return drop(guard);
            };
            let id = accepted.id();
            // On shutdown, the session closes itself with 1001 once its queue is written.
            (accepted.serve(&watched), id, opened)
        };
        // A panic in the session (a handler's, say) ends this connection alone: the session's
        // drop leaves its hubs, and what follows here runs as after any other end.
        let summary = contained(peer, serving).await.unwrap_or_default();
        shutdown.forget(id);
        crate::stats::OPEN.fetch_sub(1, Ordering::Relaxed);
        crate::stats::closed(summary.close_code.map(u16::from));
        let code = summary
            .close_code
            .map_or("none (dropped)".to_string(), |c| u16::from(c).to_string());
        // The reason first, then the close line: whoever waits for the close line (a log
        // watcher, a test) then has the reason too.
        if let Some(error) = &summary.error {
            log::warn!("{peer}: {error}");
        }
        if let Some(Opened { who, path, tls }) = opened {
            log::info!(
                "close {who} {path} {tls} {}s in={} out={} code={code}",
                crate::text::Seconds(started.elapsed()),
                summary.messages_in,
                summary.messages_out,
            );
        }
        drop(guard);
    }
}

/// Runs `work`, one connection's, catching a panic in it: the panic ends that connection
/// alone (its state is dropped, which closes its socket), with one error line naming the
/// peer and the panic's message, escaped. `None` after a panic.
///
/// The release profile unwinds (`panic = "unwind"`), so that a bug reached by one client's
/// input never takes down the others. A struct, not an `async fn`: the connection's task holds
/// `work` once (an `async fn` keeps its argument and the future made of it, a session's state
/// twice).
pub(crate) fn contained<F: Future>(peer: SocketAddr, work: F) -> Contained<F> {
    use futures_lite::FutureExt;
    Contained {
        work: std::panic::AssertUnwindSafe(work).catch_unwind(),
        peer,
    }
}

pin_project_lite::pin_project! {
    /// The future of [`contained`].
    pub(crate) struct Contained<F> {
        #[pin]
        work: futures_lite::future::CatchUnwind<std::panic::AssertUnwindSafe<F>>,
        peer: SocketAddr,
    }
}

impl<F: Future> Future for Contained<F> {
    type Output = Option<F::Output>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let panic = match std::task::ready!(this.work.poll(cx)) {
            Ok(done) => return std::task::Poll::Ready(Some(done)),
            Err(panic) => panic,
        };
        let message = panic
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        log::error!(
            "{}: a panic in this connection's handling closed it (a bug: please report it): {}",
            this.peer,
            crate::text::escape(message)
        );
        crate::stats::PANICS.fetch_add(1, Ordering::Relaxed);
        std::task::Poll::Ready(None)
    }
}

/// What the open and close log lines say of a connection (made only when info lines are
/// logged: otherwise a connection holds none of it).
struct Opened {
    /// The peer, or the client behind the proxy that is the peer.
    who: String,
    /// The request's path, escaped.
    path: String,
    /// The TLS version, or `plain`.
    tls: &'static str,
}

/// The accept step (TLS handshake, request) and the handler's admission, with the open
/// log line; `None` (the failure logged) if the connection is not to be served.
async fn open<H: Handler>(
    stream: Tcp,
    peer: SocketAddr,
    acceptor: &Acceptor,
    handler: &H,
) -> Option<(crate::Accepted<Tcp>, Option<Opened>)> {
    let _ = stream.get_ref().set_nodelay(true);
    let mut accepted = match acceptor.accept(stream, peer).await {
        Ok(accepted) => accepted,
        // An ACME server's validation: no client's handshake at all.
        Err(e @ AcceptError::AcmeChallenge { .. }) => {
            log::info!("{peer}: {e}");
            return None;
        }
        Err(e) => {
            crate::stats::add(&crate::stats::HANDSHAKES_FAILED, 1);
            match e {
                // A connect that says nothing: a port probe or an L4 balancer's health check.
                AcceptError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    log::debug!("{peer}: closed before sending anything")
                }
                e @ AcceptError::NotWebSocket { page: true } => log::info!("{peer}: {e}"),
                e => log::warn!("{peer}: {e}"),
            };
            return None;
        }
    };
    if let Some(admission) = handler.admit(accepted.id(), accepted.request()) {
        let limit = accepted.limits().handshake_timeout;
        let decided = future::or(admission, async {
            Timer::after(limit).await;
            crate::Admission::Refuse {
                status: 503,
                reason: format!("no admission decision within {} s", limit.as_secs()),
            }
        })
        .await;
        if let crate::Admission::AcceptSubprotocol(name) = &decided
            && accepted.choose_subprotocol(name).is_err()
        {
            log::warn!(
                "{}: the subprotocol {:?} chosen on admission is not one the client offered: answered with {:?} instead",
                accepted.request().client_ip,
                crate::text::escape(name),
                accepted.request().subprotocol.as_deref().unwrap_or("none"),
            );
        }
        if let crate::Admission::Refuse { status, reason } = decided {
            let who = accepted.request().client_ip;
            let path = crate::text::escape(&accepted.request().path).into_owned();
            log::warn!(
                "{who} {path}: refused with {status}: {}",
                crate::text::escape(&reason)
            );
            crate::stats::add(&crate::stats::HANDSHAKES_REFUSED, 1);
            let _ = accepted.refuse(status, &reason).await;
            return None;
        }
    }
    let request = accepted.request();
    let opened = log::log_enabled!(log::Level::Info).then(|| Opened {
        tls: request.tls.as_ref().map_or("plain", |t| t.version.as_str()),
        path: crate::text::escape(&request.path).into_owned(),
        who: if !request.proxied {
            peer.to_string()
        } else {
            format!("{} (via {peer})", request.client_ip)
        },
    });
    if let Some(Opened { who, path, tls }) = &opened {
        log::info!("open {who} {path} {tls}");
    }
    crate::stats::add(&crate::stats::HANDSHAKES_OK, 1);
    crate::stats::add(&crate::stats::OPEN, 1);
    Some((accepted, opened))
}
