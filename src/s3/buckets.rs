//! Buckets: a settings file per created bucket (`.buckets/<name>`, see
//! [`names`](super::names)), and the implicit buckets that CLI files make
//! by their first path segment.

use std::collections::BTreeMap;
use std::sync::Mutex;

use bytes::Bytes;
use dfs::cas::ContentId;
use dfs::keys::AccessKeyId;
use dfs::meta::{ListFrom, VersionRecord};
use dfs::node::Node;
use dfs::node::ops::{PutError, PutOptions, VersionPick};
use dfs::wire::ErrorCode;
use s3s::{S3ErrorCode, S3Result, s3_error};
use serde::{Deserialize, Serialize};

use super::body::BytesBody;
use super::errors::s3_error;
use super::names::{BUCKET_SETTINGS, is_bucket_name, settings_name};

/// A bucket's versioning state, as S3 has it: never enabled (`Off`),
/// `Enabled`, or `Suspended` (once enabled, a bucket never goes back to
/// `Off`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Versioning {
    #[default]
    Off,
    Enabled,
    Suspended,
}

/// What a bucket's settings file holds (JSON, so `dfs-node get` shows it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketSettings {
    pub versioning: Versioning,
}

/// Largest settings file read.
const SETTINGS_BYTES_MAX: usize = 4096;

/// Most buckets listed; more are left out with a warning in the log.
pub const BUCKETS_LISTED_MAX: usize = 10_000;

/// Settings files by content id: immutable, so never stale. Each state
/// has one canonical encoding, so this stays at a handful of entries; the
/// bound is for a cluster whose files were written by hand.
const SETTINGS_CACHED_MAX: usize = 64;

#[derive(Default)]
pub struct SettingsCache(Mutex<BTreeMap<ContentId, BucketSettings>>);

/// A bucket as the node sees it now.
#[derive(Debug, Clone, Default)]
pub struct BucketState {
    /// The current version of its settings file, when it was created.
    pub settings_record: Option<VersionRecord>,
    pub settings: BucketSettings,
    /// It holds at least one current object (only looked up for a bucket
    /// without settings: a created one exists either way).
    pub has_objects: bool,
}

impl BucketState {
    pub fn exists(&self) -> bool {
        self.settings_record.is_some() || self.has_objects
    }
}

/// The state of `bucket`. A bucket this node does not know yet is asked
/// of a majority first (created through another node a moment ago); the
/// settings of one it knows are read here, and a change to them may take
/// a moment to reach every node, as S3 documents for versioning.
pub async fn state(node: &Node, cache: &SettingsCache, bucket: &str) -> S3Result<BucketState> {
    let state = local_state(node, cache, bucket).await?;
    if state.exists() {
        return Ok(state);
    }
    node.catch_up(&settings_name(bucket))
        .await
        .map_err(|e| s3_error(e, S3ErrorCode::NoSuchBucket))?;
    local_state(node, cache, bucket).await
}

async fn local_state(node: &Node, cache: &SettingsCache, bucket: &str) -> S3Result<BucketState> {
    let settings_record = match node
        .resolve(&settings_name(bucket), &VersionPick::Current)
        .await
    {
        Ok(record) if !record.is_tombstone() => Some(record),
        Ok(_) => None,
        Err(error) if error.code == ErrorCode::NotFound => None,
        Err(error) => return Err(s3_error(error, S3ErrorCode::NoSuchBucket)),
    };
    let settings = match &settings_record {
        Some(record) => read_settings(node, cache, record).await?,
        None => BucketSettings::default(),
    };
    // A created bucket exists whatever it holds: the listing (which
    // passes over removed names) is only needed for one that was not.
    let has_objects = settings_record.is_none()
        && !node
            .list_current(&format!("{bucket}/"), ListFrom::Start, 1)
            .await
            .map_err(|e| s3_error(e, S3ErrorCode::NoSuchBucket))?
            .is_empty();
    Ok(BucketState {
        settings_record,
        settings,
        has_objects,
    })
}

/// The state of `bucket`, refused with NoSuchBucket when it does not exist.
pub async fn existing(node: &Node, cache: &SettingsCache, bucket: &str) -> S3Result<BucketState> {
    let state = state(node, cache, bucket).await?;
    if !state.exists() {
        return Err(s3_error!(NoSuchBucket, "bucket {bucket} does not exist"));
    }
    Ok(state)
}

async fn read_settings(
    node: &Node,
    cache: &SettingsCache,
    record: &VersionRecord,
) -> S3Result<BucketSettings> {
    let content = record.content.expect("a live record has content");
    if let Some(settings) = cache.0.lock().expect("cache poisoned").get(&content) {
        return Ok(settings.clone());
    }
    let mut reader = node
        .open_content(Some(record.clone()), content)
        .await
        .map_err(|e| s3_error(e, S3ErrorCode::NoSuchBucket))?;
    if reader.size() > SETTINGS_BYTES_MAX as u64 {
        return Err(s3_error!(
            InternalError,
            "the settings file {} is too large",
            record.name
        ));
    }
    let mut bytes = Vec::new();
    while let Some(piece) = reader.next().await {
        bytes.extend_from_slice(&piece.map_err(|e| s3_error(e, S3ErrorCode::NoSuchBucket))?);
    }
    let settings: BucketSettings = serde_json::from_slice(&bytes).map_err(|error| {
        s3_error!(
            InternalError,
            "the settings file {} is not bucket settings ({error}); put valid ones with the CLI or recreate the bucket",
            record.name
        )
    })?;
    let mut cached = cache.0.lock().expect("cache poisoned");
    if cached.len() >= SETTINGS_CACHED_MAX {
        cached.clear();
    }
    cached.insert(content, settings.clone());
    Ok(settings)
}

/// Write `settings` as `bucket`'s settings file (creating the bucket).
pub async fn write_settings(
    node: &Node,
    bucket: &str,
    settings: &BucketSettings,
    by: AccessKeyId,
) -> S3Result<VersionRecord> {
    let bytes = serde_json::to_vec(settings).expect("settings serialize");
    let mut body = BytesBody(Some(Bytes::from(bytes)));
    let options = PutOptions {
        attributes: vec![("content-type".into(), "application/json".into())],
        ..PutOptions::default()
    };
    match node
        .put(settings_name(bucket), &mut body, by, options)
        .await
    {
        Ok(record) => Ok(record),
        Err(PutError::Refused(error)) => Err(s3_error(error, S3ErrorCode::NoSuchBucket)),
        Err(PutError::Body(never)) => match never {},
    }
}

/// Whether `bucket` holds nothing S3 would show: no version or delete
/// marker of any key, and no upload in progress (S3 refuses to delete a
/// bucket until then).
pub async fn is_empty(node: &Node, bucket: &str) -> S3Result<bool> {
    for prefix in [format!("{bucket}/"), format!(".uploads/{bucket}/")] {
        let names = node
            .names(&prefix, ListFrom::Start, 1)
            .await
            .map_err(|e| s3_error(e, S3ErrorCode::InternalError))?;
        if !names.is_empty() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Remove `bucket`'s settings file.
pub async fn remove_settings(node: &Node, bucket: &str, by: AccessKeyId) -> S3Result<()> {
    node.remove(settings_name(bucket), by, false, &[])
        .await
        .map(|_| ())
        .map_err(|e| s3_error(e, S3ErrorCode::NoSuchBucket))
}

/// Every bucket with when it was created (unix ms): created ones (their
/// settings file's first version since it was last removed) and implicit
/// ones (the first current file under them found).
pub async fn list(node: &Node) -> S3Result<BTreeMap<String, u64>> {
    let mut buckets = BTreeMap::new();
    let settings = node
        .list_current(BUCKET_SETTINGS, ListFrom::Start, BUCKETS_LISTED_MAX)
        .await
        .map_err(|e| s3_error(e, S3ErrorCode::InternalError))?;
    for record in settings {
        let name = &record.name[BUCKET_SETTINGS.len()..];
        if !is_bucket_name(name) {
            continue;
        }
        let history = node
            .history(&record.name)
            .await
            .map_err(|e| s3_error(e, S3ErrorCode::InternalError))?;
        let created = history
            .records
            .values()
            .rev()
            .take_while(|r| !r.is_tombstone())
            .last()
            .map_or(record.vid.wall_ms, |r| r.vid.wall_ms);
        buckets.insert(name.to_string(), created);
    }
    // The first path segments: one index query each, skipping every name
    // under a segment at once.
    let mut from = ListFrom::Start;
    let mut scanned = 0;
    loop {
        let Some(record) = node
            .list_current("", from.clone(), 1)
            .await
            .map_err(|e| s3_error(e, S3ErrorCode::InternalError))?
            .pop()
        else {
            break;
        };
        scanned += 1;
        if scanned > BUCKETS_LISTED_MAX {
            tracing::warn!(
                "listing buckets stopped after {BUCKETS_LISTED_MAX} top-level names; some buckets made by CLI files are not listed"
            );
            break;
        }
        match record.name.split_once('/') {
            Some((segment, _)) => {
                if is_bucket_name(segment) {
                    buckets
                        .entry(segment.to_string())
                        .or_insert(record.vid.wall_ms);
                }
                from = ListFrom::PastPrefix(format!("{segment}/"));
            }
            None => from = ListFrom::After(record.name),
        }
    }
    Ok(buckets)
}
