//! The first-byte classifier: total over every byte, and consistent with the TLS record type.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wssd::sniff::{FirstByte, classify};

fuzz_target!(|data: &[u8]| {
    if let Some(&first) = data.first() {
        let class = classify(first);
        assert_eq!(class == FirstByte::Tls, first == 0x16);
        assert_eq!(class == FirstByte::Http, first.is_ascii_uppercase());
    }
});
