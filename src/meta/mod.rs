//! The version index (DESIGN §8): every file name's history of versions.
//!
//! - [`VersionId`] and [`Hlc`]: hybrid logical clock ids, totally ordered.
//! - [`VersionRecord`]: one version of a name: content, size, or a tombstone.
//! - [`History`] and [`IndexState`]: the pure CRDT. A history is the union of
//!   its records minus those below its prune floor; floors merge by max.
//!   Merge is commutative, associative and idempotent (proptested), so
//!   replicas that saw the same records agree exactly.
//! - [`VersionIndex`]: the CRDT persisted in redb, through a redb
//!   `StorageBackend` over the [`Disk`](crate::env::Disk) seam, so the
//!   simulation's crash and disk-fault model covers metadata too.
//! - [`digest`]: bucketed digests for anti-entropy.
//! - [`KeyRecord`]: an access key as replicated cluster state (last writer
//!   wins per key), kept in the same database.

mod backend;
mod crdt;
pub mod digest;
pub(crate) mod group_commit;
mod hlc;
mod index;
mod key_record;
mod record;
pub(crate) mod redb_file;

pub use crdt::{History, IndexState};
pub use hlc::Hlc;
pub use index::{IndexError, ListFrom, MergeOutcome, VersionIndex};
pub use key_record::{KEY_RECORD_FORMAT, KeyRecord};
pub use record::{
    Etag, Floor, NameError, RECORD_FORMAT, RecordKey, VersionId, VersionRecord, VersionSelector,
    validate_name,
};
