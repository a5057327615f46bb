//! The frame reader with permessage-deflate agreed (RFC 7692), so the inflater too: a valid
//! opening handshake offering it, then any bytes as frames; never a panic. The first byte
//! chooses the read size.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| common::frames(data, true));
