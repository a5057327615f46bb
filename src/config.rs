//! [`Config`] and [`Limits`]: plain structs, every default documented with its unit and reason.

use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use rustls::ServerConfig;

/// What an [`Acceptor`](crate::Acceptor) accepts: TLS or plain, which path, which subprotocols, and the limits.
///
/// ```
/// let config = wssd::Config::default()
///     .path("/wss")
///     .subprotocols(["chat.v2", "chat.v1"]);
/// assert!(config.tls.is_none()); // plain ws, as behind nginx (Method 1)
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// The rustls server configuration; `None` serves plain `ws://` (behind a TLS-terminating proxy).
    /// Build one with [`tls::from_pem_files`](crate::tls::from_pem_files).
    pub tls: Option<Arc<ServerConfig>>,
    /// The only request path accepted (such as `/wss`); any other path gets HTTP 404
    /// before the upgrade. `None` accepts every path, as Workerman does.
    /// The query string is not part of the path.
    pub path: Option<String>,
    /// Also accept the paths below [`Config::path`]: with `path` `/wss`, `/wss/room1` and
    /// `/wss/a/b` too (not `/wssx`). Behind nginx's `location /wss` (a prefix match), this is
    /// how one proxied path carries rooms or channels. Default `false`: the path alone.
    pub subpaths: bool,
    /// The subprotocols this server speaks (RFC 6455 section 1.9). The first of the
    /// client's offers in `Sec-WebSocket-Protocol` (the client lists its most preferred
    /// first) that is in this list is chosen and echoed in the response (section 4.2.2). When the client offers some and none match, no
    /// subprotocol is chosen and the browser decides whether to fail the connection.
    pub subprotocols: Vec<String>,
    /// The per-connection limits.
    pub limits: Limits,
    /// The proxies whose `Forwarded`, `X-Forwarded-For`, `X-Real-IP` and PROXY protocol
    /// headers are believed (see [`crate::forwarded`]). Default: loopback only,
    /// `127.0.0.0/8` and `::1`, where nginx or Apache on the same machine connects from.
    pub trusted_proxies: Vec<IpNet>,
    /// Expect a PROXY protocol v1 or v2 header (from an L4 balancer such as HAProxy,
    /// nginx `stream` or a cloud load balancer) before the TLS ClientHello or HTTP
    /// request, from trusted proxies only. A trusted peer that sends none is closed.
    /// Default `false`.
    pub proxy_protocol: bool,
    /// An HTML page to answer a plain `GET` of the WebSocket path with (no `Upgrade`
    /// header), instead of 426 Upgrade Required: a client page served from the same
    /// port, such as a chat room's (the binary's `--test-page` serves its test page this way).
    /// Default `None`.
    pub page: Option<Arc<str>>,
    /// permessage-deflate (RFC 7692): whether a client's offer is accepted, the size below
    /// which messages go uncompressed, and the level. Default: off.
    pub deflate: crate::Deflate,
    /// What is known to be wrong with the served certificates (an expired one, a missing
    /// intermediate), set by whoever checks them; a TLS handshake that the client fails
    /// names it as the likely cause. Default: nothing known.
    pub certificate_notes: crate::tls::CertificateNotes,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            tls: None,
            path: None,
            subpaths: false,
            subprotocols: Vec::new(),
            limits: Limits::default(),
            trusted_proxies: crate::forwarded::loopback(),
            proxy_protocol: false,
            page: None,
            deflate: crate::Deflate::default(),
            certificate_notes: crate::tls::CertificateNotes::default(),
        }
    }
}

impl Config {
    /// Serves `wss://` with this TLS configuration, as it is: rustls runs the handshake and
    /// protects the records (RFC 8446, RFC 5246).
    ///
    /// See [`Config::own_records`] for wssd's own record layer, an opt-in.
    ///
    /// ```
    /// # fn with(tls: std::sync::Arc<wssd::rustls::ServerConfig>) {
    /// // `tls` from tls::from_pem_files, tls::CertFiles or tls::resolver_config:
    /// let config = wssd::Config::default().tls(tls); // wss:// on this port (Method 2)
    /// # }
    /// ```
    pub fn tls(mut self, tls: Arc<ServerConfig>) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Opts in to wssd's own TLS record layer, or out of it (the default): after the
    /// handshake, once rustls holds nothing of the client's, records are opened and sealed in
    /// place with ring's AES-GCM and ChaCha20-Poly1305 and the keys rustls hands over (RFC
    /// 8446 section 5, RFC 5246 section 6.2), with no copy and no allocation of their own.
    ///
    /// This sets `enable_secret_extraction` on the TLS configuration set by [`Config::tls`]
    /// (on a copy of it if it is shared), which is what lets rustls hand its keys over; call it
    /// after [`Config::tls`]. Setting that flag on a configuration yourself opts in the same
    /// way. rustls keeps the records in FIPS mode, with `max_fragment_size` set, or with other
    /// cipher suites. Without a TLS configuration this does nothing.
    ///
    /// It is an opt-in because it is not yet shown as correct as rustls' own records: it
    /// differs from rustls on a KeyUpdate split over two records (refused, RFC 8446 section
    /// 5.1 allows it) and a TLS 1.2 renegotiation attempt (a fatal `unexpected_message`, not a
    /// `no_renegotiation` warning). It saves CPU per message (README, "Speed and footprint").
    ///
    /// ```
    /// # #[cfg(feature = "self-signed")] {
    /// # let tls = wssd::tls::SelfSigned::generate().unwrap().server_config().unwrap();
    /// let config = wssd::Config::default().tls(tls).own_records(true);
    /// assert!(config.tls.unwrap().enable_secret_extraction);
    /// # }
    /// ```
    pub fn own_records(mut self, on: bool) -> Self {
        if let Some(tls) = &mut self.tls
            && tls.enable_secret_extraction != on
        {
            Arc::make_mut(tls).enable_secret_extraction = on;
        }
        self
    }

    /// Accepts only this request path (such as `/wss`); others get HTTP 404.
    ///
    /// ```
    /// let config = wssd::Config::default().path("/wss"); // as nginx's `location /wss`
    /// assert_eq!(config.path.as_deref(), Some("/wss"));
    /// ```
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// Also accepts the paths below [`Config::path`] (`/wss/room1` under `/wss`); see [`Config::subpaths`].
    ///
    /// ```
    /// // /wss, /wss/room1 and /wss/a/b, not /wssx:
    /// let config = wssd::Config::default().path("/wss").subpaths(true);
    /// ```
    pub fn subpaths(mut self, on: bool) -> Self {
        self.subpaths = on;
        self
    }

    /// Whether a request for `path` (without the query) is accepted: any path without
    /// [`Config::path`], else that path, or one below it with [`Config::subpaths`].
    ///
    /// ```
    /// let config = wssd::Config::default().path("/wss").subpaths(true);
    /// assert!(config.accepts_path("/wss") && config.accepts_path("/wss/room1"));
    /// assert!(!config.accepts_path("/wssx") && !config.accepts_path("/"));
    /// ```
    pub fn accepts_path(&self, path: &str) -> bool {
        let Some(ours) = &self.path else {
            return true;
        };
        match path.strip_prefix(ours.as_str()) {
            Some("") => true,
            Some(rest) => self.subpaths && (rest.starts_with('/') || ours.ends_with('/')),
            None => false,
        }
    }

    /// Sets the subprotocols this server speaks (RFC 6455 section 1.9); the client's order
    /// of preference decides among them.
    ///
    /// ```
    /// let config = wssd::Config::default().subprotocols(["chat.v2", "chat.v1"]);
    /// assert_eq!(config.subprotocols, ["chat.v2", "chat.v1"]);
    /// ```
    pub fn subprotocols<I: IntoIterator<Item = S>, S: Into<String>>(mut self, list: I) -> Self {
        self.subprotocols = list.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the proxies whose forwarding headers are believed (default: loopback only).
    ///
    /// ```
    /// // Believe X-Real-IP and Forwarded from the load balancers' network, not only loopback:
    /// let lan: ipnet::IpNet = "10.0.0.0/8".parse().unwrap();
    /// let config = wssd::Config::default().trusted_proxies([lan]);
    /// ```
    pub fn trusted_proxies(mut self, ranges: impl IntoIterator<Item = IpNet>) -> Self {
        self.trusted_proxies = ranges.into_iter().collect();
        self
    }

    /// Expects a PROXY protocol v1 or v2 header from trusted proxies.
    ///
    /// ```
    /// // Behind HAProxy with `send-proxy-v2`, or nginx's stream module with `proxy_protocol on`:
    /// let config = wssd::Config::default().proxy_protocol(true);
    /// ```
    pub fn proxy_protocol(mut self, on: bool) -> Self {
        self.proxy_protocol = on;
        self
    }

    /// Serves `html` on a plain `GET` of the WebSocket path, instead of 426.
    ///
    /// ```
    /// let config = wssd::Config::default()
    ///     .page("<script>new WebSocket(location.href.replace('http', 'ws'))</script>");
    /// ```
    pub fn page(mut self, html: impl Into<Arc<str>>) -> Self {
        self.page = Some(html.into());
        self
    }

    /// Accepts a client's permessage-deflate offer (RFC 7692), with the default threshold
    /// and level of [`Deflate`](crate::Deflate); `false` declines every offer.
    ///
    /// ```
    /// let config = wssd::Config::default().permessage_deflate(true); // RFC 7692, when offered
    /// ```
    pub fn permessage_deflate(mut self, on: bool) -> Self {
        self.deflate.enabled = on;
        self
    }

    /// Sets the per-connection limits.
    ///
    /// ```
    /// let mut limits = wssd::Limits::default();
    /// limits.max_message_size = 64 << 10; // bytes
    /// let config = wssd::Config::default().limits(limits);
    /// ```
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
}

/// Per-connection limits, each enforced by the core ([`Acceptor::accept`](crate::Acceptor::accept)
/// and [`Accepted::serve`](crate::Accepted::serve)). Every field is public; start from
/// `Limits::default()` and set what you change (new limits may be added in later versions):
///
/// ```
/// let mut limits = wssd::Limits::default();
/// limits.max_message_size = 64 << 10; // bytes
/// limits.idle_timeout = std::time::Duration::from_secs(30);
/// let config = wssd::Config::default().limits(limits);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// The longest the PROXY header, the TLS handshake and the HTTP upgrade may take
    /// together, enforced by [`Acceptor::accept`](crate::Acceptor::accept). Default 10 s: a phone on a poor network
    /// finishes well inside it, and a slowloris client is cut off.
    pub handshake_timeout: Duration,
    /// The largest opening-handshake request head (request line plus headers), in bytes.
    /// Larger gets HTTP 431. Default 16 KiB: a browser's handshake with cookies is a few
    /// KiB, and nginx's default is 4 buffers of 8 KiB for the whole head.
    pub max_request_header_bytes: usize,
    /// The largest incoming message, in bytes, after reassembling its frames
    /// (RFC 6455 section 5.4). A larger one closes the connection with 1009
    /// (message too big). Default 1 MiB: chat, push and game messages are far
    /// smaller, and a small box must not be made to buffer much for one client.
    pub max_message_size: usize,
    /// The most frames one incoming message may be fragmented into (RFC 6455 section 5.4).
    /// More closes the connection with 1009. Default 1024: browsers send one frame per
    /// message, and other clients fragment at kilobytes; this defeats floods of 1-byte
    /// fragments (the attack of GHSA-96hv-2xvq-fx4p against Node's `ws`).
    pub max_fragments: usize,
    /// The largest incoming frame payload, in bytes (RFC 6455 section 5.2).
    /// A larger one closes the connection with 1009. Default 1 MiB, as one
    /// message is usually one frame.
    pub max_frame_size: usize,
    /// The most read from a connection at a time, in bytes, plus 14 (a frame's longest
    /// header, RFC 6455 section 5.2, so that a message of this size takes one read). Reads
    /// land in one buffer of that size per thread, shared by the connections that thread serves, and frames are
    /// parsed where they land: a connection holds bytes of its own only while a frame is
    /// partly received (at most that frame, bounded by `max_frame_size`), so an idle
    /// connection holds no read buffer. Over TLS the ciphertext lands likewise in a
    /// buffer per thread (this size plus one largest record, 18 KiB, RFC 8446 section 5.2),
    /// and a connection holds ciphertext only while a record is partly received.
    /// Default 16 KiB: one TLS record, one read for a 16 KiB message. A frame that does not
    /// fit is read into a buffer of its own, of its size, where its payload is unmasked and
    /// handed to the message without a copy. A WebSocket from
    /// [`Accepted::into_parts`](crate::Accepted::into_parts) reads the same way.
    pub read_buffer_size: usize,
    /// Outgoing frames wait up to this many bytes (headers and payloads) before a write
    /// to the stream; a flush writes whatever is there. Each frame is its header and the
    /// message's own payload: up to 2 KiB in all leave as one plain write of a copy,
    /// more as one vectored write, not copied. Over TLS, what one write takes (up to 64
    /// KiB) is sealed into records in a buffer per thread and written at once; only what
    /// the socket does not take stays with the connection.
    /// Default 16 KiB, one TLS record: queued messages go out corked into as few records
    /// as possible.
    pub write_buffer_size: usize,
    /// The outgoing queue of each connection, in bytes of payload. When it is full,
    /// [`Connection::try_send`](crate::Connection::try_send) fails with
    /// [`SendError::Full`](crate::SendError::Full) and
    /// [`Connection::send`](crate::Connection::send) waits: nothing is dropped
    /// silently. One message larger than the whole queue is still accepted when the
    /// queue is empty. Default 256 KiB: seconds of chat or push traffic for one client,
    /// and a bound on what a client that stops reading can cost.
    pub send_queue_bytes: usize,
    /// How often the server sends a ping (RFC 6455 section 5.5.2), in seconds.
    /// Default 25 s: under the 30 to 60 s idle timeouts of typical proxies, NAT
    /// gateways and mobile networks, so a quiet connection stays open. Zero disables pings.
    pub ping_interval: Duration,
    /// A connection from which nothing (no message, no ping, no pong) arrived for this long
    /// is closed with 1001 (going away), in seconds. Checked at each ping (every
    /// `idle_timeout` when pings are off); arrivals are noted at the next check, not with
    /// a clock read per frame, so it acts within two intervals after it expires. Every write to a client (queued messages, pings, pongs) is given this
    /// long too; a client that reads nothing for that long is dropped and its memory freed.
    /// Default 60 s: two missed pongs.
    pub idle_timeout: Duration,
    /// How long the closing handshake may take (RFC 6455 section 7.1.2): writing our
    /// close frame and waiting for the peer's. Past it the TCP connection is dropped.
    /// Default 5 s: a live client answers within a round trip; a gone or stalled one
    /// must not hold its memory.
    pub close_timeout: Duration,
    /// How long a session stops reading while a [`Hub`](crate::Hub) send made from its
    /// [`Handler::on_message`](crate::Handler::on_message) waits for a recipient's full
    /// queue. A recipient that makes no room within it (counted from when the write it is
    /// stuck in began, so several stalled recipients cost one wait, not one each) is closed
    /// with 1013 (try again later); one that does gets the message, late but not lost. Default 5 s: a burst
    /// slows its sender instead of disconnecting fast readers, and a recipient that
    /// stays behind for its own reasons cannot stall its group for long.
    pub backpressure_timeout: Duration,
    /// The clock the timeouts above are measured by: the handshake deadline, the
    /// heartbeat, the idle timeout and the deadlines of writes and of the close (not the
    /// backpressure timeout, which spans two connections). Default
    /// [`Clock::system`](crate::Clock::system); a test sets [`Clock::manual`](crate::Clock::manual)
    /// to move time itself.
    pub clock: crate::Clock,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake_timeout: Duration::from_secs(10),
            max_request_header_bytes: 16 << 10,
            max_message_size: 1 << 20,
            max_frame_size: 1 << 20,
            max_fragments: 1024,
            read_buffer_size: 16 << 10,
            write_buffer_size: 16 << 10,
            send_queue_bytes: 256 << 10,
            ping_interval: Duration::from_secs(25),
            idle_timeout: Duration::from_secs(60),
            close_timeout: Duration::from_secs(5),
            backpressure_timeout: Duration::from_secs(5),
            clock: crate::Clock::system(),
        }
    }
}
