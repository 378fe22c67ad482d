//! AppendEntries frames decoded by hand on the followers' side: the mirror of `append`.
//!
//! A follower receives one AppendEntries frame per leader send, each carrying the new entries.
//! Through `prost`, a frame was decoded into the wire structs ([`Envelope`](super::Envelope) >
//! `RaftMessage` > `AppendEntries` > `Entry`, a `Vec` grown entry by entry) and then converted into
//! a [`raft::Message`] (a second `Vec`): with callgrind, ~1,940 instructions per replicated write
//! over the three servers. Here the frame is parsed once, straight into the [`PeerMessage`], with
//! the entries' `Vec` allocated once at its exact length and each entry's data a
//! [`Bytes::slice`] of the frame.
//!
//! # Invariants
//! - **Agreement with `prost`.** [`decode_append`] either returns exactly the message that
//!   `prost` decoding plus [`TryFrom<Envelope>`](PeerMessage) returns for the same bytes, or
//!   declines (`None`) and [`super::decode_message`] hands the frame to `prost`, which decides
//!   (the message, or the error: a [`WireError::Decode`](super::WireError) closes the connection,
//!   the others drop the message). So the hand decoder never makes an error of its own, and a
//!   peer cannot tell which decoder read its frame. A property test checks the agreement on
//!   arbitrary envelopes, written canonically or not, and on arbitrary mutations of them.
//! - **Accepted shape.** Only what a protobuf encoder writes for an AppendEntries, fields in tag
//!   order: the envelope's field 1 spanning the whole frame; in it `from`, `to`, `term` (each
//!   optional, at most once, in that order) and the `append_entries` field spanning the rest; in
//!   that `prev_log_index`, `prev_log_term`, any number of `entries`, `leader_commit`; in each
//!   entry `term`, `index`, `data`, `kind`. Scalars may be written even when zero and varints
//!   may be longer than needed (as `prost` accepts both). Anything else declines: an unknown or
//!   repeated field, another order, a key of more than one byte, a varint of more than 10 bytes
//!   or beyond `u64`, a length past its enclosing message, a node id 0, an entry kind other
//!   than 0 or 1. Since every accepted field appears once and in order, `prost`'s rules for
//!   repeated scalars (last wins) and `oneof`s (merge) never come into play.
//! - **Untrusted input.** Every length is checked against the bytes that remain in its enclosing
//!   message before it is used (a reader sees the frame only up to its message's end); nothing
//!   is allocated from a length field: the entries' `Vec` has the number of entries actually
//!   present in the frame (counted in a first pass), and
//!   entry data are slices of the frame, not copies (which keeps the frame's buffer alive for
//!   as long as an entry lives, as `prost`'s `Bytes` fields do). No indexing can panic.

use bytes::Bytes;
use engine::PeerMessage;
use raft::{Entry, EntryKind, Message, MessageBody};

use super::append::{
    APPEND_COMMIT, APPEND_ENTRY, APPEND_PREV_INDEX, APPEND_PREV_TERM, ENTRY_DATA, ENTRY_INDEX, ENTRY_KIND,
    ENTRY_TERM, ENVELOPE_RAFT, RAFT_APPEND_ENTRIES, RAFT_FROM, RAFT_TERM, RAFT_TO,
};

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

    /// A length prefix: the end of the bytes it announces, which must lie within the message.
    #[inline(always)]
    fn len(&mut self) -> Option<usize> {
        let len = self.varint()?;
        let left = self.end().checked_sub(self.pos)? as u64;
        (len <= left).then(|| self.pos + len as usize)
    }
}

/// The AppendEntries message in `frame` (a frame body), or `None` if the frame is not exactly an
/// AppendEntries in the accepted shape (see the module docs); `prost` then decides.
pub(super) fn decode_append(frame: &Bytes) -> Option<PeerMessage> {
    let buf = &frame[..];
    let mut r = Reader { buf, pos: 0 };
    if !r.eat(ENVELOPE_RAFT) || r.len()? != r.end() {
        return None;
    }
    let from = r.uint(RAFT_FROM)?;
    let to = r.uint(RAFT_TO)?;
    let term = r.uint(RAFT_TERM)?;
    if from == 0 || to == 0 || !r.eat(RAFT_APPEND_ENTRIES) || r.len()? != r.end() {
        return None;
    }
    let prev_log_index = r.uint(APPEND_PREV_INDEX)?;
    let prev_log_term = r.uint(APPEND_PREV_TERM)?;
    // First pass: count the entries (checking their lengths), so that the `Vec` is allocated
    // once, at the length the frame's own bytes justify.
    let first = r.pos;
    let mut count = 0usize;
    while r.eat(APPEND_ENTRY) {
        r.pos = r.len()?;
        count += 1;
    }
    let entries_end = r.pos;
    let leader_commit = r.uint(APPEND_COMMIT)?;
    if r.pos != r.end() {
        return None;
    }
    let mut entries = Vec::with_capacity(count);
    let mut r = Reader::sub(buf, first, entries_end);
    while r.eat(APPEND_ENTRY) {
        let end = r.len()?;
        entries.push(entry(Reader::sub(buf, r.pos, end), frame)?);
        r.pos = end;
    }
    let body = MessageBody::AppendEntries { prev_log_index, prev_log_term, entries, leader_commit };
    Some(PeerMessage::Raft(Message { from, to, term, body }))
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
    (e.pos == e.end()).then_some(Entry { term, index, kind, data })
}

#[cfg(test)]
mod tests {
    use bytes::BufMut;
    use proptest::prelude::*;

    use super::super::{decode_message, decode_message_with_prost, AppendEntries, Envelope, EnvelopeKind};
    use super::super::{RaftBody, RaftMessage};
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

    /// `a` written by hand in `style`, fields in tag order.
    fn encode(a: &Wire, style: Style) -> Vec<u8> {
        let mut append = Vec::new();
        put_uint(APPEND_PREV_INDEX, a.append.prev_log_index, style, &mut append);
        put_uint(APPEND_PREV_TERM, a.append.prev_log_term, style, &mut append);
        for e in &a.append.entries {
            let mut entry = Vec::new();
            put_uint(ENTRY_TERM, e.term, style, &mut entry);
            put_uint(ENTRY_INDEX, e.index, style, &mut entry);
            if !e.data.is_empty() || style.zeros {
                put_len(ENTRY_DATA, &e.data, style, &mut entry);
            }
            put_uint(ENTRY_KIND, u64::from(e.kind), style, &mut entry);
            put_len(APPEND_ENTRY, &entry, style, &mut append);
        }
        put_uint(APPEND_COMMIT, a.append.leader_commit, style, &mut append);
        let mut raft = Vec::new();
        put_uint(RAFT_FROM, a.from, style, &mut raft);
        put_uint(RAFT_TO, a.to, style, &mut raft);
        put_uint(RAFT_TERM, a.term, style, &mut raft);
        put_len(RAFT_APPEND_ENTRIES, &append, style, &mut raft);
        let mut frame = Vec::new();
        put_len(ENVELOPE_RAFT, &raft, style, &mut frame);
        frame
    }

    /// An AppendEntries as the wire structs hold it (any node ids, any kind).
    #[derive(Clone, Debug)]
    struct Wire {
        from: u64,
        to: u64,
        term: u64,
        append: AppendEntries,
    }

    impl Wire {
        fn envelope(&self) -> Envelope {
            let raft = RaftMessage {
                from: self.from,
                to: self.to,
                term: self.term,
                body: Some(RaftBody::AppendEntries(self.append.clone())),
            };
            Envelope { kind: Some(EnvelopeKind::Raft(raft)) }
        }

        /// What the hand decoder must accept: valid node ids and entry kinds.
        fn acceptable(&self) -> bool {
            self.from != 0 && self.to != 0 && self.append.entries.iter().all(|e| e.kind <= 1)
        }
    }

    /// Zero (omitted on the wire), small and any values.
    fn arb_u64() -> impl Strategy<Value = u64> {
        prop_oneof![Just(0u64), 1u64..300, any::<u64>()]
    }

    fn arb_wire() -> impl Strategy<Value = Wire> {
        let kind = prop_oneof![8 => 0u32..2, 1 => any::<u32>()];
        let entry = (arb_u64(), arb_u64(), proptest::collection::vec(any::<u8>(), 0..150), kind).prop_map(
            |(term, index, data, kind)| super::super::Entry { term, index, data: Bytes::from(data), kind },
        );
        (
            (arb_u64(), arb_u64(), arb_u64()),
            (arb_u64(), arb_u64(), proptest::collection::vec(entry, 0..20), arb_u64()),
        )
            .prop_map(
                |((from, to, term), (prev_log_index, prev_log_term, entries, leader_commit))| Wire {
                    from,
                    to,
                    term,
                    append: AppendEntries { prev_log_index, prev_log_term, entries, leader_commit },
                },
            )
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
        let hand = decode_append(&frame);
        if let Some(hand) = &hand {
            prop_assert_eq!(Ok(hand), prost.as_ref(), "the hand decoder disagrees with prost");
            let PeerMessage::Raft(Message { body: MessageBody::AppendEntries { entries, .. }, .. }) = hand
            else {
                unreachable!("only AppendEntries are decoded by hand");
            };
            let range = frame.as_ptr_range();
            for e in entries.iter().filter(|e| !e.data.is_empty()) {
                prop_assert!(range.contains(&e.data.as_ptr()), "entry data copied out of the frame");
            }
        }
        prop_assert_eq!(decode_message(frame), prost);
        Ok(hand.is_some())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

        /// Every AppendEntries envelope, canonical or not: the hand decoder takes it exactly when
        /// its node ids and entry kinds are valid, and agrees with prost.
        #[test]
        fn append_entries_are_decoded_as_prost_decodes_them(w in arb_wire(), style in arb_style()) {
            let frame = encode(&w, style);
            if style.pad == 0 && !style.zeros {
                let mut prosts = Vec::new();
                prost::Message::encode(&w.envelope(), &mut prosts).unwrap();
                prop_assert_eq!(&frame, &prosts, "the test's encoder is prost's");
            }
            let accepted = check(&frame)?;
            prop_assert_eq!(accepted, w.acceptable());
        }

        /// Arbitrary changes to the bytes of an AppendEntries frame: the hand decoder agrees with
        /// prost or declines, and `decode_message` gives prost's message or error, never a panic.
        #[test]
        fn mutated_frames_are_decoded_as_prost_decodes_them(
            w in arb_wire(),
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
        let mut raft = vec![RAFT_FROM, 1, RAFT_TO, 2];
        put_len(9 << 3 | 2, &[8, 1], CANONICAL, &mut raft);
        cases.push(("AppendEntriesResponse", envelope(&raft)));
        for (what, frame) in cases {
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
            decode_append(&frame)
        else {
            panic!("not taken");
        };
        assert_eq!((entries.len(), entries.capacity()), (1000, 1000));
        assert!(entries.iter().all(|e| e.term == 0 && e.index == 0 && e.data.is_empty()));
    }
}
