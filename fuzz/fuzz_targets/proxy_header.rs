//! The PROXY protocol v1/v2 parser: never panics, never claims more bytes than it was given,
//! and a parsed header parses the same from exactly its own bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wssd::sniff::{V2_MAX, parse_proxy_header};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(header)) = parse_proxy_header(data) {
        assert!(header.len <= data.len() && header.len <= V2_MAX);
        assert_eq!(parse_proxy_header(&data[..header.len]), Ok(Some(header)));
    }
});
