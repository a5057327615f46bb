//! wssd's own TLS record layer (`--own-records`), `Records::open`: TLS 1.3 records whose inner
//! plaintexts are any bytes (content type, padding, KeyUpdates, alerts), sealed with the
//! client's key, or any bytes as raw ciphertext; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wssd::fuzzing::records(data));
