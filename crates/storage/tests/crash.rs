//! Crash and corruption tests: torn tails at every byte, flipped bytes everywhere, missing files,
//! random operations with power failures (MemFs), injected I/O failures.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use common::{entries, entry, mem_dir, open, small_opts};
use raft::{Entry, HardState};
use storage::record::{FORMAT_VERSION, SEGMENT_HEADER_LEN};
use storage::{FaultOp, FileSystem, LogOptions, LogStore, MemFs, SplitMix64, StdFs, StorageError};

/// Writes `n` synced entries (term 1) into a fresh store; returns them.
fn build<F: FileSystem>(fs: &F, dir: &Path, opts: &LogOptions, n: u64, seed: u64) -> Vec<Entry> {
    let (mut store, _) = open(fs, dir, opts);
    let mut rng = SplitMix64::new(seed);
    let es = entries(1, n, 1, 40, &mut rng);
    for chunk in es.chunks(3) {
        store.append(chunk).unwrap();
        store.sync().unwrap();
    }
    store.set_hard_state(HardState { term: 1, voted_for: Some(2) }).unwrap();
    es
}

fn segment_files(names: Vec<String>) -> Vec<String> {
    names.into_iter().filter(|n| n.ends_with(".wal")).collect()
}

/// Record boundaries of a segment file's bytes: (start, end) of each record.
fn record_spans(data: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut at = SEGMENT_HEADER_LEN;
    while at < data.len() {
        if data[at..].iter().all(|&b| b == 0) {
            break; // Preallocated zeros.
        }
        // The low 28 bits of `len_kind` are the payload length (the high 4 the entry kind).
        let len = (u32::from_le_bytes(data[at + 8..at + 12].try_into().unwrap()) & 0x0FFF_FFFF) as usize;
        spans.push((at, at + 28 + len));
        at += 28 + len;
    }
    spans
}

#[test]
fn torn_tail_cut_at_every_byte_offset_gives_the_durable_prefix_on_real_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let opts = small_opts(400, 1 << 20);
    let es = build(&StdFs, &dir, &opts, 30, 7);
    let names = segment_files(StdFs.list_dir(&dir).unwrap());
    assert!(names.len() >= 3, "want several segments, got {names:?}");
    let last = dir.join(names.last().unwrap());
    let original = std::fs::read(&last).unwrap();
    let spans = record_spans(&original);
    let first_in_last = es.len() - spans.len();
    // Reopening at every offset: no fsync needed for what is tested here (no power failure).
    let opts = LogOptions { sync: false, ..opts };
    for cut in SEGMENT_HEADER_LEN..=original.len() {
        for extra in segment_files(StdFs.list_dir(&dir).unwrap()) {
            if !names.contains(&extra) {
                std::fs::remove_file(dir.join(extra)).unwrap();
            }
        }
        std::fs::write(&last, &original[..cut]).unwrap();
        let (mut store, rec) = open(&StdFs, &dir, &opts);
        let complete = spans.iter().filter(|(_, end)| *end <= cut).count();
        let want = &es[..first_in_last + complete];
        assert_eq!(rec.entries, want, "cut at {cut}");
        let boundary = spans.iter().any(|(_, end)| *end == cut) || cut == SEGMENT_HEADER_LEN;
        assert_eq!(rec.torn_tail.is_some(), !boundary, "cut at {cut}");
        if let Some(t) = &rec.torn_tail {
            assert_eq!(t.path, last);
            assert_eq!(t.offset + t.dropped, cut as u64);
        }
        // The tail is physically gone: a new entry appended now survives a reopen next to the old.
        let valid_len = spans.iter().map(|s| s.1).filter(|&e| e <= cut).max().unwrap_or(SEGMENT_HEADER_LEN);
        assert_eq!(std::fs::metadata(&last).unwrap().len(), valid_len as u64);
        let next = entry(want.len() as u64 + 1, 2, 9);
        store.append(std::slice::from_ref(&next)).unwrap();
        store.sync().unwrap();
        drop(store);
        let (_, rec2) = open(&StdFs, &dir, &opts);
        assert_eq!(rec2.torn_tail, None);
        assert_eq!(rec2.entries.last(), Some(&next));
        assert_eq!(rec2.entries.len(), want.len() + 1);
        assert_eq!(rec2.hard_state, HardState { term: 1, voted_for: Some(2) });
    }
    std::fs::write(&last, &original).unwrap();
}

#[test]
fn flipped_byte_anywhere_is_cut_only_in_the_last_record_and_refused_elsewhere() {
    let dir = mem_dir();
    let opts = small_opts(300, 1 << 20);
    // Layout of the reference log: which byte belongs to what.
    let fs = MemFs::new();
    let es = build(&fs, &dir, &opts, 16, 3);
    let names = segment_files(fs.list_dir(&dir).unwrap());
    assert!(names.len() >= 3, "{names:?}");
    let mut checked = 0;
    for (seg_no, name) in names.iter().enumerate() {
        let path = dir.join(name);
        let bytes = fs.read_file(&path).unwrap();
        let spans = record_spans(&bytes);
        let is_last_seg = seg_no + 1 == names.len();
        for offset in 0..bytes.len() {
            let fs = MemFs::new();
            build(&fs, &dir, &opts, 16, 3);
            fs.corrupt(&path, offset as u64, 0x5A).unwrap();
            let result = LogStore::open(fs.clone(), &dir, opts.clone());
            let record = spans.iter().find(|(s, e)| offset >= *s && offset < *e).copied();
            let in_last_record = is_last_seg && record.is_some() && record == spans.last().copied();
            match result {
                Ok((_, rec)) => {
                    assert!(in_last_record, "flip at {name}:{offset} was not detected");
                    assert_eq!(rec.entries, es[..es.len() - 1], "flip at {name}:{offset}");
                    let torn = rec.torn_tail.expect("torn tail reported");
                    assert_eq!(torn.path, path);
                    assert_eq!(torn.offset, record.unwrap().0 as u64);
                }
                Err(StorageError::Corrupt { path: p, offset: at, reason }) => {
                    assert!(!in_last_record, "flip in the last record must be cut, not refused: {reason}");
                    assert_eq!(p, path, "error must name the damaged file ({reason})");
                    let want_at = record.map_or(0, |r| r.0 as u64);
                    assert_eq!(at, want_at, "flip at {name}:{offset}: {reason}");
                }
                Err(e) => panic!("flip at {name}:{offset}: unexpected error {e}"),
            }
            checked += 1;
        }
    }
    assert!(checked > 500);
}

#[test]
fn flipped_byte_in_hard_state_is_refused() {
    let dir = mem_dir();
    let opts = small_opts(300, 1 << 20);
    for offset in 0..40 {
        let fs = MemFs::new();
        build(&fs, &dir, &opts, 4, 1);
        let path = dir.join("hardstate");
        fs.corrupt(&path, offset, 0x01).unwrap();
        match LogStore::open(fs.clone(), &dir, opts.clone()) {
            Err(StorageError::Corrupt { path: p, .. }) => assert_eq!(p, path),
            other => panic!("flip at {offset}: {:?}", other.map(|x| x.1)),
        }
    }
}

#[test]
fn missing_middle_segment_is_refused_naming_the_file() {
    let dir = mem_dir();
    let opts = small_opts(300, 1 << 20);
    let fs = MemFs::new();
    build(&fs, &dir, &opts, 20, 5);
    let names = segment_files(fs.list_dir(&dir).unwrap());
    assert!(names.len() >= 3);
    fs.remove_file(&dir.join(&names[1])).unwrap();
    match LogStore::open(fs.clone(), &dir, opts.clone()) {
        Err(e @ StorageError::Corrupt { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(&names[2]) && msg.contains("not contiguous"), "{msg}");
        }
        other => panic!("{:?}", other.map(|x| x.1)),
    }
}

#[test]
fn all_segments_missing_but_hard_state_present_is_refused() {
    let dir = mem_dir();
    let fs = MemFs::new();
    build(&fs, &dir, &LogOptions::default(), 3, 5);
    for name in segment_files(fs.list_dir(&dir).unwrap()) {
        fs.remove_file(&dir.join(name)).unwrap();
    }
    assert!(matches!(LogStore::open(fs, &dir, LogOptions::default()), Err(StorageError::Corrupt { .. })));
}

#[test]
fn future_format_version_and_foreign_files_are_refused() {
    let dir = mem_dir();
    let fs = MemFs::new();
    build(&fs, &dir, &LogOptions::default(), 3, 5);
    let seg = dir.join(&segment_files(fs.list_dir(&dir).unwrap())[0]);
    // Rewrite the header as version 2 with a valid checksum: reported as a version problem.
    let mut header = fs.read_file(&seg).unwrap()[..SEGMENT_HEADER_LEN].to_vec();
    header[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    let crc = crc32fast::hash(&header[..28]);
    header[28..32].copy_from_slice(&crc.to_le_bytes());
    let mut f = fs.open(&seg).unwrap();
    storage::FsFile::write_at(&mut f, &header, 0).unwrap();
    match LogStore::open(fs.clone(), &dir, LogOptions::default()) {
        Err(StorageError::UnsupportedVersion { path, found, supported }) => {
            assert_eq!((path, found, supported), (seg.clone(), FORMAT_VERSION + 1, FORMAT_VERSION));
        }
        other => panic!("{:?}", other.map(|x| x.1)),
    }
    // Not our file at all.
    storage::FsFile::write_at(&mut f, b"GARBAGE!", 0).unwrap();
    let err = LogStore::open(fs.clone(), &dir, LogOptions::default()).map(|x| x.1).unwrap_err();
    assert!(err.to_string().contains("magic"), "{err}");
}

#[test]
fn crash_while_creating_a_segment_leaves_a_removable_stub() {
    let dir = mem_dir();
    let opts = small_opts(300, 1 << 20);
    let fs = MemFs::new();
    let es = build(&fs, &dir, &opts, 10, 2);
    let stub = dir.join(format!("{:020}.wal", es.len() + 1));
    let mut f = fs.create(&stub).unwrap();
    storage::FsFile::append(&mut f, &[b'R'; 10]).unwrap();
    let (mut store, rec) = open(&fs, &dir, &opts);
    assert_eq!(rec.entries, es);
    assert_eq!(rec.torn_tail.map(|t| t.path), Some(stub.clone()));
    assert!(!fs.list_dir(&dir).unwrap().contains(&format!("{:020}.wal", es.len() + 1)));
    store.append(&[entry(11, 1, 3)]).unwrap();
    store.sync().unwrap();
}

#[test]
fn one_fdatasync_per_sync_regardless_of_batch_size() {
    let dir = mem_dir();
    let fs = MemFs::new();
    let (mut store, _) = open(&fs, &dir, &LogOptions::default());
    let mut rng = SplitMix64::new(1);
    for (i, batch) in [1u64, 64, 500].into_iter().enumerate() {
        let before = fs.stats();
        let first = store.last_index() + 1;
        store.append(&entries(first, batch, 1, 100, &mut rng)).unwrap();
        assert_eq!(fs.stats().file_syncs, before.file_syncs, "append must not sync");
        store.sync().unwrap();
        let after = fs.stats();
        assert_eq!(after.file_syncs - before.file_syncs, 1, "batch {i}");
        assert_eq!(after.dir_syncs, before.dir_syncs);
        store.sync().unwrap();
        assert_eq!(fs.stats().file_syncs, after.file_syncs, "an idle sync costs nothing");
    }
    // --unsafe-no-fsync: never syncs anything.
    let fs = MemFs::new();
    let opts = LogOptions { sync: false, ..LogOptions::default() };
    let (mut store, _) = open(&fs, &dir, &opts);
    store.append(&[entry(1, 1, 10)]).unwrap();
    store.sync().unwrap();
    store.set_hard_state(HardState { term: 1, voted_for: None }).unwrap();
    store.truncate_suffix(1).unwrap();
    assert_eq!((fs.stats().file_syncs, fs.stats().dir_syncs), (0, 0));
}

#[test]
fn torn_tail_is_logged_as_a_warning() {
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let dir = mem_dir();
    let fs = MemFs::new();
    // No preallocation: the file then ends with the last record.
    let opts = LogOptions { preallocate: 0, ..LogOptions::default() };
    build(&fs, &dir, &opts, 5, 1);
    let seg = dir.join(&segment_files(fs.list_dir(&dir).unwrap())[0]);
    let len = fs.read_file(&seg).unwrap().len() as u64;
    fs.set_len_durable(&seg, len - 3).unwrap();
    let sink = Sink::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
    let rec = tracing::subscriber::with_default(subscriber, || open(&fs, &dir, &LogOptions::default()).1);
    assert_eq!(rec.entries.len(), 4);
    let log = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    assert!(
        log.contains("WARN") && log.contains("torn tail") && log.contains(&seg.display().to_string()),
        "{log}"
    );
}

#[test]
fn preallocated_zero_tails_are_clean_ends_and_a_torn_record_before_zeros_is_cut() {
    let dir = mem_dir();
    let opts = LogOptions { preallocate: 128, ..small_opts(300, 64) };
    let fs = MemFs::new();
    let es = build(&fs, &dir, &opts, 16, 5);
    let names = segment_files(fs.list_dir(&dir).unwrap());
    assert!(names.len() >= 3, "{names:?}");
    let last = dir.join(names.last().unwrap());
    let bytes = fs.read_file(&last).unwrap();
    let spans = record_spans(&bytes);
    let end = spans.last().unwrap().1;
    assert!(bytes.len() > end && bytes[end..].iter().all(|&b| b == 0), "the active segment has a zero tail");
    // Zero tails (of sealed segments and of the active one) are clean ends.
    let (mut store, rec) = open(&fs, &dir, &opts);
    assert_eq!(rec.entries, es);
    assert!(rec.torn_tail.is_none(), "{:?}", rec.torn_tail);
    // New records go after the last record, not after the zeros.
    let more = vec![entry(17, 1, 40), entry(18, 1, 3)];
    store.append(&more).unwrap();
    store.sync().unwrap();
    drop(store);
    let (_, rec) = open(&fs, &dir, &opts);
    assert_eq!(rec.entries, [es.clone(), more.clone()].concat());
    // A damaged last record followed by zeros is a torn tail: cut, the rest kept.
    let names = segment_files(fs.list_dir(&dir).unwrap());
    let last = dir.join(names.last().unwrap());
    let bytes = fs.read_file(&last).unwrap();
    let spans = record_spans(&bytes);
    let (start, stop) = *spans.last().unwrap();
    assert!(bytes[stop..].iter().all(|&b| b == 0) && bytes.len() > stop);
    fs.corrupt(&last, (stop - 1) as u64, 0x5A).unwrap();
    let (_, rec) = open(&fs, &dir, &opts);
    assert_eq!(rec.entries, [es, more[..1].to_vec()].concat());
    let torn = rec.torn_tail.expect("torn tail reported");
    assert_eq!((torn.path, torn.offset), (last, start as u64));
}

#[test]
fn a_log_written_without_preallocation_is_continued_with_it_and_back() {
    let dir = mem_dir();
    let fs = MemFs::new();
    let plain = small_opts(300, 64);
    let prealloc = LogOptions { preallocate: 100, ..plain.clone() };
    let mut all = build(&fs, &dir, &plain, 10, 9);
    for (round, opts) in [&prealloc, &plain, &prealloc].into_iter().enumerate() {
        let (mut store, rec) = open(&fs, &dir, opts);
        assert_eq!(rec.entries, all, "round {round}");
        assert!(rec.torn_tail.is_none(), "round {round}: {:?}", rec.torn_tail);
        let next = all.len() as u64 + 1;
        let more: Vec<Entry> = (next..next + 7).map(|i| entry(i, 1, (i as usize * 13) % 40)).collect();
        store.append(&more).unwrap();
        store.sync().unwrap();
        all.extend(more);
    }
    let (_, rec) = open(&fs, &dir, &plain);
    assert_eq!(rec.entries, all);
}

/// The outcome a failed operation may have had, for the crash model.
struct Expect {
    /// The current log (index i at position i - 1); after a crash the log must be a prefix of it.
    log: Vec<Entry>,
    /// Entries up to here must survive a crash.
    durable: u64,
    /// The hard states the disk may hold.
    hard_states: Vec<HardState>,
    /// Bounds of the first index after a crash (compaction may be cut short by a failure).
    first: (u64, u64),
}

/// Random operations, syncs at random points, optional injected I/O failure, power failure, reopen:
/// every synced entry is there with the right content, nothing else but a prefix of the unsynced
/// appends, and nothing truncated comes back. Several crash rounds per seed.
#[test]
fn random_operations_then_power_failure_keep_every_synced_entry() {
    let dir = mem_dir();
    let seeds: u64 = std::env::var("STORAGE_CRASH_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(400);
    for seed in 0..seeds {
        let mut rng = SplitMix64::new(seed);
        let fs = MemFs::new();
        let opts = LogOptions {
            preallocate: [0, 16, 64, 1000][rng.below(4) as usize],
            ..small_opts(100 + rng.below(500), 1 + rng.below(300) as usize)
        };
        let (mut store, _) = open(&fs, &dir, &opts);
        let mut x =
            Expect { log: Vec::new(), durable: 0, hard_states: vec![HardState::default()], first: (1, 1) };
        let mut term = 1;
        // Syncs started with `start_sync` and not run yet: (the sync, last index when started).
        let mut pending: Vec<(storage::LogSync<MemFs>, u64)> = Vec::new();
        for round in 0..4 {
            let steps = rng.below(60);
            let fault_at = if rng.below(3) == 0 { Some(rng.below(steps + 1)) } else { None };
            for step in 0..steps {
                if fault_at == Some(step) {
                    let op = [FaultOp::Write, FaultOp::Sync, FaultOp::SyncDir][rng.below(3) as usize];
                    fs.fail_next(op, 1);
                }
                let last = x.log.len() as u64;
                let first = store.first_index();
                let result = match rng.below(12) {
                    10 => match store.start_sync() {
                        Ok(Some(sync)) => {
                            pending.push((sync, last));
                            Ok(())
                        }
                        Ok(None) => {
                            // Nothing new since the last sync or start_sync: durable once the
                            // syncs already started have run.
                            if pending.is_empty() {
                                x.durable = last;
                            }
                            Ok(())
                        }
                        Err(e) => Err(e),
                    },
                    11 if !pending.is_empty() => {
                        // Run any of them, in any order: each covers what was appended before it.
                        let (sync, upto) = pending.swap_remove(rng.below(pending.len() as u64) as usize);
                        if let Err(e) = sync.run() {
                            assert!(fault_at.is_some(), "seed {seed}: unexpected error {e}");
                            // The store cannot know: its owner stops using it.
                            break;
                        }
                        x.durable = x.durable.max(upto);
                        Ok(())
                    }
                    0..=3 => {
                        let batch = entries(last + 1, 1 + rng.below(6), term, 50, &mut rng);
                        x.log.extend(batch.iter().cloned());
                        store.append(&batch)
                    }
                    4..=5 => {
                        let r = store.sync();
                        if r.is_ok() {
                            x.durable = last;
                        }
                        r
                    }
                    6 => {
                        let from = first + rng.below(last + 2 - first);
                        term += 1;
                        let r = store.truncate_suffix(from);
                        // Syncs started before a truncation are abandoned by their owner (they
                        // may speak of entries that are gone); a truncation past the end is a no-op.
                        if from <= last {
                            pending.clear();
                        }
                        // Entries >= from may or may not be gone if the truncation failed midway;
                        // those below stay durable. Once it succeeded they are gone for good.
                        x.durable = x.durable.min(from.saturating_sub(1));
                        if r.is_ok() {
                            x.log.truncate(from.saturating_sub(1) as usize);
                        }
                        r
                    }
                    7 => {
                        let r = store.compact(rng.below(last + 1));
                        x.first = if r.is_ok() {
                            (store.first_index(), store.first_index())
                        } else {
                            (x.first.0, u64::MAX)
                        };
                        r
                    }
                    _ => {
                        term += 1;
                        let hs = HardState { term, voted_for: Some(rng.below(3)) };
                        let r = store.set_hard_state(hs);
                        if r.is_ok() {
                            x.hard_states = vec![hs];
                        } else {
                            x.hard_states.push(hs);
                        }
                        r
                    }
                };
                if let Err(e) = result {
                    assert!(fault_at.is_some(), "seed {seed}: unexpected error {e}");
                    // Poisoned from now on.
                    assert!(matches!(store.sync(), Err(StorageError::Poisoned)), "seed {seed}");
                    break;
                }
            }
            for op in [FaultOp::Write, FaultOp::Sync, FaultOp::SyncDir] {
                fs.fail_next(op, 0);
            }
            fs.crash(rng.next_u64());
            drop(store);
            // A sync started before the crash fails, like any handle of the dead process.
            for (sync, _) in pending.drain(..) {
                assert!(sync.run().is_err(), "seed {seed}: a sync handle survived a crash");
            }
            let (s, rec) = match LogStore::open(fs.clone(), &dir, opts.clone()) {
                Ok(x) => x,
                Err(e) => panic!("seed {seed} round {round}: reopen after crash failed: {e}"),
            };
            store = s;
            let rlast = rec.first_index - 1 + rec.entries.len() as u64;
            assert!(
                rec.first_index >= x.first.0 && rec.first_index <= x.first.1,
                "seed {seed}: first {}",
                rec.first_index
            );
            assert!(
                rlast >= x.durable,
                "seed {seed} round {round}: lost synced entries: have {rlast}, synced {}",
                x.durable
            );
            assert!(rlast <= x.log.len() as u64, "seed {seed}: entries beyond what was appended");
            assert_eq!(
                rec.entries,
                x.log[(rec.first_index - 1) as usize..rlast as usize],
                "seed {seed} round {round}: content differs (resurrected or damaged entries)"
            );
            assert!(x.hard_states.contains(&rec.hard_state), "seed {seed}: hard state {:?}", rec.hard_state);
            x.log.truncate(rlast as usize);
            x.durable = rlast;
            x.first = (rec.first_index, rec.first_index);
            x.hard_states = vec![rec.hard_state];
            term += 1;
        }
    }
}

#[test]
fn poisoned_store_refuses_everything_and_reopen_recovers() {
    let dir = mem_dir();
    let fs = MemFs::new();
    let (mut store, _) = open(&fs, &dir, &LogOptions::default());
    store.append(&[entry(1, 1, 10)]).unwrap();
    store.sync().unwrap();
    store.append(&[entry(2, 1, 10)]).unwrap();
    fs.fail_next(FaultOp::Sync, 1);
    assert!(matches!(store.sync(), Err(StorageError::Io { .. })));
    // A retry must not report success: the failed fsync may have dropped the data.
    assert!(matches!(store.sync(), Err(StorageError::Poisoned)));
    assert!(matches!(store.append(&[entry(3, 1, 1)]), Err(StorageError::Poisoned)));
    assert!(matches!(store.entry(1), Err(StorageError::Poisoned)));
    drop(store);
    let (_, rec) = open(&fs, &dir, &LogOptions::default());
    assert_eq!(rec.entries[0], entry(1, 1, 10));
}

#[test]
fn reads_span_sealed_segments_file_and_buffer() {
    let dir = PathBuf::from("/r");
    let fs = MemFs::new();
    let opts = small_opts(200, 100);
    let (mut store, _) = open(&fs, &dir, &opts);
    let mut rng = SplitMix64::new(9);
    let es = entries(1, 40, 1, 30, &mut rng);
    store.append(&es).unwrap();
    // Part of the active segment is in the file, part still buffered: every read must agree.
    assert!(store.segment_count() > 2);
    assert_eq!(store.entries(0, 100).unwrap(), es);
    for lo in 1..=41 {
        for hi in lo..=42 {
            assert_eq!(store.entries(lo, hi).unwrap(), es[(lo - 1) as usize..(hi - 1).min(40) as usize]);
        }
        assert_eq!(store.entry(lo).unwrap(), es.get((lo - 1) as usize).cloned());
    }
    // Corruption of a sealed segment after open is detected by reads, naming the file.
    let first = dir.join(format!("{:020}.wal", 1));
    fs.corrupt(&first, SEGMENT_HEADER_LEN as u64 + 30, 0xFF).unwrap();
    match store.entry(1) {
        Err(StorageError::Corrupt { path, .. }) => assert_eq!(path, first),
        other => panic!("{other:?}"),
    }
}

#[test]
fn valid_records_with_non_consecutive_indexes_are_refused() {
    let dir = mem_dir();
    let fs = MemFs::new();
    build(&fs, &dir, &LogOptions::default(), 6, 4);
    let seg = dir.join(&segment_files(fs.list_dir(&dir).unwrap())[0]);
    let bytes = fs.read_file(&seg).unwrap();
    let (start, _) = record_spans(&bytes)[2];
    // Give record 3 the index 4, with a correct header checksum: only the sequence check can see it.
    let mut header = bytes[start..start + 28].to_vec();
    header[12..20].copy_from_slice(&4u64.to_le_bytes());
    let crc = crc32fast::hash(&header[4..28]);
    header[0..4].copy_from_slice(&crc.to_le_bytes());
    let mut f = fs.open(&seg).unwrap();
    storage::FsFile::write_at(&mut f, &header, start as u64).unwrap();
    match LogStore::open(fs.clone(), &dir, LogOptions::default()) {
        Err(StorageError::Corrupt { path, offset, reason }) => {
            assert_eq!((path, offset), (seg, start as u64));
            assert!(reason.contains("expected a record for index 3, found index 4"), "{reason}");
        }
        other => panic!("{:?}", other.map(|x| x.1)),
    }
}
