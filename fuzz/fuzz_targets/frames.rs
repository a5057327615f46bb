//! The frame reader and the session loop, server side (RFC 6455 section 5): a valid opening
//! handshake, then any bytes as frames; never a panic. The first byte chooses the read size.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| common::frames(data, false));
