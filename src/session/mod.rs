//! The session loop: frames in, handler out, a bounded send queue, and the close handshake.
//!
//! Its rooms: [`handler`] (the embedder's callbacks and admission), [`connection`] (the
//! handle, its ids and its send queue), [`backpressure`] (Hub sends from inside
//! `on_message`), [`deadline`] (the deadline on a write or wait) and [`close_codes`] (which
//! error fails a connection with which close code); the loop itself is here.
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

mod backpressure;
mod close_codes;
mod connection;
mod deadline;
mod handler;

pub(crate) use backpressure::{send_all, send_to_one};
#[cfg(feature = "redis")]
pub(crate) use connection::set_instance_tag;
pub use connection::{Connection, ConnectionId, SendError};
pub(crate) use connection::{Registry, next_id};
pub use handler::{Admission, AdmitFuture, Handler};

use crate::per_thread::SPARE_QUEUE;
use backpressure::{Blocked, ClearDeferred, DEFERRED, Deferred};
use close_codes::{is_disconnect, is_disconnect_io, payload_len, truncate_reason};
use connection::{Queue, Shared};
use deadline::{within, write_within};

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::{
    self,
    protocol::{CloseFrame, frame::coding::CloseCode},
};
use atomic_waker::AtomicWaker;
use event_listener::Event;
use futures_io::{AsyncRead, AsyncWrite};
use futures_lite::future;

use crate::config::Limits;
use crate::frames::{Frames, ReadError};
use crate::request::Request;
use crate::text::escape;
use crate::timer::Timer;
use crate::{Data, Message};

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
    /// The protocol violation or limit that failed the session, when one did.
    pub violation: Option<crate::Violation>,
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
    pub(super) ws: Frames<S>,
    pub(super) conn: Connection,
    pub(super) limits: Timeouts,
    pub(super) summary: SessionSummary,
    /// When anything (a message, a ping, a pong) last arrived, as of the heartbeat tick that
    /// noted it (no clock read per frame: `heard` is set, and each tick turns it into a time).
    pub(super) last_heard: Instant,
    pub(super) heard: bool,
    /// Fires every ping interval (or, with pings off, every idle timeout) to check idleness.
    pub(super) ticks: Timer,
    /// The deadline of the write or wait under way.
    pub(super) deadline: Timer,
    /// Messages this session's handler sent to recipients whose queues were full; reading
    /// pauses until they are queued, or the recipient is closed at `blocked_until`.
    pub(super) blocked: Vec<Blocked>,
    /// Made at the first wait on a full recipient (most connections never make one).
    pub(super) blocked_until: Option<Box<Timer>>,
    /// What the handler's `on_message` holds reading for ([`Connection::hold_reads`]).
    pub(super) held: Option<Held>,
    /// The queued messages taken out for writing, by `poll_work` under the queue's lock
    /// (empty, without an allocation, between
    /// drains: an idle connection holds no queue).
    pub(super) spare: VecDeque<Message>,
    /// Messages were handed to the WebSocket layer and not flushed yet.
    pub(super) unflushed: bool,
    /// The write under way could not finish at once (`writing_since` is set).
    pub(super) stuck: bool,
    /// Events handled in a row without waiting.
    pub(super) hot: u32,
    /// Payload bytes in and out, for [`crate::stats`].
    pub(super) bytes_in: u64,
    pub(super) bytes_out: u64,
    /// What of the counts [`crate::stats`] has been given: messages and bytes, in and out.
    pub(super) published: [u64; 4],
}

/// The limits of [`Limits`] that the session loop applies itself (the others belong to the
/// accept path and the frame layer): kept apart, as the connection's state holds them.
#[derive(Clone, Copy)]
struct Timeouts {
    pub(super) ping_interval: Duration,
    pub(super) idle_timeout: Duration,
    pub(super) close_timeout: Duration,
    pub(super) backpressure_timeout: Duration,
    /// What the heartbeat, the idle timeout and the deadlines of writes and of the close
    /// are measured by.
    pub(super) clock: crate::Clock,
}

/// What woke the session.
enum Wake {
    Queued,
    /// No frame waits to be read (or reading is held): time to write what was queued.
    Flush,
    QueueClosed,
    Frame(Option<Result<Message, ReadError>>),
    Tick,
    Unblocked,
    BlockedTimeout,
}

/// A future that reading from the client waits for.
type Held = Pin<Box<dyn Future<Output = ()> + Send>>;

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
                clock: limits.clock,
            },
            summary: SessionSummary::default(),
            last_heard: limits.clock.now(),
            heard: false,
            ticks: if check.is_zero() {
                limits.clock.never()
            } else {
                limits.clock.interval(check)
            },
            deadline: limits.clock.never(),
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
                Wake::Frame(Some(Err(ReadError::Violation(v)))) => {
                    // The violation's close code, with its text as the reason (RFC 6455
                    // section 7.4.1); counted by its kind.
                    crate::stats::violated(&v);
                    let text = v.to_string();
                    Box::pin(self.fail(v.close_code(), truncate_reason(&text).to_owned())).await;
                    self.summary.error = Some(text);
                    self.summary.violation = Some(v);
                    return None;
                }
                // A peer that just goes away is ordinary (phones do it all the time); the
                // close line's `code=none (dropped)` records it.
                Wake::Frame(Some(Err(ReadError::Reset))) => return None,
                Wake::Frame(Some(Err(ReadError::Io(e)))) => {
                    if !is_disconnect_io(&e) {
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
        let msg = match Data::try_from(msg) {
            Ok(data) => data,
            Err(control) => return self.on_control(control).await,
        };
        {
            {
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
        }
    }

    /// Answers a ping (its pong is flushed before reading on), takes a pong as heard, and
    /// ends on the peer's close frame (`Err` with it) once the closing handshake is done.
    async fn on_control(&mut self, msg: Message) -> Result<(), Option<CloseFrame>> {
        match msg {
            Message::Text(_) | Message::Binary(_) => Ok(()), // data: on_frame's
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
            self.last_heard = self.limits.clock.now();
        }
        let silent = self
            .limits
            .clock
            .now()
            .saturating_duration_since(self.last_heard);
        if silent >= limit {
            let idle = silent.as_secs();
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
