//! The accept path: PROXY header, first-byte check, TLS accept, then the RFC 6455
//! opening handshake, over any stream.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use futures_io::{AsyncRead, AsyncWrite};
use futures_lite::{AsyncReadExt, AsyncWriteExt};

use crate::WebSocket;
use crate::config::Config;
use crate::forwarded;
use crate::handshake::{self, Decision, Refusal};
use crate::request::Request;
use crate::sniff::{self, FirstByte, ProxyHeaderError};
use crate::transport::{MaybeTls, Transport};

/// Why a connection did not become a WebSocket.
#[derive(Debug)]
#[non_exhaustive]
pub enum AcceptError {
    /// The TLS handshake failed: not TLS, an old version (below 1.2), no shared cipher suite,
    /// or no certificate to serve.
    Tls(io::Error),
    /// The client failed the TLS handshake on the certificate: it sent a `bad_certificate`,
    /// `unknown_ca`, `certificate_unknown`, `certificate_expired` or `unsupported_certificate`
    /// alert (RFC 8446 section 6.2), or closed or reset the connection during the handshake, as
    /// OpenSSL-based clients (Python, curl) do when they reject a certificate.
    CertificateRejected {
        /// The TLS error rustls reported.
        error: io::Error,
        /// What [`Config::certificate_notes`] knew to be wrong with the certificates: the
        /// likely cause.
        likely: Option<Arc<str>>,
    },
    /// An ACME server connected for the TLS-ALPN-01 challenge (ALPN `acme-tls/1`,
    /// RFC 8737): the challenge certificate was served and the connection closed. Only with
    /// a configuration from [`tls::resolver_config`](crate::tls::resolver_config) that
    /// answers challenges.
    AcmeChallenge {
        /// The domain it validated (SNI).
        name: Option<String>,
    },
    /// The request asked for a path other than the configured one; HTTP 404 was sent.
    WrongPath {
        /// The path the client asked for.
        path: String,
    },
    /// A plain HTTP request (no `Upgrade: websocket`) for the WebSocket path: answered
    /// 426 Upgrade Required, or with [`Config::page`] when one is set.
    NotWebSocket {
        /// Whether the test page was served.
        page: bool,
    },
    /// An invalid opening handshake (RFC 6455 section 4.2.1), answered with 400, 405,
    /// 426 (wrong version) or 431 (headers over [`Limits::max_request_header_bytes`](crate::Limits::max_request_header_bytes)).
    BadRequest {
        /// The HTTP status sent.
        status: u16,
        /// What was wrong, in plain words (also the response body).
        reason: String,
    },
    /// The connection failed or closed before the handshake finished.
    Io(io::Error),
    /// `proxy_protocol` is on and the trusted peer sent no valid PROXY protocol header.
    ProxyHeader(ProxyHeaderError),
    /// Plain HTTP (`ws://` or `http://`) arrived on a TLS port; HTTP 400 was sent, saying to use `wss://`.
    PlainHttpOnTlsPort,
    /// A TLS ClientHello arrived on a plain `ws://` port.
    TlsOnPlainPort,
    /// The client offered only TLS 1.1 or older (its ClientHello's version is below 1.2,
    /// RFC 5246 appendix E); a fatal alert was sent. wssd speaks TLS 1.2 and 1.3 only.
    OldTls {
        /// What the client offered, such as `"TLS 1.0"`.
        offered: &'static str,
        /// The TLS error rustls reported.
        error: io::Error,
    },
    /// The PROXY header, TLS and opening handshakes took longer than
    /// [`Limits::handshake_timeout`](crate::Limits::handshake_timeout): the connection was
    /// dropped (a slow, stalled or slowloris client).
    Timeout {
        /// The limit that passed.
        after: std::time::Duration,
    },
}

impl fmt::Display for AcceptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AcceptError::Tls(e) => write!(f, "TLS handshake failed: {e}{}", tls_hint(e)),
            AcceptError::CertificateRejected { error, likely } => {
                if hung_up(error) {
                    write!(
                        f,
                        "TLS handshake failed: the client closed the connection during the TLS handshake; most often it rejected the certificate (OpenSSL-based clients such as Python and curl close without saying why)"
                    )?;
                } else {
                    write!(
                        f,
                        "TLS handshake failed: the client rejected the certificate ({error})"
                    )?;
                }
                match likely {
                    Some(note) => write!(f, ": the likely cause: {note}"),
                    None => write!(
                        f,
                        ": it does not trust the certificate's CA, or it connected by a name the certificate does not cover; `wssd probe wss://HOST:PORT/PATH` shows what a client sees"
                    ),
                }
            }
            AcceptError::AcmeChallenge { name } => write!(
                f,
                "answered the ACME server's TLS-ALPN-01 challenge for {}",
                crate::text::escape(name.as_deref().unwrap_or("(no name)"))
            ),
            AcceptError::WrongPath { path } => {
                write!(
                    f,
                    "no WebSocket at path \"{}\": answered 404 (check the client's URL against the server's path: Config::path)",
                    crate::text::escape(path)
                )
            }
            AcceptError::NotWebSocket { page: false } => write!(
                f,
                "plain HTTP request without `Upgrade: websocket`: answered 426 (a browser tab, a health check, or a proxy that drops the Upgrade header)"
            ),
            AcceptError::NotWebSocket { page: true } => write!(f, "served the page (Config::page)"),
            AcceptError::BadRequest { status, reason } => {
                write!(
                    f,
                    "invalid WebSocket opening handshake: answered {status}: {reason}"
                )
            }
            AcceptError::Io(e) => write!(f, "connection failed before the handshake finished: {e}"),
            AcceptError::ProxyHeader(e) => {
                write!(
                    f,
                    "{e}: closed (send PROXY protocol from the balancer, or turn it off: Config::proxy_protocol)"
                )
            }
            AcceptError::PlainHttpOnTlsPort => write!(
                f,
                "client sent plain HTTP to a TLS port: answered 400 (the client should use wss://, not ws:// or http://)"
            ),
            AcceptError::TlsOnPlainPort => write!(
                f,
                "client started TLS on a plain ws port: use ws://, or serve TLS on this port (Config::tls)"
            ),
            AcceptError::Timeout { after } => write!(
                f,
                "opening handshake not finished after {} s: closed (slow or stalled client)",
                crate::text::Seconds(*after)
            ),
            AcceptError::OldTls { offered, .. } => write!(
                f,
                "TLS handshake refused: the client offers only {offered}; wssd requires TLS 1.2 or 1.3, as WeChat does: update the client"
            ),
        }
    }
}

impl std::error::Error for AcceptError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AcceptError::Tls(e)
            | AcceptError::OldTls { error: e, .. }
            | AcceptError::CertificateRejected { error: e, .. } => Some(e),
            AcceptError::Io(e) => Some(e),
            AcceptError::ProxyHeader(e) => Some(e),
            AcceptError::WrongPath { .. }
            | AcceptError::NotWebSocket { .. }
            | AcceptError::BadRequest { .. }
            | AcceptError::PlainHttpOnTlsPort
            | AcceptError::Timeout { .. }
            | AcceptError::AcmeChallenge { .. }
            | AcceptError::TlsOnPlainPort => None,
        }
    }
}

/// Turns accepted streams into WebSockets: the TLS accept, when configured, then the opening handshake.
///
/// It holds no runtime: call [`Acceptor::accept`] from any executor's task, with
/// any `futures_io` stream (a smol or async-std `TcpStream`, a tokio one through
/// `tokio_util::compat`, or an in-memory pipe). Cheap to clone.
///
/// ```
/// # futures_lite::future::block_on(async {
/// let acceptor = wssd::Acceptor::new(wssd::Config::default().path("/wss"));
/// let listener = smol::net::TcpListener::bind("127.0.0.1:0").await?;
/// # let addr = listener.local_addr()?;
/// # let client = smol::spawn(async move {
/// #     let tcp = smol::net::TcpStream::connect(addr).await.unwrap();
/// #     async_tungstenite::client_async(format!("ws://{addr}/wss"), tcp).await.unwrap()
/// # });
/// let (stream, peer) = listener.accept().await?;
/// let accepted = acceptor.accept(stream, peer).await?;
/// assert_eq!(accepted.request().path, "/wss");
/// // Usually: accepted.serve(&handler).await. Here, the raw WebSocket:
/// let (mut ws, _request) = accepted.into_parts();
/// ws.close(None).await?; // writes the 101 answer first, then the close frame
/// # drop(client.await);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct Acceptor {
    config: Arc<Config>,
}

impl Acceptor {
    /// Makes an acceptor for `config`.
    ///
    /// ```
    /// let acceptor = wssd::Acceptor::new(wssd::Config::default().path("/wss"));
    /// let for_another_task = acceptor.clone(); // cheap: the configuration is shared
    /// ```
    pub fn new(config: Config) -> Self {
        Acceptor {
            config: Arc::new(config),
        }
    }

    /// The configuration this acceptor applies.
    ///
    /// ```
    /// let acceptor = wssd::Acceptor::new(wssd::Config::default().path("/wss"));
    /// assert_eq!(acceptor.config().path.as_deref(), Some("/wss"));
    /// ```
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Accepts one connection: the PROXY header (when configured), TLS (when configured),
    /// then the WebSocket opening handshake (RFC 6455 section 4.2), all within
    /// [`Limits::handshake_timeout`](crate::Limits::handshake_timeout).
    ///
    /// Safe by default: the handshake timeout is applied here, and the returned
    /// [`Accepted`] carries this acceptor's limits to [`Accepted::serve`], which enforces
    /// the message, frame and fragment limits, the send queue, the heartbeat and the idle
    /// timeout. No timer of your own is needed, on any runtime.
    ///
    /// The `101 Switching Protocols` answer is written on the first read, write or flush
    /// of the WebSocket ([`Accepted::serve`] flushes it right after
    /// [`Handler::on_open`](crate::Handler::on_open)), so the server registers a connection
    /// before the client knows it is open.
    ///
    /// `peer_addr` is the TCP peer's address; it is reported in [`Request::peer_addr`].
    ///
    /// # Errors
    /// [`AcceptError::Timeout`] when the whole handshake takes longer than
    /// [`Limits::handshake_timeout`](crate::Limits::handshake_timeout) (a slowloris client),
    /// [`AcceptError::Tls`] when the TLS handshake fails, [`AcceptError::OldTls`] when
    /// the client offers only TLS 1.1 or older, [`AcceptError::WrongPath`] after answering 404,
    /// [`AcceptError::NotWebSocket`] (426) for a request without `Upgrade: websocket`,
    /// [`AcceptError::BadRequest`] for an invalid opening handshake, [`AcceptError::Io`]
    /// when the connection fails, [`AcceptError::ProxyHeader`] for a missing PROXY header,
    /// and [`AcceptError::PlainHttpOnTlsPort`] or [`AcceptError::TlsOnPlainPort`] for the wrong port.
    ///
    /// ```
    /// smol::block_on(async {
    ///     let listener = smol::net::TcpListener::bind("127.0.0.1:0").await?;
    ///     # let addr = listener.local_addr()?;
    ///     # smol::spawn(async move {
    ///     #     let t = smol::net::TcpStream::connect(addr).await.unwrap();
    ///     #     let _ = async_tungstenite::client_async("ws://localhost/", t).await;
    ///     # }).detach();
    ///     let acceptor = wssd::Acceptor::new(wssd::Config::default());
    ///     let (stream, peer) = listener.accept().await?;
    ///     match acceptor.accept(stream, peer).await {
    ///         Ok(accepted) => println!("{} asked for {}", peer, accepted.request().path),
    ///         Err(e) => println!("{peer}: {e}"), // names the cause: a wrong port, path or timeout
    ///     }
    ///     Ok::<(), std::io::Error>(())
    /// })?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub async fn accept<S>(
        &self,
        stream: S,
        peer_addr: SocketAddr,
    ) -> Result<Accepted<S>, AcceptError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let (limit, clock) = (
            self.config.limits.handshake_timeout,
            self.config.limits.clock,
        );
        let timeout = async {
            clock.after(limit).await;
            Err(AcceptError::Timeout { after: limit })
        };
        let (transport, read, request) =
            futures_lite::future::or(self.handshake(stream, peer_addr), timeout).await?;
        Ok(Accepted {
            id: crate::session::next_id(),
            transport,
            read,
            request,
            limits: self.config.limits,
        })
    }

    /// The accept path itself, without the timeout.
    async fn handshake<S>(
        &self,
        stream: S,
        peer_addr: SocketAddr,
    ) -> Result<(Transport<S>, Vec<u8>, Request), AcceptError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let (stream, mut buf, proxied) = self.sniff(stream, peer_addr).await?;
        let (stream, tls) = match &self.config.tls {
            None => (MaybeTls::Plain(stream), None),
            Some(tls) => {
                let old = old_tls_version(&buf);
                let hello = std::mem::take(&mut buf);
                let (mut tls, info) = crate::tls_stream::accept(tls.clone(), stream, hello)
                    .await
                    .map_err(|error| match old {
                        Some(offered) => AcceptError::OldTls { offered, error },
                        None if rejected_certificate(&error) => AcceptError::CertificateRejected {
                            error,
                            likely: self.config.certificate_notes.get(),
                        },
                        None => AcceptError::Tls(error),
                    })?;
                if info.alpn.as_deref().map(str::as_bytes) == Some(crate::tls::ACME_TLS_ALPN) {
                    let _ = futures_lite::AsyncWriteExt::close(&mut tls).await;
                    return Err(AcceptError::AcmeChallenge { name: info.sni });
                }
                (MaybeTls::Tls(Box::new(tls)), Some(info))
            }
        };
        let mut stream = Transport::new(stream);

        // The request head: `buf` may hold its start already (plain ws).
        let limits = &self.config.limits;
        let (head_len, head) = loop {
            match handshake::parse_head(&buf) {
                Ok(Some(parsed)) => break parsed,
                Ok(None) if buf.len() < limits.max_request_header_bytes => {
                    read_more(&mut stream, &mut buf, limits.max_request_header_bytes).await?;
                }
                Ok(None) => {
                    let why = format!(
                        "Request headers over {} bytes (Limits::max_request_header_bytes)",
                        limits.max_request_header_bytes
                    );
                    let answer = handshake::Answer {
                        status: 431u16.try_into().expect("a valid status"),
                        headers: Vec::new(),
                        content_type: "text/plain; charset=utf-8",
                        body: format!("{why}\n"),
                    };
                    return Err(
                        refuse(&mut stream, answer, Refusal::Invalid(why), "", false).await,
                    );
                }
                Err(answer) => {
                    let why = answer.body.trim_end().to_owned();
                    return Err(
                        refuse(&mut stream, answer, Refusal::Invalid(why), "", false).await,
                    );
                }
            }
        };
        let peer_ip = proxied.map_or(peer_addr.ip(), |source| source.ip());
        let trusted = forwarded::is_trusted(peer_ip, &self.config.trusted_proxies);
        let decision = handshake::decide(&self.config, &head, tls.is_some(), trusted);
        let (response, subprotocol, deflate) = match decision {
            Decision::Upgrade {
                response,
                subprotocol,
                deflate,
            } => (response, subprotocol, deflate),
            Decision::Refuse(answer, why) => {
                let head_request = head.method == "HEAD";
                return Err(refuse(&mut stream, answer, why, &head.path, head_request).await);
            }
        };
        // The 101 goes out with the first write, flush or read of the WebSocket, so that
        // `Handler::on_open` runs before the client learns it is connected.
        stream.defer(response);

        let request = Request {
            client_ip: forwarded::client_ip(peer_ip, &head.headers, &self.config.trusted_proxies),
            proxied: proxied.is_some() || (trusted && forwarded::names_a_client(&head.headers)),
            path: head.path,
            query: head.query,
            headers: head.headers,
            peer_addr,
            subprotocol,
            tls,
            deflate,
        };
        // Frames the client sent right behind its request are not lost: the frame codec
        // reads them first.
        buf.drain(..head_len);
        Ok((stream, buf, request))
    }

    /// Reads the PROXY protocol header (when configured, from trusted peers) and the
    /// first byte, and turns away TLS on a plain port and plain HTTP on a TLS port.
    async fn sniff<S>(
        &self,
        mut stream: S,
        peer_addr: SocketAddr,
    ) -> Result<(S, Vec<u8>, Option<SocketAddr>), AcceptError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut buf = Vec::new();
        let mut proxied = None;
        if self.config.proxy_protocol
            && forwarded::is_trusted(peer_addr.ip(), &self.config.trusted_proxies)
        {
            let header = loop {
                read_more(&mut stream, &mut buf, sniff::V2_MAX).await?;
                if let Some(header) =
                    sniff::parse_proxy_header(&buf).map_err(AcceptError::ProxyHeader)?
                {
                    break header;
                }
            };
            buf.drain(..header.len);
            proxied = header.source;
        }
        if buf.is_empty() {
            read_more(&mut stream, &mut buf, sniff::V2_MAX).await?;
        }
        match (sniff::classify(buf[0]), self.config.tls.is_some()) {
            (FirstByte::Http, true) => {
                let answer = self.wrong_port_answer(&buf);
                // Best effort: the client may be gone already.
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.close().await;
                Err(AcceptError::PlainHttpOnTlsPort)
            }
            (FirstByte::Tls, false) => Err(AcceptError::TlsOnPlainPort),
            _ => Ok((stream, buf, proxied)),
        }
    }

    /// HTTP 400 for plain HTTP on a TLS port, naming the `wss://` URL to use.
    fn wrong_port_answer(&self, request_start: &[u8]) -> String {
        let host = host_header(request_start).unwrap_or("HOST:PORT");
        let path = self.config.path.as_deref().unwrap_or("/");
        let body = format!("This port speaks TLS: connect with wss://{host}{path}\n");
        format!(
            "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    }
}

/// The version a ClientHello offers when it is below TLS 1.2: its `client_version`
/// (RFC 5246 section 7.4.1.2), at byte 9 of the first record. TLS 1.2 and 1.3 clients
/// both send 3.3 there.
fn old_tls_version(hello: &[u8]) -> Option<&'static str> {
    if hello.len() < 11 || hello[0] != 0x16 || hello[5] != 0x01 {
        return None;
    }
    match (hello[9], hello[10]) {
        (3, 2) => Some("TLS 1.1"),
        (3, 1) => Some("TLS 1.0"),
        (3, 0) => Some("SSL 3.0"),
        (major, _) if major < 3 => Some("SSL 2"),
        _ => None,
    }
}

/// A connection that finished its opening handshake: the WebSocket, the request facts,
/// and the limits of the [`Acceptor`] that accepted it. The `101` is not sent yet.
///
/// [`Accepted::serve`] runs it with a [`Handler`](crate::Handler) under those limits;
/// [`Accepted::into_parts`] hands over the raw WebSocket to drive yourself (its message and
/// frame limits still hold; the heartbeat, idle timeout and send queue are then yours).
#[derive(Debug)]
pub struct Accepted<S> {
    id: crate::ConnectionId,
    transport: Transport<S>,
    /// Bytes that came behind the request: the first frames.
    read: Vec<u8>,
    request: Request,
    limits: crate::Limits,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Accepted<S> {
    /// The facts of the request: path, query, headers, client IP, subprotocol, TLS.
    ///
    /// ```
    /// # let accepted = include!("doc_accepted.rs");
    /// assert_eq!(accepted.request().path, "/chat");
    /// ```
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// The limits the connection is served under (the [`Acceptor`]'s).
    ///
    /// ```
    /// # let accepted = include!("doc_accepted.rs");
    /// assert_eq!(accepted.limits().max_message_size, 1 << 20); // the acceptor's, by default
    /// ```
    pub fn limits(&self) -> &crate::Limits {
        &self.limits
    }

    /// The id the connection has once served (its [`Connection::id`](crate::Connection::id)).
    ///
    /// ```
    /// # let accepted = include!("doc_accepted.rs");
    /// let id = accepted.id(); // the id its Connection will have in on_open
    /// ```
    pub fn id(&self) -> crate::ConnectionId {
        self.id
    }

    /// Runs the connection until it closes, handing its messages to `handler`, under the
    /// accepting [`Acceptor`]'s [`Limits`](crate::Limits): message, frame and fragment
    /// sizes, the byte-bounded send queue, pings every `ping_interval`, the idle timeout,
    /// a deadline on every write, and the close timeout (RFC 6455 sections 5.5.2 and 7).
    ///
    /// Queued messages are written several per flush (corking): those queued while frames
    /// keep arriving leave together once no frame waits to be read.
    /// A protocol violation is answered with close code 1002, invalid UTF-8 in a text
    /// message with 1007, and a message or frame over the limits with 1009 (RFC 6455
    /// section 7.4.1); a connection silent for `idle_timeout` gets 1001. Returns what the
    /// session did; it never fails (errors are in [`SessionSummary::error`](crate::SessionSummary::error)).
    ///
    /// The future holds the connection's whole state (its size is part of the memory an
    /// idle connection costs, see the README's "Speed and footprint").
    ///
    /// ```
    /// # let accepted = include!("doc_accepted.rs");
    /// struct Echo;
    /// impl wssd::Handler for Echo {
    ///     fn on_message(&self, conn: &wssd::Connection, msg: wssd::Data) {
    ///         let _ = conn.try_send(msg);
    ///     }
    /// }
    /// # std::mem::drop(std::thread::spawn(move || {
    /// let summary = smol::block_on(accepted.serve(&Echo)); // until the connection ends
    /// println!("{} messages in, close code {:?}", summary.messages_in, summary.close_code);
    /// # }));
    /// ```
    pub fn serve<'a, H: crate::Handler + ?Sized>(
        self,
        handler: &'a H,
    ) -> impl std::future::Future<Output = crate::SessionSummary> + Send + 'a
    where
        S: 'a,
    {
        let deflate = self.request.deflate.is_some();
        let frames = crate::frames::Frames::new(self.transport, self.read, &self.limits, deflate);
        let mut request = self.request;
        request.headers = crate::handshake::kept_after_handshake(request.headers);
        crate::session::serve_as(self.id, frames, request, handler, &self.limits)
    }

    /// Chooses `name` as the subprotocol after all (RFC 6455 section 4.2.2), in place of
    /// [`Config::subprotocols`]' choice: the `101` then names it in `Sec-WebSocket-Protocol`
    /// and [`Request::subprotocol`] is `name`. For a decision made with I/O between
    /// [`Acceptor::accept`] and [`Accepted::serve`] (an app that picks the protocol).
    ///
    /// # Errors
    /// `InvalidInput` when the client did not offer `name` (a browser would fail the
    /// connection) or when the `101` went out already; nothing changes then.
    ///
    /// ```
    /// # let accepted = include!("doc_accepted.rs");
    /// let mut accepted = accepted;
    /// accepted.choose_subprotocol("chat")?; // the client offered it: the 101 will name it
    /// assert_eq!(accepted.request().subprotocol.as_deref(), Some("chat"));
    /// assert!(accepted.choose_subprotocol("mqtt").is_err()); // not offered
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn choose_subprotocol(&mut self, name: &str) -> io::Result<()> {
        if !self.request.offered_subprotocols().any(|p| p == name) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the client did not offer this subprotocol",
            ));
        }
        let Some(preamble) = self.transport.deferred_mut() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the 101 went out already",
            ));
        };
        let text = String::from_utf8_lossy(preamble);
        let mut lines: Vec<&str> = text
            .split("\r\n")
            .filter(|l| {
                !l.to_ascii_lowercase()
                    .starts_with("sec-websocket-protocol:")
            })
            .collect();
        // The head ends with an empty line: the new header goes before it.
        let end = lines.len().saturating_sub(2);
        let header = format!("Sec-WebSocket-Protocol: {name}");
        lines.insert(end, &header);
        *preamble = lines.join("\r\n").into_bytes();
        self.request.subprotocol = Some(name.to_owned());
        Ok(())
    }

    /// Refuses the connection after all, instead of the `101`: answers with HTTP `status`
    /// (400 to 599: 401 or 403 for a client the app does not let in, 503 when the app is
    /// unreachable) and `body` as `text/plain`, and closes. A browser's WebSocket then fails
    /// without ever opening (RFC 6455 section 4.1: any status but 101 fails the connection).
    ///
    /// For a decision that needs I/O of its own between [`Acceptor::accept`] and
    /// [`Accepted::serve`], such as asking an app whether this user may connect.
    ///
    /// # Errors
    /// `InvalidInput` for a status outside 400 to 599, or when the `101` went out already
    /// (the WebSocket was read or written through [`Accepted::into_parts`]); the I/O error when
    /// the answer cannot be written. Writing has the handshake's own deadline, `Limits::handshake_timeout`.
    ///
    /// ```
    /// # let accepted = include!("doc_accepted.rs");
    /// // The client gets 503 with this body; a browser's WebSocket never opens.
    /// smol::block_on(accepted.refuse(503, "full, try again in a minute"))?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub async fn refuse(mut self, status: u16, body: &str) -> io::Result<()> {
        let status = async_tungstenite::tungstenite::http::StatusCode::from_u16(status)
            .ok()
            .filter(|s| s.is_client_error() || s.is_server_error())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a refusal needs a status from 400 to 599",
                )
            })?;
        let mut body = body.to_owned();
        if !body.ends_with('\n') {
            body.push('\n');
        }
        let answer = handshake::Answer {
            status,
            headers: Vec::new(),
            content_type: "text/plain; charset=utf-8",
            body,
        };
        let transport = &mut self.transport;
        let Some(preamble) = transport.deferred_mut() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the 101 went out already",
            ));
        };
        *preamble = answer.to_bytes(false);
        let (limit, clock) = (self.limits.handshake_timeout, self.limits.clock);
        let write = async {
            transport.flush().await?;
            transport.close().await
        };
        futures_lite::future::or(write, async {
            clock.after(limit).await;
            Err(io::ErrorKind::TimedOut.into())
        })
        .await
    }

    /// The WebSocket and the request facts, to drive the WebSocket yourself (a `Stream` of
    /// incoming [`Message`](crate::Message)s and a `Sink` of outgoing ones). It runs the same
    /// frame codec as [`Accepted::serve`], under the same message, frame and fragment limits,
    /// UTF-8 checks and permessage-deflate; the heartbeat, idle timeout and send queue are
    /// then yours. The `101` goes out with its first read, write or flush.
    ///
    /// ```
    /// # let accepted = include!("doc_accepted.rs");
    /// use futures_util::{SinkExt, StreamExt};
    /// let (mut ws, request) = accepted.into_parts(); // the 101 goes out with the first write
    /// # std::mem::drop(std::thread::spawn(move || smol::block_on(async move {
    /// while let Some(Ok(msg)) = ws.next().await {
    ///     if ws.send(msg).await.is_err() { break } // same codec and limits as serve
    /// }
    /// # })));
    /// ```
    pub fn into_parts(self) -> (WebSocket<S>, Request) {
        let deflate = self.request.deflate;
        let frames =
            crate::frames::Frames::new(self.transport, self.read, &self.limits, deflate.is_some());
        (WebSocket::new(frames, deflate), self.request)
    }
}

/// Whether a TLS handshake failed on the certificate: the client said so with an alert,
/// or closed the connection mid-handshake (OpenSSL-based clients do that on a rejection).
fn rejected_certificate(e: &io::Error) -> bool {
    use rustls::{AlertDescription as Alert, Error};
    hung_up(e)
        || matches!(
            e.get_ref().and_then(|e| e.downcast_ref::<Error>()),
            Some(Error::AlertReceived(
                Alert::BadCertificate
                    | Alert::UnknownCA
                    | Alert::CertificateUnknown
                    | Alert::CertificateExpired
                    | Alert::UnsupportedCertificate
            ))
        )
}

/// Whether the client closed the connection mid-handshake, or reset it: one that hangs up
/// with the server's handshake bytes unread resets (RST) rather than closes (FIN).
fn hung_up(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
    )
}

/// A plain-words explanation of the common TLS handshake failures.
fn tls_hint(e: &io::Error) -> &'static str {
    use rustls::{Error, PeerIncompatible};
    match e.get_ref().and_then(|e| e.downcast_ref::<Error>()) {
        Some(Error::PeerIncompatible(
            PeerIncompatible::Tls12NotOffered
            | PeerIncompatible::SupportedVersionsExtensionRequired,
        )) => {
            " (the client offers only TLS 1.1 or older; wssd requires TLS 1.2 or 1.3, as WeChat does: update the client)"
        }
        Some(Error::InvalidMessage(_)) => {
            " (the client did not speak TLS: is it using ws:// or http:// on this wss:// port?)"
        }
        Some(Error::General(detail)) if detail.contains("no server certificate") => {
            " (no certificate to serve for the name the client asked for: with ACME, the first certificate is not issued yet; the log says how the order goes)"
        }
        _ => "",
    }
}

/// Reads at least one more byte into `buf`, keeping it at most `cap` bytes long.
async fn read_more<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    cap: usize,
) -> Result<(), AcceptError> {
    if buf.len() >= cap {
        return Err(AcceptError::ProxyHeader(ProxyHeaderError(
            "longer than any valid header",
        )));
    }
    let mut chunk = [0u8; 1024];
    let want = chunk.len().min(cap - buf.len());
    let n = stream
        .read(&mut chunk[..want])
        .await
        .map_err(AcceptError::Io)?;
    if n == 0 {
        let closed = io::Error::new(io::ErrorKind::UnexpectedEof, "closed by the client");
        return Err(AcceptError::Io(closed));
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

/// Writes `answer`, closes the stream, and says why in an [`AcceptError`].
async fn refuse<W: AsyncWrite + Unpin>(
    stream: &mut W,
    answer: handshake::Answer,
    why: Refusal,
    path: &str,
    head_request: bool,
) -> AcceptError {
    // Best effort: the client may be gone already.
    let _ = stream.write_all(&answer.to_bytes(head_request)).await;
    let _ = stream.close().await;
    match why {
        Refusal::WrongPath => AcceptError::WrongPath {
            path: path.to_owned(),
        },
        Refusal::NotWebSocket { page } => AcceptError::NotWebSocket { page },
        Refusal::Invalid(reason) => AcceptError::BadRequest {
            status: answer.status.as_u16(),
            reason,
        },
    }
}

/// The `Host` header's value in the start of an HTTP request, if it is there and is a plain host\[:port\].
fn host_header(request: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(request).ok()?;
    let value = text.split("\r\n").skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("host").then(|| value.trim())
    })?;
    let plain = |c: char| c.is_ascii_alphanumeric() || "-.:[]".contains(c);
    (!value.is_empty() && value.chars().all(plain)).then_some(value)
}
