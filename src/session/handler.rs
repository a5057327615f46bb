//! What the embedder's code does: [`Handler`] and its admission.

use std::future::Future;
use std::pin::Pin;

use async_tungstenite::tungstenite::protocol::CloseFrame;

use super::{Connection, ConnectionId};
use crate::Data;
use crate::request::Request;

/// What the embedder's code does when a connection opens, sends a message, and closes.
///
/// The callbacks run on the connection's own task, one at a time, in order.
/// They are plain functions, as Workerman's `onMessage` is: to do async work,
/// clone the [`Connection`] into a task of your own and send from there.
///
/// ```
/// use wssd::{Connection, Data, Handler};
///
/// /// Answers every message with `ok`, as the recipe's example does.
/// struct ReplyOk;
///
/// impl Handler for ReplyOk {
///     fn on_message(&self, conn: &Connection, _msg: Data) {
///         // Fails only when the queue is full or the connection is gone; both are logged.
///         if let Err(e) = conn.try_send("ok") {
///             log::warn!("{}: {e}", conn.request().peer_addr);
///         }
///     }
/// }
/// ```
pub trait Handler: Send + Sync + 'static {
    /// Decides whether to let a client in, before the `101`, with I/O of its own: asking
    /// an app over HTTP, a database, a token service. Return `None` to let it in at once
    /// (the default), or a future that gives the [`Admission`]; a refusal answers the
    /// client with that HTTP status, so a browser's WebSocket never opens (RFC 6455
    /// section 4.1). `id` is the id the connection will have in [`Handler::on_open`].
    ///
    /// [`Server::connection`](crate::Server::connection) (and so `smol::Server` and
    /// `tokio::serve`) calls it between accepting and serving, within
    /// [`Limits::handshake_timeout`](crate::Limits::handshake_timeout) (past it, the client
    /// gets 503). Code that calls [`Acceptor::accept`](crate::Acceptor::accept) itself calls it
    /// the same way, then [`Accepted::serve`](crate::Accepted::serve) or
    /// [`Accepted::refuse`](crate::Accepted::refuse).
    fn admit(&self, id: ConnectionId, request: &Request) -> Option<AdmitFuture> {
        let _ = (id, request);
        None
    }

    /// A connection finished its opening handshake. `conn.request()` has the request facts.
    ///
    /// This runs before the client receives the `101 Switching Protocols` answer: by the
    /// time the client sees the connection open, whatever this registered (a Hub group, a
    /// user) is in place, so no message sent after that point can miss it.
    fn on_open(&self, conn: &Connection) {
        let _ = conn;
    }

    /// A text or binary message arrived (RFC 6455 section 6.2). Pings and pongs are
    /// answered by the session loop and do not reach the handler.
    ///
    /// [`Hub`](crate::Hub) sends made from here apply backpressure: a recipient whose
    /// queue is full does not lose the message and is not closed at once; instead this
    /// connection stops reading until the recipient has room (see
    /// [`Limits::backpressure_timeout`](crate::Limits::backpressure_timeout)).
    fn on_message(&self, conn: &Connection, msg: Data);

    /// The connection ended. `close` is the close frame the peer sent (code and reason,
    /// RFC 6455 section 7.1.5), or `None` when it sent none (the TCP connection
    /// dropped, or the session failed it with its own close code).
    fn on_close(&self, conn: &Connection, close: Option<&CloseFrame>) {
        let _ = (conn, close);
    }
}

/// What [`Handler::admit`] returns: a future that decides whether a client gets in.
pub type AdmitFuture = Pin<Box<dyn Future<Output = Admission> + Send + 'static>>;

/// Whether a client gets in, as [`Handler::admit`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Admission {
    /// Let it in: the `101` goes out and [`Handler::on_open`] runs.
    Accept,
    /// Let it in speaking this subprotocol, one the client offered (RFC 6455 section
    /// 4.2.2), in place of [`Config::subprotocols`](crate::Config::subprotocols)' choice.
    AcceptSubprotocol(String),
    /// Keep it out with this HTTP status (400 to 599) and a plain-text reason as the body.
    Refuse {
        /// The HTTP status, such as 401, 403, or 503 when the one who decides is unreachable.
        status: u16,
        /// Why, in plain words (the response body, and the server's log line).
        reason: String,
    },
}
