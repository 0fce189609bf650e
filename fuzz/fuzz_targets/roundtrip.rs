//! Structure-aware: any message `arbitrary` builds survives encode/decode.
#![no_main]
libfuzzer_sys::fuzz_target!(|envelope: dfs::wire::Envelope| {
    dfs::decode_checks::envelope_round_trip(&envelope)
});
