//! ListObjects and ListObjectsV2: a page of a bucket's keys and common
//! prefixes, continuation tokens, and `encoding-type=url`.

use dfs::node::ops::Listed;
use s3s::dto::*;
use s3s::{S3Result, s3_error};

use super::errors::object_error;
use super::headers::{owner, strong};
use super::names::{etag, key_of, timestamp, url_encode};
use super::service::{Caller, DfsS3};

/// Most keys a listing returns per page (S3's limit and default).
pub(super) const LIST_KEYS_MAX: usize = 1000;

/// A listing's page of `bucket`, as keys.
pub(super) struct KeyPage {
    pub(super) objects: Vec<Object>,
    pub(super) prefixes: Vec<CommonPrefix>,
    /// The dfs name to continue after, when truncated.
    pub(super) next: Option<String>,
}

impl DfsS3 {
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn list_keys(
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
pub(super) fn token_of(name: &str) -> String {
    hex::encode(name)
}

pub(super) fn name_of_token(bucket: &str, token: &str) -> S3Result<String> {
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
