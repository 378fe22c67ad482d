//! Helpers shared by the storage integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use bytes::Bytes;
use raft::{Entry, EntryKind};
use storage::{FileSystem, LogOptions, LogStore, Recovered, SplitMix64};

/// The data directory used for MemFs tests.
pub fn mem_dir() -> PathBuf {
    PathBuf::from("/data/node")
}

/// Deterministic payload for entry (index, term): self-describing so any mix-up is visible.
pub fn payload(index: u64, term: u64, len: usize) -> Bytes {
    let tag = format!("[{index}:{term}]");
    Bytes::from(tag.bytes().cycle().take(len).collect::<Vec<u8>>())
}

/// The deterministic kind of entry (index, term): one in seven is a configuration entry, so the
/// kind bits of the record format are exercised by every test that writes entries.
pub fn kind(index: u64, term: u64) -> EntryKind {
    if (index + term).is_multiple_of(7) {
        EntryKind::Config
    } else {
        EntryKind::Normal
    }
}

/// An entry with the deterministic payload and kind.
pub fn entry(index: u64, term: u64, len: usize) -> Entry {
    Entry { index, term, kind: kind(index, term), data: payload(index, term, len) }
}

/// `n` entries starting at `first` of `term`, payload sizes drawn from `rng` in `0..max_len`.
pub fn entries(first: u64, n: u64, term: u64, max_len: u64, rng: &mut SplitMix64) -> Vec<Entry> {
    (first..first + n).map(|i| entry(i, term, rng.below(max_len) as usize)).collect()
}

/// Opens a store, panicking with the error (tests only).
pub fn open<F: FileSystem>(fs: &F, dir: &Path, opts: &LogOptions) -> (LogStore<F>, Recovered) {
    match LogStore::open(fs.clone(), dir, opts.clone()) {
        Ok(x) => x,
        Err(e) => panic!("open failed: {e}"),
    }
}

/// Small segments and buffers so few entries exercise rollover and buffer flushes.
pub fn small_opts(segment_size: u64, write_buffer_size: usize) -> LogOptions {
    LogOptions { segment_size, sync: true, write_buffer_size, preallocate: 0 }
}
