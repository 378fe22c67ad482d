//! Snapshot image of a [`KvStore`]: everything [`KvStore::apply`] depends on (data, sessions,
//! applied index), so that a restored store behaves exactly like the original, including
//! duplicate detection.
//!
//! # Format, version 4 (versions 1 to 3 are still read)
//!
//! ```text
//! [u8; 8]   SNAPSHOT_MAGIC ("RAFTKVSN")
//! u16 LE    format version (= 5; 4 before scripts, 3 before hashes, 2 before key versions, 1
//!           before expiry)
//! u64 LE    applied index
//! u64 LE    log time (versions >= 2; see `expiry`)
//! u64 LE    index of the last removal of a key (version 3; see `txn`)
//! varint    number of keys, then per key in strictly increasing byte order:
//!             key                        (varint length + bytes)
//!             value: versions <= 3 a string (varint length + bytes); version 4 a u8 type,
//!               0 string (varint length + bytes), 1 hash (varint n >= 1, then n field, value
//!               pairs in strictly increasing field order)
//!             varint deadline            (versions >= 2; 0 = none, else ms since the epoch)
//!             varint version             (version 3; <= applied index)
//! varint    number of sessions (<= MAX_SESSIONS), then per session in increasing id order:
//!             u64 LE id (never 0), varint ack_below, varint last_index (<= applied index,
//!             unique over sessions), varint number of replies (<= MAX_REPLIES_PER_SESSION),
//!             then per reply in increasing seq order (every seq >= ack_below):
//!               varint seq, reply       (encoding of `codec::put_reply`)
//! (version 5) the script cache          (encoding of `script::codec::write_cache`)
//! u32 LE    CRC-32 (IEEE) of every preceding byte
//! ```
//!
//! Because all maps are ordered, the image is canonical: two replicas with equal states produce
//! byte-identical snapshots. [`KvStore::restore`] checks magic, version and checksum before it
//! parses, and then every structural rule above, so a damaged or foreign image is refused with a
//! precise [`KvError`] instead of producing a subtly different state.
//!
//! # Snapshots without stopping writes
//!
//! [`KvStore::snapshot_view`] freezes the state in a [`SnapshotView`] in O(1): the key space
//! and the session table are persistent maps, so the view shares their nodes with the store, and
//! later writes copy only the tree paths they touch (the first write to a leaf after a view
//! copies that leaf: 16 entries of reference-counted `Bytes`). The view is `Send` and
//! `'static`, so the caller hands it to another thread, which streams the image with
//! [`SnapshotView::write_to`] while the store keeps applying entries. The image is written as it
//! is encoded, in chunks of about [`WRITE_CHUNK`] bytes, with the CRC computed incrementally: it
//! is never held in memory whole. [`KvStore::snapshot`] is the same writer into a `Vec`, so both
//! produce exactly the same bytes.
//!
//! # Restoring
//!
//! [`KvStore::restore`] copies every key, value and cached reply out of the image into its own
//! allocation, so the (possibly very large) image buffer can be freed as soon as it returns. The
//! keys arrive sorted and are inserted in that order, which keeps every insertion on the
//! rightmost path of the tree (hot in cache); `imbl` offers no faster bulk constructor.

use std::fmt;
use std::io::{self, Write};

use bytes::{BufMut, Bytes, BytesMut};
use imbl::OrdMap;

use super::codec::{put_bytes, put_reply, put_varint, read_reply, DecodeError, Reader};
use super::expiry::Ttls;
use super::script::{read_cache, write_cache, ScriptCache};
use super::session::{Replies, Session, SessionTable, MAX_REPLIES_PER_SESSION, MAX_SESSIONS, NO_SESSION};
use super::store::{Data, KvStore, Value};
use super::KvError;

/// The first bytes of every snapshot image.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"RAFTKVSN";

/// The snapshot format version this build writes and reads.
pub const SNAPSHOT_FORMAT_VERSION: u16 = 5;

/// The format that added value types (hashes).
const SNAPSHOT_VERSION_TYPES: u16 = 4;
/// The format that added the script cache.
const SNAPSHOT_VERSION_SCRIPTS: u16 = 5;

/// The format written before keys had versions (no versions, no last removal); still read.
const SNAPSHOT_VERSION_2: u16 = 2;

/// The format written before keys could expire (no log time, no deadlines); still read.
const SNAPSHOT_VERSION_1: u16 = 1;

/// [`SnapshotView::write_to`] hands its output to the writer in chunks of about this many bytes
/// (keys and values of this size or more are passed through without a copy).
pub const WRITE_CHUNK: usize = 64 * 1024;

const HEADER_LEN: usize = SNAPSHOT_MAGIC.len() + 2;
const CRC_LEN: usize = 4;

/// A frozen, consistent copy of a [`KvStore`]'s state (data, sessions, applied index), cheap to
/// take and independent of the store: later writes to the store do not change it.
///
/// Taking it costs O(1) (one reference-count increment per map). It is `Send + Sync +
/// 'static`: write it from any thread. Holding it keeps the old versions of the nodes that the
/// store rewrites meanwhile alive, so drop it once the image is written (the thread that drops
/// the last view frees them).
#[derive(Clone, PartialEq, Eq)]
pub struct SnapshotView {
    data: OrdMap<Bytes, Value>,
    ttls: Ttls,
    time: u64,
    last_removal: u64,
    sessions: SessionTable,
    applied_index: u64,
    scripts: ScriptCache,
}

impl fmt::Debug for SnapshotView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotView")
            .field("applied_index", &self.applied_index)
            .field("keys", &self.data.len())
            .field("sessions", &self.sessions.len())
            .finish()
    }
}

impl SnapshotView {
    /// The applied index of the store when the view was taken: the image covers exactly the log
    /// entries up to and including it.
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// Number of keys in the view.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True if the view has no keys.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Number of client sessions in the view.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Streams the image (see the module docs for the format) into `out` and returns the number
    /// of bytes written; the bytes are exactly those of [`KvStore::snapshot`] on the same state.
    ///
    /// The image is never built in memory: it is encoded into a local buffer handed to `out`
    /// every [`WRITE_CHUNK`] bytes, so `out` need not be buffered itself (a `BufWriter` does no
    /// harm). `out` is flushed at the end. On an I/O error the image in `out` is incomplete and
    /// must be discarded (it also lacks its CRC trailer, so `restore` would refuse it).
    pub fn write_to(&self, out: &mut dyn Write) -> io::Result<u64> {
        let mut w = ImageWriter {
            out,
            buf: BytesMut::with_capacity(2 * WRITE_CHUNK),
            crc: Default::default(),
            written: 0,
        };
        w.buf.put_slice(&SNAPSHOT_MAGIC);
        w.buf.put_u16_le(SNAPSHOT_FORMAT_VERSION);
        w.buf.put_u64_le(self.applied_index);
        w.buf.put_u64_le(self.time);
        w.buf.put_u64_le(self.last_removal);
        put_varint(&mut w.buf, self.data.len() as u64);
        for (k, v) in &self.data {
            w.bytes(k)?;
            match &v.data {
                Data::Str(b) => {
                    w.buf.put_u8(0);
                    w.bytes(b)?;
                }
                Data::Hash(h) => {
                    w.buf.put_u8(1);
                    put_varint(&mut w.buf, h.len() as u64);
                    for (f, x) in h {
                        w.bytes(f)?;
                        w.bytes(x)?;
                    }
                }
            }
            put_varint(&mut w.buf, self.ttls.get(k).unwrap_or(0));
            put_varint(&mut w.buf, v.version);
        }
        put_varint(&mut w.buf, self.sessions.sessions.len() as u64);
        for (id, s) in &self.sessions.sessions {
            w.buf.put_u64_le(*id);
            put_varint(&mut w.buf, s.ack_below);
            put_varint(&mut w.buf, s.last_index);
            put_varint(&mut w.buf, s.replies.len() as u64);
            for (seq, reply) in s.replies.iter() {
                put_varint(&mut w.buf, seq);
                put_reply(&mut w.buf, reply);
                w.flush_if_full()?;
            }
            w.flush_if_full()?;
        }
        write_cache(&mut w.buf, &self.scripts);
        w.finish()
    }

    /// Estimate of the image size, for pre-sizing an in-memory image (one pass over the keys).
    fn size_hint(&self) -> usize {
        let data_len: usize = self
            .data
            .iter()
            .map(|(k, v)| {
                k.len()
                    + 30
                    + match &v.data {
                        Data::Str(b) => b.len(),
                        Data::Hash(h) => h.iter().map(|(f, x)| f.len() + x.len() + 8).sum(),
                    }
            })
            .sum();
        HEADER_LEN + 24 + data_len + 64 + CRC_LEN
    }
}

/// The incremental encoder behind [`SnapshotView::write_to`]: a chunk buffer, the running CRC
/// over every byte handed to `out`, and the count of those bytes.
struct ImageWriter<'a> {
    out: &'a mut dyn Write,
    buf: BytesMut,
    crc: crc32fast::Hasher,
    written: u64,
}

impl ImageWriter<'_> {
    /// Hands the buffered bytes to `out` (and to the CRC).
    fn flush(&mut self) -> io::Result<()> {
        self.crc.update(&self.buf);
        self.out.write_all(&self.buf)?;
        self.written += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    fn flush_if_full(&mut self) -> io::Result<()> {
        if self.buf.len() >= WRITE_CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    /// Appends a length-prefixed byte string; a large one goes to `out` directly.
    fn bytes(&mut self, b: &[u8]) -> io::Result<()> {
        if b.len() < WRITE_CHUNK {
            put_bytes(&mut self.buf, b);
            return self.flush_if_full();
        }
        put_varint(&mut self.buf, b.len() as u64);
        self.flush()?;
        self.crc.update(b);
        self.out.write_all(b)?;
        self.written += b.len() as u64;
        Ok(())
    }

    /// Writes the rest and the CRC trailer, flushes `out`; returns the image length.
    fn finish(mut self) -> io::Result<u64> {
        self.flush()?;
        let crc = std::mem::take(&mut self.crc).finalize();
        self.out.write_all(&crc.to_le_bytes())?;
        self.out.flush()?;
        Ok(self.written + CRC_LEN as u64)
    }
}

impl KvStore {
    /// Freezes the current state in a [`SnapshotView`], in O(1). Write the view with
    /// [`SnapshotView::write_to`], on any thread, while this store keeps applying entries.
    pub fn snapshot_view(&self) -> SnapshotView {
        SnapshotView {
            data: self.data.clone(),
            ttls: self.ttls.clone(),
            time: self.time,
            last_removal: self.last_removal,
            sessions: self.sessions.clone(),
            applied_index: self.applied_index,
            scripts: self.scripts.clone(),
        }
    }

    /// Serializes the whole state into memory (see the module docs for the format): the same
    /// bytes as [`SnapshotView::write_to`], on the caller's thread.
    pub fn snapshot(&self) -> Bytes {
        let view = self.snapshot_view();
        let mut image = Vec::with_capacity(view.size_hint());
        // Writing into a Vec cannot fail.
        if let Err(e) = view.write_to(&mut image) {
            unreachable!("writing a snapshot into memory failed: {e}");
        }
        Bytes::from(image)
    }

    /// Rebuilds a store from an image made by [`Self::snapshot`].
    ///
    /// Errors, checked in this order: [`KvError::SnapshotMagic`] (not a snapshot, or shorter
    /// than a header), [`KvError::SnapshotVersion`], [`KvError::SnapshotChecksum`] (damaged),
    /// [`KvError::BadSnapshot`] (checksum fine but contents inconsistent).
    pub fn restore(data: &[u8]) -> Result<Self, KvError> {
        if data.len() < HEADER_LEN + CRC_LEN || data[..SNAPSHOT_MAGIC.len()] != SNAPSHOT_MAGIC {
            return Err(KvError::SnapshotMagic);
        }
        let version = u16::from_le_bytes([data[8], data[9]]);
        if !(SNAPSHOT_VERSION_1..=SNAPSHOT_FORMAT_VERSION).contains(&version) {
            return Err(KvError::SnapshotVersion { found: version, supported: SNAPSHOT_FORMAT_VERSION });
        }
        let (body, trailer) = data.split_at(data.len() - CRC_LEN);
        let stored = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
        let computed = crc32fast::hash(body);
        if stored != computed {
            return Err(KvError::SnapshotChecksum { stored, computed });
        }
        let mut r = Reader::new(body);
        let bad = |e: DecodeError| KvError::BadSnapshot { offset: e.offset, reason: e.reason };
        r.take(HEADER_LEN).map_err(bad)?;
        let store = read_body(&mut r, version).map_err(bad)?;
        r.finish().map_err(bad)?;
        Ok(store)
    }
}

/// Reads a typed value (format 4): a string, or a non-empty hash with increasing fields.
fn read_value(r: &mut Reader<'_>) -> Result<Data, DecodeError> {
    let at = r.offset();
    match r.u8()? {
        0 => Ok(Data::Str(Bytes::copy_from_slice(r.slice()?))),
        1 => {
            let at = r.offset();
            let n = r.count(2)?;
            if n == 0 {
                return Err(DecodeError { offset: at, reason: "empty hash" });
            }
            let mut fields = crate::kv::hash::Fields::new();
            let mut prev: Option<&[u8]> = None;
            for _ in 0..n {
                let at = r.offset();
                let f = r.slice()?;
                let x = r.slice()?;
                if prev.is_some_and(|p| p >= f) {
                    return Err(DecodeError {
                        offset: at,
                        reason: "hash fields are not in strictly increasing order",
                    });
                }
                prev = Some(f);
                fields.insert(Bytes::copy_from_slice(f), Bytes::copy_from_slice(x));
            }
            Ok(Data::Hash(fields))
        }
        _ => Err(DecodeError { offset: at, reason: "unknown value type" }),
    }
}

fn read_body(r: &mut Reader<'_>, version: u16) -> Result<KvStore, DecodeError> {
    let fail = |offset: usize, reason: &'static str| DecodeError { offset, reason };
    let applied_index = r.u64_le()?;
    let v2 = version >= SNAPSHOT_VERSION_2;
    let v3 = version >= 3;
    let time = if v2 { r.u64_le()? } else { 0 };
    let last_removal = if v3 { r.u64_le()? } else { 0 };

    let n_keys = r.count(2 + usize::from(v2) + usize::from(v3))?;
    let mut data = OrdMap::new();
    let mut ttls = Ttls::default();
    let mut prev: Option<&[u8]> = None;
    for _ in 0..n_keys {
        let at = r.offset();
        let key = r.slice()?;
        let value = if version >= SNAPSHOT_VERSION_TYPES {
            read_value(r)?
        } else {
            Data::Str(Bytes::copy_from_slice(r.slice()?))
        };
        if prev.is_some_and(|p| p >= key) {
            return Err(fail(at, "keys are not in strictly increasing order"));
        }
        prev = Some(key);
        // Copies: the map must not keep the image buffer alive.
        let key = Bytes::copy_from_slice(key);
        if v2 {
            let deadline = r.varint()?;
            if deadline != 0 {
                ttls.set(&key, deadline);
            }
        }
        let mut version = 0;
        if v3 {
            let at = r.offset();
            version = r.varint()?;
            if version > applied_index {
                return Err(fail(at, "key version is above the applied index"));
            }
        }
        data.insert(key, Value { data: value, version });
    }

    let at = r.offset();
    let n_sessions = r.count(8 + 3)?;
    if n_sessions > MAX_SESSIONS {
        return Err(fail(at, "more sessions than MAX_SESSIONS"));
    }
    let mut sessions = SessionTable::default();
    // No two sessions share a last index (the table's LRU order relies on it).
    let mut last_indexes = std::collections::BTreeSet::new();
    let mut prev_id: Option<u64> = None;
    for _ in 0..n_sessions {
        let at = r.offset();
        let id = r.u64_le()?;
        if id == NO_SESSION {
            return Err(fail(at, "session id 0 is reserved"));
        }
        if prev_id.is_some_and(|p| p >= id) {
            return Err(fail(at, "session ids are not in strictly increasing order"));
        }
        prev_id = Some(id);
        let ack_below = r.varint()?;
        let at = r.offset();
        let last_index = r.varint()?;
        if last_index > applied_index {
            return Err(fail(at, "session last index is above the applied index"));
        }
        if !last_indexes.insert(last_index) {
            return Err(fail(at, "two sessions share a last index"));
        }
        let at = r.offset();
        let n_replies = r.count(2)?;
        if n_replies > MAX_REPLIES_PER_SESSION {
            return Err(fail(at, "more cached replies than MAX_REPLIES_PER_SESSION"));
        }
        let mut replies = Replies::default();
        let mut prev_seq: Option<u64> = None;
        for _ in 0..n_replies {
            let at = r.offset();
            let seq = r.varint()?;
            if seq < ack_below {
                return Err(fail(at, "cached reply below the session's ack_below"));
            }
            if prev_seq.is_some_and(|p| p >= seq) {
                return Err(fail(at, "reply seqs are not in strictly increasing order"));
            }
            prev_seq = Some(seq);
            replies.insert(seq, read_reply(r)?);
        }
        sessions.sessions.insert(id, Session { ack_below, replies, last_index });
    }
    let scripts = if version >= SNAPSHOT_VERSION_SCRIPTS {
        read_cache(r, applied_index)?
    } else {
        ScriptCache::default()
    };
    Ok(KvStore { data, sessions, applied_index, time, ttls, last_removal, scripts })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a version 1 image (the bodies below are written in it) with a valid header and
    /// checksum around an arbitrary body.
    fn seal(body: &[u8]) -> Vec<u8> {
        let mut v = SNAPSHOT_MAGIC.to_vec();
        v.extend_from_slice(&SNAPSHOT_VERSION_1.to_le_bytes());
        v.extend_from_slice(body);
        let crc = crc32fast::hash(&v);
        v.extend_from_slice(&crc.to_le_bytes());
        v
    }

    #[test]
    fn empty_store_image() {
        let img = KvStore::new().snapshot();
        // Header, three u64s, no keys, no sessions, no scripts, CRC.
        assert_eq!(img.len(), HEADER_LEN + 24 + 1 + 1 + 1 + CRC_LEN);
        assert_eq!(KvStore::restore(&img), Ok(KvStore::new()));
    }

    #[test]
    fn header_errors() {
        assert_eq!(KvStore::restore(&[]), Err(KvError::SnapshotMagic));
        assert_eq!(KvStore::restore(b"RAFTKVSN\x01\x00"), Err(KvError::SnapshotMagic));
        assert_eq!(KvStore::restore(b"RAFTKVSX\x01\x00\0\0\0\0"), Err(KvError::SnapshotMagic));
        let mut img = KvStore::new().snapshot().to_vec();
        img[8] = 6;
        assert_eq!(
            KvStore::restore(&img),
            Err(KvError::SnapshotVersion { found: 6, supported: SNAPSHOT_FORMAT_VERSION })
        );
    }

    #[test]
    fn structural_errors_behind_a_valid_checksum() {
        let mut unsorted = 5u64.to_le_bytes().to_vec();
        unsorted.extend_from_slice(&[2, 1, b'b', 0, 1, b'a', 0, 0]);
        assert!(matches!(
            KvStore::restore(&seal(&unsorted)),
            Err(KvError::BadSnapshot { reason: "keys are not in strictly increasing order", .. })
        ));

        let mut zero_session = 5u64.to_le_bytes().to_vec();
        zero_session.extend_from_slice(&[0, 1]);
        zero_session.extend_from_slice(&0u64.to_le_bytes());
        zero_session.extend_from_slice(&[0, 0, 0]);
        assert!(matches!(
            KvStore::restore(&seal(&zero_session)),
            Err(KvError::BadSnapshot { reason: "session id 0 is reserved", .. })
        ));

        let mut future = 5u64.to_le_bytes().to_vec();
        future.extend_from_slice(&[0, 1]);
        future.extend_from_slice(&7u64.to_le_bytes());
        future.extend_from_slice(&[0, 6, 0]);
        assert!(matches!(
            KvStore::restore(&seal(&future)),
            Err(KvError::BadSnapshot { reason: "session last index is above the applied index", .. })
        ));

        let mut below_ack = 5u64.to_le_bytes().to_vec();
        below_ack.extend_from_slice(&[0, 1]);
        below_ack.extend_from_slice(&7u64.to_le_bytes());
        below_ack.extend_from_slice(&[3, 4, 1, 2, 0]);
        assert!(matches!(
            KvStore::restore(&seal(&below_ack)),
            Err(KvError::BadSnapshot { reason: "cached reply below the session's ack_below", .. })
        ));

        // Two sessions last used at index 4: the LRU order would be ambiguous.
        let mut shared_index = 5u64.to_le_bytes().to_vec();
        shared_index.extend_from_slice(&[0, 2]);
        shared_index.extend_from_slice(&7u64.to_le_bytes());
        shared_index.extend_from_slice(&[0, 4, 0]);
        shared_index.extend_from_slice(&8u64.to_le_bytes());
        shared_index.extend_from_slice(&[0, 4, 0]);
        assert!(matches!(
            KvStore::restore(&seal(&shared_index)),
            Err(KvError::BadSnapshot { reason: "two sessions share a last index", .. })
        ));

        let mut trailing = 5u64.to_le_bytes().to_vec();
        trailing.extend_from_slice(&[0, 0, 0]);
        assert!(matches!(
            KvStore::restore(&seal(&trailing)),
            Err(KvError::BadSnapshot { reason: "trailing bytes after the end", .. })
        ));

        let mut ok = 5u64.to_le_bytes().to_vec();
        ok.extend_from_slice(&[1, 1, b'a', 1, b'x', 1]);
        ok.extend_from_slice(&7u64.to_le_bytes());
        ok.extend_from_slice(&[3, 4, 1, 3, 0]);
        let s = KvStore::restore(&seal(&ok)).expect("valid image");
        assert_eq!(s.applied_index(), 5);
        assert_eq!(s.len(), 1);
        assert_eq!(s.session_count(), 1);
        // Version 1 images are read (keys without deadlines, log time 0) and rewritten as 2.
        assert_eq!(s.time(), 0);
        assert_eq!(s.expires_count(), 0);
        assert_eq!(KvStore::restore(&s.snapshot()), Ok(s));
    }
}
