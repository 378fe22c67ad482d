//! Snapshot files: the durable image of the state machine up to a log index (Raft §7, log
//! compaction), written locally or received from the leader, verified end to end before use.
//!
//! A node's data directory (the one holding the log) has at most one *current* snapshot,
//! [`SNAPSHOT_FILE`]. A new one is never written in place:
//! - taken locally: [`SnapshotWriter`] writes [`SNAPSHOT_TMP`] and fsyncs it, then
//!   [`install_snapshot`] renames it over [`SNAPSHOT_FILE`] and fsyncs the directory; only after that
//!   may the log be compacted up to the snapshot's index ([`crate::LogStore::compact`]);
//! - received from the leader (InstallSnapshot, §7): the raw bytes of the leader's file, read with
//!   [`read_snapshot_chunk`], are appended to [`SNAPSHOT_RECV`] by a [`SnapshotReceiver`], whose
//!   [`SnapshotReceiver::finish`] fsyncs and *verifies* the whole file (a damaged or partial transfer
//!   is removed and refused, never installed; a complete file may first be renamed to
//!   [`SNAPSHOT_RESTORE`] with [`SnapshotReceiver::rename_to`], so that the check runs in the
//!   background while a newer transfer starts); then [`install_snapshot`] renames it over
//!   [`SNAPSHOT_FILE`], and the caller resets the log if it does not continue the snapshot
//!   ([`crate::LogStore::reset`]).
//!
//! Crash safety: the content is durable (fsync) before any name points to it as the current
//! snapshot, and the rename is atomic, so after a crash [`SNAPSHOT_FILE`] is the old snapshot or the
//! new one, always complete. Leftover temporaries are garbage: [`remove_snapshot_temporaries`]
//! deletes them at startup. Because the trailer is written last and checked together with both
//! checksums, a torn or partial file never verifies, whatever the crash kept of it.
//!
//! # Format (little endian)
//! ```text
//! header:  0  magic        [u8; 8] = b"RAFTSNAP"
//!          8  version      u16     = SNAPSHOT_FORMAT_VERSION (2)
//!          10 index        u64     last log index the snapshot includes
//!          18 term         u64     term of that entry
//!          26 length       u32     n <= MAX_MEMBERSHIP_LEN
//!          30 membership   n bytes the cluster membership as of `index`
//!                                  (`raft::Membership::encode`: voters, learners, their records)
//!          30+n crc        u32     CRC-32 of header bytes 0 .. 30+n
//! data:    the state machine image (opaque here), any length
//! trailer: data length     u64     must equal file length - header length - 20
//!          data crc        u32     CRC-32 of the data
//!          end magic       [u8; 8] = b"SNAPDONE"
//! ```
//! Version 1 (written before membership changes) is still read: its bytes 26..30 count voters
//! (n <= MAX_VOTERS), followed by n u64 voter ids; it reads as a membership of those voters with
//! empty records ([`raft::Membership::from_voters`]). Only version 2 is written.
//!
//! Verification order: magic, header length (by version) and its count, header checksum, version,
//! then the trailer's end magic, data length and data checksum. A header whose checksum is valid but
//! whose version is neither is [`StorageError::UnsupportedVersion`] (a file from another build);
//! every other mismatch is [`StorageError::Corrupt`] naming the byte offset.

use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use raft::Membership;

use crate::error::{Result, StorageError};
use crate::fs::{read_all, FileSystem, FsFile};
use crate::record::{crc, get_u32, get_u64};

/// File name of the current, durable snapshot.
pub const SNAPSHOT_FILE: &str = "snapshot";
/// File name of a snapshot being written locally (renamed to [`SNAPSHOT_FILE`] when complete).
pub const SNAPSHOT_TMP: &str = "snapshot.tmp";
/// File name of a snapshot being received from the leader (renamed when complete and verified).
pub const SNAPSHOT_RECV: &str = "snapshot.recv";
/// File name of a completely received snapshot while it is verified and loaded in the background
/// ([`SnapshotReceiver::rename_to`]), so that a newer transfer can start in [`SNAPSHOT_RECV`]
/// meanwhile; installed from here.
pub const SNAPSHOT_RESTORE: &str = "snapshot.restore";
/// The previous snapshot, moved aside by [`install_snapshot`] until the caller deletes it.
pub const SNAPSHOT_OLD: &str = "snapshot.old";
/// Magic number at the start of a snapshot file.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"RAFTSNAP";
/// Magic number at the very end of a complete snapshot file.
pub const SNAPSHOT_END_MAGIC: [u8; 8] = *b"SNAPDONE";
/// The snapshot format version this build writes (it reads this one and version 1).
pub const SNAPSHOT_FORMAT_VERSION: u16 = 2;
/// The version written before membership changes (voter ids only); still read.
const VERSION_1: u16 = 1;
/// The largest voter count a version 1 snapshot header may carry.
pub const MAX_VOTERS: usize = 1024;
/// The largest encoded membership a version 2 snapshot header may carry.
pub const MAX_MEMBERSHIP_LEN: usize = 4 << 20;
/// Length of the trailer (data length, data CRC, end magic).
pub const SNAPSHOT_TRAILER_LEN: usize = 20;

/// Length of the header before the voter list (magic, version, index, term, voter count).
const FIXED_HEADER_LEN: usize = 30;
/// Bytes buffered by [`SnapshotWriter`] before they are handed to the OS.
const WRITE_BUFFER_SIZE: usize = 1 << 20;

/// What a snapshot covers: the last log entry it includes, and the cluster membership at that point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// Index of the last log entry included in the snapshot.
    pub index: u64,
    /// Term of that entry.
    pub term: u64,
    /// The cluster membership as of `index` (from a version 1 file: its voters, with empty records).
    pub membership: Membership,
}

/// Length of a header whose count field (bytes 26..30) is `n`, for format `version`.
fn header_len(version: u16, n: usize) -> usize {
    if version == VERSION_1 {
        FIXED_HEADER_LEN + 8 * n + 4
    } else {
        FIXED_HEADER_LEN + n + 4
    }
}

/// Encodes the header of a snapshot described by `meta` (version 2; the membership's length must
/// be checked before).
fn encode_header(meta: &SnapshotMeta) -> Vec<u8> {
    let membership = meta.membership.encode();
    let mut b = Vec::with_capacity(header_len(SNAPSHOT_FORMAT_VERSION, membership.len()));
    b.extend_from_slice(&SNAPSHOT_MAGIC);
    b.extend_from_slice(&SNAPSHOT_FORMAT_VERSION.to_le_bytes());
    b.extend_from_slice(&meta.index.to_le_bytes());
    b.extend_from_slice(&meta.term.to_le_bytes());
    b.extend_from_slice(&(membership.len() as u32).to_le_bytes());
    b.extend_from_slice(&membership);
    let c = crc(&b);
    b.extend_from_slice(&c.to_le_bytes());
    b
}

/// Encodes the trailer for `data_len` data bytes whose CRC-32 is `data_crc`.
fn encode_trailer(data_len: u64, data_crc: u32) -> [u8; SNAPSHOT_TRAILER_LEN] {
    let mut t = [0u8; SNAPSHOT_TRAILER_LEN];
    t[0..8].copy_from_slice(&data_len.to_le_bytes());
    t[8..12].copy_from_slice(&data_crc.to_le_bytes());
    t[12..20].copy_from_slice(&SNAPSHOT_END_MAGIC);
    t
}

/// The fixed part of a header: checks the magic and the count (voters in version 1, membership
/// bytes otherwise), returns the full header length. `fixed` must hold at least
/// [`FIXED_HEADER_LEN`] bytes. The version is not trusted yet (the checksum comes later).
fn check_fixed_header(path: &Path, fixed: &[u8]) -> Result<usize> {
    if fixed[0..8] != SNAPSHOT_MAGIC {
        return Err(StorageError::corrupt(path, 0, "bad magic number: not a raft-kv snapshot file"));
    }
    let version = u16::from_le_bytes([fixed[8], fixed[9]]);
    let n = get_u32(fixed, 26) as usize;
    if version == VERSION_1 && n > MAX_VOTERS {
        return Err(StorageError::corrupt(
            path,
            26,
            format!("snapshot header claims {n} voters, more than the maximum {MAX_VOTERS}"),
        ));
    }
    if version != VERSION_1 && n > MAX_MEMBERSHIP_LEN {
        return Err(StorageError::corrupt(
            path,
            26,
            format!(
                "snapshot header claims {n} bytes of membership, more than the maximum {MAX_MEMBERSHIP_LEN}"
            ),
        ));
    }
    Ok(header_len(version, n))
}

/// Decodes a complete header (`header` is exactly the header's bytes): checksum, then version.
fn decode_header(path: &Path, header: &[u8]) -> Result<SnapshotMeta> {
    let crc_at = header.len() - 4;
    let version = u16::from_le_bytes([header[8], header[9]]);
    if crc(&header[..crc_at]) != get_u32(header, crc_at) {
        let hint = if version == SNAPSHOT_FORMAT_VERSION || version == VERSION_1 {
            String::new()
        } else {
            format!(
                " (the header claims format version {version}; this build reads {SNAPSHOT_FORMAT_VERSION})"
            )
        };
        return Err(StorageError::corrupt(
            path,
            crc_at as u64,
            format!("snapshot header checksum mismatch{hint}"),
        ));
    }
    let membership = match version {
        VERSION_1 => {
            let voters: Vec<u64> =
                (FIXED_HEADER_LEN..crc_at).step_by(8).map(|at| get_u64(header, at)).collect();
            Membership::from_voters(&voters)
        }
        SNAPSHOT_FORMAT_VERSION => Membership::decode(&header[FIXED_HEADER_LEN..crc_at]).map_err(|e| {
            StorageError::corrupt(path, FIXED_HEADER_LEN as u64, format!("snapshot header: {e}"))
        })?,
        _ => {
            return Err(StorageError::UnsupportedVersion {
                path: path.to_path_buf(),
                found: u32::from(version),
                supported: u32::from(SNAPSHOT_FORMAT_VERSION),
            })
        }
    };
    Ok(SnapshotMeta { index: get_u64(header, 10), term: get_u64(header, 18), membership })
}

/// Checks the trailer (the last [`SNAPSHOT_TRAILER_LEN`] bytes of a file of `file_len` bytes whose
/// header is `header_len` bytes): end magic and data length. Returns the data length and CRC.
fn check_trailer(path: &Path, trailer: &[u8], file_len: u64, header_len: usize) -> Result<(u64, u32)> {
    let trailer_at = file_len - SNAPSHOT_TRAILER_LEN as u64;
    if trailer[12..20] != SNAPSHOT_END_MAGIC {
        return Err(StorageError::corrupt(
            path,
            trailer_at + 12,
            "snapshot end magic missing: the file is incomplete (torn or partial write) or damaged",
        ));
    }
    let data_len = get_u64(trailer, 0);
    let expected = trailer_at - header_len as u64;
    if data_len != expected {
        return Err(StorageError::corrupt(
            path,
            trailer_at,
            format!(
                "snapshot trailer says {data_len} data bytes, but the file holds {expected} between header and trailer"
            ),
        ));
    }
    Ok((data_len, get_u32(trailer, 8)))
}

/// Verifies a whole snapshot file's bytes; returns its meta and where its data is.
fn verify_bytes(path: &Path, b: &[u8]) -> Result<(SnapshotMeta, std::ops::Range<usize>)> {
    if b.len() < FIXED_HEADER_LEN {
        if b.len() >= 8 && b[0..8] != SNAPSHOT_MAGIC {
            return Err(StorageError::corrupt(path, 0, "bad magic number: not a raft-kv snapshot file"));
        }
        return Err(StorageError::corrupt(
            path,
            b.len() as u64,
            format!("snapshot file is {} bytes, shorter than a snapshot header", b.len()),
        ));
    }
    let hlen = check_fixed_header(path, b)?;
    if b.len() < hlen + SNAPSHOT_TRAILER_LEN {
        return Err(StorageError::corrupt(
            path,
            b.len() as u64,
            format!(
                "snapshot file is {} bytes, shorter than its {hlen}-byte header plus the {SNAPSHOT_TRAILER_LEN}-byte trailer",
                b.len()
            ),
        ));
    }
    let meta = decode_header(path, &b[..hlen])?;
    let trailer_at = b.len() - SNAPSHOT_TRAILER_LEN;
    let (_, data_crc) = check_trailer(path, &b[trailer_at..], b.len() as u64, hlen)?;
    if crc(&b[hlen..trailer_at]) != data_crc {
        return Err(StorageError::corrupt(
            path,
            hlen as u64,
            format!("snapshot data checksum mismatch ({} data bytes)", trailer_at - hlen),
        ));
    }
    Ok((meta, hlen..trailer_at))
}

/// Opens `path`; `None` if it does not exist.
fn open_if_exists<F: FileSystem>(fs: &F, path: &Path) -> Result<Option<F::File>> {
    match fs.open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StorageError::io(path, e)),
    }
}

/// Writes a snapshot file: header, data (streamed through [`SnapshotWriter::write`]), trailer.
///
/// It only writes `dir/name`; [`install_snapshot`] makes it the current snapshot. If the writer is
/// dropped without [`SnapshotWriter::finish`], or a call fails, the partial file stays behind (it
/// never verifies) until it is overwritten or [`remove_snapshot_temporaries`] deletes it.
#[derive(Debug)]
pub struct SnapshotWriter<F: FileSystem> {
    /// The file being written.
    file: F::File,
    /// Its path.
    path: PathBuf,
    /// Bytes not yet handed to the file (the header at first).
    buf: Vec<u8>,
    /// CRC-32 of the data written so far.
    hasher: crc32fast::Hasher,
    /// Header length.
    header_len: u64,
    /// Data bytes written so far.
    data_len: u64,
    /// Whether [`SnapshotWriter::finish`] fsyncs.
    sync: bool,
    /// Set by a failed write: the file's content is unknown, every later call fails.
    failed: bool,
    /// Bytes handed to the file since its last sync.
    unsynced: u64,
}

/// With `sync`, a snapshot being written is fdatasynced every this many bytes: the kernel then
/// writes it back in small steps instead of one burst of hundreds of MB at the end, which the log's
/// own fsyncs (on ext4, one journal for the whole file system) would have to wait behind.
pub const SNAPSHOT_SYNC_EVERY: u64 = 8 << 20;

impl<F: FileSystem> SnapshotWriter<F> {
    /// Creates (or truncates) `dir/name` for the snapshot described by `meta`. With `sync`,
    /// [`SnapshotWriter::finish`] makes the file's content durable. Refuses a membership that
    /// encodes to more than [`MAX_MEMBERSHIP_LEN`] bytes.
    pub fn create(fs: F, dir: &Path, name: &str, meta: &SnapshotMeta, sync: bool) -> Result<Self> {
        let buf = encode_header(meta);
        if buf.len() > header_len(SNAPSHOT_FORMAT_VERSION, MAX_MEMBERSHIP_LEN) {
            return Err(StorageError::InvalidArgument(format!(
                "a snapshot's membership can take at most {MAX_MEMBERSHIP_LEN} bytes, got {}",
                buf.len() - header_len(SNAPSHOT_FORMAT_VERSION, 0)
            )));
        }
        let path = dir.join(name);
        let file = fs.create(&path).map_err(|e| StorageError::io(&path, e))?;
        let header_len = buf.len() as u64;
        Ok(SnapshotWriter {
            file,
            path,
            buf,
            hasher: crc32fast::Hasher::new(),
            header_len,
            data_len: 0,
            sync,
            failed: false,
            unsynced: 0,
        })
    }

    fn check(&self) -> Result<()> {
        if self.failed {
            return Err(StorageError::io(
                &self.path,
                io::Error::other("an earlier write of this snapshot failed"),
            ));
        }
        Ok(())
    }

    /// Hands the buffer to the file; a failure marks the writer failed.
    fn flush(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            if let Err(e) = self.file.append(&self.buf) {
                self.failed = true;
                return Err(StorageError::io(&self.path, e));
            }
            self.unsynced += self.buf.len() as u64;
            self.buf.clear();
        }
        self.sync_if_due()
    }

    /// Syncs once [`SNAPSHOT_SYNC_EVERY`] bytes were handed to the file since the last sync.
    fn sync_if_due(&mut self) -> Result<()> {
        if self.sync && self.unsynced >= SNAPSHOT_SYNC_EVERY {
            if let Err(e) = self.file.sync() {
                self.failed = true;
                return Err(StorageError::io(&self.path, e));
            }
            self.unsynced = 0;
        }
        Ok(())
    }

    /// Appends `data` to the snapshot's data (buffered; large pieces go straight to the file).
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        self.check()?;
        self.hasher.update(data);
        self.data_len += data.len() as u64;
        if self.buf.len() + data.len() > WRITE_BUFFER_SIZE {
            self.flush()?;
        }
        if data.len() >= WRITE_BUFFER_SIZE {
            if let Err(e) = self.file.append(data) {
                self.failed = true;
                return Err(StorageError::io(&self.path, e));
            }
            self.unsynced += data.len() as u64;
            self.sync_if_due()?;
        } else {
            self.buf.extend_from_slice(data);
        }
        Ok(())
    }

    /// Data bytes written so far.
    pub fn data_len(&self) -> u64 {
        self.data_len
    }

    /// Writes the trailer and (with `sync`) fsyncs the file; returns the file's total length. The
    /// file is complete and, with `sync`, durable, but not yet the current snapshot: see
    /// [`install_snapshot`].
    pub fn finish(mut self) -> Result<u64> {
        self.check()?;
        let trailer = encode_trailer(self.data_len, self.hasher.clone().finalize());
        self.buf.extend_from_slice(&trailer);
        self.flush()?;
        if self.sync {
            self.file.sync().map_err(|e| StorageError::io(&self.path, e))?;
        }
        Ok(self.header_len + self.data_len + SNAPSHOT_TRAILER_LEN as u64)
    }
}

/// Makes the complete snapshot file `dir/name` the current snapshot, durably on return (with
/// `sync`). The file must already be complete and synced ([`SnapshotWriter::finish`] or
/// [`SnapshotReceiver::finish`]).
///
/// The current snapshot is first moved aside to [`SNAPSHOT_OLD`] (directory synced), then `name`
/// is renamed to [`SNAPSHOT_FILE`] (directory synced). Renaming straight over the current file
/// would free the old file's blocks inside the rename: tens of milliseconds for a 100 MB snapshot
/// (22 ms measured), on the caller's thread. Instead the displaced file's path is returned and the
/// caller deletes it wherever it likes (a leftover is cleaned up by
/// [`remove_snapshot_temporaries`]). A crash between the two renames leaves no [`SNAPSHOT_FILE`]
/// but a [`SNAPSHOT_OLD`]: [`remove_snapshot_temporaries`], run at startup, moves it back.
pub fn install_snapshot<F: FileSystem>(
    fs: &F,
    dir: &Path,
    name: &str,
    sync: bool,
) -> Result<Option<PathBuf>> {
    if name == SNAPSHOT_FILE || name == SNAPSHOT_OLD {
        return Err(StorageError::InvalidArgument(format!("cannot install {name} as the snapshot")));
    }
    let from = dir.join(name);
    let current = dir.join(SNAPSHOT_FILE);
    let old = dir.join(SNAPSHOT_OLD);
    // Check the new file exists before touching the current one.
    if open_if_exists(fs, &from)?.is_none() {
        return Err(StorageError::io(
            &from,
            io::Error::new(io::ErrorKind::NotFound, "no such snapshot file"),
        ));
    }
    let displaced = match fs.rename(&current, &old) {
        Ok(()) => {
            if sync {
                fs.sync_dir(dir).map_err(|e| StorageError::io(dir, e))?;
            }
            Some(old)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(StorageError::io(&current, e)),
    };
    fs.rename(&from, &current).map_err(|e| StorageError::io(&from, e))?;
    if sync {
        fs.sync_dir(dir).map_err(|e| StorageError::io(dir, e))?;
    }
    Ok(displaced)
}

/// Reads the whole snapshot file `path` and verifies everything (see the module docs); returns
/// its meta.
pub fn verify_snapshot_file<F: FileSystem>(fs: &F, path: &Path) -> Result<SnapshotMeta> {
    let file = fs.open(path).map_err(|e| StorageError::io(path, e))?;
    let bytes = read_all(&file).map_err(|e| StorageError::io(path, e))?;
    verify_bytes(path, &bytes).map(|(meta, _)| meta)
}

/// Reads and verifies the snapshot file `path` (any name, e.g. a received one) with one read;
/// returns its meta and data (a slice of the file's bytes).
pub fn read_snapshot_file<F: FileSystem>(fs: &F, path: &Path) -> Result<(SnapshotMeta, Bytes)> {
    let file = fs.open(path).map_err(|e| StorageError::io(path, e))?;
    let bytes = Bytes::from(read_all(&file).map_err(|e| StorageError::io(path, e))?);
    let (meta, data) = verify_bytes(path, &bytes)?;
    Ok((meta, bytes.slice(data)))
}

/// Reads and verifies the current snapshot of `dir` with one read; `None` if there is none. The
/// data is a slice of the file's bytes (no copy).
pub fn read_snapshot<F: FileSystem>(fs: &F, dir: &Path) -> Result<Option<(SnapshotMeta, Bytes)>> {
    let path = dir.join(SNAPSHOT_FILE);
    let Some(file) = open_if_exists(fs, &path)? else {
        return Ok(None);
    };
    let bytes = Bytes::from(read_all(&file).map_err(|e| StorageError::io(&path, e))?);
    let (meta, data) = verify_bytes(&path, &bytes)?;
    Ok(Some((meta, bytes.slice(data))))
}

/// Reads the current snapshot's header and trailer only (two small reads): returns its meta and
/// the file's total length, `None` if there is none. Checks the header completely and the trailer's
/// end magic and data length, not the data checksum (see [`read_snapshot`]).
pub fn read_snapshot_meta<F: FileSystem>(fs: &F, dir: &Path) -> Result<Option<(SnapshotMeta, u64)>> {
    let path = dir.join(SNAPSHOT_FILE);
    let Some(file) = open_if_exists(fs, &path)? else {
        return Ok(None);
    };
    let len = file.len().map_err(|e| StorageError::io(&path, e))?;
    let short = |what: &str| {
        StorageError::corrupt(&path, len, format!("snapshot file is {len} bytes, shorter than {what}"))
    };
    if len < FIXED_HEADER_LEN as u64 {
        return Err(short("a snapshot header"));
    }
    let mut fixed = [0u8; FIXED_HEADER_LEN];
    file.read_exact_at(&mut fixed, 0).map_err(|e| StorageError::io(&path, e))?;
    let hlen = check_fixed_header(&path, &fixed)?;
    if len < (hlen + SNAPSHOT_TRAILER_LEN) as u64 {
        return Err(short("its header plus trailer"));
    }
    let mut header = vec![0u8; hlen];
    file.read_exact_at(&mut header, 0).map_err(|e| StorageError::io(&path, e))?;
    let meta = decode_header(&path, &header)?;
    let mut trailer = [0u8; SNAPSHOT_TRAILER_LEN];
    file.read_exact_at(&mut trailer, len - SNAPSHOT_TRAILER_LEN as u64)
        .map_err(|e| StorageError::io(&path, e))?;
    check_trailer(&path, &trailer, len, hlen)?;
    Ok(Some((meta, len)))
}

/// Reads up to `max_len` raw bytes of the current snapshot file at `offset` (to send it to a
/// follower in chunks). Fewer bytes at the end of the file, none at or after it. An error if there
/// is no current snapshot.
pub fn read_snapshot_chunk<F: FileSystem>(fs: &F, dir: &Path, offset: u64, max_len: usize) -> Result<Bytes> {
    let path = dir.join(SNAPSHOT_FILE);
    let file = fs.open(&path).map_err(|e| StorageError::io(&path, e))?;
    let len = file.len().map_err(|e| StorageError::io(&path, e))?;
    let n = len.saturating_sub(offset).min(max_len as u64) as usize;
    let mut buf = vec![0u8; n];
    if n > 0 {
        file.read_exact_at(&mut buf, offset).map_err(|e| StorageError::io(&path, e))?;
    }
    Ok(Bytes::from(buf))
}

/// Removes leftover [`SNAPSHOT_TMP`], [`SNAPSHOT_RECV`] and [`SNAPSHOT_RESTORE`] files of `dir` (call at startup, before
/// writing or receiving a snapshot). With `sync`, the removals are durable on return.
pub fn remove_snapshot_temporaries<F: FileSystem>(fs: &F, dir: &Path, sync: bool) -> Result<()> {
    let current = dir.join(SNAPSHOT_FILE);
    let old = dir.join(SNAPSHOT_OLD);
    if open_if_exists(fs, &current)?.is_none() && open_if_exists(fs, &old)?.is_some() {
        // A crash inside `install_snapshot`, between moving the current snapshot aside and putting
        // the new one in its place: the moved one is still the current snapshot.
        tracing::warn!(path = %old.display(), "restoring the snapshot moved aside by an interrupted install");
        fs.rename(&old, &current).map_err(|e| StorageError::io(&old, e))?;
        if sync {
            fs.sync_dir(dir).map_err(|e| StorageError::io(dir, e))?;
        }
    }
    let mut removed = false;
    for name in [SNAPSHOT_TMP, SNAPSHOT_RECV, SNAPSHOT_RESTORE, SNAPSHOT_OLD] {
        let path = dir.join(name);
        match fs.remove_file(&path) {
            Ok(()) => {
                tracing::info!(path = %path.display(), "removed leftover temporary snapshot file");
                removed = true;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StorageError::io(&path, e)),
        }
    }
    if removed && sync {
        fs.sync_dir(dir).map_err(|e| StorageError::io(dir, e))?;
    }
    Ok(())
}

/// Receives the raw bytes of a snapshot file (as read by [`read_snapshot_chunk`] on the leader)
/// into `dir/`[`SNAPSHOT_RECV`], and verifies it when complete.
///
/// The caller checks that chunks arrive in order (a chunk's offset equals [`SnapshotReceiver::len`])
/// and, after a successful [`SnapshotReceiver::finish`], installs the file with
/// `install_snapshot(fs, dir, SNAPSHOT_RECV, sync)`.
#[derive(Debug)]
pub struct SnapshotReceiver<F: FileSystem> {
    /// The file system (to verify and remove the file).
    fs: F,
    /// The data directory.
    dir: PathBuf,
    /// `dir/`[`SNAPSHOT_RECV`].
    path: PathBuf,
    /// The file being received.
    file: F::File,
    /// Bytes received so far.
    len: u64,
    /// Whether to fsync.
    sync: bool,
    /// Set by a failed append: the file's content is unknown, every later call fails.
    failed: bool,
}

impl<F: FileSystem> SnapshotReceiver<F> {
    /// Creates (or truncates) `dir/`[`SNAPSHOT_RECV`].
    pub fn create(fs: F, dir: &Path, sync: bool) -> Result<Self> {
        let path = dir.join(SNAPSHOT_RECV);
        let file = fs.create(&path).map_err(|e| StorageError::io(&path, e))?;
        Ok(SnapshotReceiver { fs, dir: dir.to_path_buf(), path, file, len: 0, sync, failed: false })
    }

    /// Appends the next raw bytes of the file.
    pub fn append(&mut self, data: &[u8]) -> Result<()> {
        if self.failed {
            return Err(StorageError::io(
                &self.path,
                io::Error::other("an earlier write of this snapshot failed"),
            ));
        }
        if let Err(e) = self.file.append(data) {
            self.failed = true;
            return Err(StorageError::io(&self.path, e));
        }
        self.len += data.len() as u64;
        Ok(())
    }

    /// Gives the file another name in the same directory (e.g. [`SNAPSHOT_RESTORE`], so that a new
    /// receive can start in [`SNAPSHOT_RECV`] while this one is checked). The rename is not made
    /// durable: the name is temporary either way (removed at startup).
    pub fn rename_to(&mut self, name: &str) -> Result<()> {
        let to = self.dir.join(name);
        self.fs.rename(&self.path, &to).map_err(|e| StorageError::io(&self.path, e))?;
        self.path = to;
        Ok(())
    }

    /// The file's current path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes received so far (the offset the next chunk must start at).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True if nothing was received yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Completes the transfer: fsyncs (with `sync`) and verifies the whole file; returns its meta and
    /// data (read once, for the caller to load). On any failure the file is removed and the error
    /// returned: a damaged or partial snapshot is never installable.
    pub fn finish(mut self) -> Result<(SnapshotMeta, Bytes)> {
        let result = if self.failed {
            Err(StorageError::io(&self.path, io::Error::other("an earlier write of this snapshot failed")))
        } else if self.sync {
            self.file.sync().map_err(|e| StorageError::io(&self.path, e))
        } else {
            Ok(())
        }
        .and_then(|()| read_snapshot_file(&self.fs, &self.path));
        match result {
            Ok(read) => Ok(read),
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "refusing received snapshot");
                self.discard();
                Err(e)
            }
        }
    }

    /// Abandons the transfer (e.g. the leader changed) and removes the partial file.
    pub fn abort(self) {
        self.discard();
    }

    /// Removes the file, best effort: a leftover is removed at the next startup anyway.
    fn discard(self) {
        let SnapshotReceiver { fs, dir, path, file, sync, .. } = self;
        drop(file);
        let removed = fs.remove_file(&path).and_then(|()| if sync { fs.sync_dir(&dir) } else { Ok(()) });
        if let Err(e) = removed {
            tracing::warn!(path = %path.display(), error = %e, "could not remove refused snapshot file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemFs;

    fn meta() -> SnapshotMeta {
        let mut membership = Membership::from_voters(&[1, 2, 3]);
        membership.insert(4, raft::Suffrage::Learner, Bytes::from_static(b"D,h,1,2"));
        SnapshotMeta { index: 42, term: 7, membership }
    }

    #[test]
    fn header_layout_matches_the_documented_format() {
        let h = encode_header(&meta());
        let m = meta().membership.encode();
        assert_eq!(h.len(), header_len(2, m.len()));
        assert_eq!(h.len(), 30 + m.len() + 4);
        assert_eq!(&h[0..8], b"RAFTSNAP");
        assert_eq!(u16::from_le_bytes([h[8], h[9]]), 2);
        assert_eq!(get_u64(&h, 10), 42);
        assert_eq!(get_u64(&h, 18), 7);
        assert_eq!(get_u32(&h, 26) as usize, m.len());
        assert_eq!(&h[30..30 + m.len()], &m[..]);
        assert_eq!(get_u32(&h, 30 + m.len()), crc32fast::hash(&h[..30 + m.len()]));
        assert_eq!(decode_header(Path::new("x"), &h).unwrap(), meta());
        let t = encode_trailer(5, 9);
        assert_eq!((get_u64(&t, 0), get_u32(&t, 8), &t[12..]), (5, 9, &b"SNAPDONE"[..]));
    }

    #[test]
    fn large_writes_bypass_the_buffer_and_are_counted_once() {
        let fs = MemFs::new();
        let dir = Path::new("/d");
        fs.create_dir_all(dir).unwrap();
        let big: Vec<u8> = (0..(3 * WRITE_BUFFER_SIZE / 2)).map(|i| (i % 251) as u8).collect();
        let mut w = SnapshotWriter::create(fs.clone(), dir, SNAPSHOT_TMP, &meta(), true).unwrap();
        w.write(b"small").unwrap();
        w.write(&big).unwrap();
        w.write(b"tail").unwrap();
        assert_eq!(w.data_len(), 9 + big.len() as u64);
        let len = w.finish().unwrap();
        let file = fs.read_file(&dir.join(SNAPSHOT_TMP)).unwrap();
        assert_eq!(len, file.len() as u64);
        let (m, range) = verify_bytes(Path::new("x"), &file).unwrap();
        assert_eq!(m, meta());
        let want: Vec<u8> = [&b"small"[..], &big, b"tail"].concat();
        assert_eq!(&file[range], &want[..]);
    }

    /// A version 1 header, exactly as builds before membership changes wrote it.
    fn v1_header(index: u64, term: u64, voters: &[u64]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&SNAPSHOT_MAGIC);
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&index.to_le_bytes());
        b.extend_from_slice(&term.to_le_bytes());
        b.extend_from_slice(&(voters.len() as u32).to_le_bytes());
        for v in voters {
            b.extend_from_slice(&v.to_le_bytes());
        }
        let c = crc(&b);
        b.extend_from_slice(&c.to_le_bytes());
        b
    }

    #[test]
    fn a_version_1_header_reads_as_its_voters() {
        let h = v1_header(9, 3, &[1, 2, 3]);
        assert_eq!(check_fixed_header(Path::new("x"), &h).unwrap(), h.len());
        let m = decode_header(Path::new("x"), &h).unwrap();
        assert_eq!((m.index, m.term, m.membership.voters()), (9, 3, vec![1, 2, 3]));
        assert!(m.membership.learners().is_empty());
        let mut file = h.clone();
        file.extend_from_slice(b"image");
        file.extend_from_slice(&encode_trailer(5, crc(b"image")));
        let (meta, range) = verify_bytes(Path::new("x"), &file).unwrap();
        assert_eq!((meta, &file[range]), (m, &b"image"[..]));
    }

    #[test]
    fn oversized_counts_are_refused_when_writing_and_reading() {
        let fs = MemFs::new();
        let dir = Path::new("/d");
        fs.create_dir_all(dir).unwrap();
        let mut big = Membership::new();
        for id in 1..=1000u64 {
            big.insert(id, raft::Suffrage::Voter, Bytes::from(vec![b'x'; 8 << 10]));
        }
        let many = SnapshotMeta { index: 1, term: 1, membership: big };
        let err = SnapshotWriter::create(fs, dir, SNAPSHOT_TMP, &many, false).unwrap_err();
        assert!(matches!(err, StorageError::InvalidArgument(_)), "{err}");
        let mut fixed = encode_header(&meta());
        fixed[26..30].copy_from_slice(&(MAX_MEMBERSHIP_LEN as u32 + 1).to_le_bytes());
        let err = check_fixed_header(Path::new("x"), &fixed).unwrap_err();
        assert!(err.to_string().contains("membership"), "{err}");
        let mut v1 = v1_header(1, 1, &[1]);
        v1[26..30].copy_from_slice(&(MAX_VOTERS as u32 + 1).to_le_bytes());
        let err = check_fixed_header(Path::new("x"), &v1).unwrap_err();
        assert!(err.to_string().contains("voters"), "{err}");
    }
}
