//! The S3 operations, each a translation onto the node's operations.
//!
//! Every request is signed (s3s checks SigV4 with the secret
//! [`KeyringAuth`] gives it, and refuses anonymous requests); each
//! operation then checks the key's permission as it is now, on the dfs
//! names it touches, as the native protocol does.

use std::sync::Arc;

use dfs::keys::{AccessKeyId, Permission};
use dfs::meta::VersionRecord;
use dfs::node::Node;
use dfs::node::ops::{OpError, PutOptions, VersionPick};
use dfs::wire::ErrorCode;
use hyper::header::{HeaderMap, HeaderValue};
use s3s::dto::*;
use s3s::service::{S3Service, S3ServiceBuilder};
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};

use super::auth::KeyringAuth;
use super::body::{BlobBody, response_body};
use super::buckets::{self, BucketSettings, BucketState, SettingsCache, Versioning};
use super::errors::object_error;
use super::errors::put_error;
use super::headers::{
    attributes_from, checksums_of, copy_source_conditions, decode_md5, owner, strong,
};
use super::listing::{LIST_KEYS_MAX, is_url, name_of_token, token_of};
use super::names::{
    etag, key_of, object_name, parse_version_id, timestamp, url_encode, version_id,
};
use super::reads::{object_headers, read_object};
use super::versions::nulls_in;

/// Most keys one DeleteObjects request may name (S3's limit).
const DELETE_OBJECTS_MAX: usize = 1000;

pub fn build(node: Arc<Node>, hosts: super::VirtualHosts) -> S3Service {
    let mut builder = S3ServiceBuilder::new(DfsS3 {
        node: node.clone(),
        settings: SettingsCache::default(),
    });
    builder.set_auth(KeyringAuth(node));
    builder.set_access(super::operation::NamingAccess);
    builder.set_host(hosts);
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

    /// Where a copy (CopyObject, UploadPartCopy) reads: the source's
    /// bucket, dfs name and version id, which this key must be able to read.
    pub(super) fn copy_source<'a>(
        &self,
        source: &'a CopySource,
    ) -> S3Result<(&'a str, String, Option<&'a str>)> {
        let CopySource::Bucket {
            bucket,
            key,
            version_id,
        } = source
        else {
            return Err(s3_error!(
                NotImplemented,
                "copying from an access point is not supported"
            ));
        };
        let name = object_name(bucket, key)?;
        self.may_read(&name)?;
        Ok((bucket, name, version_id.as_deref()))
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
        let found = match pick {
            // S3 reads are strongly consistent: a version acknowledged
            // through another node is the one answered here.
            VersionPick::Current => self
                .node
                .catch_up(name)
                .await
                .map_err(object_error)?
                .ok_or_else(|| OpError::not_found(format!("no file named {name}"))),
            _ => self.node.resolve(name, &pick).await,
        };
        let record = match found {
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
            // What is deleted is decided here: first learn of any version
            // acknowledged through another node.
            let current = self.node.catch_up(&name).await.map_err(object_error)?;
            if current.is_none_or(|current| current.is_tombstone()) {
                return Ok(None);
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
        // The bucket and the name's history, read at once: the versions a
        // put replaces and the preconditions come from them.
        let (state, history) = tokio::join!(self.bucket(&input.bucket), self.node.history(&name));
        let state = state?;
        let mut history = history.map_err(object_error)?;
        if input.if_match.is_some() || input.if_none_match.is_some() {
            // Checked against the newest version a majority knows (not
            // atomically with the write: see README, Limits).
            let current = self
                .node
                .catch_up(&name)
                .await
                .map_err(object_error)?
                .filter(|record| !record.is_tombstone());
            // The catch-up may have brought a null version this put replaces.
            history = self.node.history(&name).await.map_err(object_error)?;
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
            forget: nulls_in(&history, &state.settings),
        };
        let mut input = input;
        let checksums = checksums_of!(input);
        let mut body = BlobBody::new(input.body.take(), checksums, &headers, trailing_headers)?;
        let record = self
            .node
            .put(name, &mut body, caller.key, options)
            .await
            .map_err(put_error)?;
        self.node.requests().received("s3", record.size);
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
        self.node.requests().sent("s3", read.length);
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
        let (source_bucket, source_name, source_version) =
            caller.copy_source(&input.copy_source)?;
        let name = object_name(&input.bucket, &input.key)?;
        caller.may_write(&name)?;
        let state = self.bucket(&input.bucket).await?;
        let source = self
            .find(source_bucket, &source_name, source_version)
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
        let source_settings = if source_bucket == input.bucket {
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
