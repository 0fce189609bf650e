//! Replays the fuzzers' committed inputs under `cargo test`: the seed corpus
//! (`fuzz/corpus/<target>/seed-*`) and every input that once crashed a target
//! (`fuzz/regressions/<target>/*`; copy a crash artifact there after fixing
//! it). Each goes through the same check the fuzz target runs.

use std::fs;
use std::path::{Path, PathBuf};

use arbitrary::{Arbitrary, Unstructured};
use dfs::cas::{ChunkId, Manifest};
use dfs::decode_checks;
use dfs::wire::{Envelope, encode_frame_header};

const TARGETS: [&str; 5] = ["frame", "message", "roundtrip", "manifest", "credentials"];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The committed inputs of one target: seeds and regressions.
fn committed_inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut inputs = Vec::new();
    for (dir, seeds_only) in [("corpus", true), ("regressions", false)] {
        let Ok(entries) = fs::read_dir(fuzz_dir().join(dir).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if seeds_only && !name.starts_with("seed-") {
                continue;
            }
            let bytes = fs::read(&path).unwrap();
            inputs.push((path, bytes));
        }
    }
    inputs.sort();
    inputs
}

fn replay(target: &str, check: impl Fn(&[u8])) {
    let inputs = committed_inputs(target);
    assert!(
        !inputs.is_empty(),
        "no committed corpus for fuzz target {target}"
    );
    for (path, bytes) in inputs {
        eprintln!("replaying {}", path.display());
        check(&bytes);
    }
}

#[test]
fn frame_inputs() {
    replay("frame", decode_checks::frame_decoder);
}

#[test]
fn message_inputs() {
    replay("message", decode_checks::message_decode);
}

#[test]
fn manifest_inputs() {
    replay("manifest", decode_checks::manifest_decode);
}

#[test]
fn credentials_inputs() {
    replay("credentials", decode_checks::credentials_decode);
}

#[test]
fn roundtrip_inputs() {
    replay("roundtrip", |bytes| {
        if let Ok(envelope) = Envelope::arbitrary_take_rest(Unstructured::new(bytes)) {
            decode_checks::envelope_round_trip(&envelope);
        }
    });
}

/// The wire bytes of every message kind, from the insta snapshots (so the
/// seeds follow the protocol when it changes and the snapshots are accepted).
fn snapshot_messages() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/wire/snapshots");
    let mut messages = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = fs::read_to_string(&path).unwrap();
        let hex_line = text.lines().last().unwrap().trim();
        let kind = path
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .trim_start_matches("dfs__wire__tests__")
            .to_owned();
        messages.push((kind, hex::decode(hex_line).unwrap()));
    }
    messages.sort();
    messages
}

/// Regenerate the seed corpus: `cargo test --test fuzz_corpus -- --ignored`.
#[test]
#[ignore = "writes fuzz/corpus; run by hand after a protocol change"]
fn write_seed_corpus() {
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = fuzz_dir().join("corpus").join(target);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
    };
    let messages = snapshot_messages();
    let mut stream = vec![7u8];
    for (kind, bytes) in &messages {
        write("message", kind, bytes);
        let mut framed = vec![1u8];
        framed.extend_from_slice(&encode_frame_header(bytes.len()));
        framed.extend_from_slice(bytes);
        write("frame", kind, &framed);
        stream.extend_from_slice(&encode_frame_header(bytes.len()));
        stream.extend_from_slice(bytes);
        // The structure-aware target reads arbitrary bytes; wire bytes are as
        // good a start as any and reach many variants.
        write("roundtrip", kind, bytes);
    }
    write("frame", "all-kinds-in-pieces-of-7", &stream);
    let mut oversize = vec![3u8];
    oversize.extend_from_slice(&u32::MAX.to_be_bytes());
    write("frame", "oversize-prefix", &oversize);

    write("manifest", "empty", &Manifest::default().encode());
    let mut manifest = Manifest::default();
    for i in 0..3u8 {
        manifest
            .push(ChunkId::of(&[i]), 1 << 20)
            .expect("three chunks fit");
    }
    write("manifest", "three-chunks", &manifest.encode());
    manifest.attributes = vec![("content-type".into(), "text/plain".into())];
    write("manifest", "with-attributes", &manifest.encode());
    manifest.parts = vec![2, 1];
    write("manifest", "multipart", &manifest.encode());

    use dfs::keys::credentials::Credentials;
    use dfs::keys::{AccessKeyId, SecretKey};
    use dfs::secure::{Party, Verdict};
    let id = AccessKeyId::parse("DFSABCDEFGHIJKLMNOPQ").unwrap();
    write(
        "credentials",
        "party-node",
        &postcard::to_stdvec(&Party::Node).unwrap(),
    );
    write(
        "credentials",
        "party-client",
        &postcard::to_stdvec(&Party::Client(id)).unwrap(),
    );
    let refused = Verdict::Refused("unknown access key".into());
    write(
        "credentials",
        "verdict-refused",
        &postcard::to_stdvec(&refused).unwrap(),
    );
    let credentials = Credentials {
        id,
        secret: SecretKey::parse(&"s".repeat(40)).unwrap(),
    };
    write("credentials", "file", credentials.to_file_text().as_bytes());
    let record = dfs::meta::KeyRecord {
        id,
        name: "ci".into(),
        permission: dfs::keys::Permission::admin(),
        sealed_secret: vec![1; 68],
        created_ms: 1,
        version: dfs::meta::VersionId {
            wall_ms: 2,
            counter: 0,
            node: dfs::keys::NodeId([3; 32]),
        },
        removed: false,
    };
    write("credentials", "key-record", &record.encode());
}

#[test]
fn every_target_has_a_seed_directory() {
    for target in TARGETS {
        assert!(
            committed_inputs(target).iter().any(|(path, _)| path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("seed-")),
            "fuzz/corpus/{target} has no seed-* file"
        );
    }
}
