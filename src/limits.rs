//! Every bound in one place, each with the reason for its value (DESIGN §10).
//!
//! A limit that protects memory is checked *before* the allocation it guards.

use std::time::Duration;

/// Smallest content-defined chunk. Below this, per-chunk overhead (a file, a
/// manifest entry, a placement decision) outweighs dedup gains.
pub const CHUNK_MIN_BYTES: usize = 256 * 1024;
/// Target average chunk: 1 MiB keeps manifests small (36 bytes per MiB) while a
/// one-byte edit still rewrites only about one MiB.
pub const CHUNK_AVG_BYTES: usize = 1024 * 1024;
/// Largest chunk: bounds the memory one chunk in flight can take.
pub const CHUNK_MAX_BYTES: usize = 4 * 1024 * 1024;

/// Chunks in one manifest. A manifest is stored and read as one blob, so it must
/// stay small: 262 144 entries x 36 bytes is about 9 MiB, which is a file of at
/// least 64 GiB (all chunks minimal) and typically 256 GiB.
pub const MANIFEST_CHUNKS_MAX: usize = 262_144;
/// Upper bound of an encoded manifest (entries plus varint headers).
pub const MANIFEST_BYTES_MAX: usize = MANIFEST_CHUNKS_MAX * 48 + 64;

/// Largest blob the store accepts: a chunk or a manifest.
pub const BLOB_BYTES_MAX: usize = if MANIFEST_BYTES_MAX > CHUNK_MAX_BYTES {
    MANIFEST_BYTES_MAX
} else {
    CHUNK_MAX_BYTES
};

/// Largest application frame. A manifest travels in one frame, and so will a
/// whole chunk between peers; the slack covers the envelope around the bytes.
pub const FRAME_BYTES_MAX: usize = BLOB_BYTES_MAX + 64 * 1024;

/// Size of the data frames a client sends during a put. Small enough that a
/// frame is a few Noise records, large enough that per-frame cost is invisible.
pub const PUT_DATA_FRAME_BYTES: usize = 256 * 1024;

/// Chunks of one put that may be hashed, sealed and written concurrently.
/// Each job holds one chunk and its sealed copy (at most 2 x 4 MiB). Two
/// keep two cores busy hashing, but each chunk also waits for its
/// `sync_data` and its replicas' acknowledgements; four hide that latency.
pub const PUT_CHUNKS_IN_FLIGHT: usize = 4;

/// Chunks of one get read and authenticated ahead of the network send
/// (each at most 4 MiB), for the same reason: a fetch from a peer waits on
/// the network, not on this node's CPU.
pub const GET_CHUNKS_PREFETCH: usize = 4;

/// Bytes of chunks all the reads of one node hold together, beyond one
/// chunk each: fetched ahead, or queued in an S3 response. Past it a read
/// holds one chunk at a time (the one it sends next): many reads at once
/// (S3 clients download in 10 parallel ranges) slow down instead of
/// growing the node. 16 MiB keeps one fast reader 4 chunks ahead; S3's
/// 10 ranges downloaded as fast with 16 as with 24 (1 node, boto3), and
/// the node's peak RSS fell from 58-66 to 51-53 MiB with the queues
/// counted.
pub const READ_AHEAD_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Puts (any protocol) past [`LARGE_PUT_BYTES`] that stream at once on a
/// node. Each holds up to a chunk being cut and its chunks in flight (about
/// 8 MiB with 1 MiB chunks, 40 MiB at worst); clients upload big objects
/// in parallel parts (boto3: 10), and two keep both cores busy while the
/// node's memory stays bounded whatever they send. A put waits for a slot
/// (not reading its body, so the sender waits too), at most
/// [`LARGE_PUT_WAIT_MAX`]. Small puts never wait: their cost is latency.
pub const LARGE_PUTS_IN_FLIGHT: usize = 2;

/// A put becomes large once this much of its body has arrived, or when
/// its frontend knows its length is more (an HTTP Content-Length): then
/// it waits for its slot before reading any of it.
pub const LARGE_PUT_BYTES: usize = 256 * 1024;

/// How long a large put waits for a slot before it is refused as busy.
pub const LARGE_PUT_WAIT_MAX: Duration = Duration::from_secs(60);

/// Connections one node serves at once. Each may hold about
/// `FRAME_BYTES_MAX + 2 x CHUNK_MAX_BYTES x PUT_CHUNKS_IN_FLIGHT` (a chunk
/// and its sealed copy per job), about 45 MiB, so 64 bound the worst case
/// near 2.9 GiB; the common case (1 MiB chunks, small frames) is a tenth.
pub const CONNECTIONS_MAX: usize = 64;

/// A Noise handshake must finish within this time, or the connection is
/// dropped (slowloris defence: an idle half-open peer cannot hold a slot).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes one node runs at once. A socket takes a serving slot
/// ([`CONNECTIONS_MAX`]) only once authenticated, so sockets without the
/// key compete only for these (a few KiB each).
pub const HANDSHAKES_MAX: usize = 256;

/// Handshakes from one IP address at once: one host opening sockets it
/// never authenticates cannot take every handshake slot. Above the
/// concurrency of a client host's burst of connections.
pub const HANDSHAKES_PER_HOST_MAX: usize = 32;

/// A whole frame must arrive within this time once the wait for it began
/// (each read also has [`IO_TIMEOUT`]): a connection that trickles bytes,
/// or sends empty records, cannot hold its slot. Long enough for the
/// largest frame (about 4 MiB) at 100 KB/s.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(60);

/// Any single network read or write of an established connection.
/// Partitions drop packets silently: without this, a request would wait forever.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a stopping node waits for in-flight requests to drain.
pub const SHUTDOWN_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest file name in bytes (UTF-8). Names are index keys replicated to
/// every node; a bound keeps records small. Room for any S3 object: a
/// bucket (63), `/`, and a key (1024).
pub const NAME_BYTES_MAX: usize = 1088;

/// Stubs of deleted versions a quorum read's answer carries above the
/// current record (a name whose newest thousand versions were all deleted
/// for good answers without its current: the reader then goes by the
/// other answers).
pub const QUORUM_ANSWER_STUBS_MAX: usize = 1000;

/// Records in one listing or history reply; above it the reply is truncated
/// and says so, so that one reply always fits in one frame.
pub const RECORDS_PER_REPLY_MAX: usize = 16_384;

/// Dialing a node: a live node on a reachable network answers in
/// milliseconds; past this, report it unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// redb's page cache for the version index. redb's default (1 GiB)
/// would let the cache grow with every page an anti-entropy scan reads;
/// pages past this are read again from the OS page cache.
pub const INDEX_CACHE_BYTES: usize = 32 << 20;

/// redb's page cache for the small-blob table: its branch pages, mostly
/// (a blob's value is read once per get; the OS caches the file too).
pub const SMALL_BLOB_CACHE_BYTES: usize = 8 << 20;

/// Blobs up to this size are kept in the small-blob table, not a file
/// each (the default of `--small-blob-bytes-max`; see `store::small`).
/// Above it the table takes more space than files: redb gives a value a
/// page of a power of two, often about twice its size (measured with
/// `store::table_space`: 1.8-2.2x for 1-16 KiB blobs, 1.1x at 8,000 B,
/// 2.6-3.1x at 33-64 KiB, where files take 1.0-1.25x), while at 8 KiB and
/// below files waste as much (2x at 4 KiB, 4x at 1 KiB: whole blocks).
pub const SMALL_BLOB_BYTES_DEFAULT: usize = 8 << 10;

/// Free disk space below which small blobs are written as files rather
/// than into the table (`store::ChunkStore::write`): redb turns a write
/// that finds no space into a failure of the whole database, whose
/// reopen reads all of it.
pub const SMALL_BLOB_TABLE_FREE_MIN_BYTES: u64 = 256 << 20;

/// The largest `--small-blob-bytes-max` accepted: a redb value is read
/// whole into memory (a transaction holds at most
/// `meta::group_commit::BATCH_WEIGHT_MAX`, 8 MiB, past its first change).
pub const SMALL_BLOB_BYTES_MAX: usize = 1 << 20;

// Peers and membership (DESIGN §7).

/// Frames queued to one peer connection's writer. Past it, one-way
/// datagrams are dropped (SWIM tolerates loss) and requests wait: this is
/// the backpressure between a node and a slow peer.
pub const PEER_QUEUE_FRAMES: usize = 128;

/// Requests this node has in flight on one peer connection, awaiting a
/// reply. Bounds the pending-reply table.
pub const PEER_REQUESTS_IN_FLIGHT: usize = 256;

/// Datagrams held for a peer while its connection is being dialed. SWIM
/// resends what matters, so a few suffice (the announce that starts a join).
pub const PEER_DIAL_BACKLOG: usize = 16;

/// Peer requests (blob stores and fetches, index merges) one connection
/// serves at once: each may hold a blob, so this bounds memory per peer
/// (8 x 4 MiB) while letting a coordinator's pipelined chunks overlap.
pub const PEER_HANDLERS_PER_CONNECTION: usize = 8;

/// Blob writes to this node's disk submitted at once, from every client
/// and peer together. A write's permit goes with its disk job, which runs
/// to its end even when the request that asked for it was dropped (a
/// client or peer that disconnected): so however often a client
/// reconnects, at most this many abandoned blobs wait on a slow disk,
/// and the requests behind them wait (at most [`DISK_WRITE_WAIT_MAX`], and
/// are cancelled with their request) holding nothing but their buffer.
pub const DISK_WRITES_IN_FLIGHT: usize = 32;

/// Index merges of async callers (a put's record, a peer's
/// `ApplyRecords`, an anti-entropy pull) queued or being committed at
/// once: a queued merge runs to its end even when its caller is gone, so
/// this bounds what peers that keep reconnecting can pile up on a stalled
/// disk. A merge waits for a slot at most [`DISK_WRITE_WAIT_MAX`], then
/// fails (the write it belongs to is not acknowledged by this node).
pub const INDEX_MERGES_IN_FLIGHT: usize = 256;

/// How long a blob write waits for one of those slots before it fails as
/// busy: well inside [`PEER_REQUEST_TIMEOUT`], so a peer gets an answer,
/// and the connection whose handler waited goes back to reading before
/// its keepalive could fail.
pub const DISK_WRITE_WAIT_MAX: Duration = Duration::from_secs(5);

/// A peer connection with no traffic sends a `Ping` this often, well inside
/// [`IO_TIMEOUT`], so a healthy idle connection never times out and a dead
/// one is noticed within one ping timeout.
pub const PEER_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);

/// A request to a peer gets its reply within this time or fails (the caller
/// then tries another replica).
pub const PEER_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Redial backoff: starts here and doubles per failure...
pub const DIAL_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// ...up to here. Each delay is jittered to 50-100% of its value (Env RNG)
/// so that nodes restarted together do not redial in lockstep.
pub const DIAL_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Members one node tracks and persists. A cluster is dozens of nodes; the
/// bound keeps a hostile key holder from growing the table without limit.
pub const MEMBERS_MAX: usize = 1024;

/// Longest advertised address (`host:port`) accepted from a peer.
pub const PEER_ADDR_BYTES_MAX: usize = 256;

/// Largest SWIM datagram produced and accepted: room for the header and a
/// few dozen piggybacked member updates.
pub const SWIM_PACKET_BYTES_MAX: usize = 16 * 1024;

/// SWIM datagrams queued from connections to the membership task; past it,
/// they are dropped (SWIM treats that as packet loss).
pub const SWIM_INBOX: usize = 1024;

/// SWIM timers pending at once. foca keeps a handful per probe period; the
/// bound only guards against a logic error turning into unbounded memory.
pub const SWIM_TIMERS_MAX: usize = 4096;

/// The most a node's clock may run ahead of another's. A version record or
/// prune floor from a peer whose id is further ahead of this node's clock
/// is refused (not merged, not acknowledged, logged): one node with a
/// clock an hour fast would otherwise win every write for an hour and drag
/// every other node's version ids along. Anti-entropy offers it again, so
/// it is merged once this clock catches up; a put through the fast node
/// fails with the reason when too few nodes take its record. Within the
/// offset, two writes to the same name on different nodes less than this
/// far apart may be ordered against real time (last writer by version id
/// wins); a write made after another was seen always sorts after it (the
/// hybrid clock).
pub const CLOCK_OFFSET_MAX: Duration = Duration::from_secs(60);

/// Bytes of record keys (or records) one anti-entropy message carries,
/// counted as name length + [`SYNC_ENTRY_OVERHEAD`] each. Half a frame: a
/// record encodes to less than twice its key, so the records fetched for
/// one batch of keys fit in one reply frame. A larger difference takes
/// more rounds.
pub const SYNC_BATCH_BYTES: usize = FRAME_BYTES_MAX / 2;

/// Budgeted bytes per key besides its name (a version id is 44 bytes).
pub const SYNC_ENTRY_OVERHEAD: usize = 64;

/// How often a node compares its index with one random alive peer.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(2);

/// How often the repair loop scans the local store.
pub const REPAIR_INTERVAL: Duration = Duration::from_secs(5);

/// Contents of records refused as from beyond the clock offset that a node
/// counts as referenced for its garbage collector (see
/// [`CLOCK_OFFSET_MAX`]); past this, anti-entropy passes with the sender
/// stay incomplete instead, and collection waits.
pub const DEFERRED_CONTENTS_MAX: usize = 4096;

/// How often the scrub verifies its next batch of stored blobs.
pub const SCRUB_INTERVAL: Duration = Duration::from_secs(10);

/// Blobs one scrub round reads back (at most 64 MiB).
pub const SCRUB_BATCH: usize = 16;

/// Blobs one verified `HasBlobs` may name: the responder reads each (up to
/// 4 MiB) before it answers.
pub const VERIFY_BATCH: usize = 16;

/// Blobs one repair round examines (and ids in one `HasBlobs`, 32 bytes
/// each); a larger store is covered over several rounds.
pub const REPAIR_BATCH: usize = 4096;

/// Blob copies one repair round sends: the rate limit that keeps repair
/// from crowding out client traffic (at most 64 x 4 MiB per round).
pub const REPAIR_COPIES_PER_ROUND: usize = 64;

/// A blob no retained version references is deleted only after it has
/// been seen unreferenced for this long (a put in flight stores its chunks
/// before its version exists).
pub const GC_GRACE: Duration = Duration::from_secs(600);

// Access keys.

/// Access keys a cluster creates, removed keys' tombstones included (every
/// node holds all of them). Checked where a key is created, so keys created
/// at once on several nodes can pass it; [`ACCESS_KEY_RECORDS_MAX`] leaves
/// them room.
pub const ACCESS_KEYS_CREATED_MAX: usize = 512;

/// Key records a node takes or sends in one exchange: twice what creation
/// allows. Anti-entropy sends them all in one frame (a record is at most
/// about 1.2 KiB, so 1024 fit in 1.3 MiB).
pub const ACCESS_KEY_RECORDS_MAX: usize = 2 * ACCESS_KEYS_CREATED_MAX;

// Status.

/// How long a node waits for a member's status report (the status page,
/// `dfs-node status`): a member that does not answer in time is shown as
/// unreachable, not waited for.
pub const MEMBER_REPORT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long gathered member reports are reused: however many status pages
/// are open, a node asks each member at most once per this period.
pub const MEMBER_REPORTS_REUSED_FOR: Duration = Duration::from_secs(1);

/// How long a status report or a scrape waits for the file system's size
/// (statvfs) before it reports it unknown: a hung disk must not hang the
/// admin endpoints.
pub const DISK_SPACE_TIMEOUT: Duration = Duration::from_secs(1);
