//! The manual: how wssd is built, and why. Documentation only; nothing here is code.
//!
//! # The path of one connection
//!
//! ```text
//! an accept loop (smol::Server, tokio::serve, or yours)   a TCP stream and its peer address
//!   Server::connection                      the caps: total, and per client address (a
//!                                           direct peer is counted before its TLS handshake)
//!     Acceptor::accept, within Limits::handshake_timeout
//!       PROXY protocol v1/v2 header         trusted proxies only (sniff.rs)
//!       first byte                          TLS on a plain port, HTTP on a TLS port: a clear
//!                                           error (sniff.rs)
//!       TLS accept                          rustls, TLS 1.2 and 1.3, ALPN, SNI (tls_stream/)
//!       opening handshake                   RFC 6455 section 4.2 (handshake.rs, request.rs),
//!                                           the client's address (forwarded.rs), deflate
//!                                           terms (deflate.rs, RFC 7692 section 7.1)
//!     the per-address cap again             now with the address a trusted proxy named
//!     Handler::admit                        within the handshake timeout, else 503
//!     Accepted::serve                       the session loop (session/): the frame codec
//!                                           (frames/), the send queue, pings, deadlines;
//!                                           Handler::on_message gets each text or binary
//!                                           message as a Data, and sends are Data too
//!     the close log line and counters       server/, stats.rs
//! ```
//!
//! `Accepted::into_parts` leaves the loop out and hands over the same frame codec as a
//! `Stream` and `Sink` ([`WebSocket`](crate::WebSocket)).
//!
//! # What is wssd's own, and why
//!
//! Everything that is not the WebSocket protocol or the server's policy comes from a
//! well-kept library: rustls (with `ring`) for TLS, async-tungstenite's types for messages,
//! close frames and HTTP headers, httparse for the request head, flate2 (zlib-rs) for
//! DEFLATE, async-io and smol for the binary's runtime. What is wssd's own:
//!
//! - **The frame codec** (`frames/`): the only RFC 6455 codec, on every path. It parses
//!   frames where a read lands, in one buffer per thread, so an idle connection holds no
//!   read buffer; it counts fragments, checks UTF-8 as text arrives (so a message that turns
//!   invalid fails at the bytes that break it, section 8.1) and inflates compressed messages
//!   frame by frame under the message limit. It writes each frame as a header of at most 10
//!   bytes beside the message's own payload, shared between recipients, and corks queued
//!   frames into one write.
//! - **The server's policy** (`server/`): the caps, admission, shutdown, log lines and
//!   counters, the same on every runtime.
//! - **The timers** (`timer.rs`): one thread for the process (`wssd-timer`) keeps every
//!   deadline in one ordered map, so the core needs no runtime's timer and runs the same
//!   under any executor (the binary's bridge, API and probe sleep on it too). A deadline is
//!   set only when a step does not finish at once. Each timer reads a
//!   [`Clock`](crate::Clock) ([`Limits::clock`](crate::Limits::clock)): the system's, or a
//!   manual one a test moves, so tests assert that a timeout fires at its limit and not a
//!   moment before.
//! - **The per-thread buffers** (`per_thread.rs`): the read buffer, the room for TLS
//!   records, the spare send queue and the (de)compressors each thread lends the
//!   connections it serves for one step, so an idle connection holds none of them.
//! - **The readiness of `smol::Server`'s sockets on Linux** (`edge/epoll.rs`): each
//!   connection is registered once, edge-triggered, in an epoll instance of the server's
//!   own (rustix's safe epoll), instead of re-arming async-io's one-shot registration at
//!   each wait, which cost 14 to 17 % more server CPU per ping-pong echo. That instance is
//!   one source in async-io's reactor and one task hands its events to the connections; the
//!   threads are smol's, run by `smol::block_on`: no executor parker or reactor of ours.
//!   Elsewhere than Linux, async-io registers each socket (`edge/portable.rs`, which the
//!   tests also run on Linux).
//! - **A TLS record layer** (`records.rs`), an opt-in only (`Config::own_records`): after
//!   the handshake it seals and opens records with ring, taking the keys rustls hands over.
//!   It saves CPU per message, and stays behind its opt-in until an independent conformance
//!   suite reaches it: tlsfuzzer's conversations end at the first answer.
//!
//! # Memory per connection
//!
//! An idle wss connection holds about 5.5 KiB (`tests/memory.rs`): the connection's task
//! (the session's state, about 2 KiB), its shared state, request facts and timers (about
//! 0.8 KiB) and rustls' connection state (about 2.6 KiB). It holds no read buffer, no send
//! queue and no compression state: reads land in one buffer per thread, queues are freed once
//! drained, and permessage-deflate runs without context takeover, with one compressor per
//! thread and an inflater lent for one message.
//!
//! What a client can make a connection hold follows what it sent, not what it announced: a
//! frame's buffer grows as its bytes arrive (twice what came, at least 4 KiB, at most the
//! frame). The worst case is bounded by the [`Limits`](crate::Limits): the frame under way
//! (`max_frame_size`), the message being put together or inflated (`max_message_size`), the
//! send queue (`send_queue_bytes`) and one TLS record (18 KiB): about 2.3 MiB with the
//! defaults.
//!
//! # Defaults
//!
//! | setting | default | why |
//! | --- | --- | --- |
//! | [`Limits::handshake_timeout`](crate::Limits::handshake_timeout) | 10 s | a phone on a poor network finishes; slowloris does not |
//! | [`Limits::max_request_header_bytes`](crate::Limits::max_request_header_bytes) | 16 KiB | a browser's head with cookies is a few KiB |
//! | [`Limits::max_message_size`](crate::Limits::max_message_size), [`max_frame_size`](crate::Limits::max_frame_size) | 1 MiB | chat and push messages are far smaller |
//! | [`Limits::max_fragments`](crate::Limits::max_fragments) | 1,024 | browsers send one frame per message |
//! | [`Limits::send_queue_bytes`](crate::Limits::send_queue_bytes) | 256 KiB | seconds of traffic for one client, and a bound on one that stops reading |
//! | [`Limits::ping_interval`](crate::Limits::ping_interval) | 25 s | under the 30 to 60 s idle timeouts of proxies and NAT |
//! | [`Limits::idle_timeout`](crate::Limits::idle_timeout) | 60 s | two missed pongs; also every write's deadline |
//! | [`Limits::close_timeout`](crate::Limits::close_timeout), [`backpressure_timeout`](crate::Limits::backpressure_timeout) | 5 s | a live client answers within a round trip |
//! | [`Server::max_connections`](crate::Server::max_connections) | 10,000 | about 0.2 GB with the default buffers |
//! | [`Server::max_connections_per_address`](crate::Server::max_connections_per_address) | 1,000 | one client cannot take every slot; users behind one NAT still fit |
//! | [`Server::shutdown_timeout`](crate::Server::shutdown_timeout) | 10 s | time to write what is queued and close with 1001 |
//!
//! # Errors and close codes
//!
//! A violation of RFC 6455 closes with 1002, invalid UTF-8 (or a compressed message that is
//! not DEFLATE) with 1007, a message, frame or fragment count over its limit with 1009, a
//! client that stays behind its send queue with 1013, an idle one and every client on
//! shutdown with 1001 (section 7.4.1). [`Violation`](crate::Violation) (`violation.rs`) is
//! the one type of what a client's frames can break, and its table gives each its close
//! code and the label it is counted under ([`Stats::violations`](crate::stats::Stats::violations));
//! the close frame's reason is its text. The session's summary carries it
//! ([`SessionSummary::violation`](crate::SessionSummary::violation)) and the error's words,
//! escaped, for the close log line.
//!
//! The library's messages name the library's settings (`Config::path`); the binary's log
//! lines add the flag that sets each (`Config::path, --path`).
