//! [`Data`]: the messages a handler receives and sends.

use async_tungstenite::tungstenite::{Bytes, Message, Utf8Bytes};

/// A data message (RFC 6455 section 5.6): text (UTF-8) or binary. What
/// [`Handler::on_message`](crate::Handler::on_message) receives, and all that
/// [`Connection`](crate::Connection) and [`Hub`](crate::Hub) send: pings and pongs are the
/// server's own (the heartbeat, RFC 6455 section 5.5.2), and a connection is closed with
/// [`Connection::close`](crate::Connection::close). The payload is shared, not copied, when
/// a message is cloned or sent to many.
///
/// ```
/// use wssd::Data;
/// let text = Data::text("ok");
/// assert_eq!(text.as_text(), Some("ok"));
/// let binary: Data = vec![1u8, 2, 3].into(); // a Vec<u8> is binary, a String or &str text
/// assert_eq!((binary.as_bytes(), binary.len()), (&[1u8, 2, 3][..], 3));
/// assert_eq!(Data::from("ok"), text);
/// ```
///
/// A close frame, a ping or a raw frame is not `Data`, so it cannot be sent by mistake:
///
/// ```compile_fail
/// fn close_by_hand(conn: &wssd::Connection) {
///     // A close goes through Connection::close, which does the closing handshake.
///     let _ = conn.try_send(wssd::Message::Close(None));
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// A text message: UTF-8, checked as it arrived (RFC 6455 section 8.1).
    Text(Utf8Bytes),
    /// A binary message.
    Binary(Bytes),
}

impl Data {
    /// A text message.
    ///
    /// ```
    /// let msg = wssd::Data::text("ok");
    /// assert_eq!(msg.as_text(), Some("ok"));
    /// ```
    pub fn text(text: impl Into<Utf8Bytes>) -> Self {
        Data::Text(text.into())
    }

    /// A binary message.
    ///
    /// ```
    /// let msg = wssd::Data::binary(vec![0xCA, 0xFE]);
    /// assert_eq!(msg.as_bytes(), [0xCA, 0xFE]);
    /// ```
    pub fn binary(bytes: impl Into<Bytes>) -> Self {
        Data::Binary(bytes.into())
    }

    /// The text of a text message; `None` for a binary one.
    ///
    /// ```
    /// assert_eq!(wssd::Data::text("hi").as_text(), Some("hi"));
    /// assert_eq!(wssd::Data::binary(vec![1]).as_text(), None);
    /// ```
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Data::Text(text) => Some(text),
            Data::Binary(_) => None,
        }
    }

    /// The payload, text or binary, as bytes.
    ///
    /// ```
    /// assert_eq!(wssd::Data::text("hi").as_bytes(), b"hi");
    /// ```
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Data::Text(text) => text.as_bytes(),
            Data::Binary(bytes) => bytes,
        }
    }

    /// Whether it is a text message.
    ///
    /// ```
    /// assert!(wssd::Data::from("hi").is_text()); // a &str is text
    /// assert!(!wssd::Data::from(vec![1u8]).is_text()); // a Vec<u8> binary
    /// ```
    pub fn is_text(&self) -> bool {
        matches!(self, Data::Text(_))
    }

    /// The payload's length, in bytes.
    ///
    /// ```
    /// assert_eq!(wssd::Data::text("héllo").len(), 6); // bytes, not characters
    /// ```
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// Whether the payload is empty.
    ///
    /// ```
    /// assert!(wssd::Data::text("").is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<&str> for Data {
    fn from(text: &str) -> Self {
        Data::text(text)
    }
}

impl From<String> for Data {
    fn from(text: String) -> Self {
        Data::text(text)
    }
}

impl From<Utf8Bytes> for Data {
    fn from(text: Utf8Bytes) -> Self {
        Data::Text(text)
    }
}

impl From<Vec<u8>> for Data {
    fn from(bytes: Vec<u8>) -> Self {
        Data::binary(bytes)
    }
}

impl From<Bytes> for Data {
    fn from(bytes: Bytes) -> Self {
        Data::Binary(bytes)
    }
}

/// The same message in tungstenite's vocabulary (for [`WebSocket`](crate::WebSocket) and
/// clients): no copy.
impl From<Data> for Message {
    fn from(data: Data) -> Self {
        match data {
            Data::Text(text) => Message::Text(text),
            Data::Binary(bytes) => Message::Binary(bytes),
        }
    }
}

/// A text or binary [`Message`] as [`Data`], no copy; any other kind is given back.
impl TryFrom<Message> for Data {
    type Error = Message;

    fn try_from(msg: Message) -> Result<Self, Message> {
        match msg {
            Message::Text(text) => Ok(Data::Text(text)),
            Message::Binary(bytes) => Ok(Data::Binary(bytes)),
            other => Err(other),
        }
    }
}
