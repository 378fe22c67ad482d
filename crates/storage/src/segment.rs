//! Segment files: naming, creation, and the recovery scan of one segment.
//!
//! A segment is named after the index of its first entry, zero-padded so that names sort in log
//! order: `00000000000000000001.wal`. Its header repeats that base index (checked at open).
//!
//! Invariants the store maintains (and recovery relies on):
//! - Every segment but the last is complete and durable: before the store writes the first byte to
//!   a new segment it syncs the previous one, and a new segment's header and directory entry are
//!   synced before any record goes into it. So only the *last* segment can have a torn tail after a
//!   crash, and only the last segment can have a missing or short header (a crash while creating it).
//! - Segments are contiguous: each starts right after the previous one's last entry.
//!
//! - Past `written` (the end of its records) a segment holds only zeros: the preallocated space
//!   (see "Preallocation" in [`crate::log`]).
//!
//! Recovery scan of one segment (`scan`): records are decoded one after another from a single
//! in-memory copy of the file (one big read, no per-record system call). A rest of the file that is
//! all zeros is the clean end of the segment (any segment). In the last segment a tail that cannot
//! be a complete record is a *torn tail*, cut with a warning:
//! - fewer bytes left than a record header;
//! - a valid header whose payload extends past the end of the file;
//! - a valid header whose payload checksum fails, when it ends exactly at the end of the file or no
//!   valid record header follows it (zeros may: preallocation);
//! - a header whose checksum fails, when no valid record header follows anywhere in the file.
//!
//! Anything else, and any of the above in a segment that is not the last, is refused with the file
//! and byte offset.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use raft::{Entry, EntryKind};

use crate::error::{Result, StorageError};
use crate::fs::{FileSystem, FsFile};
use crate::index::SegmentIndex;
use crate::log::LogOptions;
use crate::record::{
    decode_record_header, decode_segment_header, encode_segment_header, get_u64, HeaderError,
    RECORD_HEADER_LEN, SEGMENT_HEADER_LEN,
};

/// File name suffix of segment files.
const SEGMENT_SUFFIX: &str = ".wal";

/// An open segment file and its index.
#[derive(Debug)]
pub(crate) struct Segment<Fl> {
    /// The file's path.
    pub path: PathBuf,
    /// The open file.
    pub file: Fl,
    /// Where each of its entries is.
    pub index: SegmentIndex,
    /// Bytes actually written to the file (the store may hold more in its write buffer; those are
    /// counted by `index.end` but not here).
    pub written: u64,
}

/// The file name of the segment whose first entry is `base`.
pub(crate) fn segment_name(base: u64) -> String {
    format!("{base:020}{SEGMENT_SUFFIX}")
}

/// The base index encoded in a segment file name, `None` if `name` is not a segment name at all,
/// `Some(Err)` if it looks like one but is malformed.
pub(crate) fn parse_segment_name(name: &str) -> Option<Result<u64, ()>> {
    let stem = name.strip_suffix(SEGMENT_SUFFIX)?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Err(()));
    }
    Some(stem.parse().map_err(|_| ()))
}

/// Creates the segment whose first entry will be `base` and writes its header. With `sync`, the
/// header and the directory entry are durable on return (see the module invariants).
pub(crate) fn create<F: FileSystem>(
    fs: &F,
    dir: &Path,
    base: u64,
    opts: &LogOptions,
) -> Result<Segment<F::File>> {
    let path = dir.join(segment_name(base));
    let file = fs.create(&path).map_err(|e| StorageError::io(&path, e))?;
    let mut seg = Segment { path, file, index: SegmentIndex::new(base), written: 0 };
    seg.file.append(&encode_segment_header(base)).map_err(|e| StorageError::io(&seg.path, e))?;
    seg.written = SEGMENT_HEADER_LEN as u64;
    preallocate(&mut seg, opts)?;
    if opts.sync {
        seg.file.sync().map_err(|e| StorageError::io(&seg.path, e))?;
        fs.sync_dir(dir).map_err(|e| StorageError::io(dir, e))?;
    }
    Ok(seg)
}

/// Keeps at least half of [`LogOptions::preallocate`] bytes of zeros written after the segment's
/// records, writing a whole chunk when it runs low, never past `segment_size` (see "Preallocation"
/// in [`crate::log`]). Only zeros are ever written past `written`.
pub(crate) fn preallocate<W: FsFile>(seg: &mut Segment<W>, opts: &LogOptions) -> Result<()> {
    let chunk = opts.preallocate;
    if chunk == 0 {
        return Ok(());
    }
    let len = seg.file.len().map_err(|e| StorageError::io(&seg.path, e))?;
    let cap = opts.segment_size.max(SEGMENT_HEADER_LEN as u64);
    if len >= cap || len >= seg.written.saturating_add(chunk / 2) {
        return Ok(());
    }
    let start = len.max(seg.written);
    let end = start.saturating_add(chunk).min(cap);
    const PIECE: u64 = 1 << 20;
    let zeros = vec![0u8; (end.saturating_sub(start)).min(PIECE) as usize];
    let mut at = start;
    while at < end {
        let n = (end - at).min(PIECE) as usize;
        seg.file.write_at(&zeros[..n], at).map_err(|e| StorageError::io(&seg.path, e))?;
        at += n as u64;
    }
    Ok(())
}

/// The result of scanning one segment file's bytes.
#[derive(Debug)]
pub(crate) enum Scanned {
    /// The file is shorter than a header: a crash while the (last) segment was being created.
    TornHeader,
    /// The segment's entries.
    Segment(SegmentScan),
}

/// The decoded content of a segment.
#[derive(Debug)]
pub(crate) struct SegmentScan {
    /// Where each entry's record is.
    pub index: SegmentIndex,
    /// If the tail was torn: why, and how many bytes must be cut (the file's valid length is
    /// `index.end`).
    pub torn: Option<(String, u64)>,
}

/// Decodes and verifies the segment `path` whose bytes are `data`, appending its entries to `out`.
/// `name_base` is the base index from the file name; `is_last` says whether it is the last segment
/// (the only one allowed a torn tail).
///
/// The entries' payloads are slices of `data` (no copy per entry): they share its buffer, which lives
/// as long as any of them does.
pub(crate) fn scan(
    path: &Path,
    data: &Bytes,
    name_base: u64,
    is_last: bool,
    out: &mut Vec<Entry>,
) -> Result<Scanned> {
    let Some(header) = data.first_chunk::<SEGMENT_HEADER_LEN>() else {
        if is_last {
            return Ok(Scanned::TornHeader);
        }
        return Err(StorageError::corrupt(
            path,
            0,
            format!("segment is {} bytes, shorter than its header, and is not the last segment", data.len()),
        ));
    };
    let base = match decode_segment_header(header) {
        Ok(base) => base,
        Err(HeaderError::BadMagic) => {
            return Err(StorageError::corrupt(path, 0, "bad magic number: not a raft-kv log segment"))
        }
        Err(HeaderError::Checksum) => {
            return Err(StorageError::corrupt(path, 0, "segment header checksum mismatch"))
        }
        Err(HeaderError::Version(found)) => {
            return Err(StorageError::UnsupportedVersion {
                path: path.to_path_buf(),
                found,
                supported: crate::record::FORMAT_VERSION,
            })
        }
    };
    if base != name_base {
        return Err(StorageError::corrupt(
            path,
            16,
            format!("segment header says first index {base}, file name says {name_base}"),
        ));
    }

    let mut index = SegmentIndex::new(base);
    let mut at = SEGMENT_HEADER_LEN;
    let mut torn = None;
    while at < data.len() {
        let expected = index.last_index() + 1;
        let rest = &data[at..];
        if rest[0] == 0 && rest.iter().all(|&b| b == 0) {
            break; // Preallocated zeros: the clean end of the segment.
        }
        // `Ok(len)`: a good record of `len` bytes; `Err(reason)`: not a good record here.
        let outcome = match decode_record_header(rest) {
            None if rest.len() < RECORD_HEADER_LEN => Err((true, "partial record header".to_string())),
            None => {
                let tail = !valid_header_after(data, at, expected);
                Err((tail, "record header checksum mismatch".to_string()))
            }
            Some(h) if h.index != expected => {
                return Err(StorageError::corrupt(
                    path,
                    at as u64,
                    format!("expected a record for index {expected}, found index {}", h.index),
                ));
            }
            Some(h) if h.record_len() > rest.len() as u64 => Err((
                true,
                format!(
                    "record for index {expected} needs {} bytes, only {} left",
                    h.record_len(),
                    rest.len()
                ),
            )),
            Some(h) => {
                let len = h.record_len() as usize;
                let body = &rest[RECORD_HEADER_LEN..len];
                if crate::record::crc(body) == h.body_crc {
                    let Some(kind) = EntryKind::from_code(u64::from(h.kind)) else {
                        return Err(StorageError::corrupt(
                            path,
                            at as u64,
                            format!(
                                "record for index {expected} has entry kind {}, unknown to this build (written by a later version?)",
                                h.kind
                            ),
                        ));
                    };
                    let data = data.slice(at + RECORD_HEADER_LEN..at + len);
                    out.push(Entry { term: h.term, index: h.index, kind, data });
                    Ok(len)
                } else {
                    // A torn tail if nothing valid follows (zeros or garbage may: preallocation).
                    Err((
                        len == rest.len() || !valid_header_after(data, at, expected),
                        format!("payload checksum mismatch in record for index {expected}"),
                    ))
                }
            }
        };
        match outcome {
            Ok(len) => {
                index.push(len as u64);
                at += len;
            }
            Err((true, reason)) if is_last => {
                torn = Some((reason, (data.len() - at) as u64));
                break;
            }
            Err((true, reason)) => {
                return Err(StorageError::corrupt(
                    path,
                    at as u64,
                    format!("{reason} at the end of a segment that is not the last (complete segments are never torn)"),
                ));
            }
            Err((false, reason)) => {
                return Err(StorageError::corrupt(
                    path,
                    at as u64,
                    format!("{reason}, and valid records follow"),
                ));
            }
        }
    }
    Ok(Scanned::Segment(SegmentScan { index, torn }))
}

/// True if a record header with a valid checksum and a plausible index (after `expected - 1`)
/// starts anywhere after `at`: then the bad record at `at` is not the last one, and the damage is
/// not a torn tail. Only called on the error path; the index filter keeps it fast.
fn valid_header_after(data: &[u8], at: usize, expected: u64) -> bool {
    let max_index = expected.saturating_add((data.len() - at) as u64);
    (at + 1..=data.len().saturating_sub(RECORD_HEADER_LEN)).any(|p| {
        let index = get_u64(data, p + 12);
        index >= expected && index <= max_index && decode_record_header(&data[p..]).is_some()
    })
}

/// Decodes the single record in `buf` (read from `offset` of `path`), checking it is entry `index`.
pub(crate) fn decode_in_place(path: &Path, buf: &[u8], index: u64, offset: u64) -> Result<Entry> {
    match crate::record::decode_record(buf) {
        Some(e) if e.index == index => Ok(e),
        Some(e) => {
            Err(StorageError::corrupt(path, offset, format!("expected index {index}, found {}", e.index)))
        }
        None => Err(StorageError::corrupt(path, offset, format!("checksum mismatch reading index {index}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_in_log_order_and_parse_back() {
        assert_eq!(segment_name(1), "00000000000000000001.wal");
        assert!(segment_name(9) < segment_name(10));
        assert_eq!(parse_segment_name(&segment_name(u64::MAX)), Some(Ok(u64::MAX)));
        assert_eq!(parse_segment_name("hardstate"), None);
        assert_eq!(parse_segment_name("12.wal"), Some(Err(())));
        assert_eq!(parse_segment_name("9999999999999999999999.wal"), Some(Err(())));
    }
}
