//! Authenticated, encrypted streams (DESIGN §6).
//!
//! Every connection starts with `Noise_XXpsk3_25519_ChaChaPoly_SHA256`
//! (snow: X25519 and the handshake hash from its pure-Rust resolver, the
//! record cipher from ring's ChaCha20-Poly1305, randomness from the [`Env`]).
//! The static keys identify the two ends ([`NodeId`]); the psk says what
//! the initiator is:
//!
//! - a **node** proves it holds the cluster key (the psk is derived from it);
//! - a **client** proves it holds an access key's secret (the psk is derived
//!   from that: [`SecretKey::client_psk`](crate::keys::SecretKey::client_psk)).
//!
//! The initiator says which in its first message's payload ([`Party`],
//! clear text but bound into the handshake hash: an access key *id*, never
//! a secret), so the responder knows which psk to expect in the third. The
//! responder's second message carries its [`Verdict`] (encrypted, not yet
//! authenticated by the psk): an unknown or removed key is refused there,
//! with the reason. A wrong key or secret fails the third message; the
//! initiator learns that from the missing confirmation record the responder
//! sends after it, so both sides report a wrong key as such instead of as a
//! broken pipe later.
//!
//! Handshake messages travel as `u16 big-endian length ‖ message`.
//!
//! After the handshake, [`SecureStream`] carries [frames](crate::wire::frame)
//! split into Noise transport records of at most 65 535 bytes, encrypted and
//! written four records at a time, so a connection's ciphertext buffer stays
//! near 256 KiB however large the frame. Every read and write has a timeout;
//! any bad record (truncated, bad tag, bad length) fails the stream, and the
//! caller closes the connection.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use snow::params::NoiseParams;
use snow::resolvers::{CryptoResolver, DefaultResolver, RingResolver};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, ReadHalf, WriteHalf};

use serde::{Deserialize, Serialize};

use crate::env::{BoxStream, Env, Random};
use crate::keys::credentials::Credentials;
use crate::keys::{AccessKeyId, ClusterKey, EnvRng, KEY_BYTES, NodeId, StaticKeypair};
use crate::limits::{FRAME_TIMEOUT, HANDSHAKE_TIMEOUT, IO_TIMEOUT};
use crate::wire::{self, Envelope, FrameDecoder, FrameError, WireError};

const NOISE_PARAMS: &str = "Noise_XXpsk3_25519_ChaChaPoly_SHA256";
/// Largest Noise message (the spec's limit).
const NOISE_MESSAGE_MAX: usize = 65_535;
const NOISE_TAG_BYTES: usize = 16;
/// Plaintext bytes one transport record carries at most.
const RECORD_PLAINTEXT_MAX: usize = NOISE_MESSAGE_MAX - NOISE_TAG_BYTES;
/// Records encrypted before each write (about 256 KiB of ciphertext).
const RECORDS_PER_WRITE: usize = 4;
/// What the responder's confirmation record says.
const CONFIRMATION: &[u8] = b"dfs ok";

#[derive(Debug, thiserror::Error)]
pub enum SecureError {
    #[error("the handshake did not finish within {0:?}")]
    HandshakeTimeout(Duration),
    #[error(
        "the handshake was refused: the peer does not share this cluster key (or is not a dfs node): {0}"
    )]
    HandshakeRefused(String),
    #[error("the node refused access key {id}: {reason}")]
    AccessKeyRefused { id: AccessKeyId, reason: String },
    #[error("refused a connection: {0}")]
    Refusing(String),
    #[error("the connection was idle past the {0:?} timeout")]
    Timeout(Duration),
    #[error("the peer closed the connection")]
    Closed,
    #[error("connection failed: {0}")]
    Io(#[from] io::Error),
    #[error("a record failed authentication (corrupted or forged traffic)")]
    BadRecord,
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Wire(#[from] WireError),
}

fn params() -> NoiseParams {
    NOISE_PARAMS
        .parse()
        .expect("the Noise parameter string is valid")
}

/// snow's default primitives, with the RNG replaced by the Env's.
struct EnvResolver {
    rng: Arc<dyn Random>,
}

impl CryptoResolver for EnvResolver {
    fn resolve_rng(&self) -> Option<Box<dyn snow::types::Random>> {
        Some(Box::new(EnvRng(self.rng.clone())))
    }
    fn resolve_dh(&self, choice: &snow::params::DHChoice) -> Option<Box<dyn snow::types::Dh>> {
        DefaultResolver.resolve_dh(choice)
    }
    fn resolve_hash(
        &self,
        choice: &snow::params::HashChoice,
    ) -> Option<Box<dyn snow::types::Hash>> {
        DefaultResolver.resolve_hash(choice)
    }
    /// ring's ChaCha20-Poly1305 (assembly) runs 1.65x the portable
    /// RustCrypto one snow defaults to (1610 vs 970 MiB/s on this
    /// project's CI machine), and every byte of a put or get crosses it
    /// twice (sender and receiver).
    fn resolve_cipher(
        &self,
        choice: &snow::params::CipherChoice,
    ) -> Option<Box<dyn snow::types::Cipher>> {
        RingResolver
            .resolve_cipher(choice)
            .or_else(|| DefaultResolver.resolve_cipher(choice))
    }
}

fn builder(env: &Env) -> snow::Builder<'static> {
    snow::Builder::with_resolver(
        params(),
        Box::new(EnvResolver {
            rng: env.rng.clone(),
        }),
    )
}

/// Which end of the handshake this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Initiator,
    Responder,
}

async fn write_handshake(io: &mut BufReader<BoxStream>, message: &[u8]) -> io::Result<()> {
    io.write_all(&(message.len() as u16).to_be_bytes()).await?;
    io.write_all(message).await?;
    io.flush().await
}

async fn read_handshake(io: &mut BufReader<BoxStream>, buffer: &mut [u8]) -> io::Result<usize> {
    let mut len = [0u8; 2];
    io.read_exact(&mut len).await?;
    let len = u16::from_be_bytes(len) as usize;
    io.read_exact(&mut buffer[..len]).await?;
    Ok(len)
}

/// Who the initiator of a connection is, as its first handshake message
/// says (a claim the psk then proves).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Party {
    /// A node of the cluster: holds the cluster key.
    Node,
    /// A user's client: holds this access key's secret.
    Client(AccessKeyId),
}

/// The responder's answer in the second handshake message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Verdict {
    /// Go on; the third message proves the credential.
    Proceed,
    /// The claimed credential is not accepted, and why.
    Refused(String),
}

/// What an initiator proves.
#[derive(Debug, Clone, Copy)]
pub enum Credential<'a> {
    Node(&'a ClusterKey),
    Client(&'a Credentials),
}

impl Credential<'_> {
    fn party(&self) -> Party {
        match self {
            Credential::Node(_) => Party::Node,
            Credential::Client(credentials) => Party::Client(credentials.id),
        }
    }

    fn psk(&self) -> [u8; KEY_BYTES] {
        match self {
            Credential::Node(key) => node_psk(key),
            Credential::Client(credentials) => credentials.secret.client_psk(),
        }
    }
}

/// The psk nodes handshake with.
pub fn node_psk(cluster_key: &ClusterKey) -> [u8; KEY_BYTES] {
    cluster_key.derive("dfs noise psk v1")
}

/// What a responder checks an initiator's claim against.
pub trait Authority: Send + Sync {
    /// The psk of nodes (from the cluster key).
    fn node_psk(&self) -> [u8; KEY_BYTES];
    /// The psk of access key `id`, or why the key is refused (unknown,
    /// removed).
    fn client_psk(&self, id: &AccessKeyId) -> Result<[u8; KEY_BYTES], String>;
}

/// An [`Authority`] that knows nodes only (a node before its keys are
/// loaded, and tests).
pub struct NodesOnly(pub ClusterKey);

impl Authority for NodesOnly {
    fn node_psk(&self) -> [u8; KEY_BYTES] {
        node_psk(&self.0)
    }

    fn client_psk(&self, _id: &AccessKeyId) -> Result<[u8; KEY_BYTES], String> {
        Err("this endpoint accepts nodes only".into())
    }
}

/// Longest [`Party`] or [`Verdict`] payload read (a refusal reason is a
/// line of text).
const PAYLOAD_BYTES_MAX: usize = 1024;

/// Open a connection as `credential`'s holder, within [`HANDSHAKE_TIMEOUT`].
pub async fn connect(
    env: &Env,
    stream: BoxStream,
    identity: &StaticKeypair,
    credential: Credential<'_>,
) -> Result<SecureStream, SecureError> {
    match tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        run_initiator(env, stream, identity, credential),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => Err(SecureError::HandshakeTimeout(HANDSHAKE_TIMEOUT)),
    }
}

/// Accept a connection, within [`HANDSHAKE_TIMEOUT`]: returns the stream
/// and who proved to be at the other end. A client (by its first message)
/// waits `client_penalty` first: its host's handshakes kept failing.
pub async fn accept(
    env: &Env,
    stream: BoxStream,
    identity: &StaticKeypair,
    authority: &dyn Authority,
    client_penalty: Duration,
) -> Result<(SecureStream, Party), SecureError> {
    match tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        run_responder(env, stream, identity, authority, client_penalty),
    )
    .await
    {
        Ok(result) => result,
        Err(_) => Err(SecureError::HandshakeTimeout(HANDSHAKE_TIMEOUT)),
    }
}

/// The handshake's buffers and I/O, for either side.
struct Exchange {
    io: Io,
    message: Vec<u8>,
    payload: Vec<u8>,
}

impl Exchange {
    fn new(stream: BoxStream) -> Self {
        Self {
            io: BufReader::with_capacity(2 * NOISE_MESSAGE_MAX, stream),
            message: vec![0u8; NOISE_MESSAGE_MAX],
            payload: vec![0u8; NOISE_MESSAGE_MAX],
        }
    }

    async fn write(
        &mut self,
        noise: &mut snow::HandshakeState,
        payload: &[u8],
    ) -> Result<(), SecureError> {
        let len = noise
            .write_message(payload, &mut self.message)
            .map_err(refused)?;
        write_handshake(&mut self.io, &self.message[..len]).await?;
        Ok(())
    }

    /// Read one handshake message; returns its payload's length.
    async fn read(&mut self, noise: &mut snow::HandshakeState) -> Result<usize, SecureError> {
        let len = read_handshake(&mut self.io, &mut self.message)
            .await
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => {
                    SecureError::HandshakeRefused("the peer closed the connection".into())
                }
                _ => SecureError::Io(e),
            })?;
        noise
            .read_message(&self.message[..len], &mut self.payload)
            .map_err(refused)
    }
}

fn refused(e: snow::Error) -> SecureError {
    SecureError::HandshakeRefused(e.to_string())
}

fn noise_state(
    env: &Env,
    identity: &StaticKeypair,
    role: Role,
) -> Result<snow::HandshakeState, SecureError> {
    let builder = builder(env)
        .local_private_key(&identity.private)
        .expect("a static key has a valid length");
    match role {
        Role::Initiator => builder.build_initiator(),
        Role::Responder => builder.build_responder(),
    }
    .map_err(refused)
}

// XX: -> e; <- e, ee, s, es; -> s, se, psk.

async fn run_initiator(
    env: &Env,
    stream: BoxStream,
    identity: &StaticKeypair,
    credential: Credential<'_>,
) -> Result<SecureStream, SecureError> {
    let mut noise = noise_state(env, identity, Role::Initiator)?;
    noise
        .set_psk(3, &credential.psk())
        .expect("a 32-byte psk at position 3");
    let mut exchange = Exchange::new(stream);
    let party = postcard::to_stdvec(&credential.party()).expect("a party always serializes");
    exchange.write(&mut noise, &party).await?;
    let len = exchange.read(&mut noise).await?;
    let verdict: Verdict = decode_payload(&exchange.payload[..len])?;
    if let Verdict::Refused(reason) = verdict {
        // Not authenticated yet (the psk is proven in the third message):
        // shown as text, never as terminal control sequences.
        let reason: String = reason
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(300)
            .collect();
        return Err(match credential {
            Credential::Client(credentials) => SecureError::AccessKeyRefused {
                id: credentials.id,
                reason,
            },
            Credential::Node(_) => SecureError::HandshakeRefused(reason),
        });
    }
    exchange.write(&mut noise, &[]).await?;
    let mut stream = finish(noise, exchange)?;
    // The confirmation record: only a responder that accepted the third
    // message (and so the psk) can send it.
    let no_confirmation = |detail: String| match credential {
        Credential::Client(credentials) => SecureError::AccessKeyRefused {
            id: credentials.id,
            reason: format!("wrong secret for this key, or the key was just removed ({detail})"),
        },
        Credential::Node(_) => SecureError::HandshakeRefused(detail),
    };
    let got = stream.reader.read_record().await.map_err(|e| match e {
        SecureError::Closed | SecureError::Io(_) | SecureError::BadRecord => {
            no_confirmation("the peer closed the connection after the handshake".into())
        }
        other => other,
    })?;
    if !got {
        return Err(no_confirmation("no confirmation from the peer".into()));
    }
    if stream.reader.plaintext.split().as_ref() != CONFIRMATION {
        return Err(SecureError::HandshakeRefused(
            "unexpected confirmation".into(),
        ));
    }
    Ok(stream)
}

async fn run_responder(
    env: &Env,
    stream: BoxStream,
    identity: &StaticKeypair,
    authority: &dyn Authority,
    client_penalty: Duration,
) -> Result<(SecureStream, Party), SecureError> {
    let mut noise = noise_state(env, identity, Role::Responder)?;
    let mut exchange = Exchange::new(stream);
    let len = exchange.read(&mut noise).await?;
    let party: Result<Party, String> = decode_payload(&exchange.payload[..len])
        .map_err(|_| "the first handshake message names no party: a client needs an access key (DFS_ACCESS_KEY_ID), and this node a newer dfs".to_string())
        .and_then(|party| match party {
            Party::Client(id) if !id.is_well_formed() => Err("malformed access key id".into()),
            party => Ok(party),
        });
    if !matches!(party, Ok(Party::Node)) && !client_penalty.is_zero() {
        tokio::time::sleep(client_penalty).await;
    }
    let psk = party.and_then(|party| {
        let psk = match &party {
            Party::Node => Ok(authority.node_psk()),
            Party::Client(id) => authority.client_psk(id),
        }?;
        Ok((party, psk))
    });
    let (party, psk) = match psk {
        Ok(accepted) => accepted,
        Err(reason) => {
            let verdict = postcard::to_stdvec(&Verdict::Refused(reason.clone()))
                .expect("a verdict always serializes");
            // Best effort: the refusal is what the initiator should read.
            let _ = exchange.write(&mut noise, &verdict).await;
            return Err(SecureError::Refusing(reason));
        }
    };
    noise.set_psk(3, &psk).expect("a 32-byte psk at position 3");
    let proceed = postcard::to_stdvec(&Verdict::Proceed).expect("a verdict always serializes");
    exchange.write(&mut noise, &proceed).await?;
    exchange
        .read(&mut noise)
        .await
        .map_err(|e| match (&e, party) {
            (SecureError::HandshakeRefused(_), Party::Client(id)) => {
                SecureError::Refusing(format!("access key {id} presented a wrong secret"))
            }
            _ => e,
        })?;
    let mut stream = finish(noise, exchange)?;
    stream.writer.write_records(CONFIRMATION).await?;
    with_timeout(stream.writer.io.flush()).await?;
    Ok((stream, party))
}

/// Decode a handshake payload ([`Party`] or [`Verdict`]): bytes from an
/// unauthenticated stranger, capped before they are decoded.
pub fn decode_payload<T: serde::de::DeserializeOwned + Serialize>(
    payload: &[u8],
) -> Result<T, SecureError> {
    if payload.len() > PAYLOAD_BYTES_MAX {
        return Err(SecureError::HandshakeRefused(
            "oversize handshake payload".into(),
        ));
    }
    wire::decode_canonical(payload)
        .map_err(|e| SecureError::HandshakeRefused(format!("undecodable handshake payload: {e}")))
}

/// The transport state and split stream after the three messages.
fn finish(noise: snow::HandshakeState, exchange: Exchange) -> Result<SecureStream, SecureError> {
    let io = exchange.io;
    let remote = NodeId::from_public_key(
        noise
            .get_remote_static()
            .expect("XX always reveals the remote static key"),
    );
    let noise = Arc::new(noise.into_stateless_transport_mode().map_err(refused)?);
    let (read_half, write_half) = tokio::io::split(io);
    Ok(SecureStream {
        reader: SecureReader {
            io: read_half,
            noise: noise.clone(),
            nonce: 0,
            remote,
            plaintext: BytesMut::new(),
            record: vec![0u8; NOISE_MESSAGE_MAX],
            frames: FrameDecoder,
        },
        writer: SecureWriter {
            io: write_half,
            noise,
            nonce: 0,
            outgoing: Vec::new(),
        },
    })
}

type Io = BufReader<BoxStream>;

/// An established encrypted stream carrying frames, used by one task at a
/// time (a client connection). [`SecureStream::into_split`] gives a reader
/// and a writer for two tasks (a peer connection, DESIGN §6: "a reader owns
/// its socket").
pub struct SecureStream {
    reader: SecureReader,
    writer: SecureWriter,
}

/// The receiving half: decrypts records and cuts frames.
pub struct SecureReader {
    io: ReadHalf<Io>,
    noise: Arc<snow::StatelessTransportState>,
    /// Noise nonce of the next record to read (each direction counts its own).
    nonce: u64,
    remote: NodeId,
    /// Decrypted bytes not yet cut into frames.
    plaintext: BytesMut,
    /// One encrypted record being read.
    record: Vec<u8>,
    frames: FrameDecoder,
}

/// The sending half: frames and encrypts.
pub struct SecureWriter {
    io: WriteHalf<Io>,
    noise: Arc<snow::StatelessTransportState>,
    /// Noise nonce of the next record to write.
    nonce: u64,
    /// Encrypted records being written.
    outgoing: Vec<u8>,
}

impl SecureStream {
    /// The peer's identity, from its static key.
    pub fn remote(&self) -> NodeId {
        self.reader.remote
    }

    /// Split for concurrent reading and writing.
    pub fn into_split(self) -> (SecureReader, SecureWriter) {
        (self.reader, self.writer)
    }

    pub async fn send(&mut self, envelope: &Envelope) -> Result<(), SecureError> {
        self.writer.send(envelope).await
    }

    /// The next frame's payload; `None` when the peer closed cleanly between
    /// frames.
    pub async fn recv_frame(&mut self) -> Result<Option<Bytes>, SecureError> {
        self.reader.recv_frame().await
    }

    /// The next envelope; `None` on a clean close.
    pub async fn recv(&mut self) -> Result<Option<Envelope>, SecureError> {
        self.reader.recv().await
    }

    /// The next envelope; a close is an error (a reply was expected).
    pub async fn expect(&mut self) -> Result<Envelope, SecureError> {
        self.reader.expect().await
    }

    /// Close the write side, telling the peer no more frames come.
    pub async fn shutdown(&mut self) -> Result<(), SecureError> {
        self.writer.shutdown().await
    }
}

impl SecureWriter {
    /// Encrypt `plaintext` into records and write them, a few records at a
    /// time: the ciphertext buffer stays at most [`RECORDS_PER_WRITE`]
    /// records however large the frame, and encryption overlaps the
    /// socket's sending.
    async fn write_records(&mut self, plaintext: &[u8]) -> Result<(), SecureError> {
        for batch in plaintext.chunks(RECORD_PLAINTEXT_MAX * RECORDS_PER_WRITE) {
            self.outgoing.clear();
            for piece in batch.chunks(RECORD_PLAINTEXT_MAX) {
                let start = self.outgoing.len();
                self.outgoing
                    .resize(start + 2 + piece.len() + NOISE_TAG_BYTES, 0);
                let len = self
                    .noise
                    .write_message(self.nonce, piece, &mut self.outgoing[start + 2..])
                    .expect("a record below the Noise limit always encrypts");
                self.nonce += 1;
                self.outgoing[start..start + 2].copy_from_slice(&(len as u16).to_be_bytes());
                self.outgoing.truncate(start + 2 + len);
            }
            with_timeout(self.io.write_all(&self.outgoing)).await?;
        }
        Ok(())
    }

    /// Send one envelope as one frame (and flush).
    pub async fn send(&mut self, envelope: &Envelope) -> Result<(), SecureError> {
        self.write_records(&wire::encode_frame(envelope)).await?;
        with_timeout(self.io.flush()).await
    }

    /// Close the write side, telling the peer no more frames come.
    pub async fn shutdown(&mut self) -> Result<(), SecureError> {
        with_timeout(self.io.shutdown()).await
    }
}

impl SecureReader {
    /// Read one record into `plaintext`. `Ok(false)` on a clean close
    /// between records.
    async fn read_record(&mut self) -> Result<bool, SecureError> {
        let mut len = [0u8; 2];
        match with_timeout(self.io.read_exact(&mut len)).await {
            Ok(_) => {}
            Err(SecureError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Ok(false);
            }
            Err(e) => return Err(e),
        }
        let len = u16::from_be_bytes(len) as usize;
        if len < NOISE_TAG_BYTES {
            return Err(SecureError::BadRecord);
        }
        let record = &mut self.record[..len];
        with_timeout(self.io.read_exact(record))
            .await
            .map_err(|e| match e {
                SecureError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    SecureError::Closed
                }
                other => other,
            })?;
        let start = self.plaintext.len();
        self.plaintext.resize(start + len, 0);
        let n = self
            .noise
            .read_message(self.nonce, record, &mut self.plaintext[start..])
            .map_err(|_| SecureError::BadRecord)?;
        self.nonce += 1;
        self.plaintext.truncate(start + n);
        Ok(true)
    }

    /// The next frame's payload; `None` when the peer closed cleanly between
    /// frames. The whole frame must arrive within [`FRAME_TIMEOUT`].
    pub async fn recv_frame(&mut self) -> Result<Option<Bytes>, SecureError> {
        match tokio::time::timeout(FRAME_TIMEOUT, self.recv_frame_untimed()).await {
            Ok(result) => result,
            Err(_) => Err(SecureError::Timeout(FRAME_TIMEOUT)),
        }
    }

    async fn recv_frame_untimed(&mut self) -> Result<Option<Bytes>, SecureError> {
        loop {
            if let Some(frame) = self.frames.decode(&mut self.plaintext)? {
                return Ok(Some(frame));
            }
            if !self.read_record().await? {
                return if self.plaintext.is_empty() {
                    Ok(None)
                } else {
                    Err(SecureError::Closed)
                };
            }
        }
    }

    /// The next envelope; `None` on a clean close.
    pub async fn recv(&mut self) -> Result<Option<Envelope>, SecureError> {
        match self.recv_frame().await? {
            Some(frame) => Ok(Some(wire::decode(&frame)?)),
            None => Ok(None),
        }
    }

    /// The next envelope; a close is an error (a reply was expected).
    pub async fn expect(&mut self) -> Result<Envelope, SecureError> {
        self.recv().await?.ok_or(SecureError::Closed)
    }
}

async fn with_timeout<T>(io: impl Future<Output = io::Result<T>>) -> Result<T, SecureError> {
    match tokio::time::timeout(IO_TIMEOUT, io).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(SecureError::Timeout(IO_TIMEOUT)),
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // Paused tokio time is the clock these tests read.
mod tests {
    use super::*;
    use crate::env::tokio_env;

    /// Two ends of an established session over an in-memory pipe.
    async fn session() -> (SecureStream, SecureStream) {
        let env = tokio_env();
        let key = ClusterKey::from_bytes([3; 32]);
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (initiator, responder) = (StaticKeypair::generate(&env), StaticKeypair::generate(&env));
        let authority = NodesOnly(key.clone());
        let (a, b) = tokio::join!(
            connect(&env, Box::new(a), &initiator, Credential::Node(&key)),
            accept(&env, Box::new(b), &responder, &authority, Duration::ZERO),
        );
        (a.unwrap(), b.unwrap().0)
    }

    /// One valid record with no plaintext: it completes a read (so no
    /// per-read timeout fires) yet brings no frame closer.
    async fn send_empty_record(writer: &mut SecureWriter) {
        let mut record = vec![0u8; 2 + NOISE_TAG_BYTES];
        let len = writer
            .noise
            .write_message(writer.nonce, &[], &mut record[2..])
            .unwrap();
        writer.nonce += 1;
        record[..2].copy_from_slice(&(len as u16).to_be_bytes());
        writer.io.write_all(&record).await.unwrap();
        writer.io.flush().await.unwrap();
    }

    /// Issue 9, item 8: an authenticated peer sending an empty record every
    /// 29 s (just inside the per-read timeout) held its connection forever.
    /// The whole frame now has [`FRAME_TIMEOUT`].
    #[tokio::test(start_paused = true)]
    async fn a_connection_trickling_empty_records_is_closed_after_the_frame_timeout() {
        let (client, server) = session().await;
        let (_client_reader, mut client_writer) = client.into_split();
        let (mut server_reader, _server_writer) = server.into_split();
        let started = tokio::time::Instant::now();
        let trickle = async {
            loop {
                send_empty_record(&mut client_writer).await;
                tokio::time::sleep(IO_TIMEOUT - Duration::from_secs(1)).await;
            }
        };
        let outcome = tokio::select! {
            outcome = server_reader.recv_frame() => outcome,
            _ = trickle => unreachable!("the trickle never ends"),
            _ = tokio::time::sleep(FRAME_TIMEOUT * 10) => panic!("the connection is held open"),
        };
        assert!(
            matches!(outcome, Err(SecureError::Timeout(t)) if t == FRAME_TIMEOUT),
            "{outcome:?}"
        );
        assert!(started.elapsed() <= FRAME_TIMEOUT + Duration::from_secs(1));
    }

    /// A frame whose records trickle in over more than one read timeout,
    /// each within it, is delivered if it completes within the frame
    /// timeout.
    #[tokio::test(start_paused = true)]
    async fn a_slow_frame_within_the_frame_timeout_is_delivered() {
        let (client, server) = session().await;
        let (_client_reader, mut client_writer) = client.into_split();
        let (mut server_reader, _server_writer) = server.into_split();
        let envelope = Envelope {
            request_id: 9,
            message: crate::wire::Message::Ping,
        };
        let slow_sender = async {
            for _ in 0..2 {
                send_empty_record(&mut client_writer).await;
                tokio::time::sleep(IO_TIMEOUT - Duration::from_secs(2)).await;
            }
            // 56 s in: past one read timeout, inside the frame timeout.
            client_writer.send(&envelope).await.unwrap();
            std::future::pending::<()>().await;
        };
        let received = tokio::select! {
            received = server_reader.recv() => received,
            _ = slow_sender => unreachable!(),
        };
        assert_eq!(received.unwrap().unwrap().request_id, 9);
    }
}
