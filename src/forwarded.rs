//! The real client IP behind a reverse proxy, believed only from trusted proxies.
//!
//! When the TCP peer is a trusted proxy, the client address comes from, in order:
//! 1. RFC 7239 `Forwarded: for=...`;
//! 2. `X-Forwarded-For`;
//! 3. `X-Real-IP` (nginx's habit, and the recipe's).
//!
//! In the first two, each proxy appends the address it received from, so the list is
//! read from the right, skipping addresses that are themselves trusted proxies: the
//! first untrusted one is the client. Entries to its left were written by the client,
//! and are never believed. When the TCP peer is not trusted, all three headers are
//! ignored, so a client cannot choose its own address.
//!
//! ```
//! use std::net::IpAddr;
//! use wssd::forwarded::{client_ip, loopback};
//! use wssd::tungstenite::http::HeaderMap;
//!
//! let mut headers = HeaderMap::new();
//! headers.insert("x-forwarded-for", "203.0.113.7, 127.0.0.9".parse().unwrap());
//! let proxy: IpAddr = "127.0.0.1".parse().unwrap();
//! // Everything in 127.0.0.0/8 is trusted, so 127.0.0.9 is skipped as another proxy.
//! assert_eq!(client_ip(proxy, &headers, &loopback()), "203.0.113.7".parse::<IpAddr>().unwrap());
//! // From an untrusted peer, the headers count for nothing.
//! let stranger: IpAddr = "198.51.100.1".parse().unwrap();
//! assert_eq!(client_ip(stranger, &headers, &loopback()), stranger);
//! ```

use std::net::{IpAddr, SocketAddr};

use async_tungstenite::tungstenite::http::HeaderMap;
pub use ipnet::IpNet;

/// The default trusted proxies: loopback only, `127.0.0.0/8` and `::1/128`.
///
/// ```
/// let trusted = wssd::forwarded::loopback();
/// assert!(wssd::forwarded::is_trusted("127.0.0.1".parse().unwrap(), &trusted));
/// ```
pub fn loopback() -> Vec<IpNet> {
    vec![
        "127.0.0.0/8".parse().expect("a valid range"),
        "::1/128".parse().expect("a valid range"),
    ]
}

/// Whether `ip` is in any of the `trusted` ranges. IPv4-mapped IPv6 addresses count as IPv4.
///
/// ```
/// let trusted = wssd::forwarded::loopback();
/// assert!(wssd::forwarded::is_trusted("::ffff:127.0.0.1".parse().unwrap(), &trusted));
/// assert!(!wssd::forwarded::is_trusted("203.0.113.9".parse().unwrap(), &trusted));
/// ```
pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let ip = ip.to_canonical();
    trusted.iter().any(|net| net.contains(&ip))
}

/// Whether `headers` carry any of the headers by which a proxy names the client
/// (`Forwarded`, `X-Forwarded-For`, `X-Real-IP`), whoever sent them.
pub(crate) fn names_a_client(headers: &HeaderMap) -> bool {
    ["forwarded", "x-forwarded-for", "x-real-ip"]
        .iter()
        .any(|name| headers.contains_key(*name))
}

/// The client's IP address: `peer` itself, unless `peer` is a trusted proxy and the headers say more.
///
/// Malformed header values are logged at debug level and skipped; this never fails.
///
/// ```
/// use wssd::tungstenite::http::HeaderMap;
/// let mut headers = HeaderMap::new();
/// headers.insert("x-real-ip", "203.0.113.9".parse().unwrap()); // nginx's proxy_set_header
/// let trusted = wssd::forwarded::loopback();
/// let from_nginx = wssd::forwarded::client_ip("127.0.0.1".parse().unwrap(), &headers, &trusted);
/// assert_eq!(from_nginx.to_string(), "203.0.113.9");
/// // A client that is not a trusted proxy cannot name another address:
/// let direct = wssd::forwarded::client_ip("198.51.100.7".parse().unwrap(), &headers, &trusted);
/// assert_eq!(direct.to_string(), "198.51.100.7");
/// ```
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    if !is_trusted(peer, trusted) {
        return peer;
    }
    let forwarded = header_list(headers, "forwarded", forwarded_for);
    let forwarded_for = header_list(headers, "x-forwarded-for", |e| parse_node(e.trim()));
    for list in [forwarded, forwarded_for] {
        if let Some(ip) = rightmost_untrusted(&list, trusted) {
            return ip;
        }
    }
    let real_ip = headers.get("x-real-ip").and_then(|v| v.to_str().ok());
    match real_ip.map(|v| parse_node(v.trim())) {
        Some(Some(ip)) => ip,
        Some(None) => {
            log::debug!("ignored a malformed X-Real-IP from {peer}: {real_ip:?}");
            peer
        }
        None => peer,
    }
}

/// Every comma-separated element of every instance of header `name`, in order, parsed by `parse`.
/// An element that does not parse becomes `None`: it still holds its place in the chain.
fn header_list(
    headers: &HeaderMap,
    name: &str,
    parse: impl Fn(&str) -> Option<IpAddr>,
) -> Vec<Option<IpAddr>> {
    let mut list = Vec::new();
    for value in headers.get_all(name) {
        let Ok(value) = value.to_str() else {
            log::debug!("ignored a {name} header that is not ASCII");
            continue;
        };
        for element in value.split(',') {
            let ip = parse(element);
            if ip.is_none() {
                log::debug!("ignored a malformed or obfuscated {name} element: {element:?}");
            }
            list.push(ip);
        }
    }
    list
}

/// The first address, reading from the right, that is not a trusted proxy.
/// Reading stops at an element that does not parse: what lies left of it cannot be trusted.
fn rightmost_untrusted(list: &[Option<IpAddr>], trusted: &[IpNet]) -> Option<IpAddr> {
    for ip in list.iter().rev() {
        let ip = (*ip)?;
        if !is_trusted(ip, trusted) {
            return Some(ip);
        }
    }
    None
}

/// The `for=` parameter of one RFC 7239 `forwarded-element` (section 4), such as
/// `for=192.0.2.60;proto=https` or `for="[2001:db8::1]:4711"`.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        if !key.trim().eq_ignore_ascii_case("for") {
            return None;
        }
        parse_node(value.trim().trim_matches('"'))
    })
}

/// An RFC 7239 section 6 node, or an `X-Forwarded-For` entry: `192.0.2.60`, `192.0.2.60:80`,
/// `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:4711`. `unknown` and `_obfuscated` give `None`.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = node.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    node.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const PROXY: &str = "127.0.0.1";

    #[test]
    fn untrusted_peer_headers_are_ignored() {
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-real-ip", "203.0.113.8"),
        ]);
        assert_eq!(
            client_ip(ip("127.0.0.9"), &h, &[ip("127.0.0.1").into()]),
            ip("127.0.0.9")
        );
    }

    #[test]
    fn forwarded_comes_first_and_handles_rfc_7239_forms() {
        let h = headers(&[
            (
                "forwarded",
                "for=192.0.2.43, for=\"[2001:db8:cafe::17]:4711\";proto=https",
            ),
            ("x-forwarded-for", "198.51.100.1"),
            ("x-real-ip", "198.51.100.2"),
        ]);
        assert_eq!(
            client_ip(ip(PROXY), &h, &loopback()),
            ip("2001:db8:cafe::17")
        );
        let h = headers(&[(
            "forwarded",
            "proto=https;FOR=192.0.2.60:8080;by=203.0.113.43",
        )]);
        assert_eq!(client_ip(ip(PROXY), &h, &loopback()), ip("192.0.2.60"));
    }

    #[test]
    fn x_forwarded_for_is_read_from_the_right_skipping_trusted_proxies() {
        // The client wrote 1.1.1.1 itself; 203.0.113.7 is what the first trusted proxy saw.
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.7, 127.0.0.5")]);
        assert_eq!(client_ip(ip(PROXY), &h, &loopback()), ip("203.0.113.7"));
        // Two header instances form one list.
        let h = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "203.0.113.9"),
        ]);
        assert_eq!(client_ip(ip(PROXY), &h, &loopback()), ip("203.0.113.9"));
    }

    #[test]
    fn x_real_ip_is_the_last_resort() {
        let h = headers(&[("x-real-ip", "127.0.0.9")]);
        assert_eq!(client_ip(ip(PROXY), &h, &loopback()), ip("127.0.0.9"));
        let h = headers(&[]);
        assert_eq!(client_ip(ip(PROXY), &h, &loopback()), ip(PROXY));
    }

    #[test]
    fn malformed_values_are_ignored_never_a_panic() {
        for bad in [
            "",
            "not-an-ip",
            "for=",
            "[::1",
            "999.1.1.1",
            "for=_hidden",
            "unknown",
            ",,,",
            "\"",
            "for=\"[\"",
        ] {
            let h = headers(&[
                ("forwarded", bad),
                ("x-forwarded-for", bad),
                ("x-real-ip", bad),
            ]);
            assert_eq!(client_ip(ip(PROXY), &h, &loopback()), ip(PROXY), "{bad:?}");
        }
        // A malformed element stops the right-to-left walk: nothing left of it is believed.
        let h = headers(&[("x-forwarded-for", "203.0.113.7, garbage")]);
        assert_eq!(client_ip(ip(PROXY), &h, &loopback()), ip(PROXY));
        // Non-ASCII bytes in a header value.
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", http_value(b"\xff\xfe"));
        assert_eq!(client_ip(ip(PROXY), &h, &loopback()), ip(PROXY));
    }

    #[test]
    fn ipv4_mapped_ipv6_peers_count_as_ipv4() {
        assert!(is_trusted(ip("::ffff:127.0.0.1"), &loopback()));
        assert!(is_trusted(ip("::1"), &loopback()));
        assert!(!is_trusted(ip("10.0.0.1"), &loopback()));
    }

    fn http_value(bytes: &[u8]) -> async_tungstenite::tungstenite::http::HeaderValue {
        async_tungstenite::tungstenite::http::HeaderValue::from_bytes(bytes).unwrap()
    }
}
