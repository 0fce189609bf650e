//! The S3 operations, each a translation onto the node's operations.
//!
//! Every request is signed (s3s checks SigV4 with the secret
//! [`KeyringAuth`] gives it, and refuses anonymous requests); each
//! operation then checks the key's permission as it is now, on the dfs
//! names it touches, as the native protocol does.

use std::sync::Arc;

use base64::Engine as _;
use dfs::cas::Attributes;
use dfs::keys::{AccessKeyId, Permission};
use dfs::meta::VersionRecord;
use dfs::node::Node;
use dfs::node::ops::{Listed, ObjectReader, PutError, PutOptions, VersionPick};
use dfs::wire::ErrorCode;
use hyper::header::{HeaderMap, HeaderValue};
use s3s::dto::*;
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};

use super::auth::KeyringAuth;
use super::body::{BlobBody, response_body};
use super::buckets::{self, BucketSettings, BucketState, SettingsCache, Versioning};
use super::errors::object_error;
use super::names::{
    etag, key_of, object_name, parse_version_id, timestamp, url_encode, version_id,
};

/// Most keys one DeleteObjects request may name (S3's limit).
const DELETE_OBJECTS_MAX: usize = 1000;

/// Most keys a listing returns per page (S3's limit and default).
const LIST_KEYS_MAX: usize = 1000;

/// The standard headers kept with an object, by their manifest attribute
/// name (the header name).
const CONTENT_TYPE: &str = "content-type";
const CACHE_CONTROL: &str = "cache-control";
const CONTENT_DISPOSITION: &str = "content-disposition";
const CONTENT_ENCODING: &str = "content-encoding";
const CONTENT_LANGUAGE: &str = "content-language";
const EXPIRES: &str = "expires";
const WEBSITE_REDIRECT: &str = "x-amz-website-redirect-location";
const META_PREFIX: &str = "x-amz-meta-";

pub fn build(node: Arc<Node>) -> S3Service {
    let mut builder = S3ServiceBuilder::new(DfsS3 {
        node: node.clone(),
        settings: SettingsCache::default(),
    });
    builder.set_auth(KeyringAuth(node));
    builder.build()
}

pub(super) struct DfsS3 {
    pub(super) node: Arc<Node>,
    pub(super) settings: SettingsCache,
}

/// Who signed a request, and what their key may do now.
pub(super) struct Caller {
    pub(super) key: AccessKeyId,
    pub(super) permission: Permission,
}

impl Caller {
    pub(super) fn may_read(&self, name: &str) -> S3Result<()> {
        if self.permission.may_read(name) {
            Ok(())
        } else {
            Err(self.denied("read", name))
        }
    }

    pub(super) fn may_write(&self, name: &str) -> S3Result<()> {
        if self.permission.may_write(name) {
            Ok(())
        } else {
            Err(self.denied("write", name))
        }
    }

    /// Deleting a version for good (DeleteObject with a version id) is
    /// an admin key's, as `prune` is: a read-write key can add versions
    /// and delete markers, which leave history, but not erase it. (An
    /// overwrite in a bucket without versioning replaces the object, as in
    /// S3: turn versioning on to keep history from every writer.)
    pub(super) fn may_delete_versions(&self, name: &str) -> S3Result<()> {
        if self.permission.is_admin() && self.permission.may_write(name) {
            Ok(())
        } else {
            Err(self.denied("delete versions for good (an admin key may) of", name))
        }
    }

    /// Whether any name in `bucket` is within the key's prefixes.
    fn sees_bucket(&self, bucket: &str) -> bool {
        let root = format!("{bucket}/");
        self.permission.may_read(&root)
            || self
                .permission
                .prefixes
                .iter()
                .any(|prefix| prefix.starts_with(&root))
    }

    fn denied(&self, what: &str, name: &str) -> S3Error {
        S3Error::with_message(
            S3ErrorCode::AccessDenied,
            format!(
                "access key {} ({}) may not {what} {name}",
                self.key, self.permission
            ),
        )
    }
}

impl DfsS3 {
    fn caller<T>(&self, req: &S3Request<T>) -> S3Result<Caller> {
        let credentials = req
            .credentials
            .as_ref()
            .ok_or_else(|| s3_error!(AccessDenied, "requests must be signed"))?;
        let key = AccessKeyId::parse(&credentials.access_key)
            .map_err(|_| s3_error!(InvalidAccessKeyId))?;
        let permission = self
            .node
            .permission(&key)
            .ok_or_else(|| s3_error!(InvalidAccessKeyId, "access key {key} was removed"))?;
        Ok(Caller { key, permission })
    }

    pub(super) async fn bucket(&self, bucket: &str) -> S3Result<BucketState> {
        buckets::existing(&self.node, &self.settings, bucket).await
    }

    /// The record a read of `name` at `version` finds; a missing bucket,
    /// key or version is refused with its own code, and a delete marker
    /// as S3 does (404 for the current version, 405 for one asked by id,
    /// both saying `x-amz-delete-marker: true`).
    pub(super) async fn find(
        &self,
        bucket: &str,
        name: &str,
        version: Option<&str>,
    ) -> S3Result<VersionRecord> {
        let pick = match version {
            Some(text) => parse_version_id(text)?,
            None => VersionPick::Current,
        };
        let record = match self.node.resolve(name, &pick).await {
            Ok(record) => record,
            Err(error) if error.code == ErrorCode::NotFound => {
                self.bucket(bucket).await?;
                let code = match pick {
                    VersionPick::Current => S3ErrorCode::NoSuchKey,
                    _ => S3ErrorCode::NoSuchVersion,
                };
                return Err(S3Error::with_message(code, error.message));
            }
            Err(error) => return Err(object_error(error)),
        };
        if record.is_tombstone() {
            let mut headers = HeaderMap::new();
            headers.insert("x-amz-delete-marker", HeaderValue::from_static("true"));
            let mut error = match pick {
                VersionPick::Current => {
                    S3Error::with_message(S3ErrorCode::NoSuchKey, format!("{name} was deleted"))
                }
                _ => {
                    if let Ok(value) = HeaderValue::from_str(&version_id(&record)) {
                        headers.insert("x-amz-version-id", value);
                    }
                    S3Error::with_message(
                        S3ErrorCode::MethodNotAllowed,
                        "this version is a delete marker",
                    )
                }
            };
            error.set_headers(headers);
            return Err(error);
        }
        Ok(record)
    }

    /// The version id header of a record, as S3 shows it: none in a
    /// bucket that never had versioning (for its null versions).
    pub(super) fn shown_version(
        record: &VersionRecord,
        settings: &BucketSettings,
    ) -> Option<String> {
        if record.null_version && settings.versioning == Versioning::Off {
            None
        } else {
            Some(version_id(record))
        }
    }

    /// Delete `key` as S3 does without a version id: in a versioning
    /// bucket, a delete marker (always, as S3); in a suspended one, a null
    /// delete marker replacing the null version; in one that never had
    /// versioning, the removal of the object if there is one (which frees
    /// its null version).
    async fn delete_current(
        &self,
        caller: &Caller,
        bucket: &str,
        settings: &BucketSettings,
        key: &str,
    ) -> S3Result<Option<VersionRecord>> {
        let name = object_name(bucket, key)?;
        caller.may_write(&name)?;
        if settings.versioning == Versioning::Off {
            match self.node.resolve(&name, &VersionPick::Current).await {
                Ok(current) if !current.is_tombstone() => {}
                Ok(_) => return Ok(None),
                Err(error) if error.code == ErrorCode::NotFound => return Ok(None),
                Err(error) => return Err(object_error(error)),
            }
        }
        let null_version = settings.versioning != Versioning::Enabled;
        let forget = self.nulls_replaced(&name, settings).await?;
        if settings.versioning == Versioning::Off {
            // Without versioning the object just goes: when every version
            // is a null one, deleting them leaves nothing (no delete
            // marker, which such a bucket never shows); versions the CLI
            // wrote stay behind a removal.
            let history = self.node.history(&name).await.map_err(object_error)?;
            if history.versions().all(|r| r.null_version) {
                let current = history.current().cloned();
                self.node
                    .forget_versions(&name, &forget)
                    .await
                    .map_err(object_error)?;
                return Ok(current);
            }
        }
        self.node
            .remove(name, caller.key, null_version, &forget)
            .await
            .map(Some)
            .map_err(object_error)
    }
}

/// Check a read's preconditions (RFC 9110 §13.2.2 order, as S3 applies
/// them) against the version found.
pub(super) fn check_conditions(
    record: &VersionRecord,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
    if_unmodified_since: Option<&Timestamp>,
) -> S3Result<()> {
    let tag = etag(record);
    let matches = |condition: &ETagCondition| match condition {
        ETagCondition::Any => true,
        ETagCondition::ETag(candidate) => candidate.value() == tag,
    };
    let modified =
        std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(record.vid.wall_ms);
    // HTTP dates have whole seconds: compare at that precision.
    let seconds = |time: std::time::SystemTime| {
        time.duration_since(std::time::SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    };
    let since = |timestamp: &Timestamp| {
        let time: time::OffsetDateTime = timestamp.clone().into();
        time.unix_timestamp().max(0) as u64
    };
    if let Some(condition) = if_match {
        if !matches(condition) {
            return Err(s3_error!(PreconditionFailed, "If-Match does not match"));
        }
    } else if let Some(limit) = if_unmodified_since
        && seconds(modified) > since(limit)
    {
        return Err(s3_error!(
            PreconditionFailed,
            "modified since If-Unmodified-Since"
        ));
    }
    if let Some(condition) = if_none_match {
        if matches(condition) {
            return Err(not_modified(record));
        }
    } else if let Some(limit) = if_modified_since
        && seconds(modified) <= since(limit)
    {
        return Err(not_modified(record));
    }
    Ok(())
}

/// A copy's `x-amz-copy-source-if-*` (CopyObject and UploadPartCopy):
/// the read's preconditions, failing with 412 either way.
macro_rules! copy_source_conditions {
    ($source:ident, $input:ident) => {
        check_conditions(
            &$source,
            $input.copy_source_if_match.as_ref(),
            $input.copy_source_if_none_match.as_ref(),
            $input.copy_source_if_modified_since.as_ref(),
            $input.copy_source_if_unmodified_since.as_ref(),
        )
        .map_err(|error| {
            if *error.code() == S3ErrorCode::NotModified {
                s3_error!(PreconditionFailed, "the copy source's precondition failed")
            } else {
                error
            }
        })
    };
}
pub(super) use copy_source_conditions;

fn not_modified(record: &VersionRecord) -> S3Error {
    let mut error = S3Error::new(S3ErrorCode::NotModified);
    error.set_status_code(hyper::StatusCode::NOT_MODIFIED);
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&format!("\"{}\"", etag(record))) {
        headers.insert("etag", value);
    }
    error.set_headers(headers);
    error
}

/// The `x-amz-checksum-*` headers of an upload's input (PutObject and
/// UploadPart: two s3s types with the same fields).
macro_rules! checksums_of {
    ($input:ident) => {
        Checksum {
            checksum_crc32: $input.checksum_crc32.clone(),
            checksum_crc32c: $input.checksum_crc32c.clone(),
            checksum_crc64nvme: $input.checksum_crc64nvme.clone(),
            checksum_sha1: $input.checksum_sha1.clone(),
            checksum_sha256: $input.checksum_sha256.clone(),
            ..Default::default()
        }
    };
}

/// [`attributes_of`] from a request whose input has the standard header
/// fields (PutObject, CopyObject, CreateMultipartUpload: three s3s types).
macro_rules! attributes_from {
    ($input:ident) => {
        attributes_of(
            $input.content_type.as_ref(),
            $input.cache_control.as_ref(),
            $input.content_disposition.as_ref(),
            $input.content_encoding.as_ref(),
            $input.content_language.as_ref(),
            $input.expires.as_ref(),
            $input.website_redirect_location.as_ref(),
            $input.metadata.as_ref(),
        )
    };
}
pub(super) use attributes_from;

/// The attributes a put or a replacing copy keeps, from its headers.
#[allow(clippy::too_many_arguments)]
pub(super) fn attributes_of(
    content_type: Option<&ContentType>,
    cache_control: Option<&String>,
    content_disposition: Option<&String>,
    content_encoding: Option<&String>,
    content_language: Option<&String>,
    expires: Option<&Timestamp>,
    website_redirect: Option<&String>,
    metadata: Option<&Metadata>,
) -> S3Result<Attributes> {
    let mut attributes = Vec::new();
    let mut add = |name: &str, value: Option<&String>| {
        if let Some(value) = value {
            attributes.push((name.to_string(), value.clone()));
        }
    };
    add(CONTENT_TYPE, content_type);
    add(CACHE_CONTROL, cache_control);
    add(CONTENT_DISPOSITION, content_disposition);
    add(CONTENT_ENCODING, content_encoding);
    add(CONTENT_LANGUAGE, content_language);
    add(WEBSITE_REDIRECT, website_redirect);
    if let Some(expires) = expires {
        let mut text = Vec::new();
        expires
            .format(TimestampFormat::HttpDate, &mut text)
            .map_err(|_| s3_error!(InvalidArgument, "Expires is not a date"))?;
        attributes.push((EXPIRES.into(), String::from_utf8_lossy(&text).into_owned()));
    }
    for (key, value) in metadata.into_iter().flatten() {
        attributes.push((
            format!("{META_PREFIX}{}", key.to_ascii_lowercase()),
            value.clone(),
        ));
    }
    attributes.sort();
    attributes.dedup_by(|a, b| a.0 == b.0);
    if attributes
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum::<usize>()
        > dfs::cas::ATTRIBUTE_BYTES_MAX
    {
        return Err(s3_error!(
            MetadataTooLarge,
            "metadata headers exceed {} bytes",
            dfs::cas::ATTRIBUTE_BYTES_MAX
        ));
    }
    Ok(attributes)
}

/// An object's standard headers and user metadata, from its manifest.
struct Shown {
    content_type: Option<String>,
    cache_control: Option<String>,
    content_disposition: Option<String>,
    content_encoding: Option<String>,
    content_language: Option<String>,
    expires: Option<Timestamp>,
    website_redirect: Option<String>,
    metadata: Option<Metadata>,
}

// s3s's `Metadata` is a HashMap; its order never reaches a decision here.
#[allow(clippy::disallowed_types)]
fn shown(reader: &ObjectReader) -> Shown {
    let get = |name: &str| reader.manifest.attribute(name).map(str::to_string);
    let metadata: Metadata = reader
        .manifest
        .attributes
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(META_PREFIX)?.to_string(), v.clone())))
        .collect();
    Shown {
        content_type: get(CONTENT_TYPE).or_else(|| Some("binary/octet-stream".into())),
        cache_control: get(CACHE_CONTROL),
        content_disposition: get(CONTENT_DISPOSITION),
        content_encoding: get(CONTENT_ENCODING),
        content_language: get(CONTENT_LANGUAGE),
        expires: get(EXPIRES)
            .and_then(|text| Timestamp::parse(TimestampFormat::HttpDate, &text).ok()),
        website_redirect: get(WEBSITE_REDIRECT),
        metadata: (!metadata.is_empty()).then_some(metadata),
    }
}

pub(super) fn decode_md5(text: &str) -> S3Result<[u8; 16]> {
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()
        .and_then(|bytes| <[u8; 16]>::try_from(bytes).ok())
        .ok_or_else(|| s3_error!(InvalidDigest, "Content-MD5 is not a base64 MD5"))
}

pub(super) fn put_error(error: PutError<Box<dyn std::error::Error + Send + Sync>>) -> S3Error {
    match error {
        PutError::Refused(error) => object_error(error),
        PutError::Body(error) => match error.downcast::<S3Error>() {
            // A chunk signature or checksum that does not verify.
            Ok(error) => *error,
            Err(error) => S3Error::with_message(
                S3ErrorCode::IncompleteBody,
                format!("the request body ended early: {error}"),
            ),
        },
    }
}

fn strong(tag: String) -> Option<ETag> {
    Some(ETag::Strong(tag))
}

fn owner(key: &AccessKeyId) -> Owner {
    Owner {
        display_name: Some(key.to_string()),
        id: Some(key.to_string()),
    }
}

/// What GetObject and HeadObject both ask: the version, its
/// preconditions, the range. (Their inputs are two s3s types with the same
/// fields, hence a macro to gather them.)
struct ReadRequest<'a> {
    bucket: &'a str,
    key: &'a str,
    version: Option<&'a str>,
    if_match: Option<&'a ETagCondition>,
    if_none_match: Option<&'a ETagCondition>,
    if_modified_since: Option<&'a Timestamp>,
    if_unmodified_since: Option<&'a Timestamp>,
    range: Option<&'a Range>,
}

macro_rules! read_object {
    ($self:ident, $caller:ident, $input:ident) => {
        $self
            .read_object(
                &$caller,
                ReadRequest {
                    bucket: &$input.bucket,
                    key: &$input.key,
                    version: $input.version_id.as_deref(),
                    if_match: $input.if_match.as_ref(),
                    if_none_match: $input.if_none_match.as_ref(),
                    if_modified_since: $input.if_modified_since.as_ref(),
                    if_unmodified_since: $input.if_unmodified_since.as_ref(),
                    range: $input.range.as_ref(),
                },
            )
            .await?
    };
}

/// The headers GetObject and HeadObject answer with, from a read and the
/// request's `response-*` overrides, and any further fields.
macro_rules! object_headers {
    ($output:ident, $read:ident, $shown:ident, $input:ident, $($field:ident: $value:expr),*) => {
        $output {
            accept_ranges: Some("bytes".into()),
            content_length: Some($read.length as i64),
            content_range: $read.content_range,
            content_type: $input.response_content_type.or($shown.content_type),
            cache_control: $input.response_cache_control.or($shown.cache_control),
            content_disposition: $input
                .response_content_disposition
                .or($shown.content_disposition),
            content_encoding: $input.response_content_encoding.or($shown.content_encoding),
            content_language: $input.response_content_language.or($shown.content_language),
            expires: $input.response_expires.or($shown.expires),
            website_redirect_location: $shown.website_redirect,
            metadata: $shown.metadata,
            e_tag: strong(etag(&$read.record)),
            last_modified: Some(timestamp($read.record.vid.wall_ms)),
            version_id: $read.version_id,
            $($field: $value,)*
            ..Default::default()
        }
    };
}

/// A version opened for GetObject or HeadObject.
struct ObjectRead {
    record: VersionRecord,
    reader: ObjectReader,
    /// The part asked for (`None`: all of it).
    range: Option<std::ops::Range<u64>>,
    content_range: Option<String>,
    length: u64,
    shown: Shown,
    version_id: Option<String>,
}

impl DfsS3 {
    /// Find the version, check the preconditions, open it, and work out
    /// the range (refused as InvalidRange outside the object).
    async fn read_object(&self, caller: &Caller, request: ReadRequest<'_>) -> S3Result<ObjectRead> {
        let name = object_name(request.bucket, request.key)?;
        caller.may_read(&name)?;
        let record = self.find(request.bucket, &name, request.version).await?;
        check_conditions(
            &record,
            request.if_match,
            request.if_none_match,
            request.if_modified_since,
            request.if_unmodified_since,
        )?;
        let content = record.content.expect("find returns no delete marker");
        let reader = self
            .node
            .open_content(Some(record.clone()), content)
            .await
            .map_err(object_error)?;
        let size = reader.size();
        let range = match request.range {
            Some(range) => Some(range.check(size).map_err(|_| {
                s3_error!(
                    InvalidRange,
                    "the range is outside the object's {size} bytes"
                )
            })?),
            None => None,
        };
        let content_range = range.as_ref().map(|wanted| {
            format!(
                "bytes {}-{}/{size}",
                wanted.start,
                wanted.end.saturating_sub(1)
            )
        });
        let length = range
            .as_ref()
            .map_or(size, |wanted| wanted.end - wanted.start);
        let settings = self.bucket(request.bucket).await?.settings;
        Ok(ObjectRead {
            version_id: Self::shown_version(&record, &settings),
            shown: shown(&reader),
            record,
            reader,
            range,
            content_range,
            length,
        })
    }
}

/// A listing's page of `bucket`, as keys.
struct KeyPage {
    objects: Vec<Object>,
    prefixes: Vec<CommonPrefix>,
    /// The dfs name to continue after, when truncated.
    next: Option<String>,
}

impl DfsS3 {
    #[allow(clippy::too_many_arguments)]
    async fn list_keys(
        &self,
        caller: &Caller,
        bucket: &str,
        prefix: &str,
        delimiter: Option<&str>,
        start_after_key: Option<&str>,
        max_keys: Option<i32>,
        url: bool,
    ) -> S3Result<KeyPage> {
        let full_prefix = format!("{bucket}/{prefix}");
        caller.may_read(&full_prefix)?;
        self.bucket(bucket).await?;
        let max = max_keys.map_or(LIST_KEYS_MAX, |m| (m.max(0) as usize).min(LIST_KEYS_MAX));
        let start_after = start_after_key.map(|key| format!("{bucket}/{key}"));
        let page = if max == 0 {
            Default::default()
        } else {
            self.node
                .list_page(&full_prefix, delimiter, start_after.as_deref(), max)
                .await
                .map_err(object_error)?
        };
        let show = |key: &str| {
            if url {
                url_encode(key)
            } else {
                key.to_string()
            }
        };
        let mut objects = Vec::new();
        let mut prefixes = Vec::new();
        for entry in &page.entries {
            match entry {
                Listed::Object(record) => objects.push(Object {
                    key: Some(show(key_of(bucket, &record.name))),
                    e_tag: strong(etag(record)),
                    last_modified: Some(timestamp(record.vid.wall_ms)),
                    size: Some(record.size as i64),
                    storage_class: Some(ObjectStorageClass::from_static(
                        ObjectStorageClass::STANDARD,
                    )),
                    owner: record.by.as_ref().map(owner),
                    ..Default::default()
                }),
                Listed::CommonPrefix(common) => prefixes.push(CommonPrefix {
                    prefix: Some(show(key_of(bucket, common))),
                }),
            }
        }
        let next = page
            .truncated
            .then(|| page.entries.last().map(|e| e.name().to_string()))
            .flatten();
        Ok(KeyPage {
            objects,
            prefixes,
            next,
        })
    }
}

/// Continuation tokens are the hex of the dfs name to continue after:
/// opaque to clients, and checked on the way back.
fn token_of(name: &str) -> String {
    hex::encode(name)
}

fn name_of_token(bucket: &str, token: &str) -> S3Result<String> {
    hex::decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .filter(|name| name.starts_with(&format!("{bucket}/")))
        .ok_or_else(|| s3_error!(InvalidArgument, "invalid continuation token"))
}

pub(super) fn is_url(encoding: Option<&EncodingType>) -> S3Result<bool> {
    match encoding.map(|e| e.as_str()) {
        None => Ok(false),
        Some(EncodingType::URL) => Ok(true),
        Some(other) => Err(s3_error!(InvalidArgument, "invalid encoding type {other}")),
    }
}

#[async_trait::async_trait]
impl S3 for DfsS3 {
    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let caller = self.caller(&req)?;
        let all = buckets::list(&self.node).await?;
        let prefix = req.input.prefix.unwrap_or_default();
        let buckets = all
            .into_iter()
            .filter(|(name, _)| name.starts_with(&prefix) && caller.sees_bucket(name))
            .map(|(name, created_ms)| Bucket {
                name: Some(name),
                creation_date: Some(timestamp(created_ms)),
                bucket_region: None,
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(owner(&caller.key)),
            ..Default::default()
        }))
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let caller = self.caller(&req)?;
        let bucket = req.input.bucket;
        caller.may_write(&format!("{bucket}/"))?;
        let state = buckets::state(&self.node, &self.settings, &bucket).await?;
        if state.settings_record.is_some() {
            return Err(s3_error!(
                BucketAlreadyOwnedByYou,
                "bucket {bucket} already exists"
            ));
        }
        buckets::write_settings(&self.node, &bucket, &BucketSettings::default(), caller.key)
            .await?;
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{bucket}")),
        }))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        let caller = self.caller(&req)?;
        if !caller.sees_bucket(&req.input.bucket) {
            return Err(caller.denied("read", &req.input.bucket));
        }
        self.bucket(&req.input.bucket).await?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        let caller = self.caller(&req)?;
        let bucket = req.input.bucket;
        caller.may_write(&format!("{bucket}/"))?;
        self.bucket(&bucket).await?;
        if !buckets::is_empty(&self.node, &bucket).await? {
            return Err(s3_error!(
                BucketNotEmpty,
                "bucket {bucket} holds objects, versions or uploads; delete them first"
            ));
        }

        buckets::remove_settings(&self.node, &bucket, caller.key).await?;
        Ok(S3Response::new(DeleteBucketOutput::default()))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        let caller = self.caller(&req)?;
        if !caller.sees_bucket(&req.input.bucket) {
            return Err(caller.denied("read", &req.input.bucket));
        }
        self.bucket(&req.input.bucket).await?;
        // No constraint: the default region (us-east-1), which every
        // client accepts for a single-location store.
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        let caller = self.caller(&req)?;
        if !caller.sees_bucket(&req.input.bucket) {
            return Err(caller.denied("read", &req.input.bucket));
        }
        let state = self.bucket(&req.input.bucket).await?;
        let status = match state.settings.versioning {
            Versioning::Off => None,
            Versioning::Enabled => Some(BucketVersioningStatus::ENABLED),
            Versioning::Suspended => Some(BucketVersioningStatus::SUSPENDED),
        };
        Ok(S3Response::new(GetBucketVersioningOutput {
            status: status.map(BucketVersioningStatus::from_static),
            mfa_delete: None,
        }))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let caller = self.caller(&req)?;
        let S3Request {
            input,
            headers,
            trailing_headers,
            ..
        } = req;
        let name = object_name(&input.bucket, &input.key)?;
        caller.may_write(&name)?;
        let state = self.bucket(&input.bucket).await?;
        if input.if_match.is_some() || input.if_none_match.is_some() {
            let current = match self.node.resolve(&name, &VersionPick::Current).await {
                Ok(record) if !record.is_tombstone() => Some(record),
                Ok(_) => None,
                Err(error) if error.code == ErrorCode::NotFound => None,
                Err(error) => return Err(object_error(error)),
            };
            match (&input.if_none_match, &current) {
                (Some(ETagCondition::Any), Some(_)) => {
                    return Err(s3_error!(PreconditionFailed, "{} exists", input.key));
                }
                (Some(ETagCondition::ETag(tag)), Some(current)) if tag.value() == etag(current) => {
                    return Err(s3_error!(PreconditionFailed, "If-None-Match matches"));
                }
                _ => {}
            }
            if let Some(condition) = &input.if_match {
                let holds = match (condition, &current) {
                    (_, None) => {
                        return Err(s3_error!(NoSuchKey, "{} does not exist", input.key));
                    }
                    (ETagCondition::Any, Some(_)) => true,
                    (ETagCondition::ETag(tag), Some(current)) => tag.value() == etag(current),
                };
                if !holds {
                    return Err(s3_error!(PreconditionFailed, "If-Match does not match"));
                }
            }
        }
        let expect_md5 = input.content_md5.as_deref().map(decode_md5).transpose()?;
        let attributes = attributes_from!(input)?;
        let options = PutOptions {
            md5: true,
            null_version: state.settings.versioning != Versioning::Enabled,
            attributes,
            expect_md5,
            forget: self.nulls_replaced(&name, &state.settings).await?,
        };
        let mut input = input;
        let checksums = checksums_of!(input);
        let mut body = BlobBody::new(input.body.take(), checksums, &headers, trailing_headers)?;
        let record = self
            .node
            .put(name, &mut body, caller.key, options)
            .await
            .map_err(put_error)?;
        Ok(S3Response::new(PutObjectOutput {
            e_tag: strong(etag(&record)),
            version_id: Self::shown_version(&record, &state.settings),
            size: Some(record.size as i64),
            ..Default::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let caller = self.caller(&req)?;
        let input = req.input;
        let mut read = read_object!(self, caller, input);
        if let Some(range) = read.range.clone() {
            read.reader.set_range(range);
        }
        let body = response_body(read.reader);
        let shown = read.shown;
        Ok(S3Response::new(
            object_headers!(GetObjectOutput, read, shown, input, body: Some(body)),
        ))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let caller = self.caller(&req)?;
        let input = req.input;
        let read = read_object!(self, caller, input);
        let shown = read.shown;
        Ok(S3Response::new(object_headers!(
            HeadObjectOutput,
            read,
            shown,
            input,
        )))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let caller = self.caller(&req)?;
        let input = req.input;
        let state = self.bucket(&input.bucket).await?;
        if let Some(version) = &input.version_id {
            let marker = self
                .delete_version(&caller, &input.bucket, &input.key, version)
                .await?;
            return Ok(S3Response::new(DeleteObjectOutput {
                delete_marker: marker.then_some(true),
                version_id: Some(version.clone()),
                ..Default::default()
            }));
        }
        let removed = self
            .delete_current(&caller, &input.bucket, &state.settings, &input.key)
            .await?;
        let marker = removed
            .as_ref()
            .filter(|_| state.settings.versioning != Versioning::Off);
        Ok(S3Response::new(DeleteObjectOutput {
            delete_marker: marker.map(|_| true),
            version_id: marker.map(version_id),
            ..Default::default()
        }))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let caller = self.caller(&req)?;
        let input = req.input;
        if input.delete.objects.len() > DELETE_OBJECTS_MAX {
            return Err(s3_error!(
                MalformedXML,
                "at most {DELETE_OBJECTS_MAX} keys per request"
            ));
        }
        let state = self.bucket(&input.bucket).await?;
        let quiet = input.delete.quiet.unwrap_or(false);
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for object in input.delete.objects {
            if let Some(version) = &object.version_id {
                match self
                    .delete_version(&caller, &input.bucket, &object.key, version)
                    .await
                {
                    Ok(marker) => {
                        if !quiet {
                            deleted.push(DeletedObject {
                                key: Some(object.key),
                                version_id: Some(version.clone()),
                                delete_marker: marker.then_some(true),
                                delete_marker_version_id: marker.then(|| version.clone()),
                            });
                        }
                    }
                    Err(error) => errors.push(Error {
                        code: Some(error.code().as_str().to_string()),
                        key: Some(object.key),
                        message: error.message().map(str::to_string),
                        version_id: Some(version.clone()),
                    }),
                }
                continue;
            }
            match self
                .delete_current(&caller, &input.bucket, &state.settings, &object.key)
                .await
            {
                Ok(removed) => {
                    if quiet {
                        continue;
                    }
                    let marker = removed
                        .as_ref()
                        .filter(|_| state.settings.versioning != Versioning::Off);
                    deleted.push(DeletedObject {
                        key: Some(object.key),
                        delete_marker: marker.map(|_| true),
                        delete_marker_version_id: marker.map(version_id),
                        version_id: None,
                    });
                }
                Err(error) => errors.push(Error {
                    code: Some(error.code().as_str().to_string()),
                    key: Some(object.key),
                    message: error.message().map(str::to_string),
                    version_id: None,
                }),
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: Some(errors),
            ..Default::default()
        }))
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let caller = self.caller(&req)?;
        let input = req.input;
        let CopySource::Bucket {
            bucket: source_bucket,
            key: source_key,
            version_id: source_version,
        } = &input.copy_source
        else {
            return Err(s3_error!(
                NotImplemented,
                "copying from an access point is not supported"
            ));
        };
        let source_name = object_name(source_bucket, source_key)?;
        caller.may_read(&source_name)?;
        let name = object_name(&input.bucket, &input.key)?;
        caller.may_write(&name)?;
        let state = self.bucket(&input.bucket).await?;
        let source = self
            .find(source_bucket, &source_name, source_version.as_deref())
            .await?;
        copy_source_conditions!(source, input)?;
        let replace = input
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        if source_name == name && !replace && source_version.is_none() {
            return Err(s3_error!(
                InvalidRequest,
                "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes."
            ));
        }
        let attributes = if replace {
            Some(attributes_from!(input)?)
        } else {
            None
        };
        let null_version = state.settings.versioning != Versioning::Enabled;
        let forget = self.nulls_replaced(&name, &state.settings).await?;
        let record = self
            .node
            .reuse_content(
                name,
                &source,
                caller.key,
                (null_version, &forget),
                attributes,
            )
            .await
            .map_err(object_error)?;
        let source_settings = if source_bucket.as_ref() == input.bucket {
            state.settings.clone()
        } else {
            self.bucket(source_bucket).await?.settings
        };
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: strong(etag(&record)),
                last_modified: Some(timestamp(record.vid.wall_ms)),
                ..Default::default()
            }),
            version_id: Self::shown_version(&record, &state.settings),
            copy_source_version_id: Self::shown_version(&source, &source_settings),
            ..Default::default()
        }))
    }

    async fn put_bucket_versioning(
        &self,
        req: S3Request<PutBucketVersioningInput>,
    ) -> S3Result<S3Response<PutBucketVersioningOutput>> {
        let caller = self.caller(&req)?;
        self.set_versioning(&caller, req.input).await?;
        Ok(S3Response::new(PutBucketVersioningOutput::default()))
    }

    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        let caller = self.caller(&req)?;
        Ok(S3Response::new(
            self.list_versions(&caller, req.input).await?,
        ))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let caller = self.caller(&req)?;
        Ok(S3Response::new(
            self.create_upload(&caller, req.input).await?,
        ))
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let caller = self.caller(&req)?;
        let S3Request {
            input,
            headers,
            trailing_headers,
            ..
        } = req;
        let checksums = checksums_of!(input);
        let mut input = input;
        let body = BlobBody::new(input.body.take(), checksums, &headers, trailing_headers)?;
        Ok(S3Response::new(self.put_part(&caller, input, body).await?))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let caller = self.caller(&req)?;
        Ok(S3Response::new(
            self.complete_upload(&caller, req.input).await?,
        ))
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let caller = self.caller(&req)?;
        Ok(S3Response::new(self.copy_part(&caller, req.input).await?))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let caller = self.caller(&req)?;
        Ok(S3Response::new(
            self.abort_upload(&caller, req.input).await?,
        ))
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let caller = self.caller(&req)?;
        Ok(S3Response::new(
            self.list_upload_parts(&caller, req.input).await?,
        ))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let caller = self.caller(&req)?;
        Ok(S3Response::new(
            self.list_uploads(&caller, req.input).await?,
        ))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let caller = self.caller(&req)?;
        let input = req.input;
        let url = is_url(input.encoding_type.as_ref())?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let after = match &input.continuation_token {
            Some(token) => {
                Some(key_of(&input.bucket, &name_of_token(&input.bucket, token)?).to_string())
            }
            None => input.start_after.clone(),
        };
        let page = self
            .list_keys(
                &caller,
                &input.bucket,
                &prefix,
                input.delimiter.as_deref(),
                after.as_deref(),
                input.max_keys,
                url,
            )
            .await?;
        let show = |text: String| if url { url_encode(&text) } else { text };
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(show(prefix)),
            delimiter: input.delimiter.map(show),
            start_after: input.start_after.map(show),
            max_keys: Some(input.max_keys.unwrap_or(LIST_KEYS_MAX as i32)),
            key_count: Some((page.objects.len() + page.prefixes.len()) as i32),
            is_truncated: Some(page.next.is_some()),
            continuation_token: input.continuation_token,
            next_continuation_token: page.next.as_deref().map(token_of),
            contents: Some(page.objects),
            common_prefixes: Some(page.prefixes),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let caller = self.caller(&req)?;
        let input = req.input;
        let url = is_url(input.encoding_type.as_ref())?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let page = self
            .list_keys(
                &caller,
                &input.bucket,
                &prefix,
                input.delimiter.as_deref(),
                input.marker.as_deref(),
                input.max_keys,
                url,
            )
            .await?;
        let show = |text: String| if url { url_encode(&text) } else { text };
        // NextMarker is sent only with a delimiter (clients continue after
        // the last key otherwise), as S3 does.
        let next_marker = page
            .next
            .as_deref()
            .filter(|_| input.delimiter.is_some())
            .map(|name| show(key_of(&input.bucket, name).to_string()));
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(input.bucket),
            prefix: Some(show(prefix)),
            delimiter: input.delimiter.map(show),
            marker: Some(input.marker.map(show).unwrap_or_default()),
            max_keys: Some(input.max_keys.unwrap_or(LIST_KEYS_MAX as i32)),
            is_truncated: Some(page.next.is_some()),
            next_marker,
            contents: Some(page.objects),
            common_prefixes: Some(page.prefixes),
            encoding_type: input.encoding_type,
            ..Default::default()
        }))
    }
}
