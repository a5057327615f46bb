//! The session loop: frames in, handler out, a bounded send queue, and the close handshake.
//!
//! One [`Session`] per connection, run by [`serve_as`]. Each of its steps does one job:
//! [`Session::open`] sends the `101`, [`Session::next_event`] waits for whatever comes
//! first, [`Session::on_frame`] hands a message to the handler, [`Session::drain`] hands
//! the send queue to the WebSocket layer and [`Session::flush`] writes it once no frame
//! waits to be read (corked), [`Session::heartbeat`] pings and enforces the idle timeout,
//! [`Session::poll_blocked`] and [`Session::give_up_on_blocked`] apply backpressure on
//! behalf of a full recipient (a Hub send from `on_message`), and
//! [`Session::close`] does the closing handshake. Every write and every wait for the peer
//! has a deadline, and the loop yields to its executor after a bounded run of work.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};

use atomic_waker::AtomicWaker;
use std::time::{Duration, Instant};

use crate::timer::Timer;
use async_tungstenite::tungstenite::{
    self,
    error::ProtocolError,
    protocol::{CloseFrame, frame::coding::CloseCode},
};
use event_listener::{Event, EventListener};
use futures_io::{AsyncRead, AsyncWrite};
use futures_lite::future;

use crate::Message;
use crate::config::Limits;
use crate::frames::Frames;
use crate::request::Request;
use crate::text::escape;

/// What the embedder's code does when a connection opens, sends a message, and closes.
///
/// The callbacks run on the connection's own task, one at a time, in order.
/// They are plain functions, as Workerman's `onMessage` is: to do async work,
/// clone the [`Connection`] into a task of your own and send from there.
///
/// ```
/// use wssd::{Connection, Handler, Message};
///
/// /// Answers every message with `ok`, as the recipe's example does.
/// struct ReplyOk;
///
/// impl Handler for ReplyOk {
///     fn on_message(&self, conn: &Connection, _msg: Message) {
///         // Fails only when the queue is full or the connection is gone; both are logged.
///         if let Err(e) = conn.try_send(Message::text("ok")) {
///             log::warn!("{}: {e}", conn.request().peer_addr);
///         }
///     }
/// }
/// ```
pub trait Handler: Send + Sync + 'static {
    /// Decides whether to let a client in, before the `101`, with I/O of its own: asking
    /// an app over HTTP, a database, a token service. Return `None` to let it in at once
    /// (the default), or a future that gives the [`Admission`]; a refusal answers the
    /// client with that HTTP status, so a browser's WebSocket never opens (RFC 6455
    /// section 4.1). `id` is the id the connection will have in [`Handler::on_open`].
    ///
    /// [`Server::connection`](crate::Server::connection) (and so `smol::Server` and
    /// `tokio::Server`) calls it between accepting and serving, within
    /// [`Limits::handshake_timeout`](crate::Limits::handshake_timeout) (past it, the client
    /// gets 503). Code that calls [`Acceptor::accept`](crate::Acceptor::accept) itself calls it
    /// the same way, then [`Accepted::serve`](crate::Accepted::serve) or
    /// [`Accepted::refuse`](crate::Accepted::refuse).
    fn admit(&self, id: ConnectionId, request: &Request) -> Option<AdmitFuture> {
        let _ = (id, request);
        None
    }

    /// A connection finished its opening handshake. `conn.request()` has the request facts.
    ///
    /// This runs before the client receives the `101 Switching Protocols` answer: by the
    /// time the client sees the connection open, whatever this registered (a Hub group, a
    /// user) is in place, so no message sent after that point can miss it.
    fn on_open(&self, conn: &Connection) {
        let _ = conn;
    }

    /// A text or binary message arrived (RFC 6455 section 6.2). Pings and pongs are
    /// answered by the session loop and do not reach the handler.
    ///
    /// [`Hub`](crate::Hub) sends made from here apply backpressure: a recipient whose
    /// queue is full does not lose the message and is not closed at once; instead this
    /// connection stops reading until the recipient has room (see
    /// [`Limits::backpressure_timeout`](crate::Limits::backpressure_timeout)).
    fn on_message(&self, conn: &Connection, msg: Message);

    /// The connection ended. `close` is the close frame the peer sent (code and reason,
    /// RFC 6455 section 7.1.5), or `None` when it sent none (the TCP connection
    /// dropped, or the session failed it with its own close code).
    fn on_close(&self, conn: &Connection, close: Option<&CloseFrame>) {
        let _ = (conn, close);
    }
}

/// What [`Handler::admit`] returns: a future that decides whether a client gets in.
pub type AdmitFuture = Pin<Box<dyn Future<Output = Admission> + Send + 'static>>;

/// Whether a client gets in, as [`Handler::admit`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Admission {
    /// Let it in: the `101` goes out and [`Handler::on_open`] runs.
    Accept,
    /// Let it in speaking this subprotocol, one the client offered (RFC 6455 section
    /// 4.2.2), in place of [`Config::subprotocols`](crate::Config::subprotocols)' choice.
    AcceptSubprotocol(String),
    /// Keep it out with this HTTP status (400 to 599) and a plain-text reason as the body.
    Refuse {
        /// The HTTP status, such as 401, 403, or 503 when the one who decides is unreachable.
        status: u16,
        /// Why, in plain words (the response body, and the server's log line).
        reason: String,
    },
}

/// Why a message could not be queued on a [`Connection`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// The send queue holds [`Limits::send_queue_bytes`](crate::Limits::send_queue_bytes)
    /// already: the client reads slower than you send. The message was not queued.
    Full,
    /// The connection is closing or closed. The message was not queued.
    Closed,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::Full => "send queue full: the client reads slower than messages are sent",
            SendError::Closed => "connection closed",
        })
    }
}

impl std::error::Error for SendError {}

/// A connection's id: unique in this process, never reused (a counter from 1; with a Redis
/// link, tagged so that it is unique across the linked instances, see [`crate::redis`]).
///
/// ```
/// # use wssd::ConnectionId;
/// fn log_line(id: ConnectionId) -> String {
///     format!("connection {id}") // "connection 42"
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(u64);

impl From<u64> for ConnectionId {
    /// The id whose [`ConnectionId::get`] is `n`, such as one an app sent back (it names
    /// a connection only if one has that id).
    fn from(n: u64) -> Self {
        ConnectionId(n)
    }
}

impl ConnectionId {
    /// The number behind the id, for logs, maps and wire formats of your own.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A cloneable handle to one live connection: its id, its request facts, and its send queue.
///
/// Clone it into any task (any executor) and send from there; the connection's
/// own task writes queued messages in order, several per flush.
#[derive(Clone)]
pub struct Connection {
    shared: Arc<Shared>,
}

#[repr(C)] // in this order: the fields each message touches share the first cache lines
struct Shared {
    /// Set when a message is queued or the queue closes (after the queue's lock is
    /// released), cleared by the session when it takes them: the session's poll looks
    /// here, not at the lock, when there is nothing to do.
    work: AtomicBool,
    /// Set when the heartbeat timer fires (through the waker it was given, [`Shared`]'s own):
    /// the session polls its timer, and reads the clock, only then.
    tick_due: AtomicBool,
    /// The session task, woken when `work` or `tick_due` is set while it sleeps.
    waker: AtomicWaker,
    /// Whether the session task is running (or about to): cleared just before it sleeps.
    /// Setters of `work` and `tick_due` skip the wake-up while it is set, so a send from
    /// the task's own callbacks costs no trip through the executor. The `SeqCst` pair (flag
    /// set, then `awake` read here; `awake` cleared, then the flags read by the session)
    /// makes sure one of the two sides sees the other.
    awake: AtomicBool,
    id: ConnectionId,
    /// The queue's cap, in bytes.
    queue_limit: usize,
    /// `request.deflate`, here beside what a send reads.
    deflate: Option<crate::deflate::Agreed>,
    queue: Mutex<Queue>,
    /// Notified as queued bytes are written, for senders waiting for room.
    room: Event,
    /// The hubs this connection was added to; it leaves them when its session ends.
    hubs: Mutex<Vec<Weak<dyn Registry>>>,
    request: Request,
}

/// The heartbeat timer's waker: notes the tick, then wakes the session.
impl std::task::Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.tick_due.store(true, Ordering::SeqCst);
        self.notify();
    }
}

impl Shared {
    /// Wakes the session task if it sleeps; called after `work` or `tick_due` was set.
    fn notify(&self) {
        if !self.awake.load(Ordering::SeqCst) {
            self.waker.wake();
        }
    }
}

/// The send queue.
#[derive(Default)]
struct Queue {
    messages: VecDeque<Message>,
    /// Payload bytes queued and not yet written (those being written included).
    bytes: usize,
    /// No more sends: [`Connection::close`] was called, or the session ended.
    closed: bool,
    /// The close frame asked for by [`Connection::close`], sent after the queue drains.
    close: Option<CloseFrame>,
    /// Since when the session has been writing what it took from the queue (`None` while
    /// it is not): a client that stopped reading shows here before its queue fills.
    writing_since: Option<Instant>,
    /// A push was refused for want of room since the last drain: a sender may be waiting on
    /// `room`. Every waiter listens before the push that fails (and sets this), so the drain
    /// that takes it under the lock and then notifies wakes them all; drains that find it
    /// clear skip the notification (event-listener's `notify` allocates the event's state at
    /// its first call and takes its lock at every call, waiter or not).
    refused: bool,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.shared.id)
            .field("peer_addr", &self.shared.request.peer_addr)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// This connection's id: unique in this process, never reused.
    ///
    /// ```
    /// # use wssd::{CloseCode, Connection, Handler, Hub, Message, SendError};
    /// # struct Keep(async_channel::Sender<Connection>);
    /// # impl Handler for Keep {
    /// #     fn on_open(&self, c: &Connection) { self.0.try_send(c.clone()).unwrap(); }
    /// #     fn on_message(&self, _: &Connection, _: Message) {}
    /// # }
    /// # let conn = smol::block_on(async {
    /// #     let l = smol::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    /// #     let a = l.local_addr().unwrap();
    /// #     smol::spawn(async move {
    /// #         let t = smol::net::TcpStream::connect(a).await.unwrap();
    /// #         let (mut ws, _) = async_tungstenite::client_async("ws://localhost/", t).await.unwrap();
    /// #         while futures_util::StreamExt::next(&mut ws).await.is_some() {}
    /// #     }).detach();
    /// #     let (s, p) = l.accept().await.unwrap();
    /// #     let (tx, rx) = async_channel::bounded(1);
    /// #     smol::spawn(async move {
    /// #         let accepted = wssd::Acceptor::new(wssd::Config::default()).accept(s, p).await.unwrap();
    /// #         accepted.serve(&Keep(tx)).await;
    /// #     }).detach();
    /// #     rx.recv().await.unwrap()
    /// # });
    /// assert!(conn.id().get() >= 1);
    /// let same = conn.clone();
    /// assert_eq!(same.id(), conn.id());
    /// ```
    pub fn id(&self) -> ConnectionId {
        self.shared.id
    }

    /// The facts of the request that opened this connection.
    ///
    /// ```
    /// # use wssd::{CloseCode, Connection, Handler, Hub, Message, SendError};
    /// # struct Keep(async_channel::Sender<Connection>);
    /// # impl Handler for Keep {
    /// #     fn on_open(&self, c: &Connection) { self.0.try_send(c.clone()).unwrap(); }
    /// #     fn on_message(&self, _: &Connection, _: Message) {}
    /// # }
    /// # let conn = smol::block_on(async {
    /// #     let l = smol::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    /// #     let a = l.local_addr().unwrap();
    /// #     smol::spawn(async move {
    /// #         let t = smol::net::TcpStream::connect(a).await.unwrap();
    /// #         let (mut ws, _) = async_tungstenite::client_async("ws://localhost/", t).await.unwrap();
    /// #         while futures_util::StreamExt::next(&mut ws).await.is_some() {}
    /// #     }).detach();
    /// #     let (s, p) = l.accept().await.unwrap();
    /// #     let (tx, rx) = async_channel::bounded(1);
    /// #     smol::spawn(async move {
    /// #         let accepted = wssd::Acceptor::new(wssd::Config::default()).accept(s, p).await.unwrap();
    /// #         accepted.serve(&Keep(tx)).await;
    /// #     }).detach();
    /// #     rx.recv().await.unwrap()
    /// # });
    /// assert_eq!(conn.request().path, "/");
    /// println!("{} asked for {}", conn.request().client_ip, conn.request().path);
    /// ```
    pub fn request(&self) -> &Request {
        &self.shared.request
    }

    /// Queues a message without waiting.
    ///
    /// # Errors
    /// [`SendError::Full`] when the send queue has no room for it, [`SendError::Closed`]
    /// when the connection is closing or gone. The message is then not queued; nothing
    /// is dropped silently.
    ///
    /// ```
    /// # use wssd::{CloseCode, Connection, Handler, Hub, Message, SendError};
    /// # struct Keep(async_channel::Sender<Connection>);
    /// # impl Handler for Keep {
    /// #     fn on_open(&self, c: &Connection) { self.0.try_send(c.clone()).unwrap(); }
    /// #     fn on_message(&self, _: &Connection, _: Message) {}
    /// # }
    /// # let conn = smol::block_on(async {
    /// #     let l = smol::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    /// #     let a = l.local_addr().unwrap();
    /// #     smol::spawn(async move {
    /// #         let t = smol::net::TcpStream::connect(a).await.unwrap();
    /// #         let (mut ws, _) = async_tungstenite::client_async("ws://localhost/", t).await.unwrap();
    /// #         while futures_util::StreamExt::next(&mut ws).await.is_some() {}
    /// #     }).detach();
    /// #     let (s, p) = l.accept().await.unwrap();
    /// #     let (tx, rx) = async_channel::bounded(1);
    /// #     smol::spawn(async move {
    /// #         let accepted = wssd::Acceptor::new(wssd::Config::default()).accept(s, p).await.unwrap();
    /// #         accepted.serve(&Keep(tx)).await;
    /// #     }).detach();
    /// #     rx.recv().await.unwrap()
    /// # });
    /// conn.try_send(Message::text("hello"))?;
    /// # Ok::<(), SendError>(())
    /// ```
    pub fn try_send(&self, msg: Message) -> Result<(), SendError> {
        self.push(msg).map_err(|(e, _)| e)
    }

    /// Queues a message, waiting while the send queue is full (backpressure).
    ///
    /// Do not await this inside a [`Handler`] callback for the same connection:
    /// the callback runs on the task that empties the queue. Use [`Connection::try_send`] there.
    ///
    /// # Errors
    /// [`SendError::Closed`] when the connection is closing or gone.
    ///
    /// ```
    /// # use wssd::{CloseCode, Connection, Handler, Hub, Message, SendError};
    /// # struct Keep(async_channel::Sender<Connection>);
    /// # impl Handler for Keep {
    /// #     fn on_open(&self, c: &Connection) { self.0.try_send(c.clone()).unwrap(); }
    /// #     fn on_message(&self, _: &Connection, _: Message) {}
    /// # }
    /// # let conn = smol::block_on(async {
    /// #     let l = smol::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    /// #     let a = l.local_addr().unwrap();
    /// #     smol::spawn(async move {
    /// #         let t = smol::net::TcpStream::connect(a).await.unwrap();
    /// #         let (mut ws, _) = async_tungstenite::client_async("ws://localhost/", t).await.unwrap();
    /// #         while futures_util::StreamExt::next(&mut ws).await.is_some() {}
    /// #     }).detach();
    /// #     let (s, p) = l.accept().await.unwrap();
    /// #     let (tx, rx) = async_channel::bounded(1);
    /// #     smol::spawn(async move {
    /// #         let accepted = wssd::Acceptor::new(wssd::Config::default()).accept(s, p).await.unwrap();
    /// #         accepted.serve(&Keep(tx)).await;
    /// #     }).detach();
    /// #     rx.recv().await.unwrap()
    /// # });
    /// // From a task of your own (not from a Handler callback of this connection):
    /// smol::block_on(conn.send(Message::text("hello")))?;
    /// # Ok::<(), SendError>(())
    /// ```
    pub async fn send(&self, mut msg: Message) -> Result<(), SendError> {
        loop {
            // Listen before trying, so that room made in between is not missed.
            let room = self.shared.room.listen();
            match self.push(msg) {
                Err((SendError::Full, back)) => msg = back,
                done => return done.map_err(|(e, _)| e),
            }
            room.await;
        }
    }

    /// Queues `msg` if there is room; on failure, hands it back.
    fn push(&self, msg: Message) -> Result<(), (SendError, Message)> {
        self.push_with(msg, true)
    }

    /// Queues `msg`, past the cap unless `capped`: for messages a sender had taken in
    /// and was waiting to deliver when it went away (few: one callback's worth).
    fn push_with(&self, msg: Message, capped: bool) -> Result<(), (SendError, Message)> {
        let size = payload_len(&msg);
        let mut queue = self.queue();
        if queue.closed {
            return Err((SendError::Closed, msg));
        }
        // One message larger than the whole cap still fits into an empty queue.
        if capped && queue.bytes > 0 && queue.bytes + size > self.shared.queue_limit {
            queue.refused = true;
            return Err((SendError::Full, msg));
        }
        queue.bytes += size;
        crate::frames::take_room(&SPARE_QUEUE, &mut queue.messages);
        queue.messages.push_back(msg);
        drop(queue);
        self.wake_session();
        Ok(())
    }

    /// The payload bytes queued on this connection and not yet written, in bytes.
    ///
    /// ```
    /// # use wssd::{CloseCode, Connection, Handler, Hub, Message, SendError};
    /// # struct Keep(async_channel::Sender<Connection>);
    /// # impl Handler for Keep {
    /// #     fn on_open(&self, c: &Connection) { self.0.try_send(c.clone()).unwrap(); }
    /// #     fn on_message(&self, _: &Connection, _: Message) {}
    /// # }
    /// # let conn = smol::block_on(async {
    /// #     let l = smol::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    /// #     let a = l.local_addr().unwrap();
    /// #     smol::spawn(async move {
    /// #         let t = smol::net::TcpStream::connect(a).await.unwrap();
    /// #         let (mut ws, _) = async_tungstenite::client_async("ws://localhost/", t).await.unwrap();
    /// #         while futures_util::StreamExt::next(&mut ws).await.is_some() {}
    /// #     }).detach();
    /// #     let (s, p) = l.accept().await.unwrap();
    /// #     let (tx, rx) = async_channel::bounded(1);
    /// #     smol::spawn(async move {
    /// #         let accepted = wssd::Acceptor::new(wssd::Config::default()).accept(s, p).await.unwrap();
    /// #         accepted.serve(&Keep(tx)).await;
    /// #     }).detach();
    /// #     rx.recv().await.unwrap()
    /// # });
    /// conn.try_send(Message::text("hello"))?;
    /// assert!(conn.buffered_bytes() <= 5); // 5 until written, then 0
    /// # Ok::<(), SendError>(())
    /// ```
    pub fn buffered_bytes(&self) -> usize {
        self.queue().bytes
    }

    /// Starts the closing handshake (RFC 6455 section 7.1.2) with this close code and reason.
    ///
    /// Messages queued before this call are written first; later sends fail with
    /// [`SendError::Closed`]. The reason is at most 123 bytes of UTF-8 (RFC 6455 section 5.5).
    /// Closing twice keeps the first code. Returns whether this call started the closing
    /// (`false` when the connection was closing or closed already).
    ///
    /// ```
    /// # use wssd::{CloseCode, Connection, Handler, Hub, Message, SendError};
    /// # struct Keep(async_channel::Sender<Connection>);
    /// # impl Handler for Keep {
    /// #     fn on_open(&self, c: &Connection) { self.0.try_send(c.clone()).unwrap(); }
    /// #     fn on_message(&self, _: &Connection, _: Message) {}
    /// # }
    /// # let conn = smol::block_on(async {
    /// #     let l = smol::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    /// #     let a = l.local_addr().unwrap();
    /// #     smol::spawn(async move {
    /// #         let t = smol::net::TcpStream::connect(a).await.unwrap();
    /// #         let (mut ws, _) = async_tungstenite::client_async("ws://localhost/", t).await.unwrap();
    /// #         while futures_util::StreamExt::next(&mut ws).await.is_some() {}
    /// #     }).detach();
    /// #     let (s, p) = l.accept().await.unwrap();
    /// #     let (tx, rx) = async_channel::bounded(1);
    /// #     smol::spawn(async move {
    /// #         let accepted = wssd::Acceptor::new(wssd::Config::default()).accept(s, p).await.unwrap();
    /// #         accepted.serve(&Keep(tx)).await;
    /// #     }).detach();
    /// #     rx.recv().await.unwrap()
    /// # });
    /// assert!(conn.close(CloseCode::Normal, "bye"));
    /// assert!(!conn.close(CloseCode::Away, "again")); // the first code stays
    /// assert_eq!(conn.try_send(Message::text("late")), Err(SendError::Closed));
    /// ```
    pub fn close(&self, code: CloseCode, reason: &str) -> bool {
        let mut queue = self.queue();
        if queue.closed {
            return false;
        }
        queue.closed = true;
        queue.close = Some(CloseFrame {
            code,
            reason: truncate_reason(reason).into(),
        });
        drop(queue);
        self.wake_session();
        self.shared.room.notify(usize::MAX);
        true
    }

    /// Closes this connection with 1013 (try again later, RFC 6455 section 7.4.1) because
    /// its send queue stays full: the client reads slower than it is sent to. The first call
    /// logs one warning (with the bytes queued and a running count, see
    /// [`hub::slow_consumers_closed`](crate::hub::slow_consumers_closed)); later calls, for
    /// the messages that keep coming while it closes, do nothing. Returns whether this call
    /// closed it.
    ///
    /// ```
    /// # use wssd::{CloseCode, Connection, Handler, Hub, Message, SendError};
    /// # struct Keep(async_channel::Sender<Connection>);
    /// # impl Handler for Keep {
    /// #     fn on_open(&self, c: &Connection) { self.0.try_send(c.clone()).unwrap(); }
    /// #     fn on_message(&self, _: &Connection, _: Message) {}
    /// # }
    /// # let conn = smol::block_on(async {
    /// #     let l = smol::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    /// #     let a = l.local_addr().unwrap();
    /// #     smol::spawn(async move {
    /// #         let t = smol::net::TcpStream::connect(a).await.unwrap();
    /// #         let (mut ws, _) = async_tungstenite::client_async("ws://localhost/", t).await.unwrap();
    /// #         while futures_util::StreamExt::next(&mut ws).await.is_some() {}
    /// #     }).detach();
    /// #     let (s, p) = l.accept().await.unwrap();
    /// #     let (tx, rx) = async_channel::bounded(1);
    /// #     smol::spawn(async move {
    /// #         let accepted = wssd::Acceptor::new(wssd::Config::default()).accept(s, p).await.unwrap();
    /// #         accepted.serve(&Keep(tx)).await;
    /// #     }).detach();
    /// #     rx.recv().await.unwrap()
    /// # });
    /// if conn.try_send(Message::text("hello")) == Err(SendError::Full) {
    ///     conn.close_slow();
    /// }
    /// assert!(conn.close_slow()); // the first call closes and logs
    /// assert!(!conn.close_slow()); // later ones do nothing
    /// ```
    pub fn close_slow(&self) -> bool {
        let queued = self.buffered_bytes();
        let first = self.close(CloseCode::Again, "send queue full: reading too slowly");
        if first {
            let total = SLOW_CONSUMERS.fetch_add(1, Ordering::Relaxed) + 1;
            log::warn!(
                "{}: send queue full ({queued} bytes): the client reads too slowly; closing with 1013 ({total} slow clients closed so far)",
                self.request().client_ip,
            );
        }
        first
    }

    /// Holds reading from this client until `until` completes: call it from this
    /// connection's [`Handler::on_message`], to apply backpressure while the message is on
    /// its way somewhere slow (an app behind an HTTP call, a bounded queue that is full).
    /// The client's next frames wait in the socket and then in TCP (its sends slow down)
    /// instead of being read and dropped. Writes to it, pings and the idle timeout go on
    /// meanwhile. Several holds in one `on_message` complete in order.
    ///
    /// When the connection ends while a hold is pending, the session waits for it up to
    /// [`Limits::backpressure_timeout`](crate::Limits::backpressure_timeout), so that what
    /// was taken in reaches its destination.
    ///
    /// Returns `false`, and drops `until`, outside this connection's `on_message`.
    pub fn hold_reads(&self, until: impl Future<Output = ()> + Send + 'static) -> bool {
        DEFERRED.with(|deferred| {
            let mut deferred = deferred.borrow_mut();
            let Some(d) = deferred.as_mut().filter(|d| d.id == self.id()) else {
                return false;
            };
            d.held = Some(match d.held.take() {
                None => Box::pin(until),
                Some(before) => Box::pin(async move {
                    before.await;
                    until.await;
                }),
            });
            true
        })
    }

    /// Whether the connection is closing or closed: sends fail with [`SendError::Closed`].
    ///
    /// ```
    /// # use wssd::{CloseCode, Connection, Handler, Hub, Message, SendError};
    /// # struct Keep(async_channel::Sender<Connection>);
    /// # impl Handler for Keep {
    /// #     fn on_open(&self, c: &Connection) { self.0.try_send(c.clone()).unwrap(); }
    /// #     fn on_message(&self, _: &Connection, _: Message) {}
    /// # }
    /// # let conn = smol::block_on(async {
    /// #     let l = smol::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    /// #     let a = l.local_addr().unwrap();
    /// #     smol::spawn(async move {
    /// #         let t = smol::net::TcpStream::connect(a).await.unwrap();
    /// #         let (mut ws, _) = async_tungstenite::client_async("ws://localhost/", t).await.unwrap();
    /// #         while futures_util::StreamExt::next(&mut ws).await.is_some() {}
    /// #     }).detach();
    /// #     let (s, p) = l.accept().await.unwrap();
    /// #     let (tx, rx) = async_channel::bounded(1);
    /// #     smol::spawn(async move {
    /// #         let accepted = wssd::Acceptor::new(wssd::Config::default()).accept(s, p).await.unwrap();
    /// #         accepted.serve(&Keep(tx)).await;
    /// #     }).detach();
    /// #     rx.recv().await.unwrap()
    /// # });
    /// assert!(!conn.is_closed());
    /// conn.close(CloseCode::Normal, "bye");
    /// assert!(conn.is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        self.queue().closed
    }

    /// Tells the session there is work: a message queued, or the queue closed.
    fn wake_session(&self) {
        self.shared.work.store(true, Ordering::SeqCst);
        self.shared.notify();
    }

    /// Notes that `hub` holds this connection, so that it leaves when its session ends.
    pub(crate) fn joined_hub(&self, hub: Weak<dyn Registry>) {
        let mut hubs = self.shared.hubs.lock().unwrap_or_else(|e| e.into_inner());
        hubs.retain(|h| h.strong_count() > 0);
        hubs.push(hub);
    }

    /// Notified when queued bytes are written, or the queue closes.
    pub(crate) fn listen_for_room(&self) -> EventListener {
        self.shared.room.listen()
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.shared.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A registry of connections (the Hub) that a connection leaves when its session ends.
pub(crate) trait Registry: Send + Sync {
    /// Forgets the connection `id`, and its user and groups.
    fn forget(&self, id: ConnectionId);
}

/// Connections closed by [`Connection::close_slow`]; read by `hub::slow_consumers_closed`.
pub(crate) static SLOW_CONSUMERS: AtomicU64 = AtomicU64::new(0);

/// What a finished session did, for the close log line.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct SessionSummary {
    /// Text and binary messages received.
    pub messages_in: u64,
    /// Messages written from the send queue.
    pub messages_out: u64,
    /// The close code that ended the session: the peer's, ours, or `None` when the TCP
    /// connection simply dropped (1006 semantics, RFC 6455 section 7.1.5).
    pub close_code: Option<CloseCode>,
    /// What went wrong, in plain words, if something did. Anything the peer sent is escaped.
    pub error: Option<String>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Bits 33 to 52 of every new id: this instance's tag, once linked to other instances.
static INSTANCE_TAG: AtomicU64 = AtomicU64::new(0);

/// A new connection id, never given before in this process: the instance tag, if any,
/// and a counter from 1 (2^33 ids before it would wrap into the tag).
pub(crate) fn next_id() -> ConnectionId {
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed) & ((1 << 33) - 1);
    ConnectionId(INSTANCE_TAG.load(Ordering::Relaxed) | n)
}

/// Tags the ids of connections from now on with 20 bits of `instance` (bits 33 to 52),
/// so that ids are unique across linked instances and exact as JSON numbers (below 2^53).
#[cfg(feature = "redis")]
pub(crate) fn set_instance_tag(instance: u64) {
    let tag = (instance & ((1 << 20) - 1)).max(1) << 33;
    INSTANCE_TAG.store(tag, Ordering::Relaxed);
}

/// How many events in a row a session handles without waiting before it yields to its
/// executor, so that a client whose socket always has data cannot starve the others.
const BUDGET: u32 = 64;

/// Runs one connection until it closes: reads frames and hands messages to `handler`,
/// writes what is queued on its [`Connection`], and does the close handshake.
///
/// Queued messages are written several per flush (corking): those queued while frames
/// keep arriving leave together once no frame waits to be read. Client pings are answered with pongs (RFC 6455 section 5.5.2); a client that does
/// not read them is not read from either, and is dropped after [`Limits::idle_timeout`].
/// The server pings every [`Limits::ping_interval`] and closes with 1001 a connection
/// silent for [`Limits::idle_timeout`], with pings on or off. A protocol violation is
/// answered with close code 1002, invalid UTF-8 in a text message with 1007, and a
/// message or frame over the limits with 1009 (RFC 6455 section 7.4.1). Every write has
/// the idle timeout as its deadline, and waiting for the peer's close frame
/// [`Limits::close_timeout`].
pub(crate) fn serve_as<'a, S, H>(
    id: ConnectionId,
    ws: Frames<S>,
    request: Request,
    handler: &'a H,
    limits: &Limits,
) -> impl Future<Output = SessionSummary> + Send + use<'a, S, H>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'a,
    H: Handler + ?Sized,
{
    // The session is built here and moved into the one future that runs it: the
    // connection's task holds its state once, not once per layer of async functions.
    Session::new(id, ws, request, limits).run(handler)
}

/// One connection's state between steps of the loop.
struct Session<S> {
    ws: Frames<S>,
    conn: Connection,
    limits: Timeouts,
    summary: SessionSummary,
    /// When anything (a message, a ping, a pong) last arrived, as of the heartbeat tick that
    /// noted it (no clock read per frame: `heard` is set, and each tick turns it into a time).
    last_heard: Instant,
    heard: bool,
    /// Fires every ping interval (or, with pings off, every idle timeout) to check idleness.
    ticks: Timer,
    /// The deadline of the write or wait under way.
    deadline: Timer,
    /// Messages this session's handler sent to recipients whose queues were full; reading
    /// pauses until they are queued, or the recipient is closed at `blocked_until`.
    blocked: Vec<Blocked>,
    /// Made at the first wait on a full recipient (most connections never make one).
    blocked_until: Option<Box<Timer>>,
    /// What the handler's `on_message` holds reading for ([`Connection::hold_reads`]).
    held: Option<Held>,
    /// The queued messages taken out for writing, by `poll_work` under the queue's lock
    /// (empty, without an allocation, between
    /// drains: an idle connection holds no queue).
    spare: VecDeque<Message>,
    /// Messages were handed to the WebSocket layer and not flushed yet.
    unflushed: bool,
    /// The write under way could not finish at once (`writing_since` is set).
    stuck: bool,
    /// Events handled in a row without waiting.
    hot: u32,
    /// Payload bytes in and out, for [`crate::stats`].
    bytes_in: u64,
    bytes_out: u64,
    /// What of the counts [`crate::stats`] has been given: messages and bytes, in and out.
    published: [u64; 4],
}

/// The limits of [`Limits`] that the session loop applies itself (the others belong to the
/// accept path and the frame layer): kept apart, as the connection's state holds them.
#[derive(Clone, Copy)]
struct Timeouts {
    ping_interval: Duration,
    idle_timeout: Duration,
    close_timeout: Duration,
    backpressure_timeout: Duration,
}

/// A recipient's full queue that the sending session waits on.
struct Blocked {
    conn: Connection,
    /// When the recipient is closed if it has made no room: the backpressure timeout after
    /// it started the write it is stuck in (or after the send, if it is not writing).
    deadline: Instant,
    messages: VecDeque<Message>,
    room: Option<EventListener>,
}

/// What woke the session.
enum Wake {
    Queued,
    /// No frame waits to be read (or reading is held): time to write what was queued.
    Flush,
    QueueClosed,
    Frame(Option<Result<Message, tungstenite::Error>>),
    Tick,
    Unblocked,
    BlockedTimeout,
}

/// A future that reading from the client waits for.
type Held = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The sends a handler's `on_message` made to full queues, while it runs on this thread.
struct Deferred {
    /// The connection whose `on_message` runs.
    id: ConnectionId,
    blocked: Vec<Blocked>,
    held: Option<Held>,
    /// The sending session's [`Limits::backpressure_timeout`].
    timeout: Duration,
}

thread_local! {
    static DEFERRED: RefCell<Option<Deferred>> = const { RefCell::new(None) };
    /// A send queue's room, left by the session that took its messages and wrote them,
    /// and taken by the next send into an empty queue on this thread: no allocation per
    /// message, and none held by an idle connection.
    static SPARE_QUEUE: Cell<VecDeque<Message>> = const { Cell::new(VecDeque::new()) };
}

/// Clears [`DEFERRED`] when dropped, also when a handler's `on_message` panics: an executor
/// that catches the panic (tokio does) goes on running other tasks on this thread, and their
/// Hub sends must close a full recipient with 1013, not defer it to a session that is gone.
struct ClearDeferred;

impl ClearDeferred {
    /// Takes what `on_message` deferred, which leaves [`DEFERRED`] clear.
    fn take(self) -> Option<Deferred> {
        std::mem::forget(self); // nothing left to clear
        DEFERRED.with(|d| d.borrow_mut().take())
    }
}

impl Drop for ClearDeferred {
    fn drop(&mut self) {
        let _ = DEFERRED.try_with(|d| d.borrow_mut().take());
    }
}

/// Queues `msg` for each of `recipients` (the Hub's sends), and returns for how many.
///
/// Inside a handler's `on_message`, a recipient whose queue is full (or that this sender
/// waits on already, to keep the order) gets the message later: the sending session stops
/// reading until it is queued. Anywhere else a full recipient is closed with 1013.
pub(crate) fn send_all(recipients: Vec<Connection>, msg: &Message) -> usize {
    // Compressed at most once, for all the recipients that agreed on permessage-deflate.
    let mut shared = crate::deflate::OneToMany::new(msg);
    DEFERRED.with(|deferred| {
        let mut deferred = deferred.borrow_mut();
        let mut queued = 0;
        for conn in recipients {
            let waiting = deferred
                .as_mut()
                .and_then(|d| d.blocked.iter_mut().find(|b| b.conn.id() == conn.id()));
            let msg = shared.get(conn.shared.deflate.as_ref());
            if let Some(b) = waiting {
                b.messages.push_back(msg);
                queued += 1;
                continue;
            }
            match (conn.push(msg), deferred.as_mut()) {
                (Ok(()), _) => queued += 1,
                (Err((SendError::Full, back)), Some(d)) => {
                    let since = conn.queue().writing_since.unwrap_or_else(Instant::now);
                    d.blocked.push(Blocked {
                        deadline: since + d.timeout,
                        conn,
                        messages: VecDeque::from([back]),
                        room: None,
                    });
                    queued += 1;
                }
                (Err((SendError::Full, _)), None) => {
                    conn.close_slow();
                }
                (Err(_), _) => {}
            }
        }
        queued
    })
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    fn new(id: ConnectionId, ws: Frames<S>, request: Request, limits: &Limits) -> Self {
        let check = if limits.ping_interval.is_zero() {
            limits.idle_timeout
        } else {
            limits.ping_interval
        };
        let conn = Connection {
            shared: Arc::new(Shared {
                id,
                deflate: request.deflate,
                request,
                queue: Mutex::new(Queue::default()),
                queue_limit: limits.send_queue_bytes,
                room: Event::new(),
                work: AtomicBool::new(false),
                waker: AtomicWaker::new(),
                awake: AtomicBool::new(true),
                hubs: Mutex::new(Vec::new()),
                // Due at first: the first poll gives the timer its waker.
                tick_due: AtomicBool::new(true),
            }),
        };
        Session {
            ws,
            conn,
            limits: Timeouts {
                ping_interval: limits.ping_interval,
                idle_timeout: limits.idle_timeout,
                close_timeout: limits.close_timeout,
                backpressure_timeout: limits.backpressure_timeout,
            },
            summary: SessionSummary::default(),
            last_heard: Instant::now(),
            heard: false,
            ticks: if check.is_zero() {
                Timer::never()
            } else {
                Timer::interval(check)
            },
            deadline: Timer::never(),
            blocked: Vec::new(),
            blocked_until: None,
            held: None,
            spare: VecDeque::new(),
            unflushed: false,
            stuck: false,
            hot: 0,
            bytes_in: 0,
            bytes_out: 0,
            published: [0; 4],
        }
    }

    async fn run<H: Handler + ?Sized>(mut self, handler: &H) -> SessionSummary {
        let mut peer_close = None;
        // The rare steps (open, heartbeat, close) run boxed: the connection's future holds
        // only what its common steps need, which is part of what an idle connection costs.
        if Box::pin(self.open(handler)).await {
            peer_close = self.main_loop(handler).await;
        }
        // Our side ends with TLS's close_notify (RFC 8446 section 6.1) and TCP's FIN, within
        // the close timeout (a peer that reads nothing does not hold us).
        {
            let limit = self.limits.close_timeout;
            let ws = &mut self.ws;
            let _ = Box::pin(within(&mut self.deadline, limit, ws.shutdown())).await;
        }
        // No more sends; what is still queued is freed now.
        self.close_queue();
        // A `Connection` the app keeps must not keep this task's memory through its waker.
        drop(self.conn.shared.waker.take());
        // Messages this connection sent and that wait for a full recipient are delivered
        // all the same: what was taken in is not lost because its sender left.
        for b in self.blocked.drain(..) {
            for msg in b.messages {
                let _ = b.conn.push_with(msg, false);
            }
        }
        // And what the handler held reading for (a message on its way to an app) gets
        // the backpressure timeout to finish.
        if let Some(held) = self.held.take() {
            let limit = self.limits.backpressure_timeout;
            let _ = Box::pin(within(&mut self.deadline, limit, held)).await;
        }
        self.publish_stats();
        handler.on_close(&self.conn, peer_close.as_ref());
        // Leaves every Hub it was added to, whether or not the handler removed it.
        self.leave_hubs();
        std::mem::take(&mut self.summary)
    }

    /// Adds to the process-wide counters what this session counted since it last did: at
    /// each heartbeat tick and at the end, not per message (shared counters would be a
    /// contended write per message across threads).
    fn publish_stats(&mut self) {
        use crate::stats::{BYTES_IN, BYTES_OUT, MESSAGES_IN, MESSAGES_OUT, add};
        let now = [
            self.summary.messages_in,
            self.bytes_in,
            self.summary.messages_out,
            self.bytes_out,
        ];
        for ((counter, now), before) in [&MESSAGES_IN, &BYTES_IN, &MESSAGES_OUT, &BYTES_OUT]
            .into_iter()
            .zip(now)
            .zip(&mut self.published)
        {
            add(counter, now - *before);
            *before = now;
        }
    }

    /// Lets the handler see the connection, then sends the `101`: whatever `on_open`
    /// registered is in place before the client learns the connection is open.
    async fn open<H: Handler + ?Sized>(&mut self, handler: &H) -> bool {
        handler.on_open(&self.conn);
        let limit = self.limits.idle_timeout;
        match within(&mut self.deadline, limit, self.ws.flush()).await {
            Some(Ok(())) => true,
            Some(Err(e)) => {
                self.summary.error = Some(format!(
                    "the opening handshake's answer could not be sent: {e}"
                ));
                false
            }
            None => {
                self.summary.error = Some(format!(
                    "the opening handshake's answer could not be sent in {} s: dropped",
                    limit.as_secs()
                ));
                false
            }
        }
    }

    /// Runs the steps until the connection ends; returns the peer's close frame, if any.
    async fn main_loop<H: Handler + ?Sized>(&mut self, handler: &H) -> Option<CloseFrame> {
        loop {
            if self.hot >= BUDGET {
                self.hot = 0;
                if self.unflushed && !self.flush().await {
                    return None;
                }
                future::yield_now().await;
            }
            match self.next_event().await {
                Wake::Queued => {
                    if !self.drain().await {
                        return None;
                    }
                }
                Wake::Flush => {
                    if !self.flush().await {
                        return None;
                    }
                }
                Wake::QueueClosed => {
                    // Connection::close was called and the queue is drained.
                    if !self.drain().await || !self.flush().await {
                        return None;
                    }
                    let frame = self.conn.queue().close.take();
                    self.summary.close_code = frame.as_ref().map(|f| f.code);
                    Box::pin(self.close(frame)).await;
                    return None;
                }
                Wake::Tick => {
                    self.publish_stats();
                    if !Box::pin(self.heartbeat()).await {
                        return None;
                    }
                }
                Wake::Unblocked => {}
                Wake::BlockedTimeout => self.give_up_on_blocked(),
                Wake::Frame(None) => return None,
                Wake::Frame(Some(Ok(msg))) => {
                    self.heard = true;
                    match self.on_frame(handler, msg).await {
                        Ok(()) => {}
                        Err(peer_close) => return peer_close,
                    }
                }
                Wake::Frame(Some(Err(e))) => {
                    if let Some(code) = fail_code(&e) {
                        let reason = truncate_reason(&e.to_string()).to_owned();
                        Box::pin(self.fail(code, reason)).await;
                    }
                    // A peer that just goes away is ordinary (phones do it all the time);
                    // the close line's `code=none (dropped)` records it.
                    if !is_disconnect(&e) {
                        self.summary.error = Some(escape(&e.to_string()).into_owned());
                    }
                    return None;
                }
            }
        }
    }

    /// Waits for the first of: a queued message (or the queue closing), a heartbeat tick,
    /// and an incoming frame, or while a recipient is full, room in it. Queued messages
    /// come first, so the queue drains into the WebSocket layer before the next read; they
    /// are flushed when no frame waits to be read.
    async fn next_event(&mut self) -> Wake {
        let mut first = true;
        let event = future::poll_fn(|cx| {
            let ready = self.poll_event(cx);
            if ready.is_pending() {
                first = false;
            }
            ready
        })
        .await;
        self.hot = if first { self.hot + 1 } else { 0 };
        event
    }

    /// [`Session::poll_work`]; with nothing to do, registers the task's waker with
    /// [`Shared`] and sleeps, unless work came in meanwhile (see `Shared::awake`).
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Wake> {
        loop {
            self.conn.shared.awake.store(true, Ordering::Relaxed);
            if let Poll::Ready(wake) = self.poll_work(cx) {
                return Poll::Ready(wake);
            }
            let shared = &*self.conn.shared;
            shared.waker.register(cx.waker());
            shared.awake.store(false, Ordering::SeqCst);
            if !shared.work.load(Ordering::SeqCst) && !shared.tick_due.load(Ordering::SeqCst) {
                return Poll::Pending;
            }
        }
    }

    /// What there is to do now, if anything: queued messages, a heartbeat tick, a frame.
    fn poll_work(&mut self, cx: &mut Context<'_>) -> Poll<Wake> {
        let shared = &*self.conn.shared;
        if shared.work.load(Ordering::Acquire) {
            let mut queue = self.conn.queue();
            if !queue.messages.is_empty() {
                // Taken here, under the one lock, for `drain` to write.
                std::mem::swap(&mut queue.messages, &mut self.spare);
                if !queue.closed {
                    // Under the lock: a push after this sets it again.
                    shared.work.store(false, Ordering::Release);
                }
                return Poll::Ready(Wake::Queued);
            }
            if queue.closed {
                return Poll::Ready(Wake::QueueClosed);
            }
            // Taken already: clear it under the lock, so that no push is missed.
            shared.work.store(false, Ordering::Release);
        }
        if shared.tick_due.load(Ordering::Relaxed) && shared.tick_due.swap(false, Ordering::AcqRel)
        {
            let waker = std::task::Waker::from(self.conn.shared.clone());
            if self
                .ticks
                .poll_fire(&mut Context::from_waker(&waker))
                .is_ready()
            {
                return Poll::Ready(Wake::Tick);
            }
        }
        if let Some(held) = &mut self.held {
            if held.as_mut().poll(cx).is_pending() {
                return self.flush_or_wait(cx);
            }
            self.held = None;
        }
        if self.blocked.is_empty() {
            return match self.ws.poll_next(cx) {
                Poll::Ready(frame) => Poll::Ready(Wake::Frame(frame)),
                Poll::Pending => self.flush_or_wait(cx),
            };
        }
        if self.unflushed {
            return Poll::Ready(Wake::Flush);
        }
        if self.poll_blocked(cx).is_ready() {
            return Poll::Ready(Wake::Unblocked);
        }
        let until = self.blocked_until.as_deref_mut();
        if until.is_some_and(|t| Pin::new(t).poll(cx).is_ready()) {
            return Poll::Ready(Wake::BlockedTimeout);
        }
        Poll::Pending
    }

    /// With nothing to read: writes what waits in the WebSocket layer, in this same pass
    /// (a separate step would poll the socket for reading once more, in vain), and waits.
    /// A flush that cannot finish at once, or fails, goes through [`Wake::Flush`] and
    /// its deadline.
    fn flush_or_wait(&mut self, cx: &mut Context<'_>) -> Poll<Wake> {
        if !self.unflushed {
            return Poll::Pending;
        }
        match self.ws.poll_flush(cx) {
            Poll::Ready(Ok(())) => {
                self.unflushed = false;
                Poll::Pending
            }
            _ => Poll::Ready(Wake::Flush),
        }
    }

    /// Queues what waits for full recipients as they make room; ready once none waits.
    fn poll_blocked(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.blocked.retain_mut(|b| {
            loop {
                let Some(msg) = b.messages.pop_front() else {
                    return false;
                };
                match b.conn.push(msg) {
                    Ok(()) => continue,
                    Err((SendError::Closed, _)) => return false,
                    Err((SendError::Full, msg)) => b.messages.push_front(msg),
                }
                match &mut b.room {
                    None => b.room = Some(b.conn.listen_for_room()),
                    Some(room) => match Pin::new(room).poll(cx) {
                        Poll::Ready(()) => b.room = None,
                        Poll::Pending => return true,
                    },
                }
            }
        });
        if self.blocked.is_empty() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Closes, with 1013, the recipients that made no room within the backpressure timeout.
    fn give_up_on_blocked(&mut self) {
        let now = Instant::now();
        self.blocked.retain(|b| {
            let late = b.deadline <= now;
            if late {
                b.conn.close_slow();
            }
            !late
        });
        self.arm_blocked_timer();
    }

    /// Sets the backpressure timer to the earliest deadline of the recipients waited on.
    fn arm_blocked_timer(&mut self) {
        if let Some(first) = self.blocked.iter().map(|b| b.deadline).min() {
            self.blocked_until
                .get_or_insert_with(|| Box::new(Timer::never()))
                .set_at(first);
        }
    }

    /// Hands a text or binary message to the handler; answers pings (their pong is
    /// flushed before reading on, so a client that reads none is not read from either);
    /// `Err` with the peer's close frame when the closing handshake is done.
    async fn on_frame<H: Handler + ?Sized>(
        &mut self,
        handler: &H,
        msg: Message,
    ) -> Result<(), Option<CloseFrame>> {
        match msg {
            Message::Text(_) | Message::Binary(_) => {
                self.summary.messages_in += 1;
                self.bytes_in += msg.len() as u64;
                let deferred = Deferred {
                    id: self.conn.id(),
                    blocked: std::mem::take(&mut self.blocked),
                    held: self.held.take(),
                    timeout: self.limits.backpressure_timeout,
                };
                DEFERRED.with(|d| *d.borrow_mut() = Some(deferred));
                let scope = ClearDeferred;
                handler.on_message(&self.conn, msg);
                let deferred = scope.take();
                (self.blocked, self.held) =
                    deferred.map_or_else(|| (Vec::new(), None), |d| (d.blocked, d.held));
                if !self.blocked.is_empty() {
                    self.arm_blocked_timer();
                }
                Ok(())
            }
            Message::Ping(_) => {
                let limit = self.limits.idle_timeout;
                match within(&mut self.deadline, limit, self.ws.flush()).await {
                    Some(Ok(())) => Ok(()),
                    Some(Err(_)) => Err(None),
                    None => {
                        self.summary.error = Some(format!(
                            "the client sent pings but read none of the pongs for {} s: dropped (memory stays bounded meanwhile)",
                            limit.as_secs()
                        ));
                        Box::pin(self.fail(CloseCode::Policy, "pongs not read".into())).await;
                        Err(None)
                    }
                }
            }
            Message::Close(frame) => {
                // tungstenite queued the close reply; the next reads flush it and end.
                self.summary.close_code =
                    Some(frame.as_ref().map_or(CloseCode::Status, |f| f.code));
                let limit = self.limits.close_timeout;
                let ws = &mut self.ws;
                Box::pin(within(&mut self.deadline, limit, async {
                    while let Some(Ok(_)) = ws.next().await {
                        // A peer that keeps sending must not hold us past the deadline.
                        future::yield_now().await;
                    }
                }))
                .await;
                Err(frame)
            }
            Message::Pong(_) | Message::Frame(_) => Ok(()),
        }
    }

    /// Hands what [`Session::poll_work`] took from the queue (`spare`) to the WebSocket
    /// layer (compressed, framed, in its write
    /// buffer), under the idle timeout as a deadline when the socket is full. The flush
    /// comes later, once no frame is waiting to be read ([`Wake::Flush`]): the echoes of
    /// frames that arrived together leave in one write. Returns whether the connection goes on.
    async fn drain(&mut self) -> bool {
        let mut written = 0;
        let mut count = 0;
        let (ws, spare) = (&mut self.ws, &mut self.spare);
        let deflate = self.conn.shared.deflate;
        let feed = async {
            while let Some(msg) = spare.pop_front() {
                written += payload_len(&msg);
                count += 1;
                let msg = match deflate
                    .as_ref()
                    .and_then(|d| crate::deflate::compress(&msg, d))
                {
                    Some(compressed) => compressed,
                    None => msg,
                };
                ws.feed(msg).await?;
            }
            Ok(())
        };
        let (conn, stuck, deadline) = (&self.conn, &mut self.stuck, &mut self.deadline);
        let result = write_within(conn, stuck, deadline, &self.limits, feed).await;
        crate::frames::keep_room(&SPARE_QUEUE, std::mem::take(&mut self.spare));
        self.summary.messages_out += count;
        self.bytes_out += written as u64;
        self.unflushed = true;
        let refused = {
            let mut queue = self.conn.queue();
            queue.bytes = queue.bytes.saturating_sub(written);
            std::mem::take(&mut queue.refused)
        };
        if refused {
            self.conn.shared.room.notify(usize::MAX);
        }
        self.write_done(result, written)
    }

    /// Writes what [`Session::drain`] handed over, under the idle timeout as a deadline.
    async fn flush(&mut self) -> bool {
        self.unflushed = false;
        let (conn, stuck, deadline) = (&self.conn, &mut self.stuck, &mut self.deadline);
        let result = write_within(conn, stuck, deadline, &self.limits, self.ws.flush()).await;
        self.write_done(result, 0)
    }

    /// Notes a write's failure or timeout in the summary; returns whether it went through.
    fn write_done(
        &mut self,
        result: Option<Result<(), tungstenite::Error>>,
        written: usize,
    ) -> bool {
        if std::mem::take(&mut self.stuck) {
            self.conn.queue().writing_since = None;
        }
        match result {
            Some(Ok(())) => true,
            Some(Err(e)) => {
                if !is_disconnect(&e) {
                    self.summary.error = Some(format!("write failed: {e}"));
                }
                false
            }
            None => {
                self.summary.error = Some(format!(
                    "the client read nothing for {} s while {} bytes waited: dropped (a slow or stalled consumer)",
                    self.limits.idle_timeout.as_secs(),
                    self.conn.buffered_bytes() + written,
                ));
                false
            }
        }
    }

    /// Closes a connection silent for the idle timeout; else pings it (when pings are on).
    /// Returns whether the connection goes on.
    async fn heartbeat(&mut self) -> bool {
        let limit = self.limits.idle_timeout;
        if std::mem::take(&mut self.heard) {
            self.last_heard = Instant::now();
        }
        if self.last_heard.elapsed() >= limit {
            let idle = self.last_heard.elapsed().as_secs();
            self.summary.error = Some(format!(
                "nothing heard for at least {idle} s, not even a pong: closed"
            ));
            self.fail(CloseCode::Away, "idle timeout".into()).await;
            return false;
        }
        if self.limits.ping_interval.is_zero() {
            return true;
        }
        let ping = self.ws.send(Message::Ping(Default::default()));
        match within(&mut self.deadline, limit, ping).await {
            Some(Ok(())) => true,
            Some(Err(e)) => {
                if !is_disconnect(&e) {
                    self.summary.error = Some(format!("ping failed: {e}"));
                }
                false
            }
            None => {
                self.summary.error = Some(format!(
                    "the client read nothing for {} s: dropped (a stalled consumer)",
                    limit.as_secs()
                ));
                false
            }
        }
    }

    /// Fails the connection with `code`: sends the close frame and waits for the peer's,
    /// both within the close timeout (the peer may be gone or not reading).
    async fn fail(&mut self, code: CloseCode, reason: String) {
        self.summary.close_code = Some(code);
        self.close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }))
        .await;
    }

    /// The closing handshake (RFC 6455 section 7.1.2): our close frame, then the peer's,
    /// within [`Limits::close_timeout`] in all.
    async fn close(&mut self, frame: Option<CloseFrame>) {
        let limit = self.limits.close_timeout;
        let ws = &mut self.ws;
        within(&mut self.deadline, limit, async {
            if ws.close(frame).await.is_ok() {
                while let Some(Ok(_)) = ws.next().await {
                    // A peer that keeps sending must not hold us past the deadline.
                    future::yield_now().await;
                }
            }
        })
        .await;
    }
}

/// `fut` with `limit` as its deadline on `timer`: `None` when the deadline passed first.
/// The timer is set only if `fut` does not finish at once.
fn within<F: Future>(timer: &mut Timer, limit: Duration, fut: F) -> Within<'_, F, fn()> {
    within_noting(timer, limit, fut, || {})
}

/// [`within`], calling `waits` once if `fut` does not finish at once.
fn within_noting<F: Future, W: FnOnce()>(
    timer: &mut Timer,
    limit: Duration,
    fut: F,
    waits: W,
) -> Within<'_, F, W> {
    Within {
        fut,
        timer,
        limit,
        waits: Some(waits),
    }
}

pin_project_lite::pin_project! {
    /// The future of [`within`]: a struct, not an `async fn`, so that the connection's
    /// future holds `fut` once (an `async fn` keeps its argument and its pinned copy).
    struct Within<'t, F, W> {
        #[pin]
        fut: F,
        timer: &'t mut Timer,
        limit: Duration,
        waits: Option<W>,
    }
}

impl<F: Future, W: FnOnce()> Future for Within<'_, F, W> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.fut.poll(cx) {
            if this.waits.is_none() {
                // It was set: take it out of the map, not to wake this task for nothing.
                this.timer.clear();
            }
            return Poll::Ready(Some(out));
        }
        if let Some(waits) = this.waits.take() {
            this.timer.set_after(*this.limit);
            waits();
        }
        match Pin::new(&mut **this.timer).poll(cx) {
            Poll::Ready(_) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A write under the idle timeout as its deadline; one that cannot finish at once shows,
/// from then until it ends, to senders that block on this connection (`writing_since`,
/// cleared by [`Session::write_done`] when `stuck` is set).
fn write_within<'t, F: Future>(
    conn: &'t Connection,
    stuck: &'t mut bool,
    deadline: &'t mut Timer,
    limits: &Timeouts,
    write: F,
) -> Within<'t, F, impl FnOnce() + 't> {
    let noting = move || {
        *stuck = true;
        conn.queue().writing_since = Some(Instant::now());
    };
    within_noting(deadline, limits.idle_timeout, write, noting)
}

/// Whether `e` only says the peer went away without a closing handshake.
impl<S> Session<S> {
    /// Closes the send queue: no more sends, and what is still queued is freed.
    fn close_queue(&mut self) {
        {
            let mut queue = self.conn.queue();
            queue.closed = true;
            queue.messages = VecDeque::new();
            queue.bytes = 0;
        }
        self.conn.shared.room.notify(usize::MAX);
    }

    /// Leaves every Hub the connection was added to.
    fn leave_hubs(&mut self) {
        let hubs = std::mem::take(
            &mut *self
                .conn
                .shared
                .hubs
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for hub in hubs.iter().filter_map(Weak::upgrade) {
            hub.forget(self.conn.id());
        }
    }
}

impl<S> Drop for Session<S> {
    /// A session that ends before the end of its loop (a panic in a handler, say, caught
    /// at the connection boundary) still closes its queue and leaves its hubs: no sender
    /// waits on it, no hub names it. After a normal end both are done already.
    fn drop(&mut self) {
        self.close_queue();
        self.leave_hubs();
    }
}

fn is_disconnect(e: &tungstenite::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    match e {
        tungstenite::Error::ConnectionClosed
        | tungstenite::Error::AlreadyClosed
        | tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => true,
        tungstenite::Error::Io(e) => {
            matches!(
                e.kind(),
                UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
            )
        }
        _ => false,
    }
}

/// The close code that fails the connection for this read error (RFC 6455 section 7.4.1), if one can still be sent.
fn fail_code(e: &tungstenite::Error) -> Option<CloseCode> {
    match e {
        tungstenite::Error::Capacity(_) => Some(CloseCode::Size),
        tungstenite::Error::Io(e) => match e.get_ref().and_then(|e| e.downcast_ref()) {
            Some(crate::frames::TooManyFragments(_)) => Some(CloseCode::Size),
            None => match e.get_ref().and_then(|e| e.downcast_ref()) {
                Some(crate::deflate::InflateError::Corrupt) => Some(CloseCode::Invalid),
                Some(crate::deflate::InflateError::TooBig(_)) => Some(CloseCode::Size),
                None => None,
            },
        },
        tungstenite::Error::Utf8(_) => Some(CloseCode::Invalid),
        tungstenite::Error::Protocol(
            ProtocolError::ResetWithoutClosingHandshake | ProtocolError::SendAfterClosing,
        ) => None,
        tungstenite::Error::Protocol(_) => Some(CloseCode::Protocol),
        _ => None,
    }
}

/// The payload length of a message, in bytes: what it costs in the send queue.
fn payload_len(msg: &Message) -> usize {
    match msg {
        Message::Text(t) => t.len(),
        Message::Binary(b) | Message::Ping(b) | Message::Pong(b) => b.len(),
        Message::Close(_) => 0,
        Message::Frame(f) => f.len(),
    }
}

/// Cuts `reason` to at most 123 bytes on a character boundary (RFC 6455 section 5.5).
fn truncate_reason(reason: &str) -> &str {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}
