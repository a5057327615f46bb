//! The bytes of a frame: its header (RFC 6455 section 5.2), masking (section 5.3), a close
//! frame's payload (section 5.5.1), and a message's payload as text or binary.

use async_tungstenite::tungstenite::Bytes;
use async_tungstenite::tungstenite::{
    Message,
    error::ProtocolError,
    protocol::{
        CloseFrame,
        frame::{Utf8Bytes, coding::CloseCode},
    },
};

use super::Violation;

/// An unmasked frame's header (RFC 6455 section 5.2) for first byte `first` (FIN, RSV,
/// opcode) and a payload of `len` bytes, and its length: 2, 4 or 10 bytes.
pub(super) fn frame_head(first: u8, len: usize) -> ([u8; 10], u8) {
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

/// A text (checked for UTF-8, RFC 6455 section 8.1) or binary message of `payload`.
pub(super) fn message(text: bool, payload: Bytes) -> Result<Message, Violation> {
    if !text {
        return Ok(Message::Binary(payload));
    }
    Utf8Bytes::try_from(payload)
        .map(Message::Text)
        .map_err(|_| Violation::InvalidUtf8)
}

/// A close frame's payload: nothing, or a code and a UTF-8 reason (RFC 6455 section 5.5.1).
pub(super) fn close_frame(payload: Bytes) -> Result<Option<CloseFrame>, Violation> {
    match payload.len() {
        0 => Ok(None),
        1 => Err(Violation::Protocol(ProtocolError::InvalidCloseSequence)),
        _ => {
            let code = CloseCode::from(u16::from_be_bytes([payload[0], payload[1]]));
            let reason =
                Utf8Bytes::try_from(payload.slice(2..)).map_err(|_| Violation::InvalidUtf8)?;
            Ok(Some(CloseFrame { code, reason }))
        }
    }
}

/// A close frame's payload: the code, then the reason (RFC 6455 section 5.5.1).
pub(super) fn close_payload(code: CloseCode, reason: &str) -> Bytes {
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&u16::from(code).to_be_bytes());
    payload.extend_from_slice(reason.as_bytes());
    payload.into()
}

/// `payload` unmasked with `key` (RFC 6455 section 5.3), in a buffer of its own.
pub(super) fn unmasked(payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len());
    unmask_into(&mut out, payload, key);
    out
}

/// Appends `payload` unmasked with `key` to `out`.
pub(super) fn unmask_into(out: &mut Vec<u8>, payload: &[u8], key: [u8; 4]) {
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
