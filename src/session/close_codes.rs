//! Which errors only say the peer left, and what a message costs and a reason may hold
//! (the close code of each violation is [`crate::Violation::close_code`]).

use async_tungstenite::tungstenite::{self, error::ProtocolError};

use crate::Message;

/// Whether `e` only says the peer went away without a closing handshake.
pub(super) fn is_disconnect(e: &tungstenite::Error) -> bool {
    match e {
        tungstenite::Error::ConnectionClosed
        | tungstenite::Error::AlreadyClosed
        | tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => true,
        tungstenite::Error::Io(e) => is_disconnect_io(e),
        _ => false,
    }
}

/// Whether the I/O error `e` only says the peer went away.
pub(super) fn is_disconnect_io(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
    )
}

/// The payload length of a message, in bytes: what it costs in the send queue.
pub(super) fn payload_len(msg: &Message) -> usize {
    match msg {
        Message::Text(t) => t.len(),
        Message::Binary(b) | Message::Ping(b) | Message::Pong(b) => b.len(),
        Message::Close(_) => 0,
        Message::Frame(f) => f.len(),
    }
}

/// Cuts `reason` to at most 123 bytes on a character boundary (RFC 6455 section 5.5).
pub(super) fn truncate_reason(reason: &str) -> &str {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}
