use bytes::{Buf, Bytes, BytesMut};
use fastcdc::v2020::{Normalization, cut, select_masks};

use crate::limits::{CHUNK_AVG_BYTES, CHUNK_MAX_BYTES, CHUNK_MIN_BYTES};

/// Streaming content-defined chunker (FastCDC v2020), sans-io.
///
/// Feed bytes with [`push`](Self::push), take ready chunks with
/// [`next_chunk`](Self::next_chunk) until it returns `None`, and call
/// [`finish`](Self::finish) at end of input to release the tail.
///
/// A cut point depends only on the bytes from the previous cut up to at most
/// `max` bytes later, so the chunker needs to hold at most one maximum chunk
/// plus the last push: memory is bounded whatever the file size.
///
/// Boundaries are exactly those of FastCDC over `max`-byte windows (the
/// content ids of stored files depend on them), but a chunk is cut as soon
/// as its boundary is seen: FastCDC's first match in a window is the same
/// whatever follows the window (the masks depend only on the position
/// from the chunk's start). So the buffer usually holds
/// about two average chunks, not a maximum one, and each chunk leaves as a
/// copy of its own bytes: a chunk in flight holds no larger buffer alive.
#[derive(Debug)]
pub struct Chunker {
    buffer: BytesMut,
    /// Look for the next boundary once the buffer holds this much (a look
    /// that found none waits for twice as much, then for `max`).
    look_at: usize,
    finished: bool,
    min: usize,
    avg: usize,
    max: usize,
    masks: (u64, u64),
}

impl Default for Chunker {
    fn default() -> Self {
        Self::new(CHUNK_MIN_BYTES, CHUNK_AVG_BYTES, CHUNK_MAX_BYTES)
    }
}

impl Chunker {
    /// A chunker with custom sizes (tests use small ones). Sizes must be even
    /// and within FastCDC's ranges.
    pub fn new(min: usize, avg: usize, max: usize) -> Self {
        assert!(
            min <= avg && avg <= max,
            "chunk sizes must satisfy min <= avg <= max"
        );
        Self {
            // Sized as bytes come: a 4 KiB put needs no 4 MiB buffer.
            buffer: BytesMut::new(),
            look_at: Self::first_look(avg, max),
            finished: false,
            min,
            avg,
            max,
            masks: select_masks(avg, Normalization::Level1),
        }
    }

    /// Where a new chunk is first looked at: where most chunks have ended
    /// (an earlier look would mostly scan in vain and look again).
    fn first_look(avg: usize, max: usize) -> usize {
        (2 * avg).min(max)
    }

    /// Append input. Call [`next_chunk`](Self::next_chunk) until `None` before
    /// pushing again, so the buffer stays below one maximum chunk plus one push.
    pub fn push(&mut self, data: &[u8]) {
        assert!(!self.finished, "push after finish");
        assert!(
            self.buffer.len() < self.max,
            "chunker not drained before push"
        );
        if self.buffer.capacity() - self.buffer.len() < data.len() {
            // A fresh buffer for the bytes not yet cut: twice what they
            // need, up to what the next look needs (`look_at`, at most
            // `max`, plus this push). Most chunks are cut at the first
            // look, so a put's buffer is usually half a maximum chunk.
            // (bytes' own growth would double past it, to 8 MiB.)
            let wanted = self.buffer.len() + data.len();
            let capacity = (2 * wanted).min(self.look_at + data.len()).max(wanted);
            let mut fresh = BytesMut::with_capacity(capacity);
            fresh.extend_from_slice(&self.buffer);
            self.buffer = fresh;
        }
        self.buffer.extend_from_slice(data);
    }

    /// Mark end of input; the remaining bytes come out of `next_chunk`.
    pub fn finish(&mut self) {
        self.finished = true;
    }

    /// The next complete chunk, or `None` if more input (or `finish`) is needed.
    pub fn next_chunk(&mut self) -> Option<Bytes> {
        if self.buffer.is_empty() || (!self.finished && self.buffer.len() < self.look_at) {
            return None;
        }
        let (mask_s, mask_l) = self.masks;
        let window = &self.buffer[..self.buffer.len().min(self.max)];
        let (_hash, cut_at) = cut(
            window,
            self.min,
            self.avg,
            self.max,
            mask_s,
            mask_l,
            mask_s << 1,
            mask_l << 1,
        );
        assert!(cut_at > 0 && cut_at <= window.len());
        // Without a match, FastCDC cuts at the window's end: a cut only
        // once the window is whole (or the input ended). Else look again
        // once the buffer holds twice as much (the window was all of it).
        let whole = window.len() == self.max || self.finished;
        if cut_at == window.len() && !whole {
            self.look_at = (2 * self.buffer.len()).min(self.max);
            return None;
        }
        let chunk = Bytes::copy_from_slice(&self.buffer[..cut_at]);
        self.buffer.advance(cut_at);
        self.look_at = Self::first_look(self.avg, self.max);
        Some(chunk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand_chacha::ChaCha8Rng;
    use rand_core::{RngCore, SeedableRng};

    const MIN: usize = 1024;
    const AVG: usize = 4096;
    const MAX: usize = 16384;

    fn chunk_all(data: &[u8], push_size: usize) -> Vec<Bytes> {
        let mut chunker = Chunker::new(MIN, AVG, MAX);
        let mut chunks = Vec::new();
        for piece in data.chunks(push_size.max(1)) {
            chunker.push(piece);
            while let Some(chunk) = chunker.next_chunk() {
                chunks.push(chunk);
            }
        }
        chunker.finish();
        while let Some(chunk) = chunker.next_chunk() {
            chunks.push(chunk);
        }
        chunks
    }

    fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut data = vec![0u8; len];
        ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut data);
        data
    }

    /// FastCDC over whole `max`-byte windows, one after the other: the
    /// boundaries every stored file was cut at.
    fn reference_cuts(data: &[u8]) -> Vec<usize> {
        let (mask_s, mask_l) = select_masks(AVG, Normalization::Level1);
        let mut lens = Vec::new();
        let mut at = 0;
        while at < data.len() {
            let window = &data[at..data.len().min(at + MAX)];
            let (_, len) = cut(
                window,
                MIN,
                AVG,
                MAX,
                mask_s,
                mask_l,
                mask_s << 1,
                mask_l << 1,
            );
            lens.push(len);
            at += len;
        }
        lens
    }

    proptest! {
        #[test]
        fn boundaries_are_fastcdc_over_whole_windows(seed: u64, len in 0usize..200_000, push_size in 1usize..40_000) {
            let data = random_bytes(seed, len);
            let lens: Vec<usize> = chunk_all(&data, push_size).iter().map(Bytes::len).collect();
            prop_assert_eq!(lens, reference_cuts(&data));
        }

        #[test]
        fn reassembly_equals_input(seed: u64, len in 0usize..200_000, push_size in 1usize..40_000) {
            let data = random_bytes(seed, len);
            let chunks = chunk_all(&data, push_size);
            prop_assert_eq!(chunks.concat(), data);
            for (i, chunk) in chunks.iter().enumerate() {
                prop_assert!(chunk.len() <= MAX);
                prop_assert!(chunk.len() >= MIN || i == chunks.len() - 1);
            }
        }

        #[test]
        fn boundaries_do_not_depend_on_push_sizes(seed: u64, a in 1usize..50_000, b in 1usize..50_000) {
            let data = random_bytes(seed, 150_000);
            prop_assert_eq!(chunk_all(&data, a), chunk_all(&data, b));
        }

        #[test]
        fn an_edit_in_the_middle_leaves_most_chunks_unchanged(seed: u64, at in 0.3f64..0.7, insert in 1usize..100) {
            let data = random_bytes(seed, 1_000_000);
            let position = (data.len() as f64 * at) as usize;
            let mut edited = data.clone();
            edited.splice(position..position, std::iter::repeat_n(0xA5, insert));
            let before: std::collections::BTreeSet<_> = chunk_all(&data, 65536).into_iter().collect();
            let after = chunk_all(&edited, 65536);
            let shared = after.iter().filter(|c| before.contains(*c)).count();
            // ~200 chunks at these test sizes. An insertion rewrites the chunk it
            // lands in, may cut it in two, and the min-size skip after a new cut
            // can shift the next one or two boundaries before they resynchronise
            // (CI seed 2220679603522982626 lost 4 of 202). A fixed-size chunker
            // would lose every chunk after the edit, about half of them.
            prop_assert!(shared * 10 >= after.len() * 9, "only {shared} of {} chunks shared", after.len());
        }
    }

    #[test]
    fn default_sizes_cut_a_large_input_near_the_average() {
        let data = random_bytes(7, 24 * 1024 * 1024);
        let mut chunker = Chunker::default();
        let mut lens = Vec::new();
        for piece in data.chunks(256 * 1024) {
            chunker.push(piece);
            while let Some(chunk) = chunker.next_chunk() {
                lens.push(chunk.len());
            }
        }
        chunker.finish();
        while let Some(chunk) = chunker.next_chunk() {
            lens.push(chunk.len());
        }
        assert_eq!(lens.iter().sum::<usize>(), data.len());
        assert!(lens.iter().all(|&l| l <= CHUNK_MAX_BYTES));
        let mean = data.len() / lens.len();
        assert!(
            (512 * 1024..2 * 1024 * 1024).contains(&mean),
            "mean chunk {mean}"
        );
    }
}
