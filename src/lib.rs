//! wssd: an embeddable WebSocket-over-TLS (`wss://`) server.
//!
//! A core with no runtime inside that turns any `futures_io::AsyncRead + AsyncWrite`
//! stream into a WebSocket (RFC 6455, with permessage-deflate, RFC 7692), with TLS 1.2/1.3
//! from rustls, safe by default: every limit and deadline is applied by the library, on any
//! runtime. smol, async-std and tokio apps embed it; the `wssd` binary (the `wssd-cli`
//! package) is the same core on smol. The [`manual`] says how it is built and why: which
//! layers are wssd's own, the memory a connection costs, the defaults.
//!
//! # The path of one connection
//!
//! ```text
//! your accept loop (any runtime)       a TcpStream and its peer address
//!   Acceptor::accept, within Limits::handshake_timeout:
//!     PROXY protocol v1/v2 header       Config::proxy_protocol, trusted proxies only
//!     first byte                        0x16 TLS on a plain port, or HTTP on a TLS port:
//!                                       a clear error (400 naming wss:// for the latter)
//!     TLS accept                        rustls, TLS 1.2 and 1.3, ALPN http/1.1, SNI
//!     opening handshake                 RFC 6455 section 4.2.1: path, version, key,
//!                                       subprotocol (section 4.2.2), real client IP,
//!                                       permessage-deflate (RFC 7692, Config::deflate)
//!   -> Accepted                         the request facts, the 101 not yet sent
//!   Accepted::serve(&handler):
//!     Handler::on_open, then the 101
//!     session loop                      frames in (size, frame and fragment limits,
//!                                       UTF-8 checked as it arrives, compressed ones
//!                                       inflated under the message-size limit),
//!                                       the send queue out (bounded in bytes, corked),
//!                                       pings and the idle timeout, a deadline on every
//!                                       write, backpressure for Hub sends, close codes
//!     Handler::on_close                 the peer's close frame, if any
//! ```
//!
//! # Two ways to serve wss
//!
//! **Method 1: behind nginx or Apache.** The proxy terminates TLS on 443 at `/wss`
//! and forwards plain `ws://` to wssd on 127.0.0.1:8282. wssd gets no certificate, and
//! believes the proxy's `Forwarded`, `X-Forwarded-For` and `X-Real-IP` only from
//! [`Config::trusted_proxies`] (loopback by default; see [`forwarded`]):
//!
//! ```
//! let config = wssd::Config::default().path("/wss");
//! let acceptor = wssd::Acceptor::new(config);
//! ```
//!
//! **Method 2: wssd terminates TLS.** Give it the certificate chain (`.pem` or
//! `.crt`) and the private key. Errors name the file and say what to fix:
//!
//! ```no_run
//! let tls = wssd::tls::from_pem_files("server.pem", "server.key")?;
//! let acceptor = wssd::Acceptor::new(wssd::Config::default().tls(tls));
//! # Ok::<(), wssd::tls::TlsError>(())
//! ```
//!
//! TLS is 1.2 or 1.3 only (WeChat Mini Programs require 1.2), with ALPN `http/1.1`.
//! [`tls::CertFiles`] reloads certificate files (and SNI pairs) while serving.
//!
//! # Embedding
//!
//! Accept a stream on your own runtime and hand it to [`Server::connection`]: it applies the
//! server's policy (the connection caps, in total and per client address; [`Handler::admit`];
//! graceful [`Shutdown`]; the open and close log lines; the [`stats`] counters; a panic
//! boundary around the connection), then [`Acceptor::accept`] within the handshake timeout
//! and [`Accepted::serve`] under the acceptor's [`Limits`]. [`smol::Server`] and
//! `tokio::serve` (feature `tokio`) are accept loops over it. This answers every message
//! with `ok`, as the recipe's example does:
//!
//! ```
//! use std::sync::Arc;
//! use wssd::{Connection, Handler, Message};
//!
//! struct ReplyOk;
//! impl Handler for ReplyOk {
//!     fn on_message(&self, conn: &Connection, _msg: wssd::Data) {
//!         let _ = conn.try_send(wssd::Data::text("ok"));
//!     }
//! }
//!
//! # smol::block_on(async {
//! let acceptor = wssd::Acceptor::new(wssd::Config::default());
//! let server = wssd::Server::new(acceptor, Arc::new(ReplyOk));
//! let listener = smol::net::TcpListener::bind("127.0.0.1:0").await?;
//! # let addr = listener.local_addr()?;
//! # let client = smol::spawn(async move {
//! #     use futures_util::{SinkExt, StreamExt};
//! #     let tcp = smol::net::TcpStream::connect(addr).await.unwrap();
//! #     let (mut ws, _) = async_tungstenite::client_async(format!("ws://{addr}/"), tcp).await.unwrap();
//! #     ws.send(Message::text("tom")).await.unwrap();
//! #     let reply = ws.next().await.unwrap().unwrap();
//! #     ws.close(None).await.unwrap();
//! #     reply
//! # });
//! // One connection here; a server loops, spawning each connection's future as a task.
//! let (stream, peer) = listener.accept().await?;
//! server.connection(stream, peer).await;
//! # assert_eq!(client.await, Message::text("ok"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! [`Acceptor::accept`] and [`Accepted::serve`] can also be called directly (the example on
//! [`Acceptor`] does): every per-connection limit still holds, but the caps, admission,
//! shutdown, log lines and counters are then the caller's.
//!
//! To send from elsewhere (another task, a timer, a message bus), keep the
//! [`Connection`] handle given to [`Handler::on_open`]: it is cheap to clone and
//! its send queue is bounded in bytes, so a slow client shows up as
//! [`SendError::Full`] (or [`Connection::send`] waits), never as a silent drop.
//! `on_open` runs before the client receives its `101`, so whatever it registers is in
//! place by the time the client sees the connection open. [`Accepted::into_parts`] gives
//! the raw [`WebSocket`] (a `Stream` and `Sink` of [`Message`]s) to drive yourself.
//!
//! # What the core needs from a runtime
//!
//! A `futures_io` stream, and nothing else. The timers (handshake, heartbeat, write and
//! close deadlines) are the core's own and work under any executor: one thread for the
//! process (`wssd-timer`, started by the first timer) keeps their deadlines in one ordered
//! map and sleeps until the earliest, then wakes the tasks whose deadline passed; a new
//! deadline wakes the thread only when it is earlier than the one it sleeps until, which a
//! deadline seconds ahead almost never is. No task is spawned: every task is the caller's
//! (the [`smol`] module and [`redis::link`]'s task are spawned by whoever calls them).
//!
//! # Users, groups and several instances
//!
//! A [`Hub`] is the registry of live connections: ids, users ([`Hub::bind_user`],
//! [`Hub::send_to_user`]), groups ([`Hub::join`], [`Hub::send_to_group`]) and
//! [`Hub::broadcast`], each send framed once and shared by its recipients. A connection
//! leaves the Hub when its session ends. Sends made inside [`Handler::on_message`] apply
//! backpressure to the sender instead of disconnecting a recipient with a full queue. With
//! the `redis` feature, [`redis::link`] carries user, group and broadcast sends to every
//! instance on one Redis server.
//!
//! # Limits, heartbeat, shutdown, renewal
//!
//! Every per-connection limit is a field of [`Limits`], with its unit and the reason for
//! its default: handshake timeout, request head size, message, frame and fragment sizes,
//! the send queue, ping interval, idle, close and backpressure timeouts. The server's own
//! settings (the connection caps, in total and per client address, and the shutdown timeout)
//! are [`Server`]'s, on every runtime. [`Shutdown`] stops a server gracefully (1001 to every
//! client after its queue drains), and
//! [`tls::CertFiles`] reloads certificate files and SNI pairs while it runs.
//!
//! # Features
//! - `smol` (default): [`smol::Server`], the listener loop on smol over [`Server`], with
//!   its threads.
//! - `tokio`: `tokio::serve`, the same loop on tokio (the library's only tokio code).
//! - `self-signed`: [`tls::SelfSigned`], a local CA and leaf from rcgen.
//! - `redis`: [`redis::link`], cross-instance fan-out for the [`Hub`].
//! - `fuzzing`: exposes the internal first-byte and PROXY header parsers to the fuzz targets
//!   (the others go through the public accept path).
//!
//! With default features a dependent builds about 75 crates, none of them tokio; without
//! them, about 55 (no async-io, no smol).
//!
//! # Not supported (yet)
//! - HTTP/2 WebSockets (RFC 8441) and HTTP/3 (RFC 9220): the opening handshake is HTTP/1.1.
//! - ACME certificates: bring PEM files (renewed by certbot or acme.sh, reloaded live).
//! - Client authentication by TLS certificate; authenticate in [`Handler::on_open`] with
//!   the request's headers or query instead.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod accept;
mod config;
mod data;
mod deflate;
#[cfg(feature = "smol")]
mod edge;
pub mod forwarded;
mod frames;
mod handshake;
pub mod hub;
pub mod manual;
mod per_thread;
mod records;
#[cfg(feature = "redis")]
pub mod redis;
mod request;
pub mod server;
mod session;
#[cfg(feature = "smol")]
pub mod smol;
mod timer;
mod tls_stream;
mod transport;
mod violation;
mod websocket;
// The first-byte check and PROXY protocol parser: internal, but the fuzz targets reach
// them through the `fuzzing` feature.
#[cfg(feature = "fuzzing")]
pub mod sniff;
#[cfg(not(feature = "fuzzing"))]
mod sniff;
pub mod stats;
pub mod text;
pub mod tls;
#[cfg(feature = "tokio")]
pub mod tokio;

/// The fuzz targets' ways into internals (feature `fuzzing`; not a public API).
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::records::fuzz as records;
}

pub use accept::{AcceptError, Accepted, Acceptor};
pub use async_tungstenite::tungstenite;
pub use config::{Config, Limits};
pub use data::Data;
pub use deflate::Deflate;
pub use hub::Hub;
pub use request::{Request, TlsInfo, TlsVersion};
pub use rustls;
pub use server::{Server, Shutdown};
pub use session::{
    Admission, AdmitFuture, Connection, ConnectionId, Handler, SendError, SessionSummary,
};
pub use sniff::ProxyHeaderError;
pub use timer::Clock;
pub use transport::Transport;
pub use tungstenite::Message;
pub use tungstenite::protocol::{CloseFrame, frame::coding::CloseCode};
pub use violation::Violation;
pub use websocket::WebSocket;
