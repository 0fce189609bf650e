//! The access-key decoders on raw bytes: handshake payloads (from anyone who
//! connects), stored key records, credentials files.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| dfs::decode_checks::credentials_decode(data));
