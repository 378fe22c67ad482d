//! The primitives of the binary encodings: LEB128 varints, zigzag, length-prefixed byte strings,
//! the bounds-checked [`Reader`] every decoder uses, and the encoding of [`Reply`] values (inside
//! snapshots and cached session replies).
//!
//! Invariants: a [`Reader`] method either consumes exactly what it returns or fails with the
//! offset of the problem, and never panics; varints are canonical (no overlong encodings, nothing
//! beyond 64 bits), so a decoded value re-encodes to the same bytes; a count is checked against
//! the remaining input before anything is allocated for it.

use bytes::{BufMut, Bytes, BytesMut};

use super::DecodeError;
use crate::kv::command::Reply;

pub(super) const REPLY_OK: u8 = 0;
pub(super) const REPLY_NIL: u8 = 1;
pub(super) const REPLY_BULK: u8 = 2;
pub(super) const REPLY_INT: u8 = 3;
pub(super) const REPLY_ARRAY: u8 = 4;
pub(super) const REPLY_ERROR: u8 = 5;
pub(super) const REPLY_STATUS: u8 = 6;

/// Deepest nesting of [`Reply::Array`] accepted by the decoder (a script's reply may nest; see
/// [`super::script`], which stays below it; the bound protects the stack against hostile input).
pub(super) const MAX_REPLY_DEPTH: usize = 32;

/// Appends a reply (snapshot encoding; see the tag constants).
pub(crate) fn put_reply(buf: &mut BytesMut, reply: &Reply) {
    match reply {
        Reply::Ok => buf.put_u8(REPLY_OK),
        Reply::Status(text) => {
            buf.put_u8(REPLY_STATUS);
            put_bytes(buf, text.as_bytes());
        }
        Reply::Nil => buf.put_u8(REPLY_NIL),
        Reply::Bulk(b) => {
            buf.put_u8(REPLY_BULK);
            put_bytes(buf, b);
        }
        Reply::Int(i) => {
            buf.put_u8(REPLY_INT);
            put_varint(buf, zigzag(*i));
        }
        Reply::Array(items) => {
            buf.put_u8(REPLY_ARRAY);
            put_varint(buf, items.len() as u64);
            for item in items {
                put_reply(buf, item);
            }
        }
        Reply::Error(text) => {
            buf.put_u8(REPLY_ERROR);
            put_bytes(buf, text.as_bytes());
        }
    }
}

/// Reads a reply written by [`put_reply`].
pub(crate) fn read_reply(r: &mut Reader<'_>) -> Result<Reply, DecodeError> {
    read_reply_at_depth(r, 0)
}

fn read_reply_at_depth(r: &mut Reader<'_>, depth: usize) -> Result<Reply, DecodeError> {
    let at = r.offset();
    Ok(match r.u8()? {
        REPLY_OK => Reply::Ok,
        REPLY_NIL => Reply::Nil,
        REPLY_BULK => Reply::Bulk(r.bytes()?),
        REPLY_INT => Reply::Int(unzigzag(r.varint()?)),
        REPLY_ARRAY => {
            if depth >= MAX_REPLY_DEPTH {
                return Err(DecodeError { offset: at, reason: "reply arrays nested too deeply" });
            }
            let n = r.count(1)?;
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                items.push(read_reply_at_depth(r, depth + 1)?);
            }
            Reply::Array(items)
        }
        tag @ (REPLY_ERROR | REPLY_STATUS) => {
            let text = r.bytes()?;
            match String::from_utf8(text.to_vec()) {
                Ok(s) if tag == REPLY_ERROR => Reply::Error(s),
                Ok(s) => Reply::Status(s),
                Err(_) => return Err(DecodeError { offset: at, reason: "error reply is not UTF-8" }),
            }
        }
        _ => return Err(DecodeError { offset: at, reason: "unknown reply tag" }),
    })
}

/// Appends `v` as an unsigned LEB128 varint (1 to 10 bytes).
pub(crate) fn put_varint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// Appends a length-prefixed byte string.
pub(crate) fn put_bytes(buf: &mut BytesMut, b: &[u8]) {
    put_varint(buf, b.len() as u64);
    buf.put_slice(b);
}

/// Maps signed to unsigned so that small magnitudes encode in few bytes.
pub(super) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Inverse of [`zigzag`].
pub(super) fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// A bounds-checked cursor over an input slice. Every method either consumes exactly what it
/// returns or fails with the offset of the problem; none panics.
pub(crate) struct Reader<'a> {
    /// The whole input.
    buf: &'a [u8],
    /// Bytes consumed so far.
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Current offset in the input.
    pub fn offset(&self) -> usize {
        self.pos
    }

    /// Number of bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn err(&self, reason: &'static str) -> DecodeError {
        DecodeError { offset: self.pos, reason }
    }

    /// Consumes `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(self.err("truncated input"));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    /// Reads a little-endian u64.
    pub fn u64_le(&mut self) -> Result<u64, DecodeError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }

    /// Reads a canonical LEB128 varint (no overlong encodings, no bits beyond 64).
    pub fn varint(&mut self) -> Result<u64, DecodeError> {
        let start = self.pos;
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.u8()?;
            if i == 9 && b > 1 {
                return Err(DecodeError { offset: start, reason: "varint overflows 64 bits" });
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                if b == 0 && i > 0 {
                    return Err(DecodeError { offset: start, reason: "overlong varint" });
                }
                return Ok(v);
            }
        }
        Err(DecodeError { offset: start, reason: "varint longer than 10 bytes" })
    }

    /// Reads a varint element count whose elements each take at least `min_item_len` bytes, and
    /// checks that the remaining input can hold them (this bounds any allocation by the input).
    pub fn count(&mut self, min_item_len: usize) -> Result<usize, DecodeError> {
        let at = self.pos;
        let n = self.varint()?;
        let fits =
            usize::try_from(n).ok().filter(|n| n.saturating_mul(min_item_len.max(1)) <= self.remaining());
        fits.ok_or(DecodeError { offset: at, reason: "count exceeds the remaining input" })
    }

    /// Reads a length-prefixed byte string into its own allocation.
    pub fn bytes(&mut self) -> Result<Bytes, DecodeError> {
        Ok(Bytes::copy_from_slice(self.slice()?))
    }

    /// Reads a length-prefixed byte string as a slice of the input.
    pub fn slice(&mut self) -> Result<&'a [u8], DecodeError> {
        let at = self.pos;
        let n = self.varint()?;
        let n = usize::try_from(n)
            .ok()
            .filter(|n| *n <= self.remaining())
            .ok_or(DecodeError { offset: at, reason: "length exceeds the remaining input" })?;
        self.take(n)
    }

    /// Succeeds only if the whole input was consumed.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.remaining() != 0 {
            return Err(self.err("trailing bytes after the end"));
        }
        Ok(())
    }
}
