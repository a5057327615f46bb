//! The WebSocket that [`Accepted::into_parts`](crate::Accepted::into_parts) hands over: the
//! frame codec that [`Accepted::serve`](crate::Accepted::serve) runs, as a `Stream` of
//! incoming messages and a `Sink` of outgoing ones.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures_io::{AsyncRead, AsyncWrite};

use crate::frames::Frames;
use crate::tungstenite::Error;
use crate::{CloseFrame, Message};

/// A WebSocket over `S`, after a successful opening handshake, to drive yourself: a
/// `Stream` of incoming [`Message`]s (`futures_core::Stream`, as `futures_lite::StreamExt`
/// and `futures_util::StreamExt` use) and a `Sink` of outgoing ones (`futures_sink::Sink`).
///
/// It is the frame codec of [`Accepted::serve`](crate::Accepted::serve), under the same
/// [`Limits`](crate::Limits): message, frame and fragment sizes (a violation is an error
/// the caller answers with its close code, RFC 6455 section 7.4.1), UTF-8 checked as text
/// arrives, permessage-deflate (RFC 7692) both ways when agreed. A ping is answered with a
/// pong, written with the next read, send or flush; a close frame is answered with one, and
/// the stream then ends. The heartbeat, idle timeout and send queue are the caller's.
///
/// # Errors
/// Reading: a [`Violation`](crate::Violation) as tungstenite names it: `Error::Protocol`
/// (close code 1002), `Error::Capacity` (1009), `Error::Utf8` (1007), or an `Error::Io` of
/// kind `InvalidData` holding the `Violation` for the kinds tungstenite lacks (too many
/// fragments, corrupt or oversized DEFLATE); `Error::Protocol(ResetWithoutClosingHandshake)`
/// when the peer left without a closing handshake; else the transport's. Sending after a
/// close frame: `Error::Protocol(SendAfterClosing)`.
pub struct WebSocket<S> {
    frames: Frames<S>,
    /// The permessage-deflate terms agreed, for what is sent.
    deflate: Option<crate::deflate::Agreed>,
}

impl<S> fmt::Debug for WebSocket<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSocket")
            .field("permessage_deflate", &self.deflate.is_some())
            .finish_non_exhaustive()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocket<S> {
    pub(crate) fn new(frames: Frames<S>, deflate: Option<crate::deflate::Agreed>) -> Self {
        WebSocket { frames, deflate }
    }

    /// Sends a close frame (RFC 6455 section 5.5.1), `None` for one without a code, and
    /// flushes; then read until the stream ends to see the peer's close frame.
    ///
    /// # Errors
    /// The I/O error of the write; `Error::Protocol(SendAfterClosing)` when a close frame
    /// was sent already.
    ///
    /// ```
    /// # let accepted = include!("doc_accepted.rs");
    /// let (mut ws, _) = accepted.into_parts();
    /// smol::block_on(ws.close(None))?; // then read the stream to its end for the peer's close
    /// # Ok::<(), wssd::tungstenite::Error>(())
    /// ```
    pub async fn close(&mut self, frame: Option<CloseFrame>) -> Result<(), Error> {
        self.frames.close(frame).await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> futures_lite::Stream for WebSocket<S> {
    type Item = Result<Message, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let frames = &mut self.get_mut().frames;
        if frames.has_output() {
            // A pong (or anything sent and not flushed) goes out while reading; an error
            // shows at the next send or flush.
            let _ = frames.poll_flush(cx);
        }
        frames
            .poll_next(cx)
            .map(|next| next.map(|r| r.map_err(Error::from)))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> futures_util::Sink<Message> for WebSocket<S> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.get_mut().frames.poll_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, msg: Message) -> Result<(), Error> {
        let this = self.get_mut();
        let msg = match &this.deflate {
            Some(agreed) => crate::deflate::compress(&msg, agreed).unwrap_or(msg),
            None => msg,
        };
        this.frames.start_send(msg)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.get_mut().frames.poll_flush(cx)
    }

    /// Sends a close frame without a code if none went yet, then flushes.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let frames = &mut self.get_mut().frames;
        if !frames.is_closing() {
            frames.start_send(Message::Close(None))?;
        }
        ready!(frames.poll_flush(cx))?;
        Poll::Ready(Ok(()))
    }
}
