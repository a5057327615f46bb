//! The handle of one connection ([`Connection`]), its id, and its send queue, bounded in
//! bytes, with the waker protocol between senders and the session.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Instant;

use async_tungstenite::tungstenite::protocol::{CloseFrame, frame::coding::CloseCode};
use atomic_waker::AtomicWaker;
use event_listener::{Event, EventListener};

use super::backpressure::DEFERRED;
use super::close_codes::{payload_len, truncate_reason};
#[cfg(doc)]
use crate::Handler;
use crate::per_thread::SPARE_QUEUE;
use crate::request::Request;
use crate::{Data, Message};

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

impl ConnectionId {
    /// The id whose [`ConnectionId::get`] is `n`, as an app or another instance sent it back
    /// over the wire (the binary's push API, a Redis link): the one way to make an id that
    /// wssd did not hand out, and named so. It names a connection only if one has that id:
    /// [`Hub::get`](crate::Hub::get) finds none otherwise. `None` for 0, which no
    /// connection has.
    ///
    /// ```
    /// # use wssd::ConnectionId;
    /// let id = ConnectionId::from_wire(42).unwrap();
    /// assert_eq!(id.get(), 42);
    /// assert_eq!(ConnectionId::from_wire(0), None);
    /// ```
    pub fn from_wire(n: u64) -> Option<Self> {
        (n != 0).then_some(ConnectionId(n))
    }

    /// The number behind the id, for logs, maps and wire formats of your own.
    ///
    /// ```
    /// # let conn = include!("../doc_connection.rs");
    /// let n: u64 = conn.id().get(); // for a map or a wire format of your own
    /// assert_eq!(wssd::ConnectionId::from_wire(n), Some(conn.id()));
    /// ```
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
    pub(super) shared: Arc<Shared>,
}

#[repr(C)] // in this order: the fields each message touches share the first cache lines
pub(super) struct Shared {
    /// Set when a message is queued or the queue closes (after the queue's lock is
    /// released), cleared by the session when it takes them: the session's poll looks
    /// here, not at the lock, when there is nothing to do.
    pub(super) work: AtomicBool,
    /// Set when the heartbeat timer fires (through the waker it was given, [`Shared`]'s own):
    /// the session polls its timer, and reads the clock, only then.
    pub(super) tick_due: AtomicBool,
    /// The session task, woken when `work` or `tick_due` is set while it sleeps.
    pub(super) waker: AtomicWaker,
    /// Whether the session task is running (or about to): cleared just before it sleeps.
    /// Setters of `work` and `tick_due` skip the wake-up while it is set, so a send from
    /// the task's own callbacks costs no trip through the executor. The `SeqCst` pair (flag
    /// set, then `awake` read here; `awake` cleared, then the flags read by the session)
    /// makes sure one of the two sides sees the other.
    pub(super) awake: AtomicBool,
    pub(super) id: ConnectionId,
    /// The queue's cap, in bytes.
    pub(super) queue_limit: usize,
    /// `request.deflate`, here beside what a send reads.
    pub(super) deflate: Option<crate::deflate::Agreed>,
    pub(super) queue: Mutex<Queue>,
    /// Notified as queued bytes are written, for senders waiting for room.
    pub(super) room: Event,
    /// The hubs this connection was added to; it leaves them when its session ends.
    pub(super) hubs: Mutex<Vec<Weak<dyn Registry>>>,
    pub(super) request: Request,
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
    pub(super) fn notify(&self) {
        if !self.awake.load(Ordering::SeqCst) {
            self.waker.wake();
        }
    }
}

/// The send queue.
#[derive(Default)]
pub(super) struct Queue {
    pub(super) messages: VecDeque<Message>,
    /// Payload bytes queued and not yet written (those being written included).
    pub(super) bytes: usize,
    /// No more sends: [`Connection::close`] was called, or the session ended.
    pub(super) closed: bool,
    /// The close frame asked for by [`Connection::close`], sent after the queue drains.
    pub(super) close: Option<CloseFrame>,
    /// Since when the session has been writing what it took from the queue (`None` while
    /// it is not): a client that stopped reading shows here before its queue fills.
    pub(super) writing_since: Option<Instant>,
    /// A push was refused for want of room since the last drain: a sender may be waiting on
    /// `room`. Every waiter listens before the push that fails (and sets this), so the drain
    /// that takes it under the lock and then notifies wakes them all; drains that find it
    /// clear skip the notification (event-listener's `notify` allocates the event's state at
    /// its first call and takes its lock at every call, waiter or not).
    pub(super) refused: bool,
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
    /// # use wssd::{CloseCode, Connection, Handler, Data, Hub, SendError};
    /// # let conn = include!("../doc_connection.rs");
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
    /// # use wssd::{CloseCode, Connection, Handler, Data, Hub, SendError};
    /// # let conn = include!("../doc_connection.rs");
    /// assert_eq!(conn.request().path, "/");
    /// println!("{} asked for {}", conn.request().client_ip, conn.request().path);
    /// ```
    pub fn request(&self) -> &Request {
        &self.shared.request
    }

    /// Queues a message (text or binary: a `&str` or `String` is text, a `Vec<u8>` binary)
    /// without waiting.
    ///
    /// # Errors
    /// [`SendError::Full`] when the send queue has no room for it, [`SendError::Closed`]
    /// when the connection is closing or gone. The message is then not queued; nothing is
    /// dropped silently.
    ///
    /// ```
    /// # use wssd::{CloseCode, Connection, Handler, Data, Hub, SendError};
    /// # let conn = include!("../doc_connection.rs");
    /// conn.try_send(Data::text("hello"))?;
    /// # Ok::<(), SendError>(())
    /// ```
    pub fn try_send(&self, msg: impl Into<Data>) -> Result<(), SendError> {
        self.push(msg.into().into()).map_err(|(e, _)| e)
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
    /// # use wssd::{CloseCode, Connection, Handler, Data, Hub, SendError};
    /// # let conn = include!("../doc_connection.rs");
    /// // From a task of your own (not from a Handler callback of this connection):
    /// smol::block_on(conn.send(Data::text("hello")))?;
    /// # Ok::<(), SendError>(())
    /// ```
    pub async fn send(&self, msg: impl Into<Data>) -> Result<(), SendError> {
        let mut msg: Message = msg.into().into();
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
    pub(super) fn push(&self, msg: Message) -> Result<(), (SendError, Message)> {
        self.push_with(msg, true)
    }

    /// Queues `msg`, past the cap unless `capped`: for messages a sender had taken in
    /// and was waiting to deliver when it went away (few: one callback's worth).
    pub(super) fn push_with(&self, msg: Message, capped: bool) -> Result<(), (SendError, Message)> {
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
    /// # use wssd::{CloseCode, Connection, Handler, Data, Hub, SendError};
    /// # let conn = include!("../doc_connection.rs");
    /// conn.try_send(Data::text("hello"))?;
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
    /// # use wssd::{CloseCode, Connection, Handler, Data, Hub, SendError};
    /// # let conn = include!("../doc_connection.rs");
    /// assert!(conn.close(CloseCode::Normal, "bye"));
    /// assert!(!conn.close(CloseCode::Away, "again")); // the first code stays
    /// assert_eq!(conn.try_send(Data::text("late")), Err(SendError::Closed));
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
    /// # use wssd::{CloseCode, Connection, Handler, Data, Hub, SendError};
    /// # let conn = include!("../doc_connection.rs");
    /// if conn.try_send(Data::text("hello")) == Err(SendError::Full) {
    ///     conn.close_slow();
    /// }
    /// assert!(conn.close_slow()); // the first call closes and logs
    /// assert!(!conn.close_slow()); // later ones do nothing
    /// ```
    pub fn close_slow(&self) -> bool {
        let queued = self.buffered_bytes();
        let first = self.close(CloseCode::Again, "send queue full: reading too slowly");
        if first {
            let total = crate::stats::SLOW_CONSUMERS.fetch_add(1, Ordering::Relaxed) + 1;
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
    ///
    /// ```
    /// # let conn = include!("../doc_connection.rs");
    /// // Outside this connection's on_message there is nothing to hold:
    /// assert!(!conn.hold_reads(async {}));
    /// ```
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
    /// # use wssd::{CloseCode, Connection, Handler, Data, Hub, SendError};
    /// # let conn = include!("../doc_connection.rs");
    /// assert!(!conn.is_closed());
    /// conn.close(CloseCode::Normal, "bye");
    /// assert!(conn.is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        self.queue().closed
    }

    /// Tells the session there is work: a message queued, or the queue closed.
    pub(super) fn wake_session(&self) {
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

    pub(super) fn queue(&self) -> MutexGuard<'_, Queue> {
        self.shared.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A registry of connections (the Hub) that a connection leaves when its session ends.
pub(crate) trait Registry: Send + Sync {
    /// Forgets the connection `id`, and its user and groups.
    fn forget(&self, id: ConnectionId);
}

pub(super) static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Bits 33 to 52 of every new id: this instance's tag, once linked to other instances.
pub(super) static INSTANCE_TAG: AtomicU64 = AtomicU64::new(0);

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
