//! Snapshot files and the log operations around them: round trips on real files and MemFs, chunked
//! transfer through `SnapshotReceiver`, refusal of every damaged or partial file, `LogStore::reset`
//! and `open_after`, and crashes at every single step (MemFs operation budget + power failure) of
//! taking a snapshot and of installing a received one.

mod common;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use common::{entries, mem_dir, open, small_opts};
use raft::{Entry, HardState};
use storage::snapshot::{SNAPSHOT_END_MAGIC, SNAPSHOT_TRAILER_LEN};
use storage::{
    install_snapshot, read_snapshot, read_snapshot_chunk, read_snapshot_meta, remove_snapshot_temporaries,
    verify_snapshot_file, FileSystem, FsFile, LogOptions, LogStore, MemFs, SnapshotMeta, SnapshotReceiver,
    SnapshotWriter, SplitMix64, StdFs, StorageError, SNAPSHOT_FILE, SNAPSHOT_RECV, SNAPSHOT_TMP,
};

type Result<T> = std::result::Result<T, StorageError>;

/// A deterministic state machine image of `len` bytes.
fn image(len: usize, salt: u64) -> Vec<u8> {
    let mut rng = SplitMix64::new(salt);
    (0..len).map(|_| rng.below(256) as u8).collect()
}

fn meta(index: u64, term: u64, voters: &[u64]) -> SnapshotMeta {
    SnapshotMeta { index, term, membership: raft::Membership::from_voters(voters) }
}

/// Writes `dir/name` with a `SnapshotWriter`, feeding `data` in pieces of `piece` bytes.
fn write_file<F: FileSystem>(
    fs: &F,
    dir: &Path,
    name: &str,
    m: &SnapshotMeta,
    data: &[u8],
    piece: usize,
) -> Result<u64> {
    let mut w = SnapshotWriter::create(fs.clone(), dir, name, m, true)?;
    for chunk in data.chunks(piece.max(1)) {
        w.write(chunk)?;
    }
    w.finish()
}

/// Takes a snapshot the way a node does: write the temporary file, then install it.
fn take<F: FileSystem>(fs: &F, dir: &Path, m: &SnapshotMeta, data: &[u8]) -> Result<()> {
    write_file(fs, dir, SNAPSHOT_TMP, m, data, 700)?;
    install_snapshot(fs, dir, SNAPSHOT_TMP, true).map(drop)
}

/// Streams the current snapshot of `from` into `to` through a `SnapshotReceiver`, `chunk` bytes at a
/// time, and installs it.
fn transfer<F: FileSystem, G: FileSystem>(
    from: (&F, &Path),
    to: (&G, &Path),
    chunk: usize,
) -> Result<SnapshotMeta> {
    let mut r = SnapshotReceiver::create(to.0.clone(), to.1, true)?;
    loop {
        let bytes = read_snapshot_chunk(from.0, from.1, r.len(), chunk)?;
        if bytes.is_empty() {
            break;
        }
        assert!(bytes.len() <= chunk);
        r.append(&bytes)?;
    }
    let (m, _) = r.finish()?;
    install_snapshot(to.0, to.1, SNAPSHOT_RECV, true)?;
    Ok(m)
}

fn expect_corrupt(r: Result<SnapshotMeta>, what: &str) -> String {
    match r {
        Err(StorageError::Corrupt { reason, .. }) => reason,
        other => panic!("{what}: expected a corruption error, got {other:?}"),
    }
}

fn file_bytes<F: FileSystem>(fs: &F, path: &Path) -> Vec<u8> {
    let f = fs.open(path).unwrap();
    let mut buf = vec![0u8; f.len().unwrap() as usize];
    f.read_exact_at(&mut buf, 0).unwrap();
    buf
}

fn put_file<F: FileSystem>(fs: &F, path: &Path, bytes: &[u8]) {
    let mut f = fs.create(path).unwrap();
    f.append(bytes).unwrap();
    f.sync().unwrap();
}

fn round_trip<F: FileSystem>(fs: &F, dir: &Path) {
    fs.create_dir_all(dir).unwrap();
    assert_eq!(read_snapshot(fs, dir).unwrap(), None);
    assert_eq!(read_snapshot_meta(fs, dir).unwrap(), None);
    assert!(read_snapshot_chunk(fs, dir, 0, 10).is_err(), "no snapshot to send");
    let cases = [
        (meta(17, 3, &[1, 2, 3]), image(5000, 1), 333),
        (meta(18, 3, &[]), Vec::new(), 1),
        (meta(u64::MAX, u64::MAX, &[u64::MAX, 0, 9]), image(3 << 20, 2), 700_000),
        (meta(19, 4, &(1..=1024).collect::<Vec<_>>()), image(10, 3), 3),
    ];
    for (m, data, piece) in cases {
        let len = write_file(fs, dir, SNAPSHOT_TMP, &m, &data, piece).unwrap();
        assert_eq!(verify_snapshot_file(fs, &dir.join(SNAPSHOT_TMP)).unwrap(), m);
        install_snapshot(fs, dir, SNAPSHOT_TMP, true).unwrap();
        assert!(!fs.list_dir(dir).unwrap().contains(&SNAPSHOT_TMP.to_string()), "install renames");
        let (got, bytes) = read_snapshot(fs, dir).unwrap().unwrap();
        assert_eq!(got, m);
        assert_eq!(bytes, Bytes::from(data.clone()));
        assert_eq!(read_snapshot_meta(fs, dir).unwrap(), Some((m.clone(), len)));
        let file = file_bytes(fs, &dir.join(SNAPSHOT_FILE));
        assert_eq!(file.len() as u64, len);
        assert_eq!(len, 30 + m.membership.encode().len() as u64 + 4 + data.len() as u64 + 20);
        // Chunks at and around the end of the file.
        assert_eq!(read_snapshot_chunk(fs, dir, 0, 5).unwrap(), &file[..5]);
        assert_eq!(read_snapshot_chunk(fs, dir, len - 3, 10).unwrap(), &file[file.len() - 3..]);
        assert!(read_snapshot_chunk(fs, dir, len, 10).unwrap().is_empty());
        assert!(read_snapshot_chunk(fs, dir, len + 100, 10).unwrap().is_empty());
        assert!(read_snapshot_chunk(fs, dir, 0, 0).unwrap().is_empty());
    }
}

#[test]
fn round_trip_on_real_files() {
    let tmp = tempfile::tempdir().unwrap();
    round_trip(&StdFs, &tmp.path().join("node"));
}

#[test]
fn round_trip_on_memfs_survives_a_power_failure() {
    let fs = MemFs::new();
    let dir = mem_dir();
    round_trip(&fs, &dir);
    let before = read_snapshot(&fs, &dir).unwrap();
    for seed in 0..20 {
        fs.crash(seed);
        assert_eq!(read_snapshot(&fs, &dir).unwrap(), before, "installed snapshots are durable");
    }
}

#[test]
fn chunks_reassembled_through_the_receiver_equal_the_file_and_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let leader = tmp.path().join("leader");
    StdFs.create_dir_all(&leader).unwrap();
    let m = meta(99, 5, &[1, 2, 3, 4, 5]);
    let data = image(20_000, 9);
    take(&StdFs, &leader, &m, &data).unwrap();
    let original = std::fs::read(leader.join(SNAPSHOT_FILE)).unwrap();
    for (i, chunk) in
        [1usize, 7, 64, 4096, original.len() - 1, original.len(), original.len() + 5].into_iter().enumerate()
    {
        // Real files to real files, and real files to MemFs.
        let follower = tmp.path().join(format!("follower{i}"));
        StdFs.create_dir_all(&follower).unwrap();
        assert_eq!(transfer((&StdFs, &leader), (&StdFs, &follower), chunk).unwrap(), m, "chunk {chunk}");
        assert_eq!(std::fs::read(follower.join(SNAPSHOT_FILE)).unwrap(), original);
        let mem = MemFs::new();
        mem.create_dir_all(&mem_dir()).unwrap();
        assert_eq!(transfer((&StdFs, &leader), (&mem, &mem_dir()), chunk).unwrap(), m, "chunk {chunk}");
        let (got, bytes) = read_snapshot(&mem, &mem_dir()).unwrap().unwrap();
        assert_eq!((got, &bytes[..]), (m.clone(), &data[..]));
        assert!(!mem.list_dir(&mem_dir()).unwrap().contains(&SNAPSHOT_RECV.to_string()));
    }
}

/// A small snapshot file and its parts' offsets: (bytes, header length).
fn small_file() -> (Vec<u8>, usize) {
    let fs = MemFs::new();
    let dir = mem_dir();
    fs.create_dir_all(&dir).unwrap();
    write_file(&fs, &dir, SNAPSHOT_TMP, &meta(12, 2, &[1, 2, 3]), &image(40, 5), 9).unwrap();
    let membership_len = meta(12, 2, &[1, 2, 3]).membership.encode().len();
    (fs.read_file(&dir.join(SNAPSHOT_TMP)).unwrap(), 30 + membership_len + 4)
}

#[test]
fn every_flipped_byte_is_refused() {
    let (good, header_len) = small_file();
    let fs = MemFs::new();
    let dir = mem_dir();
    fs.create_dir_all(&dir).unwrap();
    let path = dir.join(SNAPSHOT_FILE);
    put_file(&fs, &path, &good);
    assert!(verify_snapshot_file(&fs, &path).is_ok());
    let trailer_at = good.len() - SNAPSHOT_TRAILER_LEN;
    for offset in 0..good.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut bad = good.clone();
            bad[offset] ^= mask;
            put_file(&fs, &path, &bad);
            let what = format!("byte {offset} ^ {mask:#x}");
            let reason = expect_corrupt(verify_snapshot_file(&fs, &path), &what);
            assert!(!reason.is_empty());
            assert!(read_snapshot(&fs, &dir).is_err(), "{what}");
            // The cheap check sees everything but the data and its checksum.
            let data_or_crc = (header_len..trailer_at).contains(&offset)
                || (trailer_at + 8..trailer_at + 12).contains(&offset);
            assert_eq!(read_snapshot_meta(&fs, &dir).is_err(), !data_or_crc, "{what}");
        }
    }
    // The reasons are precise.
    let reason_at = |offset: usize| {
        let mut bad = good.clone();
        bad[offset] ^= 0x01;
        put_file(&fs, &path, &bad);
        expect_corrupt(verify_snapshot_file(&fs, &path), "reason")
    };
    assert!(reason_at(0).contains("magic"));
    assert!(reason_at(8).contains("header checksum"), "a flipped version byte fails the header checksum");
    assert!(reason_at(12).contains("header checksum"));
    assert!(reason_at(header_len).contains("data checksum"));
    assert!(reason_at(trailer_at).contains("data bytes"));
    assert!(reason_at(good.len() - 1).contains("end magic"));
}

#[test]
fn every_truncation_and_any_extra_bytes_are_refused() {
    let (good, _) = small_file();
    let fs = MemFs::new();
    let dir = mem_dir();
    fs.create_dir_all(&dir).unwrap();
    let path = dir.join(SNAPSHOT_FILE);
    for len in 0..good.len() {
        put_file(&fs, &path, &good[..len]);
        expect_corrupt(verify_snapshot_file(&fs, &path), &format!("cut to {len}"));
        assert!(read_snapshot(&fs, &dir).is_err(), "cut to {len}");
        assert!(read_snapshot_meta(&fs, &dir).is_err(), "cut to {len}");
    }
    for extra in [&b"x"[..], &SNAPSHOT_END_MAGIC, &good[good.len() - SNAPSHOT_TRAILER_LEN..]] {
        put_file(&fs, &path, &[&good[..], extra].concat());
        expect_corrupt(verify_snapshot_file(&fs, &path), "extended");
        assert!(read_snapshot_meta(&fs, &dir).is_err());
    }
}

#[test]
fn another_format_version_is_refused() {
    let (mut file, header_len) = small_file();
    file[8..10].copy_from_slice(&3u16.to_le_bytes());
    let crc = crc32fast::hash(&file[..header_len - 4]);
    file[header_len - 4..header_len].copy_from_slice(&crc.to_le_bytes());
    let fs = MemFs::new();
    let dir = mem_dir();
    fs.create_dir_all(&dir).unwrap();
    put_file(&fs, &dir.join(SNAPSHOT_FILE), &file);
    for err in [
        verify_snapshot_file(&fs, &dir.join(SNAPSHOT_FILE)).unwrap_err(),
        read_snapshot(&fs, &dir).unwrap_err(),
        read_snapshot_meta(&fs, &dir).unwrap_err(),
    ] {
        assert!(matches!(err, StorageError::UnsupportedVersion { found: 3, supported: 2, .. }), "{err}");
    }
}

#[test]
fn receiver_refuses_damaged_or_partial_files_and_leaves_the_old_snapshot() {
    let fs = MemFs::new();
    let dir = mem_dir();
    fs.create_dir_all(&dir).unwrap();
    let old = meta(5, 1, &[1, 2, 3]);
    take(&fs, &dir, &old, &image(300, 1)).unwrap();
    let old_bytes = fs.read_file(&dir.join(SNAPSHOT_FILE)).unwrap();
    let (new, _) = small_file();
    let mut flipped = new.clone();
    flipped[40] ^= 0x10;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("partial", new[..new.len() - 5].to_vec()),
        ("header only", new[..58].to_vec()),
        ("flipped", flipped),
        ("extra", [&new[..], b"zz"].concat()),
        ("empty", Vec::new()),
        ("the old file twice", [&old_bytes[..], &old_bytes[..]].concat()),
    ];
    for (what, bytes) in cases {
        let mut r = SnapshotReceiver::create(fs.clone(), &dir, true).unwrap();
        for chunk in bytes.chunks(16) {
            r.append(chunk).unwrap();
        }
        assert_eq!(r.len(), bytes.len() as u64);
        let err = r.finish().unwrap_err();
        assert!(matches!(err, StorageError::Corrupt { .. }), "{what}: {err}");
        assert!(!fs.list_dir(&dir).unwrap().contains(&SNAPSHOT_RECV.to_string()), "{what}: recv file left");
        assert!(install_snapshot(&fs, &dir, SNAPSHOT_RECV, true).is_err(), "{what}: nothing to install");
        assert_eq!(fs.read_file(&dir.join(SNAPSHOT_FILE)).unwrap(), old_bytes, "{what}");
        assert_eq!(read_snapshot(&fs, &dir).unwrap().unwrap().0, old, "{what}");
    }
    // An aborted transfer leaves nothing either.
    let mut r = SnapshotReceiver::create(fs.clone(), &dir, true).unwrap();
    r.append(&new[..10]).unwrap();
    r.abort();
    assert!(!fs.list_dir(&dir).unwrap().contains(&SNAPSHOT_RECV.to_string()));
}

#[test]
fn temporaries_are_removed_and_the_current_snapshot_is_kept() {
    let fs = MemFs::new();
    let dir = mem_dir();
    fs.create_dir_all(&dir).unwrap();
    remove_snapshot_temporaries(&fs, &dir, true).unwrap();
    take(&fs, &dir, &meta(3, 1, &[1]), b"abc").unwrap();
    write_file(&fs, &dir, SNAPSHOT_TMP, &meta(4, 1, &[1]), b"abcd", 2).unwrap();
    put_file(&fs, &dir.join(SNAPSHOT_RECV), b"partial");
    remove_snapshot_temporaries(&fs, &dir, true).unwrap();
    fs.crash(7);
    let names = fs.list_dir(&dir).unwrap();
    assert!(names.contains(&SNAPSHOT_FILE.to_string()));
    assert!(
        !names.contains(&SNAPSHOT_TMP.to_string()) && !names.contains(&SNAPSHOT_RECV.to_string()),
        "{names:?}"
    );
    assert_eq!(read_snapshot(&fs, &dir).unwrap().unwrap().0, meta(3, 1, &[1]));
    assert!(matches!(
        install_snapshot(&fs, &dir, SNAPSHOT_FILE, true),
        Err(StorageError::InvalidArgument(_))
    ));
}

fn open_after<F: FileSystem>(
    fs: &F,
    dir: &Path,
    opts: &LogOptions,
    snapshot_index: u64,
) -> (LogStore<F>, storage::Recovered) {
    match LogStore::open_after(fs.clone(), dir, opts.clone(), snapshot_index) {
        Ok(x) => x,
        Err(e) => panic!("open_after({snapshot_index}) failed: {e}"),
    }
}

/// Appends `es` in batches of 3, syncing each.
fn append_synced<F: FileSystem>(store: &mut LogStore<F>, es: &[Entry]) {
    for chunk in es.chunks(3) {
        store.append(chunk).unwrap();
        store.sync().unwrap();
    }
}

fn reset_then_use<F: FileSystem>(fs: &F, dir: &Path) {
    let opts = small_opts(300, 64);
    let mut rng = SplitMix64::new(3);
    let (mut store, _) = open(fs, dir, &opts);
    append_synced(&mut store, &entries(1, 30, 1, 40, &mut rng));
    store.append(&entries(31, 2, 1, 40, &mut rng)).unwrap(); // buffered, dropped by reset
    let hs = HardState { term: 4, voted_for: Some(2) };
    store.set_hard_state(hs).unwrap();
    assert!(store.segment_count() > 3);
    assert!(matches!(store.reset(0), Err(StorageError::InvalidArgument(_))));
    store.reset(100).unwrap();
    assert_eq!((store.first_index(), store.last_index(), store.segment_count()), (100, 99, 1));
    assert!(store.entries(0, u64::MAX).unwrap().is_empty());
    assert_eq!(store.hard_state(), hs);
    let wal: Vec<String> = fs.list_dir(dir).unwrap().into_iter().filter(|n| n.ends_with(".wal")).collect();
    assert_eq!(wal, vec!["00000000000000000100.wal".to_string()]);
    assert!(matches!(store.append(&entries(99, 1, 4, 5, &mut rng)), Err(StorageError::InvalidArgument(_))));

    let es = entries(100, 40, 4, 40, &mut rng);
    append_synced(&mut store, &es);
    assert_eq!(store.entries(0, u64::MAX).unwrap(), es);
    assert_eq!(store.entry(120).unwrap().as_ref(), Some(&es[20]));
    store.truncate_suffix(130).unwrap();
    assert!(matches!(store.truncate_suffix(99), Err(StorageError::InvalidArgument(_))));
    let mut es = es[..30].to_vec();
    let more = entries(130, 5, 5, 40, &mut rng);
    append_synced(&mut store, &more);
    es.extend(more);
    assert_eq!(store.entries(100, 200).unwrap(), es);
    drop(store);

    let (mut store, rec) = open_after(fs, dir, &opts, 99);
    assert_eq!((rec.first_index, &rec.entries, rec.hard_state), (100, &es, hs));
    store.compact(120).unwrap();
    let first = store.first_index();
    assert!(first > 100 && first <= 121, "compacted to {first}");
    assert_eq!(store.entries(0, u64::MAX).unwrap(), es[(first - 100) as usize..]);
    drop(store);
    let (mut store, rec) = open_after(fs, dir, &opts, 120);
    assert_eq!((rec.first_index, &rec.entries[..]), (first, &es[(first - 100) as usize..]));
    // A second reset, to an index below the current log (a snapshot the log does not continue).
    store.reset(110).unwrap();
    store.append(&entries(110, 2, 6, 10, &mut rng)).unwrap();
    store.sync().unwrap();
    drop(store);
    let (_, rec) = open_after(fs, dir, &opts, 109);
    assert_eq!((rec.first_index, rec.entries.len()), (110, 2));
}

#[test]
fn reset_then_append_truncate_compact_and_reopen_on_real_files() {
    let tmp = tempfile::tempdir().unwrap();
    reset_then_use(&StdFs, &tmp.path().join("log"));
}

#[test]
fn reset_then_append_truncate_compact_and_reopen_on_memfs() {
    let fs = MemFs::new();
    reset_then_use(&fs, &mem_dir());
}

#[test]
fn reset_is_durable_on_return() {
    for seed in 0..50 {
        let fs = MemFs::new();
        let dir = mem_dir();
        let opts = small_opts(200, 64);
        let (mut store, _) = open(&fs, &dir, &opts);
        append_synced(&mut store, &entries(1, 20, 1, 30, &mut SplitMix64::new(seed)));
        store.reset(50).unwrap();
        fs.crash(seed);
        drop(store);
        let (_, rec) = open_after(&fs, &dir, &opts, 49);
        assert_eq!((rec.first_index, rec.entries.len(), rec.torn_tail), (50, 0, None), "seed {seed}");
    }
}

#[test]
fn open_after_a_snapshot() {
    let fs = MemFs::new();
    let dir = mem_dir();
    let opts = small_opts(200, 64);
    let (mut store, _) = open(&fs, &dir, &opts);
    let es = entries(1, 40, 1, 30, &mut SplitMix64::new(1));
    append_synced(&mut store, &es);
    store.set_hard_state(HardState { term: 1, voted_for: None }).unwrap();
    store.compact(20).unwrap();
    let first = store.first_index();
    assert!(first > 5 && first <= 21);
    drop(store);

    // Covered entries are returned too, as long as their segment is followed by none that starts
    // at or below `s + 1`.
    for s in [first - 1, first] {
        let (_, rec) = open_after(&fs, &dir, &opts, s);
        assert_eq!((rec.first_index, &rec.entries[..]), (first, &es[(first - 1) as usize..]), "snapshot {s}");
    }
    // A missing prefix is refused, with a message naming the missing entries.
    match LogStore::open_after(fs.clone(), &dir, opts.clone(), first - 2) {
        Err(StorageError::Corrupt { reason, path, .. }) => {
            let want = format!(
                "the log starts at index {first} but the snapshot only covers up to {}: entries {}..{} are missing",
                first - 2,
                first - 1,
                first - 1
            );
            assert_eq!(reason, want);
            assert!(path.ends_with(format!("{first:020}.wal")), "{}", path.display());
        }
        other => panic!("expected a refusal, got {:?}", other.map(|x| x.1)),
    }
    // `open` (no snapshot known) still accepts a compacted log.
    let (_, rec) = open(&fs, &dir, &opts);
    assert_eq!(rec.first_index, first);

    // Segments followed by one starting at or below `s + 1` hold only covered entries: they are
    // deleted (left behind by `compact_deferred`), and everything after `s` is still returned.
    for s in [30, 40, 1000] {
        let (_, rec) = open_after(&fs, &dir, &opts, s);
        assert!(rec.first_index <= s + 1 && rec.first_index > first, "snapshot {s}: {}", rec.first_index);
        assert_eq!(&rec.entries[..], &es[(rec.first_index - 1) as usize..], "snapshot {s}");
    }
    let before = fs.list_dir(&dir).unwrap().len();
    let (_, rec) = open_after(&fs, &dir, &opts, 1000);
    assert_eq!(fs.list_dir(&dir).unwrap().len(), before, "nothing more to remove");
    assert_eq!(rec.entries.last(), es.last());

    // No segment at all but a hard state: an error without a snapshot, an empty log after one.
    for name in fs.list_dir(&dir).unwrap() {
        if name.ends_with(".wal") {
            fs.remove_file(&dir.join(name)).unwrap();
        }
    }
    assert!(matches!(LogStore::open(fs.clone(), &dir, opts.clone()), Err(StorageError::Corrupt { .. })));
    let (mut store, rec) = open_after(&fs, &dir, &opts, 77);
    assert_eq!((rec.first_index, rec.entries.len(), rec.hard_state.term), (78, 0, 1));
    assert_eq!((store.first_index(), store.last_index()), (78, 77));
    store.append(&entries(78, 3, 2, 10, &mut SplitMix64::new(2))).unwrap();
    store.sync().unwrap();
    drop(store);
    let (_, rec) = open_after(&fs, &dir, &opts, 77);
    assert_eq!((rec.first_index, rec.entries.len()), (78, 3));
    // Same on a fresh directory with no hard state.
    let (_, rec) = open_after(&fs, &PathBuf::from("/data/other"), &opts, 9);
    assert_eq!((rec.first_index, rec.entries.len()), (10, 0));
}

/// How a crash-point run ends: `None` = the process dies and restarts (the OS keeps everything
/// written), `Some(seed)` = a power failure with that seed.
fn crash_modes() -> impl Iterator<Item = Option<u64>> {
    std::iter::once(None).chain((0..8).map(Some))
}

fn restart(fs: &MemFs, mode: Option<u64>) {
    fs.set_op_budget(None);
    if let Some(seed) = mode {
        fs.crash(seed);
    }
    remove_snapshot_temporaries(fs, &mem_dir(), true).unwrap();
    let names = fs.list_dir(&mem_dir()).unwrap();
    assert!(!names.contains(&SNAPSHOT_TMP.to_string()) && !names.contains(&SNAPSHOT_RECV.to_string()));
}

/// The state before a crash-point run: a synced log of `n` entries in small segments, and an
/// optional old snapshot at index 10 (the log compacted up to it).
struct Before {
    fs: MemFs,
    opts: LogOptions,
    log: Vec<Entry>,
    first: u64,
    old: Option<(SnapshotMeta, Bytes)>,
}

fn before(n: u64, with_old: bool, seed: u64) -> Before {
    let fs = MemFs::new();
    let dir = mem_dir();
    let opts = small_opts(200, 64);
    let (mut store, _) = open(&fs, &dir, &opts);
    let log = entries(1, n, 1, 40, &mut SplitMix64::new(seed));
    append_synced(&mut store, &log);
    store.set_hard_state(HardState { term: 1, voted_for: Some(1) }).unwrap();
    let old = with_old.then(|| (meta(10, 1, &[1, 2, 3]), Bytes::from(image(3000, seed))));
    if let Some((m, data)) = &old {
        take(&fs, &dir, m, data).unwrap();
        store.compact(m.index).unwrap();
    }
    let first = store.first_index();
    assert!(store.segment_count() >= 4, "{} segments", store.segment_count());
    Before { fs, opts, log, first, old }
}

#[test]
fn crash_at_every_step_of_taking_a_snapshot() {
    let dir = mem_dir();
    let new_meta = meta(40, 1, &[1, 2, 3]);
    let (mut saw_old, mut saw_new) = (0, 0);
    for (variant, (with_old, data_len)) in
        [(true, 3000), (false, 3000), (true, 5 << 19), (false, 5 << 19)].into_iter().enumerate()
    {
        let new_data = Bytes::from(image(data_len, 100 + variant as u64));
        let new = (new_meta.clone(), new_data.clone());
        let mut completed_at = None;
        for k in 0.. {
            for mode in crash_modes() {
                let b = before(60, with_old, variant as u64);
                let fs = &b.fs;
                let (mut store, _) = open_after(fs, &dir, &b.opts, b.old.as_ref().map_or(0, |o| o.0.index));
                let start = fs.ops_used();
                fs.set_op_budget(Some(k));
                let result = (|| -> Result<()> {
                    let mut w = SnapshotWriter::create(fs.clone(), &dir, SNAPSHOT_TMP, &new_meta, true)?;
                    for chunk in new_data.chunks(300_000) {
                        w.write(chunk)?;
                    }
                    w.finish()?;
                    install_snapshot(fs, &dir, SNAPSHOT_TMP, true)?;
                    store.compact(new_meta.index)
                })();
                let used = fs.ops_used() - start;
                drop(store);
                restart(fs, mode);
                let what = format!("variant {variant} budget {k} mode {mode:?}");

                let snap = read_snapshot(fs, &dir).unwrap_or_else(|e| panic!("{what}: {e}"));
                let index = snap.as_ref().map_or(0, |s| s.0.index);
                let (_, rec) = open_after(fs, &dir, &b.opts, index);
                assert_eq!(rec.entries, b.log[(rec.first_index - 1) as usize..], "{what}: log changed");
                assert!(rec.first_index <= index + 1, "{what}");
                if snap == b.old {
                    saw_old += 1;
                    assert!(result.is_err(), "{what}: completed, yet the old snapshot is current");
                    assert_eq!(rec.first_index, b.first, "{what}: compacted before the snapshot was durable");
                } else {
                    assert_eq!(snap.as_ref(), Some(&new), "{what}: neither the old nor the new snapshot");
                    saw_new += 1;
                }
                if result.is_ok() {
                    assert_eq!(used, k, "{what}");
                    assert!(rec.first_index > 30, "{what}: not compacted, first index {}", rec.first_index);
                    completed_at = Some(k);
                } else {
                    assert!(used <= k, "{what}");
                }
            }
            if completed_at.is_some() {
                break;
            }
        }
        let steps = completed_at.unwrap_or_default();
        assert!(steps >= 10, "variant {variant}: only {steps} steps, the test would not cut much");
    }
    assert!(saw_old > 20 && saw_new > 20, "old {saw_old}, new {saw_new}");
}

#[test]
fn crash_at_every_step_of_installing_a_received_snapshot() {
    let dir = mem_dir();
    let leader = MemFs::new();
    let leader_dir = PathBuf::from("/data/leader");
    leader.create_dir_all(&leader_dir).unwrap();
    let new_meta = meta(40, 3, &[1, 2, 3, 4]);
    let new_data = Bytes::from(image(4000, 77));
    take(&leader, &leader_dir, &new_meta, &new_data).unwrap();
    let new = (new_meta.clone(), new_data);
    let (mut saw_old, mut saw_empty, mut saw_prefix) = (0, 0, 0);
    for (variant, with_old) in [true, false].into_iter().enumerate() {
        let mut completed_at = None;
        for k in 0.. {
            for mode in crash_modes() {
                let b = before(30, with_old, 50 + variant as u64);
                let fs = &b.fs;
                let (mut store, old_rec) =
                    open_after(fs, &dir, &b.opts, b.old.as_ref().map_or(0, |o| o.0.index));
                let old_entries = old_rec.entries;
                fs.set_op_budget(Some(k));
                let result = (|| -> Result<()> {
                    let mut r = SnapshotReceiver::create(fs.clone(), &dir, true)?;
                    loop {
                        let chunk = read_snapshot_chunk(&leader, &leader_dir, r.len(), 997)?;
                        if chunk.is_empty() {
                            break;
                        }
                        r.append(&chunk)?;
                    }
                    let (m, _) = r.finish()?;
                    install_snapshot(fs, &dir, SNAPSHOT_RECV, true)?;
                    store.reset(m.index + 1)
                })();
                drop(store);
                restart(fs, mode);
                let what = format!("variant {variant} budget {k} mode {mode:?}");

                let snap = read_snapshot(fs, &dir).unwrap_or_else(|e| panic!("{what}: {e}"));
                let index = snap.as_ref().map_or(0, |s| s.0.index);
                let (mut store, rec) = open_after(fs, &dir, &b.opts, index);
                if snap == b.old {
                    saw_old += 1;
                    assert!(result.is_err(), "{what}: completed, yet the old snapshot is current");
                    assert_eq!(
                        (rec.first_index, &rec.entries),
                        (b.first, &old_entries),
                        "{what}: old log changed"
                    );
                    continue;
                }
                assert_eq!(snap.as_ref(), Some(&new), "{what}: neither the old nor the new snapshot");
                if rec.first_index == 41 && rec.entries.is_empty() {
                    saw_empty += 1;
                } else {
                    // Part of the old log (a prefix of it, minus segments the new snapshot covers,
                    // which `open_after` removes): the caller sees it does not hold entry 40 of
                    // term 3 and resets again.
                    saw_prefix += 1;
                    assert!(result.is_err(), "{what}: completed, yet the old log is there");
                    assert!(rec.first_index >= b.first, "{what}: not part of the old log");
                    let skip = (rec.first_index - b.first) as usize;
                    assert!(old_entries[skip..].starts_with(&rec.entries), "{what}: not part of the old log");
                    assert!(rec.entries.last().is_none_or(|e| e.index < 40));
                    store.reset(41).unwrap();
                    drop(store);
                    let (_, rec) = open_after(fs, &dir, &b.opts, 40);
                    assert_eq!((rec.first_index, rec.entries.len()), (41, 0), "{what}: second reset");
                }
                if result.is_ok() {
                    assert_eq!((rec.first_index, rec.entries.len()), (41, 0), "{what}");
                    completed_at = Some(k);
                }
            }
            if completed_at.is_some() {
                break;
            }
        }
        let steps = completed_at.unwrap_or_default();
        assert!(steps >= 10, "variant {variant}: only {steps} steps, the test would not cut much");
    }
    assert!(
        saw_old > 20 && saw_empty > 10 && saw_prefix > 10,
        "old {saw_old}, empty {saw_empty}, prefix {saw_prefix}"
    );
}

#[test]
fn segments_left_by_compact_deferred_are_removed_at_open_whatever_survived() {
    let fs = MemFs::new();
    let dir = mem_dir();
    let opts = small_opts(200, 64);
    let (mut store, _) = open(&fs, &dir, &opts);
    let es = entries(1, 60, 1, 30, &mut SplitMix64::new(9));
    append_synced(&mut store, &es);
    let paths = store.compact_deferred(40).unwrap();
    assert!(paths.len() > 3, "several covered segments: {}", paths.len());
    let first = store.first_index();
    assert!(first <= 41);
    assert_eq!(store.entries(first, 61).unwrap(), es[(first - 1) as usize..].to_vec());
    // The caller deleted only some of them, out of order (a crash in the middle): gaps below the
    // snapshot. Opening after a snapshot at 40 removes the rest and reads the live log.
    fs.remove_file(&paths[1]).unwrap();
    fs.remove_file(&paths[paths.len() - 1]).unwrap();
    drop(store);
    let (_, rec) = open_after(&fs, &dir, &opts, 40);
    assert_eq!(rec.first_index, first);
    assert_eq!(&rec.entries[..], &es[(first - 1) as usize..]);
    for p in &paths {
        assert!(fs.open(p).is_err(), "{} was removed", p.display());
    }
    // Without a snapshot, the same gap would be damage: a log missing entries.
    let fs2 = MemFs::new();
    let (mut store, _) = open(&fs2, &dir, &opts);
    append_synced(&mut store, &es);
    let paths = store.compact_deferred(40).unwrap();
    fs2.remove_file(&paths[1]).unwrap();
    drop(store);
    assert!(LogStore::open(fs2.clone(), &dir, opts.clone()).is_err());
}
