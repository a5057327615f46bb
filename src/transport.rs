//! The byte stream under the session's frame codec (`crate::frames`), and under the
//! [`WebSocket`] that [`Accepted::into_parts`](crate::Accepted::into_parts) hands over, in
//! layers of one job each:
//! - [`MaybeTls`]: `S` itself for `ws://`, or TLS over `S` for `wss://`
//!   ([`crate::tls_stream`]);
//! - the deferred `101`: written ahead of anything else on the first read, write or flush,
//!   so that [`Handler::on_open`](crate::Handler::on_open) runs before the client knows;
//! - [`FragmentGuard`]: counts the frames of each incoming message as the bytes arrive
//!   (RFC 6455 section 5.4), against [`Limits::max_fragments`](crate::Limits::max_fragments).

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures_io::{AsyncRead, AsyncWrite};

use crate::tls_stream::TlsStream;

/// A WebSocket over `S`, after a successful opening handshake, as
/// [`Accepted::into_parts`](crate::Accepted::into_parts) hands it over to drive yourself: a
/// `Stream` of incoming messages and a `Sink` of outgoing ones (async-tungstenite).
/// [`Accepted::serve`](crate::Accepted::serve) runs wssd's own frame codec instead.
pub type WebSocket<S> = async_tungstenite::WebSocketStream<Transport<S>>;

/// The transport under a [`WebSocket`]: plain or TLS, then the deferred `101`, then the
/// fragment guard. It is what [`crate::Acceptor::accept`] builds; you only name it.
#[derive(Debug)]
pub struct Transport<S> {
    io: MaybeTls<S>,
    /// The 101 response, written ahead of anything else on the first write, flush or read.
    preamble: Vec<u8>,
    guard: FragmentGuard,
    /// The permessage-deflate layer, when agreed (RFC 7692).
    inflate: Option<Box<crate::deflate::Inflate>>,
}

/// `S` itself, or TLS over `S` (boxed: the TLS state is about 1 KiB).
#[derive(Debug)]
pub(crate) enum MaybeTls<S> {
    Plain(S),
    Tls(Box<TlsStream<S>>),
}

impl<S> Transport<S> {
    /// `io`, with nothing deferred and the fragment guard off until [`Transport::arm`].
    pub(crate) fn new(io: MaybeTls<S>, max_fragments: usize) -> Self {
        Transport {
            io,
            preamble: Vec::new(),
            guard: FragmentGuard::new(max_fragments),
            inflate: None,
        }
    }

    /// Whether small frames are best joined into one buffer before a write: over plain TCP
    /// one `write` beats a `writev` of their parts, while TLS copies a vectored write's
    /// parts into its records anyway (a join would be a second copy).
    pub(crate) fn joins_small_writes(&self) -> bool {
        matches!(self.io, MaybeTls::Plain(_))
    }

    /// Inflates compressed messages before the frame codec sees them (permessage-deflate agreed).
    pub(crate) fn inflate(&mut self, max_frame: usize, max_message: usize) {
        self.inflate = Some(Box::new(crate::deflate::Inflate::new(
            max_frame,
            max_message,
        )));
    }

    /// Defers the `101` answer to the first read, write or flush.
    pub(crate) fn defer(&mut self, response: Vec<u8>) {
        self.preamble = response;
    }

    /// The deferred `101`, to edit or replace (with a refusal), if it is not sent yet.
    pub(crate) fn deferred_mut(&mut self) -> Option<&mut Vec<u8>> {
        (!self.preamble.is_empty()).then_some(&mut self.preamble)
    }

    /// Stops watching frames: the closing handshake is under way, and only the peer's
    /// close frame is still read.
    pub(crate) fn disarm(&mut self) {
        self.guard.armed = false;
    }

    /// Starts watching frames, beginning with `already_read` (frames that came behind the
    /// request). With permessage-deflate, those go through the inflating layer first: they
    /// are taken out of `already_read`, and read back through [`Transport`].
    pub(crate) fn arm(&mut self, already_read: &mut Vec<u8>) -> io::Result<()> {
        self.guard.armed = true;
        match &mut self.inflate {
            Some(inflate) => {
                inflate.feed(already_read)?;
                already_read.clear();
                Ok(())
            }
            None => self.guard.scan(already_read),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Transport<S> {
    /// Writes and flushes what is left of the deferred `101`.
    #[inline]
    fn poll_preamble(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.preamble.is_empty() {
            return Poll::Ready(Ok(()));
        }
        self.poll_preamble_write(cx)
    }

    #[inline(never)]
    fn poll_preamble_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.preamble.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.preamble))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.preamble.drain(..n);
            if self.preamble.is_empty() {
                self.preamble = Vec::new(); // sent: free it
                return Pin::new(&mut self.io).poll_flush(cx);
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Transport<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_preamble(cx))?;
        let Some(inflate) = &mut this.inflate else {
            let n = ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
            this.guard.scan(&buf[..n])?;
            return Poll::Ready(Ok(n));
        };
        // `buf` serves as the scratch space for what the client sent, then holds what
        // the inflating layer made of it.
        while !inflate.has_output() {
            let n = ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
            if n == 0 || buf.is_empty() {
                return Poll::Ready(Ok(0));
            }
            inflate.feed(&buf[..n])?;
        }
        let n = inflate.take(buf);
        this.guard.scan(&buf[..n])?;
        Poll::Ready(Ok(n))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Transport<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_preamble(cx))?;
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_preamble(cx))?;
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_preamble(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_close(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for MaybeTls<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for MaybeTls<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            MaybeTls::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_close(cx),
            MaybeTls::Tls(s) => Pin::new(s).poll_close(cx),
        }
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

/// Watches the incoming frames as their bytes arrive, before the frame codec parses them
/// (RFC 6455 section 5.2): it counts the frames of each data message against
/// [`Limits::max_fragments`](crate::Limits::max_fragments) (section 5.4), and checks the
/// payload of text messages for UTF-8 as it arrives, so that a message that turns invalid
/// fails at the fragment, or the part of a frame, that breaks it (section 8.1), not when it
/// completes. It is armed once the opening handshake is done.
#[derive(Debug)]
pub(crate) struct FragmentGuard {
    max: usize,
    /// Payload bytes left in the current frame.
    payload_left: u64,
    /// The current frame header, as far as it has arrived.
    header: [u8; 14],
    header_len: u8,
    /// Frames of the current data message so far.
    frames: usize,
    /// Whether the current data message is text (its first frame had opcode 1).
    text: bool,
    /// Whether the current frame's payload is checked for UTF-8 (a text message's frame).
    checking: bool,
    /// The current frame's masking key, and the offset of the next payload byte (RFC 6455 section 5.3).
    mask: [u8; 4],
    mask_pos: usize,
    /// The start of a UTF-8 sequence that the bytes so far left unfinished (at most 3 bytes).
    partial: [u8; 3],
    partial_len: u8,
    /// Off until the opening handshake is done.
    pub(crate) armed: bool,
}

/// The io errors a [`FragmentGuard`] raises; the session loop closes with the code each names.
#[derive(Debug)]
pub(crate) enum GuardError {
    /// A message in more fragments than the limit: close code 1009.
    TooManyFragments(usize),
    /// A text message whose bytes so far are not UTF-8: close code 1007 (RFC 6455 section 8.1).
    InvalidUtf8,
}

impl fmt::Display for GuardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuardError::TooManyFragments(max) => write!(
                f,
                "a message in more than {max} fragments (Limits::max_fragments)"
            ),
            GuardError::InvalidUtf8 => write!(f, "invalid UTF-8 in a text message"),
        }
    }
}

impl std::error::Error for GuardError {}

impl FragmentGuard {
    pub(crate) fn new(max: usize) -> Self {
        FragmentGuard {
            max,
            payload_left: 0,
            header: [0; 14],
            header_len: 0,
            frames: 0,
            text: false,
            checking: false,
            mask: [0; 4],
            mask_pos: 0,
            partial: [0; 3],
            partial_len: 0,
            armed: false,
        }
    }

    pub(crate) fn scan(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        if !self.armed {
            return Ok(());
        }
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let take = self.payload_left.min(bytes.len() as u64) as usize;
                if self.checking {
                    self.check_utf8(&bytes[..take])?;
                }
                self.payload_left -= take as u64;
                bytes = &bytes[take..];
                continue;
            }
            if self.header_len == 0 {
                // The whole header is here (the usual case): read it where it lies.
                if let Some((len, header_len)) = frame_header(bytes) {
                    self.on_header(&bytes[..header_len], len)?;
                    bytes = &bytes[header_len..];
                    continue;
                }
            }
            self.header[usize::from(self.header_len)] = bytes[0];
            self.header_len += 1;
            bytes = &bytes[1..];
            let h = &self.header[..usize::from(self.header_len)];
            let Some((len, _)) = frame_header(h) else {
                continue;
            };
            let header = self.header;
            self.on_header(&header[..usize::from(self.header_len)], len)?;
            self.header_len = 0;
        }
        Ok(())
    }

    /// Takes in a frame's header `h` (all of it), whose payload is `len` bytes.
    fn on_header(&mut self, h: &[u8], len: u64) -> io::Result<()> {
        let (fin, opcode) = (h[0] & 0x80 != 0, h[0] & 0x0F);
        self.mask = [0; 4];
        if h[1] & 0x80 != 0 {
            self.mask.copy_from_slice(&h[h.len() - 4..]);
        }
        self.mask_pos = 0;
        // RSV1 set means a compressed payload (RFC 7692), which is not checked here.
        let plain = h[0] & 0x70 == 0;
        self.checking = false;
        if opcode < 8 {
            // A data frame: 0 continues a message, 1 and 2 start one.
            if opcode != 0 {
                self.text = opcode == 1;
                self.partial_len = 0;
            }
            self.frames = if opcode == 0 { self.frames + 1 } else { 1 };
            if self.frames > self.max {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    GuardError::TooManyFragments(self.max),
                ));
            }
            self.checking = self.text && plain;
            if fin {
                self.frames = 0;
            }
        }
        self.payload_left = len;
        Ok(())
    }

    /// Unmasks `payload` (the next bytes of a text frame) and checks that the message so far
    /// is UTF-8, allowing a sequence cut off at the end. An unfinished sequence at the end
    /// of the message is left to the frame codec, which checks the whole message.
    fn check_utf8(&mut self, payload: &[u8]) -> io::Result<()> {
        let mut block = [0u8; 512];
        for chunk in payload.chunks(block.len() - 3) {
            let start = usize::from(self.partial_len);
            block[..start].copy_from_slice(&self.partial[..start]);
            let end = start + chunk.len();
            block[start..end].copy_from_slice(chunk);
            let m = self.mask_pos;
            let key = [0, 1, 2, 3].map(|i| self.mask[(m + i) & 3]);
            crate::frames::unmask(&mut block[start..end], key);
            self.mask_pos += chunk.len();
            self.partial_len = 0;
            if let Err(e) = std::str::from_utf8(&block[..end]) {
                if e.error_len().is_some() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        GuardError::InvalidUtf8,
                    ));
                }
                // Cut off at the end: keep the start of the sequence for the next bytes.
                let tail = &block[e.valid_up_to()..end];
                self.partial[..tail.len()].copy_from_slice(tail);
                self.partial_len = tail.len() as u8;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame (RFC 6455 section 5.2) with this first byte and mask key.
    fn masked(first: u8, key: [u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![first];
        match payload.len() {
            n @ 0..=125 => frame.push(0x80 | n as u8),
            n @ 126..=0xFFFF => {
                frame.push(0x80 | 126);
                frame.extend((n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend((n as u64).to_be_bytes());
            }
        }
        frame.extend(key);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        frame
    }

    /// What a guard makes of `bytes` handed over in pieces of at most `piece` bytes: the
    /// error's text, or none.
    fn scanned(bytes: &[u8], piece: usize) -> Option<String> {
        let mut guard = FragmentGuard::new(4);
        guard.armed = true;
        for part in bytes.chunks(piece) {
            if let Err(e) = guard.scan(part) {
                return Some(e.to_string());
            }
        }
        None
    }

    #[test]
    fn frames_are_judged_the_same_however_their_bytes_arrive() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let long_text = "κόσμε €".repeat(40); // 16-bit length, characters across masks
        let mut good = masked(0x01, key, long_text.as_bytes());
        good.extend(masked(0x89, [1, 2, 3, 4], b"\xff")); // a ping between fragments
        good.extend(masked(0x80, [9, 9, 9, 9], "ό".as_bytes()));
        good.extend(masked(0x82, key, &[0xff; 70_000])); // 64-bit length, not text
        let mut bad_utf8 = masked(0x01, key, "κόσμε".as_bytes());
        bad_utf8.extend(masked(0x00, key, b"\xce\xba\xf4\x90\x80\x80"));
        let mut too_many = masked(0x02, key, b"a");
        for _ in 0..4 {
            too_many.extend(masked(0x00, key, b"b"));
        }
        let cases = [
            (good, None),
            (bad_utf8, Some("invalid UTF-8 in a text message")),
            (
                too_many,
                Some("a message in more than 4 fragments (Limits::max_fragments)"),
            ),
        ];
        for (bytes, expected) in cases {
            for piece in [1, 2, 3, 5, 7, 13, 14, 100, 4096, bytes.len()] {
                assert_eq!(
                    scanned(&bytes, piece).as_deref(),
                    expected,
                    "pieces of {piece}"
                );
            }
        }
    }
}
