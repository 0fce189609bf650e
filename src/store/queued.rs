//! Small-blob puts of async callers, queued and put a batch at a time
//! (`meta::group_commit::Queued`): the presence checks of a batch, then one
//! group commit of the blobs it inserts into the small-blob table.

use super::{ChunkStore, PutDone, PutOutcome, SealedBlob, SmallBlobs, StoreError, written};

impl ChunkStore {
    /// Whether a put of `blob` would go into the small-blob table: what
    /// [`ChunkStore::queue_put`] takes.
    /// (A statvfs on the way: microseconds.) Below the free-space
    /// reserve, small blobs are written as files, each on a blocking
    /// thread of its own rather than one after another in a queued run.
    pub fn goes_to_table(&self, blob: &SealedBlob) -> bool {
        self.fits_table(blob) && self.room_for_the_table()
    }

    /// Whether the table takes `blob`, space aside.
    fn fits_table(&self, blob: &SealedBlob) -> bool {
        self.small.as_ref().is_some_and(SmallBlobs::is_trusted)
            && self.small_bytes_max > 0
            && blob.plaintext_len() <= self.small_bytes_max
    }

    /// Queue a put of `blob` (one that [`ChunkStore::goes_to_table`]) for
    /// the next batch (`meta::group_commit::Queued`); `done` gets its
    /// outcome, once durable, on the thread that runs the batch. Returns
    /// whether the caller must start [`ChunkStore::run_queued_puts`] on a
    /// blocking thread. The queue is bounded by its callers: each holds one
    /// of the node's disk write permits, released in `done`.
    pub fn queue_put(&self, blob: SealedBlob, done: PutDone) -> bool {
        let weight = blob.bytes().len();
        self.queued.push(blob, weight, done)
    }

    /// Run the queued puts a batch at a time (their presence checks, then
    /// one group commit of what they insert) until the queue is empty.
    /// Blocking.
    pub fn run_queued_puts(&self) {
        self.queued
            .run(|batch| self.put_batch(batch.into_iter().map(|(blob, _)| blob).collect()));
    }

    /// [`ChunkStore::put`] of each blob, their table inserts submitted
    /// together.
    fn put_batch(&self, batch: Vec<SealedBlob>) -> Vec<Result<PutOutcome, StoreError>> {
        let mut outcomes: Vec<Option<Result<PutOutcome, StoreError>>> = Vec::new();
        let mut inserts: Vec<(usize, bool)> = Vec::new();
        let room = self.room_for_the_table();
        for (at, blob) in batch.iter().enumerate() {
            outcomes.push(match self.needs_write(blob) {
                Ok(None) => Some(Ok(PutOutcome::AlreadyPresent)),
                Ok(Some(present)) if room && self.fits_table(blob) => {
                    inserts.push((at, present));
                    None
                }
                // Not for the table after all (distrusted, or the disk
                // filled up, since it was queued).
                Ok(Some(present)) => Some(self.write(blob).map(|()| written(present))),
                Err(error) => Some(Err(error)),
            });
        }
        if let Some(small) = &self.small
            && !inserts.is_empty()
        {
            let blobs = inserts
                .iter()
                .map(|(at, _)| {
                    let blob = &batch[*at];
                    (*blob.id(), blob.bytes().to_vec())
                })
                .collect();
            for ((at, present), inserted) in inserts.into_iter().zip(small.insert_all(blobs)) {
                let blob = &batch[at];
                outcomes[at] = Some(match inserted {
                    Ok(_) => Ok(written(present)),
                    // Distrusted meanwhile: a file, then.
                    Err(StoreError::Table(_)) => self
                        .files
                        .write(blob.id(), blob.bytes())
                        .map(|()| written(present)),
                    Err(error) => Err(error),
                });
            }
        }
        outcomes
            .into_iter()
            .map(|outcome| outcome.expect("every put of the batch has its outcome"))
            .collect()
    }
}
