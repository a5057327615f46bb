//! permessage-deflate (RFC 7692): the offer and the answer (section 7.1), incoming messages
//! inflated under the frame codec (which, as tungstenite, refuses frames with RSV1 set),
//! and outgoing messages
//! deflated into ready frames.
//!
//! wssd always answers with `server_no_context_takeover` and `client_no_context_takeover`
//! (section 7.1.1): each message is compressed on its own, so no connection keeps an LZ77
//! window between messages. The compressor is shared per thread and reset after each
//! message, as uWebSockets' shared compressor is; the inflater is taken from a per-thread
//! pool for one message and returned after it. An idle connection holds neither.

use std::cell::RefCell;
use std::fmt;
use std::io;

use async_tungstenite::tungstenite::http::{HeaderMap, header};
use async_tungstenite::tungstenite::protocol::frame::Frame;
use async_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

use crate::Message;

/// The permessage-deflate settings of a [`Config`](crate::Config) (RFC 7692).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Deflate {
    /// Accept a client's `permessage-deflate` offer. Default `false` (see the README's
    /// "Compression" section for the measurements behind it).
    pub enabled: bool,
    /// Outgoing messages shorter than this, in bytes, are sent uncompressed: deflating a
    /// few bytes costs CPU and saves nothing. Default 128.
    pub min_size: usize,
    /// The DEFLATE level, 0 (none) to 9 (smallest). Default 1: most of the gain of JSON
    /// and text for a fraction of the CPU of the higher levels.
    pub level: u32,
}

impl Default for Deflate {
    fn default() -> Self {
        Deflate {
            enabled: false,
            min_size: 128,
            level: 1,
        }
    }
}

/// What one connection agreed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Agreed {
    /// The LZ77 window the server compresses with: `server_max_window_bits`, 9 to 15.
    pub window_bits: u8,
    pub min_size: usize,
    pub level: u32,
}

/// The first `permessage-deflate` offer in `Sec-WebSocket-Extensions` that wssd can honour,
/// and the answer's header value (RFC 7692 section 7.1). An offer with an unknown or
/// repeated parameter, or an invalid value, is declined (section 7.1); so is
/// `server_max_window_bits=8`, which zlib cannot produce (it widens 8 to 9).
pub(crate) fn negotiate(headers: &HeaderMap, config: &Deflate) -> Option<(Agreed, String)> {
    if !config.enabled {
        return None;
    }
    let offers = headers
        .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','));
    for offer in offers {
        let mut parts = offer.split(';').map(str::trim);
        if !parts
            .next()
            .is_some_and(|name| name.eq_ignore_ascii_case("permessage-deflate"))
        {
            continue;
        }
        if let Some(window_bits) = acceptable(parts) {
            let mut answer =
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
                    .to_string();
            if let Some(bits) = window_bits {
                answer.push_str(&format!("; server_max_window_bits={bits}"));
            }
            let agreed = Agreed {
                window_bits: window_bits.unwrap_or(15),
                min_size: config.min_size,
                level: config.level.min(9),
            };
            return Some((agreed, answer));
        }
    }
    None
}

/// The parameters of one offer: `Some(server_max_window_bits)` when wssd can honour them all.
fn acceptable<'a>(params: impl Iterator<Item = &'a str>) -> Option<Option<u8>> {
    let mut seen = Vec::new();
    let mut window = None;
    for param in params.filter(|p| !p.is_empty()) {
        // `token [ "=" ( token | quoted-string ) ]`, no space around "=" (RFC 6455 section
        // 9.1); a quoted value is read unquoted (RFC 7692 section 7.1).
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (
                n,
                Some(
                    v.strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .unwrap_or(v),
                ),
            ),
            None => (param, None),
        };
        let name = name.to_ascii_lowercase();
        if seen.contains(&name) {
            return None;
        }
        // A decimal integer from 8 to 15 without leading zeros (RFC 7692 section 7.1.2.1): no
        // sign, no space, no "09".
        let bits = |v: &str| {
            let digits =
                !v.is_empty() && !v.starts_with('0') && v.bytes().all(|b| b.is_ascii_digit());
            digits
                .then(|| v.parse::<u8>().ok())
                .flatten()
                .filter(|b| (8..=15).contains(b))
        };
        match (name.as_str(), value) {
            ("server_no_context_takeover" | "client_no_context_takeover", None) => {}
            ("server_max_window_bits", Some(v)) => window = Some(bits(v)?),
            ("client_max_window_bits", None) => {}
            ("client_max_window_bits", Some(v)) => {
                bits(v)?;
            }
            _ => return None,
        }
        seen.push(name);
    }
    match window {
        Some(8) => None,
        w => Some(w),
    }
}

thread_local! {
    /// One compressor per window size per thread, reset after each message.
    static COMPRESSORS: RefCell<Vec<(u8, u32, Compress)>> = const { RefCell::new(Vec::new()) };
    /// Inflaters between messages, per thread.
    static INFLATERS: RefCell<Vec<Decompress>> = const { RefCell::new(Vec::new()) };
}

/// The most idle inflaters a thread keeps for the next compressed message.
const POOLED_INFLATERS: usize = 4;

/// `payload` deflated as one message (RFC 7692 section 7.2.1): the output of a sync flush
/// without its final `00 00 ff ff`. `None` if DEFLATE failed (it does not on valid input).
fn deflate(payload: &[u8], agreed: &Agreed) -> Option<Vec<u8>> {
    COMPRESSORS.with(|all| {
        let mut all = all.borrow_mut();
        let index = match all
            .iter()
            .position(|(bits, level, _)| (*bits, *level) == (agreed.window_bits, agreed.level))
        {
            Some(i) => i,
            None => {
                let level = Compression::new(agreed.level);
                let c = Compress::new_with_window_bits(level, false, agreed.window_bits);
                all.push((agreed.window_bits, agreed.level, c));
                all.len() - 1
            }
        };
        let compress = &mut all[index].2;
        let mut out = Vec::with_capacity(payload.len() / 2 + 64);
        let start_in = compress.total_in();
        let mut failed = false;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(64));
            }
            let consumed = (compress.total_in() - start_in) as usize;
            if compress
                .compress_vec(&payload[consumed..], &mut out, FlushCompress::Sync)
                .is_err()
            {
                failed = true;
                break;
            }
            // The flush is complete once all input is in and the output did not fill up.
            let all_in = (compress.total_in() - start_in) as usize == payload.len();
            if all_in && out.len() < out.capacity() {
                break;
            }
        }
        compress.reset();
        let ok = !failed && out.ends_with(&[0, 0, 0xff, 0xff]);
        out.truncate(out.len().saturating_sub(4));
        // Sent compressed even when not smaller (incompressible data grows by a few bytes
        // per 64 KiB): some clients, such as the Autobahn suite's, expect every message of a
        // compressed stream to be compressed.
        ok.then_some(out)
    })
}

/// A text or binary message as a compressed frame for a connection that agreed on
/// permessage-deflate, or `None` to send it as it is (under [`Deflate::min_size`]).
pub(crate) fn compress(msg: &Message, agreed: &Agreed) -> Option<Message> {
    let (payload, data) = match msg {
        Message::Text(t) => (t.as_bytes(), Data::Text),
        Message::Binary(b) => (&b[..], Data::Binary),
        Message::Frame(f) if f.header().is_final && !f.header().rsv1 => match f.header().opcode {
            OpCode::Data(d @ (Data::Text | Data::Binary)) => (f.payload(), d),
            _ => return None,
        },
        _ => return None,
    };
    if payload.len() < agreed.min_size {
        return None;
    }
    let deflated = deflate(payload, agreed)?;
    let mut frame = Frame::message(deflated, OpCode::Data(data), true);
    frame.header_mut().rsv1 = true;
    Some(Message::Frame(frame))
}

/// One message to many recipients, compressed at most once per window size: a Hub
/// broadcast deflates once, not once per recipient.
pub(crate) struct OneToMany<'a> {
    plain: &'a Message,
    compressed: Vec<(Agreed, Option<Message>)>,
}

impl<'a> OneToMany<'a> {
    pub(crate) fn new(plain: &'a Message) -> Self {
        OneToMany {
            plain,
            compressed: Vec::new(),
        }
    }

    /// The message for a recipient with these terms (`None`: no compression agreed).
    pub(crate) fn get(&mut self, agreed: Option<&Agreed>) -> Message {
        let Some(agreed) = agreed else {
            return self.plain.clone();
        };
        let index = match self.compressed.iter().position(|(a, _)| a == agreed) {
            Some(i) => i,
            None => {
                self.compressed
                    .push((*agreed, compress(self.plain, agreed)));
                self.compressed.len() - 1
            }
        };
        match &self.compressed[index].1 {
            Some(frame) => frame.clone(),
            None => self.plain.clone(),
        }
    }
}

/// The io errors of the inflating layer; the session closes with the code each names.
#[derive(Debug)]
pub(crate) enum InflateError {
    /// Not a valid DEFLATE stream (RFC 7692 section 8): close code 1007.
    Corrupt,
    /// Inflated past [`Limits::max_message_size`](crate::Limits::max_message_size), or a
    /// compressed frame over [`Limits::max_frame_size`](crate::Limits::max_frame_size): 1009.
    TooBig(usize),
}

impl fmt::Display for InflateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InflateError::Corrupt => write!(f, "a compressed message that is not valid DEFLATE"),
            InflateError::TooBig(limit) => write!(
                f,
                "a compressed message or frame that inflates past {limit} bytes (Limits::max_message_size, Limits::max_frame_size)"
            ),
        }
    }
}

impl std::error::Error for InflateError {}

fn fail(e: InflateError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// The incoming byte stream of a connection that agreed on permessage-deflate, rewritten
/// for the frame codec: frames of uncompressed messages and control frames pass through as
/// they are; each frame of a compressed message (RSV1 on its first frame) is collected,
/// inflated, and passed on as the same frame uncompressed (RSV1 clear, masked with a zero
/// key, as a client frame must be).
/// The longest frame header: 2 bytes, an 8-byte length, a 4-byte mask key.
const MAX_HEADER: usize = 14;

#[derive(Debug)]
pub(crate) struct Inflate {
    max_frame: usize,
    max_message: usize,
    header: [u8; 14],
    header_len: u8,
    /// Payload bytes of the current frame still to come.
    left: u64,
    /// Whether the current frame's payload is being collected (compressed), not passed on.
    collecting: bool,
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    /// The current frame's compressed payload, unmasked.
    payload: Vec<u8>,
    /// Whether the current data message is compressed.
    compressed: bool,
    /// Bytes the current compressed message inflated to so far.
    inflated: usize,
    inflater: Option<Decompress>,
    /// Bytes for the frame codec, from `pos`.
    out: Vec<u8>,
    pos: usize,
}

impl Inflate {
    pub(crate) fn new(max_frame: usize, max_message: usize) -> Self {
        Inflate {
            max_frame,
            max_message,
            header: [0; 14],
            header_len: 0,
            left: 0,
            collecting: false,
            fin: false,
            opcode: 0,
            mask: [0; 4],
            payload: Vec::new(),
            compressed: false,
            inflated: 0,
            inflater: None,
            out: Vec::new(),
            pos: 0,
        }
    }

    /// Whether rewritten bytes are waiting.
    pub(crate) fn has_output(&self) -> bool {
        self.pos < self.out.len()
    }

    /// Moves waiting bytes into `buf`; returns how many.
    pub(crate) fn take(&mut self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.out.len() - self.pos);
        buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        if self.pos == self.out.len() {
            // All passed on: an idle connection keeps no buffer.
            self.pos = 0;
            self.out = Vec::new();
        }
        n
    }

    /// Rewrites the next bytes read from the client.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            if self.left > 0 {
                let take = self.left.min(bytes.len() as u64) as usize;
                if self.collecting {
                    let start = self.payload.len();
                    self.payload.extend_from_slice(&bytes[..take]);
                    for (i, b) in self.payload[start..].iter_mut().enumerate() {
                        *b ^= self.mask[(start + i) & 3];
                    }
                } else {
                    self.out.extend_from_slice(&bytes[..take]);
                }
                self.left -= take as u64;
                bytes = &bytes[take..];
                if self.left == 0 && self.collecting {
                    self.inflate_frame()?;
                }
                continue;
            }
            self.header[usize::from(self.header_len)] = bytes[0];
            self.header_len += 1;
            bytes = &bytes[1..];
            let header = &self.header[..usize::from(self.header_len)];
            if let Some((len, _)) = crate::transport::frame_header(header) {
                self.start_frame(len)?;
            }
        }
        Ok(())
    }

    fn start_frame(&mut self, len: u64) -> io::Result<()> {
        let h = self.header;
        let header_len = usize::from(self.header_len);
        self.header_len = 0;
        let (fin, rsv1, opcode) = (h[0] & 0x80 != 0, h[0] & 0x40 != 0, h[0] & 0x0F);
        let masked = h[1] & 0x80 != 0;
        let compressed_frame = match opcode {
            1 | 2 => {
                self.compressed = rsv1;
                self.inflated = 0;
                rsv1
            }
            // RSV1 on a continuation is passed on, for the frame codec to refuse (section 6.1).
            0 => self.compressed && !rsv1,
            // A control frame is never compressed: with RSV1 set, the frame codec refuses it (1002).
            _ => false,
        };
        // RSV2 or RSV3 beside RSV1: no extension agreed gives them a meaning, so the frame is
        // passed on as it is, for the frame codec to refuse (1002, RFC 6455 section 5.2).
        let reserved = h[0] & 0x30 != 0;
        if !compressed_frame || !masked || reserved {
            self.out.extend_from_slice(&h[..header_len]);
            self.left = len;
            self.collecting = false;
            return Ok(());
        }
        if len > self.max_frame as u64 {
            return Err(fail(InflateError::TooBig(self.max_frame)));
        }
        self.mask.copy_from_slice(&h[header_len - 4..header_len]);
        self.fin = fin;
        self.opcode = opcode;
        self.collecting = true;
        self.left = len;
        // Grown as the payload arrives, not reserved at the size the header announced.
        self.payload = Vec::new();
        if len == 0 {
            self.inflate_frame()?;
        }
        Ok(())
    }

    /// Inflates the collected frame and passes it on uncompressed.
    fn inflate_frame(&mut self) -> io::Result<()> {
        self.collecting = false;
        let mut input = std::mem::take(&mut self.payload);
        if self.fin {
            input.extend_from_slice(&[0, 0, 0xff, 0xff]);
        }
        let inflater = self.inflater.get_or_insert_with(|| {
            INFLATERS
                .with(|pool| pool.borrow_mut().pop())
                .unwrap_or_else(|| Decompress::new_with_window_bits(false, 15))
        });
        let room = self.max_message - self.inflated.min(self.max_message);
        // Inflated straight behind room for the frame's header in `out` when nothing waits
        // there (the usual case), else in a buffer of its own: the message is held once.
        let mut plain = if self.pos == self.out.len() {
            let mut out = std::mem::take(&mut self.out);
            out.clear();
            self.pos = 0;
            out
        } else {
            Vec::new()
        };
        plain.extend_from_slice(&[0; MAX_HEADER]);
        let base = MAX_HEADER;
        plain.reserve_exact((input.len() * 4).clamp(64, room.max(64)));
        let start_in = inflater.total_in();
        loop {
            if plain.capacity() - plain.len() < 64 {
                if plain.len() - base > room {
                    return Err(fail(InflateError::TooBig(self.max_message)));
                }
                // Never more than one byte past the room: a bomb stops here.
                let more = (plain.capacity() - base)
                    .max(64)
                    .min(room + 1 - (plain.len() - base));
                plain.reserve_exact(more);
            }
            let consumed = (inflater.total_in() - start_in) as usize;
            let status = inflater
                .decompress_vec(&input[consumed..], &mut plain, FlushDecompress::Sync)
                .map_err(|_| fail(InflateError::Corrupt))?;
            if plain.len() - base > room {
                return Err(fail(InflateError::TooBig(self.max_message)));
            }
            if status == flate2::Status::StreamEnd {
                // A final block (BFINAL): whatever follows it is not part of the message.
                inflater.reset(false);
                break;
            }
            let all_in = (inflater.total_in() - start_in) as usize == input.len();
            if all_in && plain.len() < plain.capacity() {
                break;
            }
            if status == flate2::Status::BufError && plain.len() < plain.capacity() {
                return Err(fail(InflateError::Corrupt));
            }
        }
        let len = plain.len() - base;
        self.inflated += len;
        if self.fin {
            let mut inflater = self.inflater.take().expect("in use");
            inflater.reset(false);
            INFLATERS.with(|pool| {
                let mut pool = pool.borrow_mut();
                if pool.len() < POOLED_INFLATERS {
                    pool.push(inflater);
                }
            });
            self.compressed = false;
        }
        // The same frame, uncompressed: FIN and opcode kept, RSV bits clear, masked with 0.
        let mut head = [0u8; MAX_HEADER];
        head[0] = (u8::from(self.fin) << 7) | self.opcode;
        let head_len = if len < 126 {
            head[1] = 0x80 | len as u8;
            2
        } else if len <= usize::from(u16::MAX) {
            head[1] = 0x80 | 126;
            head[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            4
        } else {
            head[1] = 0x80 | 127;
            head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        } + 4; // the zero mask key
        if self.out.is_empty() {
            // `plain` is `out`: the header goes right before the payload.
            plain[base - head_len..base].copy_from_slice(&head[..head_len]);
            self.pos = base - head_len;
            self.out = plain;
        } else {
            self.out.extend_from_slice(&head[..head_len]);
            self.out.extend_from_slice(&plain[base..]);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(value: &str) -> Option<(Agreed, String)> {
        let mut headers = HeaderMap::new();
        headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, value.parse().unwrap());
        let on = Deflate {
            enabled: true,
            ..Deflate::default()
        };
        negotiate(&headers, &on)
    }

    #[test]
    fn offers_are_accepted_declined_and_answered_as_rfc_7692_section_7_1_says() {
        // Chromium's offer.
        let (agreed, answer) = offer("permessage-deflate; client_max_window_bits").unwrap();
        assert_eq!(
            answer,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        assert_eq!(agreed.window_bits, 15);
        let (agreed, answer) = offer("permessage-deflate; server_max_window_bits=10").unwrap();
        assert!(answer.ends_with("; server_max_window_bits=10"), "{answer}");
        assert_eq!(agreed.window_bits, 10);
        let (agreed, _) = offer("permessage-deflate; server_max_window_bits=\"11\"").unwrap();
        assert_eq!(agreed.window_bits, 11, "a quoted value");
        // Declined: window 8 (zlib cannot), unknown or repeated parameters, bad values.
        for bad in [
            "permessage-deflate; server_max_window_bits=8",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; mystery",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_max_window_bits=09",
            "permessage-deflate; client_max_window_bits=+9",
            "permessage-deflate; client_max_window_bits= 9",
            "permessage-deflate; client_max_window_bits =9",
            "permessage-deflate; server_max_window_bits=\"010\"",
            "x-webkit-deflate-frame",
        ] {
            assert!(offer(bad).is_none(), "{bad}");
        }
        // The first acceptable of several offers.
        let (agreed, _) = offer("permessage-deflate; server_max_window_bits=8, permessage-deflate; server_max_window_bits=12").unwrap();
        assert_eq!(agreed.window_bits, 12);
        // Off unless enabled.
        let mut headers = HeaderMap::new();
        headers.insert(
            header::SEC_WEBSOCKET_EXTENSIONS,
            "permessage-deflate".parse().unwrap(),
        );
        assert!(negotiate(&headers, &Deflate::default()).is_none());
    }

    #[test]
    fn rfc_7692_section_7_2_3_1_sample_inflates() {
        // "Hello", compressed, in one masked frame with key 0 (RFC 7692 section 7.2.3.1).
        let mut frame = vec![0xc1, 0x87, 0, 0, 0, 0];
        frame.extend_from_slice(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
        let mut inflate = Inflate::new(1 << 20, 1 << 20);
        for b in &frame {
            inflate.feed(std::slice::from_ref(b)).unwrap(); // a byte at a time
        }
        let mut out = [0u8; 64];
        let n = inflate.take(&mut out);
        assert_eq!(&out[..n], b"\x81\x85\0\0\0\0Hello");
        assert!(
            inflate.inflater.is_none(),
            "the inflater goes back after the message"
        );
    }

    #[test]
    fn compress_then_inflate_round_trips_across_fragments() {
        let agreed = Agreed {
            window_bits: 15,
            min_size: 0,
            level: 1,
        };
        let text = "{\"user\":\"tom\",\"text\":\"hello hello hello hello\"}".repeat(20);
        let Some(Message::Frame(frame)) = compress(&Message::text(text.clone()), &agreed) else {
            panic!("compressed")
        };
        assert!(frame.header().rsv1 && frame.payload().len() < text.len() / 4);
        // As a client would send it: in two fragments, masked.
        let (a, b) = frame.payload().split_at(frame.payload().len() / 2);
        let key = [7, 1, 2, 3];
        let masked = |first: u8, part: &[u8]| {
            let mut out = vec![first, 0x80 | 126];
            out.extend_from_slice(&(part.len() as u16).to_be_bytes());
            out.extend_from_slice(&key);
            out.extend(part.iter().enumerate().map(|(i, x)| x ^ key[i % 4]));
            out
        };
        let mut inflate = Inflate::new(1 << 20, 1 << 20);
        inflate.feed(&masked(0x41, a)).unwrap();
        inflate.feed(&masked(0x80, b)).unwrap();
        let mut out = vec![0u8; 4096];
        let n = inflate.take(&mut out);
        let mut plain = Vec::new();
        let mut rest = &out[..n];
        while !rest.is_empty() {
            let len = match rest[1] & 0x7f {
                126 => {
                    let l = u16::from_be_bytes([rest[2], rest[3]]) as usize;
                    rest = &rest[2..];
                    l
                }
                l => usize::from(l),
            };
            assert_eq!(rest[0] & 0x70, 0, "RSV bits clear");
            plain.extend_from_slice(&rest[6..6 + len]);
            rest = &rest[6 + len..];
        }
        assert_eq!(plain, text.as_bytes());
    }

    #[test]
    fn a_bomb_stops_at_the_limit_and_garbage_is_corrupt() {
        let agreed = Agreed {
            window_bits: 15,
            min_size: 0,
            level: 9,
        };
        let Some(Message::Frame(frame)) = compress(&Message::binary(vec![0u8; 1 << 20]), &agreed)
        else {
            panic!()
        };
        let payload = frame.payload();
        assert!(payload.len() < 2048, "{}", payload.len());
        let mut bytes = vec![0xc2, 0x80 | 126];
        bytes.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        bytes.extend_from_slice(&[0; 4]);
        bytes.extend_from_slice(payload);
        let mut inflate = Inflate::new(1 << 20, 64 << 10);
        let e = inflate.feed(&bytes).unwrap_err();
        assert!(matches!(
            e.get_ref().unwrap().downcast_ref(),
            Some(InflateError::TooBig(_))
        ));
        assert!(inflate.out.capacity() < 128 << 10);
        let mut inflate = Inflate::new(1 << 20, 1 << 20);
        let e = inflate
            .feed(&[0xc1, 0x84, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff])
            .unwrap_err();
        assert!(matches!(
            e.get_ref().unwrap().downcast_ref(),
            Some(InflateError::Corrupt)
        ));
    }

    #[test]
    fn a_compressed_frame_header_that_announces_a_mebibyte_costs_what_came() {
        // The header of a compressed frame announcing 1 MiB, and 1 KiB of its payload.
        let mut bytes = vec![0xc2, 0x80 | 127];
        bytes.extend_from_slice(&(1u64 << 20).to_be_bytes());
        bytes.extend_from_slice(&[1, 2, 3, 4]);
        bytes.extend_from_slice(&[0x55; 1024]);
        let mut inflate = Inflate::new(1 << 20, 1 << 20);
        inflate.feed(&bytes).unwrap();
        let held = inflate.payload.capacity() + inflate.out.capacity();
        assert!(held <= 4096, "{held} bytes held for 1 KiB sent");
    }

    #[test]
    fn rsv2_or_rsv3_beside_rsv1_is_passed_on_for_the_codec_to_refuse() {
        // "Hello" compressed (RFC 7692 section 7.2.3.1), with RSV2, then with RSV3.
        for first in [0xe1, 0xd1] {
            let mut frame = vec![first, 0x87, 0, 0, 0, 0];
            frame.extend_from_slice(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
            let mut inflate = Inflate::new(1 << 20, 1 << 20);
            inflate.feed(&frame).unwrap();
            let mut out = [0u8; 64];
            let n = inflate.take(&mut out);
            assert_eq!(&out[..n], &frame[..], "passed on as it came");
        }
    }
}
