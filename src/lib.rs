//! dfs: a decentralized, content-addressed, replicated and versioned file store.
//!
//! The components, from the bottom up (ARCHITECTURE.md has the invariants):
//! - [`env`](mod@env): the I/O seam. Disk, network, clock, randomness and the blocking
//!   executor; production and simulation implement it.
//! - [`limits`]: every bound, with its reason.
//! - [`marks`]: coverage marks on the paths of fixed bugs, checked by
//!   the simulation's regression seeds.
//! - [`cas`]: content addressing (pure): chunk and content ids, the FastCDC
//!   chunker, manifests.
//! - [`store`]: the chunk store on a `Disk`: sealed at rest, durable puts,
//!   verified reads, quarantine.
//! - [`meta`]: the version index: hybrid logical clock, records, CRDT merge
//!   (pure), persisted in redb over the `Disk`.
//! - [`wire`]: frames and messages, the protocol specification.
//! - [`secure`]: Noise handshake and the encrypted record stream.
//! - [`keys`]: node identity and cluster key files.
//! - [`decode_checks`]: the properties fuzzing checks on every decoder.
//! - [`peer`]: connections between nodes and SWIM membership (foca).
//! - [`placement`]: rendezvous hashing: which nodes hold a blob.
//! - [`cluster`]: replication: quorum writes of blobs and records, reads
//!   with repair, anti-entropy.
//! - [`node`]: the server; [`client`]: its client, used by the CLI and tests.
//! - [`metrics`]: what a node counts, for `/metrics`; [`health`]: whether a
//!   node is healthy, from its status report.
//!
//! The `dfs-node` binary (`src/main.rs`, with its own modules in `src/cli/`)
//! is the command line over these, with the production edges (S3 and the
//! admin listener: `/metrics`, `/health`, `/ready` and the status page).

pub mod cas;
pub mod client;
pub mod cluster;
pub mod decode_checks;
pub mod env;
pub mod health;
pub mod keys;
pub mod limits;
pub mod marks;
pub mod meta;
pub mod metrics;
pub mod node;
pub mod peer;
pub mod placement;
pub mod secure;
pub mod store;
pub mod wire;
