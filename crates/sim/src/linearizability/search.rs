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
//!   configuration seen before can only lead to the same dead end, so it is skipped. The set of
//!   completed operations is a bitset whose bits follow call order; since linearized operations
//!   are mostly a prefix of the history, the cache stores it as (number of leading all-ones
//!   words, remaining words), which keeps memory proportional to the concurrency rather than the
//!   history length. The state is stored as a [`Fingerprint`]; the bitset is hashed
//!   incrementally (Zobrist hashing).
//! - **Candidate stack.** The candidates of every open level live on one shared stack; a level
//!   is a range of it plus a cursor, and a stack frame remembers its parent's level.
//!
//! # Order of the search
//! At each level the search first tries the completed candidates in call order and only then the
//! indeterminate ones: an indeterminate operation may always be postponed to the end of the
//! history (equivalently, never take effect), so trying it eagerly is rarely useful, and keeping
//! it out of the event list means crashed clients' operations cost nothing while they stay
//! irrelevant.
//!
//! # Pruning (each rule keeps the search complete)
//! Write *dominates* for "every completion of the dominated configuration is also a completion of
//! the dominating one". The search never explores a configuration dominated by one it has
//! explored or is exploring, and some candidate along a shortest completion of any completable
//! configuration is always explored or dominated (the proof is by induction on the length of the
//! shortest completion), so the search finds a linearization whenever one exists.
//! 1. *Memoization with dominance.* (C, I, s) dominates (C, I', s) when I ⊆ I' (C: completed
//!    operations linearized, I: indeterminate ones, s: state): the extra indeterminate
//!    operations may as well never take effect, and they never constrain the order of others.
//!    With I = I' this is Lowe's memoization.
//! 2. *Observers first.* An operation that leaves the state unchanged wherever it fits (a
//!    completed `GET`, `DEL` that found nothing, `INCRBY` that failed) and fits now is linearized
//!    alone: any completion can be rearranged to start with it.
//! 3. *Twins.* Identical pending indeterminate operations are interchangeable once they are all
//!    candidates (their calls are passed and they have no return), so only the earliest one is
//!    tried.
//! 4. *Absorption.* A blind write (`SET`, or a `DEL` whose reply is unknown) right after an
//!    indeterminate operation erases it: the configuration without that operation dominates, and
//!    is reached by placing the blind write one level up.
//!
//! # Termination
//! The search succeeds as soon as every *completed* operation is linearized: the indeterminate
//! ones that remain can be placed after everything else, where the model accepts them whatever
//! the state. It fails when the stack is empty and no candidate is left, and gives up after
//! `max_steps` steps (a step is one candidate examined or one backtrack).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::model::{evaluate, splitmix64, Fingerprint, PreparedOp, State, Undo};
use super::{Op, OpOutput};

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
            Op::Get | Op::Incr(_) | Op::Append(_) | Op::Watched { .. } => false,
        }
    }

    /// Whether the operation leaves the state unchanged wherever the model accepts it: a
    /// completed `GET`, a `DEL` that found nothing, an `INCRBY` that failed, or a watched
    /// transaction that aborted. If such an
    /// *observer* is a candidate and fits the current state, it can be linearized right away:
    /// in any linearization from here it can be moved to the front (being a candidate, nothing
    /// must precede it; it fits; and taking it out of its later place changes no state). So the
    /// search tries it alone, which removes the factor of two per pending read that would
    /// otherwise multiply the configurations to visit.
    fn is_observer(&self) -> bool {
        matches!(
            (self.prepared.op, self.prepared.output),
            (Op::Get, Some(_))
                | (Op::Del, Some(OpOutput::Bool(false)))
                | (Op::Incr(_), Some(OpOutput::Error))
                | (Op::Watched { .. }, Some(OpOutput::Aborted))
        )
    }
}

/// The result of the search on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum SearchOutcome {
    /// A linearization exists.
    Linearizable,
    /// No linearization exists. `longest_prefix` is the linearizable sequence of operations
    /// (indexes into the search's operation slice) with the most completed operations that the
    /// search found.
    Violation {
        /// Indexes of the operations of that prefix, in linearization order.
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

/// The progress of one level of the search through its candidates, which are kept on a stack
/// shared by all levels (`candidates` in [`search`]): this level's are `candidates[start..]`.
#[derive(Debug, Clone, Copy)]
struct Level {
    /// Where this level's candidates start.
    start: usize,
    /// The next candidate to try.
    next: usize,
    /// Whether the indeterminate candidates have been added; they are added only once the
    /// completed ones are exhausted.
    with_indeterminate: bool,
    /// Time of the first return event: candidates must be called no later.
    bound: u64,
}

/// One linearized operation on the search stack.
struct Frame {
    /// The operation.
    op: usize,
    /// How to revert its effect on the state.
    undo: Undo,
    /// The level that chose the operation, to resume after backtracking.
    level: Level,
}

/// Keeps a copy of the best stack seen so far (the most completed operations linearized; more
/// telling than the most operations, which indeterminate ones inflate) without copying the stack
/// at every step: the copy is refreshed only when the search backtracks from a new best, and only
/// the part of the stack above its lowest point since the previous refresh is copied.
#[derive(Default)]
struct LongestPrefix {
    /// The best stack, valid up to `low_water` while `dirty`.
    ops: Vec<usize>,
    /// Number of completed operations in the best stack.
    completed: usize,
    /// Lowest stack depth since the last refresh: `ops[..low_water]` equals the current stack.
    low_water: usize,
    /// Whether the current stack is better than `ops` and not yet copied.
    dirty: bool,
}

impl LongestPrefix {
    /// Called after a push, with the number of completed operations now linearized.
    fn pushed(&mut self, completed: usize) {
        if completed > self.completed {
            self.completed = completed;
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

/// The mutable state of the search on one key.
struct Search<'s, 'h> {
    /// The operations, sorted by call time.
    ops: &'s [SearchOp<'h>],
    /// Where each operation's bit lives.
    slots: Vec<Slot>,
    /// For each indeterminate operation, its earlier twin (see [`twins`]).
    twins: Vec<usize>,
    /// Events of the completed operations not linearized yet.
    events: EventList,
    /// Indeterminate operations not linearized yet.
    pending: PendingList,
    /// The linearized operations.
    linearized: Linearized,
    /// Completed operations not linearized yet.
    remaining_completed: usize,
    /// Indeterminate operations not linearized yet.
    remaining_indeterminate: usize,
    /// The stack of candidates of all open levels.
    candidates: Vec<usize>,
    /// The linearized operations, in order.
    stack: Vec<Frame>,
}

impl Search<'_, '_> {
    /// Opens a level: collects the completed candidates (calls before the first return event),
    /// in call order. Returns the level and the number of events examined.
    fn open_level(&mut self, state: &State) -> (Level, u64) {
        let start = self.candidates.len();
        let ops = self.ops;
        // After an indeterminate operation, a blind write would erase it (see `is_blind_write`).
        let after_indeterminate =
            self.stack.last().is_some_and(|frame| matches!(self.slots[frame.op], Slot::Indeterminate(_)));
        let mut examined = 0;
        let mut node = self.events.first();
        while node != NIL && node & 1 == 0 {
            examined += 1;
            let op = node / 2;
            if !(after_indeterminate && ops[op].is_blind_write()) {
                self.candidates.push(op);
            }
            node = self.events.links.next[node];
        }
        let bound = match node {
            NIL => u64::MAX,
            node => ops[node / 2].ret.unwrap_or(u64::MAX),
        };
        // If an observer fits the current state, it alone is tried (see `is_observer`).
        let observer = self.candidates[start..]
            .iter()
            .copied()
            .find(|&op| ops[op].is_observer() && evaluate(state, &ops[op].prepared).is_some());
        if let Some(op) = observer {
            self.candidates.truncate(start);
            self.candidates.push(op);
            return (Level { start, next: start, with_indeterminate: true, bound }, examined);
        }
        (Level { start, next: start, with_indeterminate: false, bound }, examined)
    }

    /// Adds the indeterminate candidates of `level` (pending operations called no later than its
    /// bound), skipping redundant ones. Returns the number of operations examined.
    fn add_indeterminate(&mut self, level: &mut Level) -> u64 {
        level.with_indeterminate = true;
        let ops = self.ops;
        let after_indeterminate =
            self.stack.last().is_some_and(|frame| matches!(self.slots[frame.op], Slot::Indeterminate(_)));
        let mut examined = 0;
        let mut op = self.pending.first();
        while op != NIL && ops[op].call <= level.bound {
            examined += 1;
            // Symmetry breaking: a pending twin called earlier stands for this one.
            let twin_pending = match self.twins[op] {
                NIL => false,
                twin => {
                    matches!(self.slots[twin], Slot::Indeterminate(rank) if !self.linearized.contains_indeterminate(rank))
                }
            };
            let absorbed = after_indeterminate && ops[op].is_blind_write();
            if !twin_pending && !absorbed {
                self.candidates.push(op);
            }
            op = self.pending.links.next[op];
        }
        examined
    }

    /// Marks `op` linearized in the event lists and counters.
    fn lift(&mut self, op: usize) {
        match self.slots[op] {
            Slot::Completed(_) => {
                self.events.lift(op);
                self.remaining_completed -= 1;
            }
            Slot::Indeterminate(_) => {
                self.pending.links.remove(op);
                self.remaining_indeterminate -= 1;
            }
        }
    }

    /// Undoes the most recent `lift`, which was of `op`.
    fn unlift(&mut self, op: usize) {
        match self.slots[op] {
            Slot::Completed(_) => {
                self.events.unlift(op);
                self.remaining_completed += 1;
            }
            Slot::Indeterminate(_) => {
                self.pending.links.restore(op);
                self.remaining_indeterminate += 1;
            }
        }
    }
}

/// Searches for a linearization of `ops` (all on one key). The operations should be sorted by
/// call time so that the linearized set stays a dense prefix (any order is correct).
pub(super) fn search(ops: &[SearchOp<'_>], max_steps: u64) -> SearchOutcome {
    let mut slots = Vec::with_capacity(ops.len());
    let (mut completed, mut indeterminate) = (0, 0);
    for op in ops {
        if op.ret.is_some() {
            slots.push(Slot::Completed(completed));
            completed += 1;
        } else {
            slots.push(Slot::Indeterminate(indeterminate));
            indeterminate += 1;
        }
    }
    let pending = PendingList::new(ops);
    let mut search = Search {
        ops,
        slots,
        twins: twins(ops, &pending),
        events: EventList::new(ops),
        pending,
        linearized: Linearized::new(completed, indeterminate),
        remaining_completed: completed,
        remaining_indeterminate: indeterminate,
        candidates: Vec::new(),
        stack: Vec::new(),
    };
    let mut cache = Cache::default();
    let mut state = State::absent();
    let mut longest = LongestPrefix::default();

    let (mut level, mut steps) = search.open_level(&state);
    loop {
        if search.remaining_completed == 0 {
            return SearchOutcome::Linearizable;
        }
        if steps >= max_steps {
            return SearchOutcome::Exhausted;
        }
        steps += 1;

        if level.next == search.candidates.len() {
            if !level.with_indeterminate && search.remaining_indeterminate > 0 {
                steps += search.add_indeterminate(&mut level);
                continue;
            }
            // Every candidate at this level failed: backtrack.
            search.candidates.truncate(level.start);
            longest.popping(&search.stack);
            let Some(frame) = search.stack.pop() else {
                return SearchOutcome::Violation { longest_prefix: longest.ops };
            };
            state.undo(frame.undo);
            search.linearized.remove(search.slots[frame.op]);
            search.unlift(frame.op);
            level = frame.level;
            continue;
        }

        let op = search.candidates[level.next];
        level.next += 1;
        let Some(transition) = evaluate(&state, &ops[op].prepared) else {
            continue;
        };
        search.linearized.insert(search.slots[op]);
        if !cache.visit(&search.linearized, transition.fp) {
            search.linearized.remove(search.slots[op]);
            continue;
        }
        let undo = state.apply(transition);
        search.lift(op);
        search.stack.push(Frame { op, undo, level });
        longest.pushed(completed - search.remaining_completed);
        let (next_level, examined) = search.open_level(&state);
        level = next_level;
        steps += examined;
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
