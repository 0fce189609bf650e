//! Object headers as S3 sends them, to and from what dfs keeps: the
//! standard headers and `x-amz-meta-*` as manifest attributes, the
//! preconditions of a read or a copy, the checksums and Content-MD5 of an
//! upload, and the small response pieces every operation shares.

use base64::Engine as _;
use dfs::cas::Attributes;
use dfs::keys::AccessKeyId;
use dfs::meta::VersionRecord;
use dfs::node::ops::ObjectReader;
use hyper::header::{HeaderMap, HeaderValue};
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Result, s3_error};

use super::names::etag;

/// The standard headers kept with an object, by their manifest attribute
/// name (the header name).
pub(super) const CONTENT_TYPE: &str = "content-type";
pub(super) const CACHE_CONTROL: &str = "cache-control";
pub(super) const CONTENT_DISPOSITION: &str = "content-disposition";
pub(super) const CONTENT_ENCODING: &str = "content-encoding";
pub(super) const CONTENT_LANGUAGE: &str = "content-language";
pub(super) const EXPIRES: &str = "expires";
pub(super) const WEBSITE_REDIRECT: &str = "x-amz-website-redirect-location";
pub(super) const META_PREFIX: &str = "x-amz-meta-";

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
        $crate::s3::headers::check_conditions(
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
        s3s::dto::Checksum {
            checksum_crc32: $input.checksum_crc32.clone(),
            checksum_crc32c: $input.checksum_crc32c.clone(),
            checksum_crc64nvme: $input.checksum_crc64nvme.clone(),
            checksum_sha1: $input.checksum_sha1.clone(),
            checksum_sha256: $input.checksum_sha256.clone(),
            ..Default::default()
        }
    };
}
pub(super) use checksums_of;

/// [`attributes_of`] from a request whose input has the standard header
/// fields (PutObject, CopyObject, CreateMultipartUpload: three s3s types).
macro_rules! attributes_from {
    ($input:ident) => {
        $crate::s3::headers::attributes_of(
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
pub(super) struct Shown {
    pub(super) content_type: Option<String>,
    pub(super) cache_control: Option<String>,
    pub(super) content_disposition: Option<String>,
    pub(super) content_encoding: Option<String>,
    pub(super) content_language: Option<String>,
    pub(super) expires: Option<Timestamp>,
    pub(super) website_redirect: Option<String>,
    pub(super) metadata: Option<Metadata>,
}

// s3s's `Metadata` is a HashMap; its order never reaches a decision here.
#[allow(clippy::disallowed_types)]
pub(super) fn shown(reader: &ObjectReader) -> Shown {
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

pub(super) fn strong(tag: String) -> Option<ETag> {
    Some(ETag::Strong(tag))
}

pub(super) fn owner(key: &AccessKeyId) -> Owner {
    Owner {
        display_name: Some(key.to_string()),
        id: Some(key.to_string()),
    }
}
