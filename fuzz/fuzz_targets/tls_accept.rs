//! The TLS stream and the whole accept path behind it, wss: any bytes from a client as TLS
//! records (the 12-byte probe of hardening round 3 is one such input); never a panic. The
//! first byte chooses the read size.
#![no_main]

#[path = "common/mod.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let config = common::config().tls(common::tls());
    common::serve(&config, common::Peer::new(rest.to_vec(), first));
});
