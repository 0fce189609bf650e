//! Coverage marks: named counters on the rare code paths that fixed bugs
//! live on (rust-analyzer's `cov_mark`, TigerBeetle's `marks`).
//!
//! A regression test replays the seed that found a bug and then checks that
//! the run really went through the path of that bug. Without the check, a
//! seed whose schedule drifted (any change to the code it runs moves the
//! random draws) passes silently while testing nothing.
//!
//! Counts are per thread: the simulation runs a whole seed, blocking jobs
//! included, on one thread, so a seed's marks are its own even when other
//! tests run beside it. In production nobody reads them; a hit costs one
//! thread-local increment on a path that is rare by definition. Written by
//! hand because `cov_mark` counts only under `cfg(test)` of its own crate,
//! and the simulation is another crate built in release.

use std::cell::RefCell;
use std::collections::BTreeMap;

thread_local! {
    static HITS: RefCell<BTreeMap<&'static str, u64>> = const { RefCell::new(BTreeMap::new()) };
}

/// Note that this thread went through the path `name`.
pub fn hit(name: &'static str) {
    HITS.with(|hits| *hits.borrow_mut().entry(name).or_default() += 1);
}

/// The marks this thread hit since the last `take`, and reset them.
pub fn take() -> BTreeMap<&'static str, u64> {
    HITS.with(|hits| std::mem::take(&mut *hits.borrow_mut()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_are_counted_per_name_and_reset_by_take() {
        take();
        hit("a");
        hit("a");
        hit("b");
        let hits = take();
        assert_eq!(hits.get("a"), Some(&2));
        assert_eq!(hits.get("b"), Some(&1));
        assert!(take().is_empty());
    }
}
