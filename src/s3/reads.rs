//! What GetObject and HeadObject share: find the version, check its
//! preconditions, open it, work out the range; and the headers they answer
//! with. Their inputs and outputs are twin s3s types (the same fields), so
//! two macros gather and fill them.

use dfs::cas::PARTS_MAX;
use dfs::meta::VersionRecord;
use dfs::node::ops::ObjectReader;
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Result, s3_error};

use super::errors::object_error;
use super::headers::{Shown, check_conditions, shown};
use super::names::object_name;
use super::service::{Caller, DfsS3};

/// What GetObject and HeadObject both ask: the version, its
/// preconditions, the range. (Their inputs are two s3s types with the same
/// fields, hence a macro to gather them.)
pub(super) struct ReadRequest<'a> {
    pub(super) bucket: &'a str,
    pub(super) key: &'a str,
    pub(super) version: Option<&'a str>,
    pub(super) if_match: Option<&'a ETagCondition>,
    pub(super) if_none_match: Option<&'a ETagCondition>,
    pub(super) if_modified_since: Option<&'a Timestamp>,
    pub(super) if_unmodified_since: Option<&'a Timestamp>,
    pub(super) range: Option<&'a Range>,
    /// One part of a multipart upload (`partNumber`), from 1.
    pub(super) part_number: Option<i32>,
}

macro_rules! read_object {
    ($self:ident, $caller:ident, $input:ident) => {
        $self
            .read_object(
                &$caller,
                $crate::s3::reads::ReadRequest {
                    bucket: &$input.bucket,
                    key: &$input.key,
                    version: $input.version_id.as_deref(),
                    if_match: $input.if_match.as_ref(),
                    if_none_match: $input.if_none_match.as_ref(),
                    if_modified_since: $input.if_modified_since.as_ref(),
                    if_unmodified_since: $input.if_unmodified_since.as_ref(),
                    range: $input.range.as_ref(),
                    part_number: $input.part_number,
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
            e_tag: $crate::s3::headers::strong($crate::s3::names::etag(&$read.record)),
            last_modified: Some($crate::s3::names::timestamp($read.record.vid.wall_ms)),
            version_id: $read.version_id,
            parts_count: $read.parts_count,
            $($field: $value,)*
            ..Default::default()
        }
    };
}

/// A version opened for GetObject or HeadObject.
pub(super) struct ObjectRead {
    pub(super) record: VersionRecord,
    pub(super) reader: ObjectReader,
    /// The part asked for (`None`: all of it).
    pub(super) range: Option<std::ops::Range<u64>>,
    pub(super) content_range: Option<String>,
    pub(super) length: u64,
    pub(super) shown: Shown,
    pub(super) version_id: Option<String>,
    /// The parts of a multipart upload, when one was asked for.
    pub(super) parts_count: Option<i32>,
}

impl DfsS3 {
    /// Find the version, check the preconditions, open it, and work out
    /// the range (refused as InvalidRange outside the object).
    pub(super) async fn read_object(
        &self,
        caller: &Caller,
        request: ReadRequest<'_>,
    ) -> S3Result<ObjectRead> {
        let name = object_name(request.bucket, request.key)?;
        caller.may_read(&name)?;
        // The bucket's settings (for the version id shown) are read beside
        // the version: two lookups at once, not one after the other.
        let (record, bucket) = tokio::join!(
            self.find(request.bucket, &name, request.version),
            self.bucket(request.bucket)
        );
        let record = record?;
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
        let (range, parts_count) = match (request.range, request.part_number) {
            (Some(_), Some(_)) => {
                return Err(s3_error!(
                    InvalidRequest,
                    "Cannot specify both Range header and partNumber query parameter"
                ));
            }
            (Some(range), None) => (
                Some(range.check(size).map_err(|_| {
                    s3_error!(
                        InvalidRange,
                        "the range is outside the object's {size} bytes"
                    )
                })?),
                None,
            ),
            (None, Some(number)) => part_of(&reader, number)?,
            (None, None) => (None, None),
        };
        let content_range = range
            .as_ref()
            .filter(|wanted| !wanted.is_empty())
            .map(|wanted| {
                format!(
                    "bytes {}-{}/{size}",
                    wanted.start,
                    wanted.end.saturating_sub(1)
                )
            });
        let length = range
            .as_ref()
            .map_or(size, |wanted| wanted.end - wanted.start);
        let settings = bucket?.settings;
        Ok(ObjectRead {
            version_id: Self::shown_version(&record, &settings),
            shown: shown(&reader),
            record,
            reader,
            range,
            content_range,
            length,
            parts_count,
        })
    }
}

/// The bytes of part `number` and the object's part count: a part of a
/// multipart upload, or the whole of any other object as its one part.
fn part_of(
    reader: &ObjectReader,
    number: i32,
) -> S3Result<(Option<std::ops::Range<u64>>, Option<i32>)> {
    let manifest = &reader.manifest;
    let number = match usize::try_from(number) {
        Ok(number @ 1..=PARTS_MAX) => number,
        _ => {
            return Err(s3_error!(
                InvalidArgument,
                "Part number must be an integer between 1 and {PARTS_MAX}, inclusive"
            ));
        }
    };
    let range = if manifest.parts.is_empty() {
        (number == 1).then_some(0..manifest.size)
    } else {
        manifest.part_range(number)
    };
    let Some(range) = range else {
        let mut error = S3Error::with_message(
            S3ErrorCode::Custom("InvalidPartNumber".into()),
            "The requested partnumber is not satisfiable",
        );
        error.set_status_code(hyper::StatusCode::RANGE_NOT_SATISFIABLE);
        return Err(error);
    };
    let count = (!manifest.parts.is_empty()).then_some(manifest.parts.len() as i32);
    Ok((Some(range), count))
}

pub(super) use {object_headers, read_object};
