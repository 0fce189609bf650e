//! The manifest decoder on raw bytes (manifests come from peers and disks).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| dfs::decode_checks::manifest_decode(data));
