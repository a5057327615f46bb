//! The session's WebSocket: RFC 6455 frames read from and written to a [`Transport`].
//!
//! Reading: bytes go into one read buffer per thread, frames are parsed where they land,
//! and a connection keeps bytes of its own only while a frame is partly received (or
//! frames wait behind the one handed out): an idle connection holds no read buffer.
//! A payload in the thread's buffer is unmasked into the message's own allocation as it is
//! copied out. A frame that one read did not bring whole gets a buffer of exactly its size,
//! the rest of it is read into that buffer, and the payload is unmasked there: the buffer
//! becomes the message, without a second copy.
//!
//! Writing: each frame is a header of at most 10 bytes and the message's payload, shared,
//! not copied; queued frames leave in one vectored write (several headers and payloads,
//! one `writev`, or one TLS record sequence).

mod rx;
#[cfg(test)]
mod tests;
mod wire;

pub(crate) use crate::violation::{ReadError, Violation};
use rx::{Payload, Rx, Scan, Step, room};
pub(crate) use wire::unmask;
use wire::{close_payload, frame_head};

use std::cell::Cell;
use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::thread::LocalKey;

use async_tungstenite::tungstenite::Bytes;
use async_tungstenite::tungstenite::{
    Error, Message,
    error::ProtocolError,
    protocol::{CloseFrame, frame::coding::CloseCode},
};
use bytes::Buf;
use futures_io::{AsyncRead, AsyncWrite};

use crate::config::Limits;
use crate::transport::Transport;

/// How many slices one vectored write takes at most (a header and a payload per frame).
const MAX_SLICES: usize = 64;

/// A frame header's most bytes: 2, 8 of extended payload length and 4 of masking key
/// (RFC 6455 section 5.2).
const MAX_HEADER: usize = 14;

/// Over plain TCP, frames of up to this many bytes in all are copied into one buffer (per
/// thread) and written with one plain write: cheaper than a vectored write of their parts
/// (plain ws, 500 connections at 1 KiB: about 12% less server CPU per message than `writev`
/// of header and payload). TLS takes the parts as they are: sealing copies them.
const SMALL_WRITE: usize = 2048;

thread_local! {
    /// A frame queue's room, left by a connection that wrote all it had and taken by the
    /// next one that queues a frame on this thread: no allocation per message, and none
    /// held by an idle connection (the other per-thread buffers: [`crate::per_thread`]).
    static SPARE_FRAMES: Cell<VecDeque<Out>> = const { Cell::new(VecDeque::new()) };
}

/// Room for at most this many entries is kept in a queue's spare ([`SPARE_FRAMES`](SPARE_FRAMES), and the
/// session's send queue's).
const SPARE_ROOM: usize = 16;

/// Gives `queue` the room kept in `spare` when it has none of its own: a queue that empties
/// after each message takes no allocation per message.
pub(crate) fn take_room<T>(spare: &'static LocalKey<Cell<VecDeque<T>>>, queue: &mut VecDeque<T>) {
    if queue.capacity() == 0 {
        *queue = spare.take();
    }
}

/// Keeps the room of `queue` in `spare`, if it is empty and small (what a failed write left
/// in it is dropped here, never handed on): an idle connection holds none.
pub(crate) fn keep_room<T>(spare: &'static LocalKey<Cell<VecDeque<T>>>, queue: VecDeque<T>) {
    if queue.is_empty() && (1..=SPARE_ROOM).contains(&queue.capacity()) {
        spare.set(queue);
    }
}

/// A WebSocket connection's frames (RFC 6455 section 5) over a [`Transport`], server side.
pub(crate) struct Frames<S> {
    io: Transport<S>,
    /// Bytes read and not parsed yet: `buf[start..end]`. Empty, without an allocation,
    /// whenever no frame is partly received.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    rx: Rx,
    /// Frames handed over and not written yet.
    out: VecDeque<Out>,
    /// Bytes of the first frame of `out` written already.
    out_pos: usize,
    /// Bytes in `out` (headers and payloads).
    out_bytes: usize,
    state: State,
    /// Bytes read per call into the thread's buffer, at most.
    read_size: usize,
    /// Frames wait in `out` up to this many bytes before a write (corking).
    write_size: usize,
}

/// Where the closing handshake stands (RFC 6455 section 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// We sent our close frame and wait for the peer's.
    ClosedByUs,
    /// The peer sent its close frame; ours is queued as the reply.
    ClosedByPeer,
    /// The closing handshake is over (or the stream failed): nothing more is read.
    Done,
}

/// One frame to write: its header and its payload.
struct Out {
    head: [u8; 10],
    head_len: u8,
    payload: Bytes,
}

impl Out {
    fn head(&self) -> &[u8] {
        &self.head[..usize::from(self.head_len)]
    }

    fn len(&self) -> usize {
        usize::from(self.head_len) + self.payload.len()
    }
}

/// What a complete frame gave.
enum Event {
    Message(Message),
    Close(Option<CloseFrame>),
}

impl<S: AsyncRead + AsyncWrite + Unpin> Frames<S> {
    /// The frames over `io`, starting with `read`: bytes that came behind the request;
    /// `deflate` when permessage-deflate was agreed (RFC 7692).
    pub(crate) fn new(io: Transport<S>, read: Vec<u8>, limits: &Limits, deflate: bool) -> Self {
        // The request's buffer is not kept when nothing came behind the request.
        let read = if read.is_empty() { Vec::new() } else { read };
        let end = read.len();
        Frames {
            io,
            buf: read,
            start: 0,
            end,
            rx: Rx {
                partial: None,
                skip: 0,
                max_frame: limits.max_frame_size,
                max_message: limits.max_message_size,
                max_fragments: limits.max_fragments,
                deflate,
                scan: Scan::default(),
            },
            out: VecDeque::new(),
            out_pos: 0,
            out_bytes: 0,
            state: State::Open,
            // Never 0: a read into no room would look like the end of the stream. And a
            // frame's longest header more, so that a message of the size takes one read.
            read_size: limits.read_buffer_size.max(64) + MAX_HEADER,
            write_size: limits.write_buffer_size,
        }
    }

    /// The next message: text, binary, ping, pong or close. A ping is answered with a pong,
    /// queued here (written by the next flush); a close frame with the closing reply,
    /// written before the stream ends. `None` once the closing handshake is over.
    ///
    /// # Errors
    /// The [`Violation`] that fails the connection (RFC 6455 section 7.4.1),
    /// [`ReadError::Reset`] when the peer left without a closing handshake, or the I/O error.
    pub(crate) fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Message, ReadError>>> {
        loop {
            match self.state {
                State::Done => return Poll::Ready(None),
                State::ClosedByPeer => {
                    // The reply goes out; then the server drops the TCP connection first
                    // (RFC 6455 section 7.1.1).
                    let _ = ready!(self.poll_flush(cx));
                    self.state = State::Done;
                    return Poll::Ready(None);
                }
                State::Open | State::ClosedByUs => {}
            }
            if self.start < self.end {
                let closing = self.state == State::ClosedByUs;
                let step = match self.rx.head(&self.buf[self.start..self.end], closing) {
                    Ok(step) => step,
                    Err(e) => return Poll::Ready(Some(Err(e.into()))),
                };
                let head = match step {
                    Step::Frame(head) => head,
                    Step::Skipped(n) => {
                        self.consume(n);
                        continue;
                    }
                    Step::Incomplete => {
                        // A frame is partly here: check what came of a text frame (a message
                        // that turns invalid fails at the bytes that break it, RFC 6455
                        // section 8.1), then read the rest behind it.
                        if let Err(e) = self.rx.scan(&self.buf[self.start..self.end], closing) {
                            return Poll::Ready(Some(Err(e.into())));
                        }
                        match ready!(self.poll_read_more(cx)) {
                            Ok(0) => return Poll::Ready(self.on_eof()),
                            Ok(_) => continue,
                            Err(e) => return Poll::Ready(self.on_read_error(e)),
                        }
                    }
                };
                let event = if self.start == 0
                    && self.end == head.total
                    && self.buf.capacity() == head.total
                {
                    // The buffer is this frame, no more (its length lies between `end` and
                    // its capacity): its payload is unmasked where it is and the message
                    // takes the buffer, not a copy.
                    let mut frame = std::mem::take(&mut self.buf);
                    self.end = 0;
                    unmask(&mut frame[head.header_len..], head.key);
                    let mut payload = Bytes::from(frame);
                    payload.advance(head.header_len);
                    self.rx.event(&head, Payload::Unmasked(payload))
                } else {
                    let at = self.start;
                    let payload = Payload::Masked(&self.buf[at + head.header_len..at + head.total]);
                    let event = self.rx.event(&head, payload);
                    self.consume(head.total);
                    event
                };
                match event {
                    Ok(Some(event)) => return Poll::Ready(self.on_event(event)),
                    Ok(None) => continue,
                    Err(e) => return Poll::Ready(Some(Err(e.into()))),
                }
            }
            // Nothing buffered: read into this thread's buffer and parse there.
            let closing = self.state == State::ClosedByUs;
            let (io, rx, buf) = (&mut self.io, &mut self.rx, &mut self.buf);
            let read_size = self.read_size;
            let read = crate::per_thread::READ.with_borrow_mut(|scratch| {
                if scratch.len() < read_size {
                    scratch.resize(read_size, 0);
                }
                let n = match Pin::new(io).poll_read(cx, &mut scratch[..read_size]) {
                    Poll::Ready(Ok(n)) => n,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                };
                let mut data = &scratch[..n];
                let mut event = None;
                while !data.is_empty() {
                    match rx.parse(data, closing) {
                        Ok((used, found)) => {
                            data = &data[used..];
                            event = found.map(Ok);
                            if event.is_some() || used == 0 {
                                break;
                            }
                        }
                        Err(e) => {
                            event = Some(Err(e));
                            break;
                        }
                    }
                }
                // What is left (a partial frame, frames behind the one handed out, or the
                // frame that failed) is kept until next time; a partial frame gets room for
                // more of it, as much as came (`room`), up to all of it (its payload is then
                // unmasked there and handed out, not copied).
                buf.clear();
                if event.is_none() && !data.is_empty() {
                    buf.reserve_exact(room(rx.wanted(data), data.len()));
                }
                buf.extend_from_slice(data);
                Poll::Ready(Ok((n, event)))
            });
            self.start = 0;
            self.end = self.buf.len();
            match ready!(read) {
                Ok((0, _)) => return Poll::Ready(self.on_eof()),
                Ok((_, None)) => {}
                Ok((_, Some(Ok(event)))) => return Poll::Ready(self.on_event(event)),
                Ok((_, Some(Err(e)))) => return Poll::Ready(Some(Err(e.into()))),
                Err(e) => return Poll::Ready(self.on_read_error(e)),
            }
            self.consume(0);
        }
    }

    /// The next message, as [`Frames::poll_next`].
    pub(crate) fn next(&mut self) -> impl Future<Output = Option<Result<Message, ReadError>>> + '_ {
        std::future::poll_fn(|cx| self.poll_next(cx))
    }

    /// Drops `used` parsed bytes; frees the buffer once it is empty.
    fn consume(&mut self, used: usize) {
        self.start += used;
        if self.start == self.end {
            self.buf = Vec::new();
            self.start = 0;
            self.end = 0;
        }
    }

    /// Reads more behind the bytes of a partly received frame, making room for it whole.
    fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        // Room for more of the frame once its header is here, as much as came, up to the
        // frame exactly (frames behind it are read next time, into the thread's buffer);
        // else for the header and more.
        let wanted = self.rx.wanted(&self.buf[..self.end]);
        let want = if wanted > self.end {
            room(wanted, self.end)
        } else {
            self.end + self.read_size
        };
        if self.buf.len() < want {
            self.buf.reserve_exact(want - self.buf.len());
            self.buf.resize(want, 0);
        }
        let n = ready!(Pin::new(&mut self.io).poll_read(cx, &mut self.buf[self.end..]))?;
        self.end += n;
        Poll::Ready(Ok(n))
    }

    fn on_eof(&mut self) -> Option<Result<Message, ReadError>> {
        let state = std::mem::replace(&mut self.state, State::Done);
        self.start = self.end;
        self.consume(0);
        (state == State::Open).then_some(Err(ReadError::Reset))
    }

    fn on_read_error(&mut self, e: io::Error) -> Option<Result<Message, ReadError>> {
        if self.state == State::ClosedByUs {
            // Closing already: whatever the peer still sends is of no use.
            self.state = State::Done;
            return None;
        }
        Some(Err(ReadError::Io(e)))
    }

    fn on_event(&mut self, event: Event) -> Option<Result<Message, ReadError>> {
        match event {
            Event::Message(Message::Ping(payload)) if self.state == State::Open => {
                self.push(10, true, false, payload.clone());
                Some(Ok(Message::Ping(payload)))
            }
            Event::Message(msg) => Some(Ok(msg)),
            Event::Close(frame) => {
                if self.state == State::Open {
                    // The reply echoes the code and reason (RFC 6455 section 5.5.1); a code
                    // no peer may send is answered with 1002 instead.
                    let reply = match &frame {
                        Some(f) if !f.code.is_allowed() => {
                            close_payload(CloseCode::Protocol, "Protocol violation")
                        }
                        Some(f) => close_payload(f.code, &f.reason),
                        None => Bytes::new(),
                    };
                    self.push(8, true, false, reply);
                    self.state = State::ClosedByPeer;
                } else {
                    self.state = State::Done;
                }
                Some(Ok(Message::Close(frame)))
            }
        }
    }

    /// Queues `msg` for the next flush.
    ///
    /// # Errors
    /// [`ProtocolError::SendAfterClosing`] once a close frame was queued or received.
    pub(crate) fn start_send(&mut self, msg: Message) -> Result<(), Error> {
        if self.state != State::Open {
            return Err(Error::Protocol(ProtocolError::SendAfterClosing));
        }
        match msg {
            Message::Text(text) => self.push(1, true, false, text.into()),
            Message::Binary(payload) => self.push(2, true, false, payload),
            Message::Ping(payload) => self.push(9, true, false, payload),
            Message::Pong(payload) => self.push(10, true, false, payload),
            Message::Close(frame) => self.push_close(frame),
            Message::Frame(frame) => {
                let header = frame.header();
                let (opcode, fin, rsv1) = (u8::from(header.opcode), header.is_final, header.rsv1);
                self.push(opcode, fin, rsv1, frame.into_payload());
            }
        }
        Ok(())
    }

    /// Queues our close frame: from now on only the peer's close frame is waited for.
    fn push_close(&mut self, frame: Option<CloseFrame>) {
        let payload = match &frame {
            Some(f) => close_payload(f.code, &f.reason),
            None => Bytes::new(),
        };
        self.push(8, true, false, payload);
        // From now on only the peer's close frame is read.
        self.state = State::ClosedByUs;
    }

    fn push(&mut self, opcode: u8, fin: bool, rsv1: bool, payload: Bytes) {
        let first = u8::from(fin) << 7 | u8::from(rsv1) << 6 | opcode;
        let (head, head_len) = frame_head(first, payload.len());
        let out = Out {
            head,
            head_len,
            payload,
        };
        self.out_bytes += out.len();
        take_room(&SPARE_FRAMES, &mut self.out);
        self.out.push_back(out);
    }

    /// Queues `msg`, first writing what is queued once it reaches the write buffer size.
    ///
    /// # Errors
    /// As [`Frames::start_send`], or the I/O error of the write.
    pub(crate) async fn feed(&mut self, msg: Message) -> Result<(), Error> {
        std::future::poll_fn(|cx| self.poll_ready(cx)).await?;
        self.start_send(msg)
    }

    /// Queues `msg` and writes everything queued.
    ///
    /// # Errors
    /// As [`Frames::feed`].
    pub(crate) async fn send(&mut self, msg: Message) -> Result<(), Error> {
        self.start_send(msg)?;
        self.flush().await
    }

    /// Writes everything queued and flushes the transport.
    ///
    /// # Errors
    /// The I/O error of the write.
    pub(crate) fn flush(&mut self) -> impl Future<Output = Result<(), Error>> + '_ {
        std::future::poll_fn(|cx| self.poll_flush(cx))
    }

    /// Starts the closing handshake (RFC 6455 section 7.1.2): queues our close frame, if
    /// none went either way yet, and writes everything queued.
    ///
    /// # Errors
    /// The I/O error of the write.
    pub(crate) async fn close(&mut self, frame: Option<CloseFrame>) -> Result<(), Error> {
        if self.state == State::Open {
            self.push_close(frame);
        }
        self.flush().await
    }

    /// Ends our side of the connection once the closing handshake is over: over TLS our
    /// close_notify (RFC 8446 section 6.1), then TCP's FIN, after what is still queued.
    ///
    /// # Errors
    /// The I/O error of the write.
    pub(crate) async fn shutdown(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| Pin::new(&mut self.io).poll_close(cx)).await
    }

    /// Ready for one more frame: what is queued is written first once it reaches the write
    /// buffer size (corking; [`Frames::feed`] waits on it).
    ///
    /// # Errors
    /// The I/O error of the write.
    pub(crate) fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if self.out_bytes >= self.write_size {
            ready!(self.poll_write_out(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    /// Whether frames wait to be written (a pong, say).
    pub(crate) fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Whether our close frame is queued or sent, or the peer's came.
    pub(crate) fn is_closing(&self) -> bool {
        self.state != State::Open
    }

    /// [`Frames::flush`], polled.
    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        ready!(self.poll_write_out(cx))?;
        Poll::Ready(ready!(Pin::new(&mut self.io).poll_flush(cx)).map_err(Error::Io))
    }

    /// Writes the queued frames: over plain TCP what fits in [`SMALL_WRITE`] bytes as one
    /// plain write of a copy (a `send`), else vectored writes of headers and payloads (which
    /// TLS seals into its records with one copy).
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        while !self.out.is_empty() {
            let left = self.out_bytes - self.out_pos;
            let join = left <= SMALL_WRITE && self.io.joins_small_writes();
            let io = Pin::new(&mut self.io);
            let n = if join {
                let joined = crate::per_thread::JOINED_FRAMES.with_borrow_mut(|joined| {
                    joined.clear();
                    each_unwritten(&self.out, self.out_pos, |part| {
                        joined.extend_from_slice(part);
                        true
                    });
                    io.poll_write(cx, joined)
                });
                ready!(joined)?
            } else if self.out.len() == 1 {
                // One frame (an echo, say): no array of slices to fill for two parts.
                ready!(write_parts::<2, S>(io, cx, &self.out, self.out_pos))?
            } else {
                ready!(write_parts::<MAX_SLICES, S>(
                    io,
                    cx,
                    &self.out,
                    self.out_pos
                ))?
            };
            if n == 0 {
                return Poll::Ready(Err(Error::Io(io::ErrorKind::WriteZero.into())));
            }
            self.out_pos += n;
            while let Some(first) = self.out.front() {
                let len = first.len();
                if self.out_pos < len {
                    break;
                }
                self.out_pos -= len;
                self.out_bytes -= len;
                self.out.pop_front();
            }
        }
        // All written: an idle connection holds no queue of frames (its room goes to the
        // thread's spare).
        keep_room(&SPARE_FRAMES, std::mem::take(&mut self.out));
        Poll::Ready(Ok(()))
    }
}

/// Writes the parts of `out` not written yet (the first `written` bytes being written) with
/// one vectored write of up to `N` slices.
fn write_parts<const N: usize, S: AsyncRead + AsyncWrite + Unpin>(
    io: Pin<&mut Transport<S>>,
    cx: &mut Context<'_>,
    out: &VecDeque<Out>,
    written: usize,
) -> Poll<io::Result<usize>> {
    let mut slices = [IoSlice::new(&[]); N];
    let mut count = 0;
    each_unwritten(out, written, |part| {
        slices[count] = IoSlice::new(part);
        count += 1;
        count < N
    });
    io.poll_write_vectored(cx, &slices[..count])
}

/// Hands `f` the parts of `out` (each frame's header, then its payload) not written yet, the
/// first `written` bytes being written, until `f` returns `false`.
fn each_unwritten<'a>(
    out: &'a VecDeque<Out>,
    mut written: usize,
    mut f: impl FnMut(&'a [u8]) -> bool,
) {
    for frame in out {
        for part in [frame.head(), &frame.payload[..]] {
            if written >= part.len() {
                written -= part.len();
                continue;
            }
            if !f(&part[written..]) {
                return;
            }
            written = 0;
        }
    }
}
