//! Why a client's frames fail its connection, and what follows from each reason: one table.

use std::fmt;
use std::io;

use async_tungstenite::tungstenite::{
    self,
    error::{CapacityError, ProtocolError},
    protocol::frame::coding::CloseCode,
};

/// What a client sent that fails its connection (RFC 6455 section 7.4.1, RFC 7692 section
/// 8): the server closes it with [`Violation::close_code`], the close frame's reason is this
/// error's text (cut to 123 bytes), and [`stats`](crate::stats) counts it under
/// [`Violation::kind`] (`Stats::violations`). [`SessionSummary::violation`](crate::SessionSummary::violation)
/// says which one ended a session.
///
/// ```
/// use wssd::{CloseCode, Violation};
/// let v = Violation::MessageTooBig { size: 2 << 20, max: 1 << 20 };
/// assert_eq!(v.close_code(), CloseCode::Size); // 1009
/// assert_eq!(v.kind(), "message_too_big");
/// assert!(v.to_string().contains("Limits::max_message_size"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// A frame that breaks RFC 6455 section 5: reserved bits set, an unmasked frame, a
    /// control frame fragmented or over 125 bytes, an unknown opcode, a continuation out of
    /// place, a close frame of one byte. Close code 1002.
    Protocol(ProtocolError),
    /// A text message or a close reason that is not UTF-8 (RFC 6455 section 8.1), found at
    /// the bytes that break it. Close code 1007.
    InvalidUtf8,
    /// A frame of `size` bytes announced, over `max` ([`Limits::max_frame_size`](crate::Limits::max_frame_size)),
    /// refused from its header. Close code 1009.
    FrameTooBig {
        /// The frame's payload length, in bytes, as its header announced it.
        size: u64,
        /// The limit, in bytes.
        max: usize,
    },
    /// A message of `size` bytes so far, over `max` ([`Limits::max_message_size`](crate::Limits::max_message_size)).
    /// Close code 1009.
    MessageTooBig {
        /// The message's length so far, in bytes, with the frame that crossed the limit.
        size: u64,
        /// The limit, in bytes.
        max: usize,
    },
    /// A message in more than `max` fragments ([`Limits::max_fragments`](crate::Limits::max_fragments)).
    /// Close code 1009.
    TooManyFragments {
        /// The limit, in frames.
        max: usize,
    },
    /// A compressed message that is not valid DEFLATE (RFC 7692 section 8). Close code 1007.
    CorruptDeflate,
    /// A compressed message that inflates past `max` bytes ([`Limits::max_message_size`](crate::Limits::max_message_size)).
    /// Close code 1009.
    InflatedTooBig {
        /// The limit, in bytes.
        max: usize,
    },
}

/// Each violation's row: its [`Violation::kind`] (the stats label) and close code, in the
/// order of [`Violation::row`].
pub(crate) const TABLE: [(&str, CloseCode); 7] = [
    ("protocol", CloseCode::Protocol),
    ("invalid_utf8", CloseCode::Invalid),
    ("frame_too_big", CloseCode::Size),
    ("message_too_big", CloseCode::Size),
    ("too_many_fragments", CloseCode::Size),
    ("corrupt_deflate", CloseCode::Invalid),
    ("inflated_too_big", CloseCode::Size),
];

impl Violation {
    /// This violation's row in [`TABLE`] (and slot in the stats counters).
    pub(crate) fn row(&self) -> usize {
        match self {
            Violation::Protocol(_) => 0,
            Violation::InvalidUtf8 => 1,
            Violation::FrameTooBig { .. } => 2,
            Violation::MessageTooBig { .. } => 3,
            Violation::TooManyFragments { .. } => 4,
            Violation::CorruptDeflate => 5,
            Violation::InflatedTooBig { .. } => 6,
        }
    }

    /// The close code the server sends for it (RFC 6455 section 7.4.1): 1002 for a frame
    /// that breaks the protocol, 1007 for data that is not what its type says (invalid
    /// UTF-8, corrupt DEFLATE), 1009 for what is over a limit.
    ///
    /// ```
    /// use wssd::{CloseCode, Violation};
    /// assert_eq!(Violation::InvalidUtf8.close_code(), CloseCode::Invalid); // 1007
    /// assert_eq!(Violation::TooManyFragments { max: 1024 }.close_code(), CloseCode::Size); // 1009
    /// ```
    pub fn close_code(&self) -> CloseCode {
        TABLE[self.row()].1
    }

    /// A short name for it, the label of its counter in [`Stats::violations`](crate::stats::Stats::violations)
    /// (and of `wssd_violations_total` in the binary's metrics): `protocol`, `invalid_utf8`,
    /// `frame_too_big`, `message_too_big`, `too_many_fragments`, `corrupt_deflate` or
    /// `inflated_too_big`.
    ///
    /// ```
    /// assert_eq!(wssd::Violation::CorruptDeflate.kind(), "corrupt_deflate");
    /// ```
    pub fn kind(&self) -> &'static str {
        TABLE[self.row()].0
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Protocol(e) => write!(f, "protocol violation: {e}"),
            Violation::InvalidUtf8 => f.write_str("invalid UTF-8 in a text message"),
            Violation::FrameTooBig { size, max } => write!(
                f,
                "a frame of {size} bytes, over the limit of {max} (Limits::max_frame_size)"
            ),
            Violation::MessageTooBig { size, max } => write!(
                f,
                "a message of {size} bytes, over the limit of {max} (Limits::max_message_size)"
            ),
            Violation::TooManyFragments { max } => write!(
                f,
                "a message in more than {max} fragments (Limits::max_fragments)"
            ),
            Violation::CorruptDeflate => {
                f.write_str("a compressed message that is not valid DEFLATE")
            }
            Violation::InflatedTooBig { max } => write!(
                f,
                "a compressed message that inflates past {max} bytes (Limits::max_message_size)"
            ),
        }
    }
}

impl std::error::Error for Violation {}

/// As tungstenite names it, for [`WebSocket`](crate::WebSocket)'s stream: `Error::Protocol`,
/// `Error::Utf8` and `Error::Capacity` where tungstenite has the kind, else an `Error::Io` of
/// kind `InvalidData` holding the violation.
impl From<Violation> for tungstenite::Error {
    fn from(v: Violation) -> Self {
        match v {
            Violation::Protocol(e) => tungstenite::Error::Protocol(e),
            Violation::InvalidUtf8 => tungstenite::Error::Utf8(v.to_string()),
            Violation::FrameTooBig { size, max } | Violation::MessageTooBig { size, max } => {
                tungstenite::Error::Capacity(CapacityError::MessageTooLong {
                    size: usize::try_from(size).unwrap_or(usize::MAX),
                    max_size: max,
                })
            }
            v => tungstenite::Error::Io(io::Error::new(io::ErrorKind::InvalidData, v)),
        }
    }
}

/// What ends reading a connection.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The client broke the protocol or a limit: the connection is failed with its code.
    Violation(Violation),
    /// The client left without a closing handshake (RFC 6455 section 7.1.5: 1006).
    Reset,
    /// Reading the socket failed.
    Io(io::Error),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Violation(v) => v.fmt(f),
            ReadError::Reset => f.write_str("the client left without a closing handshake"),
            ReadError::Io(e) => e.fmt(f),
        }
    }
}

impl From<Violation> for ReadError {
    fn from(v: Violation) -> Self {
        ReadError::Violation(v)
    }
}

impl From<ReadError> for tungstenite::Error {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Violation(v) => v.into(),
            ReadError::Reset => {
                tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)
            }
            ReadError::Io(e) => tungstenite::Error::Io(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_violation_has_its_own_row_and_the_close_code_rfc_6455_names() {
        let all = [
            Violation::Protocol(ProtocolError::NonZeroReservedBits),
            Violation::InvalidUtf8,
            Violation::FrameTooBig { size: 2, max: 1 },
            Violation::MessageTooBig { size: 2, max: 1 },
            Violation::TooManyFragments { max: 1 },
            Violation::CorruptDeflate,
            Violation::InflatedTooBig { max: 1 },
        ];
        let rows: Vec<usize> = all.iter().map(Violation::row).collect();
        assert_eq!(rows, (0..TABLE.len()).collect::<Vec<_>>());
        let codes: Vec<u16> = all.iter().map(|v| v.close_code().into()).collect();
        assert_eq!(codes, [1002, 1007, 1009, 1009, 1009, 1007, 1009]);
    }
}
