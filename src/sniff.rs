//! What the first bytes of a connection say: a PROXY protocol header, a TLS ClientHello, or plain HTTP.
//!
//! These are pure functions over byte slices; the accept path feeds them what it has read.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// What a connection's first byte says it speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstByte {
    /// `0x16`: a TLS handshake record, the ClientHello (RFC 8446 section 5.1).
    Tls,
    /// An upper-case ASCII letter: an HTTP/1.x method (`GET`), as from `ws://` or `http://`.
    Http,
    /// Anything else.
    Other,
}

/// Classifies a connection by its first byte.
pub fn classify(first: u8) -> FirstByte {
    match first {
        0x16 => FirstByte::Tls,
        b'A'..=b'Z' => FirstByte::Http,
        _ => FirstByte::Other,
    }
}

/// The PROXY protocol v2 signature (HAProxy's PROXY protocol specification, section 2.2).
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 header, CRLF included (section 2.1).
const V1_MAX: usize = 107;
/// The longest v2 header accepted, in bytes: the 16-byte preamble plus addresses and TLVs.
pub const V2_MAX: usize = 16 + 2048;

/// A parsed PROXY protocol header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// The original client's address; `None` for `UNKNOWN` (v1), `LOCAL` (v2, such as a
    /// balancer's health check) and address families other than TCP over IPv4 or IPv6.
    pub source: Option<SocketAddr>,
    /// The header's length in bytes; the connection's own data follows it.
    pub len: usize,
}

/// A PROXY protocol header that is missing or malformed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyHeaderError(pub &'static str);

impl fmt::Display for ProxyHeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad PROXY protocol header: {}", self.0)
    }
}

impl std::error::Error for ProxyHeaderError {}

/// Parses a PROXY protocol v1 or v2 header at the start of `buf`.
///
/// Returns `Ok(None)` when `buf` is a valid beginning that needs more bytes.
///
/// # Errors
/// [`ProxyHeaderError`] when `buf` does not start with a PROXY header, or the header is malformed.
pub fn parse_proxy_header(buf: &[u8]) -> Result<Option<ProxyHeader>, ProxyHeaderError> {
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] == V2_SIGNATURE[..n] {
        return if n < V2_SIGNATURE.len() {
            Ok(None)
        } else {
            parse_v2(buf)
        };
    }
    let n = buf.len().min(6);
    if buf[..n] == b"PROXY "[..n] {
        return if n < 6 { Ok(None) } else { parse_v1(buf) };
    }
    Err(ProxyHeaderError(
        "missing: the connection did not start with one (is the balancer sending PROXY protocol?)",
    ))
}

fn parse_v1(buf: &[u8]) -> Result<Option<ProxyHeader>, ProxyHeaderError> {
    let Some(end) = buf.windows(2).take(V1_MAX - 1).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err(ProxyHeaderError("v1 line longer than 107 bytes"))
        } else {
            Ok(None)
        };
    };
    let len = end + 2;
    let line =
        std::str::from_utf8(&buf[6..end]).map_err(|_| ProxyHeaderError("v1 line is not ASCII"))?;
    let fields: Vec<&str> = line.split(' ').collect();
    let source = match fields.as_slice() {
        ["UNKNOWN", ..] => None,
        [proto @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let src: IpAddr = src
                .parse()
                .map_err(|_| ProxyHeaderError("v1 source address"))?;
            let dst: IpAddr = dst
                .parse()
                .map_err(|_| ProxyHeaderError("v1 destination address"))?;
            let sport: u16 = sport
                .parse()
                .map_err(|_| ProxyHeaderError("v1 source port"))?;
            dport
                .parse::<u16>()
                .map_err(|_| ProxyHeaderError("v1 destination port"))?;
            if (*proto == "TCP4") != (src.is_ipv4() && dst.is_ipv4()) {
                return Err(ProxyHeaderError(
                    "v1 address family does not match the addresses",
                ));
            }
            Some(SocketAddr::new(src, sport))
        }
        _ => {
            return Err(ProxyHeaderError(
                "v1 line is not `PROXY TCP4|TCP6 src dst sport dport`",
            ));
        }
    };
    Ok(Some(ProxyHeader { source, len }))
}

fn parse_v2(buf: &[u8]) -> Result<Option<ProxyHeader>, ProxyHeaderError> {
    let Some(preamble) = buf.get(..16) else {
        return Ok(None);
    };
    let (version_command, family) = (preamble[12], preamble[13]);
    if version_command >> 4 != 2 {
        return Err(ProxyHeaderError("v2 version is not 2"));
    }
    let len = 16 + usize::from(u16::from_be_bytes([preamble[14], preamble[15]]));
    if len > V2_MAX {
        return Err(ProxyHeaderError(
            "v2 header longer than wssd accepts (2 KiB of addresses and TLVs)",
        ));
    }
    let Some(header) = buf.get(..len) else {
        return Ok(None);
    };
    let body = &header[16..];
    let source = match (version_command & 0x0F, family) {
        (0, _) => None, // LOCAL: the balancer's own connection
        (1, 0x11) if body.len() >= 12 => {
            let ip = Ipv4Addr::from(<[u8; 4]>::try_from(&body[..4]).expect("4 bytes"));
            Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([body[8], body[9]]),
            ))
        }
        (1, 0x21) if body.len() >= 36 => {
            let ip = Ipv6Addr::from(<[u8; 16]>::try_from(&body[..16]).expect("16 bytes"));
            Some(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([body[32], body[33]]),
            ))
        }
        (1, 0x11 | 0x21) => return Err(ProxyHeaderError("v2 address block too short")),
        (1, _) => None, // UNSPEC, UDP or UNIX: no TCP client address
        _ => return Err(ProxyHeaderError("v2 command is neither LOCAL nor PROXY")),
    };
    Ok(Some(ProxyHeader { source, len }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_first_byte_is_classified_by_the_tls_record_type_and_http_methods() {
        // All 256 of them (this was a fuzz target): TLS is 0x16 alone, HTTP the upper-case
        // letters that begin every method, the rest other.
        for first in 0..=u8::MAX {
            let class = classify(first);
            assert_eq!(class == FirstByte::Tls, first == 0x16, "{first:#04x}");
            assert_eq!(
                class == FirstByte::Http,
                first.is_ascii_uppercase(),
                "{first:#04x}"
            );
        }
    }

    #[test]
    fn first_byte_classes() {
        assert_eq!(classify(0x16), FirstByte::Tls);
        assert_eq!(classify(b'G'), FirstByte::Http);
        assert_eq!(classify(0), FirstByte::Other);
    }

    #[test]
    fn v1_tcp4_tcp6_and_unknown() {
        let h = b"PROXY TCP4 127.0.0.9 127.0.0.1 40000 8282\r\n\x16\x03";
        let parsed = parse_proxy_header(h).unwrap().unwrap();
        assert_eq!(parsed.source, Some("127.0.0.9:40000".parse().unwrap()));
        assert_eq!(&h[parsed.len..], b"\x16\x03");
        let h = b"PROXY TCP6 2001:db8::1 ::1 4711 443\r\n";
        let parsed = parse_proxy_header(h).unwrap().unwrap();
        assert_eq!(parsed.source, Some("[2001:db8::1]:4711".parse().unwrap()));
        assert_eq!(
            parse_proxy_header(b"PROXY UNKNOWN\r\n")
                .unwrap()
                .unwrap()
                .source,
            None
        );
    }

    #[test]
    fn v1_incomplete_then_malformed() {
        assert_eq!(parse_proxy_header(b"PRO"), Ok(None));
        assert_eq!(parse_proxy_header(b"PROXY TCP4 127.0.0.9"), Ok(None));
        for bad in [
            &b"PROXY TCP4 127.0.0.9 127.0.0.1 40000\r\n"[..],
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n",
            b"PROXY SCTP 1.2.3.4 5.6.7.8 1 1\r\n",
            &[b"PROXY ".as_slice(), &[b'x'; 200]].concat(),
        ] {
            assert!(
                parse_proxy_header(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn missing_header() {
        assert!(parse_proxy_header(b"GET / HTTP/1.1\r\n").is_err());
        assert!(parse_proxy_header(b"\x16\x03\x01").is_err());
    }

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.extend([0x20 | command, family]);
        h.extend((body.len() as u16).to_be_bytes());
        h.extend(body);
        h
    }

    #[test]
    fn v2_ipv4_ipv6_local_and_tlvs() {
        let mut body = vec![127, 0, 0, 9, 127, 0, 0, 1];
        body.extend(40000u16.to_be_bytes());
        body.extend(8282u16.to_be_bytes());
        body.extend([0x04, 0x00, 0x01, 0xAA]); // a TLV, skipped
        let h = [v2(1, 0x11, &body), b"rest".to_vec()].concat();
        let parsed = parse_proxy_header(&h).unwrap().unwrap();
        assert_eq!(parsed.source, Some("127.0.0.9:40000".parse().unwrap()));
        assert_eq!(&h[parsed.len..], b"rest");

        let mut body = vec![0u8; 36];
        body[15] = 1; // ::1
        body[32..34].copy_from_slice(&4711u16.to_be_bytes());
        let parsed = parse_proxy_header(&v2(1, 0x21, &body)).unwrap().unwrap();
        assert_eq!(parsed.source, Some("[::1]:4711".parse().unwrap()));

        assert_eq!(
            parse_proxy_header(&v2(0, 0x00, &[]))
                .unwrap()
                .unwrap()
                .source,
            None
        );
    }

    #[test]
    fn v2_incomplete_and_malformed() {
        let full = v2(1, 0x11, &[0u8; 12]);
        for cut in [1, 12, 15, 20] {
            assert_eq!(parse_proxy_header(&full[..cut]), Ok(None), "cut at {cut}");
        }
        assert!(
            parse_proxy_header(&v2(1, 0x11, &[0u8; 4])).is_err(),
            "short address block"
        );
        assert!(
            parse_proxy_header(&v2(7, 0x11, &[0u8; 12])).is_err(),
            "bad command"
        );
        let mut wrong_version = v2(1, 0x11, &[0u8; 12]);
        wrong_version[12] = 0x11;
        assert!(parse_proxy_header(&wrong_version).is_err());
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend([0x21, 0x11, 0xFF, 0xFF]);
        assert!(parse_proxy_header(&huge).is_err(), "over the length cap");
    }
}
