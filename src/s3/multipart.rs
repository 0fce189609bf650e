//! Multipart uploads, kept as dfs files so any node serves any step:
//! `.uploads/<bucket>/<upload id>/upload` says which key and with what
//! attributes, and each part is the file `.../part-NNNNN`, stored like any
//! put (chunked as it streams in, W copies before it is acknowledged).
//! Completing joins the parts' chunk lists under one manifest (no byte is
//! copied) and removes the upload's files; their chunks stay, used by the
//! object. Uploads inactive (no part written) for a day are removed by
//! `sweep.rs`, and the collector takes their chunks.

use std::collections::BTreeMap;

use bytes::Bytes;
use dfs::cas::Attributes;
use dfs::meta::{Etag, ListFrom, VersionRecord};
use dfs::node::Node;
use dfs::node::ops::{Listed, PutError, PutOptions, VersionPick};
use dfs::wire::ErrorCode;
use md5::{Digest, Md5};
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Result, s3_error};
use serde::{Deserialize, Serialize};

use super::body::{BlobBody, BytesBody, ReaderBody};
use super::buckets::Versioning;
use super::errors::object_error;
use super::errors::put_error;
use super::headers::{attributes_from, copy_source_conditions, decode_md5};
use super::listing::is_url;
use super::names::{etag, object_name, timestamp, url_encode};
use super::service::{Caller, DfsS3};

/// Where uploads in progress live.
pub(super) const UPLOADS: &str = ".uploads/";

/// Parts are numbered 1 to 10,000 (S3's limit).
const PART_NUMBER_MAX: i32 = 10_000;

/// Every part but the last must be at least this large (S3's rule).
const PART_BYTES_MIN: u64 = 5 << 20;

/// Most parts or uploads one listing returns (S3's default and limit).
const LISTED_MAX: usize = 1000;

/// Most uploads a bucket's listing reads (each is one small file).
const UPLOADS_SCANNED_MAX: usize = 10_000;

/// What `.../upload` holds (JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct UploadFile {
    key: String,
    attributes: Attributes,
}

pub(super) fn upload_dir(bucket: &str, upload_id: &str) -> String {
    format!("{UPLOADS}{bucket}/{upload_id}/")
}

fn part_name(bucket: &str, upload_id: &str, part: i32) -> String {
    format!("{}part-{part:05}", upload_dir(bucket, upload_id))
}

/// Upload ids are 32 lowercase hex digits; anything else names no upload
/// (and must not reach a dfs name).
pub(super) fn check_upload_id(upload_id: &str) -> S3Result<()> {
    if upload_id.len() == 32
        && upload_id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(no_such_upload(upload_id))
    }
}

fn no_such_upload(upload_id: &str) -> S3Error {
    S3Error::with_message(
        S3ErrorCode::NoSuchUpload,
        format!(
            "no upload {upload_id} in progress (it may have been completed, aborted, or expired)"
        ),
    )
}

fn check_part_number(part: i32) -> S3Result<()> {
    if (1..=PART_NUMBER_MAX).contains(&part) {
        Ok(())
    } else {
        Err(s3_error!(
            InvalidArgument,
            "part numbers are 1 to {PART_NUMBER_MAX}"
        ))
    }
}

/// A live record of `name`, if any.
pub(super) async fn live(node: &Node, name: &str) -> S3Result<Option<VersionRecord>> {
    match node.resolve(name, &VersionPick::Current).await {
        Ok(record) if !record.is_tombstone() => Ok(Some(record)),
        Ok(_) => Ok(None),
        Err(error) if error.code == ErrorCode::NotFound => Ok(None),
        Err(error) => Err(object_error(error)),
    }
}

/// The live record of `name` a majority knows (see `Node::catch_up`).
async fn caught_up(node: &Node, name: &str) -> S3Result<Option<VersionRecord>> {
    Ok(node
        .catch_up(name)
        .await
        .map_err(object_error)?
        .filter(|record| !record.is_tombstone()))
}

/// The upload `upload_id` of `bucket` (and its record), refused as
/// NoSuchUpload when there is none for `key`.
async fn upload(
    node: &Node,
    bucket: &str,
    key: Option<&str>,
    upload_id: &str,
) -> S3Result<(UploadFile, VersionRecord)> {
    check_upload_id(upload_id)?;
    let name = format!("{}upload", upload_dir(bucket, upload_id));
    let record = match live(node, &name).await? {
        Some(record) => record,
        // Created through another node a moment ago, perhaps: ask a
        // majority before refusing.
        None => caught_up(node, &name)
            .await?
            .ok_or_else(|| no_such_upload(upload_id))?,
    };
    let file = read_upload_file(node, &record).await?;
    if key.is_some_and(|key| key != file.key) {
        return Err(no_such_upload(upload_id));
    }
    Ok((file, record))
}

async fn read_upload_file(node: &Node, record: &VersionRecord) -> S3Result<UploadFile> {
    let content = record.content.expect("live");
    let mut reader = node
        .open_content(Some(record.clone()), content)
        .await
        .map_err(object_error)?;
    if reader.size() > 64 << 10 {
        return Err(s3_error!(InternalError, "{} is too large", record.name));
    }
    let mut bytes = Vec::new();
    while let Some(piece) = reader.next().await {
        bytes.extend_from_slice(&piece.map_err(object_error)?);
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| s3_error!(InternalError, "{} is not an upload: {e}", record.name))
}

/// The current parts of an upload, by number.
pub(super) async fn parts(
    node: &Node,
    bucket: &str,
    upload_id: &str,
) -> S3Result<BTreeMap<i32, VersionRecord>> {
    let prefix = format!("{}part-", upload_dir(bucket, upload_id));
    let mut parts = BTreeMap::new();
    let mut from = ListFrom::Start;
    loop {
        let page = node
            .list_current(&prefix, from.clone(), LISTED_MAX)
            .await
            .map_err(object_error)?;
        let full = page.len() == LISTED_MAX;
        for record in page {
            from = ListFrom::After(record.name.clone());
            if let Ok(number) = record.name[prefix.len()..].parse::<i32>() {
                parts.insert(number, record);
            }
        }
        if !full || parts.len() > PART_NUMBER_MAX as usize {
            break;
        }
    }
    Ok(parts)
}

/// Delete every file of an upload for good (every version: an aborted
/// upload's chunks are then garbage, and a completed one's are the
/// object's). The upload file goes last, and only once every part is
/// gone: what is left is found again by the sweep once the upload expires.
pub(super) async fn remove_upload(node: &Node, bucket: &str, upload_id: &str) -> S3Result<()> {
    let dir = upload_dir(bucket, upload_id);
    let mut failed = None;
    for record in parts(node, bucket, upload_id).await?.into_values() {
        if let Err(error) = node.forget_all(&record.name).await {
            tracing::warn!(name = %record.name, %error, "could not delete a part of a finished upload; the sweep will");
            failed = Some(error);
        }
    }
    if let Some(error) = failed {
        return Err(object_error(error));
    }
    node.forget_all(&format!("{dir}upload"))
        .await
        .map(|_| ())
        .map_err(object_error)
}

fn new_upload_id(node: &Node) -> String {
    hex::encode(node.env().random_array::<16>())
}

/// S3's multipart ETag: the MD5 of the parts' MD5s, and their count.
fn multipart_etag(parts: &[VersionRecord]) -> Etag {
    let mut md5 = Md5::new();
    for part in parts {
        if let Some(etag) = &part.etag {
            md5.update(etag.md5);
        }
    }
    Etag {
        md5: md5.finalize().into(),
        parts: parts.len() as u32,
    }
}

fn unquoted(tag: &ETag) -> &str {
    tag.value().trim_matches('"')
}

impl DfsS3 {
    pub(super) async fn create_upload(
        &self,
        caller: &Caller,
        input: CreateMultipartUploadInput,
    ) -> S3Result<CreateMultipartUploadOutput> {
        let name = object_name(&input.bucket, &input.key)?;
        caller.may_write(&name)?;
        self.bucket(&input.bucket).await?;
        let attributes = attributes_from!(input)?;
        let upload_id = new_upload_id(&self.node);
        let file = UploadFile {
            key: input.key.clone(),
            attributes,
        };
        let bytes = serde_json::to_vec(&file).expect("an upload file serializes");
        let mut body = BytesBody(Some(Bytes::from(bytes)));
        let name = format!("{}upload", upload_dir(&input.bucket, &upload_id));
        match self
            .node
            .put(name, &mut body, caller.key, PutOptions::default())
            .await
        {
            Ok(_) => {}
            Err(PutError::Refused(error)) => return Err(object_error(error)),
            Err(PutError::Body(never)) => match never {},
        }
        Ok(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(upload_id),
            ..Default::default()
        })
    }

    /// What UploadPart and UploadPartCopy check first: the caller may
    /// write the key, the part number is one S3 allows, and the upload
    /// exists for that key.
    async fn part_target(
        &self,
        caller: &Caller,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number: i32,
    ) -> S3Result<()> {
        caller.may_write(&object_name(bucket, key)?)?;
        check_part_number(part_number)?;
        upload(&self.node, bucket, Some(key), upload_id).await?;
        Ok(())
    }

    pub(super) async fn put_part(
        &self,
        caller: &Caller,
        input: UploadPartInput,
        mut body: BlobBody,
    ) -> S3Result<UploadPartOutput> {
        self.part_target(
            caller,
            &input.bucket,
            &input.key,
            &input.upload_id,
            input.part_number,
        )
        .await?;
        let options = PutOptions {
            md5: true,
            expect_md5: input.content_md5.as_deref().map(decode_md5).transpose()?,
            ..PutOptions::default()
        };
        let part = part_name(&input.bucket, &input.upload_id, input.part_number);
        let record = self
            .node
            .put(part, &mut body, caller.key, options)
            .await
            .map_err(put_error)?;
        Ok(UploadPartOutput {
            e_tag: Some(ETag::Strong(etag(&record))),
            ..Default::default()
        })
    }

    /// UploadPartCopy: a part made of (a range of) an existing object's
    /// bytes, read verified and stored as any part (chunks the cluster
    /// already holds are recognised by their ids).
    pub(super) async fn copy_part(
        &self,
        caller: &Caller,
        input: UploadPartCopyInput,
    ) -> S3Result<UploadPartCopyOutput> {
        self.part_target(
            caller,
            &input.bucket,
            &input.key,
            &input.upload_id,
            input.part_number,
        )
        .await?;
        let (source_bucket, source_name, source_version) =
            caller.copy_source(&input.copy_source)?;
        let source = self
            .find(source_bucket, &source_name, source_version)
            .await?;
        copy_source_conditions!(source, input)?;
        let content = source.content.expect("find returns no delete marker");
        let mut reader = self
            .node
            .open_content(Some(source.clone()), content)
            .await
            .map_err(object_error)?;
        if let Some(text) = &input.copy_source_range {
            let size = reader.size();
            let range = Range::parse(text)
                .ok()
                .and_then(|range| range.check(size).ok())
                .ok_or_else(|| {
                    s3_error!(
                        InvalidRange,
                        "x-amz-copy-source-range {text} is not within the source's {size} bytes"
                    )
                })?;
            reader.set_range(range);
        }
        let part = part_name(&input.bucket, &input.upload_id, input.part_number);
        let options = PutOptions {
            md5: true,
            ..PutOptions::default()
        };
        let record = self
            .node
            .put(part, &mut ReaderBody(reader), caller.key, options)
            .await
            .map_err(|error| match error {
                PutError::Refused(error) | PutError::Body(error) => object_error(error),
            })?;
        let source_settings = self.bucket(source_bucket).await?.settings;
        Ok(UploadPartCopyOutput {
            copy_part_result: Some(CopyPartResult {
                e_tag: Some(ETag::Strong(etag(&record))),
                last_modified: Some(timestamp(record.vid.wall_ms)),
                ..Default::default()
            }),
            copy_source_version_id: DfsS3::shown_version(&source, &source_settings),
            ..Default::default()
        })
    }

    pub(super) async fn complete_upload(
        &self,
        caller: &Caller,
        input: CompleteMultipartUploadInput,
    ) -> S3Result<CompleteMultipartUploadOutput> {
        let name = object_name(&input.bucket, &input.key)?;
        caller.may_write(&name)?;
        let state = self.bucket(&input.bucket).await?;
        let (file, _) = upload(
            &self.node,
            &input.bucket,
            Some(&input.key),
            &input.upload_id,
        )
        .await?;
        let asked = input
            .multipart_upload
            .and_then(|upload| upload.parts)
            .unwrap_or_default();
        if asked.is_empty() {
            return Err(s3_error!(
                MalformedXML,
                "a multipart upload completes with at least one part"
            ));
        }
        let mut stored = parts(&self.node, &input.bucket, &input.upload_id).await?;
        let mut chosen = Vec::with_capacity(asked.len());
        let mut previous = 0;
        for part in &asked {
            let number = part
                .part_number
                .ok_or_else(|| s3_error!(InvalidPart, "a part without a number"))?;
            if number <= previous {
                return Err(s3_error!(
                    InvalidPartOrder,
                    "parts must be listed in ascending order, each once"
                ));
            }
            previous = number;
            let matches = |record: &VersionRecord| {
                part.e_tag
                    .as_ref()
                    .is_none_or(|tag| unquoted(tag) == etag(record))
            };
            if !stored.get(&number).is_some_and(matches) {
                // Uploaded through another node a moment ago, perhaps.
                let name = part_name(&input.bucket, &input.upload_id, number);
                if let Some(record) = caught_up(&self.node, &name).await? {
                    stored.insert(number, record);
                }
            }
            let record = stored
                .get(&number)
                .ok_or_else(|| s3_error!(InvalidPart, "part {number} was not uploaded"))?;
            if let Some(tag) = &part.e_tag
                && unquoted(tag) != etag(record)
            {
                return Err(s3_error!(
                    InvalidPart,
                    "part {number}'s ETag is {}, not {}",
                    etag(record),
                    unquoted(tag)
                ));
            }
            chosen.push(record.clone());
        }
        if let Some((last, others)) = chosen.split_last() {
            let _ = last;
            if let Some(small) = others.iter().find(|p| p.size < PART_BYTES_MIN) {
                return Err(s3_error!(
                    EntityTooSmall,
                    "{} is {} bytes; every part but the last must be at least {PART_BYTES_MIN}",
                    small.name,
                    small.size
                ));
            }
        }
        let null_version = state.settings.versioning != Versioning::Enabled;
        let forget = self.nulls_replaced(&name, &state.settings).await?;
        let record = self
            .node
            .commit_parts(
                name,
                &chosen,
                file.attributes,
                caller.key,
                (multipart_etag(&chosen), null_version, &forget),
            )
            .await
            .map_err(|error| match error.code {
                ErrorCode::InvalidRequest => {
                    S3Error::with_message(S3ErrorCode::EntityTooLarge, error.message)
                }
                _ => object_error(error),
            })?;
        if let Err(error) = remove_upload(&self.node, &input.bucket, &input.upload_id).await {
            tracing::warn!(upload = %input.upload_id, %error, "could not remove a completed upload's files; the sweep will");
        }
        Ok(CompleteMultipartUploadOutput {
            bucket: Some(input.bucket.clone()),
            key: Some(input.key.clone()),
            e_tag: Some(ETag::Strong(etag(&record))),
            location: Some(format!("/{}/{}", input.bucket, url_encode(&input.key))),
            version_id: DfsS3::shown_version(&record, &state.settings),
            ..Default::default()
        })
    }

    pub(super) async fn abort_upload(
        &self,
        caller: &Caller,
        input: AbortMultipartUploadInput,
    ) -> S3Result<AbortMultipartUploadOutput> {
        let name = object_name(&input.bucket, &input.key)?;
        caller.may_write(&name)?;
        upload(
            &self.node,
            &input.bucket,
            Some(&input.key),
            &input.upload_id,
        )
        .await?;
        remove_upload(&self.node, &input.bucket, &input.upload_id).await?;
        Ok(AbortMultipartUploadOutput::default())
    }

    pub(super) async fn list_upload_parts(
        &self,
        caller: &Caller,
        input: ListPartsInput,
    ) -> S3Result<ListPartsOutput> {
        let name = object_name(&input.bucket, &input.key)?;
        caller.may_read(&name)?;
        let (_, record) = upload(
            &self.node,
            &input.bucket,
            Some(&input.key),
            &input.upload_id,
        )
        .await?;
        let marker = input.part_number_marker.unwrap_or(0);
        let max = input
            .max_parts
            .map_or(LISTED_MAX, |m| (m.max(0) as usize).min(LISTED_MAX));
        let stored = parts(&self.node, &input.bucket, &input.upload_id).await?;
        let after: Vec<_> = stored.range(marker.saturating_add(1)..).collect();
        let truncated = after.len() > max;
        let shown: Vec<Part> = after
            .iter()
            .take(max)
            .map(|(number, part)| Part {
                part_number: Some(**number),
                e_tag: Some(ETag::Strong(etag(part))),
                size: Some(part.size as i64),
                last_modified: Some(timestamp(part.vid.wall_ms)),
                ..Default::default()
            })
            .collect();
        let initiator = record.by.as_ref().map(|key| Initiator {
            display_name: Some(key.to_string()),
            id: Some(key.to_string()),
        });
        Ok(ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            part_number_marker: input.part_number_marker,
            next_part_number_marker: truncated
                .then(|| shown.last().and_then(|p| p.part_number))
                .flatten(),
            max_parts: Some(max as i32),
            is_truncated: Some(truncated),
            parts: Some(shown),
            owner: initiator.as_ref().map(|i| Owner {
                display_name: i.display_name.clone(),
                id: i.id.clone(),
            }),
            initiator,
            storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
            ..Default::default()
        })
    }

    pub(super) async fn list_uploads(
        &self,
        caller: &Caller,
        input: ListMultipartUploadsInput,
    ) -> S3Result<ListMultipartUploadsOutput> {
        let prefix = input.prefix.clone().unwrap_or_default();
        caller.may_read(&format!("{}/{prefix}", input.bucket))?;
        self.bucket(&input.bucket).await?;
        let url = is_url(input.encoding_type.as_ref())?;
        let max = input
            .max_uploads
            .map_or(LISTED_MAX, |m| (m.max(0) as usize).min(LISTED_MAX));
        // Every upload of the bucket, sorted as S3 sorts them: by key,
        // then by when each began.
        let root = format!("{UPLOADS}{}/", input.bucket);
        let mut uploads = Vec::new();
        let mut after: Option<String> = None;
        'scan: loop {
            let page = self
                .node
                .list_page(&root, Some("/"), after.as_deref(), LISTED_MAX)
                .await
                .map_err(object_error)?;
            for entry in &page.entries {
                after = Some(entry.name().to_string());
                let Listed::CommonPrefix(dir) = entry else {
                    continue;
                };
                if uploads.len() >= UPLOADS_SCANNED_MAX {
                    tracing::warn!(bucket = %input.bucket, "listing uploads stopped after {UPLOADS_SCANNED_MAX}");
                    break 'scan;
                }
                let Some(record) = live(&self.node, &format!("{dir}upload")).await? else {
                    continue;
                };
                let Ok(file) = read_upload_file(&self.node, &record).await else {
                    continue;
                };
                let id = dir[root.len()..].trim_end_matches('/').to_string();
                if file.key.starts_with(&prefix) {
                    uploads.push((file.key, record.vid, id, record.by));
                }
            }
            if !page.truncated {
                break;
            }
        }
        uploads.sort();
        let key_marker = input.key_marker.clone().unwrap_or_default();
        let id_marker = input.upload_id_marker.clone();
        let mut listed = Vec::new();
        let mut prefixes: Vec<String> = Vec::new();
        let mut truncated = false;
        // The last entry listed: a key and its upload id, or a common
        // prefix (the next page's key marker either way).
        let mut last_entry: Option<(String, Option<String>)> = None;
        // Uploads of one key are in the order they began, not by id: a page
        // goes on after the marker's own place (by id only if it is gone).
        let marker_began = id_marker.as_ref().and_then(|marker| {
            uploads
                .iter()
                .find(|(key, _, id, _)| *key == key_marker && id == marker)
                .map(|(_, vid, _, _)| *vid)
        });
        for (key, vid, id, by) in uploads {
            let past_marker = match (&id_marker, marker_began) {
                (Some(marker), Some(began)) if key == key_marker => (vid, &id) > (began, marker),
                (Some(marker), None) if key == key_marker => id > *marker,
                _ => key > key_marker || key_marker.is_empty(),
            };
            if !past_marker {
                continue;
            }
            if let Some(delimiter) = input.delimiter.as_deref().filter(|d| !d.is_empty())
                && let Some(at) = key[prefix.len()..].find(delimiter)
            {
                let common = key[..prefix.len() + at + delimiter.len()].to_string();
                // A common prefix at or before the marker (or holding it)
                // was on an earlier page.
                let earlier = !key_marker.is_empty()
                    && (common <= key_marker || key_marker.starts_with(&common));
                if prefixes.last() != Some(&common) && !earlier {
                    if listed.len() + prefixes.len() == max {
                        truncated = true;
                        break;
                    }
                    prefixes.push(common.clone());
                    last_entry = Some((common, None));
                }
                continue;
            }
            if listed.len() + prefixes.len() == max {
                truncated = true;
                break;
            }
            last_entry = Some((key.clone(), Some(id.clone())));
            listed.push((key, vid, id, by));
        }
        let show = |text: &str| {
            if url {
                url_encode(text)
            } else {
                text.to_string()
            }
        };
        let (next_key_marker, next_upload_id_marker) = match last_entry.filter(|_| truncated) {
            Some((key, id)) => (Some(show(&key)), id),
            None => (None, None),
        };
        Ok(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: Some(show(&prefix)),
            delimiter: input.delimiter.clone(),
            key_marker: input.key_marker.clone(),
            upload_id_marker: input.upload_id_marker.clone(),
            max_uploads: Some(max as i32),
            is_truncated: Some(truncated),
            next_key_marker,
            next_upload_id_marker,
            uploads: Some(
                listed
                    .into_iter()
                    .map(|(key, vid, id, by)| {
                        let who = by.map(|key| key.to_string());
                        MultipartUpload {
                            key: Some(show(&key)),
                            upload_id: Some(id),
                            initiated: Some(timestamp(vid.wall_ms)),
                            initiator: who.clone().map(|id| Initiator {
                                display_name: Some(id.clone()),
                                id: Some(id),
                            }),
                            owner: who.map(|id| Owner {
                                display_name: Some(id.clone()),
                                id: Some(id),
                            }),
                            storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
                            ..Default::default()
                        }
                    })
                    .collect(),
            ),
            common_prefixes: Some(
                prefixes
                    .into_iter()
                    .map(|p| CommonPrefix {
                        prefix: Some(show(&p)),
                    })
                    .collect(),
            ),
            encoding_type: input.encoding_type,
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_ids_cannot_reach_other_names() {
        assert!(check_upload_id(&"a1".repeat(16)).is_ok());
        for bad in [
            "",
            "../x",
            &"A1".repeat(16),
            &"a1".repeat(17),
            &format!("{}/", "a".repeat(31)),
        ] {
            assert!(check_upload_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_multipart_etag_is_s3s() {
        // Two parts whose MD5s are known: md5("a"), md5("b").
        let part = |md5: &str| VersionRecord {
            etag: Some(Etag {
                md5: hex::decode(md5).unwrap().try_into().unwrap(),
                parts: 0,
            }),
            ..sample()
        };
        let tag = multipart_etag(&[
            part("0cc175b9c0f1b6a831c399e269772661"),
            part("92eb5ffee6ae2fec3ad71c777531578f"),
        ]);
        let mut md5 = Md5::new();
        md5.update(
            hex::decode("0cc175b9c0f1b6a831c399e26977266192eb5ffee6ae2fec3ad71c777531578f")
                .unwrap(),
        );
        assert_eq!(tag.md5, <[u8; 16]>::from(md5.finalize()));
        assert_eq!(tag.parts, 2);
        assert!(tag.to_string().ends_with("-2"));
    }

    fn sample() -> VersionRecord {
        VersionRecord {
            name: "p".into(),
            vid: dfs::meta::VersionId {
                wall_ms: 1,
                counter: 0,
                node: dfs::keys::NodeId([1; 32]),
            },
            forgotten: false,
            content: None,
            size: 0,
            by: None,
            etag: None,
            null_version: false,
        }
    }
}
