//! The node's refusals as S3 errors.

use dfs::node::ops::OpError;
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
