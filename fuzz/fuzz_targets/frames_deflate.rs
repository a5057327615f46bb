//! The frame reader with permessage-deflate agreed (RFC 7692), so the inflater too: a valid
//! opening handshake offering it, then any bytes as frames; never a panic. The first byte
//! chooses the read size.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = common::upgrade(true);
    bytes.extend_from_slice(rest);
    common::serve(&common::config(), common::Peer::new(bytes, first));
});
