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

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::thread::LocalKey;

use async_tungstenite::tungstenite::Bytes;
use async_tungstenite::tungstenite::{
    Error, Message,
    error::{CapacityError, ProtocolError},
    protocol::{
        CloseFrame,
        frame::{
            Utf8Bytes,
            coding::{CloseCode, Data},
        },
    },
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
    /// Where reads land first, shared by the connections served on this thread.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Where small frames are joined for one plain write.
    static JOINED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// A frame queue's room, left by a connection that wrote all it had and taken by the
    /// next one that queues a frame on this thread: no allocation per message, and none
    /// held by an idle connection.
    static SPARE_OUT: Cell<VecDeque<Out>> = const { Cell::new(VecDeque::new()) };
}

/// Room for at most this many entries is kept in a queue's spare ([`SPARE_OUT`], and the
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

/// The reading side's state between frames.
struct Rx {
    /// The data message being reassembled from its frames (RFC 6455 section 5.4).
    partial: Option<Partial>,
    /// Payload bytes still to skip of a frame ignored while closing.
    skip: u64,
    max_frame: usize,
    max_message: usize,
    max_fragments: usize,
    /// Whether permessage-deflate was agreed (RFC 7692): RSV1 on a message's first frame
    /// then means its payload is compressed.
    deflate: bool,
    /// The UTF-8 check of a text frame that is partly here, as its bytes arrive.
    scan: Scan,
}

/// A data message whose frames are arriving (RFC 6455 section 5.4).
struct Partial {
    text: bool,
    /// The payload so far, unmasked (and inflated).
    payload: Vec<u8>,
    /// Its frames so far.
    frames: usize,
    /// How much of `payload` is known to be UTF-8 (a text message): what follows is at most
    /// the start of a character that the next frame completes.
    checked: usize,
    /// The inflater of a compressed message (RFC 7692 section 7.2.2).
    inflater: Option<flate2::Decompress>,
}

/// How far the UTF-8 check of a partly received text frame has come: the payload bytes
/// checked, and the start of a character they left unfinished.
#[derive(Default)]
struct Scan {
    done: u64,
    tail: [u8; 3],
    tail_len: u8,
}

/// A message in more fragments than [`Limits::max_fragments`]: close code 1009 (carried in
/// an `io::Error` of kind `InvalidData`).
#[derive(Debug)]
pub(crate) struct TooManyFragments(pub(crate) usize);

impl std::fmt::Display for TooManyFragments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a message in more than {} fragments (Limits::max_fragments)",
            self.0
        )
    }
}

impl std::error::Error for TooManyFragments {}

/// An error of the codec's own (not one of tungstenite's kinds), as an [`Error::Io`] of kind
/// `InvalidData`: the session reads the close code from it.
fn invalid_data(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Io(io::Error::new(io::ErrorKind::InvalidData, e))
}

fn invalid_utf8() -> Error {
    Error::Utf8("invalid UTF-8 in a text message".into())
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
    /// The protocol violation, size limit or invalid UTF-8 that fails the connection
    /// (RFC 6455 section 7.4.1), [`ProtocolError::ResetWithoutClosingHandshake`] when the
    /// peer left without one, or the I/O error.
    pub(crate) fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Message, Error>>> {
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
                    Err(e) => return Poll::Ready(Some(Err(e))),
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
                            return Poll::Ready(Some(Err(e)));
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
                    Err(e) => return Poll::Ready(Some(Err(e))),
                }
            }
            // Nothing buffered: read into this thread's buffer and parse there.
            let closing = self.state == State::ClosedByUs;
            let (io, rx, buf) = (&mut self.io, &mut self.rx, &mut self.buf);
            let read_size = self.read_size;
            let read = SCRATCH.with_borrow_mut(|scratch| {
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
                Ok((_, Some(Err(e)))) => return Poll::Ready(Some(Err(e))),
                Err(e) => return Poll::Ready(self.on_read_error(e)),
            }
            self.consume(0);
        }
    }

    /// The next message, as [`Frames::poll_next`].
    pub(crate) fn next(&mut self) -> impl Future<Output = Option<Result<Message, Error>>> + '_ {
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

    fn on_eof(&mut self) -> Option<Result<Message, Error>> {
        let state = std::mem::replace(&mut self.state, State::Done);
        self.start = self.end;
        self.consume(0);
        (state == State::Open).then_some(Err(Error::Protocol(
            ProtocolError::ResetWithoutClosingHandshake,
        )))
    }

    fn on_read_error(&mut self, e: io::Error) -> Option<Result<Message, Error>> {
        if self.state == State::ClosedByUs {
            // Closing already: whatever the peer still sends is of no use.
            self.state = State::Done;
            return None;
        }
        Some(Err(Error::Io(e)))
    }

    fn on_event(&mut self, event: Event) -> Option<Result<Message, Error>> {
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
        take_room(&SPARE_OUT, &mut self.out);
        self.out.push_back(out);
    }

    /// Queues `msg`, first writing what is queued once it reaches the write buffer size.
    ///
    /// # Errors
    /// As [`Frames::start_send`], or the I/O error of the write.
    pub(crate) async fn feed(&mut self, msg: Message) -> Result<(), Error> {
        if self.out_bytes >= self.write_size {
            std::future::poll_fn(|cx| self.poll_write_out(cx)).await?;
        }
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
    /// buffer size (as [`Frames::feed`]).
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
                let joined = JOINED.with_borrow_mut(|joined| {
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
        keep_room(&SPARE_OUT, std::mem::take(&mut self.out));
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

impl Rx {
    /// How many bytes the frame that starts `data` takes, header and payload, once its
    /// header is here; else the longest header.
    fn wanted(&self, data: &[u8]) -> usize {
        match frame_header(data) {
            Some((len, header_len)) if self.skip == 0 => {
                header_len
                    + usize::try_from(len)
                        .unwrap_or(usize::MAX)
                        .min(self.max_frame)
            }
            _ => MAX_HEADER,
        }
    }

    /// Reads and checks the header of the frame that starts `data` (RFC 6455 section 5.2):
    /// whether the frame is all there, or how many bytes were skipped. While `closing`, only
    /// a close frame counts: anything else is skipped as it arrives, and a bad close frame
    /// ends it all the same.
    ///
    /// # Errors
    /// The protocol violation or size limit that fails the connection.
    fn head(&mut self, data: &[u8], closing: bool) -> Result<Step, Error> {
        if self.skip > 0 {
            let n = self.skip.min(data.len() as u64);
            self.skip -= n;
            return Ok(Step::Skipped(n as usize));
        }
        let Some((len, header_len)) = frame_header(data) else {
            return Ok(Step::Incomplete);
        };
        let (fin, opcode) = (data[0] & 0x80 != 0, data[0] & 0x0F);
        if closing && opcode != 8 {
            // Skipped, as it arrives: it need not fit in memory.
            let here = (data.len() - header_len) as u64;
            let n = len.min(here);
            self.skip = len - n;
            return Ok(Step::Skipped(header_len + n as usize));
        }
        // RSV1 marks a compressed message's first frame when permessage-deflate was agreed
        // (RFC 7692 section 6); any other reserved bit, or RSV1 elsewhere, fails.
        let rsv1 = data[0] & 0x40 != 0;
        let compressed_start = rsv1 && self.deflate && matches!(opcode, 1 | 2);
        if data[0] & 0x30 != 0 || (rsv1 && !compressed_start) {
            return Err(Error::Protocol(ProtocolError::NonZeroReservedBits));
        }
        if data[1] & 0x80 == 0 {
            return Err(Error::Protocol(ProtocolError::UnmaskedFrameFromClient));
        }
        if opcode >= 8 {
            if !fin {
                return Err(Error::Protocol(ProtocolError::FragmentedControlFrame));
            }
            if len > 125 {
                return Err(Error::Protocol(ProtocolError::ControlFrameTooBig));
            }
            if opcode > 10 {
                return Err(Error::Protocol(ProtocolError::UnknownControlFrameType(
                    opcode,
                )));
            }
        } else {
            if opcode > 2 {
                return Err(Error::Protocol(ProtocolError::UnknownDataFrameType(opcode)));
            }
            let so_far = self.partial.as_ref().map_or(0, |p| p.payload.len());
            let frames = self.partial.as_ref().map_or(0, |p| p.frames);
            if frames >= self.max_fragments {
                return Err(invalid_data(TooManyFragments(self.max_fragments)));
            }
            let compressed =
                compressed_start || self.partial.as_ref().is_some_and(|p| p.inflater.is_some());
            match (opcode, &self.partial) {
                (0, None) => return Err(Error::Protocol(ProtocolError::UnexpectedContinueFrame)),
                (1 | 2, Some(_)) => {
                    return Err(Error::Protocol(ProtocolError::ExpectedFragment(
                        Data::Continue,
                    )));
                }
                _ => {}
            }
            if len > self.max_frame as u64 {
                return Err(too_long(len, self.max_frame));
            }
            // A compressed frame's size says little of what it inflates to: that is checked
            // as it inflates.
            if !compressed && so_far as u64 + len > self.max_message as u64 {
                return Err(too_long(so_far as u64 + len, self.max_message));
            }
        }
        let total = header_len + len as usize;
        if data.len() < total {
            return Ok(Step::Incomplete);
        }
        let mut key = [0u8; 4];
        key.copy_from_slice(&data[header_len - 4..header_len]);
        Ok(Step::Frame(Head {
            fin,
            opcode,
            compressed: compressed_start,
            header_len,
            total,
            key,
        }))
    }

    /// Parses the frame that starts `data`, if it is all there: the bytes it took (0 when
    /// it is not complete yet) and what it gave.
    ///
    /// # Errors
    /// As [`Rx::head`], or invalid UTF-8 in a text message or close reason.
    fn parse(&mut self, data: &[u8], closing: bool) -> Result<(usize, Option<Event>), Error> {
        match self.head(data, closing)? {
            Step::Incomplete => Ok((0, None)),
            Step::Skipped(n) => Ok((n, None)),
            Step::Frame(head) => {
                let payload = Payload::Masked(&data[head.header_len..head.total]);
                Ok((head.total, self.event(&head, payload)?))
            }
        }
    }

    /// What the complete frame `head` gave, with its payload.
    fn event(&mut self, head: &Head, payload: Payload<'_>) -> Result<Option<Event>, Error> {
        // The next frame's UTF-8 check starts afresh.
        self.scan = Scan::default();
        let key = head.key;
        let whole = |payload: Payload<'_>| match payload {
            Payload::Masked(data) => Bytes::from(unmasked(data, key)),
            Payload::Unmasked(bytes) => bytes,
        };
        Ok(match head.opcode {
            1 | 2 if head.fin && !head.compressed => {
                Some(Event::Message(message(head.opcode == 1, whole(payload))?))
            }
            1 | 2 => {
                let mut partial = Partial {
                    text: head.opcode == 1,
                    payload: Vec::new(),
                    frames: 0,
                    checked: 0,
                    inflater: head.compressed.then(crate::deflate::inflater),
                };
                self.append(&mut partial, head, payload)?;
                self.complete(partial, head.fin)?
            }
            0 => {
                let mut partial = self.partial.take().expect("checked by Rx::head");
                self.append(&mut partial, head, payload)?;
                self.complete(partial, head.fin)?
            }
            8 => Some(Event::Close(close_frame(whole(payload))?)),
            9 => Some(Event::Message(Message::Ping(whole(payload)))),
            _ => Some(Event::Message(Message::Pong(whole(payload)))),
        })
    }

    /// Adds a data frame's payload to the message: unmasked, inflated when the message is
    /// compressed, and checked for UTF-8 so far when it is text and more frames follow.
    fn append(
        &self,
        partial: &mut Partial,
        head: &Head,
        payload: Payload<'_>,
    ) -> Result<(), Error> {
        partial.frames += 1;
        match &mut partial.inflater {
            None => match payload {
                Payload::Masked(data) => unmask_into(&mut partial.payload, data, head.key),
                Payload::Unmasked(bytes) => partial.payload.extend_from_slice(&bytes),
            },
            Some(inflater) => {
                let input = match payload {
                    Payload::Masked(data) => Bytes::from(unmasked(data, head.key)),
                    Payload::Unmasked(bytes) => bytes,
                };
                let out = &mut partial.payload;
                crate::deflate::inflate_into(inflater, &input, head.fin, out, self.max_message)
                    .map_err(invalid_data)?;
            }
        }
        // The last frame's check is the whole message's (`message`).
        if partial.text && !head.fin {
            match std::str::from_utf8(&partial.payload[partial.checked..]) {
                Ok(_) => partial.checked = partial.payload.len(),
                Err(e) if e.error_len().is_some() => return Err(invalid_utf8()),
                Err(e) => partial.checked += e.valid_up_to(),
            }
        }
        Ok(())
    }

    /// The message, once its last frame is in; else it waits for the next.
    fn complete(&mut self, mut partial: Partial, fin: bool) -> Result<Option<Event>, Error> {
        if !fin {
            self.partial = Some(partial);
            return Ok(None);
        }
        if let Some(inflater) = partial.inflater.take() {
            crate::deflate::done_with(inflater);
        }
        Ok(Some(Event::Message(message(
            partial.text,
            partial.payload.into(),
        )?)))
    }

    /// Checks the bytes of a text frame that is partly here (`data` starts with its header)
    /// for UTF-8, from where the last look stopped: a text message that turns invalid fails
    /// at the bytes that break it, before the rest of the frame arrives.
    ///
    /// # Errors
    /// Invalid UTF-8.
    fn scan(&mut self, data: &[u8], closing: bool) -> Result<(), Error> {
        let Some((len, header_len)) = frame_header(data) else {
            return Ok(());
        };
        let opcode = data[0] & 0x0F;
        let text = match (opcode, &self.partial) {
            (1, None) => data[0] & 0x40 == 0,
            (0, Some(p)) => p.text && p.inflater.is_none(),
            _ => false,
        };
        if closing || self.skip > 0 || !text || data[1] & 0x80 == 0 {
            return Ok(());
        }
        if self.scan.done == 0 {
            // Where the message so far left off: the start of an unfinished character.
            let tail = self
                .partial
                .as_ref()
                .map_or(&[][..], |p| &p.payload[p.checked..]);
            self.scan.tail[..tail.len()].copy_from_slice(tail);
            self.scan.tail_len = tail.len() as u8;
        }
        let here = &data[header_len..];
        let end = here.len().min(usize::try_from(len).unwrap_or(usize::MAX));
        let from = self.scan.done as usize;
        if from >= end {
            return Ok(());
        }
        let raw = &data[header_len - 4..header_len];
        let mut block = [0u8; 512];
        for chunk in here[from..end].chunks(block.len() - 3) {
            let start = usize::from(self.scan.tail_len);
            block[..start].copy_from_slice(&self.scan.tail[..start]);
            let stop = start + chunk.len();
            block[start..stop].copy_from_slice(chunk);
            // The key as it falls on this chunk's first byte (RFC 6455 section 5.3).
            let at = self.scan.done as usize;
            let key = [0, 1, 2, 3].map(|i| raw[(at + i) % 4]);
            unmask(&mut block[start..stop], key);
            self.scan.done += chunk.len() as u64;
            self.scan.tail_len = 0;
            if let Err(e) = std::str::from_utf8(&block[..stop]) {
                if e.error_len().is_some() {
                    return Err(invalid_utf8());
                }
                let tail = &block[e.valid_up_to()..stop];
                self.scan.tail[..tail.len()].copy_from_slice(tail);
                self.scan.tail_len = tail.len() as u8;
            }
        }
        Ok(())
    }
}

/// A frame's header, read and checked, when all of the frame is here.
struct Head {
    fin: bool,
    opcode: u8,
    /// The first frame of a compressed message (RSV1, permessage-deflate agreed).
    compressed: bool,
    header_len: usize,
    /// Header and payload.
    total: usize,
    key: [u8; 4],
}

/// What [`Rx::head`] found.
enum Step {
    /// The frame is not all here yet.
    Incomplete,
    /// This many bytes of a frame ignored while closing were skipped.
    Skipped(usize),
    /// A whole frame.
    Frame(Head),
}

/// A complete frame's payload: as it came (masked) or unmasked already, in a buffer of
/// its own.
enum Payload<'a> {
    Masked(&'a [u8]),
    Unmasked(Bytes),
}

/// An unmasked frame's header (RFC 6455 section 5.2) for first byte `first` (FIN, RSV,
/// opcode) and a payload of `len` bytes, and its length: 2, 4 or 10 bytes.
/// The room a partly received frame of `wanted` bytes (header and payload) gets when `have`
/// of them are here: twice what came, at least [`MIN_ROOM`], at most the frame. So what a
/// peer makes the server hold follows what it sent, not what its header announced: a header
/// announcing 1 MiB followed by nothing costs 4 KiB, and a frame that does arrive grows its
/// buffer by doubling (a few reallocations, each copying what came).
fn room(wanted: usize, have: usize) -> usize {
    wanted.min(have.saturating_mul(2).max(MIN_ROOM))
}

/// The least room a partly received frame gets: 4 KiB.
const MIN_ROOM: usize = 4096;

fn frame_head(first: u8, len: usize) -> ([u8; 10], u8) {
    let mut head = [0u8; 10];
    head[0] = first;
    let head_len = if len < 126 {
        head[1] = len as u8;
        2
    } else if len <= 0xFFFF {
        head[1] = 126;
        head[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        head[1] = 127;
        head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    (head, head_len)
}

fn too_long(size: u64, max_size: usize) -> Error {
    Error::Capacity(CapacityError::MessageTooLong {
        size: usize::try_from(size).unwrap_or(usize::MAX),
        max_size,
    })
}

/// A text (checked for UTF-8, RFC 6455 section 8.1) or binary message of `payload`.
fn message(text: bool, payload: Bytes) -> Result<Message, Error> {
    if !text {
        return Ok(Message::Binary(payload));
    }
    Utf8Bytes::try_from(payload)
        .map(Message::Text)
        .map_err(|e| Error::Utf8(e.to_string()))
}

/// A close frame's payload: nothing, or a code and a UTF-8 reason (RFC 6455 section 5.5.1).
fn close_frame(payload: Bytes) -> Result<Option<CloseFrame>, Error> {
    match payload.len() {
        0 => Ok(None),
        1 => Err(Error::Protocol(ProtocolError::InvalidCloseSequence)),
        _ => {
            let code = CloseCode::from(u16::from_be_bytes([payload[0], payload[1]]));
            let reason =
                Utf8Bytes::try_from(payload.slice(2..)).map_err(|e| Error::Utf8(e.to_string()))?;
            Ok(Some(CloseFrame { code, reason }))
        }
    }
}

/// A close frame's payload: the code, then the reason (RFC 6455 section 5.5.1).
fn close_payload(code: CloseCode, reason: &str) -> Bytes {
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&u16::from(code).to_be_bytes());
    payload.extend_from_slice(reason.as_bytes());
    payload.into()
}

/// `payload` unmasked with `key` (RFC 6455 section 5.3), in a buffer of its own.
fn unmasked(payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len());
    unmask_into(&mut out, payload, key);
    out
}

/// Appends `payload` unmasked with `key` to `out`.
fn unmask_into(out: &mut Vec<u8>, payload: &[u8], key: [u8; 4]) {
    let start = out.len();
    out.extend_from_slice(payload);
    unmask(&mut out[start..], key);
}

/// Unmasks `payload` with `key` where it is (RFC 6455 section 5.3): 32 bytes at a time (a
/// loop the compiler turns into vector XORs), then eight, then one.
pub(crate) fn unmask(payload: &mut [u8], key: [u8; 4]) {
    let wide: [u8; 32] = std::array::from_fn(|i| key[i & 3]);
    let mut chunks = payload.chunks_exact_mut(32);
    for chunk in &mut chunks {
        for (byte, k) in chunk.iter_mut().zip(&wide) {
            *byte ^= k;
        }
    }
    let mut words = chunks.into_remainder().chunks_exact_mut(8);
    let word_key = u64::from_ne_bytes(wide[..8].try_into().expect("8 bytes"));
    for word in &mut words {
        let masked = u64::from_ne_bytes((&*word).try_into().expect("8 bytes")) ^ word_key;
        word.copy_from_slice(&masked.to_ne_bytes());
    }
    for (byte, k) in words.into_remainder().iter_mut().zip(&wide) {
        *byte ^= k;
    }
}

/// The payload length and the header length of a frame whose header starts `h`
/// (RFC 6455 section 5.2), or `None` while `h` does not hold all of the header yet.
/// The masking key, when the MASK bit is set, is the header's last 4 bytes.
pub(crate) fn frame_header(h: &[u8]) -> Option<(u64, usize)> {
    if h.len() < 2 {
        return None;
    }
    let extended = match h[1] & 0x7F {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let header_len = 2 + extended + if h[1] & 0x80 != 0 { 4 } else { 0 };
    if h.len() < header_len {
        return None;
    }
    let len = match extended {
        0 => u64::from(h[1] & 0x7F),
        n => h[2..2 + n]
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)),
    };
    Some((len, header_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmasking_matches_the_bytewise_rule_at_every_length() {
        let key = [0x12, 0x34, 0x56, 0x78];
        for len in 0..100 {
            let payload: Vec<u8> = (0..len as u8).collect();
            let expected: Vec<u8> = payload
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ key[i % 4])
                .collect();
            assert_eq!(unmasked(&payload, key), expected, "length {len}");
        }
    }

    /// A client's bytes, handed out `chunk` bytes at most per read (however large the
    /// reader's buffer), then the end of stream (or, `waits`, nothing more: pending);
    /// writes are taken and dropped.
    struct Chunked {
        data: Vec<u8>,
        at: usize,
        chunk: usize,
        waits: bool,
    }

    impl AsyncRead for Chunked {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.chunk).min(self.data.len() - self.at);
            if n == 0 && self.waits && !buf.is_empty() {
                return Poll::Pending;
            }
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Poll::Ready(Ok(n))
        }
    }

    impl AsyncWrite for Chunked {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            b: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(b.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// The codec over `io`, as a server runs it.
    fn over(io: Chunked, limits: &Limits, deflate: bool) -> Frames<Chunked> {
        let transport = Transport::new(crate::transport::MaybeTls::Plain(io));
        Frames::new(transport, Vec::new(), limits, deflate)
    }

    /// What the codec makes of `wire` handed over `chunk` bytes at most per read: the
    /// messages up to the close frame, or the first error's text.
    fn read_all(
        wire: &[u8],
        chunk: usize,
        limits: &Limits,
        deflate: bool,
    ) -> Result<Vec<Message>, String> {
        let io = Chunked {
            data: wire.to_vec(),
            at: 0,
            chunk,
            waits: false,
        };
        let mut frames = over(io, limits, deflate);
        futures_lite::future::block_on(async {
            let mut got = Vec::new();
            while let Some(msg) = frames.next().await {
                match msg {
                    Ok(msg) if msg.is_close() => break,
                    Ok(msg) => got.push(msg),
                    Err(e) => return Err(e.to_string()),
                }
            }
            Ok(got)
        })
    }

    /// A client's frame with this first byte (FIN, RSV, opcode) and key (RFC 6455 section 5.2).
    fn masked(first: u8, key: [u8; 4], payload: &[u8]) -> Vec<u8> {
        let (head, head_len) = frame_head(first, payload.len());
        let mut out = head[..usize::from(head_len)].to_vec();
        out[1] |= 0x80;
        out.extend_from_slice(&key);
        unmask_into(&mut out, payload, key); // masking and unmasking are the same XOR
        out
    }

    /// A client's frame (RFC 6455 section 5.2): masked, with a key that changes per frame.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8], seed: u8) -> Vec<u8> {
        let key = [seed, seed ^ 0x5A, seed.wrapping_add(77), 0xC3];
        let (head, head_len) = frame_head(u8::from(fin) << 7 | opcode, payload.len());
        let mut out = head[..usize::from(head_len)].to_vec();
        out[1] |= 0x80;
        out.extend_from_slice(&key);
        unmask_into(&mut out, payload, key); // masking and unmasking are the same XOR
        out
    }

    #[test]
    fn messages_come_out_whole_however_their_frames_are_split_across_reads() {
        // Sizes around the read size (16 KiB and a header) and the header's length forms,
        // single frames and a fragmented message with a ping between its frames.
        let sizes = [0, 1, 125, 126, 1000, 16_370, 16_384, 16_385, 16_400, 70_000];
        let mut wire = Vec::new();
        let mut expected = Vec::new();
        for (i, &size) in sizes.iter().enumerate() {
            let payload: Vec<u8> = (0..size).map(|j| (j * 7 + i) as u8).collect();
            wire.extend(client_frame(true, 2, &payload, i as u8));
            expected.push(Message::Binary(payload.into()));
        }
        let text = "é".repeat(9_000);
        let (a, b) = text.as_bytes().split_at(10_001); // inside a character
        wire.extend(client_frame(false, 1, a, 90));
        wire.extend(client_frame(true, 9, b"ping", 91));
        wire.extend(client_frame(true, 0, b, 92));
        expected.push(Message::Ping(Bytes::from_static(b"ping")));
        expected.push(Message::Text(text.clone().into()));
        wire.extend(client_frame(true, 1, text.as_bytes(), 93));
        expected.push(Message::Text(text.into()));
        wire.extend(client_frame(true, 8, &1000u16.to_be_bytes(), 94));

        for chunk in [1, 3, 14, 1000, 16_384, 16_398, 16_399, 40_000, usize::MAX] {
            let io = Chunked {
                data: wire.clone(),
                at: 0,
                chunk,
                waits: false,
            };
            let mut frames = over(io, &Limits::default(), false);
            let got: Vec<Message> = futures_lite::future::block_on(async {
                let mut got = Vec::new();
                while let Some(msg) = frames.next().await {
                    let msg = msg.expect("valid frames");
                    if msg.is_close() {
                        break;
                    }
                    got.push(msg);
                }
                got
            });
            assert_eq!(got.len(), expected.len(), "reads of {chunk} bytes");
            for (n, (got, want)) in got.iter().zip(&expected).enumerate() {
                assert!(got == want, "message {n}, reads of {chunk} bytes");
            }
        }
    }

    #[test]
    fn a_frame_header_that_announces_a_mebibyte_costs_what_came_not_what_it_announced() {
        let limits = Limits::default();
        let payload = vec![0x41; limits.max_frame_size];
        let wire = client_frame(true, 2, &payload, 1);
        // The 14-byte header and one byte; then 100 KB of it; then all of it.
        for (sent, bound) in [(15, MIN_ROOM), (100_000, 200_000)] {
            for chunk in [15, 4096, usize::MAX] {
                let io = Chunked {
                    data: wire[..sent].to_vec(),
                    at: 0,
                    chunk,
                    waits: true,
                };
                let mut frames = over(io, &limits, false);
                let waker = std::task::Waker::noop();
                let pending = frames.poll_next(&mut Context::from_waker(waker));
                assert!(pending.is_pending());
                let held = frames.buf.capacity();
                assert!(
                    held <= bound,
                    "{sent} bytes in reads of {chunk}: {held} held"
                );
            }
        }
    }

    #[test]
    fn fragments_and_utf8_are_judged_the_same_however_their_bytes_arrive() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let long_text = "κόσμε €".repeat(40); // 16-bit length, characters across masks
        let mut good = masked(0x01, key, long_text.as_bytes());
        good.extend(masked(0x89, [1, 2, 3, 4], b"\xff")); // a ping between fragments
        good.extend(masked(0x80, [9, 9, 9, 9], "ό".as_bytes()));
        good.extend(masked(0x82, key, &[0xff; 70_000])); // 64-bit length, not text
        good.extend(masked(0x88, key, &1000u16.to_be_bytes()));
        // Invalid in the second fragment, and inside a frame that never completes (its last
        // bytes never come): each fails at the bytes that break it (RFC 6455 section 8.1).
        let mut bad_fragment = masked(0x01, key, "κόσμε".as_bytes());
        bad_fragment.extend(masked(0x00, key, b"\xce\xba\xf4\x90\x80\x80"));
        let mut bad_in_frame = masked(0x81, key, b"hello \xf4\x90\x80\x80 world");
        bad_in_frame.truncate(bad_in_frame.len() - 4);
        let mut too_many = masked(0x02, key, b"a");
        for _ in 0..4 {
            too_many.extend(masked(0x00, key, b"b"));
        }
        too_many.extend(masked(0x88, key, &1000u16.to_be_bytes()));
        let limits = Limits {
            max_fragments: 4,
            ..Limits::default()
        };
        let utf8 = "UTF-8 encoding error: invalid UTF-8 in a text message";
        let fragments = "IO error: a message in more than 4 fragments (Limits::max_fragments)";
        let cases: [(&[u8], Result<usize, &str>); 4] = [
            (&good, Ok(3)),
            (&bad_fragment, Err(utf8)),
            (&bad_in_frame, Err(utf8)),
            (&too_many, Err(fragments)),
        ];
        for (wire, expected) in cases {
            for chunk in [1, 2, 3, 5, 7, 13, 14, 100, 4096, usize::MAX] {
                let got = read_all(wire, chunk, &limits, false);
                let got = got.as_ref().map(Vec::len).map_err(String::as_str);
                assert_eq!(got, expected, "reads of {chunk}");
            }
        }
    }

    /// "Hello" compressed (RFC 7692 section 7.2.3.1).
    const HELLO: [u8; 7] = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];

    #[test]
    fn compressed_messages_inflate_whole_or_in_fragments_when_deflate_was_agreed() {
        let close = masked(0x88, [1, 2, 3, 4], &1000u16.to_be_bytes());
        let limits = Limits::default();
        let hello = [masked(0xc1, [0; 4], &HELLO), close.clone()].concat();
        for chunk in [1, 5, usize::MAX] {
            let got = read_all(&hello, chunk, &limits, true);
            assert_eq!(got, Ok(vec![Message::text("Hello")]), "reads of {chunk}");
        }
        // Not agreed: RSV1 is a protocol error (RFC 6455 section 5.2).
        let refused = read_all(&hello, usize::MAX, &limits, false).unwrap_err();
        assert!(refused.contains("Reserved bits are non-zero"), "{refused}");
        // RSV2 or RSV3 beside RSV1, RSV1 on a continuation or a control frame: refused.
        let mut on_continuation = masked(0x41, [5; 4], &HELLO[..3]);
        on_continuation.extend(masked(0xc0, [6; 4], &HELLO[3..]));
        for wire in [
            masked(0xe1, [0; 4], &HELLO),
            masked(0xd1, [0; 4], &HELLO),
            masked(0xc9, [0; 4], b""),
            on_continuation,
        ] {
            let refused = read_all(&wire, usize::MAX, &limits, true).unwrap_err();
            assert!(refused.contains("Reserved bits are non-zero"), "{refused}");
        }
        // A compressed text message, as a client sends it in two fragments.
        let agreed = crate::deflate::Agreed {
            window_bits: 15,
            min_size: 0,
            level: 1,
        };
        let text = "{\"user\":\"tom\",\"text\":\"hello hello hello hello\"}".repeat(20);
        let Some(Message::Frame(frame)) =
            crate::deflate::compress(&Message::text(text.clone()), &agreed)
        else {
            panic!("compressed")
        };
        assert!(frame.header().rsv1 && frame.payload().len() < text.len() / 4);
        let (a, b) = frame.payload().split_at(frame.payload().len() / 2);
        let wire = [
            masked(0x41, [7, 1, 2, 3], a),
            masked(0x80, [3, 2, 1, 7], b),
            close,
        ]
        .concat();
        for chunk in [1, 7, usize::MAX] {
            let got = read_all(&wire, chunk, &limits, true);
            assert_eq!(
                got,
                Ok(vec![Message::text(text.clone())]),
                "reads of {chunk}"
            );
        }
    }

    #[test]
    fn a_compressed_bomb_stops_at_the_message_limit_and_garbage_is_invalid() {
        let agreed = crate::deflate::Agreed {
            window_bits: 15,
            min_size: 0,
            level: 9,
        };
        let Some(Message::Frame(frame)) =
            crate::deflate::compress(&Message::binary(vec![0u8; 1 << 20]), &agreed)
        else {
            panic!("compressed")
        };
        assert!(frame.payload().len() < 2048, "{}", frame.payload().len());
        let bomb = masked(0xc2, [0; 4], frame.payload());
        let limits = Limits {
            max_message_size: 64 << 10,
            ..Limits::default()
        };
        let too_big = read_all(&bomb, usize::MAX, &limits, true).unwrap_err();
        assert!(too_big.contains("inflates past 65536 bytes"), "{too_big}");
        let garbage = masked(0xc1, [0; 4], &[0xff; 4]);
        let corrupt = read_all(&garbage, usize::MAX, &Limits::default(), true).unwrap_err();
        assert!(corrupt.contains("not valid DEFLATE"), "{corrupt}");
    }

    #[test]
    fn a_compressed_frame_header_that_announces_a_mebibyte_costs_what_came() {
        let mut wire = masked(0xc2, [1, 2, 3, 4], &vec![0x55; 1 << 20]);
        wire.truncate(14 + 1024);
        let io = Chunked {
            data: wire,
            at: 0,
            chunk: usize::MAX,
            waits: true,
        };
        let mut frames = over(io, &Limits::default(), true);
        let waker = std::task::Waker::noop();
        assert!(
            frames
                .poll_next(&mut Context::from_waker(waker))
                .is_pending()
        );
        let held = frames.buf.capacity();
        assert!(held <= MIN_ROOM, "{held} bytes held for 1 KiB sent");
    }
}
