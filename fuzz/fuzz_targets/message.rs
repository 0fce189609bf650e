//! The message decoder on raw frame payloads: never panics, and whatever
//! decodes re-encodes to the same bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| dfs::decode_checks::message_decode(data));
