//! The HTTP request head and the opening handshake's decision (RFC 6455 section 4.2.1), with
//! the PROXY protocol and forwarded headers in play: any bytes from a client, never a panic.
//! The first byte chooses the read size and whether a PROXY header is expected.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let config = common::config().proxy_protocol(first & 0x80 != 0);
    common::serve(&config, common::Peer::new(rest.to_vec(), first & 0x7f));
});
