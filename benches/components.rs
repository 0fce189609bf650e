//! Component throughput: chunking, hashing, sealing, codec.
//! `cargo bench --bench components`

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dfs::cas::{ChunkId, Chunker};
use dfs::keys::ClusterKey;
use dfs::store::Sealer;
use dfs::wire::{Envelope, Message, decode, encode};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

fn random(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    ChaCha8Rng::seed_from_u64(1).fill_bytes(&mut bytes);
    bytes
}

fn chunking(c: &mut Criterion) {
    let data = random(32 << 20);
    let mut group = c.benchmark_group("chunking");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.sample_size(10);
    group.bench_function("fastcdc_32MiB", |b| {
        b.iter(|| {
            let mut chunker = Chunker::default();
            let mut count = 0;
            for piece in data.chunks(256 * 1024) {
                chunker.push(piece);
                while chunker.next_chunk().is_some() {
                    count += 1;
                }
            }
            chunker.finish();
            while chunker.next_chunk().is_some() {
                count += 1;
            }
            count
        })
    });
    group.finish();
}

fn hashing_and_sealing(c: &mut Criterion) {
    let chunk = random(1 << 20);
    let id = ChunkId::of(&chunk);
    let sealer = Sealer::new(&ClusterKey::from_bytes([7; 32]));
    let sealed = sealer.seal(&id, &chunk);
    let mut group = c.benchmark_group("per_chunk_1MiB");
    group.throughput(Throughput::Bytes(chunk.len() as u64));
    group.bench_function("sha256", |b| b.iter(|| ChunkId::of(&chunk)));
    group.bench_function("seal", |b| b.iter(|| sealer.seal(&id, &chunk)));
    group.bench_function("check_tag", |b| b.iter(|| sealer.check(&id, &sealed)));
    group.bench_function("open", |b| {
        b.iter(|| sealer.open(&id, sealed.clone()).unwrap())
    });
    group.finish();
}

fn codec(c: &mut Criterion) {
    let envelope = Envelope {
        request_id: 9,
        message: Message::PutData {
            bytes: random(256 * 1024),
        },
    };
    let bytes = encode(&envelope);
    let mut group = c.benchmark_group("codec_256KiB_data");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("encode", |b| b.iter(|| encode(&envelope)));
    group.bench_function("decode", |b| b.iter(|| decode(&bytes).unwrap()));
    group.finish();
}

criterion_group!(benches, chunking, hashing_and_sealing, codec);
criterion_main!(benches);
