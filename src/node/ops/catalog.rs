//! The operations on the version index: pick a version, remove, prune,
//! restore, and list.

use super::{OpError, with_forgotten};
use crate::cas::{Attributes, ChunkId, Manifest, check_attributes};
use crate::keys::AccessKeyId;
use crate::meta::{
    Floor, History, ListFrom, VersionId, VersionRecord, VersionSelector, validate_name,
};
use crate::node::Node;
use crate::wire::ErrorCode;

/// Which version of a name an operation means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionPick {
    /// The newest (which may be a removal).
    Current,
    /// The version its text form names (`versions` prints it; any prefix of
    /// the node part will do).
    Matching(VersionSelector),
    /// The newest version written while its bucket was not versioning:
    /// S3's "null" version.
    Null,
}

impl From<Option<VersionSelector>> for VersionPick {
    fn from(selector: Option<VersionSelector>) -> Self {
        selector.map_or(VersionPick::Current, VersionPick::Matching)
    }
}

impl std::fmt::Display for VersionPick {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VersionPick::Current => f.write_str("current"),
            VersionPick::Matching(selector) => selector.fmt(f),
            VersionPick::Null => f.write_str("null"),
        }
    }
}

/// One entry of a listing by prefix and delimiter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listed {
    /// A current version.
    Object(VersionRecord),
    /// Names sharing this prefix up to the delimiter, listed once.
    CommonPrefix(String),
}

impl Listed {
    /// The name the listing continues after.
    pub fn name(&self) -> &str {
        match self {
            Listed::Object(record) => &record.name,
            Listed::CommonPrefix(prefix) => prefix,
        }
    }
}

/// A page of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    pub entries: Vec<Listed>,
    /// More entries follow the last one.
    pub truncated: bool,
}

impl Node {
    /// The history of `name` as this node's index holds it.
    pub async fn history(&self, name: &str) -> Result<History, OpError> {
        let index = self.index.clone();
        let lookup = name.to_string();
        Ok(self.env.blocking(move || index.history(&lookup)).await?)
    }

    /// Ask a majority of the cluster for the current version of `name` and
    /// take the newest answer into this node's index, so that a read that
    /// follows sees every write acknowledged before it, through whichever
    /// node it was made (S3's read-after-write; the native `get --quorum`).
    /// Returns the current record then (a removal included), as
    /// [`resolve`](Self::resolve) with [`VersionPick::Current`] would.
    pub async fn catch_up(&self, name: &str) -> Result<Option<VersionRecord>, OpError> {
        Ok(self.cluster.quorum_current(name).await?)
    }

    /// The record `pick` selects (a removal included); refused when there
    /// is none.
    pub async fn resolve(&self, name: &str, pick: &VersionPick) -> Result<VersionRecord, OpError> {
        let history = self.history(name).await?;
        let record = match pick {
            VersionPick::Current => history.current().cloned(),
            VersionPick::Matching(selector) => history
                .records
                .values()
                .rev()
                .find(|r| selector.matches(&r.vid))
                .cloned(),
            VersionPick::Null => history
                .records
                .values()
                .rev()
                .find(|r| r.null_version)
                .cloned(),
        };
        record.ok_or_else(|| match pick {
            VersionPick::Current => OpError::not_found(format!("no file named {name}")),
            _ => OpError::new(
                ErrorCode::NotFound,
                format!(
                    "{name} has no version {pick} (it may have been pruned; `versions {name}` lists them)"
                ),
            ),
        })
    }

    /// Record the removal of `name` (a tombstone; S3's delete marker),
    /// durable on W indexes.
    pub async fn remove(
        &self,
        name: String,
        by: AccessKeyId,
        null_version: bool,
        forget: &[VersionId],
    ) -> Result<VersionRecord, OpError> {
        validate_name(&name).map_err(|e| OpError::invalid(e.to_string()))?;
        self.cluster.check_quorum_reachable()?;
        let record = VersionRecord {
            name,
            vid: self.cluster.next_vid()?,
            forgotten: false,
            content: None,
            size: 0,
            by: Some(by),
            etag: None,
            null_version,
        };
        let records = with_forgotten(&record, forget);
        self.cluster.commit(records, Vec::new()).await?;
        tracing::debug!(name = %record.name, version = %record.vid, "removed");
        Ok(record)
    }

    /// Delete one version for good (S3's DeleteObject with a version id):
    /// its stub, durable on W indexes, then everywhere; the version before
    /// it is current again if it was current. Returns the record deleted.
    pub async fn forget(&self, name: &str, pick: &VersionPick) -> Result<VersionRecord, OpError> {
        let record = self.resolve(name, pick).await?;
        self.cluster.check_quorum_reachable()?;
        self.cluster
            .commit(
                vec![VersionRecord::forgetting(name, record.vid)],
                Vec::new(),
            )
            .await?;
        tracing::debug!(name, version = %record.vid, "version deleted for good");
        Ok(record)
    }

    /// Delete every version of `name` for good (files that were only ever
    /// working state: a multipart upload's parts). Returns how many went.
    pub async fn forget_all(&self, name: &str) -> Result<usize, OpError> {
        let history = self.history(name).await?;
        let vids: Vec<VersionId> = history.versions().map(|record| record.vid).collect();
        self.forget_versions(name, &vids).await?;
        Ok(vids.len())
    }

    /// Delete these versions of `name` for good, in one commit.
    pub async fn forget_versions(&self, name: &str, vids: &[VersionId]) -> Result<(), OpError> {
        if vids.is_empty() {
            return Ok(());
        }
        validate_name(name).map_err(|e| OpError::invalid(e.to_string()))?;
        self.cluster.check_quorum_reachable()?;
        let stubs = vids
            .iter()
            .map(|vid| VersionRecord::forgetting(name, *vid))
            .collect();
        self.cluster.commit(stubs, Vec::new()).await?;
        Ok(())
    }

    /// Up to `limit` names under `prefix` from `from` that have versions,
    /// removed ones included.
    pub async fn names(
        &self,
        prefix: &str,
        from: ListFrom,
        limit: usize,
    ) -> Result<Vec<String>, OpError> {
        let index = self.index.clone();
        let prefix = prefix.to_string();
        Ok(self
            .env
            .blocking(move || index.names_from(&prefix, &from, limit))
            .await?)
    }

    /// Up to `limit` versions of `name`, newest first, older than `before`.
    pub async fn versions_newest_first(
        &self,
        name: &str,
        before: Option<VersionId>,
        limit: usize,
    ) -> Result<Vec<VersionRecord>, OpError> {
        let index = self.index.clone();
        let name = name.to_string();
        Ok(self
            .env
            .blocking(move || index.versions_desc(&name, before, limit))
            .await?)
    }

    /// Keep the newest `keep` versions of `name`: raise its floor to the
    /// oldest kept version, on W indexes and then everywhere. Returns the
    /// floor and how many versions went.
    pub async fn prune(
        &self,
        name: String,
        keep: u32,
    ) -> Result<(Option<crate::meta::VersionId>, u64), OpError> {
        validate_name(&name).map_err(|e| OpError::invalid(e.to_string()))?;
        if keep == 0 {
            return Err(OpError::invalid(
                "--keep must be at least 1 (use `rm` to delete a file)",
            ));
        }
        let history = self.history(&name).await?;
        if history.records.is_empty() {
            return Err(OpError::not_found(format!("no file named {name}")));
        }
        let Some(oldest_kept) = history.records.keys().rev().nth(keep as usize - 1).copied() else {
            return Ok((history.floor, 0));
        };
        let removed = history.records.range(..oldest_kept).count() as u64;
        if removed == 0 {
            return Ok((history.floor, 0));
        }
        self.cluster.check_quorum_reachable()?;
        let floor = Floor {
            name,
            floor: oldest_kept,
        };
        self.cluster.commit(Vec::new(), vec![floor]).await?;
        Ok((Some(oldest_kept), removed))
    }

    /// Make `old`'s content current again under `name`, as a new version
    /// (a restore, or an S3 copy: no byte is copied). The ETag goes with
    /// the bytes; the attributes too, unless `attributes` replaces them
    /// (then only a new manifest is stored, over the same chunks).
    pub async fn reuse_content(
        &self,
        name: String,
        old: &VersionRecord,
        by: AccessKeyId,
        (null_version, forget): (bool, &[VersionId]),
        attributes: Option<Attributes>,
    ) -> Result<VersionRecord, OpError> {
        validate_name(&name).map_err(|e| OpError::invalid(e.to_string()))?;
        let Some(content) = old.content else {
            return Err(OpError::not_found(format!(
                "version {} of {} is a removal; it has no content",
                old.vid, old.name
            )));
        };
        self.cluster.check_quorum_reachable()?;
        // The old content may be garbage to its holders (a prune they
        // heard of, this node not yet): keep it before making it current,
        // as a put keeps what it stored.
        let manifest = self.manifest_of(content).await?;
        let chunks: Vec<ChunkId> = manifest.chunks.iter().map(|c| c.id).collect();
        let mut blobs = self
            .cluster
            .keep_content(ChunkId(content.0), &chunks)
            .await?;
        if let Some(attributes) = attributes.filter(|new| *new != manifest.attributes) {
            check_attributes(&attributes).map_err(|e| OpError::invalid(e.to_string()))?;
            let manifest = Manifest {
                attributes,
                ..manifest
            };
            return self
                .commit_manifest(
                    name,
                    (manifest, None),
                    blobs,
                    by,
                    (old.etag, null_version, forget),
                )
                .await;
        }
        let record = VersionRecord {
            name,
            vid: self.cluster.next_vid()?,
            forgotten: false,
            content: Some(content),
            size: old.size,
            by: Some(by),
            etag: old.etag,
            null_version,
        };
        let records = with_forgotten(&record, forget);
        self.cluster.commit_put(records, &mut blobs).await?;
        tracing::debug!(name = %record.name, version = %record.vid, from = %old.vid, "content reused");
        Ok(record)
    }

    /// Up to `limit` current versions under `prefix`, from `from`.
    pub async fn list_current(
        &self,
        prefix: &str,
        from: ListFrom,
        limit: usize,
    ) -> Result<Vec<VersionRecord>, OpError> {
        let index = self.index.clone();
        let prefix = prefix.to_string();
        Ok(self
            .env
            .blocking(move || index.list_current_from(&prefix, &from, limit))
            .await?)
    }

    /// A page of at most `max` entries under `prefix`, after `start_after`:
    /// names, or with a `delimiter`, names and the common prefixes that
    /// stand for every name continuing past the delimiter (S3's listing).
    pub async fn list_page(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        start_after: Option<&str>,
        max: usize,
    ) -> Result<ListPage, OpError> {
        let mut page = ListPage::default();
        let delimiter = delimiter.filter(|d| !d.is_empty());
        // Where the next scan starts: after a name, or past a common
        // prefix. A start-after inside a common prefix (or the prefix
        // itself, as a continuation gives it) skips to its end: the common
        // prefix sorts at or before it, so it is not "after".
        let mut from = match start_after {
            None => ListFrom::Start,
            Some(after) => match delimiter.and_then(|d| common_prefix(prefix, after, d)) {
                Some(common) => ListFrom::PastPrefix(common),
                None => ListFrom::After(after.to_string()),
            },
        };
        'scan: loop {
            // With a delimiter, a batch may end at the first common prefix
            // (the rest of it is skipped by seeking past it), so batches
            // stay small: the cost follows the page, not the names rolled up.
            let want = match delimiter {
                Some(_) => (max + 1 - page.entries.len()).min(DELIMITED_BATCH),
                None => max + 1 - page.entries.len(),
            };
            let records = self.list_current(prefix, from.clone(), want).await?;
            let exhausted = records.len() < want;
            for record in records {
                let entry = match delimiter.and_then(|d| common_prefix(prefix, &record.name, d)) {
                    Some(common) => Listed::CommonPrefix(common),
                    None => Listed::Object(record),
                };
                if page.entries.len() == max {
                    page.truncated = true;
                    break 'scan;
                }
                if let Listed::CommonPrefix(common) = &entry {
                    page.entries.push(entry.clone());
                    // Every other name under it is this entry: skip them.
                    from = ListFrom::PastPrefix(common.clone());
                    continue 'scan;
                }
                from = ListFrom::After(entry.name().to_string());
                page.entries.push(entry);
            }
            if exhausted {
                break;
            }
        }
        Ok(page)
    }
}

/// Names read per index query of a listing with a delimiter.
const DELIMITED_BATCH: usize = 32;

/// The common prefix `name` rolls up into: `prefix` and the rest of `name`
/// up to and including the first `delimiter` after the prefix.
fn common_prefix(prefix: &str, name: &str, delimiter: &str) -> Option<String> {
    let rest = name.strip_prefix(prefix)?;
    let at = rest.find(delimiter)?;
    Some(format!("{prefix}{}", &rest[..at + delimiter.len()]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_roll_up_at_the_first_delimiter_after_the_prefix() {
        assert_eq!(common_prefix("", "a/b/c", "/").as_deref(), Some("a/"));
        assert_eq!(common_prefix("a/", "a/b/c", "/").as_deref(), Some("a/b/"));
        assert_eq!(common_prefix("a/", "a/c", "/"), None);
        assert_eq!(common_prefix("x", "a/c", "/"), None);
        assert_eq!(common_prefix("p", "p--q--r", "--").as_deref(), Some("p--"));
    }
}
