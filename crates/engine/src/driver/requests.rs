//! Client requests waiting in a driver: writes (with this incarnation's session), reads (with their
//! read index), routing to the leader, timeouts, and the back-pressure that keeps a session within
//! what the state machine remembers.
//!
//! Writes:
//! - A write is wrapped in a [`Proposal`] with the current session id and a fresh sequence number,
//!   then proposed (on the leader) or forwarded to the leader (on a follower). It is answered when
//!   *this* node applies an entry carrying its (session, seq): every node applies every entry, so no
//!   answer message is needed. A write whose fate is unclear (leader change, lost forward) is simply
//!   routed again with the same (session, seq); the state machine's sessions make the retry apply at
//!   most once (thesis §6.3).
//! - Back-pressure: at most `window` sequence numbers are in flight, counted from the lowest one
//!   still unanswered or in limbo (see below) to the next one to hand out. A write beyond that waits,
//!   without a sequence number, in a FIFO queue until earlier writes are answered. So the state
//!   machine never has to cache more than about `window` replies for the session
//!   ([`kv::MAX_REPLIES_PER_SESSION`] is four times the default window), and every reply a retry
//!   asks for is still there: a write is never told "duplicate" unless it really ran.
//! - A request not answered within `request_timeout_ticks` fails: with [`RequestError::NoLeader`]
//!   if a write was never handed to any leader (it certainly did not happen), with
//!   [`RequestError::Overloaded`] if it never got a sequence number (it did not happen either), with
//!   [`RequestError::Timeout`] otherwise (a write may or may not have happened).
//! - A node that has known no leader for `leaderless` ticks (an election timeout: a leader that
//!   stepped down by CheckQuorum, a follower cut off from the majority, a node not yet adopted)
//!   does not hold its requests until the request timeout: every request that has waited that long
//!   while no leader was known is answered at the next tick, as its timeout would answer it (a
//!   write routed to a leader before: [`RequestError::Timeout`], it may still apply; anything else:
//!   [`RequestError::NoLeader`], it did not happen). Its client learns within about two election
//!   timeouts of a cut that this node cannot serve it and can go to another node, where a new
//!   leader serves after about the same time; waiting out the request timeout (seconds) would keep
//!   clients gathered on a cut node away from a cluster that works. A request that arrives while no
//!   leader is known still gets `leaderless` ticks to see one (a node rejoining after a heal hears
//!   the leader within a heartbeat). A leader that steps down by CheckQuorum (same term, no leader)
//!   has heard from no majority for an election timeout already: it counts as leaderless since
//!   `leaderless` ticks before, so what waited that long is answered at once.
//!
//! Sessions and `ack_below` (what the state machine may forget):
//! - Until the state machine has applied one proposal of this session, `ack_below` stays at
//!   [`kv::FIRST_SEQ`], so the session is created by whichever proposal arrives first.
//! - Afterwards `ack_below` is the lowest sequence number that is still unanswered or *in limbo*:
//!   a write that timed out after being routed may still be in some leader's log, so its number is
//!   kept (for `limbo_ticks`, or until it would hold the window shut) until it is seen applied; a
//!   late copy of it is then executed at most once. Once forgotten, a late copy is refused unexecuted
//!   (its client was told the outcome is unknown, which stays true).
//! - If the state machine ever refuses a proposal because the session was evicted
//!   ([`kv::SESSION_EXPIRED_ERR`], possible only after thousands of other sessions), the driver starts
//!   a new session and re-proposes its unanswered writes under it.
//!
//! Reads ask the core for a read index (ReadIndex, thesis §6.4; followers ask the leader) and are
//! served from the local state machine once it has applied that index.
//!
//! Invariants:
//! - Every request gets exactly one answer.
//! - `ack_below` sent in proposals never exceeds the lowest unanswered or in-limbo sequence number.
//! - `next_seq - (lowest unanswered or in-limbo seq) <= window` whenever a sequence number is
//!   handed out.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use raft::{Index, Node, NodeId, ReadError, ReadState};

use super::read_table::ReadTable;
use super::{PeerMessage, RequestError, RequestId, Response};
use crate::kv::{self, Applied, Command, KvStore, Proposal, Query, Reply};

/// Most proposal bytes in one Forward message (a single larger proposal travels alone).
const MAX_FORWARD_BYTES: usize = 4 << 20;

/// The default most sequence numbers in flight per session (see the module docs).
pub const DEFAULT_WRITE_WINDOW: usize = kv::MAX_REPLIES_PER_SESSION / 4;

/// A write waiting for its entry to be applied.
#[derive(Debug)]
struct PendingWrite {
    /// The caller's request id.
    request: RequestId,
    /// The encoded proposal (re-sent as is on retry).
    data: Bytes,
    /// Tick at which it was submitted.
    submitted: u64,
    /// Tick at which it was last proposed or forwarded (None: never handed to a leader).
    routed: Option<u64>,
}

/// A write waiting for room in the window (it has no sequence number yet).
#[derive(Debug)]
struct QueuedWrite {
    /// The caller's request id.
    request: RequestId,
    /// The command.
    command: Command,
    /// Tick at which it was submitted.
    submitted: u64,
}

/// A read waiting for its read index or for the state machine to catch up with it.
#[derive(Debug)]
struct PendingRead {
    /// The caller's request id.
    request: RequestId,
    /// The query.
    query: Query,
    /// Tick at which it was submitted.
    submitted: u64,
    /// Set once the read index is known.
    index: Option<Index>,
}

/// Timing settings of [`Requests`] (in ticks).
#[derive(Clone, Copy, Debug)]
pub(super) struct Timing {
    /// A request unanswered after this many ticks fails.
    pub request_timeout: u64,
    /// A forwarded write unanswered after this many ticks is forwarded again.
    pub forward_retry: u64,
    /// How long the sequence number of a timed-out write is remembered.
    pub limbo: u64,
    /// A request that has waited this many ticks while no leader was known is answered (see the
    /// module docs).
    pub leaderless: u64,
}

/// The client requests of one driver. See the module docs.
pub(super) struct Requests {
    /// Timing.
    timing: Timing,
    /// Most sequence numbers in flight.
    window: u64,
    /// The current session id.
    session: u64,
    /// True once the state machine has applied a proposal of `session` (it knows the session).
    session_known: bool,
    /// Next proposal sequence number of this session.
    next_seq: u64,
    /// Sequence numbers of timed-out writes that may still apply -> tick when they are forgotten.
    limbo: BTreeMap<u64, u64>,
    /// Unanswered writes by sequence number.
    writes: BTreeMap<u64, PendingWrite>,
    /// Writes waiting for room in the window, oldest first.
    queued: VecDeque<QueuedWrite>,
    /// Unanswered reads by read id.
    reads: ReadTable<PendingRead>,
    /// Reads whose index is known but not yet applied: (index, read id).
    reads_by_index: BTreeSet<(Index, u64)>,
    /// Reads to ask the core again for (their previous attempt failed).
    reads_to_retry: Vec<u64>,
    /// Next read id.
    next_read: u64,
    /// Writes to route at the end of this round (sequence numbers).
    to_route: BTreeSet<u64>,
    /// The leader as of the last round (to notice changes).
    last_leader: Option<NodeId>,
    /// Writes routed again (they had been proposed or forwarded before), since the start.
    retried: u64,
    /// The tick since which this node has known no leader (None: it knows one).
    leaderless_since: Option<u64>,
    /// The term this node led in at the last tick (None: it was not the leader).
    led: Option<raft::Term>,
}

impl Requests {
    pub(super) fn new(session: u64, timing: Timing, window: usize) -> Self {
        Requests {
            timing,
            window: window.max(1) as u64,
            session,
            session_known: false,
            next_seq: kv::FIRST_SEQ,
            limbo: BTreeMap::new(),
            writes: BTreeMap::new(),
            queued: VecDeque::new(),
            reads: ReadTable::new(),
            reads_by_index: BTreeSet::new(),
            reads_to_retry: Vec::new(),
            // Read ids travel to the leader (forwarded ReadIndex) and back: start this incarnation's
            // ids at a random point of the id space so a delayed answer meant for an earlier
            // incarnation never matches a read of this one (found by the simulator: a stale read).
            next_read: (session << 32) | 1,
            to_route: BTreeSet::new(),
            last_leader: None,
            retried: 0,
            leaderless_since: None,
            led: None,
        }
    }

    /// The current session id.
    pub(super) fn session(&self) -> u64 {
        self.session
    }

    /// Writes routed again since the start (see [`Requests::route`]).
    pub(super) fn retried(&self) -> u64 {
        self.retried
    }

    /// Number of requests not yet answered.
    pub(super) fn pending(&self) -> usize {
        self.writes.len() + self.queued.len() + self.reads.len()
    }

    /// Writes in flight (with a sequence number) and waiting for room in the window.
    pub(super) fn writes_in_flight(&self) -> (usize, usize) {
        (self.writes.len(), self.queued.len())
    }

    /// Queues a write; it gets a sequence number as soon as the window has room.
    pub(super) fn submit_write(&mut self, request: RequestId, command: Command, now: u64) {
        self.queued.push_back(QueuedWrite { request, command, submitted: now });
        self.admit(now);
    }

    /// Asks the core for a read index for a new read.
    pub(super) fn submit_read(&mut self, request: RequestId, query: Query, now: u64, node: &mut Node) {
        let id = self.next_read;
        self.next_read = self.next_read.wrapping_add(1);
        self.reads.insert(id, PendingRead { request, query, submitted: now, index: None });
        node.read(id);
    }

    /// Hands sequence numbers to queued writes while the window has room (see the module docs).
    fn admit(&mut self, _now: u64) {
        while !self.queued.is_empty() {
            let oldest_allowed = (self.next_seq + 1).saturating_sub(self.window);
            if self.writes.keys().next().is_some_and(|&first| first < oldest_allowed) {
                return; // An unanswered write holds the window: wait for it (or its timeout).
            }
            // Timed-out writes never hold the window shut: forget those it would need.
            while self.limbo.first_key_value().is_some_and(|(&seq, _)| seq < oldest_allowed) {
                self.limbo.pop_first();
            }
            let Some(q) = self.queued.pop_front() else { return };
            self.sequence(q.request, q.command, q.submitted);
        }
    }

    /// Wraps `command` in a proposal of the current session with the next sequence number and
    /// queues it for routing.
    fn sequence(&mut self, request: RequestId, command: Command, submitted: u64) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let ack_below = if self.session_known {
            let pending = self.writes.keys().next().copied().unwrap_or(seq);
            let limbo = self.limbo.keys().next().copied().unwrap_or(seq);
            pending.min(limbo).min(seq)
        } else {
            kv::FIRST_SEQ
        };
        let data = kv::encode_proposal(&Proposal { session: self.session, seq, ack_below, command });
        self.writes.insert(seq, PendingWrite { request, data, submitted, routed: None });
        self.to_route.insert(seq);
    }

    /// Starts a new session (the old one was evicted by the state machine) and re-proposes every
    /// unanswered write under it.
    fn rotate_session(&mut self, now: u64, answers: &mut Vec<(RequestId, Response)>) {
        let mut rng = raft::Rng::new(self.session);
        self.session = rng.next_u64().max(1);
        self.session_known = false;
        self.next_seq = kv::FIRST_SEQ;
        self.limbo.clear();
        self.to_route.clear();
        let mut again = VecDeque::new();
        for (_, w) in std::mem::take(&mut self.writes) {
            match kv::decode_proposal(&w.data) {
                Ok(p) => again.push_back(QueuedWrite {
                    request: w.request,
                    command: p.command,
                    submitted: w.submitted,
                }),
                Err(_) => answers.push((w.request, Err(RequestError::NoLeader))),
            }
        }
        again.extend(std::mem::take(&mut self.queued));
        self.queued = again;
        self.admit(now);
    }

    /// Advances time: fails requests that took too long, marks forwards to retry, asks the core
    /// again for reads whose round failed.
    pub(super) fn tick(&mut self, now: u64, node: &mut Node, answers: &mut Vec<(RequestId, Response)>) {
        let timing = self.timing;
        if node.leader().is_some() {
            self.leaderless_since = None;
        } else if self.leaderless_since.is_none() {
            // Stepped down without a new term (CheckQuorum, or removed from the configuration): no
            // majority has answered this node for an election timeout already.
            let stepped_down = self.led == Some(node.term());
            self.leaderless_since =
                Some(if stepped_down { now.saturating_sub(timing.leaderless) } else { now });
        }
        self.led = (node.role() == raft::Role::Leader).then(|| node.term());
        // A request has waited long enough while leaderless if it was submitted before `give_up`.
        let give_up = self
            .leaderless_since
            .and_then(|since| now.checked_sub(timing.leaderless).filter(|&t| t >= since));
        let hopeless = |submitted: u64| give_up.is_some_and(|t| submitted <= t);
        let mut expired = Vec::new();
        for (&seq, w) in &self.writes {
            if now - w.submitted >= timing.request_timeout || hopeless(w.submitted) {
                expired.push(seq);
            } else if w.routed.is_none_or(|t| now - t >= timing.forward_retry) {
                self.to_route.insert(seq);
            }
        }
        for seq in expired {
            if let Some(w) = self.writes.remove(&seq) {
                self.to_route.remove(&seq);
                let err = if w.routed.is_some() {
                    self.limbo.insert(seq, now + timing.limbo);
                    RequestError::Timeout
                } else {
                    RequestError::NoLeader
                };
                answers.push((w.request, Err(err)));
            }
        }
        self.limbo.retain(|_, forget_at| *forget_at > now);
        // The queue is in submission order: the oldest are at the front.
        while let Some(q) = self.queued.front() {
            let err = if now - q.submitted >= timing.request_timeout {
                RequestError::Overloaded
            } else if hopeless(q.submitted) {
                RequestError::NoLeader
            } else {
                break;
            };
            if let Some(q) = self.queued.pop_front() {
                answers.push((q.request, Err(err)));
            }
        }
        self.admit(now);
        let expired: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, r)| now - r.submitted >= timing.request_timeout || hopeless(r.submitted))
            .map(|(id, _)| id)
            .collect();
        for id in expired {
            if let Some(r) = self.reads.remove(id) {
                if let Some(index) = r.index {
                    self.reads_by_index.remove(&(index, id));
                }
                // A read has no effect: "no leader" (not executed, retry) is true of every read not
                // answered while leaderless, with or without its index.
                let err = if r.index.is_some() && !hopeless(r.submitted) {
                    RequestError::Timeout
                } else {
                    RequestError::NoLeader
                };
                answers.push((r.request, Err(err)));
            }
        }
        for id in std::mem::take(&mut self.reads_to_retry) {
            // Asked again under a new id: an id names one request to the core, ever. A follower's
            // reads of a batch share one ReadIndex request named by the first read's id, so an
            // answer to the failed request, arriving late, must not find a newer group by that
            // name: it would serve reads that arrived after its index was taken.
            // (Only reads without an index fail and come here.)
            if self.reads.get_mut(id).is_none_or(|r| r.index.is_some()) {
                continue;
            }
            let Some(read) = self.reads.remove(id) else { continue };
            let fresh = self.next_read;
            self.next_read = self.next_read.wrapping_add(1);
            self.reads.insert(fresh, read);
            node.read(fresh);
        }
    }

    /// Proposes (leader) or forwards (follower) the writes waiting to be routed; on a leader change,
    /// every unanswered write is routed again (sessions make the duplicates harmless).
    /// A leader appends the proposals as entries stamped with `stamp()` (see [`super::clock`];
    /// taken once, if anything is proposed), in one buffer ([`kv::stamp_entries`]).
    pub(super) fn route(
        &mut self,
        node: &mut Node,
        now: u64,
        outbox: &mut Vec<PeerMessage>,
        stamp: &mut dyn FnMut() -> u64,
    ) {
        let leader = node.leader();
        if leader != self.last_leader {
            self.last_leader = leader;
            if leader.is_some() {
                self.to_route.extend(self.writes.keys().copied());
            }
        }
        let Some(leader) = leader else { return };
        if self.to_route.is_empty() {
            return;
        }
        let me = node.id();
        let to_route = std::mem::take(&mut self.to_route);
        if leader == me {
            self.propose(node, now, &to_route, stamp);
            return;
        }
        let mut forwards = Vec::new();
        let mut forward_bytes = 0usize;
        for seq in to_route {
            let Some(w) = self.writes.get_mut(&seq) else { continue };
            // Keep each Forward message well under the transport's frame limit.
            if forward_bytes + w.data.len() > MAX_FORWARD_BYTES && !forwards.is_empty() {
                let proposals = std::mem::take(&mut forwards);
                outbox.push(PeerMessage::Forward { from: me, to: leader, proposals });
                forward_bytes = 0;
            }
            forward_bytes += w.data.len();
            forwards.push(w.data.clone());
            self.retried += u64::from(w.routed.is_some());
            w.routed = Some(now);
        }
        if !forwards.is_empty() {
            outbox.push(PeerMessage::Forward { from: me, to: leader, proposals: forwards });
        }
    }

    /// On the leader: appends the writes of `to_route` that are still waiting, in the order of
    /// their sequence numbers, as entries stamped together ([`kv::stamp_entries`]).
    fn propose(
        &mut self,
        node: &mut Node,
        now: u64,
        to_route: &BTreeSet<u64>,
        stamp: &mut dyn FnMut() -> u64,
    ) {
        let (Some(&lo), Some(&hi)) = (to_route.first(), to_route.last()) else { return };
        // Usually the new writes: consecutive sequence numbers, every write in `lo..=hi` is one
        // to route, and the writes are found by walking the map, without a lookup each. Otherwise
        // (re-routed writes among them) the walk checks each write against `to_route`.
        let dense = hi - lo == to_route.len() as u64 - 1;
        let wanted = |seq: &u64| dense || to_route.contains(seq);
        let proposals = self.writes.range(lo..=hi).filter(|(seq, _)| wanted(seq)).map(|(_, w)| &w.data[..]);
        if proposals.clone().next().is_none() {
            return; // No stamp taken.
        }
        let mut entries = kv::stamp_entries(proposals, stamp());
        let mut refused = Vec::new();
        for (&seq, w) in self.writes.range_mut(lo..=hi).filter(|(seq, _)| wanted(seq)) {
            // One entry for each of these writes, in this order (none would only mean trying
            // again at the next batch).
            let Some(entry) = entries.next(w.data.len()) else {
                refused.push(seq);
                continue;
            };
            if node.propose(entry).is_err() {
                // A leadership transfer is under way: proposed again at the next batch (or
                // routed to the new leader once it is known).
                refused.push(seq);
                continue;
            }
            self.retried += u64::from(w.routed.is_some());
            w.routed = Some(now);
        }
        self.to_route.extend(refused);
    }

    /// The state machine applied a proposal: answers it if it is one of ours.
    pub(super) fn applied(&mut self, a: Applied, now: u64, answers: &mut Vec<(RequestId, Response)>) {
        if a.session != self.session {
            return;
        }
        if a.duplicate {
            match &a.reply {
                Reply::Error(e) if e == kv::SESSION_EXPIRED_ERR => {
                    if self.writes.contains_key(&a.seq) {
                        self.rotate_session(now, answers);
                    }
                    return;
                }
                Reply::Error(e) if e == kv::SESSION_OVERLOADED_ERR => {
                    // Not executed, and not remembered: this write is still ours to route (the
                    // window makes this unreachable; a retry after the forward delay is right).
                    return;
                }
                _ => {}
            }
        }
        self.session_known = true;
        self.limbo.remove(&a.seq);
        if let Some(w) = self.writes.remove(&a.seq) {
            self.to_route.remove(&a.seq);
            answers.push((w.request, Ok(a.reply)));
            self.admit(now);
        }
    }

    /// After a snapshot install: writes whose entries it covers are answered from the session
    /// table (their entries will never be applied one by one here).
    pub(super) fn answer_from_snapshot(
        &mut self,
        kv: &KvStore,
        now: u64,
        answers: &mut Vec<(RequestId, Response)>,
    ) {
        let session = self.session;
        let covered: Vec<(u64, Reply)> =
            self.writes.keys().filter_map(|&seq| kv.reply_for(session, seq).map(|r| (seq, r))).collect();
        for (seq, reply) in covered {
            self.session_known = true;
            self.limbo.remove(&seq);
            if let Some(w) = self.writes.remove(&seq) {
                self.to_route.remove(&seq);
                answers.push((w.request, Ok(reply)));
            }
        }
        self.limbo.retain(|&seq, _| kv.reply_for(session, seq).is_none());
        self.admit(now);
    }

    /// The core decided a read's fate.
    pub(super) fn read_state(&mut self, rs: ReadState) {
        let Some(r) = self.reads.get_mut(rs.id) else { return };
        match rs.result {
            Ok(index) => {
                r.index = Some(index);
                self.reads_by_index.insert((index, rs.id));
            }
            Err(ReadError::NoLeader | ReadError::LeadershipChanged | ReadError::TimedOut) => {
                self.reads_to_retry.push(rs.id);
            }
        }
    }

    /// Answers every read whose index the state machine has reached.
    pub(super) fn serve_reads(&mut self, kv: &KvStore, answers: &mut Vec<(RequestId, Response)>) {
        let applied = kv.applied_index();
        while let Some(&(index, id)) = self.reads_by_index.first() {
            if index > applied {
                break;
            }
            self.reads_by_index.pop_first();
            if let Some(r) = self.reads.remove(id) {
                answers.push((r.request, Ok(kv.query(&r.query))));
            }
        }
    }
}
