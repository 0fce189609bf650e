//! The frame decoder on a hostile byte stream, cut into pieces of any size.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| dfs::decode_checks::frame_decoder(data));
