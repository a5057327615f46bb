//! The session loop: frames in, handler out, a bounded send queue, and the close handshake.

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_tungstenite::tungstenite::{
    self,
    error::ProtocolError,
    protocol::{CloseFrame, frame::coding::CloseCode},
};
use futures_io::{AsyncRead, AsyncWrite};
use futures_lite::{StreamExt, future};
use futures_util::SinkExt;

use crate::Message;
use crate::accept::{Request, TooManyFragments, WebSocket};
use crate::config::Limits;
use async_io::Timer;
use event_listener::Event;
use std::time::Instant;

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
    fn on_message(&self, conn: &Connection, msg: Message);

    /// The connection ended. `close` is the close frame the peer sent (code and reason,
    /// RFC 6455 section 7.1.5), or `None` when it sent none (the TCP connection
    /// dropped, or the session failed it with its own close code).
    fn on_close(&self, conn: &Connection, close: Option<&CloseFrame>) {
        let _ = (conn, close);
    }
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

/// A cloneable handle to one live connection: its id, its request facts, and its send queue.
///
/// Clone it into any task (any executor) and send from there; the connection's
/// own task writes queued messages in order, several per flush.
#[derive(Clone)]
pub struct Connection {
    shared: Arc<Shared>,
}

struct Shared {
    id: u64,
    request: Request,
    queue: async_channel::Sender<Message>,
    /// Payload bytes queued and not yet written.
    queued_bytes: AtomicUsize,
    /// The queue's cap, in bytes.
    queue_limit: usize,
    /// Notified as queued bytes are written, for senders waiting for room.
    room: Event,
    /// The close frame asked for by [`Connection::close`], sent after the queue drains.
    close: Mutex<Option<CloseFrame>>,
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
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// The facts of the request that opened this connection.
    pub fn request(&self) -> &Request {
        &self.shared.request
    }

    /// Queues a message without waiting.
    ///
    /// # Errors
    /// [`SendError::Full`] when the send queue has no room for it, [`SendError::Closed`]
    /// when the connection is closing or gone. The message is then not queued; nothing
    /// is dropped silently.
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
        let shared = &*self.shared;
        let size = payload_len(&msg);
        let before = shared.queued_bytes.fetch_add(size, Ordering::AcqRel);
        // One message larger than the whole cap still fits into an empty queue.
        if before > 0 && before + size > shared.queue_limit {
            shared.queued_bytes.fetch_sub(size, Ordering::AcqRel);
            return Err((SendError::Full, msg));
        }
        shared.queue.try_send(msg).map_err(|e| {
            shared.queued_bytes.fetch_sub(size, Ordering::AcqRel);
            (SendError::Closed, e.into_inner())
        })
    }

    /// The payload bytes queued on this connection and not yet written.
    pub fn buffered_bytes(&self) -> usize {
        self.shared.queued_bytes.load(Ordering::Acquire)
    }

    /// Starts the closing handshake (RFC 6455 section 7.1.2) with this close code and reason.
    ///
    /// Messages queued before this call are written first; later sends fail with
    /// [`SendError::Closed`]. The reason is at most 123 bytes of UTF-8 (RFC 6455 section 5.5).
    /// Closing twice keeps the first code.
    pub fn close(&self, code: CloseCode, reason: &str) {
        let mut close = self.shared.close.lock().unwrap_or_else(|e| e.into_inner());
        if close.is_none() {
            *close = Some(CloseFrame {
                code,
                reason: truncate_reason(reason).into(),
            });
        }
        self.shared.queue.close();
    }
}

/// What a finished session did, for the close log line.
#[derive(Debug, Clone, Default)]
pub struct SessionSummary {
    /// Text and binary messages received.
    pub messages_in: u64,
    /// Messages written from the send queue.
    pub messages_out: u64,
    /// The close code that ended the session: the peer's, ours, or `None` when the TCP
    /// connection simply dropped (1006 semantics, RFC 6455 section 7.1.5).
    pub close_code: Option<CloseCode>,
    /// What went wrong, in plain words, if something did.
    pub error: Option<String>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Runs one connection until it closes: reads frames and hands messages to `handler`,
/// writes what is queued on its [`Connection`], and does the close handshake.
///
/// Queued messages are written before the next read, several per flush (corking).
/// Client pings are answered with pongs (RFC 6455 section 5.5.2); the server pings
/// every [`Limits::ping_interval`] and closes with 1001 a connection silent for
/// [`Limits::idle_timeout`]. A protocol
/// violation is answered with close code 1002, invalid UTF-8 in a text message
/// with 1007, and a message or frame over the limits with 1009 (RFC 6455 section 7.4.1).
pub async fn serve<S, H>(
    mut ws: WebSocket<S>,
    request: Request,
    handler: &H,
    limits: &Limits,
) -> SessionSummary
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    H: Handler + ?Sized,
{
    // Unbounded in messages; bounded in bytes by `Connection::push`.
    let (tx, rx) = async_channel::unbounded();
    let mut ticks = if limits.ping_interval.is_zero() {
        Timer::never()
    } else {
        Timer::interval(limits.ping_interval)
    };
    let mut last_heard = Instant::now();
    let conn = Connection {
        shared: Arc::new(Shared {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            request,
            queue: tx,
            queued_bytes: AtomicUsize::new(0),
            queue_limit: limits.send_queue_bytes,
            room: Event::new(),
            close: Mutex::new(None),
        }),
    };
    let mut summary = SessionSummary::default();
    let mut peer_close = None;
    // The 101 response is still unsent: the handler sees the connection first, so a
    // group message sent after the client saw it open reaches it.
    handler.on_open(&conn);
    if let Err(e) = ws.flush().await {
        summary.error = Some(format!(
            "the opening handshake's answer could not be sent: {e}"
        ));
        rx.close();
        handler.on_close(&conn, None);
        return summary;
    }

    enum Step {
        Queued(Result<Message, async_channel::RecvError>),
        Frame(Option<Result<Message, tungstenite::Error>>),
        Tick,
    }
    loop {
        // Writes first: the queue drains before the next read, so a flood of
        // incoming messages cannot grow it past what one callback queues.
        let queued = async { Step::Queued(rx.recv().await) };
        let frame = async { Step::Frame(ws.next().await) };
        let tick = async {
            ticks.next().await;
            Step::Tick
        };
        let event = future::or(queued, future::or(tick, frame)).await;
        if let Step::Frame(Some(Ok(_))) = event {
            last_heard = Instant::now();
        }
        match event {
            Step::Tick if last_heard.elapsed() >= limits.idle_timeout => {
                let idle = last_heard.elapsed().as_secs();
                summary.close_code = Some(CloseCode::Away);
                summary.error = Some(format!(
                    "nothing heard for {idle} s, not even a pong: closed"
                ));
                let frame = CloseFrame {
                    code: CloseCode::Away,
                    reason: "idle timeout".into(),
                };
                let _ = ws.close(Some(frame)).await; // the peer is likely gone: do not wait for it
                break;
            }
            Step::Tick => {
                if let Err(e) = ws.send(Message::Ping(Default::default())).await {
                    summary.error = Some(format!("ping failed: {e}"));
                    break;
                }
            }
            Step::Queued(Ok(msg)) => {
                // Cork: feed what is queued, then flush once; a client that stops
                // reading gets `idle_timeout` to drain it.
                let mut written = payload_len(&msg);
                let cork = async {
                    ws.feed(msg).await?;
                    summary.messages_out += 1;
                    while let Ok(msg) = rx.try_recv() {
                        written += payload_len(&msg);
                        ws.feed(msg).await?;
                        summary.messages_out += 1;
                    }
                    ws.flush().await
                };
                let result = timeout(limits.idle_timeout, cork).await;
                conn.shared
                    .queued_bytes
                    .fetch_sub(written, Ordering::AcqRel);
                conn.shared.room.notify(usize::MAX);
                match result {
                    Some(Ok(())) => {}
                    Some(Err(e)) => {
                        summary.error = Some(format!("write failed: {e}"));
                        break;
                    }
                    None => {
                        summary.error = Some(format!(
                            "the client read nothing for {} s while {} bytes waited: dropped (a slow or stalled consumer)",
                            limits.idle_timeout.as_secs(),
                            conn.buffered_bytes() + written,
                        ));
                        break;
                    }
                }
            }
            Step::Queued(Err(_)) => {
                // Connection::close was called and the queue is drained.
                let frame = conn
                    .shared
                    .close
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take();
                summary.close_code = frame.as_ref().map(|f| f.code);
                let _ = ws.close(frame).await;
                // Read until the peer answers with its close frame (or drops).
                while let Some(Ok(_)) = ws.next().await {}
                break;
            }
            Step::Frame(Some(Ok(msg))) => match msg {
                Message::Text(_) | Message::Binary(_) => {
                    summary.messages_in += 1;
                    handler.on_message(&conn, msg);
                }
                Message::Close(frame) => {
                    // tungstenite queued the close reply; the next read flushes it and ends.
                    summary.close_code = Some(frame.as_ref().map_or(CloseCode::Status, |f| f.code));
                    peer_close = frame;
                }
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            },
            Step::Frame(None) => break,
            Step::Frame(Some(Err(e))) => {
                if let Some(code) = fail_code(&e) {
                    summary.close_code = Some(code);
                    let reason = truncate_reason(&e.to_string()).to_owned();
                    let _ = ws
                        .close(Some(CloseFrame {
                            code,
                            reason: reason.into(),
                        }))
                        .await;
                }
                // A peer that just goes away is ordinary (phones do it all the time);
                // the close line's `code=none (dropped)` records it.
                if !is_disconnect(&e) {
                    summary.error = Some(e.to_string());
                }
                break;
            }
        }
    }
    rx.close();
    handler.on_close(&conn, peer_close.as_ref());
    summary
}

/// Whether `e` only says the peer went away without a closing handshake.
fn is_disconnect(e: &tungstenite::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    match e {
        tungstenite::Error::ConnectionClosed
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
        tungstenite::Error::Io(e) if e.get_ref().is_some_and(|e| e.is::<TooManyFragments>()) => {
            Some(CloseCode::Size)
        }
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

/// `fut`'s output, or `None` if `limit` passes first.
async fn timeout<T>(limit: std::time::Duration, fut: impl Future<Output = T>) -> Option<T> {
    future::or(async { Some(fut.await) }, async {
        Timer::after(limit).await;
        None
    })
    .await
}

/// Cuts `reason` to at most 123 bytes on a character boundary (RFC 6455 section 5.5).
fn truncate_reason(reason: &str) -> &str {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}
