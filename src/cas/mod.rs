//! Content addressing, pure (no I/O): what a file's bytes are called.
//!
//! - [`ChunkId`]: SHA-256 of a chunk's plaintext.
//! - [`Chunker`]: streaming FastCDC (v2020) cutting at content-defined
//!   boundaries, so an edit in the middle of a large file changes only the
//!   chunks around it.
//! - [`Manifest`]: the ordered list of a file's chunks; its SHA-256 is the
//!   file's [`ContentId`]. An empty file has a manifest (with no chunks) too.

mod chunker;
mod ids;
mod manifest;

pub use chunker::Chunker;
pub use ids::{ChunkId, ContentId, IdParseError, sha256};
pub use manifest::{
    ATTRIBUTE_BYTES_MAX, ATTRIBUTES_MAX, Attributes, ChunkRef, Manifest, ManifestError, PARTS_MAX,
    check_attributes, check_parts,
};
