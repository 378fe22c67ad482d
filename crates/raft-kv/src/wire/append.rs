//! AppendEntries frames encoded by hand, and the encoded entries shared between the followers of
//! one send.
//!
//! A leader's hot path sends the same new entries to every follower in one
//! [`Transport::send`](crate::transport::Transport::send). Going through `prost`, each copy of the
//! message was encoded from scratch, and `prost` computes a nested message's length once per level
//! it is nested in (Envelope > RaftMessage > AppendEntries > Entry: each entry's length four times).
//! With callgrind, encoding was ~10 % of the leader's instructions under 64-client writes. Here the
//! entries are encoded once per send (the `repeated Entry entries = 3` field's bytes, kept in an
//! [`EntriesCache`]) and the three enclosing headers are written around them.
//!
//! # Invariants
//! - The bytes are exactly what `prost` writes for the same [`Envelope`](super::Envelope) (fields
//!   in tag order, zero scalars and empty `bytes` omitted, the message of a `oneof` always
//!   written): a test compares the two on arbitrary messages, so a peer cannot tell them apart.
//! - A cached encoding is reused only for entries that are the *same values*: equal term, index and
//!   kind, and data that is the same `Bytes` (same pointer and length). The cache holds clones of
//!   those `Bytes`, so their memory cannot be freed and reused for other data while it is cached.
//!   Nothing about the Raft log is assumed.

use bytes::{BufMut, Bytes, BytesMut};
use prost::encoding::{encode_varint, encoded_len_varint};
use raft::Entry;

use super::{WireError, FRAME_HEADER_LEN};

/// Field keys (tag << 3 | wire type): 0 = varint, 2 = length-delimited. Shared with `decode`.
pub(super) const ENVELOPE_RAFT: u8 = 1 << 3 | 2;
pub(super) const RAFT_FROM: u8 = 1 << 3;
pub(super) const RAFT_TO: u8 = 2 << 3;
pub(super) const RAFT_TERM: u8 = 3 << 3;
pub(super) const RAFT_APPEND_ENTRIES: u8 = 8 << 3 | 2;
pub(super) const APPEND_PREV_INDEX: u8 = 1 << 3;
pub(super) const APPEND_PREV_TERM: u8 = 2 << 3;
pub(super) const APPEND_ENTRY: u8 = 3 << 3 | 2;
pub(super) const APPEND_COMMIT: u8 = 4 << 3;
pub(super) const ENTRY_TERM: u8 = 1 << 3;
pub(super) const ENTRY_INDEX: u8 = 2 << 3;
pub(super) const ENTRY_DATA: u8 = 3 << 3 | 2;
pub(super) const ENTRY_KIND: u8 = 4 << 3;

/// The encoded `entries` field of the last AppendEntries encoded, and the entries it encodes.
#[derive(Default)]
pub struct EntriesCache {
    /// The entries (clones: their data is kept alive, see the module docs).
    entries: Vec<Entry>,
    /// Their encoding as repeated field 3 of `AppendEntries`.
    encoded: Bytes,
}

impl EntriesCache {
    /// The encoding of `entries`, from the cache when it holds the same entries.
    fn encode(&mut self, entries: &[Entry]) -> Bytes {
        if !(self.entries.len() == entries.len() && self.entries.iter().zip(entries).all(|(a, b)| same(a, b)))
        {
            self.encoded = encode_entries(entries);
            self.entries = entries.to_vec();
        }
        self.encoded.clone()
    }
}

/// The same entry value: equal fields, data the very same bytes.
fn same(a: &Entry, b: &Entry) -> bool {
    a.term == b.term
        && a.index == b.index
        && a.kind == b.kind
        && a.data.len() == b.data.len()
        && a.data.as_ptr() == b.data.as_ptr()
}

/// Length of a varint field with its one-byte key, 0 if the value is 0 (omitted).
fn uint_len(v: u64) -> usize {
    if v == 0 {
        0
    } else {
        1 + encoded_len_varint(v)
    }
}

fn put_uint(key: u8, v: u64, dst: &mut impl BufMut) {
    if v != 0 {
        dst.put_u8(key);
        encode_varint(v, dst);
    }
}

/// Length of an `Entry` message's body.
fn entry_len(e: &Entry) -> usize {
    let data = if e.data.is_empty() { 0 } else { 1 + encoded_len_varint(e.data.len() as u64) + e.data.len() };
    uint_len(e.term) + uint_len(e.index) + data + uint_len(u64::from(e.kind.code()))
}

/// `entries` as repeated field 3 of `AppendEntries`.
fn encode_entries(entries: &[Entry]) -> Bytes {
    let lens: Vec<usize> = entries.iter().map(entry_len).collect();
    let total: usize = lens.iter().map(|&n| 1 + encoded_len_varint(n as u64) + n).sum();
    let mut out = BytesMut::with_capacity(total);
    for (e, &len) in entries.iter().zip(&lens) {
        out.put_u8(APPEND_ENTRY);
        encode_varint(len as u64, &mut out);
        put_uint(ENTRY_TERM, e.term, &mut out);
        put_uint(ENTRY_INDEX, e.index, &mut out);
        if !e.data.is_empty() {
            out.put_u8(ENTRY_DATA);
            encode_varint(e.data.len() as u64, &mut out);
            out.put_slice(&e.data);
        }
        put_uint(ENTRY_KIND, u64::from(e.kind.code()), &mut out);
    }
    out.freeze()
}

/// The fields of one AppendEntries message (a [`raft::Message`] with that body).
pub struct Append<'a> {
    pub from: u64,
    pub to: u64,
    pub term: u64,
    pub prev_log_index: u64,
    pub prev_log_term: u64,
    pub entries: &'a [Entry],
    pub leader_commit: u64,
}

/// Appends one frame holding `m` to `dst`, as [`super::encode_message`] would, reusing `cache`'s
/// encoding of the entries when they are the same.
pub fn encode_append(
    m: &Append<'_>,
    cache: &mut EntriesCache,
    max_frame: usize,
    dst: &mut BytesMut,
) -> Result<(), WireError> {
    let entries = cache.encode(m.entries);
    let append_len =
        uint_len(m.prev_log_index) + uint_len(m.prev_log_term) + entries.len() + uint_len(m.leader_commit);
    let raft_len = uint_len(m.from)
        + uint_len(m.to)
        + uint_len(m.term)
        + 1
        + encoded_len_varint(append_len as u64)
        + append_len;
    let len = 1 + encoded_len_varint(raft_len as u64) + raft_len;
    let header = u32::try_from(len).ok().filter(|_| len <= max_frame);
    let Some(header) = header else {
        return Err(WireError::FrameTooLarge { len: len as u64, max: max_frame });
    };
    dst.reserve(FRAME_HEADER_LEN + len);
    dst.put_u32(header);
    dst.put_u8(ENVELOPE_RAFT);
    encode_varint(raft_len as u64, dst);
    put_uint(RAFT_FROM, m.from, dst);
    put_uint(RAFT_TO, m.to, dst);
    put_uint(RAFT_TERM, m.term, dst);
    dst.put_u8(RAFT_APPEND_ENTRIES);
    encode_varint(append_len as u64, dst);
    put_uint(APPEND_PREV_INDEX, m.prev_log_index, dst);
    put_uint(APPEND_PREV_TERM, m.prev_log_term, dst);
    dst.put_slice(&entries);
    put_uint(APPEND_COMMIT, m.leader_commit, dst);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_is_reused_only_for_the_same_entry_values() {
        let data = Bytes::from_static(b"set k v");
        let a = vec![Entry::new(2, 7, data.clone()), Entry::new(2, 8, Bytes::new())];
        let mut cache = EntriesCache::default();
        let first = cache.encode(&a);
        let again = cache.encode(&a.clone());
        assert_eq!(first.as_ptr(), again.as_ptr(), "same values: the cached bytes");
        // Equal content in another buffer: encoded again (identity is by pointer), same bytes.
        let copy = vec![Entry::new(2, 7, Bytes::copy_from_slice(b"set k v")), Entry::new(2, 8, Bytes::new())];
        let other = cache.encode(&copy);
        assert_ne!(first.as_ptr(), other.as_ptr());
        assert_eq!(first, other);
        // Another term or index or one entry fewer: encoded again, and differently.
        for changed in [
            vec![Entry::new(3, 7, data.clone()), Entry::new(2, 8, Bytes::new())],
            vec![Entry::new(2, 9, data.clone()), Entry::new(2, 8, Bytes::new())],
            vec![Entry::new(2, 7, data.clone())],
        ] {
            let mut cache = EntriesCache::default();
            let before = cache.encode(&a);
            assert_ne!(cache.encode(&changed), before);
        }
    }
}
