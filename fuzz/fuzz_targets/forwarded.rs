//! The forwarded-header parser: never panics, and from an untrusted peer the headers never count.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use wssd::forwarded::{client_ip, loopback};
use wssd::tungstenite::http::{HeaderMap, HeaderValue};

fuzz_target!(|data: &[u8]| {
    // Three header values, split at the first two 0xFF bytes.
    let mut parts = data.splitn(3, |b| *b == 0xFF);
    let mut headers = HeaderMap::new();
    for name in ["forwarded", "x-forwarded-for", "x-real-ip"] {
        if let Some(Ok(value)) = parts.next().map(HeaderValue::from_bytes) {
            headers.append(name, value);
        }
    }
    let proxy: IpAddr = "127.0.0.1".parse().unwrap();
    let _ = client_ip(proxy, &headers, &loopback());
    let stranger: IpAddr = "203.0.113.1".parse().unwrap();
    assert_eq!(client_ip(stranger, &headers, &loopback()), stranger);
});
