//! Abandoned multipart uploads: every S3 node looks, every
//! [`SWEEP_PERIOD`], for uploads with no part written for
//! [`UPLOAD_EXPIRY`], and deletes their files for good (the collector then
//! takes their chunks). Two nodes removing one upload at once only write
//! the same stubs twice.

use std::sync::Arc;
use std::time::Duration;

use dfs::meta::ListFrom;
use dfs::node::Node;
use s3s::S3Result;

use super::errors::object_error;
use super::multipart::{UPLOADS, check_upload_id, live, parts, remove_upload, upload_dir};

/// How long an unfinished upload is kept after its last part was written.
pub const UPLOAD_EXPIRY: Duration = Duration::from_secs(24 * 3600);

/// How often a node looks for abandoned uploads.
pub const SWEEP_PERIOD: Duration = Duration::from_secs(600);

/// Sweep every [`SWEEP_PERIOD`] until `stopping`.
pub async fn sweep_abandoned(node: Arc<Node>, stopping: impl std::future::Future<Output = ()>) {
    tokio::pin!(stopping);
    // Where the last sweep stopped: a sweep looks at a bounded number of
    // uploads, and the next goes on from there.
    let mut cursor = ListFrom::Start;
    loop {
        tokio::select! {
            _ = &mut stopping => return,
            _ = tokio::time::sleep(SWEEP_PERIOD) => {}
        }
        if let Err(error) = sweep_once(&node, &mut cursor).await {
            tracing::warn!(%error, "sweeping abandoned multipart uploads failed; retrying later");
        }
    }
}

/// Most upload directories one sweep looks at.
const SWEEP_UPLOADS_MAX: usize = 1000;

/// The bucket and upload id of a dfs name under `.uploads/`, when it is
/// an upload's file (`.uploads/<bucket>/<32 hex>/...`); other names there
/// are not uploads, and the sweep leaves them alone.
fn upload_of(name: &str) -> Option<(&str, &str)> {
    let mut segments = name.strip_prefix(UPLOADS)?.splitn(3, '/');
    let (bucket, id, _) = (segments.next()?, segments.next()?, segments.next()?);
    (super::names::is_bucket_name(bucket) && check_upload_id(id).is_ok()).then_some((bucket, id))
}

/// One sweep, from `cursor`: every upload whose last activity (its upload
/// file or any part written) is [`UPLOAD_EXPIRY`] old is deleted, parts
/// left without an upload file (an UploadPart that raced a Complete or an
/// Abort) too. At most [`SWEEP_UPLOADS_MAX`] directories; `cursor` is left
/// where the next sweep goes on (the start again after the last).
pub async fn sweep_once(node: &Node, cursor: &mut ListFrom) -> S3Result<usize> {
    let now_ms = node.env().clock.unix_ms();
    let expiry_ms = UPLOAD_EXPIRY.as_millis() as u64;
    let mut removed = 0;
    for _ in 0..SWEEP_UPLOADS_MAX {
        let Some(record) = node
            .list_current(UPLOADS, cursor.clone(), 1)
            .await
            .map_err(object_error)?
            .pop()
        else {
            *cursor = ListFrom::Start;
            break;
        };
        let Some((bucket, id)) = upload_of(&record.name) else {
            *cursor = ListFrom::After(record.name);
            continue;
        };
        let dir = upload_dir(bucket, id);
        *cursor = ListFrom::PastPrefix(dir.clone());
        let upload_file = live(node, &format!("{dir}upload")).await?;
        let parts = parts(node, bucket, id).await?;
        let newest_ms = upload_file
            .iter()
            .chain(parts.values())
            .map(|r| r.vid.wall_ms)
            .max()
            .unwrap_or(0);
        if now_ms.saturating_sub(newest_ms) < expiry_ms {
            continue;
        }
        tracing::info!(
            bucket,
            upload = id,
            parts = parts.len(),
            "removing a multipart upload inactive for {} h",
            UPLOAD_EXPIRY.as_secs() / 3600
        );
        remove_upload(node, bucket, id).await?;
        removed += 1;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicU64, Ordering};

    use bytes::Bytes;
    use dfs::env::{Clock, tokio_env};
    use dfs::keys::{AccessKeyId, ClusterKey};
    use dfs::node::ops::PutOptions;
    use dfs::node::{NodeConfig, Server};
    use dfs::placement::Replication;

    use crate::s3::body::BytesBody;

    /// The production clock, moved forward by the test.
    struct LaterClock {
        inner: Arc<dyn Clock>,
        ahead_ms: AtomicU64,
    }

    impl Clock for LaterClock {
        fn unix_ms(&self) -> u64 {
            self.inner.unix_ms() + self.ahead_ms.load(Ordering::Relaxed)
        }
        fn monotonic_ms(&self) -> u64 {
            self.inner.monotonic_ms() + self.ahead_ms.load(Ordering::Relaxed)
        }
    }

    async fn put(node: &Node, name: String) {
        let mut body = BytesBody(Some(Bytes::from_static(b"{}")));
        let by = AccessKeyId::generate(node.env());
        node.put(name, &mut body, by, PutOptions::default())
            .await
            .unwrap_or_else(|_| panic!("put failed"));
    }

    #[tokio::test]
    async fn uploads_idle_for_a_day_are_removed_and_active_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut env = tokio_env();
        let clock = Arc::new(LaterClock {
            inner: env.clock.clone(),
            ahead_ms: AtomicU64::new(0),
        });
        env.clock = clock.clone();
        let config = NodeConfig {
            data_dir: dir.path().to_path_buf(),
            listen: "127.0.0.1:0".into(),
            bootstrap: Vec::new(),
            advertise: None,
            cluster_key: ClusterKey::generate(&env),
            swim: Default::default(),
            replication: Replication::new(1, 1).unwrap(),
            maintenance: Default::default(),
            disk_free_min_percent: dfs::health::DEFAULT_DISK_FREE_MIN_PERCENT,
            admin_credentials_file: None,
            provisioned_keys: Vec::new(),
            small_blob_bytes_max: dfs::limits::SMALL_BLOB_BYTES_DEFAULT,
        };
        let server = Server::start(env, config).await.unwrap();
        let node = server.node().clone();
        let (idle, active, orphan) = ("a1".repeat(16), "b2".repeat(16), "c3".repeat(16));
        put(&node, format!(".uploads/photos/{idle}/upload")).await;
        put(&node, format!(".uploads/photos/{idle}/part-00001")).await;
        put(&node, format!(".uploads/photos/{active}/upload")).await;
        put(&node, format!(".uploads/photos/{orphan}/part-00003")).await;
        put(&node, ".uploads/not-an-upload".into()).await;

        // A day later, less a minute: nothing has expired.
        let day_ms = UPLOAD_EXPIRY.as_millis() as u64;
        clock.ahead_ms.store(day_ms - 60_000, Ordering::Relaxed);
        let mut cursor = ListFrom::Start;
        assert_eq!(sweep_once(&node, &mut cursor).await.unwrap(), 0);
        // A part arrives for one upload; then the day is over for the rest.
        put(&node, format!(".uploads/photos/{active}/part-00002")).await;
        clock.ahead_ms.store(day_ms + 60_000, Ordering::Relaxed);
        assert_eq!(sweep_once(&node, &mut cursor).await.unwrap(), 2);

        let left: Vec<String> = node
            .list_current(UPLOADS, ListFrom::Start, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|record| record.name)
            .collect();
        assert_eq!(
            left,
            vec![
                ".uploads/not-an-upload".to_string(),
                format!(".uploads/photos/{active}/part-00002"),
                format!(".uploads/photos/{active}/upload"),
            ]
        );
    }

    #[test]
    fn the_sweep_takes_only_uploads() {
        let id = "a1".repeat(16);
        assert_eq!(
            upload_of(&format!(".uploads/photos/{id}/part-00001")),
            Some(("photos", id.as_str()))
        );
        assert_eq!(
            upload_of(&format!(".uploads/photos/{id}/upload")),
            Some(("photos", id.as_str()))
        );
        assert_eq!(upload_of(".uploads/x/y/upload"), None);
        assert_eq!(
            upload_of(&format!(".uploads/Not_A_Bucket/{id}/upload")),
            None
        );
        assert_eq!(upload_of(&format!("photos/{id}/upload")), None);
    }
}
