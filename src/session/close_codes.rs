//! Which error fails a connection with which close code (RFC 6455 section 7.4.1).

use async_tungstenite::tungstenite::{
    self, error::ProtocolError, protocol::frame::coding::CloseCode,
};

use crate::Message;

/// Whether `e` only says the peer went away without a closing handshake.
pub(super) fn is_disconnect(e: &tungstenite::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    match e {
        tungstenite::Error::ConnectionClosed
        | tungstenite::Error::AlreadyClosed
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
pub(super) fn fail_code(e: &tungstenite::Error) -> Option<CloseCode> {
    match e {
        tungstenite::Error::Capacity(_) => Some(CloseCode::Size),
        tungstenite::Error::Io(e) => match e.get_ref().and_then(|e| e.downcast_ref()) {
            Some(crate::frames::TooManyFragments(_)) => Some(CloseCode::Size),
            None => match e.get_ref().and_then(|e| e.downcast_ref()) {
                Some(crate::deflate::InflateError::Corrupt) => Some(CloseCode::Invalid),
                Some(crate::deflate::InflateError::TooBig(_)) => Some(CloseCode::Size),
                None => None,
            },
        },
        tungstenite::Error::Utf8(_) => Some(CloseCode::Invalid),
        tungstenite::Error::Protocol(
            ProtocolError::ResetWithoutClosingHandshake | ProtocolError::SendAfterClosing,
        ) => None,
        tungstenite::Error::Protocol(_) => Some(CloseCode::Protocol),
        _ => None,
    }
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
