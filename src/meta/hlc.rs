use super::VersionId;
use crate::keys::NodeId;

/// Hybrid logical clock: ids follow wall time when it moves forward, and a
/// counter when it does not (same millisecond, or a clock stepped back), so a
/// node never issues an id at or below one it has seen.
#[derive(Debug, Clone)]
pub struct Hlc {
    node: NodeId,
    last_wall_ms: u64,
    last_counter: u32,
}

impl Hlc {
    pub fn new(node: NodeId) -> Self {
        Self {
            node,
            last_wall_ms: 0,
            last_counter: 0,
        }
    }

    /// A new id, greater than every id issued or observed so far, or `None`
    /// when there is none left: only after an id at the very end of time
    /// (`u64::MAX` ms), which no sane clock nor any peer within the
    /// maximum offset produces; a corrupt index could.
    pub fn next(&mut self, wall_ms: u64) -> Option<VersionId> {
        if wall_ms > self.last_wall_ms {
            self.last_wall_ms = wall_ms;
            self.last_counter = 0;
        } else if self.last_counter == u32::MAX {
            // 4 billion ids in one millisecond: borrow the next millisecond.
            self.last_wall_ms = self.last_wall_ms.checked_add(1)?;
            self.last_counter = 0;
        } else {
            self.last_counter += 1;
        }
        Some(VersionId {
            wall_ms: self.last_wall_ms,
            counter: self.last_counter,
            node: self.node,
        })
    }

    /// Take note of an id created elsewhere (or before a restart).
    pub fn observe(&mut self, vid: &VersionId) {
        if (vid.wall_ms, vid.counter) > (self.last_wall_ms, self.last_counter) {
            self.last_wall_ms = vid.wall_ms;
            self.last_counter = vid.counter;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn ids_strictly_increase_whatever_the_clock_does(
            steps in prop::collection::vec((0u64..50, any::<bool>(), 0u64..60, 0u32..3), 1..200)
        ) {
            let mut hlc = Hlc::new(NodeId([1; 32]));
            let mut last: Option<VersionId> = None;
            for (wall, observe, other_wall, other_counter) in steps {
                if observe {
                    let other = VersionId { wall_ms: other_wall, counter: other_counter, node: NodeId([2; 32]) };
                    hlc.observe(&other);
                    let next = hlc.next(wall).unwrap();
                    prop_assert!(next > other);
                    if let Some(last) = last { prop_assert!(next > last); }
                    last = Some(next);
                } else {
                    let next = hlc.next(wall).unwrap();
                    if let Some(last) = last { prop_assert!(next > last); }
                    last = Some(next);
                }
            }
        }
    }

    #[test]
    fn ids_run_out_at_the_end_of_time_instead_of_wrapping() {
        let mut hlc = Hlc::new(NodeId([1; 32]));
        hlc.observe(&VersionId {
            wall_ms: u64::MAX,
            counter: u32::MAX - 1,
            node: NodeId([2; 32]),
        });
        let last = hlc.next(0).unwrap();
        assert_eq!((last.wall_ms, last.counter), (u64::MAX, u32::MAX));
        assert_eq!(hlc.next(u64::MAX), None);
        assert_eq!(hlc.next(0), None);
    }
}
