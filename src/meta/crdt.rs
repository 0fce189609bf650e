use std::collections::BTreeMap;

use super::{VersionId, VersionRecord};

/// One name's history: a state-based CRDT.
///
/// State is `(floor, records)` with every record at or above the floor.
/// Merge takes the max floor and the union of records, then drops records
/// below the floor: a join-semilattice, so merge is commutative, associative
/// and idempotent and replicas converge whatever order updates arrive in.
///
/// Two different records with the same id cannot come from a correct node
/// (ids embed the node and its clock); if corrupt input produces them, the
/// greater record wins, so even then merge stays commutative.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    pub floor: Option<VersionId>,
    pub records: BTreeMap<VersionId, VersionRecord>,
}

impl History {
    /// Add a record; returns whether the state changed.
    pub fn insert(&mut self, record: VersionRecord) -> bool {
        if self.floor.is_some_and(|floor| record.vid < floor) {
            return false;
        }
        match self.records.get(&record.vid) {
            Some(existing) if *existing >= record => false,
            _ => {
                self.records.insert(record.vid, record);
                true
            }
        }
    }

    /// Raise the prune floor to `floor` (never lowers it); returns whether
    /// the state changed.
    pub fn raise_floor(&mut self, floor: VersionId) -> bool {
        if self.floor.is_some_and(|current| current >= floor) {
            return false;
        }
        self.floor = Some(floor);
        self.records = self.records.split_off(&floor);
        true
    }

    pub fn merge(&mut self, other: &History) {
        if let Some(floor) = other.floor {
            self.raise_floor(floor);
        }
        for record in other.records.values() {
            self.insert(record.clone());
        }
    }

    /// The current version: the greatest record not forgotten (a
    /// tombstone means deleted).
    pub fn current(&self) -> Option<&VersionRecord> {
        self.records.values().rev().find(|r| !r.forgotten)
    }

    /// The versions a reader sees: every record but the forgotten stubs.
    pub fn versions(&self) -> impl DoubleEndedIterator<Item = &VersionRecord> {
        self.records.values().filter(|r| !r.forgotten)
    }
}

/// The whole index: a history per name. Merge is per name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexState {
    pub names: BTreeMap<String, History>,
}

impl IndexState {
    pub fn insert(&mut self, record: VersionRecord) -> bool {
        self.names
            .entry(record.name.clone())
            .or_default()
            .insert(record)
    }

    pub fn merge(&mut self, other: &IndexState) {
        for (name, history) in &other.names {
            self.names.entry(name.clone()).or_default().merge(history);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cas::ContentId;
    use crate::keys::NodeId;
    use proptest::prelude::*;

    fn vid(wall_ms: u64, node: u8) -> VersionId {
        VersionId {
            wall_ms,
            counter: 0,
            node: NodeId([node; 32]),
        }
    }

    /// Small domains so that collisions (same name, same id) are common.
    fn arbitrary_state() -> impl Strategy<Value = IndexState> {
        // One record in four is the stub that forgets its key.
        let record = (
            0u8..3,
            0u64..6,
            0u8..2,
            prop::option::of(0u8..3),
            0u64..4,
            0u8..4,
        )
            .prop_map(|(name, wall, node, content, size, forget)| {
                if forget == 0 {
                    return VersionRecord::forgetting(&format!("f{name}"), vid(wall, node));
                }
                VersionRecord {
                    name: format!("f{name}"),
                    vid: vid(wall, node),
                    forgotten: false,
                    content: content.map(|c| ContentId([c; 32])),
                    size,
                    by: None,
                    etag: None,
                    null_version: false,
                }
            });
        let floors = prop::collection::vec((0u8..3, prop::option::of((0u64..6, 0u8..2))), 0..3);
        (prop::collection::vec(record, 0..12), floors).prop_map(|(records, floors)| {
            let mut state = IndexState::default();
            for record in records {
                state.insert(record);
            }
            for (name, floor) in floors {
                if let Some((wall, node)) = floor {
                    state
                        .names
                        .entry(format!("f{name}"))
                        .or_default()
                        .raise_floor(vid(wall, node));
                }
            }
            state
        })
    }

    fn merged(a: &IndexState, b: &IndexState) -> IndexState {
        let mut out = a.clone();
        out.merge(b);
        out
    }

    proptest! {
        #[test]
        fn merge_is_commutative(a in arbitrary_state(), b in arbitrary_state()) {
            prop_assert_eq!(merged(&a, &b), merged(&b, &a));
        }

        #[test]
        fn merge_is_associative(a in arbitrary_state(), b in arbitrary_state(), c in arbitrary_state()) {
            prop_assert_eq!(merged(&merged(&a, &b), &c), merged(&a, &merged(&b, &c)));
        }

        #[test]
        fn merge_is_idempotent(a in arbitrary_state(), b in arbitrary_state()) {
            prop_assert_eq!(merged(&a, &a), a.clone());
            let ab = merged(&a, &b);
            prop_assert_eq!(merged(&ab, &b), ab);
        }

        #[test]
        fn a_forgotten_version_stays_forgotten(a in arbitrary_state(), b in arbitrary_state()) {
            let ab = merged(&a, &b);
            for state in [&a, &b] {
                for (name, history) in &state.names {
                    for (vid, record) in &history.records {
                        if record.forgotten {
                            let kept = ab.names[name].records.get(vid);
                            prop_assert!(kept.is_none_or(|r| r.forgotten));
                        }
                    }
                }
            }
        }

        #[test]
        fn no_record_survives_below_its_floor(a in arbitrary_state(), b in arbitrary_state()) {
            for history in merged(&a, &b).names.values() {
                if let Some(floor) = history.floor {
                    prop_assert!(history.records.keys().all(|v| *v >= floor));
                }
            }
        }
    }

    #[test]
    fn current_is_the_greatest_and_a_tombstone_deletes() {
        let mut history = History::default();
        let put = VersionRecord {
            name: "a".into(),
            vid: vid(1, 0),
            forgotten: false,
            content: Some(ContentId([1; 32])),
            size: 3,
            by: None,
            etag: None,
            null_version: false,
        };
        let rm = VersionRecord {
            name: "a".into(),
            vid: vid(2, 0),
            forgotten: false,
            content: None,
            size: 0,
            by: None,
            etag: None,
            null_version: false,
        };
        assert!(history.insert(rm.clone()));
        assert!(history.insert(put.clone()));
        assert!(!history.insert(put.clone()));
        assert_eq!(history.current(), Some(&rm));
        // Forgetting the removal makes the put current again, and the
        // removal arriving again later does not bring it back.
        assert!(history.insert(VersionRecord::forgetting("a", rm.vid)));
        assert_eq!(history.current(), Some(&put));
        assert!(!history.insert(rm));
        assert_eq!(history.current(), Some(&put));
        assert_eq!(history.versions().count(), 1);
    }
}
