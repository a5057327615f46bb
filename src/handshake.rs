//! The server side of the RFC 6455 opening handshake (section 4.2): parse the request
//! head, decide, and write the answer. Pure functions over bytes; the I/O is in `accept`.

use async_tungstenite::tungstenite::handshake::derive_accept_key;
use async_tungstenite::tungstenite::http::{
    HeaderMap, HeaderName, HeaderValue, StatusCode, header,
};

use crate::config::Config;

/// The most request headers accepted; more gets 431.
const MAX_HEADERS: usize = 64;

/// A parsed request head.
#[derive(Debug)]
pub(crate) struct Head {
    pub method: String,
    /// The HTTP minor version: `1` for HTTP/1.1, `0` for HTTP/1.0.
    pub version: u8,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
}

/// An HTTP response that ends the connection instead of upgrading it.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: StatusCode,
    /// Extra headers, such as `Upgrade: websocket` on a 426.
    pub headers: Vec<(&'static str, String)>,
    pub content_type: &'static str,
    pub body: String,
}

impl Answer {
    fn text(status: StatusCode, body: impl Into<String>) -> Self {
        let mut body = body.into();
        body.push('\n');
        Answer {
            status,
            headers: Vec::new(),
            content_type: "text/plain; charset=utf-8",
            body,
        }
    }

    /// The response, `Connection: close`, with its body, or without it when answering
    /// a `HEAD` request (RFC 9110 section 9.3.2: the same headers, no content).
    pub fn to_bytes(&self, head_request: bool) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status.as_u16(),
            self.status.canonical_reason().unwrap_or(""),
            self.content_type,
            self.body.len()
        );
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("\r\n");
        if !head_request {
            out.push_str(&self.body);
        }
        out.into_bytes()
    }
}

/// Parses the request head at the start of `buf`: `Ok(None)` while it is incomplete,
/// else its length and contents.
///
/// # Errors
/// The 400 or 431 [`Answer`] for a malformed head or too many headers.
pub(crate) fn parse_head(buf: &[u8]) -> Result<Option<(usize, Head)>, Answer> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Answer::text(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!("More than {MAX_HEADERS} request headers"),
            ));
        }
        Err(e) => {
            return Err(Answer::text(
                StatusCode::BAD_REQUEST,
                format!("Malformed HTTP request: {e}"),
            ));
        }
    };
    let target = req.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query.to_owned())),
        None => (target, None),
    };
    let mut map = HeaderMap::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes());
        let value = HeaderValue::from_bytes(h.value);
        match (name, value) {
            (Ok(name), Ok(value)) => {
                map.append(name, value);
            }
            _ => {
                let bad = format!("Malformed request header {:?}", h.name);
                return Err(Answer::text(StatusCode::BAD_REQUEST, bad));
            }
        }
    }
    let head = Head {
        method: req.method.unwrap_or_default().to_owned(),
        version: req.version.unwrap_or(0),
        path: path.to_owned(),
        query,
        headers: map,
    };
    Ok(Some((len, head)))
}

/// What to do with a complete request head.
#[derive(Debug)]
pub(crate) enum Decision {
    /// Answer 101 with these bytes; the chosen subprotocol, if any.
    Upgrade {
        response: Vec<u8>,
        subprotocol: Option<String>,
        deflate: Option<crate::deflate::Agreed>,
    },
    /// Answer this and close.
    Refuse(Answer, Refusal),
}

/// Why a request was not upgraded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    WrongPath,
    NotWebSocket { page: bool },
    Invalid(String),
}

/// Decides on a request head (RFC 6455 section 4.2.1), choosing the subprotocol (section 4.2.2).
/// `tls`: the connection is `wss://` here; `trusted`: the TCP peer is a trusted proxy,
/// whose forwarding headers say how the client reached it.
pub(crate) fn decide(config: &Config, head: &Head, tls: bool, trusted: bool) -> Decision {
    if !config.accepts_path(&head.path) {
        let ours = config.path.as_deref().unwrap_or("/");
        let below = if config.subpaths {
            " (or below it)"
        } else {
            ""
        };
        let answer = Answer::text(
            StatusCode::NOT_FOUND,
            format!(
                "No WebSocket at path \"{}\", the path this server received: connect to {ours}{below}",
                crate::text::escape(&head.path)
            ),
        );
        return Decision::Refuse(answer, Refusal::WrongPath);
    }
    let h = &head.headers;
    if !has_token(h, header::UPGRADE, "websocket") {
        if let Some(page) = &config.page
            && head.method == "GET"
        {
            let answer = Answer {
                status: StatusCode::OK,
                headers: vec![("Cache-Control", "no-store".into())],
                content_type: "text/html; charset=utf-8",
                body: page.to_string(),
            };
            return Decision::Refuse(answer, Refusal::NotWebSocket { page: true });
        }
        let origin = Origin::of(h, tls, trusted);
        let mut body = format!(
            "This is a WebSocket endpoint: connect with new WebSocket(\"{}://{}{}\").",
            origin.scheme, origin.host, head.path
        );
        if let Some(internal) = &origin.internal_host {
            body.push_str(&format!(
                " (The proxy in front sent Host {internal}, not the name the client used, and no \
                 X-Forwarded-Host: pass them with nginx's proxy_set_header Host $http_host; or \
                 Apache's ProxyPreserveHost On.)"
            ));
        }
        body.push_str(" Behind a proxy, a 426 here means the proxy dropped the Upgrade header.");
        let mut answer = Answer::text(StatusCode::UPGRADE_REQUIRED, body);
        answer.headers = vec![("Upgrade", "websocket".into())];
        return Decision::Refuse(answer, Refusal::NotWebSocket { page: false });
    }
    let invalid = |status, why: &str| {
        Decision::Refuse(Answer::text(status, why), Refusal::Invalid(why.to_owned()))
    };
    if head.method != "GET" {
        return invalid(
            StatusCode::METHOD_NOT_ALLOWED,
            "A WebSocket opening handshake is a GET request",
        );
    }
    if head.version < 1 {
        return invalid(
            StatusCode::BAD_REQUEST,
            "A WebSocket opening handshake needs HTTP/1.1 or newer (RFC 6455 section 4.2.1): a proxy in between may speak HTTP/1.0 (nginx: proxy_http_version 1.1)",
        );
    }
    for (name, shown) in [
        (header::SEC_WEBSOCKET_VERSION, "Sec-WebSocket-Version"),
        (header::SEC_WEBSOCKET_KEY, "Sec-WebSocket-Key"),
    ] {
        if h.get_all(&name).iter().count() > 1 {
            let why = format!("More than one {shown} header (RFC 6455 section 4.2.1)");
            return invalid(StatusCode::BAD_REQUEST, &why);
        }
    }
    if h.get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        let why = "Only WebSocket version 13 (RFC 6455) is spoken here";
        let mut answer = Answer::text(StatusCode::UPGRADE_REQUIRED, why);
        answer.headers = vec![("Sec-WebSocket-Version", "13".into())];
        return Decision::Refuse(answer, Refusal::Invalid(why.to_owned()));
    }
    if !has_token(h, header::CONNECTION, "upgrade") {
        return invalid(
            StatusCode::BAD_REQUEST,
            "No `Connection: Upgrade` header: a proxy in between may drop it (nginx: proxy_set_header Connection \"upgrade\")",
        );
    }
    if !h.contains_key(header::HOST) {
        return invalid(StatusCode::BAD_REQUEST, "No Host header");
    }
    let key = match h.get(header::SEC_WEBSOCKET_KEY) {
        Some(key) if is_key(key.as_bytes()) => key,
        _ => {
            return invalid(
                StatusCode::BAD_REQUEST,
                "Missing or malformed Sec-WebSocket-Key: it must be 16 random bytes in base64 (RFC 6455 section 4.2.1)",
            );
        }
    };
    let subprotocol = choose_subprotocol(&config.subprotocols, h);
    let mut response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
        derive_accept_key(key.as_bytes())
    );
    if let Some(p) = &subprotocol {
        response.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
    }
    let deflate = crate::deflate::negotiate(h, &config.deflate).map(|(agreed, answer)| {
        response.push_str(&format!("Sec-WebSocket-Extensions: {answer}\r\n"));
        agreed
    });
    response.push_str("\r\n");
    Decision::Upgrade {
        response: response.into_bytes(),
        subprotocol,
        deflate,
    }
}

/// The scheme and host the client used to reach this server, for the URL a 426 names.
struct Origin {
    scheme: &'static str,
    host: String,
    /// The `Host` a proxy sent when it is evidently its upstream's address, not the client's.
    internal_host: Option<String>,
}

impl Origin {
    /// From the connection and the `Host` header; from a trusted proxy, RFC 7239 `Forwarded`
    /// (`proto=`, `host=`), else `X-Forwarded-Proto` and `X-Forwarded-Host`, each the last
    /// (nearest) element. A trusted proxy that forwards the client's address but no
    /// scheme is taken to terminate TLS (wss), as Method 1's does.
    fn of(h: &HeaderMap, tls: bool, trusted: bool) -> Self {
        let plain = |v: &str| {
            let v = v.trim().trim_matches('"');
            let ok = !v.is_empty()
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-.:[]_".contains(c));
            ok.then(|| v.to_owned())
        };
        let host_header = h
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .and_then(plain);
        let mut origin = Origin {
            scheme: if tls { "wss" } else { "ws" },
            host: host_header.clone().unwrap_or_else(|| "HOST".into()),
            internal_host: None,
        };
        if !trusted || tls {
            return origin;
        }
        let last = |name: &str| {
            h.get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .last()
                .map(str::to_owned)
        };
        let forwarded = last("forwarded").unwrap_or_default();
        let param = |key: &str| {
            forwarded.split(';').find_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                k.trim().eq_ignore_ascii_case(key).then(|| v.to_owned())
            })
        };
        let proto = param("proto").or_else(|| last("x-forwarded-proto"));
        let host = param("host")
            .or_else(|| last("x-forwarded-host"))
            .and_then(|v| plain(&v));
        let proxied = crate::forwarded::names_a_client(h);
        match proto
            .as_deref()
            .map(|p| p.trim().trim_matches('"').to_ascii_lowercase())
        {
            Some(p) if p == "https" || p == "wss" => origin.scheme = "wss",
            Some(p) if p == "http" || p == "ws" => origin.scheme = "ws",
            _ if proxied => origin.scheme = "wss",
            _ => {}
        }
        match host {
            Some(host) => origin.host = host,
            None if proxied => {
                origin.internal_host = host_header;
                origin.host = "YOUR-DOMAIN".into();
            }
            None => {}
        }
        origin
    }
}

/// Whether `key` is 16 bytes in base64 (RFC 4648 section 4): 22 characters of the
/// alphabet, the last with its low 4 bits zero, then `==` (RFC 6455 section 4.2.1).
fn is_key(key: &[u8]) -> bool {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22].iter().all(|&c| value(c).is_some())
        && value(key[21]).is_some_and(|v| v & 0x0F == 0)
}

/// Whether any instance of header `name` lists `token` (case-insensitive, comma-separated).
fn has_token(headers: &HeaderMap, name: impl header::AsHeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The first of the client's offers in `Sec-WebSocket-Protocol` (its most preferred
/// first, as a browser sends them) that is among `ours` (RFC 6455 section 4.2.2).
fn choose_subprotocol(ours: &[String], headers: &HeaderMap) -> Option<String> {
    if ours.is_empty() {
        return None;
    }
    offered_subprotocols(headers)
        .find(|offer| ours.iter().any(|p| p == offer))
        .map(str::to_owned)
}

/// The subprotocols a client offers in `Sec-WebSocket-Protocol`, most preferred first
/// (RFC 6455 section 4.1).
pub(crate) fn offered_subprotocols(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
}

/// The headers an open connection keeps of its request: all but those the opening
/// handshake consumed (`Connection`, `Upgrade`, `Sec-WebSocket-Key`, `Sec-WebSocket-Version`
/// and `Sec-WebSocket-Extensions`, RFC 6455 section 4.1, whose outcome is the connection
/// itself, its subprotocol and [`Request::permessage_deflate`](crate::Request::permessage_deflate)),
/// in a map sized for what is left. The names and values are moved, not copied.
pub(crate) fn kept_after_handshake(headers: HeaderMap) -> HeaderMap {
    const CONSUMED: [HeaderName; 5] = [
        header::CONNECTION,
        header::UPGRADE,
        header::SEC_WEBSOCKET_KEY,
        header::SEC_WEBSOCKET_VERSION,
        header::SEC_WEBSOCKET_EXTENSIONS,
    ];
    let consumed = |name: &HeaderName| CONSUMED.contains(name);
    let left = headers.len()
        - CONSUMED
            .iter()
            .map(|name| headers.get_all(name).iter().count())
            .sum::<usize>();
    let mut kept = HeaderMap::with_capacity(left);
    // `None` is another value of the name before it.
    let mut name: Option<HeaderName> = None;
    for (next, value) in headers {
        if next.is_some() {
            name = next;
        }
        if let Some(name) = name.as_ref().filter(|name| !consumed(name)) {
            kept.append(name.clone(), value);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Head {
        parse_head(text.as_bytes()).unwrap().unwrap().1
    }

    #[test]
    fn an_open_connection_keeps_the_headers_the_handshake_did_not_consume() {
        let request = "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
            Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
            Sec-WebSocket-Extensions: permessage-deflate\r\nSec-WebSocket-Protocol: chat\r\n\
            Cookie: a=1\r\nOrigin: https://o\r\nCookie: b=2\r\n\r\n";
        let kept = kept_after_handshake(head(request).headers);
        let names: Vec<&str> = kept.keys().map(HeaderName::as_str).collect();
        assert_eq!(
            names,
            ["host", "sec-websocket-protocol", "cookie", "origin"]
        );
        let cookies: Vec<&[u8]> = kept
            .get_all(header::COOKIE)
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        assert_eq!(cookies, [&b"a=1"[..], b"b=2"]);
        assert_eq!(kept.len(), 5);
    }

    const UPGRADE: &str = "GET /wss?x=1 HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
        Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

    #[test]
    fn rfc_6455_sample_key_gives_the_sample_accept() {
        let Decision::Upgrade { response, .. } =
            decide(&Config::default(), &head(UPGRADE), false, false)
        else {
            panic!("expected an upgrade")
        };
        let response = String::from_utf8(response).unwrap();
        assert!(response.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(
            response.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
            "{response}"
        );
    }

    #[test]
    fn incomplete_head_waits_and_path_and_query_split() {
        assert!(parse_head(&UPGRADE.as_bytes()[..30]).unwrap().is_none());
        let (len, h) = parse_head(UPGRADE.as_bytes()).unwrap().unwrap();
        assert_eq!(len, UPGRADE.len());
        assert_eq!((h.path.as_str(), h.query.as_deref()), ("/wss", Some("x=1")));
    }

    #[test]
    fn plain_get_gets_426_or_the_test_page() {
        let get = head("GET /wss HTTP/1.1\r\nHost: example.com\r\n\r\n");
        let Decision::Refuse(answer, why) = decide(&Config::default(), &get, true, false) else {
            panic!()
        };
        assert_eq!(answer.status, StatusCode::UPGRADE_REQUIRED);
        assert!(
            answer
                .body
                .contains("new WebSocket(\"wss://example.com/wss\")"),
            "{}",
            answer.body
        );
        assert_eq!(why, Refusal::NotWebSocket { page: false });
        let config = Config::default().page("<script>new WebSocket(location.href)</script>");
        let Decision::Refuse(answer, _) = decide(&config, &get, true, false) else {
            panic!()
        };
        assert_eq!(answer.status, StatusCode::OK);
        assert!(answer.body.contains("new WebSocket("));
    }

    /// The URL in the 426 answer to `request`, and the answer's body.
    fn url_426(request: &str, tls: bool, trusted: bool) -> (String, String) {
        let Decision::Refuse(answer, _) = decide(&Config::default(), &head(request), tls, trusted)
        else {
            panic!("expected a refusal")
        };
        assert_eq!(answer.status, StatusCode::UPGRADE_REQUIRED);
        let url = answer.body.split('"').nth(1).unwrap().to_owned();
        (url, answer.body)
    }

    #[test]
    fn the_426_names_the_url_the_client_used_behind_a_proxy() {
        // The generated nginx config: Host and X-Forwarded-Host as the client sent them.
        let nginx = "GET /wss HTTP/1.1\r\nHost: localhost:18443\r\nX-Real-IP: 127.0.0.9\r\n\
            X-Forwarded-Host: localhost:18443\r\nX-Forwarded-Proto: https\r\n\r\n";
        assert_eq!(url_426(nginx, false, true).0, "wss://localhost:18443/wss");
        // RFC 7239, the nearest element.
        let forwarded = "GET /wss HTTP/1.1\r\nHost: 127.0.0.1:8282\r\n\
            Forwarded: for=1.2.3.4;proto=http;host=a.test, for=5.6.7.8;proto=https;host=\"chat.test:8443\"\r\n\r\n";
        assert_eq!(
            url_426(forwarded, false, true).0,
            "wss://chat.test:8443/wss"
        );
        // The recipe's nginx config: X-Real-IP, but the Host is the upstream's address.
        let bare = "GET /wss HTTP/1.1\r\nHost: 127.0.0.1:8282\r\nX-Real-IP: 203.0.113.7\r\n\r\n";
        let (url, body) = url_426(bare, false, true);
        assert_eq!(url, "wss://YOUR-DOMAIN/wss");
        assert!(
            body.contains("sent Host 127.0.0.1:8282") && body.contains("$http_host"),
            "{body}"
        );
        // From an untrusted peer the forwarding headers count for nothing.
        let spoof = "GET /wss HTTP/1.1\r\nHost: h:8282\r\nX-Forwarded-Host: evil.test\r\n\
            X-Forwarded-Proto: https\r\n\r\n";
        assert_eq!(url_426(spoof, false, false).0, "ws://h:8282/wss");
        // Direct, on this machine: no forwarding headers, the Host as sent.
        let direct = "GET /wss HTTP/1.1\r\nHost: localhost:8282\r\n\r\n";
        assert_eq!(url_426(direct, false, true).0, "ws://localhost:8282/wss");
        assert_eq!(url_426(direct, true, true).0, "wss://localhost:8282/wss");
    }

    #[test]
    fn the_404_names_the_path_received_and_subpaths_are_accepted_when_asked() {
        let config = Config::default().path("/wss");
        let Decision::Refuse(answer, why) = decide(
            &config,
            &head(&UPGRADE.replace("/wss?x=1", "/")),
            false,
            false,
        ) else {
            panic!()
        };
        assert_eq!(
            (answer.status, why),
            (StatusCode::NOT_FOUND, Refusal::WrongPath)
        );
        assert!(
            answer.body.starts_with(
                "No WebSocket at path \"/\", the path this server received: connect to /wss"
            ),
            "{}",
            answer.body
        );
        let room = UPGRADE.replace("/wss?x=1", "/wss/room1");
        assert!(matches!(
            decide(&config, &head(&room), false, false),
            Decision::Refuse(..)
        ));
        let config = config.subpaths(true);
        assert!(matches!(
            decide(&config, &head(&room), false, false),
            Decision::Upgrade { .. }
        ));
        assert!(matches!(
            decide(&config, &head(UPGRADE), false, false),
            Decision::Upgrade { .. }
        ));
        let other = UPGRADE.replace("/wss?x=1", "/wssx");
        assert!(matches!(
            decide(&config, &head(&other), false, false),
            Decision::Refuse(..)
        ));
    }

    #[test]
    fn bad_handshakes_get_their_status() {
        let cases = [
            (
                UPGRADE.replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"),
                426,
            ),
            (UPGRADE.replace("keep-alive, Upgrade", "keep-alive"), 400),
            (UPGRADE.replace("dGhlIHNhbXBsZSBub25jZQ==", "short"), 400),
            (UPGRADE.replace("GET", "POST"), 405),
            (UPGRADE.replace("HTTP/1.1", "HTTP/1.0"), 400),
            (
                UPGRADE.replace(
                    "Sec-WebSocket-Version: 13\r\n",
                    "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Version: 8\r\n",
                ),
                400,
            ),
            (
                UPGRADE.replace(
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
                ),
                400,
            ),
            (
                UPGRADE.replace("dGhlIHNhbXBsZSBub25jZQ==", "!!!!!!!!!!!!!!!!!!!!!!!!"),
                400,
            ),
            (
                UPGRADE.replace("dGhlIHNhbXBsZSBub25jZQ==", "========================"),
                400,
            ),
            // 24 characters, but the last data character has bits past the 16 bytes.
            (
                UPGRADE.replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZR=="),
                400,
            ),
        ];
        for (text, status) in cases {
            let Decision::Refuse(answer, _) =
                decide(&Config::default(), &head(&text), false, false)
            else {
                panic!("{text}")
            };
            assert_eq!(answer.status.as_u16(), status, "{text}");
        }
    }

    #[test]
    fn a_head_request_gets_the_headers_without_the_body() {
        let head_req = head("HEAD /wss HTTP/1.1\r\nHost: example.com\r\n\r\n");
        let Decision::Refuse(answer, _) = decide(&Config::default(), &head_req, false, false)
        else {
            panic!()
        };
        let text = String::from_utf8(answer.to_bytes(true)).unwrap();
        assert!(text.starts_with("HTTP/1.1 426 "), "{text}");
        assert!(
            text.ends_with("\r\n\r\n"),
            "no body after a HEAD answer: {text:?}"
        );
        assert!(text.contains(&format!("Content-Length: {}\r\n", answer.body.len())));
    }

    #[test]
    fn malformed_and_oversized_heads_are_refused() {
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n")
                .unwrap_err()
                .status,
            400
        );
        let many: String = (0..70).map(|i| format!("X-{i}: y\r\n")).collect();
        let text = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parse_head(text.as_bytes()).unwrap_err().status, 431);
        let bytes = parse_head(b"GET / HTTP/1.1\r\n\r\n")
            .map(|_| ())
            .map_err(|a| a.to_bytes(false));
        assert!(bytes.is_ok());
    }
}
