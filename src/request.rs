//! The facts of one accepted request: [`Request`], and what TLS negotiated, [`TlsInfo`].

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use async_tungstenite::tungstenite::http::HeaderMap;
use rustls::{self, ProtocolVersion};

/// The facts of one accepted request: what the client asked for, and how it connected.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Request {
    /// The request path, without the query (`/wss`).
    pub path: String,
    /// The query string, without the `?`, if there was one.
    pub query: Option<String>,
    /// The request headers of the opening handshake (RFC 6455 section 4.1).
    ///
    /// Once the connection is served ([`Connection::request`](crate::Connection::request)),
    /// those the handshake itself consumed are left out: `Connection`, `Upgrade`,
    /// `Sec-WebSocket-Key`, `Sec-WebSocket-Version` and `Sec-WebSocket-Extensions` (their
    /// outcome is the connection, [`Request::subprotocol`] and
    /// [`Request::permessage_deflate`]), so that an open connection holds only headers that
    /// say something about its client. Before, in [`Accepted::request`](crate::Accepted::request)
    /// and on admission ([`Handler::admit`](crate::Handler::admit)), all are there.
    pub headers: HeaderMap,
    /// The TCP peer's address. Behind a proxy, this is the proxy.
    pub peer_addr: SocketAddr,
    /// The client's IP address: from the PROXY protocol header and the `Forwarded`,
    /// `X-Forwarded-For` or `X-Real-IP` headers when they come from a trusted proxy
    /// (see [`crate::forwarded`]), else the TCP peer's.
    pub client_ip: IpAddr,
    /// Whether the client came through a proxy that said who it is: a PROXY protocol
    /// header, or `Forwarded`, `X-Forwarded-For` or `X-Real-IP` from a trusted proxy.
    /// Then [`Request::peer_addr`] is the proxy's address, even when [`Request::client_ip`]
    /// is the same IP (a proxy on the client's machine).
    pub proxied: bool,
    /// The subprotocol chosen and echoed in `Sec-WebSocket-Protocol` (RFC 6455 section 4.2.2), if any.
    pub subprotocol: Option<String>,
    /// TLS facts, when TLS was terminated here.
    pub tls: Option<TlsInfo>,
    /// What permessage-deflate terms were agreed, if any.
    pub(crate) deflate: Option<crate::deflate::Agreed>,
}

impl Request {
    /// Whether this connection agreed on permessage-deflate (RFC 7692): its messages may
    /// arrive compressed (inflated before your handler sees them), and messages to it of
    /// [`Deflate::min_size`](crate::Deflate::min_size) bytes or more are sent compressed.
    ///
    /// ```
    /// # let conn = include!("doc_connection.rs");
    /// assert!(!conn.request().permessage_deflate()); // off unless Config::permessage_deflate
    /// ```
    pub fn permessage_deflate(&self) -> bool {
        self.deflate.is_some()
    }

    /// The subprotocols the client offered in `Sec-WebSocket-Protocol`, most preferred
    /// first (RFC 6455 section 4.1); [`Request::subprotocol`] is the one chosen, if any.
    ///
    /// ```
    /// # let conn = include!("doc_connection.rs");
    /// assert_eq!(conn.request().offered_subprotocols().count(), 0); // this client offered none
    /// ```
    pub fn offered_subprotocols(&self) -> impl Iterator<Item = &str> {
        crate::handshake::offered_subprotocols(&self.headers)
    }
}

/// A TLS protocol version wssd speaks (RFC 8446, RFC 5246).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TlsVersion {
    /// TLS 1.2 (RFC 5246).
    Tls12,
    /// TLS 1.3 (RFC 8446).
    Tls13,
}

impl TlsVersion {
    /// `"TLSv1.2"` or `"TLSv1.3"`, as OpenSSL and nginx's `$ssl_protocol` write it.
    ///
    /// ```
    /// assert_eq!(wssd::TlsVersion::Tls13.as_str(), "TLSv1.3");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::Tls12 => "TLSv1.2",
            TlsVersion::Tls13 => "TLSv1.3",
        }
    }
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What TLS negotiated for one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsInfo {
    /// The protocol version.
    pub version: TlsVersion,
    /// The ALPN protocol agreed (RFC 7301), such as `http/1.1`; `None` when the client offered none.
    pub alpn: Option<String>,
    /// The host name the client sent in SNI (RFC 6066 section 3); `None` when it connected by IP address.
    pub sni: Option<String>,
}

/// What TLS negotiated on `conn`, whose client sent `sni`.
pub(crate) fn tls_info(conn: &rustls::CommonState, sni: Option<&str>) -> TlsInfo {
    let version = match conn.protocol_version() {
        Some(ProtocolVersion::TLSv1_3) => TlsVersion::Tls13,
        _ => TlsVersion::Tls12, // rustls negotiates nothing else
    };
    TlsInfo {
        version,
        alpn: conn
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
        sni: sni.map(str::to_owned),
    }
}
