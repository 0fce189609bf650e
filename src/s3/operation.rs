//! Which S3 operation a request was (`GetObject`, `PutObject`, ...), for
//! the metrics. s3s resolves it after authentication and shows it to the
//! access check alone, so the check records it in a slot the listener put
//! in the request's extensions. The names are s3s's fixed set, so the
//! metric's series stay bounded.

use std::sync::{Arc, OnceLock};

use s3s::S3Result;
use s3s::access::{S3Access, S3AccessContext};

/// Where the access check writes the operation's name.
#[derive(Clone, Default)]
pub struct OperationSlot(Arc<OnceLock<&'static str>>);

impl OperationSlot {
    /// The operation, or `unresolved` for a request refused before s3s
    /// knew it (a bad signature, an unknown route).
    pub fn name(&self) -> &'static str {
        self.0.get().copied().unwrap_or("unresolved")
    }
}

/// s3s's default access check (a request must be signed), recording the
/// operation on the way.
pub struct NamingAccess;

#[async_trait::async_trait]
impl S3Access for NamingAccess {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let name = operation_name(cx.s3_op().name());
        if let Some(slot) = cx.extensions_mut().get::<OperationSlot>() {
            let _ = slot.0.set(name);
        }
        match cx.credentials() {
            Some(_) => Ok(()),
            None => Err(s3s::s3_error!(AccessDenied, "Signature is required")),
        }
    }
}

/// The operation's name as a `'static` label. s3s hands out a borrowed
/// `&str` (its names are static inside), so the known ones are matched to
/// static strings; any other is `other`.
fn operation_name(name: &str) -> &'static str {
    OPERATIONS
        .iter()
        .find(|known| **known == name)
        .copied()
        .unwrap_or("other")
}

/// The operations this endpoint serves (README, S3), and the ones clients
/// commonly try.
const OPERATIONS: &[&str] = &[
    "AbortMultipartUpload",
    "CompleteMultipartUpload",
    "CopyObject",
    "CreateBucket",
    "CreateMultipartUpload",
    "DeleteBucket",
    "DeleteObject",
    "DeleteObjects",
    "GetBucketLocation",
    "GetBucketVersioning",
    "GetObject",
    "HeadBucket",
    "HeadObject",
    "ListBuckets",
    "ListMultipartUploads",
    "ListObjectVersions",
    "ListObjects",
    "ListObjectsV2",
    "ListParts",
    "PutBucketVersioning",
    "PutObject",
    "UploadPart",
    "UploadPartCopy",
    "GetObjectAttributes",
    "GetBucketPolicy",
    "GetBucketAcl",
    "GetObjectAcl",
    "GetBucketTagging",
    "GetObjectTagging",
    "PutObjectTagging",
    "GetBucketLifecycleConfiguration",
    "GetBucketEncryption",
    "GetBucketCors",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_operations_keep_their_names_and_others_share_one() {
        assert_eq!(operation_name("PutObject"), "PutObject");
        assert_eq!(operation_name("ListObjectVersions"), "ListObjectVersions");
        assert_eq!(operation_name("PutBucketReplication"), "other");
    }
}
