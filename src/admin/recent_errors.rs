//! The node's recent warnings and errors, for the status page: a tracing
//! layer that keeps the last [`DISTINCT_MAX`] distinct ones (by level,
//! module and message), each with how often it happened and when last.
//!
//! Written here because no tracing crate keeps events for display. The
//! page is open to anyone who reaches the admin address, so only fields
//! that never hold a file name or a key are kept ([`SHOWN_FIELDS`]);
//! everything else (an `error` that quotes a file name, say) is in the
//! node's log.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};

use dfs::env::Clock;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Distinct warnings and errors kept; the least recent goes first.
pub const DISTINCT_MAX: usize = 20;

/// The fields shown with a message: node ids, addresses, blob ids, paths
/// in the data dir, counts. Never names of files, never keys.
pub const SHOWN_FIELDS: &[&str] = &[
    "peer",
    "node",
    "claimed",
    "blob",
    "path",
    "quarantined_to",
    "members",
    "needed",
    "largest_cluster",
    "write_quorum",
    "effective",
    "version",
    "ahead_s",
    "advertise",
    "refused",
    "reason",
];

/// Longest field value or message kept, in bytes.
const TEXT_BYTES_MAX: usize = 300;

/// One distinct warning or error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recent {
    pub level: Level,
    /// The module that logged it.
    pub target: String,
    pub message: String,
    /// Shown fields of its latest occurrence.
    pub fields: Vec<(String, String)>,
    /// Occurrences since the node started (or since it was evicted).
    pub count: u64,
    /// When it last happened (unix ms).
    pub last_ms: u64,
}

/// Shared between the layer (which writes) and the admin page (reads).
#[derive(Clone)]
pub struct RecentErrors {
    kept: Arc<Mutex<VecDeque<Recent>>>,
    clock: Arc<dyn Clock>,
}

impl RecentErrors {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            kept: Arc::default(),
            clock,
        }
    }

    /// The kept warnings and errors, the most recent first.
    pub fn list(&self) -> Vec<Recent> {
        self.kept
            .lock()
            .expect("recent errors poisoned")
            .iter()
            .cloned()
            .collect()
    }

    fn note(&self, level: Level, target: &str, message: String, fields: Vec<(String, String)>) {
        let now = self.clock.unix_ms();
        let mut kept = self.kept.lock().expect("recent errors poisoned");
        let seen = kept
            .iter()
            .position(|r| r.level == level && r.target == target && r.message == message);
        let entry = match seen.and_then(|at| kept.remove(at)) {
            Some(mut entry) => {
                entry.count += 1;
                entry.fields = fields;
                entry.last_ms = now;
                entry
            }
            None => Recent {
                level,
                target: target.to_string(),
                message,
                fields,
                count: 1,
                last_ms: now,
            },
        };
        kept.push_front(entry);
        kept.truncate(DISTINCT_MAX);
    }
}

fn clipped(mut text: String) -> String {
    if text.len() > TEXT_BYTES_MAX {
        let mut end = TEXT_BYTES_MAX;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

#[derive(Default)]
struct Fields {
    message: String,
    shown: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.message = clipped(format!("{value:?}"));
        } else if SHOWN_FIELDS.contains(&field.name()) {
            self.shown
                .push((field.name().to_string(), clipped(format!("{value:?}"))));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = clipped(value.to_string());
        } else if SHOWN_FIELDS.contains(&field.name()) {
            self.shown
                .push((field.name().to_string(), clipped(value.to_string())));
        }
    }
}

impl<S: Subscriber> Layer<S> for RecentErrors {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let level = *event.metadata().level();
        // Less verbose levels compare smaller: this keeps WARN and ERROR.
        if level > Level::WARN {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        self.note(
            level,
            event.metadata().target(),
            fields.message,
            fields.shown,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    struct Fixed;
    impl Clock for Fixed {
        fn unix_ms(&self) -> u64 {
            1_000
        }
        fn monotonic_ms(&self) -> u64 {
            0
        }
    }

    #[test]
    fn keeps_distinct_warnings_counted_without_names_or_errors() {
        let recent = RecentErrors::new(Arc::new(Fixed));
        let subscriber = tracing_subscriber::registry().with(recent.clone());
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("not kept");
            for _ in 0..3 {
                tracing::warn!(
                    peer = "10.0.0.2:7400",
                    name = "secret-plans.txt",
                    error = "no file named secret-plans.txt",
                    "request failed"
                );
            }
            tracing::error!(blob = "ab12", "blob is corrupt on disk; quarantined");
        });
        let kept = recent.list();
        assert_eq!(kept.len(), 2, "{kept:?}");
        assert_eq!(kept[0].message, "blob is corrupt on disk; quarantined");
        assert_eq!(kept[0].level, Level::ERROR);
        assert_eq!(kept[1].count, 3);
        assert_eq!(
            kept[1].fields,
            vec![("peer".to_string(), "10.0.0.2:7400".to_string())]
        );
        assert!(!format!("{kept:?}").contains("secret-plans"));
    }

    #[test]
    fn keeps_at_most_the_latest_distinct_ones() {
        let recent = RecentErrors::new(Arc::new(Fixed));
        for i in 0..DISTINCT_MAX + 5 {
            recent.note(Level::WARN, "dfs", format!("problem {i}"), Vec::new());
        }
        let kept = recent.list();
        assert_eq!(kept.len(), DISTINCT_MAX);
        assert_eq!(kept[0].message, format!("problem {}", DISTINCT_MAX + 4));
    }
}
