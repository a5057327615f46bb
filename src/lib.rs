//! wssd: an embeddable WebSocket-over-TLS (`wss://`) server.
//!
//! A small core that turns any `futures_io::AsyncRead + AsyncWrite` stream into a
//! WebSocket (RFC 6455), with TLS 1.2/1.3 from rustls, and no runtime inside: smol,
//! async-std and tokio (through `tokio_util::compat`) apps embed it. The `wssd`
//! binary is the same core on smol.
//!
//! # Two ways to serve wss
//!
//! **Method 1: behind nginx or Apache.** The proxy terminates TLS on 443 at `/wss`
//! and forwards plain `ws://` to wssd on 127.0.0.1:8282. wssd gets no certificate:
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
//!
//! # Embedding
//!
//! Accept a stream on your own runtime, then either drive the [`WebSocket`] yourself
//! (it is a `Stream` and `Sink` of [`Message`]s) or hand it to [`session::serve`] with
//! a [`Handler`]. This answers every message with `ok`, as the recipe's example does:
//!
//! ```
//! use std::sync::Arc;
//! use wssd::{Connection, Handler, Message};
//!
//! struct ReplyOk;
//! impl Handler for ReplyOk {
//!     fn on_message(&self, conn: &Connection, _msg: Message) {
//!         let _ = conn.try_send(Message::text("ok"));
//!     }
//! }
//!
//! # smol::block_on(async {
//! let acceptor = wssd::Acceptor::new(wssd::Config::default());
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
//! let handler = Arc::new(ReplyOk);
//! // One connection here; a server loops, spawning a task per connection.
//! let (stream, peer) = listener.accept().await?;
//! // accept applies the handshake timeout; serve applies every other limit of the acceptor.
//! let summary = acceptor.accept(stream, peer).await?.serve(&*handler).await;
//! assert_eq!(summary.messages_in, 1);
//! # assert_eq!(client.await, Message::text("ok"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! To send from elsewhere (another task, a timer, a message bus), keep the
//! [`Connection`] handle given to [`Handler::on_open`]: it is cheap to clone and
//! its send queue is bounded in bytes, so a slow client shows up as
//! [`SendError::Full`] (or [`Connection::send`] waits), never as a silent drop.
//! `on_open` runs before the client receives its `101`, so whatever it registers is in
//! place by the time the client sees the connection open.
//!
//! # Users, groups and several instances
//!
//! A [`Hub`] is the registry of live connections: ids, users ([`Hub::bind_user`],
//! [`Hub::send_to_user`]), groups ([`Hub::join`], [`Hub::send_to_group`]) and
//! [`Hub::broadcast`], each send framed once and shared by its recipients. With the
//! `redis` feature, [`redis::link`] carries user, group and broadcast sends to every
//! instance on one Redis server.
//!
//! # Limits, heartbeat, shutdown, renewal
//!
//! Every limit is a field of [`Limits`], with its unit and the reason for its default:
//! handshake timeout, request head size, message, frame and fragment counts, the send
//! queue, ping interval and idle timeout, and (for the listener loop) connections.
//! [`smol::Shutdown`] stops a server gracefully (1001 to every client after its queue
//! drains), and [`tls::CertResolver`] swaps certificates, chosen by SNI, while it runs.
//!
//! # Features
//! - `smol` (on with `cli`): [`smol::serve`] and [`smol::run`], the listener loop, with
//!   the connection cap and graceful shutdown.
//! - `self-signed` (on with `cli`): [`tls::SelfSigned`], a local CA and leaf from rcgen.
//! - `redis` (on with `cli`): [`redis::link`], cross-instance fan-out for the [`Hub`].
//! - `probe` (on with `cli`): what `wssd probe` needs (system trust store, certificate dates, JSON).
//! - `cli` (default): the `wssd` binary.
//!
//! Without default features, the core depends on no runtime: it needs only a
//! `futures_io` stream, and its timers come from async-io, which works under any executor.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod accept;
mod config;
pub mod forwarded;
mod handshake;
pub mod hub;
#[cfg(feature = "redis")]
pub mod redis;
mod session;
#[cfg(feature = "smol")]
pub mod smol;
// The first-byte check and PROXY protocol parser: internal, but the fuzz targets reach
// them through the `fuzzing` feature.
#[cfg(feature = "fuzzing")]
pub mod sniff;
#[cfg(not(feature = "fuzzing"))]
mod sniff;
pub mod text;
pub mod tls;

pub use accept::{AcceptError, Accepted, Acceptor, Request, Stream, TlsInfo, WebSocket};
pub use async_tungstenite::tungstenite;
pub use config::{Config, Limits};
pub use futures_rustls::rustls;
pub use hub::Hub;
pub use session::{Connection, Handler, SendError, SessionSummary};
pub use sniff::ProxyHeaderError;
pub use tungstenite::Message;
pub use tungstenite::protocol::{CloseFrame, frame::coding::CloseCode};
