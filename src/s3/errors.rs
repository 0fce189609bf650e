//! The node's refusals as S3 errors.

use dfs::node::ops::{OpError, PutError};
use dfs::wire::ErrorCode;
use s3s::{S3Error, S3ErrorCode};

/// `error` as S3 names it; `not_found` is the code a missing thing has
/// where it arose (NoSuchKey, NoSuchBucket, NoSuchVersion).
pub fn s3_error(error: OpError, not_found: S3ErrorCode) -> S3Error {
    let code = match error.code {
        ErrorCode::NotFound => not_found,
        ErrorCode::InvalidRequest => S3ErrorCode::InvalidArgument,
        ErrorCode::BadDigest => S3ErrorCode::BadDigest,
        ErrorCode::Forbidden | ErrorCode::Unauthorized => S3ErrorCode::AccessDenied,
        // Clients retry these: a quorum out of reach, a busy disk.
        ErrorCode::Unavailable => S3ErrorCode::ServiceUnavailable,
        ErrorCode::DiskFull => {
            let mut error = S3Error::with_message(
                S3ErrorCode::Custom("InsufficientStorage".into()),
                error.message,
            );
            error.set_status_code(hyper::StatusCode::INSUFFICIENT_STORAGE);
            return error;
        }
        ErrorCode::Corrupt | ErrorCode::Internal => S3ErrorCode::InternalError,
    };
    S3Error::with_message(code, error.message)
}

/// For errors where nothing can be missing but an object.
pub fn object_error(error: OpError) -> S3Error {
    s3_error(error, S3ErrorCode::NoSuchKey)
}

/// A failed put: its refusal, or what ended its body (s3s's own error for a
/// chunk signature or checksum that does not verify).
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
