//! On-disk byte formats: file headers and log records. All integers are little-endian.
//!
//! Every file starts with an 8-byte magic number naming its kind and a `u32` format version, so a
//! file of another kind or of a later format is refused with a clear error instead of misread.
//!
//! Segment file header ([`SEGMENT_HEADER_LEN`] = 32 bytes):
//! ```text
//! 0  magic     [u8; 8] = b"RKVLOG\r\n"
//! 8  version   u32     = FORMAT_VERSION
//! 12 flags     u32     = 0 (reserved)
//! 16 base      u64     index of the first entry the segment holds (its name says the same)
//! 24 reserved  u32     = 0
//! 28 crc       u32     CRC-32 of bytes 0..28
//! ```
//! Then records back to back ([`RECORD_HEADER_LEN`] = 28 bytes of header, then the payload):
//! ```text
//! 0  header_crc u32    CRC-32 of bytes 4..28 of this header
//! 4  body_crc   u32    CRC-32 of the payload
//! 8  len_kind   u32    bits 0..28: payload length; bits 28..32: the entry's kind
//!                      (0 normal, 1 configuration; `raft::EntryKind::code`)
//! 12 index      u64    the entry's log index
//! 20 term       u64    the entry's term
//! 28 payload    [u8; len]  the entry's data
//! ```
//! The kind bits came with membership changes, without a version bump: every record an earlier
//! build wrote has them zero (its payloads are far below 256 MiB: commands are at most 16 MiB), so
//! its logs read unchanged as logs of normal entries. The other way round, an earlier build would
//! misread a configuration record; the node's directory identity file (`raft-kv.meta`, version 2
//! once membership is recorded there) makes such a build refuse the directory before it reads it.
//! An unknown kind (a later build) is refused as [`crate::StorageError::Corrupt`] naming the kind.
//! The header has its own checksum so that a damaged length field is *detected* rather than trusted:
//! with one checksum over everything, a flipped bit in the length of a record in the middle of a
//! segment would look exactly like a torn last record, and recovery would silently drop everything
//! after it. With two, recovery can tell "a record that ends at the end of the file" (torn tail) from
//! "damage in the middle" (refused); see [`crate::segment`].
//!
//! The checksum is CRC-32 (IEEE, `crc32fast`, hardware accelerated); it catches all burst errors up to
//! 32 bits, which covers torn sectors and flipped bytes.

use bytes::Bytes;
use raft::{Entry, EntryKind};

/// The format version of every file this crate writes; bumped on any incompatible change.
pub const FORMAT_VERSION: u32 = 1;
/// Magic number at the start of a log segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"RKVLOG\r\n";
/// Length of a segment file header.
pub const SEGMENT_HEADER_LEN: usize = 32;
/// Length of a record header (the payload follows).
pub const RECORD_HEADER_LEN: usize = 28;
/// The largest payload a record can carry (256 MiB - 1: the `len_kind` field's low 28 bits).
pub const MAX_PAYLOAD_LEN: usize = (1 << KIND_SHIFT) - 1;
/// Where the kind starts in a record header's `len_kind` field.
const KIND_SHIFT: u32 = 28;

/// CRC-32 of `data`.
pub(crate) fn crc(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

pub(crate) fn get_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

pub(crate) fn get_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Encodes a segment header for a segment whose first entry is `base`.
pub(crate) fn encode_segment_header(base: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[0..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&base.to_le_bytes());
    let c = crc(&h[0..28]);
    h[28..32].copy_from_slice(&c.to_le_bytes());
    h
}

/// What is wrong with a file header.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HeaderError {
    /// The magic number is not the expected one: not our file, or not this kind of file.
    BadMagic,
    /// Our file, but a format version this build does not read.
    Version(u32),
    /// The header checksum does not match.
    Checksum,
}

/// Decodes a segment header, returning its base index.
pub(crate) fn decode_segment_header(h: &[u8; SEGMENT_HEADER_LEN]) -> Result<u64, HeaderError> {
    if h[0..8] != SEGMENT_MAGIC {
        return Err(HeaderError::BadMagic);
    }
    // Check the checksum before trusting the version: a flipped bit in the version field is damage.
    if crc(&h[0..28]) != get_u32(h, 28) {
        return Err(HeaderError::Checksum);
    }
    let version = get_u32(h, 8);
    if version != FORMAT_VERSION {
        return Err(HeaderError::Version(version));
    }
    Ok(get_u64(h, 16))
}

/// The decoded, checksum-verified header of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RecordHeader {
    /// CRC-32 of the payload.
    pub body_crc: u32,
    /// Payload length.
    pub len: u32,
    /// The entry's kind code (see [`raft::EntryKind::from_code`]; checked by the reader).
    pub kind: u8,
    /// Log index of the entry.
    pub index: u64,
    /// Term of the entry.
    pub term: u64,
}

impl RecordHeader {
    /// Total record length (header + payload).
    pub fn record_len(&self) -> u64 {
        RECORD_HEADER_LEN as u64 + u64::from(self.len)
    }
}

/// The encoded length of `entry`'s record.
pub(crate) fn record_len(entry: &Entry) -> u64 {
    RECORD_HEADER_LEN as u64 + entry.data.len() as u64
}

/// Appends the record for `entry` to `buf`. The caller checked `entry.data.len() <= MAX_PAYLOAD_LEN`.
pub(crate) fn encode_record(buf: &mut Vec<u8>, entry: &Entry) {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; 4]);
    buf.extend_from_slice(&crc(&entry.data).to_le_bytes());
    let len_kind = entry.data.len() as u32 | u32::from(entry.kind.code()) << KIND_SHIFT;
    buf.extend_from_slice(&len_kind.to_le_bytes());
    buf.extend_from_slice(&entry.index.to_le_bytes());
    buf.extend_from_slice(&entry.term.to_le_bytes());
    let header_crc = crc(&buf[start + 4..start + RECORD_HEADER_LEN]);
    buf[start..start + 4].copy_from_slice(&header_crc.to_le_bytes());
    buf.extend_from_slice(&entry.data);
}

/// Decodes a record header from the first [`RECORD_HEADER_LEN`] bytes of `b`; `None` if its
/// checksum does not match (or `b` is too short).
pub(crate) fn decode_record_header(b: &[u8]) -> Option<RecordHeader> {
    if b.len() < RECORD_HEADER_LEN || crc(&b[4..RECORD_HEADER_LEN]) != get_u32(b, 0) {
        return None;
    }
    let len_kind = get_u32(b, 8);
    Some(RecordHeader {
        body_crc: get_u32(b, 4),
        len: len_kind & ((1 << KIND_SHIFT) - 1),
        kind: (len_kind >> KIND_SHIFT) as u8,
        index: get_u64(b, 12),
        term: get_u64(b, 20),
    })
}

/// Decodes a whole record held in `b` (exactly one record, header first). Returns `None` if either
/// checksum fails or the length does not match.
pub(crate) fn decode_record(b: &[u8]) -> Option<Entry> {
    let h = decode_record_header(b)?;
    let body = &b[RECORD_HEADER_LEN..];
    if body.len() as u64 != u64::from(h.len) || crc(body) != h.body_crc {
        return None;
    }
    let kind = EntryKind::from_code(u64::from(h.kind))?;
    Some(Entry { term: h.term, index: h.index, kind, data: Bytes::copy_from_slice(body) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_roundtrip_and_every_flipped_byte_is_detected() {
        let e = Entry::new(7, 42, &b"payload"[..]);
        let mut buf = Vec::new();
        encode_record(&mut buf, &e);
        assert_eq!(buf.len() as u64, record_len(&e));
        assert_eq!(decode_record(&buf), Some(e.clone()));
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x10;
            assert_eq!(decode_record(&bad), None, "flip at {i} undetected");
        }
        // A header flip is caught by the header checksum alone.
        for i in 0..RECORD_HEADER_LEN {
            let mut bad = buf.clone();
            bad[i] ^= 1;
            assert_eq!(decode_record_header(&bad), None);
        }
    }

    #[test]
    fn the_kind_rides_in_the_length_field_and_old_records_read_as_normal() {
        let e = Entry::with_kind(3, 9, EntryKind::Config, &b"membership"[..]);
        let mut buf = Vec::new();
        encode_record(&mut buf, &e);
        let h = decode_record_header(&buf).unwrap();
        assert_eq!((h.len, h.kind), (10, 1));
        assert_eq!(decode_record(&buf), Some(e));
        // A record as an earlier build wrote it: the length alone, kind bits zero.
        let mut old = Vec::new();
        encode_record(&mut old, &Entry::new(3, 9, &b"command"[..]));
        assert_eq!(get_u32(&old, 8), 7);
        assert_eq!(decode_record(&old).map(|e| e.kind), Some(EntryKind::Normal));
        // An unknown kind (a later build) does not decode as an entry.
        let mut future = buf.clone();
        future[11] = 0x50; // kind 5
        let c = crc(&future[4..RECORD_HEADER_LEN]);
        future[0..4].copy_from_slice(&c.to_le_bytes());
        assert_eq!(decode_record_header(&future).map(|h| h.kind), Some(5));
        assert_eq!(decode_record(&future), None);
    }

    #[test]
    fn segment_header_roundtrip_and_errors() {
        let h = encode_segment_header(1234);
        assert_eq!(decode_segment_header(&h), Ok(1234));
        let mut bad = h;
        bad[0] ^= 1;
        assert_eq!(decode_segment_header(&bad), Err(HeaderError::BadMagic));
        let mut bad = h;
        bad[17] ^= 1;
        assert_eq!(decode_segment_header(&bad), Err(HeaderError::Checksum));
        // A genuine future version (valid checksum) is reported as such.
        let mut v2 = h;
        v2[8..12].copy_from_slice(&2u32.to_le_bytes());
        let c = crc(&v2[0..28]);
        v2[28..32].copy_from_slice(&c.to_le_bytes());
        assert_eq!(decode_segment_header(&v2), Err(HeaderError::Version(2)));
    }
}
