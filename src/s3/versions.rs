//! Object versioning, as S3 documents it, on dfs histories.
//!
//! Every dfs name already has a replicated history; S3's view of it:
//! - a version's id is its dfs version id in full (`wall-counter-node`),
//!   except a version written while its bucket was not versioning, which
//!   is the "null" version: a write in such a bucket (never enabled, or
//!   suspended) replaces the previous null version for good, in the same
//!   commit;
//! - a delete marker is a dfs removal;
//! - a delete with a version id deletes that version for good everywhere
//!   (its forgotten stub, see `VersionRecord::forgotten`), and the version
//!   before it becomes current if it was.
//!
//! In a bucket that never had versioning, S3 shows no version ids and no
//! delete markers: a delete there removes the object (a null removal,
//! hidden from version listings, that frees the previous null version).

use dfs::meta::{History, ListFrom, VersionId, VersionRecord};
use dfs::node::ops::VersionPick;
use dfs::wire::ErrorCode;
use s3s::dto::*;
use s3s::{S3Result, s3_error};

use super::buckets::{self, BucketSettings, Versioning};
use super::errors::object_error;
use super::headers::owner;
use super::listing::is_url;
use super::names::{
    etag, key_of, object_name, parse_version_id, timestamp, url_encode, version_id,
};
use super::service::{Caller, DfsS3};

/// Most entries one ListObjectVersions page returns (S3's limit).
const LISTED_MAX: usize = 1000;

/// The null versions of `history` a write replaces in a bucket with
/// `settings` (none when it is versioning).
pub(super) fn nulls_in(history: &History, settings: &BucketSettings) -> Vec<VersionId> {
    if settings.versioning == Versioning::Enabled {
        return Vec::new();
    }
    history
        .versions()
        .filter(|record| record.null_version)
        .map(|record| record.vid)
        .collect()
}

impl DfsS3 {
    /// The null versions a write replaces in a bucket that is not
    /// versioning (none when it is).
    pub(super) async fn nulls_replaced(
        &self,
        name: &str,
        settings: &BucketSettings,
    ) -> S3Result<Vec<VersionId>> {
        if settings.versioning == Versioning::Enabled {
            return Ok(Vec::new());
        }
        let history = self.node.history(name).await.map_err(object_error)?;
        Ok(nulls_in(&history, settings))
    }

    /// DeleteObject with a version id: that version, for good. A version
    /// this node does not hold may be one it has not heard of yet (written
    /// through another node a moment ago): its stub is written anyway, so
    /// it is deleted wherever it is and whenever it arrives (S3 answers
    /// success for a version that does not exist). Returns whether it was
    /// a delete marker.
    pub(super) async fn delete_version(
        &self,
        caller: &Caller,
        bucket: &str,
        key: &str,
        version: &str,
    ) -> S3Result<bool> {
        let name = object_name(bucket, key)?;
        caller.may_delete_versions(&name)?;
        let pick = parse_version_id(version)?;
        if pick == VersionPick::Null {
            // Every null version: two writes at once through two nodes can
            // leave two, and the older must not become the object again.
            // The newest a majority knows first (written through another
            // node a moment ago, perhaps).
            self.node.catch_up(&name).await.map_err(object_error)?;
            let history = self.node.history(&name).await.map_err(object_error)?;
            let nulls: Vec<VersionRecord> = history
                .versions()
                .filter(|record| record.null_version)
                .cloned()
                .collect();
            let vids: Vec<VersionId> = nulls.iter().map(|record| record.vid).collect();
            self.node
                .forget_versions(&name, &vids)
                .await
                .map_err(object_error)?;
            return Ok(nulls.last().is_some_and(VersionRecord::is_tombstone));
        }
        match self.node.forget(&name, &pick).await {
            Ok(record) => Ok(record.is_tombstone()),
            Err(error) if error.code == ErrorCode::NotFound => {
                // Only an id this cluster could have made: a made-up one
                // from the future would move every node's clock, and
                // stubs of made-up ids would pile up.
                if let VersionPick::Matching(selector) = &pick
                    && let Some(vid) = selector.exact()
                    && self.node.could_have_made(&vid)
                {
                    self.node
                        .forget_versions(&name, &[vid])
                        .await
                        .map_err(object_error)?;
                }
                Ok(false)
            }
            Err(error) => Err(object_error(error)),
        }
    }

    pub(super) async fn set_versioning(
        &self,
        caller: &Caller,
        input: PutBucketVersioningInput,
    ) -> S3Result<()> {
        let bucket = input.bucket;
        caller.may_write(&format!("{bucket}/"))?;
        let state = self.bucket(&bucket).await?;
        if input
            .versioning_configuration
            .mfa_delete
            .as_ref()
            .is_some_and(|m| m.as_str() == MFADelete::ENABLED)
        {
            return Err(s3_error!(NotImplemented, "MFA delete is not supported"));
        }
        let versioning = match input
            .versioning_configuration
            .status
            .as_ref()
            .map(|s| s.as_str())
        {
            Some(BucketVersioningStatus::ENABLED) => Versioning::Enabled,
            Some(BucketVersioningStatus::SUSPENDED) => Versioning::Suspended,
            // No status changes nothing (S3 accepts an empty configuration).
            None => return Ok(()),
            Some(other) => {
                return Err(s3_error!(
                    MalformedXML,
                    "versioning status {other:?} is neither Enabled nor Suspended"
                ));
            }
        };
        // Once enabled, a bucket is never "off" again: Suspended from Off
        // is still a change S3 records.
        if state.settings.versioning == versioning && state.settings_record.is_some() {
            return Ok(());
        }
        let mut settings = state.settings;
        settings.versioning = versioning;
        buckets::write_settings(&self.node, &bucket, &settings, caller.key).await?;
        Ok(())
    }

    pub(super) async fn list_versions(
        &self,
        caller: &Caller,
        input: ListObjectVersionsInput,
    ) -> S3Result<ListObjectVersionsOutput> {
        let bucket = input.bucket.clone();
        let prefix = input.prefix.clone().unwrap_or_default();
        let full_prefix = format!("{bucket}/{prefix}");
        caller.may_read(&full_prefix)?;
        let settings = self.bucket(&bucket).await?.settings;
        let url = is_url(input.encoding_type.as_ref())?;
        let max = input
            .max_keys
            .map_or(LISTED_MAX, |m| (m.max(0) as usize).min(LISTED_MAX));
        let delimiter = input.delimiter.clone().filter(|d| !d.is_empty());
        let show = |text: &str| {
            if url {
                url_encode(text)
            } else {
                text.to_string()
            }
        };
        // Where to resume: inside the marker key (after a version of it),
        // or after the key (or past its common prefix) entirely.
        let key_marker = input.key_marker.clone().filter(|k| !k.is_empty());
        let mut resume_in: Option<(String, VersionId)> = None;
        let mut from = ListFrom::Start;
        // A marker is a position: one outside the prefix only says where
        // to start, and never has its versions read (a key limited to the
        // prefix must learn nothing of names outside it).
        if let Some(marker) = &key_marker {
            let marker_name = format!("{bucket}/{marker}");
            let inside = marker_name.starts_with(&full_prefix);
            from = ListFrom::After(marker_name.clone());
            if let Some(common) = delimiter
                .as_deref()
                .and_then(|d| common_prefix(&full_prefix, &marker_name, d))
            {
                from = ListFrom::PastPrefix(common);
            } else if inside
                && let Some(version) = input.version_id_marker.as_deref().filter(|v| !v.is_empty())
            {
                let pick = parse_version_id(version)?;
                let record =
                    self.node
                        .resolve(&marker_name, &pick)
                        .await
                        .map_err(|e| match e.code {
                            ErrorCode::NotFound => {
                                s3_error!(InvalidArgument, "no such version-id-marker")
                            }
                            _ => object_error(e),
                        })?;
                resume_in = Some((marker_name.clone(), record.vid));
            }
        }
        let mut versions = Vec::new();
        let mut markers = Vec::new();
        let mut prefixes: Vec<String> = Vec::new();
        let mut count = 0;
        let mut truncated = false;
        let mut next: Option<(String, Option<String>)> = None;
        // The rest of the marker key's versions, first.
        let mut pending_names: Vec<String> = Vec::new();
        if let Some((name, _)) = &resume_in {
            pending_names.push(name.clone());
        }
        'names: loop {
            if pending_names.is_empty() {
                let found = self
                    .node
                    .names(&full_prefix, from.clone(), LISTED_MAX)
                    .await
                    .map_err(object_error)?;
                if found.is_empty() {
                    break;
                }
                pending_names = found.into_iter().rev().collect();
            }
            let Some(name) = pending_names.pop() else {
                break;
            };
            from = ListFrom::After(name.clone());
            if let Some(common) = delimiter
                .as_deref()
                .and_then(|d| common_prefix(&full_prefix, &name, d))
            {
                if prefixes.last() != Some(&common) {
                    if count == max {
                        truncated = true;
                        break;
                    }
                    count += 1;
                    prefixes.push(common.clone());
                    next = Some((common.clone(), None));
                }
                from = ListFrom::PastPrefix(common);
                pending_names.clear();
                continue;
            }
            let before = match &resume_in {
                Some((resumed, vid)) if *resumed == name => Some(*vid),
                _ => None,
            };
            let mut latest = before.is_none();
            let mut seen_null = false;
            let mut older = before;
            loop {
                let page = self
                    .node
                    .versions_newest_first(&name, older, max - count + 1)
                    .await
                    .map_err(object_error)?;
                if page.is_empty() {
                    break;
                }
                for record in &page {
                    older = Some(record.vid);
                    let shown = shown_in_listing(record, &settings, &mut seen_null);
                    if !shown {
                        latest = false;
                        continue;
                    }
                    if count == max {
                        truncated = true;
                        break 'names;
                    }
                    count += 1;
                    let key = show(key_of(&bucket, &name));
                    let owner = record.by.as_ref().map(owner);
                    if record.is_tombstone() {
                        markers.push(DeleteMarkerEntry {
                            key: Some(key),
                            version_id: Some(version_id(record)),
                            is_latest: Some(latest),
                            last_modified: Some(timestamp(record.vid.wall_ms)),
                            owner,
                        });
                    } else {
                        versions.push(ObjectVersion {
                            key: Some(key),
                            version_id: Some(version_id(record)),
                            is_latest: Some(latest),
                            last_modified: Some(timestamp(record.vid.wall_ms)),
                            e_tag: Some(ETag::Strong(etag(record))),
                            size: Some(record.size as i64),
                            storage_class: Some(ObjectVersionStorageClass::from_static(
                                ObjectVersionStorageClass::STANDARD,
                            )),
                            owner,
                            ..Default::default()
                        });
                    }
                    latest = false;
                    next = Some((name.clone(), Some(version_id(record))));
                }
            }
        }
        let (next_key_marker, next_version_id_marker) = match (truncated, next) {
            (true, Some((name, version))) => (Some(show(key_of(&bucket, &name))), version),
            _ => (None, None),
        };
        let bucket_name = bucket.clone();
        Ok(ListObjectVersionsOutput {
            name: Some(bucket),
            prefix: Some(show(&prefix)),
            delimiter: input.delimiter.map(|d| show(&d)),
            key_marker: input.key_marker,
            version_id_marker: input.version_id_marker,
            max_keys: Some(max as i32),
            is_truncated: Some(truncated),
            next_key_marker,
            next_version_id_marker,
            versions: Some(versions),
            delete_markers: Some(markers),
            common_prefixes: Some(
                prefixes
                    .iter()
                    .map(|p| CommonPrefix {
                        prefix: Some(show(key_of(&bucket_name, p))),
                    })
                    .collect(),
            ),
            encoding_type: input.encoding_type,
            ..Default::default()
        })
    }
}

/// Whether a listing of versions shows `record`: the newest null version
/// only (an older one is left only by two writes at once, and is replaced
/// by the next write), and no null removal in a bucket that never had
/// versioning (S3 has no delete markers there).
fn shown_in_listing(
    record: &VersionRecord,
    settings: &BucketSettings,
    seen_null: &mut bool,
) -> bool {
    if !record.null_version {
        return true;
    }
    if std::mem::replace(seen_null, true) {
        return false;
    }
    !(record.is_tombstone() && settings.versioning == Versioning::Off)
}

/// The common prefix `name` rolls up into under `prefix` (see
/// `ops::catalog`), as a dfs name.
fn common_prefix(prefix: &str, name: &str, delimiter: &str) -> Option<String> {
    let rest = name.strip_prefix(prefix)?;
    let at = rest.find(delimiter)?;
    Some(format!("{prefix}{}", &rest[..at + delimiter.len()]))
}
