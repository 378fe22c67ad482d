//! The search for a linearization of the operations on one key: Wing & Gong's backtracking
//! search with Lowe's memoization (the algorithm of Knossos and Porcupine).
//!
//! # Data structures
//! - **Event list.** Every completed operation contributes a *call* and a *return* event; the
//!   events form a doubly linked list sorted by time. At equal times calls come before returns:
//!   intervals are closed, so an operation that starts exactly when another ends may be ordered
//!   either way (the conservative choice: the checker never reports a violation that another tie
//!   order would avoid).
//! - **Pending list.** Indeterminate operations have no return event (it would lie after every
//!   other event); the ones not linearized yet are kept in a second list, in call order.
//! - **Candidates.** The completed operations that may be linearized next are exactly those whose
//!   call events come before the first return event of the event list: that return belongs to an
//!   operation not linearized yet, and every operation called after it returned must follow it.
//!   The indeterminate candidates are the pending operations called no later than that return.
//! - **Lift / unlift.** Linearizing an operation removes ("lifts") its events from its list in
//!   O(1); backtracking re-inserts them in O(1) ("dancing links"). Re-insertion is correct
//!   because lifts and unlifts happen in stack order.
//! - **Memoization.** A configuration is (set of linearized operations, state). Reaching a
//!   configuration seen before can only lead to the same dead end, so it is skipped. The set is a
//!   bitset whose bits follow call order; since linearized operations are mostly a prefix of the
//!   history, the cache stores it as (number of leading all-ones words, remaining words), which
//!   keeps memory proportional to the concurrency rather than the history length. The state is
//!   stored as a [`Fingerprint`]; the bitset is hashed incrementally (Zobrist hashing).
//!
//! # Order of the search
//! At each level the search first tries the completed candidates in call order and only then the
//! indeterminate ones: an indeterminate operation may always be postponed to the end of the
//! history (equivalently, never take effect), so trying it eagerly is rarely useful, and keeping
//! it out of the event list means crashed clients' operations cost nothing while they stay
//! irrelevant. Every candidate is still tried once per level, so the search stays complete.
//!
//! # Termination
//! The search succeeds as soon as every *completed* operation is linearized: the indeterminate
//! ones that remain can be placed after everything else, where the model accepts them whatever
//! the state. It fails when the stack is empty and no candidate is left, and gives up after
//! `max_steps` steps (a step is one candidate examined or one backtrack).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::model::{evaluate, splitmix64, Fingerprint, PreparedOp, State, Undo};
use super::Op;

/// Sentinel for "no node" in the event list.
const NIL: usize = usize::MAX;

/// One operation of a key's history as the search sees it.
#[derive(Debug, Clone)]
pub(super) struct SearchOp<'h> {
    /// The operation and its observed output.
    pub(super) prepared: PreparedOp<'h>,
    /// Call time.
    pub(super) call: u64,
    /// Return time, `None` for an indeterminate operation.
    pub(super) ret: Option<u64>,
}

impl SearchOp<'_> {
    /// Whether the model accepts the operation in every state and its resulting state does not
    /// depend on the previous one: `SET` (which always returns OK) and an indeterminate `DEL`.
    fn is_blind_write(&self) -> bool {
        match self.prepared.op {
            Op::Set(_) => true,
            Op::Del => self.ret.is_none(),
            Op::Get | Op::Incr(_) | Op::Append(_) => false,
        }
    }
}

/// The result of the search on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum SearchOutcome {
    /// A linearization exists.
    Linearizable,
    /// No linearization exists. `longest_prefix` is the longest sequence of operations (indexes
    /// into the search's operation slice) that the search managed to linearize.
    Violation {
        /// Indexes of the operations of the longest linearizable prefix, in linearization order.
        longest_prefix: Vec<usize>,
    },
    /// The step budget ran out before the search could decide.
    Exhausted,
}

/// Doubly linked lists over a fixed set of nodes, from which nodes are removed and restored in
/// LIFO order ("dancing links": a removed node keeps its links, so restoring it is O(1)).
struct Links {
    /// Successor of each node (`NIL` at the end).
    next: Vec<usize>,
    /// Predecessor of each linked node.
    prev: Vec<usize>,
}

impl Links {
    /// `nodes` unlinked nodes.
    fn new(nodes: usize) -> Links {
        Links { next: vec![NIL; nodes], prev: vec![NIL; nodes] }
    }

    /// Links `order` one after the other, starting from the sentinel `head`.
    fn chain(&mut self, head: usize, order: impl IntoIterator<Item = usize>) {
        let mut last = head;
        for node in order {
            self.next[last] = node;
            self.prev[node] = last;
            last = node;
        }
    }

    /// Removes `node` from its list.
    fn remove(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = next;
        if next != NIL {
            self.prev[next] = prev;
        }
    }

    /// Puts back `node`, which must be the most recently removed node not yet restored.
    fn restore(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = node;
        if next != NIL {
            self.prev[next] = node;
        }
    }
}

/// The call and return events of the completed operations, in time order (calls before returns
/// at equal times). Node `2 * i` is the call of operation `i`, node `2 * i + 1` its return, node
/// `2 * n` the head sentinel; indeterminate operations' nodes are never linked.
struct EventList {
    /// The links.
    links: Links,
    /// The head sentinel.
    head: usize,
}

impl EventList {
    /// Builds the list of the completed operations' events.
    fn new(ops: &[SearchOp<'_>]) -> EventList {
        // (time, kind, op): kind 0 = call, 1 = return.
        let mut events: Vec<(u64, u8, usize)> = Vec::with_capacity(2 * ops.len());
        for (i, op) in ops.iter().enumerate() {
            if let Some(ret) = op.ret {
                events.push((op.call, 0, i));
                events.push((ret, 1, i));
            }
        }
        events.sort_unstable();
        let head = 2 * ops.len();
        let mut links = Links::new(head + 1);
        links.chain(head, events.iter().map(|&(_, kind, op)| 2 * op + usize::from(kind)));
        EventList { links, head }
    }

    /// The first event.
    fn first(&self) -> usize {
        self.links.next[self.head]
    }

    /// Removes the events of the completed operation `op`.
    fn lift(&mut self, op: usize) {
        self.links.remove(2 * op);
        self.links.remove(2 * op + 1);
    }

    /// Re-inserts the events of `op`, undoing the most recent un-undone `lift`.
    fn unlift(&mut self, op: usize) {
        self.links.restore(2 * op + 1);
        self.links.restore(2 * op);
    }
}

/// The indeterminate operations not linearized yet, in call order. Node `i` is operation `i`,
/// node `n` the head sentinel; completed operations' nodes are never linked.
struct PendingList {
    /// The links.
    links: Links,
    /// The head sentinel.
    head: usize,
}

impl PendingList {
    /// Builds the list of the indeterminate operations.
    fn new(ops: &[SearchOp<'_>]) -> PendingList {
        let mut pending: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].ret.is_none()).collect();
        pending.sort_by_key(|&i| (ops[i].call, i));
        let head = ops.len();
        let mut links = Links::new(head + 1);
        links.chain(head, pending);
        PendingList { links, head }
    }

    /// The first pending operation.
    fn first(&self) -> usize {
        self.links.next[self.head]
    }
}

/// A set of completed operations (by their rank in call order), with an incremental Zobrist
/// hash and the bookkeeping for its compact form (leading all-ones words + tail).
struct DenseSet {
    /// One bit per completed operation, in call order.
    words: Vec<u64>,
    /// Number of leading words that are all ones.
    full: usize,
    /// One past the last non-zero word (`full <= last`).
    last: usize,
    /// XOR of the Zobrist keys of the members.
    zobrist: u64,
}

impl DenseSet {
    /// An empty set able to hold `n` operations.
    fn new(n: usize) -> DenseSet {
        DenseSet { words: vec![0; n.div_ceil(64)], full: 0, last: 0, zobrist: 0 }
    }

    /// The Zobrist key of operation `op`.
    fn key(op: usize) -> u64 {
        splitmix64(op as u64 ^ 0x5bd1_e995_0000_0000)
    }

    /// Adds `op` (which must not be a member).
    fn insert(&mut self, op: usize) {
        let word = op / 64;
        self.words[word] |= 1 << (op % 64);
        self.zobrist ^= DenseSet::key(op);
        self.last = self.last.max(word + 1);
        while self.full < self.words.len() && self.words[self.full] == u64::MAX {
            self.full += 1;
        }
    }

    /// Removes `op` (which must be a member).
    fn remove(&mut self, op: usize) {
        let word = op / 64;
        self.words[word] &= !(1 << (op % 64));
        self.zobrist ^= DenseSet::key(op);
        self.full = self.full.min(word);
        while self.last > 0 && self.words[self.last - 1] == 0 {
            self.last -= 1;
        }
    }

    /// The words after the leading all-ones words, up to the last non-zero word.
    fn tail(&self) -> &[u64] {
        &self.words[self.full..self.last]
    }
}

/// Where an operation's bit lives in [`Linearized`].
#[derive(Debug, Clone, Copy)]
enum Slot {
    /// A completed operation: its rank among the completed operations, in call order.
    Completed(usize),
    /// An indeterminate operation: its rank among the indeterminate operations.
    Indeterminate(usize),
}

/// The set of linearized operations, split into completed and indeterminate ones.
struct Linearized {
    /// The linearized completed operations.
    completed: DenseSet,
    /// The linearized indeterminate operations, one bit each.
    indeterminate: Vec<u64>,
}

impl Linearized {
    /// An empty set.
    fn new(completed: usize, indeterminate: usize) -> Linearized {
        Linearized { completed: DenseSet::new(completed), indeterminate: vec![0; indeterminate.div_ceil(64)] }
    }

    /// Adds an operation (which must not be a member).
    fn insert(&mut self, slot: Slot) {
        match slot {
            Slot::Completed(rank) => self.completed.insert(rank),
            Slot::Indeterminate(rank) => self.indeterminate[rank / 64] |= 1 << (rank % 64),
        }
    }

    /// Removes an operation (which must be a member).
    fn remove(&mut self, slot: Slot) {
        match slot {
            Slot::Completed(rank) => self.completed.remove(rank),
            Slot::Indeterminate(rank) => self.indeterminate[rank / 64] &= !(1 << (rank % 64)),
        }
    }

    /// Whether an indeterminate operation is a member.
    fn contains_indeterminate(&self, rank: usize) -> bool {
        self.indeterminate[rank / 64] & (1 << (rank % 64)) != 0
    }
}

/// A hasher for keys that are already well-mixed 64-bit hashes.
#[derive(Default)]
struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// One visited configuration (completed set, indeterminate set, state).
struct CacheEntry {
    /// Number of leading all-ones words of the completed set.
    full: usize,
    /// The remaining words of the completed set.
    tail: Box<[u64]>,
    /// Fingerprint of the state.
    fp: Fingerprint,
    /// The indeterminate set.
    indeterminate: Box<[u64]>,
    /// Next entry with the same hash (`NIL` at the end of the chain).
    next: usize,
}

/// The set of visited configurations: a hash table of chains in an arena, keyed by the completed
/// set and the state (the indeterminate set is compared by inclusion, see [`Cache::visit`]).
#[derive(Default)]
struct Cache {
    /// First entry of the chain of each hash.
    heads: HashMap<u64, usize, BuildHasherDefault<PassThroughHasher>>,
    /// All entries.
    entries: Vec<CacheEntry>,
}

impl Cache {
    /// Records the configuration and returns true, or returns false if it is *dominated* by a
    /// configuration visited before: same completed set, same state, and a subset of its
    /// indeterminate operations. A dominating configuration can do everything the dominated one
    /// can (the extra indeterminate operations may simply never take effect), so if it failed,
    /// or is an ancestor still being explored, the dominated one need not be explored. With
    /// equal sets this is Lowe's memoization.
    fn visit(&mut self, linearized: &Linearized, fp: Fingerprint) -> bool {
        let completed = &linearized.completed;
        let hash = completed.zobrist ^ fp.mix();
        let tail = completed.tail();
        let head = self.heads.get(&hash).copied().unwrap_or(NIL);
        let mut cursor = head;
        while cursor != NIL {
            let entry = &self.entries[cursor];
            if entry.full == completed.full
                && entry.fp == fp
                && *entry.tail == *tail
                && entry.indeterminate.iter().zip(&linearized.indeterminate).all(|(old, new)| old & !new == 0)
            {
                return false;
            }
            cursor = entry.next;
        }
        self.entries.push(CacheEntry {
            full: completed.full,
            tail: tail.into(),
            fp,
            indeterminate: linearized.indeterminate.as_slice().into(),
            next: head,
        });
        self.heads.insert(hash, self.entries.len() - 1);
        true
    }
}

/// Which candidates a scan of the event list tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Completed operations only.
    Completed,
    /// Indeterminate operations only.
    Indeterminate,
}

/// One linearized operation on the search stack.
struct Frame {
    /// The operation.
    op: usize,
    /// How to revert its effect on the state.
    undo: Undo,
    /// The pass in which it was chosen (the scan resumes in that pass after backtracking).
    pass: Pass,
    /// The candidate bound of the indeterminate pass at that level (see `search`).
    bound: u64,
}

/// Keeps a copy of the deepest stack seen so far without copying the stack at every step: the
/// copy is refreshed only when the search backtracks from a new maximum, and only the part of the
/// stack above its lowest point since the previous refresh is copied.
#[derive(Default)]
struct LongestPrefix {
    /// The deepest stack, valid up to `low_water` while `dirty`.
    ops: Vec<usize>,
    /// Depth of the deepest stack seen.
    depth: usize,
    /// Lowest stack depth since the last refresh: `ops[..low_water]` equals the current stack.
    low_water: usize,
    /// Whether the current stack is deeper than `ops` and not yet copied.
    dirty: bool,
}

impl LongestPrefix {
    /// Called after a push.
    fn pushed(&mut self, stack: &[Frame]) {
        if stack.len() > self.depth {
            self.depth = stack.len();
            self.dirty = true;
        }
    }

    /// Called before a pop.
    fn popping(&mut self, stack: &[Frame]) {
        if self.dirty {
            self.ops.truncate(self.low_water);
            self.ops.extend(stack[self.low_water..].iter().map(|frame| frame.op));
            self.dirty = false;
            self.low_water = stack.len();
        }
        self.low_water = self.low_water.min(stack.len().saturating_sub(1));
    }
}

/// For each indeterminate operation, the previous pending operation (in call order) with the
/// same request, or `NIL`. Such "twins" are interchangeable once both are candidates, so the
/// search only ever linearizes the first pending one of a family (symmetry breaking): trying the
/// others as well would explore the same configurations under other names.
fn twins(ops: &[SearchOp<'_>], pending: &PendingList) -> Vec<usize> {
    let mut previous = vec![NIL; ops.len()];
    let mut last_of_family: HashMap<&Op, usize> = HashMap::new();
    let mut node = pending.first();
    while node != NIL {
        if let Some(twin) = last_of_family.insert(ops[node].prepared.op, node) {
            previous[node] = twin;
        }
        node = pending.links.next[node];
    }
    previous
}

/// Searches for a linearization of `ops` (all on one key). The operations should be sorted by
/// call time so that the linearized set stays a dense prefix (any order is correct).
pub(super) fn search(ops: &[SearchOp<'_>], max_steps: u64) -> SearchOutcome {
    let mut slots = Vec::with_capacity(ops.len());
    let (mut remaining_completed, mut remaining_indeterminate) = (0, 0);
    for op in ops {
        if op.ret.is_some() {
            slots.push(Slot::Completed(remaining_completed));
            remaining_completed += 1;
        } else {
            slots.push(Slot::Indeterminate(remaining_indeterminate));
            remaining_indeterminate += 1;
        }
    }
    let mut events = EventList::new(ops);
    let mut pending = PendingList::new(ops);
    let twins = twins(ops, &pending);
    let mut linearized = Linearized::new(remaining_completed, remaining_indeterminate);
    let mut cache = Cache::default();
    let mut state = State::absent();
    let mut stack: Vec<Frame> = Vec::new();
    let mut longest = LongestPrefix::default();
    let mut steps: u64 = 0;

    // The scan position: a node of `events` in the completed pass, of `pending` in the other.
    let mut cursor = events.first();
    let mut pass = Pass::Completed;
    // In the indeterminate pass: the time of the first return event; only operations called no
    // later than that are candidates.
    let mut bound = u64::MAX;
    loop {
        if remaining_completed == 0 {
            return SearchOutcome::Linearizable;
        }
        if steps >= max_steps {
            return SearchOutcome::Exhausted;
        }
        steps += 1;

        let candidate = match pass {
            Pass::Completed if cursor != NIL && cursor & 1 == 0 => Some(cursor / 2),
            Pass::Completed => {
                // The first return event: no later call is a candidate. Try the pending
                // indeterminate operations called before it, if any.
                if remaining_indeterminate > 0 {
                    bound = match cursor {
                        NIL => u64::MAX,
                        node => ops[node / 2].ret.unwrap_or(u64::MAX),
                    };
                    pass = Pass::Indeterminate;
                    cursor = pending.first();
                    continue;
                }
                None
            }
            Pass::Indeterminate => (cursor != NIL && ops[cursor].call <= bound).then_some(cursor),
        };

        let Some(op) = candidate else {
            // Every candidate at this level failed: backtrack.
            longest.popping(&stack);
            let Some(frame) = stack.pop() else {
                return SearchOutcome::Violation { longest_prefix: longest.ops };
            };
            state.undo(frame.undo);
            linearized.remove(slots[frame.op]);
            pass = frame.pass;
            bound = frame.bound;
            cursor = match pass {
                Pass::Completed => {
                    events.unlift(frame.op);
                    remaining_completed += 1;
                    events.links.next[2 * frame.op]
                }
                Pass::Indeterminate => {
                    pending.links.restore(frame.op);
                    remaining_indeterminate += 1;
                    pending.links.next[frame.op]
                }
            };
            continue;
        };

        // Symmetry breaking: a pending twin called earlier is also a candidate; it stands for both.
        let twin_pending = match twins[op] {
            NIL => false,
            twin => {
                matches!(slots[twin], Slot::Indeterminate(rank) if !linearized.contains_indeterminate(rank))
            }
        };
        // Absorption: a blind write right after an indeterminate operation erases its effect;
        // the configuration without that operation dominates and is reached by placing the
        // blind write one level up instead.
        let absorbs_top = ops[op].is_blind_write()
            && stack.last().is_some_and(|frame| matches!(slots[frame.op], Slot::Indeterminate(_)));
        if !twin_pending && !absorbs_top {
            if let Some(transition) = evaluate(&state, &ops[op].prepared) {
                linearized.insert(slots[op]);
                if cache.visit(&linearized, transition.fp) {
                    let undo = state.apply(transition);
                    stack.push(Frame { op, undo, pass, bound });
                    longest.pushed(&stack);
                    match pass {
                        Pass::Completed => {
                            events.lift(op);
                            remaining_completed -= 1;
                        }
                        Pass::Indeterminate => {
                            pending.links.remove(op);
                            remaining_indeterminate -= 1;
                        }
                    }
                    cursor = events.first();
                    pass = Pass::Completed;
                    continue;
                }
                linearized.remove(slots[op]);
            }
        }
        cursor = match pass {
            Pass::Completed => events.links.next[cursor],
            Pass::Indeterminate => pending.links.next[cursor],
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The compact form must be canonical: equal sets give equal (full, tail), whatever sequence
    /// of insertions and removals produced them.
    #[test]
    fn linearized_compact_form_is_canonical() {
        let n = 200;
        let mut set = DenseSet::new(n);
        let mut model = vec![false; n];
        let mut seed = 7u64;
        for step in 0..20_000u64 {
            seed = splitmix64(seed);
            // Like a real search: mostly add the first missing operation, sometimes toggle one
            // near it (which also removes members of full words).
            let first_missing = model.iter().position(|&member| !member).unwrap_or(n - 1);
            let op = if seed % 3 < 1 {
                first_missing
            } else {
                (first_missing + (seed >> 8) as usize % 21).saturating_sub(10).min(n - 1)
            };
            if model[op] {
                set.remove(op);
            } else {
                set.insert(op);
            }
            model[op] = !model[op];
            let mut words = vec![0u64; n.div_ceil(64)];
            for (i, _) in model.iter().enumerate().filter(|(_, &member)| member) {
                words[i / 64] |= 1 << (i % 64);
            }
            let full = words.iter().take_while(|&&word| word == u64::MAX).count();
            let last = words.iter().rposition(|&word| word != 0).map_or(0, |i| i + 1).max(full);
            assert_eq!((set.full, set.tail()), (full, &words[full..last]), "step {step}");
            let zobrist = (0..n).filter(|&i| model[i]).fold(0, |acc, i| acc ^ DenseSet::key(i));
            assert_eq!(set.zobrist, zobrist);
        }
    }

    /// Lifting and unlifting in stack order restores the lists exactly.
    #[test]
    fn lift_and_unlift_restore_the_event_list() {
        let ops: Vec<SearchOp<'_>> = (0..6u64)
            .map(|i| SearchOp {
                prepared: PreparedOp::new(&crate::linearizability::Op::Get, None),
                call: i,
                ret: (i % 3 != 2).then_some(i + 2),
            })
            .collect();
        let walk = |list: &EventList| {
            let mut nodes = Vec::new();
            let mut node = list.first();
            while node != NIL {
                nodes.push(node);
                node = list.links.next[node];
            }
            nodes
        };
        let mut events = EventList::new(&ops);
        let original = walk(&events);
        // Calls before returns at equal times; ops 2 and 5 are indeterminate and not in the list.
        assert_eq!(original, vec![0, 2, 1, 6, 3, 8, 7, 9]);
        events.lift(1);
        events.lift(4);
        assert_eq!(walk(&events), vec![0, 1, 6, 7]);
        events.unlift(4);
        events.unlift(1);
        assert_eq!(walk(&events), original);
        let pending = PendingList::new(&ops);
        assert_eq!(pending.first(), 2);
        assert_eq!(pending.links.next[2], 5);
        assert_eq!(pending.links.next[5], NIL);
    }
}
