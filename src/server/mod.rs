//! The server's policy, the same on every runtime: the connection caps (in total and per
//! client address), admission, graceful shutdown, the open and close log lines, the
//! [`stats`](crate::stats) counters, and a panic boundary around each connection.
//!
//! An accept loop, on any runtime, hands each accepted TCP stream to
//! [`Server::connection`] and spawns the future it returns; on shutdown it stops
//! accepting and awaits [`Server::drain`]. [`smol::Server`](crate::smol::Server) and
//! `tokio::serve` (feature `tokio`) are such loops; on another runtime (async-std, say) the
//! loop is a few lines:
//!
//! ```
//! use std::sync::Arc;
//! use wssd::{Acceptor, Config, Connection, Handler, Message};
//!
//! struct ReplyOk;
//! impl Handler for ReplyOk {
//!     fn on_message(&self, conn: &Connection, _msg: wssd::Data) {
//!         let _ = conn.try_send(wssd::Data::text("ok"));
//!     }
//! }
//!
//! # async_std::task::block_on(async {
//! let server = wssd::Server::new(Acceptor::new(Config::default()), Arc::new(ReplyOk))
//!     .max_connections(1_000)
//!     .max_connections_per_address(100);
//! let listener = async_std::net::TcpListener::bind("127.0.0.1:0").await?;
//! # server.shutdown().trigger(); // this example stops at once
//! loop {
//!     let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
//!         server.shutdown().wait().await;
//!         None
//!     });
//!     match accepted.await {
//!         Some(Ok((stream, peer))) => {
//!             // Counted against the caps now; refused ones get their 503 in the task.
//!             async_std::task::spawn(server.connection(stream, peer));
//!         }
//!         Some(Err(e)) => eprintln!("accept: {e}"),
//!         None => break,
//!     }
//! }
//! // Every client closed with 1001 after its queue drains, within the shutdown timeout.
//! assert!(server.drain().await);
//! # Ok::<(), std::io::Error>(())
//! # }).unwrap();
//! ```

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use std::{fmt, io};

use event_listener::Event;
use futures_io::{AsyncRead, AsyncWrite};
use futures_lite::{AsyncWriteExt, future};

use crate::timer::Timer;

mod contained;
pub(crate) use contained::contained;
mod shutdown;
#[cfg(test)]
mod tests;
use crate::{AcceptError, Accepted, Acceptor, Admission, CloseFrame, Connection, Handler};
pub use shutdown::Shutdown;

/// What a server applies to every connection, whichever runtime accepts them: the
/// [`Acceptor`] (TLS, the opening handshake and the per-connection [`Limits`](crate::Limits)),
/// the [`Handler`] with its [`Handler::admit`], the connection caps and the graceful
/// [`Shutdown`]. Cheap to clone: clones share the counts and the switch.
///
/// It logs through the [`log`](https://docs.rs/log) facade (one `open` and one `close` line
/// per connection at info level, refusals and failures at warn), which prints nothing until
/// the application installs a logger, and it keeps the [`stats`](crate::stats) counters.
///
/// See the [module docs](self) for an accept loop over it.
pub struct Server<H> {
    inner: Arc<Inner<H>>,
}

/// A [`Server`]'s settings, and the counts its clones share: a connection's task holds one
/// pointer to them.
struct Inner<H> {
    acceptor: Acceptor,
    handler: Arc<H>,
    shutdown: Shutdown,
    caps: Caps,
    shutdown_timeout: Duration,
    state: Arc<State>,
}

impl<H> Clone for Inner<H> {
    fn clone(&self) -> Self {
        Inner {
            acceptor: self.acceptor.clone(),
            handler: self.handler.clone(),
            shutdown: self.shutdown.clone(),
            caps: self.caps,
            shutdown_timeout: self.shutdown_timeout,
            state: self.state.clone(),
        }
    }
}

impl<H> Clone for Server<H> {
    fn clone(&self) -> Self {
        Server {
            inner: self.inner.clone(),
        }
    }
}

impl<H> fmt::Debug for Server<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("Server")
            .field("max_connections", &inner.caps.total)
            .field("max_connections_per_address", &inner.caps.per_address)
            .field("shutdown_timeout", &inner.shutdown_timeout)
            .field("open", &inner.state.open.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy)]
struct Caps {
    total: usize,
    /// 0: no cap.
    per_address: usize,
}

/// The counts that clones of a [`Server`] share.
#[derive(Default)]
struct State {
    /// Connections from their accept to their end, handshakes included.
    open: AtomicUsize,
    /// The same, per client address ([`address_key`]), while a per-address cap applies.
    per_address: Mutex<HashMap<IpAddr, usize>>,
    /// Notified each time a connection ends (for [`Server::drain`]).
    ended: Event,
    /// When the last warning of each kind of refusal was logged.
    refusals: Mutex<[Refusals; 2]>,
}

/// Refusals of one kind since the last warning, and when it was logged.
#[derive(Default)]
struct Refusals {
    since_warning: u64,
    last_warning: Option<Instant>,
}

/// Why a connection was refused before it was served (HTTP 503).
#[derive(Debug, Clone, Copy)]
enum Refused {
    /// [`Server::max_connections`] are open.
    Full(usize),
    /// [`Server::max_connections_per_address`] are open from this address.
    Address(IpAddr, usize),
}

impl Refused {
    /// The 503's body: what the client (or its developer) is told.
    fn reason(self) -> String {
        match self {
            Refused::Full(_) => "Too many connections: try again later".to_string(),
            Refused::Address(_, max) => format!(
                "Too many connections from your address ({max} at most): close some and try again"
            ),
        }
    }

    /// One warning a second at most for each kind, with the count since the last.
    /// Counted in `Stats::refused_at_cap` each time.
    fn log(self, state: &State, trusted_proxy: bool) {
        crate::stats::add(&crate::stats::REFUSED_AT_CAP, 1);
        let kind = usize::from(matches!(self, Refused::Address(..)));
        let mut refusals = state.refusals.lock().unwrap_or_else(|e| e.into_inner());
        let r = &mut refusals[kind];
        r.since_warning += 1;
        if r.last_warning
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        let n = std::mem::take(&mut r.since_warning);
        r.last_warning = Some(Instant::now());
        match self {
            Refused::Full(max) => {
                log::warn!("{max} connections open (Server::max_connections): refused {n} new ones")
            }
            Refused::Address(ip, max) => {
                let hint = if trusted_proxy {
                    ": this address is a trusted proxy's, so the proxy did not name its clients (make it pass X-Real-IP or Forwarded, or use the PROXY protocol)"
                } else {
                    ""
                };
                log::warn!(
                    "{max} connections open from {ip} (Server::max_connections_per_address): refused {n} new ones{hint}"
                )
            }
        }
    }
}

/// The key a client address is counted under: an IPv4 address as it is (an IPv4-mapped
/// IPv6 address as its IPv4 one), an IPv6 address by its /64 prefix, which a single
/// subscriber is given whole (RFC 6177) and can draw any number of addresses from.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
    }
}

/// A connection's place in the counts, given back when dropped.
struct Slot {
    state: Arc<State>,
    /// The address it is counted under, if any yet.
    key: Option<IpAddr>,
}

impl Slot {
    /// Counts the connection under `ip` (its key) in place of the address it was counted
    /// under; `false`, and no change, when `max` are open from there already.
    fn count_under(&mut self, ip: IpAddr, max: usize) -> bool {
        let key = address_key(ip);
        if self.key == Some(key) {
            return true;
        }
        let mut map = self
            .state
            .per_address
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let n = map.entry(key).or_default();
        if *n >= max {
            return false; // `max` is at least 1: the entry was there already
        }
        *n += 1;
        if let Some(old) = self.key.replace(key) {
            uncount(&mut map, old);
        }
        true
    }
}

fn uncount(map: &mut HashMap<IpAddr, usize>, key: IpAddr) {
    if let Some(n) = map.get_mut(&key) {
        *n -= 1;
        if *n == 0 {
            map.remove(&key);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            let mut map = self
                .state
                .per_address
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            uncount(&mut map, key);
        }
        self.state.open.fetch_sub(1, Ordering::AcqRel);
        self.state.ended.notify(usize::MAX);
    }
}

impl<H: Handler> Server<H> {
    /// A server that accepts with `acceptor` and hands connections to `handler`, with the
    /// defaults: 10,000 connections at most, 1,000 from one client address, a [`Shutdown`]
    /// of its own (see [`Server::shutdown`]), and 10 s to finish connections on shutdown.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use wssd::{Acceptor, Config, Connection, Data, Handler, Server};
    ///
    /// struct ReplyOk;
    /// impl Handler for ReplyOk {
    ///     fn on_message(&self, conn: &Connection, _: Data) {
    ///         let _ = conn.try_send("ok");
    ///     }
    /// }
    /// let server = Server::new(Acceptor::new(Config::default()), Arc::new(ReplyOk));
    /// assert_eq!(server.open_connections(), 0);
    /// ```
    pub fn new(acceptor: Acceptor, handler: Arc<H>) -> Self {
        Server {
            inner: Arc::new(Inner {
                acceptor,
                handler,
                shutdown: Shutdown::default(),
                caps: Caps {
                    total: 10_000,
                    per_address: 1_000,
                },
                shutdown_timeout: Duration::from_secs(10),
                state: Arc::default(),
            }),
        }
    }

    /// This server with `change` made to its settings (a clone made before keeps the
    /// settings it had, and shares the counts).
    fn configure(mut self, change: impl FnOnce(&mut Inner<H>)) -> Self {
        let mut inner = Arc::unwrap_or_clone(self.inner);
        change(&mut inner);
        self.inner = Arc::new(inner);
        self
    }

    /// The most connections served at once, handshakes included. Past it, a new connection
    /// on a plain port gets HTTP 503 and on a TLS port is closed, with a warning at most once
    /// a second. Default 10,000: about 0.2 GB of a small box's memory with the default buffers.
    ///
    /// ```
    /// # let server = include!("../doc_server.rs");
    /// let server = server.max_connections(50_000); // past it, a new client gets 503
    /// ```
    pub fn max_connections(self, max: usize) -> Self {
        self.configure(|s| s.caps.total = max)
    }

    /// The most connections at once from one client address (an IPv6 client by its /64),
    /// so that one client cannot take every slot of [`Server::max_connections`]; 0 for no
    /// cap. Default 1,000.
    ///
    /// The address is the client's after the PROXY protocol header and the trusted proxy's
    /// `Forwarded`, `X-Forwarded-For` or `X-Real-IP` (see [`forwarded`](crate::forwarded)), so
    /// the cap holds behind nginx too. A client past it gets HTTP 503 with the reason after its
    /// opening handshake; one that connects directly (not through a trusted proxy) is refused
    /// at once, before its TLS handshake (a plain port answers 503, a TLS port closes), so its
    /// extra connections never hold a slot. A warning is logged at most once a second.
    ///
    /// ```
    /// # let server = include!("../doc_server.rs");
    /// let server = server.max_connections_per_address(100); // 0: no cap
    /// ```
    pub fn max_connections_per_address(self, max: usize) -> Self {
        self.configure(|s| s.caps.per_address = max)
    }

    /// The switch that stops this server gracefully (keep a clone to trigger it).
    ///
    /// ```
    /// # let server = include!("../doc_server.rs");
    /// let shutdown = wssd::Shutdown::default();
    /// let server = server.with_shutdown(shutdown.clone()); // shutdown.trigger() ends it
    /// assert!(!server.shutdown().is_triggered());
    /// ```
    pub fn with_shutdown(self, shutdown: Shutdown) -> Self {
        self.configure(|s| s.shutdown = shutdown)
    }

    /// How long connections get to finish after [`Shutdown::trigger`], in seconds of
    /// [`Duration`]; then [`Server::drain`] stops waiting for them. Default 10 s.
    ///
    /// ```
    /// # let server = include!("../doc_server.rs");
    /// let server = server.shutdown_timeout(std::time::Duration::from_secs(30));
    /// ```
    pub fn shutdown_timeout(self, timeout: Duration) -> Self {
        self.configure(|s| s.shutdown_timeout = timeout)
    }

    /// This server's shutdown switch.
    ///
    /// ```
    /// # let server = include!("../doc_server.rs");
    /// server.shutdown().trigger(); // on SIGTERM, say: every connection closes with 1001
    /// assert!(server.shutdown().is_triggered());
    /// ```
    pub fn shutdown(&self) -> &Shutdown {
        &self.inner.shutdown
    }

    /// The acceptor it accepts with.
    ///
    /// ```
    /// # let server = include!("../doc_server.rs");
    /// assert_eq!(server.acceptor().config().path, None); // every path is accepted
    /// ```
    pub fn acceptor(&self) -> &Acceptor {
        &self.inner.acceptor
    }

    /// Connections open now, from their accept to their end (handshakes included).
    ///
    /// ```
    /// # let server = include!("../doc_server.rs");
    /// assert_eq!(server.open_connections(), 0);
    /// ```
    pub fn open_connections(&self) -> usize {
        self.inner.state.open.load(Ordering::Acquire)
    }

    /// The whole life of one accepted TCP connection, `peer` its TCP peer's address: the
    /// caps, [`Acceptor::accept`] (within its handshake timeout), [`Handler::admit`] (within
    /// the same timeout, then a 503), [`Accepted::serve`] until it ends, the log lines and
    /// counters; on shutdown the connection is closed with 1001 once its queue is written.
    /// Spawn the future on your runtime.
    ///
    /// The connection counts against [`Server::max_connections`] from this call (not from
    /// the first poll), so an accept loop that calls it for each connection never overshoots.
    /// A panic in the connection's handling (a handler's, say) ends that connection alone: it
    /// is logged once, with the peer, and counted (`Stats::panics`); the session's state is
    /// dropped, which closes the socket and leaves the [`Hub`](crate::Hub)s.
    ///
    /// The future never fails: what went wrong is logged (a failed handshake at warn, a
    /// client's refusal at warn, at most once a second for a cap).
    ///
    /// ```
    /// # let server = include!("../doc_server.rs");
    /// smol::block_on(async {
    ///     let listener = smol::net::TcpListener::bind("127.0.0.1:0").await?;
    ///     # let addr = listener.local_addr()?;
    ///     # smol::spawn(async move { let _ = smol::net::TcpStream::connect(addr).await; }).detach();
    ///     // Your accept loop, on any runtime: a task per connection.
    ///     let (stream, peer) = listener.accept().await?;
    ///     smol::spawn(server.connection(stream, peer)).detach(); // caps, admission, limits, logs
    ///     Ok::<(), std::io::Error>(())
    /// })?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn connection<S>(
        &self,
        stream: S,
        peer: SocketAddr,
    ) -> impl Future<Output = ()> + Send + 'static
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        use futures_util::future::Either;
        match self.take_slot(peer) {
            // The session's future itself, not one around it: the connection's task holds
            // the stream and the slot once.
            Ok(slot) => Either::Left(self.clone().run(stream, peer, slot)),
            Err(refused) => {
                refused.log(&self.inner.state, self.trusts(peer.ip()));
                // A TLS port cannot answer before a TLS handshake: it closes.
                let answer = self.inner.acceptor.config().tls.is_none();
                Either::Right(async move {
                    if answer {
                        busy(stream, &refused.reason()).await;
                    }
                })
            }
        }
    }

    /// Waits, once [`Shutdown::trigger`] was called, until every connection has ended or the
    /// shutdown timeout has passed, with one log line before and one after. `true` when all
    /// ended (the connections still open after the timeout go on until their own end).
    ///
    /// ```
    /// # let server = include!("../doc_server.rs");
    /// server.shutdown().trigger();
    /// // No connection was open: all have ended, at once.
    /// assert!(futures_lite::future::block_on(server.drain()));
    /// ```
    pub async fn drain(&self) -> bool {
        let open = self.open_connections();
        log::info!(
            "shutting down: closing {open} connections with 1001 (up to {} s)",
            self.inner.shutdown_timeout.as_secs()
        );
        let all_ended = async {
            loop {
                let listener = self.inner.state.ended.listen();
                if self.open_connections() == 0 {
                    return true;
                }
                listener.await;
            }
        };
        let timeout = async {
            Timer::after(self.inner.shutdown_timeout).await;
            false
        };
        let ended = future::or(all_ended, timeout).await;
        if ended {
            log::info!("shutdown complete");
        } else {
            log::warn!(
                "shutdown timeout: {} connections still open, dropped",
                self.open_connections()
            );
        }
        ended
    }

    /// Runs an accept loop: `accept` until the shutdown, `start` for each connection, then
    /// [`Server::drain`]. An accept error (out of file descriptors, say) is logged and
    /// accepting resumes after 100 ms.
    #[cfg_attr(not(any(feature = "smol", feature = "tokio")), allow(dead_code))]
    pub(crate) async fn accept_loop<S, A, F>(
        &self,
        mut accept: A,
        mut start: impl FnMut(S, SocketAddr),
    ) -> bool
    where
        A: FnMut() -> F,
        F: Future<Output = io::Result<(S, SocketAddr)>>,
    {
        loop {
            let accepted = future::or(async { Some(accept().await) }, async {
                self.inner.shutdown.wait().await;
                None
            });
            match accepted.await {
                None => break,
                Some(Ok((stream, peer))) => start(stream, peer),
                Some(Err(e)) => {
                    log::warn!("accept failed: {e} (too many open files? raise `ulimit -n`)");
                    Timer::after(Duration::from_millis(100)).await;
                }
            }
        }
        self.drain().await
    }

    /// Whether `ip` is one of the acceptor's trusted proxies (or, with the PROXY protocol,
    /// a balancer): the client's address is known only after the handshake.
    fn trusts(&self, ip: IpAddr) -> bool {
        let config = self.inner.acceptor.config();
        config.proxy_protocol || crate::forwarded::is_trusted(ip, &config.trusted_proxies)
    }

    /// Counts a new connection from `peer`: in the total, and under its address when it
    /// connects directly.
    fn take_slot(&self, peer: SocketAddr) -> Result<Slot, Refused> {
        let state = &self.inner.state;
        if state.open.fetch_add(1, Ordering::AcqRel) >= self.inner.caps.total {
            state.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::Full(self.inner.caps.total));
        }
        let mut slot = Slot {
            state: state.clone(),
            key: None,
        };
        let max = self.inner.caps.per_address;
        if max > 0 && !self.trusts(peer.ip()) && !slot.count_under(peer.ip(), max) {
            return Err(Refused::Address(address_key(peer.ip()), max));
        }
        Ok(slot)
    }

    /// One connection, from its handshake to its end, in `slot`. A function that returns an
    /// `async move` block, not an `async fn`: the block holds what it captured once.
    #[allow(clippy::manual_async_fn)]
    fn run<S>(self, stream: S, peer: SocketAddr, slot: Slot) -> impl Future<Output = ()> + Send
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        async move {
            let started = Instant::now();
            let watched = Watched {
                inner: self.inner.handler.clone(),
                shutdown: self.inner.shutdown.clone(),
            };
            // The accept step and admission run on the heap while they last, and `accepted` lives
            // in a block of its own, which ends before the session runs: the connection's task then
            // holds little more than the session's future (a local that was borrowed keeps its
            // room in an async fn's state until its scope ends, moved out or not).
            let (serving, id, opened, slot) = {
                let opening = Box::pin(self.open(stream, peer, slot));
                let Some((accepted, opened, slot)) = contained(peer, opening).await.flatten()
                else {
                    return;
                };
                let id = accepted.id();
                // On shutdown, the session closes itself with 1001 once its queue is written.
                (accepted.serve(&watched), id, opened, slot)
            };
            // A panic in the session (a handler's, say) ends this connection alone: the session's
            // drop leaves its hubs, and what follows here runs as after any other end.
            let summary = contained(peer, serving).await.unwrap_or_default();
            self.inner.shutdown.forget(id);
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
            drop(slot);
        }
    }

    /// The accept step (TLS handshake, request), the per-address cap and the handler's
    /// admission, with the open log line; `None` (the failure logged) if the connection is
    /// not to be served.
    async fn open<S>(
        &self,
        stream: S,
        peer: SocketAddr,
        mut slot: Slot,
    ) -> Option<(Accepted<S>, Option<Opened>, Slot)>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let mut accepted = match self.inner.acceptor.accept(stream, peer).await {
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
        let max = self.inner.caps.per_address;
        let client = accepted.request().client_ip;
        if max > 0 && !slot.count_under(client, max) {
            let refused = Refused::Address(address_key(client), max);
            let config = self.inner.acceptor.config();
            let unnamed = crate::forwarded::is_trusted(client, &config.trusted_proxies);
            refused.log(&self.inner.state, unnamed);
            let _ = accepted.refuse(503, &refused.reason()).await;
            return None;
        }
        if let Some(admission) = self.inner.handler.admit(accepted.id(), accepted.request()) {
            let (limit, clock) = (accepted.limits().handshake_timeout, accepted.limits().clock);
            let decided = future::or(admission, async {
                clock.after(limit).await;
                Admission::Refuse {
                    status: 503,
                    reason: format!("no admission decision within {} s", limit.as_secs()),
                }
            })
            .await;
            if let Admission::AcceptSubprotocol(name) = &decided
                && accepted.choose_subprotocol(name).is_err()
            {
                log::warn!(
                    "{}: the subprotocol {:?} chosen on admission is not one the client offered: answered with {:?} instead",
                    accepted.request().client_ip,
                    crate::text::escape(name),
                    accepted.request().subprotocol.as_deref().unwrap_or("none"),
                );
            }
            if let Admission::Refuse { status, reason } = decided {
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
        Some((accepted, opened, slot))
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
    fn on_message(&self, conn: &Connection, msg: crate::Data) {
        self.inner.on_message(conn, msg);
    }
    fn on_close(&self, conn: &Connection, close: Option<&CloseFrame>) {
        self.inner.on_close(conn, close);
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

/// Answers 503 with `reason` on a plain port, within 1 s in all: writes the answer without
/// waiting for the request, ends its side, then reads what the client sent until it closes
/// too (a lingering close: a socket closed with a request unread would reset the connection,
/// and the client might lose the answer with it).
async fn busy<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, reason: &str) {
    use futures_lite::AsyncReadExt;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nRetry-After: 5\r\nConnection: close\r\n\r\n{reason}\n",
        reason.len() + 1
    );
    let write = async {
        stream.write_all(answer.as_bytes()).await?;
        stream.close().await?;
        let mut sink = [0; 1024];
        // Up to 64 KiB: a request head is 16 KiB at most.
        for _ in 0..64 {
            if stream.read(&mut sink).await? == 0 {
                break;
            }
        }
        io::Result::Ok(())
    };
    let give_up = async {
        Timer::after(Duration::from_secs(1)).await;
        Ok(())
    };
    let _ = future::or(write, give_up).await;
}
