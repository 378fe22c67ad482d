//! The frames on every write's path decoded by hand: the mirror of `append` and of `prost`.
//!
//! Each replicated write crosses the peer links as frames of four kinds: a follower forwards its
//! clients' writes to the leader (`Forward`), the leader sends them to every follower
//! (`AppendEntries`), each follower answers (`AppendEntriesResponse`); heartbeats and their
//! answers come with them while the leader has nothing else to send. Through `prost`, a frame was
//! decoded into the wire structs ([`Envelope`](super::Envelope) > `RaftMessage` > body, `Vec`s
//! grown element by element) and then converted into a [`PeerMessage`] (a second `Vec` for
//! entries): with callgrind, ~1,940 instructions per replicated write over the three servers for
//! AppendEntries, and ~370 on the leader for the answers and forwards. Here those kinds are
//! parsed once, straight into the [`PeerMessage`], with the `Vec` of entries or proposals
//! allocated once at its exact length and each entry's data or proposal a [`Bytes::slice`] of
//! the frame.
//!
//! # Invariants
//! - **Agreement with `prost`.** [`decode_by_hand`] either returns exactly the message that
//!   `prost` decoding plus [`TryFrom<Envelope>`](PeerMessage) returns for the same bytes, or
//!   declines (`None`) and [`super::decode_message`] hands the frame to `prost`, which decides
//!   (the message, or the error: a [`WireError::Decode`](super::WireError) closes the connection,
//!   the others drop the message). So the hand decoder never makes an error of its own, and a
//!   peer cannot tell which decoder read its frame. A property test checks the agreement on
//!   arbitrary envelopes of every kind taken here, written canonically or not, and on arbitrary
//!   mutations of them; the `peer_frames` fuzz target checks it on every frame it reads.
//! - **Accepted shape.** Only what a protobuf encoder writes, fields in tag order, each at most
//!   once (entries and proposals: any number, consecutive):
//!   - the envelope: field 1 (`raft`) or 2 (`forward`) spanning the whole frame;
//!   - `RaftMessage`: `from`, `to`, `term`, then the body field spanning the rest: one of
//!     `append_entries` (`prev_log_index`, `prev_log_term`, `entries`, `leader_commit`; in each
//!     entry `term`, `index`, `data`, `kind`), `append_entries_response` (`success`, `index`,
//!     `conflict_term`, `conflict_index`), `heartbeat` (`leader_commit`, `read_round`),
//!     `heartbeat_response` (`read_round`);
//!   - `Forward`: `from`, `to`, `proposals`.
//!
//!   Scalars may be written even when zero and varints may be longer than needed (as `prost`
//!   accepts both); a `bool` is any varint, true if not 0 (as `prost` reads it). Anything else
//!   declines: another kind, an unknown or repeated field, another order, a key of more than one
//!   byte, a varint of more than 10 bytes or beyond `u64`, a length past its enclosing message, a
//!   node id 0, an entry kind other than 0 or 1. Since every accepted field appears once and in
//!   order, `prost`'s rules for repeated scalars (last wins) and `oneof`s (merge) never come
//!   into play.
//! - **Untrusted input.** Every length is checked against the bytes that remain in its enclosing
//!   message before it is used (a reader sees the frame only up to its message's end); nothing
//!   is allocated from a length field: the entries' or proposals' `Vec` has the number of
//!   elements actually present in the frame (counted in a first pass), and entry data and
//!   proposals are slices of the frame, not copies (which keeps the frame's buffer alive for as
//!   long as one of them lives, as `prost`'s `Bytes` fields do). No indexing can panic.

use bytes::Bytes;
use engine::PeerMessage;
use raft::{Entry, EntryKind, Message, MessageBody};

use super::append::{
    APPEND_COMMIT, APPEND_ENTRY, APPEND_PREV_INDEX, APPEND_PREV_TERM, ENTRY_DATA, ENTRY_INDEX, ENTRY_KIND,
    ENTRY_TERM, ENVELOPE_RAFT, RAFT_APPEND_ENTRIES, RAFT_FROM, RAFT_TERM, RAFT_TO,
};

// Field keys (tag << 3 | wire type, as in `append`) of the other kinds taken here.
const ENVELOPE_FORWARD: u8 = 2 << 3 | 2;
const FORWARD_FROM: u8 = 1 << 3;
const FORWARD_TO: u8 = 2 << 3;
const FORWARD_PROPOSAL: u8 = 3 << 3 | 2;
const RAFT_APPEND_RESPONSE: u8 = 9 << 3 | 2;
const RAFT_HEARTBEAT: u8 = 10 << 3 | 2;
const RAFT_HEARTBEAT_RESPONSE: u8 = 11 << 3 | 2;
const RESPONSE_SUCCESS: u8 = 1 << 3;
const RESPONSE_INDEX: u8 = 2 << 3;
const RESPONSE_CONFLICT_TERM: u8 = 3 << 3;
const RESPONSE_CONFLICT_INDEX: u8 = 4 << 3;
const HEARTBEAT_COMMIT: u8 = 1 << 3;
const HEARTBEAT_READ_ROUND: u8 = 2 << 3;
const HEARTBEAT_RESPONSE_READ_ROUND: u8 = 1 << 3;

/// A position in the frame, within the message being read: `buf` is the frame up to that
/// message's end, so every read is bounded by it.
struct Reader<'a> {
    /// The frame, up to the end of the enclosing message.
    buf: &'a [u8],
    /// The next byte to read (an offset in the frame).
    pos: usize,
}

impl<'a> Reader<'a> {
    /// The message of the frame `buf[..end]` starting at `pos` (`end <= buf.len()`).
    #[inline]
    fn sub(buf: &'a [u8], pos: usize, end: usize) -> Self {
        Reader { buf: buf.get(..end).unwrap_or_default(), pos }
    }

    /// The end of the enclosing message.
    #[inline]
    fn end(&self) -> usize {
        self.buf.len()
    }

    /// Consumes the one-byte key `key` if it is next in the message.
    #[inline]
    fn eat(&mut self, key: u8) -> bool {
        if self.buf.get(self.pos) == Some(&key) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// A varint of at most 10 bytes within the message, as `prost` reads it; `None` where
    /// `prost` fails (too long, beyond `u64`, cut by the message's end).
    #[inline]
    fn varint(&mut self) -> Option<u64> {
        let b = *self.buf.get(self.pos)?;
        if b < 0x80 {
            self.pos += 1;
            return Some(u64::from(b));
        }
        // Two bytes: entry lengths, data lengths, small indexes.
        if let Some(&b1) = self.buf.get(self.pos + 1).filter(|&&b1| b1 < 0x80) {
            self.pos += 2;
            return Some(u64::from(b & 0x7F) | u64::from(b1) << 7);
        }
        self.varint_slow()
    }

    #[inline(never)]
    fn varint_slow(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for i in 0..10 {
            let b = *self.buf.get(self.pos)?;
            self.pos += 1;
            if i == 9 && b > 1 {
                return None; // more than 64 bits (or an 11th byte)
            }
            value |= u64::from(b & 0x7F) << (7 * i);
            if b < 0x80 {
                return Some(value);
            }
        }
        None
    }

    /// The scalar field `key` if it is next (its value), else 0 (absent); `None` to decline.
    #[inline]
    fn uint(&mut self, key: u8) -> Option<u64> {
        if self.eat(key) {
            self.varint()
        } else {
            Some(0)
        }
    }

    /// `Some` if the whole message was read.
    #[inline]
    fn at_end(&self) -> Option<()> {
        (self.pos == self.end()).then_some(())
    }

    /// Skips the consecutive length-delimited fields `key` that come next (checking their
    /// lengths); their number.
    #[inline]
    fn count(&mut self, key: u8) -> Option<usize> {
        let mut count = 0usize;
        while self.eat(key) {
            self.pos = self.len()?;
            count += 1;
        }
        Some(count)
    }

    /// A length prefix: the end of the bytes it announces, which must lie within the message.
    #[inline(always)]
    fn len(&mut self) -> Option<usize> {
        let len = self.varint()?;
        let left = self.end().checked_sub(self.pos)? as u64;
        (len <= left).then(|| self.pos + len as usize)
    }
}

/// The message in `frame` (a frame body), or `None` if the frame is not exactly one of the kinds
/// taken here in the accepted shape (see the module docs); `prost` then decides.
pub(super) fn decode_by_hand(frame: &Bytes) -> Option<PeerMessage> {
    let buf = &frame[..];
    let mut r = Reader { buf, pos: 0 };
    let kind = *buf.first()?;
    r.pos = 1;
    if r.len()? != r.end() {
        return None;
    }
    match kind {
        ENVELOPE_RAFT => raft(r, frame),
        ENVELOPE_FORWARD => forward(r, frame),
        _ => None,
    }
}

/// A `RaftMessage` (the rest of `r`) of one of the kinds taken here.
fn raft(mut r: Reader<'_>, frame: &Bytes) -> Option<PeerMessage> {
    let from = r.uint(RAFT_FROM)?;
    let to = r.uint(RAFT_TO)?;
    let term = r.uint(RAFT_TERM)?;
    if from == 0 || to == 0 {
        return None;
    }
    let key = *r.buf.get(r.pos)?;
    r.pos += 1;
    if r.len()? != r.end() {
        return None;
    }
    let body = match key {
        RAFT_APPEND_ENTRIES => append_entries(r, frame)?,
        RAFT_APPEND_RESPONSE => {
            let success = r.uint(RESPONSE_SUCCESS)? != 0;
            let index = r.uint(RESPONSE_INDEX)?;
            let conflict_term = r.uint(RESPONSE_CONFLICT_TERM)?;
            let conflict_index = r.uint(RESPONSE_CONFLICT_INDEX)?;
            r.at_end()?;
            MessageBody::AppendEntriesResponse { success, index, conflict_term, conflict_index }
        }
        RAFT_HEARTBEAT => {
            let leader_commit = r.uint(HEARTBEAT_COMMIT)?;
            let read_round = r.uint(HEARTBEAT_READ_ROUND)?;
            r.at_end()?;
            MessageBody::Heartbeat { leader_commit, read_round }
        }
        RAFT_HEARTBEAT_RESPONSE => {
            let read_round = r.uint(HEARTBEAT_RESPONSE_READ_ROUND)?;
            r.at_end()?;
            MessageBody::HeartbeatResponse { read_round }
        }
        _ => return None,
    };
    Some(PeerMessage::Raft(Message { from, to, term, body }))
}

/// An `AppendEntries` body (the rest of `r`).
fn append_entries(mut r: Reader<'_>, frame: &Bytes) -> Option<MessageBody> {
    let buf = r.buf;
    let prev_log_index = r.uint(APPEND_PREV_INDEX)?;
    let prev_log_term = r.uint(APPEND_PREV_TERM)?;
    // First pass: count the entries (checking their lengths), so that the `Vec` is allocated
    // once, at the length the frame's own bytes justify.
    let first = r.pos;
    let count = r.count(APPEND_ENTRY)?;
    let entries_end = r.pos;
    let leader_commit = r.uint(APPEND_COMMIT)?;
    r.at_end()?;
    let mut entries = Vec::with_capacity(count);
    let mut r = Reader::sub(buf, first, entries_end);
    while r.eat(APPEND_ENTRY) {
        let end = r.len()?;
        entries.push(entry(Reader::sub(buf, r.pos, end), frame)?);
        r.pos = end;
    }
    Some(MessageBody::AppendEntries { prev_log_index, prev_log_term, entries, leader_commit })
}

/// One `Entry` message (the whole of `e`); its data a slice of `frame`.
#[inline]
fn entry(mut e: Reader<'_>, frame: &Bytes) -> Option<Entry> {
    let term = e.uint(ENTRY_TERM)?;
    let index = e.uint(ENTRY_INDEX)?;
    let data = if e.eat(ENTRY_DATA) {
        let end = e.len()?;
        let start = std::mem::replace(&mut e.pos, end);
        frame.slice(start..end)
    } else {
        Bytes::new()
    };
    // `prost` reads `kind` (a uint32) truncated to 32 bits: only the exact codes are taken here.
    let kind = EntryKind::from_code(e.uint(ENTRY_KIND)?)?;
    e.at_end()?;
    Some(Entry { term, index, kind, data })
}

/// A `Forward` (the rest of `r`); its proposals slices of `frame`.
fn forward(mut r: Reader<'_>, frame: &Bytes) -> Option<PeerMessage> {
    let from = r.uint(FORWARD_FROM)?;
    let to = r.uint(FORWARD_TO)?;
    if from == 0 || to == 0 {
        return None;
    }
    let first = r.pos;
    let count = r.count(FORWARD_PROPOSAL)?;
    r.at_end()?;
    let mut proposals = Vec::with_capacity(count);
    r.pos = first;
    while r.eat(FORWARD_PROPOSAL) {
        let end = r.len()?;
        let start = std::mem::replace(&mut r.pos, end);
        proposals.push(frame.slice(start..end));
    }
    Some(PeerMessage::Forward { from, to, proposals })
}

#[cfg(test)]
mod tests {
    use bytes::BufMut;
    use proptest::prelude::*;

    use super::super::{decode_message, decode_message_with_prost, AppendEntries, Envelope, EnvelopeKind};
    use super::super::{AppendEntriesResponse, Forward, Heartbeat, HeartbeatResponse, RaftBody, RaftMessage};
    use super::*;

    /// How a test frame is written: `pad` extra bytes in every varint (non-minimal, as long as
    /// it stays within 10 bytes), zero scalars written or omitted.
    #[derive(Clone, Copy, Debug)]
    struct Style {
        pad: usize,
        zeros: bool,
    }

    const CANONICAL: Style = Style { pad: 0, zeros: false };

    fn put_varint(v: u64, style: Style, out: &mut Vec<u8>) {
        let start = out.len();
        prost::encoding::encode_varint(v, out);
        let pad = style.pad.min(10 - (out.len() - start));
        if pad > 0 {
            *out.last_mut().unwrap() |= 0x80;
            out.extend(std::iter::repeat_n(0x80, pad - 1));
            out.push(0);
        }
    }

    fn put_uint(key: u8, v: u64, style: Style, out: &mut Vec<u8>) {
        if v != 0 || style.zeros {
            out.push(key);
            put_varint(v, style, out);
        }
    }

    fn put_len(key: u8, body: &[u8], style: Style, out: &mut Vec<u8>) {
        out.push(key);
        put_varint(body.len() as u64, style, out);
        out.extend_from_slice(body);
    }

    /// A protobuf field as the tests write it.
    enum F {
        /// A scalar (omitted when zero, unless the style writes zeros).
        U(u8, u64),
        /// A singular `bytes` field (omitted when empty, unless the style writes zeros).
        B(u8, Vec<u8>),
        /// One element of a repeated `bytes` field (always written).
        R(u8, Vec<u8>),
        /// A message: an element of a repeated message field or a `oneof`'s (always written).
        M(u8, Vec<F>),
    }

    /// `fields` written by hand in `style`, in the order given.
    fn write(fields: &[F], style: Style, out: &mut Vec<u8>) {
        for f in fields {
            match f {
                F::U(key, v) => put_uint(*key, *v, style, out),
                F::B(key, b) if !b.is_empty() || style.zeros => put_len(*key, b, style, out),
                F::B(..) => {}
                F::R(key, b) => put_len(*key, b, style, out),
                F::M(key, body) => {
                    let mut inner = Vec::new();
                    write(body, style, &mut inner);
                    put_len(*key, &inner, style, out);
                }
            }
        }
    }

    /// The fields of an envelope of one of the kinds taken by hand, in tag order.
    fn fields(env: &Envelope) -> Vec<F> {
        use F::*;
        match env.kind.as_ref().expect("a kind") {
            EnvelopeKind::Raft(m) => {
                let body = match m.body.as_ref().expect("a body") {
                    RaftBody::AppendEntries(a) => {
                        let mut f = vec![
                            U(APPEND_PREV_INDEX, a.prev_log_index),
                            U(APPEND_PREV_TERM, a.prev_log_term),
                        ];
                        for e in &a.entries {
                            f.push(M(
                                APPEND_ENTRY,
                                vec![
                                    U(ENTRY_TERM, e.term),
                                    U(ENTRY_INDEX, e.index),
                                    B(ENTRY_DATA, e.data.to_vec()),
                                    U(ENTRY_KIND, u64::from(e.kind)),
                                ],
                            ));
                        }
                        f.push(U(APPEND_COMMIT, a.leader_commit));
                        M(RAFT_APPEND_ENTRIES, f)
                    }
                    RaftBody::AppendEntriesResponse(a) => M(
                        RAFT_APPEND_RESPONSE,
                        vec![
                            U(RESPONSE_SUCCESS, u64::from(a.success)),
                            U(RESPONSE_INDEX, a.index),
                            U(RESPONSE_CONFLICT_TERM, a.conflict_term),
                            U(RESPONSE_CONFLICT_INDEX, a.conflict_index),
                        ],
                    ),
                    RaftBody::Heartbeat(h) => M(
                        RAFT_HEARTBEAT,
                        vec![U(HEARTBEAT_COMMIT, h.leader_commit), U(HEARTBEAT_READ_ROUND, h.read_round)],
                    ),
                    RaftBody::HeartbeatResponse(h) => {
                        M(RAFT_HEARTBEAT_RESPONSE, vec![U(HEARTBEAT_RESPONSE_READ_ROUND, h.read_round)])
                    }
                    other => unreachable!("not a kind taken by hand: {other:?}"),
                };
                vec![M(
                    ENVELOPE_RAFT,
                    vec![U(RAFT_FROM, m.from), U(RAFT_TO, m.to), U(RAFT_TERM, m.term), body],
                )]
            }
            EnvelopeKind::Forward(f) => {
                let mut fields = vec![U(FORWARD_FROM, f.from), U(FORWARD_TO, f.to)];
                fields.extend(f.proposals.iter().map(|p| R(FORWARD_PROPOSAL, p.to_vec())));
                vec![M(ENVELOPE_FORWARD, fields)]
            }
            other => unreachable!("not a kind taken by hand: {other:?}"),
        }
    }

    /// `env` written by hand in `style`, fields in tag order.
    fn encode(env: &Envelope, style: Style) -> Vec<u8> {
        let mut frame = Vec::new();
        write(&fields(env), style, &mut frame);
        frame
    }

    /// What the hand decoder must accept: valid node ids and entry kinds.
    fn acceptable(env: &Envelope) -> bool {
        match env.kind.as_ref() {
            Some(EnvelopeKind::Raft(m)) => {
                let kinds_ok = match &m.body {
                    Some(RaftBody::AppendEntries(a)) => a.entries.iter().all(|e| e.kind <= 1),
                    _ => true,
                };
                m.from != 0 && m.to != 0 && kinds_ok
            }
            Some(EnvelopeKind::Forward(f)) => f.from != 0 && f.to != 0,
            _ => false,
        }
    }

    /// Zero (omitted on the wire), small and any values.
    fn arb_u64() -> impl Strategy<Value = u64> {
        prop_oneof![Just(0u64), 1u64..300, any::<u64>()]
    }

    fn arb_append() -> impl Strategy<Value = RaftBody> {
        let kind = prop_oneof![8 => 0u32..2, 1 => any::<u32>()];
        let entry = (arb_u64(), arb_u64(), proptest::collection::vec(any::<u8>(), 0..150), kind).prop_map(
            |(term, index, data, kind)| super::super::Entry { term, index, data: Bytes::from(data), kind },
        );
        (arb_u64(), arb_u64(), proptest::collection::vec(entry, 0..20), arb_u64()).prop_map(
            |(prev_log_index, prev_log_term, entries, leader_commit)| {
                RaftBody::AppendEntries(AppendEntries {
                    prev_log_index,
                    prev_log_term,
                    entries,
                    leader_commit,
                })
            },
        )
    }

    /// An envelope of any kind taken by hand, with any node ids.
    fn arb_envelope() -> impl Strategy<Value = Envelope> {
        let body = prop_oneof![
            4 => arb_append(),
            2 => (any::<bool>(), arb_u64(), arb_u64(), arb_u64()).prop_map(
                |(success, index, conflict_term, conflict_index)| {
                    RaftBody::AppendEntriesResponse(AppendEntriesResponse {
                        success,
                        index,
                        conflict_term,
                        conflict_index,
                    })
                }
            ),
            1 => (arb_u64(), arb_u64())
                .prop_map(|(leader_commit, read_round)| RaftBody::Heartbeat(Heartbeat { leader_commit, read_round })),
            1 => arb_u64().prop_map(|read_round| RaftBody::HeartbeatResponse(HeartbeatResponse { read_round })),
        ];
        let raft = (arb_u64(), arb_u64(), arb_u64(), body).prop_map(|(from, to, term, body)| {
            EnvelopeKind::Raft(RaftMessage { from, to, term, body: Some(body) })
        });
        let forward = (
            arb_u64(),
            arb_u64(),
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..12),
        )
            .prop_map(|(from, to, proposals)| {
                EnvelopeKind::Forward(Forward {
                    from,
                    to,
                    proposals: proposals.into_iter().map(Bytes::from).collect(),
                })
            });
        prop_oneof![3 => raft, 1 => forward].prop_map(|kind| Envelope { kind: Some(kind) })
    }

    fn arb_style() -> impl Strategy<Value = Style> {
        prop_oneof![
            4 => Just(CANONICAL),
            1 => (0usize..10, any::<bool>()).prop_map(|(pad, zeros)| Style { pad, zeros }),
        ]
    }

    /// A change to a frame's bytes.
    #[derive(Clone, Debug)]
    enum Mutation {
        Set(prop::sample::Index, u8),
        Insert(prop::sample::Index, Vec<u8>),
        Remove(prop::sample::Index, usize),
        Truncate(prop::sample::Index),
    }

    fn arb_mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            4 => (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
            2 => (any::<prop::sample::Index>(), proptest::collection::vec(any::<u8>(), 1..12))
                .prop_map(|(i, b)| Mutation::Insert(i, b)),
            2 => (any::<prop::sample::Index>(), 1usize..12).prop_map(|(i, n)| Mutation::Remove(i, n)),
            1 => any::<prop::sample::Index>().prop_map(Mutation::Truncate),
        ]
    }

    fn mutate(frame: &mut Vec<u8>, m: &Mutation) {
        match m {
            Mutation::Set(i, b) if !frame.is_empty() => {
                let i = i.index(frame.len());
                frame[i] = *b;
            }
            Mutation::Set(..) => {}
            Mutation::Insert(i, bytes) => {
                let i = i.index(frame.len() + 1);
                frame.splice(i..i, bytes.iter().copied());
            }
            Mutation::Remove(i, n) if !frame.is_empty() => {
                let i = i.index(frame.len());
                frame.drain(i..(i + n).min(frame.len()));
            }
            Mutation::Remove(..) => {}
            Mutation::Truncate(i) => frame.truncate(i.index(frame.len() + 1)),
        }
    }

    /// The agreement invariant on one frame: the hand decoder returns what `prost` returns, or
    /// declines; either way [`decode_message`] returns what `prost` returns. Returns whether the
    /// hand decoder accepted.
    fn check(frame: &[u8]) -> Result<bool, TestCaseError> {
        let frame = Bytes::copy_from_slice(frame);
        let prost = decode_message_with_prost(frame.clone());
        let hand = decode_by_hand(&frame);
        if let Some(hand) = &hand {
            prop_assert_eq!(Ok(hand), prost.as_ref(), "the hand decoder disagrees with prost");
            let payloads: Vec<&Bytes> = match hand {
                PeerMessage::Raft(Message { body: MessageBody::AppendEntries { entries, .. }, .. }) => {
                    entries.iter().map(|e| &e.data).collect()
                }
                PeerMessage::Forward { proposals, .. } => proposals.iter().collect(),
                _ => Vec::new(),
            };
            let range = frame.as_ptr_range();
            for p in payloads.into_iter().filter(|p| !p.is_empty()) {
                prop_assert!(range.contains(&p.as_ptr()), "entry data or proposal copied out of the frame");
            }
        }
        prop_assert_eq!(decode_message(frame), prost);
        Ok(hand.is_some())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

        /// Every envelope of the kinds taken by hand (AppendEntries and responses, heartbeats
        /// and responses, forwards), canonical or not: the hand decoder takes it exactly when its
        /// node ids and entry kinds are valid, and agrees with prost.
        #[test]
        fn hot_frames_are_decoded_as_prost_decodes_them(w in arb_envelope(), style in arb_style()) {
            let frame = encode(&w, style);
            if style.pad == 0 && !style.zeros {
                let mut prosts = Vec::new();
                prost::Message::encode(&w, &mut prosts).unwrap();
                prop_assert_eq!(&frame, &prosts, "the test's encoder is prost's");
            }
            let accepted = check(&frame)?;
            prop_assert_eq!(accepted, acceptable(&w));
        }

        /// Arbitrary changes to the bytes of such a frame: the hand decoder agrees with prost or
        /// declines, and `decode_message` gives prost's message or error, never a panic.
        #[test]
        fn mutated_frames_are_decoded_as_prost_decodes_them(
            w in arb_envelope(),
            style in arb_style(),
            mutations in proptest::collection::vec(arb_mutation(), 1..4),
        ) {
            let mut frame = encode(&w, style);
            for m in &mutations {
                mutate(&mut frame, m);
            }
            check(&frame)?;
        }
    }

    /// Builds a frame from raw parts: `raft` is the RaftMessage body, wrapped in the envelope.
    fn envelope(raft: &[u8]) -> Vec<u8> {
        let mut frame = Vec::new();
        put_len(ENVELOPE_RAFT, raft, CANONICAL, &mut frame);
        frame
    }

    /// A RaftMessage body from 1 to 2 in term 3 with `append` as its AppendEntries body.
    fn raft_with(append: &[u8]) -> Vec<u8> {
        let mut raft = vec![RAFT_FROM, 1, RAFT_TO, 2, RAFT_TERM, 3];
        put_len(RAFT_APPEND_ENTRIES, append, CANONICAL, &mut raft);
        raft
    }

    #[test]
    fn canonical_and_padded_varints_are_taken_overlong_ones_are_left_to_prost() {
        // prev_log_index = 5 in 1, 2 and 10 bytes: taken, and equal to prost's reading.
        for varint in
            [&[5u8][..], &[0x85, 0x00], &[0x85, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00]]
        {
            let mut append = vec![APPEND_PREV_INDEX];
            append.extend_from_slice(varint);
            let frame = envelope(&raft_with(&append));
            assert!(check(&frame).unwrap(), "{varint:?}");
        }
        // u64::MAX in 10 bytes: taken. The same with a 10th byte of 2 (beyond 64 bits), or an 11th
        // byte: declined, and prost refuses the frame.
        let max = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01];
        let too_big = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02];
        let too_long = [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00];
        for (varint, ok) in [(&max[..], true), (&too_big[..], false), (&too_long[..], false)] {
            let mut append = vec![APPEND_COMMIT];
            append.extend_from_slice(varint);
            let frame = envelope(&raft_with(&append));
            assert_eq!(check(&frame).unwrap(), ok, "{varint:?}");
            let prost = decode_message_with_prost(Bytes::from(frame));
            assert_eq!(prost.is_ok(), ok, "{prost:?}");
        }
    }

    #[test]
    fn other_shapes_are_left_to_prost() {
        let entry = [ENTRY_TERM, 3, ENTRY_INDEX, 7, ENTRY_DATA, 2, b'h', b'i'];
        let mut one = Vec::new();
        put_len(APPEND_ENTRY, &entry, CANONICAL, &mut one);
        assert!(check(&envelope(&raft_with(&one))).unwrap(), "the plain shape is taken");
        let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
        // An unknown field in each message (prost skips it).
        let mut unknown_in_entry = entry.to_vec();
        unknown_in_entry.extend_from_slice(&[15 << 3, 1]);
        let mut e = Vec::new();
        put_len(APPEND_ENTRY, &unknown_in_entry, CANONICAL, &mut e);
        cases.push(("unknown field in Entry", envelope(&raft_with(&e))));
        let mut append = one.clone();
        append.extend_from_slice(&[9 << 3, 1]);
        cases.push(("unknown field in AppendEntries", envelope(&raft_with(&append))));
        let mut raft = raft_with(&one);
        raft.extend_from_slice(&[15 << 3 | 2, 0]);
        cases.push(("unknown field in RaftMessage", envelope(&raft)));
        let mut frame = envelope(&raft_with(&one));
        frame.extend_from_slice(&[15 << 3 | 2, 1, 0]);
        cases.push(("unknown field in Envelope", frame));
        // Out of order or repeated fields (prost: last wins).
        let mut raft = vec![RAFT_TO, 2, RAFT_FROM, 1];
        put_len(RAFT_APPEND_ENTRIES, &one, CANONICAL, &mut raft);
        cases.push(("to before from", envelope(&raft)));
        let mut append = one.clone();
        append.extend_from_slice(&[APPEND_COMMIT, 4, APPEND_COMMIT, 5]);
        cases.push(("leader_commit twice", envelope(&raft_with(&append))));
        let mut append = vec![APPEND_COMMIT, 4];
        append.extend_from_slice(&one);
        cases.push(("an entry after leader_commit", envelope(&raft_with(&append))));
        // A key written in two bytes (non-minimal): prost takes it.
        let mut raft = vec![RAFT_FROM | 0x80, 0, 1, RAFT_TO, 2];
        put_len(RAFT_APPEND_ENTRIES, &one, CANONICAL, &mut raft);
        cases.push(("two-byte key", envelope(&raft)));
        // Invalid for PeerMessage: node id 0, unknown entry kind, kind 2^32 (prost truncates to 0).
        let mut raft = vec![RAFT_TO, 2];
        put_len(RAFT_APPEND_ENTRIES, &one, CANONICAL, &mut raft);
        cases.push(("no from", envelope(&raft)));
        for kind in [&[2u8][..], &[0x80, 0x80, 0x80, 0x80, 0x10]] {
            let mut bad = entry.to_vec();
            bad.push(ENTRY_KIND);
            bad.extend_from_slice(kind);
            let mut e = Vec::new();
            put_len(APPEND_ENTRY, &bad, CANONICAL, &mut e);
            cases.push(("entry kind", envelope(&raft_with(&e))));
        }
        // Lengths past the enclosing message, and other messages.
        let mut frame = envelope(&raft_with(&one));
        frame.pop();
        cases.push(("truncated", frame));
        cases.push(("empty", Vec::new()));
        for (what, key) in [("PreVote", 4 << 3 | 2), ("ReadIndex", 12 << 3 | 2), ("TimeoutNow", 14 << 3 | 2)]
        {
            let mut raft = vec![RAFT_FROM, 1, RAFT_TO, 2];
            put_len(key, &[8, 1], CANONICAL, &mut raft);
            cases.push((what, envelope(&raft)));
        }
        let mut snapshot_ack = Vec::new();
        put_len(4 << 3 | 2, &[8, 1, 16, 2, 48, 1], CANONICAL, &mut snapshot_ack);
        cases.push(("SnapshotAck", snapshot_ack));
        for (what, frame) in cases {
            assert!(!check(&frame).unwrap(), "{what}: declined");
        }
    }

    #[test]
    fn responses_heartbeats_and_forwards_in_other_shapes_are_left_to_prost() {
        let response = |body: &[u8]| {
            let mut raft = vec![RAFT_FROM, 2, RAFT_TO, 1, RAFT_TERM, 3];
            put_len(RAFT_APPEND_RESPONSE, body, CANONICAL, &mut raft);
            envelope(&raft)
        };
        let forward = |body: &[u8]| {
            let mut frame = Vec::new();
            put_len(ENVELOPE_FORWARD, body, CANONICAL, &mut frame);
            frame
        };
        // Taken: the plain shapes, a `success` of 2 (true, as prost reads a bool), an empty body,
        // empty proposals.
        for frame in [
            response(&[RESPONSE_SUCCESS, 1, RESPONSE_INDEX, 9]),
            response(&[RESPONSE_SUCCESS, 2, RESPONSE_INDEX, 9]),
            response(&[]),
            forward(&[FORWARD_FROM, 2, FORWARD_TO, 1, FORWARD_PROPOSAL, 1, b'p', FORWARD_PROPOSAL, 0]),
            forward(&[FORWARD_FROM, 2, FORWARD_TO, 1]),
        ] {
            assert!(check(&frame).unwrap(), "{frame:?}: taken");
        }
        let mut heartbeat = vec![RAFT_FROM, 2, RAFT_TO, 1];
        put_len(RAFT_HEARTBEAT, &[HEARTBEAT_COMMIT, 5, HEARTBEAT_READ_ROUND, 6], CANONICAL, &mut heartbeat);
        assert!(check(&envelope(&heartbeat)).unwrap());
        let mut answer = vec![RAFT_FROM, 2, RAFT_TO, 1];
        put_len(RAFT_HEARTBEAT_RESPONSE, &[HEARTBEAT_RESPONSE_READ_ROUND, 6], CANONICAL, &mut answer);
        assert!(check(&envelope(&answer)).unwrap());
        // Declined: fields out of order or repeated, unknown fields, a missing node id, a field
        // after the proposals, a truncated proposal.
        for (what, frame) in [
            ("index before success", response(&[RESPONSE_INDEX, 9, RESPONSE_SUCCESS, 1])),
            ("index twice", response(&[RESPONSE_INDEX, 9, RESPONSE_INDEX, 8])),
            ("unknown field in a response", response(&[RESPONSE_INDEX, 9, 7 << 3, 1])),
            ("no to", forward(&[FORWARD_FROM, 2, FORWARD_PROPOSAL, 1, b'p'])),
            ("from after a proposal", forward(&[FORWARD_TO, 1, FORWARD_PROPOSAL, 0, FORWARD_FROM, 2])),
            ("to before from", forward(&[FORWARD_TO, 1, FORWARD_FROM, 2])),
            ("truncated proposal", forward(&[FORWARD_FROM, 2, FORWARD_TO, 1, FORWARD_PROPOSAL, 2, b'p'])),
        ] {
            assert!(!check(&frame).unwrap(), "{what}: declined");
        }
    }

    #[test]
    fn a_length_field_allocates_nothing_beyond_the_frame() {
        // An entry announcing 2^62 bytes of data in a 20-byte frame: declined, without
        // allocating, and prost refuses the frame.
        let mut entry = vec![ENTRY_DATA];
        put_varint(1 << 62, CANONICAL, &mut entry);
        let mut append = vec![APPEND_ENTRY];
        put_varint(entry.len() as u64, CANONICAL, &mut append);
        append.extend_from_slice(&entry);
        let frame = envelope(&raft_with(&append));
        assert!(!check(&frame).unwrap());
        assert!(decode_message(Bytes::from(frame)).is_err());
        // Many empty entries: one `Vec` of exactly their number.
        let mut append = Vec::new();
        for _ in 0..1000 {
            append.put_slice(&[APPEND_ENTRY, 0]);
        }
        let frame = Bytes::from(envelope(&raft_with(&append)));
        let Some(PeerMessage::Raft(Message { body: MessageBody::AppendEntries { entries, .. }, .. })) =
            decode_by_hand(&frame)
        else {
            panic!("not taken");
        };
        assert_eq!((entries.len(), entries.capacity()), (1000, 1000));
        assert!(entries.iter().all(|e| e.term == 0 && e.index == 0 && e.data.is_empty()));
    }
}
