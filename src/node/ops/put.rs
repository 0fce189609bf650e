//! A put: a byte stream in, a durable version record out.
//!
//! The body is chunked as it arrives; each chunk is hashed, sealed and
//! stored on its owners by its own task, at most [`PUT_CHUNKS_IN_FLIGHT`]
//! at once (the memory bound at any size). What was stored is kept alive
//! against the collector while the put runs ([`PutBlobs`]). Once the body
//! ends, the manifest is stored like a chunk, and only then is the version
//! record made durable on W indexes: a record never points at content that
//! is not durable. A body of one chunk (most small objects) stores that
//! chunk and its manifest at once: one round of disk syncs fewer before
//! the record.

use std::collections::VecDeque;

use md5::{Digest, Md5};
use tokio_util::task::AbortOnDropHandle;

use super::{Body, OpError, PutError, with_forgotten};
use crate::cas::{
    Attributes, ChunkId, Chunker, ContentId, Manifest, check_attributes, check_parts,
};
use crate::cluster::{ClusterError, PutBlobs, Stored};
use crate::keys::AccessKeyId;
use crate::limits::{
    LARGE_PUT_BYTES, LARGE_PUT_WAIT_MAX, LARGE_PUTS_IN_FLIGHT, PUT_CHUNKS_IN_FLIGHT,
};
use crate::meta::{Etag, VersionId, VersionRecord, validate_name};
use crate::node::Node;
use crate::wire::ErrorCode;

/// What a put keeps beside the bytes.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// Compute the body's MD5 and keep it in the record (S3's ETag). The
    /// native protocol does not: its content id already names the bytes.
    pub md5: bool,
    /// The version is its bucket's "null" version (S3, unversioned bucket).
    pub null_version: bool,
    /// Kept in the manifest (Content-Type, `x-amz-meta-*`), sorted by name.
    pub attributes: Attributes,
    /// The MD5 the client says the body has (S3's Content-MD5): the put
    /// is refused, and nothing recorded, if the body's differs.
    pub expect_md5: Option<[u8; 16]>,
    /// Versions this one replaces for good, forgotten in the same commit
    /// (S3: the null version a put to an unversioned bucket overwrites).
    pub forget: Vec<VersionId>,
}

pub(super) type StoreJob = AbortOnDropHandle<Result<(ChunkId, usize, Stored), ClusterError>>;

impl Node {
    /// Store `body` as a new version of `name`, asked for by access key
    /// `by`. Returns the record once it is durable on W nodes.
    pub async fn put<B: Body>(
        &self,
        name: String,
        body: &mut B,
        by: AccessKeyId,
        options: PutOptions,
    ) -> Result<VersionRecord, PutError<B::Error>> {
        validate_name(&name).map_err(|e| OpError::invalid(e.to_string()))?;
        check_attributes(&options.attributes).map_err(|e| OpError::invalid(e.to_string()))?;
        self.cluster
            .check_quorum_reachable()
            .map_err(OpError::from)?;
        let mut chunker = Chunker::default();
        let mut md5 = (options.md5 || options.expect_md5.is_some()).then(Md5::new);
        let mut manifest = Manifest {
            attributes: options.attributes,
            ..Manifest::default()
        };
        let mut blobs = PutBlobs::default();
        // Aborted if this put ends early (a client gone, a refusal): no
        // work outlives its request.
        let mut in_flight: VecDeque<StoreJob> = VecDeque::new();
        let mut received = 0usize;
        // A body known to be large waits for its slot before it is read:
        // uploads queued behind the slots (S3 multipart sends ten parts at
        // once) then hold no bytes of theirs meanwhile.
        let mut large_slot = match body.len_hint() {
            Some(len) if len > LARGE_PUT_BYTES as u64 => Some(self.large_put_slot().await?),
            _ => None,
        };
        // The first chunk of a body that has ended, held back: if no other
        // follows, it is stored beside the manifest.
        let mut only_chunk = None;
        loop {
            let piece = body.next().await.map_err(PutError::Body)?;
            let last = piece.is_none();
            if let Some(bytes) = &piece {
                received += bytes.len();
            }
            if large_slot.is_none() && received > LARGE_PUT_BYTES {
                large_slot = Some(self.large_put_slot().await?);
            }
            match piece {
                Some(bytes) => {
                    if let Some(md5) = &mut md5 {
                        md5.update(&bytes);
                    }
                    chunker.push(&bytes);
                }
                None => chunker.finish(),
            }
            while let Some(chunk) = chunker.next_chunk() {
                if last
                    && in_flight.is_empty()
                    && manifest.chunks.is_empty()
                    && only_chunk.is_none()
                {
                    only_chunk = Some(chunk);
                    continue;
                }
                if let Some(first) = only_chunk.take() {
                    in_flight.push_back(self.store_chunk(first));
                }
                in_flight.push_back(self.store_chunk(chunk));
                // Bounded pipeline: at most PUT_CHUNKS_IN_FLIGHT chunks in memory.
                while in_flight.len() >= PUT_CHUNKS_IN_FLIGHT {
                    let job = in_flight.pop_front().expect("non-empty");
                    record_chunk(&mut manifest, &mut blobs, job.await)?;
                    // A long upload keeps what it stored so far.
                    self.cluster
                        .keep_if_due(&mut blobs)
                        .await
                        .map_err(OpError::from)?;
                }
            }
            // Record the stores that finished (in order) after every piece,
            // and keep what is due: a slow sender's chunks wait in the
            // pipeline, and must be kept as any other.
            while in_flight.front().is_some_and(|job| job.is_finished()) {
                let job = in_flight.pop_front().expect("non-empty");
                record_chunk(&mut manifest, &mut blobs, job.await)?;
            }
            self.cluster
                .keep_if_due(&mut blobs)
                .await
                .map_err(OpError::from)?;
            if last {
                break;
            }
        }
        while let Some(job) = in_flight.pop_front() {
            record_chunk(&mut manifest, &mut blobs, job.await)?;
        }
        let only_chunk = only_chunk.map(|chunk| (ChunkId::of(&chunk), chunk));
        if let Some((id, chunk)) = &only_chunk {
            manifest
                .push(*id, chunk.len())
                .map_err(|e| OpError::invalid(e.to_string()))?;
        }
        let digest: Option<[u8; 16]> = md5.map(|md5| md5.finalize().into());
        if let (Some(expected), Some(digest)) = (options.expect_md5, digest)
            && expected != digest
        {
            return Err(OpError::new(
                ErrorCode::BadDigest,
                format!(
                    "the body's MD5 is {}, not the {} sent with it",
                    hex::encode(digest),
                    hex::encode(expected)
                ),
            )
            .into());
        }
        let etag = digest
            .filter(|_| options.md5)
            .map(|md5| Etag { md5, parts: 0 });
        Ok(self
            .commit_manifest(
                name,
                (manifest, only_chunk),
                blobs,
                by,
                (etag, options.null_version, &options.forget),
            )
            .await?)
    }

    /// Hash, seal and store `chunk` on its owners, in a task of its own
    /// (aborted with the handle: no work outlives its put).
    pub(super) fn store_chunk(&self, chunk: bytes::Bytes) -> StoreJob {
        let cluster = self.cluster.clone();
        AbortOnDropHandle::new(tokio::spawn(async move {
            let chunk_id = ChunkId::of(&chunk);
            let len = chunk.len();
            cluster
                .store_blob(chunk_id, chunk)
                .await
                .map(|stored| (chunk_id, len, stored))
        }))
    }

    /// A slot among the node's [`LARGE_PUTS_IN_FLIGHT`], waiting at most
    /// [`LARGE_PUT_WAIT_MAX`] (the bound on what large puts hold at once).
    pub(super) async fn large_put_slot(
        &self,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, OpError> {
        match tokio::time::timeout(LARGE_PUT_WAIT_MAX, self.large_puts.clone().acquire_owned())
            .await
        {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(OpError::new(
                ErrorCode::Unavailable,
                format!(
                    "the node is busy with {LARGE_PUTS_IN_FLIGHT} other large uploads; retry shortly"
                ),
            )),
        }
    }

    /// Make one version of `name` from the contents of `parts`, in order,
    /// without copying a byte (S3's CompleteMultipartUpload): their chunk
    /// lists joined under one manifest with `attributes`, the chunks kept
    /// against the collector before the record is made durable.
    pub async fn commit_parts(
        &self,
        name: String,
        parts: &[VersionRecord],
        attributes: Attributes,
        by: AccessKeyId,
        (etag, null_version, forget): (Etag, bool, &[VersionId]),
    ) -> Result<VersionRecord, OpError> {
        validate_name(&name).map_err(|e| OpError::invalid(e.to_string()))?;
        check_attributes(&attributes).map_err(|e| OpError::invalid(e.to_string()))?;
        self.cluster.check_quorum_reachable()?;
        let mut manifest = Manifest {
            attributes,
            ..Manifest::default()
        };
        for part in parts {
            let Some(content) = part.content else {
                return Err(OpError::not_found(format!("{} was removed", part.name)));
            };
            let part_manifest = self.manifest_of(content).await?;
            manifest.parts.push(part_manifest.chunks.len() as u32);
            for chunk in part_manifest.chunks {
                manifest
                    .push(chunk.id, chunk.len as usize)
                    .map_err(|e| OpError::invalid(e.to_string()))?;
            }
        }
        check_parts(&manifest).map_err(|e| OpError::invalid(e.to_string()))?;
        let blobs = self
            .cluster
            .keep_existing(manifest.chunks.iter().map(|chunk| chunk.id))
            .await?;
        self.commit_manifest(
            name,
            (manifest, None),
            blobs,
            by,
            (Some(etag), null_version, forget),
        )
        .await
    }

    /// Store the manifest on its owners (with the one chunk it names, if
    /// that is not stored yet), then make the version record durable on W
    /// indexes.
    pub(super) async fn commit_manifest(
        &self,
        name: String,
        (manifest, chunk): (Manifest, Option<(ChunkId, bytes::Bytes)>),
        mut blobs: PutBlobs,
        by: AccessKeyId,
        (etag, null_version, forget): (Option<Etag>, bool, &[VersionId]),
    ) -> Result<VersionRecord, OpError> {
        let bytes = manifest.encode();
        let content = ContentId::of(&bytes);
        let store_manifest = self.cluster.store_blob(ChunkId(content.0), bytes.into());
        match chunk {
            Some((id, chunk)) => {
                let (manifest_stored, chunk_stored) =
                    tokio::join!(store_manifest, self.cluster.store_blob(id, chunk));
                blobs.add(id, &chunk_stored?);
                blobs.add(ChunkId(content.0), &manifest_stored?);
            }
            None => blobs.add(ChunkId(content.0), &store_manifest.await?),
        }
        let record = VersionRecord {
            name,
            vid: self.cluster.next_vid()?,
            forgotten: false,
            content: Some(content),
            size: manifest.size,
            by: Some(by),
            etag,
            null_version,
        };
        let records = with_forgotten(&record, forget);
        self.cluster.commit_put(records, &mut blobs).await?;
        tracing::debug!(name = %record.name, version = %record.vid, size = record.size, "put");
        Ok(record)
    }
}

pub(super) fn record_chunk(
    manifest: &mut Manifest,
    blobs: &mut PutBlobs,
    stored: Result<Result<(ChunkId, usize, Stored), ClusterError>, tokio::task::JoinError>,
) -> Result<(), OpError> {
    let (chunk_id, len, stored) = stored
        .map_err(|e| OpError::new(ErrorCode::Internal, format!("a store task failed: {e}")))??;
    blobs.add(chunk_id, &stored);
    manifest
        .push(chunk_id, len)
        .map_err(|e| OpError::invalid(e.to_string()))
}
