//! Items handed out one at a time to every thread that asks, with their
//! results kept in the items' order.
//!
//! Chroma trees are a few hundred files of very different sizes. A thread
//! that has finished its own long job (SQLite's copy of the db, the
//! `integrity_check`) joins whichever thread is working through the files,
//! so a large tree beside a small db uses both cores, and a large db's work
//! is never split.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

pub(crate) struct WorkQueue<'a, T, R> {
    items: &'a [T],
    next: AtomicUsize,
    results: Mutex<Vec<Option<R>>>,
}

impl<'a, T, R> WorkQueue<'a, T, R> {
    pub(crate) fn new(items: &'a [T]) -> Self {
        WorkQueue {
            items,
            next: AtomicUsize::new(0),
            results: Mutex::new(items.iter().map(|_| None).collect()),
        }
    }

    /// Runs `work` on the items no thread has taken yet, one at a time,
    /// until none is left. The first error stops every thread at its next
    /// item and is returned.
    pub(crate) fn work_until_done<E>(&self, mut work: impl FnMut(&T) -> Result<R, E>) -> Result<(), E> {
        loop {
            let index = self.next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = self.items.get(index) else {
                return Ok(());
            };
            match work(item) {
                Ok(result) => self.results.lock().unwrap_or_else(|e| e.into_inner())[index] = Some(result),
                Err(error) => {
                    self.stop();
                    return Err(error);
                }
            }
        }
    }

    /// Leaves the items not yet taken undone.
    pub(crate) fn stop(&self) {
        self.next.store(self.items.len(), Ordering::Relaxed);
    }

    /// Each item's result, in the items' order; `None` for an item left
    /// undone by a stop.
    pub(crate) fn into_results(self) -> Vec<Option<R>> {
        self.results.into_inner().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    #[test]
    fn every_item_is_done_once_and_results_keep_the_items_order() {
        let items: Vec<usize> = (0..500).collect();
        let queue = WorkQueue::new(&items);
        let calls = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    queue.work_until_done(|&item| {
                        calls.fetch_add(1, Ordering::Relaxed);
                        Ok::<_, ()>(item * 2)
                    })
                });
            }
        });
        assert_eq!(calls.into_inner(), items.len());
        let expected: Vec<Option<usize>> = items.iter().map(|item| Some(item * 2)).collect();
        assert_eq!(queue.into_results(), expected);
    }

    #[test]
    fn the_first_error_stops_the_queue_for_every_thread() {
        let items: Vec<usize> = (0..100).collect();
        let queue = WorkQueue::new(&items);
        let failed = queue.work_until_done(|&item| if item == 10 { Err(item) } else { Ok(item) });
        assert_eq!(failed, Err(10));
        // A thread arriving after the error finds nothing left to take.
        let later = AtomicUsize::new(0);
        let arrived = queue.work_until_done(|&item| {
            later.fetch_add(1, Ordering::Relaxed);
            Ok::<_, usize>(item)
        });
        assert_eq!((arrived, later.into_inner()), (Ok(()), 0));
        let results = queue.into_results();
        assert!(results[..10].iter().all(Option::is_some));
        assert!(results[10..].iter().all(Option::is_none));
    }
}
