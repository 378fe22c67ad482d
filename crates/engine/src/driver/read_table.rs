//! The table of a driver's unanswered reads, by read id ([`ReadTable`]).
//!
//! Read ids are handed out consecutively (`Requests::submit_read`), and reads are answered nearly
//! in the order they came (by read index, which grows with them). So the table is a queue of slots
//! indexed by `id - base`: insert is a push at the back, lookup and removal are an index, and the
//! empty slots at the front are dropped as they appear. A sorted map did the same with a tree walk
//! and, on every removal from the front of a node, a shift of the node's other entries (seen in
//! profiles of follower reads: ~2 % of the process).
//!
//! Invariants:
//! - the slots hold ids `base .. base + slots.len()` in order; the front slot, if any, is occupied;
//! - `live` is the number of occupied slots;
//! - ids are compared by `id.wrapping_sub(base)`, so a counter that wraps around keeps working;
//! - an id is inserted only as the next one (`base + slots.len()`), or into an empty table.
//!
//! Memory: the slots between the oldest unanswered read and the newest one stay allocated (empty
//! ones included) until the oldest is answered; every read is answered or fails by its request
//! timeout, which bounds that span. Iteration is in id order, so it is deterministic.

use std::collections::VecDeque;

/// Unanswered reads by consecutive id (see the module docs).
#[derive(Debug)]
pub(super) struct ReadTable<T> {
    /// The id of the front slot.
    base: u64,
    /// Slot `i` holds read `base + i`, or `None` once answered.
    slots: VecDeque<Option<T>>,
    /// Occupied slots.
    live: usize,
}

impl<T> ReadTable<T> {
    pub(super) fn new() -> Self {
        ReadTable { base: 0, slots: VecDeque::new(), live: 0 }
    }

    /// Unanswered reads.
    pub(super) fn len(&self) -> usize {
        self.live
    }

    /// Adds read `id`, which must be the one after the newest (or anything, if the table is empty).
    pub(super) fn insert(&mut self, id: u64, read: T) {
        if self.slots.is_empty() {
            self.base = id;
        }
        debug_assert_eq!(id.wrapping_sub(self.base), self.slots.len() as u64, "read ids are consecutive");
        self.slots.push_back(Some(read));
        self.live += 1;
    }

    fn slot(&self, id: u64) -> Option<usize> {
        let i = id.wrapping_sub(self.base);
        (i < self.slots.len() as u64).then_some(i as usize)
    }

    #[cfg(test)]
    pub(super) fn contains(&self, id: u64) -> bool {
        self.slot(id).is_some_and(|i| self.slots[i].is_some())
    }

    pub(super) fn get_mut(&mut self, id: u64) -> Option<&mut T> {
        let i = self.slot(id)?;
        self.slots[i].as_mut()
    }

    /// Takes read `id` out, if it is there.
    pub(super) fn remove(&mut self, id: u64) -> Option<T> {
        let i = self.slot(id)?;
        let read = self.slots[i].take()?;
        self.live -= 1;
        while matches!(self.slots.front(), Some(None)) {
            self.slots.pop_front();
            self.base = self.base.wrapping_add(1);
        }
        Some(read)
    }

    /// The unanswered reads, oldest first.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u64, &T)> {
        let base = self.base;
        self.slots
            .iter()
            .enumerate()
            .filter_map(move |(i, r)| Some((base.wrapping_add(i as u64), r.as_ref()?)))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::ReadTable;

    #[derive(Debug, Clone)]
    enum Op {
        Insert,
        Remove(u64),
        Get(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => Just(Op::Insert),
            2 => (0u64..40).prop_map(Op::Remove),
            1 => (0u64..40).prop_map(Op::Get),
        ]
    }

    proptest! {
        /// The table behaves as a sorted map of consecutive ids, also where the ids wrap around.
        #[test]
        fn behaves_as_a_sorted_map(start in prop_oneof![Just(0u64), Just(u64::MAX - 10), any::<u64>()], ops in proptest::collection::vec(op(), 0..200)) {
            let mut table = ReadTable::new();
            let mut model = BTreeMap::new();
            let mut next = start;
            for op in ops {
                match op {
                    Op::Insert => {
                        table.insert(next, next);
                        model.insert(next.wrapping_sub(start), next);
                        next = next.wrapping_add(1);
                    }
                    Op::Remove(k) => {
                        let id = start.wrapping_add(k);
                        prop_assert_eq!(table.remove(id), model.remove(&k));
                    }
                    Op::Get(k) => {
                        let id = start.wrapping_add(k);
                        prop_assert_eq!(table.get_mut(id).copied(), model.get(&k).copied());
                        prop_assert_eq!(table.contains(id), model.contains_key(&k));
                    }
                }
                prop_assert_eq!(table.len(), model.len());
                let listed: Vec<(u64, u64)> = table.iter().map(|(id, &v)| (id, v)).collect();
                let expected: Vec<(u64, u64)> = model.iter().map(|(&k, &v)| (start.wrapping_add(k), v)).collect();
                prop_assert_eq!(listed, expected);
            }
        }
    }

    #[test]
    fn answered_reads_free_their_slots_from_the_front() {
        let mut table = ReadTable::new();
        for id in 5..10 {
            table.insert(id, ());
        }
        assert_eq!(table.remove(7), Some(()));
        assert_eq!(table.remove(7), None);
        assert_eq!(table.slots.len(), 5, "a hole in the middle stays");
        assert_eq!(table.remove(5), Some(()));
        assert_eq!(table.remove(6), Some(()));
        assert_eq!((table.base, table.slots.len()), (8, 2), "the empty front is dropped");
        table.remove(8);
        table.remove(9);
        assert!(table.slots.is_empty());
        table.insert(42, ());
        assert_eq!(table.base, 42, "an empty table starts at any id");
    }
}
