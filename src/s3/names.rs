//! How S3's names map onto dfs names, version ids and ETags.
//!
//! Bucket `b`, key `k` is the dfs name `b/k`. A bucket's settings live in
//! the dfs file `.buckets/b` (a bucket name cannot start with a dot, so no
//! object is ever there); a first path segment that is a valid bucket name
//! is a bucket too while it holds files, so a file put with the CLI as
//! `photos/cat.jpg` is object `cat.jpg` of bucket `photos` without anyone
//! creating it.

use std::time::{Duration, SystemTime};

use dfs::meta::{VersionRecord, VersionSelector, validate_name};
use dfs::node::ops::VersionPick;
use s3s::dto::Timestamp;
use s3s::{S3Error, S3ErrorCode, S3Result, s3_error};

/// Where buckets' settings files live.
pub const BUCKET_SETTINGS: &str = ".buckets/";

/// The settings file of `bucket`.
pub fn settings_name(bucket: &str) -> String {
    format!("{BUCKET_SETTINGS}{bucket}")
}

/// The dfs name of `key` in `bucket`.
pub fn object_name(bucket: &str, key: &str) -> S3Result<String> {
    if key.is_empty() {
        return Err(s3_error!(InvalidArgument, "an object key cannot be empty"));
    }
    if key.len() > 1024 {
        return Err(s3_error!(KeyTooLongError));
    }
    let name = format!("{bucket}/{key}");
    validate_name(&name).map_err(|error| {
        S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            format!("object key not stored by dfs: {error}"),
        )
    })?;
    Ok(name)
}

/// The key of dfs name `name` in `bucket` (`name` is under `bucket/`).
pub fn key_of<'a>(bucket: &str, name: &'a str) -> &'a str {
    &name[bucket.len() + 1..]
}

/// Whether `name` is a bucket name S3 accepts (3 to 63 lowercase letters,
/// digits, dots and hyphens, starting and ending with a letter or digit,
/// not an IP address): s3s checks requests; this picks the first path
/// segments of CLI files that are buckets.
pub fn is_bucket_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (3..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'.' || *b == b'-')
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && !name.contains("..")
        && name.parse::<std::net::Ipv4Addr>().is_err()
}

/// The S3 version id of a record: "null" for a version written while its
/// bucket was not versioning, else the dfs version id in full.
pub fn version_id(record: &VersionRecord) -> String {
    if record.null_version {
        "null".into()
    } else {
        let vid = &record.vid;
        format!("{}-{}-{}", vid.wall_ms, vid.counter, vid.node.to_hex())
    }
}

/// The version an S3 version id names.
pub fn parse_version_id(text: &str) -> S3Result<VersionPick> {
    if text == "null" {
        return Ok(VersionPick::Null);
    }
    // In full: a prefix of the node part (which the CLI accepts) could
    // select, and delete, another version than the one named.
    match text.parse::<VersionSelector>() {
        Ok(selector) if selector.node_prefix.len() == 64 => Ok(VersionPick::Matching(selector)),
        _ => Err(s3_error!(InvalidArgument, "invalid version id")),
    }
}

/// The ETag S3 shows for a version (without quotes): the MD5 it was put
/// with, or for a file put without one (the CLI), an opaque tag from its
/// content id, marked with a part count as a multipart ETag is, so that
/// clients do not take it for an MD5.
pub fn etag(record: &VersionRecord) -> String {
    match (&record.etag, &record.content) {
        (Some(etag), _) => etag.to_string(),
        (None, Some(content)) => format!("{}-1", hex::encode(&content.0[..16])),
        (None, None) => String::new(),
    }
}

/// A version's time (its id's wall clock) as S3 shows it.
pub fn timestamp(unix_ms: u64) -> Timestamp {
    Timestamp::from(SystemTime::UNIX_EPOCH + Duration::from_millis(unix_ms))
}

/// `text` encoded as S3 encodes keys for `encoding-type=url` (form
/// encoding: unreserved bytes and `/` kept, space as `+`, the rest
/// `%XX`). Written here: it is this one rule, no crate's default.
pub fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(byte as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_follow_s3() {
        for good in ["abc", "my-bucket.2026", "a1b"] {
            assert!(is_bucket_name(good), "{good}");
        }
        for bad in [
            "ab",
            "-abc",
            "abc-",
            "ABC",
            "a_b",
            "a..b",
            "192.168.1.1",
            ".buckets",
            &"a".repeat(64),
        ] {
            assert!(!is_bucket_name(bad), "{bad}");
        }
    }

    #[test]
    fn keys_map_to_names_and_back() {
        let name = object_name("photos", "2026/cat 1.jpg").unwrap();
        assert_eq!(name, "photos/2026/cat 1.jpg");
        assert_eq!(key_of("photos", &name), "2026/cat 1.jpg");
        assert!(object_name("photos", "").is_err());
        assert!(object_name("photos", "a\nb").is_err());
        assert!(object_name("photos", &"k".repeat(1025)).is_err());
        assert!(object_name("photos", &"k".repeat(1024)).is_ok());
    }

    #[test]
    fn url_encoding_is_s3s() {
        assert_eq!(url_encode("a b/c+d%e&f"), "a+b/c%2Bd%25e%26f");
        assert_eq!(url_encode("zoë"), "zo%C3%AB");
    }
}
