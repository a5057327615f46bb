//! permessage-deflate (RFC 7692): the offer and the answer (section 7.1), the inflating of
//! incoming compressed messages for the frame codec (`crate::frames`, which accepts RSV1 on
//! a message's first frame once the extension is agreed, and inflates each frame's payload
//! onto the message as it completes), and outgoing messages deflated into ready frames.
//!
//! wssd always answers with `server_no_context_takeover` and `client_no_context_takeover`
//! (section 7.1.1): each message is compressed on its own, so no connection keeps an LZ77
//! window between messages. The compressor is shared per thread and reset after each
//! message, as uWebSockets' shared compressor is; the inflater is taken from a per-thread
//! pool for one message and returned after it. An idle connection holds neither.

use crate::violation::Violation;

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

/// The most idle inflaters a thread keeps for the next compressed message.
const POOLED_INFLATERS: usize = 4;

/// `payload` deflated as one message (RFC 7692 section 7.2.1): the output of a sync flush
/// without its final `00 00 ff ff`. `None` if DEFLATE failed (it does not on valid input).
fn deflate(payload: &[u8], agreed: &Agreed) -> Option<Vec<u8>> {
    crate::per_thread::COMPRESSORS.with(|all| {
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

/// An inflater for one compressed message (RFC 7692 section 7.2.2): the thread's spare one
/// if it has one. Give it back with [`done_with`] once the message is whole.
pub(crate) fn inflater() -> Decompress {
    crate::per_thread::INFLATERS
        .with(|pool| pool.borrow_mut().pop())
        .unwrap_or_else(|| Decompress::new_with_window_bits(false, 15))
}

/// Keeps `inflater`, reset, for the thread's next compressed message (a few at most).
pub(crate) fn done_with(mut inflater: Decompress) {
    inflater.reset(false);
    crate::per_thread::INFLATERS.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < POOLED_INFLATERS {
            pool.push(inflater);
        }
    });
}

/// Inflates `input`, the next compressed frame payload of a message (`fin`: its last), onto
/// `out`, which is never let grow past `max` bytes (RFC 7692 section 7.2.2: the last frame's
/// payload is followed by `00 00 ff ff` before inflating). The output grows with what
/// the input makes, not what a header announced: a bomb stops one byte past `max`.
///
/// # Errors
/// [`Violation::InflatedTooBig`] past `max`, [`Violation::CorruptDeflate`] for what is not DEFLATE.
pub(crate) fn inflate_into(
    inflater: &mut Decompress,
    input: &[u8],
    fin: bool,
    out: &mut Vec<u8>,
    max: usize,
) -> Result<(), Violation> {
    let ended = inflate_part(inflater, input, out, max)?;
    if fin && !ended {
        inflate_part(inflater, &[0, 0, 0xff, 0xff], out, max)?;
    }
    Ok(())
}

/// Inflates all of `input` onto `out`; `true` when the DEFLATE stream ended in it (a final
/// block: whatever follows is not part of the message, and the inflater is reset).
fn inflate_part(
    inflater: &mut Decompress,
    input: &[u8],
    out: &mut Vec<u8>,
    max: usize,
) -> Result<bool, Violation> {
    let room = max.saturating_sub(out.len());
    out.reserve_exact((input.len() * 4).clamp(64, room.max(64)));
    let start_in = inflater.total_in();
    loop {
        if out.capacity() - out.len() < 64 {
            if out.len() > max {
                return Err(Violation::InflatedTooBig { max });
            }
            // Doubling, never past one byte over the limit.
            let more = out.capacity().max(64).min(max + 1 - out.len());
            out.reserve_exact(more);
        }
        let consumed = (inflater.total_in() - start_in) as usize;
        let status = inflater
            .decompress_vec(&input[consumed..], out, FlushDecompress::Sync)
            .map_err(|_| Violation::CorruptDeflate)?;
        if out.len() > max {
            return Err(Violation::InflatedTooBig { max });
        }
        if status == flate2::Status::StreamEnd {
            inflater.reset(false);
            return Ok(true);
        }
        let all_in = (inflater.total_in() - start_in) as usize == input.len();
        if all_in && out.len() < out.capacity() {
            return Ok(false);
        }
        if status == flate2::Status::BufError && out.len() < out.capacity() {
            return Err(Violation::CorruptDeflate);
        }
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
}
