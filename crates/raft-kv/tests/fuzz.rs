//! Hostile input, fuzzed: every decoder that reads bytes an attacker or a damaged disk controls.
//!
//! Targets (each a function of one byte string):
//! - `resp_request`: the server's RESP parser (`Parser::requests`, server limits), fed the input
//!   whole and again in random pieces: both must give the same frames and the same error;
//! - `resp_reply`: the client's reply parser (client limits);
//! - `peer_frames`: the peer framing (`wire::decode_frame`) with the handshake's limit, then each
//!   body as a handshake (`decode_handshake` + `validate`) and as a message (`decode_message`);
//! - `wal_segment`: a log directory holding the input as its segment file, opened by
//!   `LogStore::open` (record headers, checksums, torn tails);
//! - `snapshot_file`: the input as a snapshot file (`read_snapshot_file`), then its image
//!   restored (`KvStore::restore`); the image decoder is also fed the input directly (a leader
//!   could send well-checksummed garbage);
//! - `proposal`: `decode_proposal` (the data of every replicated entry).
//!
//! For each input the harness checks: no panic, the peak of memory allocated while decoding stays
//! below [`alloc_limit`] (a counting allocator), and the decode returns within [`HANG_LIMIT`] (a
//! watchdog aborts the process and prints the input otherwise). Inputs come from the corpus in
//! `tests/fuzz-corpus/<target>/` (seeds and every past finding, run first, always) and from
//! mutations of it: bit flips, interesting bytes, huge length fields, insertions, deletions,
//! splices, truncations. `RAFT_FUZZ_SECONDS` sets each target's time (default 3; `.ci/run` uses
//! 20), `RAFT_FUZZ_SEED` the mutation seed. A failing input is written to
//! `target/fuzz-failures/<target>-<hash>` and printed in hex: add it to the corpus as a regression.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use raft_kv::resp::{Limits, Parser};
use raft_kv::wire;
use storage::{FileSystem, FsFile, LogOptions, LogStore, MemFs};

// ---------------------------------------------------------------------------------------------
// A counting allocator: bytes allocated by this thread now and at the peak since the last reset.

struct Counting;

thread_local! {
    static NOW: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn note_alloc(size: usize) {
    let _ = NOW.try_with(|now| {
        let n = now.get().saturating_add(size);
        now.set(n);
        let _ = PEAK.try_with(|p| {
            if n > p.get() {
                p.set(n);
            }
        });
    });
}

fn note_free(size: usize) {
    let _ = NOW.try_with(|now| now.set(now.get().saturating_sub(size)));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note_free(layout.size());
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_free(layout.size());
        note_alloc(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Resets the peak to what is allocated now; returns that baseline.
fn reset_peak() -> usize {
    let now = NOW.with(Cell::get);
    PEAK.with(|p| p.set(now));
    now
}

fn peak() -> usize {
    PEAK.with(Cell::get)
}

/// Most bytes a decoder may allocate for an input of `len` bytes: a fixed allowance (buffers a
/// decoder reserves up front, bounded by its limits) plus a multiple of the input.
fn alloc_limit(len: usize) -> usize {
    (4 << 20) + 64 * len
}

/// Longest time one input may take.
const HANG_LIMIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Targets.

type Target = fn(&[u8], &mut Rng);

fn resp_request(data: &[u8], rng: &mut Rng) {
    let whole = parse_all(Parser::requests(Limits::server()), &[data]);
    // The same bytes in random pieces.
    let mut pieces = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let n = 1 + rng.below((data.len() - at).min(64) as u64) as usize;
        pieces.push(&data[at..at + n]);
        at += n;
    }
    let split = parse_all(Parser::requests(Limits::server()), &pieces);
    assert_eq!(whole, split, "pieces parse differently from the whole");
}

fn resp_reply(data: &[u8], _rng: &mut Rng) {
    parse_all(Parser::replies(Limits::client()), &[data]);
}

/// Feeds `pieces` to `parser` one after the other; returns the frames and the first error.
fn parse_all(mut parser: Parser, pieces: &[&[u8]]) -> (Vec<String>, Option<String>) {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            match parser.parse(&mut buf) {
                Ok(Some(f)) => frames.push(format!("{f:?}")),
                Ok(None) => break,
                Err(e) => return (frames, Some(e.to_string())),
            }
        }
    }
    (frames, None)
}

fn peer_frames(data: &[u8], _rng: &mut Rng) {
    // The handshake frame first (its small limit), then messages (the default limit).
    let mut buf = BytesMut::from(data);
    let mut limit = wire::MAX_HANDSHAKE_FRAME;
    let mut first = true;
    while let Ok(Some(body)) = wire::decode_frame(&mut buf, limit) {
        if first {
            // As the transport does: a connection whose first frame is not a valid handshake of
            // this cluster is closed.
            if wire::decode_handshake(body).ok().and_then(|h| h.validate(7).ok()).is_none() {
                return;
            }
            first = false;
            limit = wire::DEFAULT_MAX_FRAME;
            continue;
        }
        let _ = wire::decode_message(body);
    }
}

fn wal_segment(data: &[u8], _rng: &mut Rng) {
    let fs = MemFs::new();
    let dir = Path::new("/wal");
    fs.create_dir_all(dir).unwrap();
    let mut f = fs.create(&dir.join("00000000000000000001.wal")).unwrap();
    f.append(data).unwrap();
    drop(f);
    if let Ok((store, _)) = LogStore::open(fs, dir, LogOptions { sync: false, ..LogOptions::default() }) {
        let (lo, hi) = (store.first_index(), store.last_index());
        if hi >= lo {
            let _ = store.entries(lo, (hi + 1).min(lo + 1000));
        }
    }
}

fn snapshot_file(data: &[u8], _rng: &mut Rng) {
    let fs = MemFs::new();
    let dir = Path::new("/snap");
    fs.create_dir_all(dir).unwrap();
    let path = dir.join("snapshot.recv");
    let mut f = fs.create(&path).unwrap();
    f.append(data).unwrap();
    drop(f);
    if let Ok((_meta, image)) = storage::snapshot::read_snapshot_file(&fs, &path) {
        let _ = engine::kv::KvStore::restore(&image);
    }
    let _ = engine::kv::KvStore::restore(data);
}

fn proposal(data: &[u8], _rng: &mut Rng) {
    let _ = engine::kv::decode_proposal(data);
}

// ---------------------------------------------------------------------------------------------
// Seeds: valid inputs made with the real encoders (the corpus adds more).

fn seeds(target: &str) -> Vec<Vec<u8>> {
    match target {
        "resp_request" => vec![
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n".to_vec(),
            b"PING\r\nSET a \"b c\"\r\n".to_vec(),
            b"*1\r\n$4\r\nPING\r\n".to_vec(),
        ],
        "resp_reply" => {
            vec![b"+OK\r\n-ERR x\r\n:42\r\n$3\r\nabc\r\n$-1\r\n*2\r\n*1\r\n:1\r\n$0\r\n\r\n*-1\r\n".to_vec()]
        }
        "peer_frames" => {
            let mut out = BytesMut::new();
            wire::encode_frame(&wire::Handshake::new(7, 2), wire::MAX_HANDSHAKE_FRAME, &mut out).unwrap();
            let msg = raft::Message {
                from: 2,
                to: 1,
                term: 3,
                body: raft::MessageBody::AppendEntries {
                    prev_log_index: 4,
                    prev_log_term: 2,
                    entries: vec![raft::Entry {
                        term: 3,
                        index: 5,
                        kind: raft::EntryKind::Normal,
                        data: Bytes::from_static(b"data"),
                    }],
                    leader_commit: 4,
                },
            };
            wire::encode_message(engine::PeerMessage::Raft(msg), 1 << 20, &mut out).unwrap();
            out.extend_from_slice(&wire::KEEPALIVE_FRAME);
            let forward =
                engine::PeerMessage::Forward { from: 2, to: 1, proposals: vec![Bytes::from_static(b"p")] };
            wire::encode_message(forward, 1 << 20, &mut out).unwrap();
            vec![out.to_vec()]
        }
        "wal_segment" => {
            let fs = MemFs::new();
            let dir = Path::new("/wal");
            let (mut store, _) = LogStore::open(
                fs.clone(),
                dir,
                LogOptions { sync: false, preallocate: 0, ..LogOptions::default() },
            )
            .unwrap();
            let entries: Vec<raft::Entry> = (1..=5)
                .map(|i| raft::Entry {
                    term: 1,
                    index: i,
                    kind: if i == 3 { raft::EntryKind::Config } else { raft::EntryKind::Normal },
                    data: Bytes::from(format!("entry {i}")),
                })
                .collect();
            store.append(&entries).unwrap();
            store.sync().unwrap();
            drop(store);
            fs.list_dir(dir)
                .unwrap()
                .into_iter()
                .filter(|n| n.ends_with(".wal"))
                .map(|n| read_all(&fs, &dir.join(n)))
                .collect()
        }
        "snapshot_file" => {
            let fs = MemFs::new();
            let dir = Path::new("/snap");
            fs.create_dir_all(dir).unwrap();
            let mut kv = engine::kv::KvStore::new();
            for i in 1..=3u64 {
                let p = engine::kv::Proposal {
                    session: 9,
                    seq: i,
                    ack_below: 0,
                    command: engine::kv::Command::Set {
                        key: Bytes::from(format!("k{i}")),
                        value: Bytes::from_static(b"v"),
                        condition: engine::kv::SetCondition::Always,
                        get: false,
                    },
                };
                let _ = kv.apply(i, &engine::kv::encode_proposal(&p));
            }
            let image = kv.snapshot();
            let meta = storage::snapshot::SnapshotMeta {
                index: 3,
                term: 1,
                membership: raft::Membership::from_voters(&[1, 2, 3]),
            };
            let mut w =
                storage::snapshot::SnapshotWriter::create(fs.clone(), dir, "s", &meta, false).unwrap();
            w.write(&image).unwrap();
            w.finish().unwrap();
            vec![read_all(&fs, &dir.join("s")), image.to_vec()]
        }
        "proposal" => {
            let p = engine::kv::Proposal {
                session: 1,
                seq: 2,
                ack_below: 1,
                command: engine::kv::Command::MSet {
                    pairs: vec![(Bytes::from_static(b"a"), Bytes::from_static(b"b"))],
                },
            };
            vec![engine::kv::encode_proposal(&p).to_vec()]
        }
        _ => Vec::new(),
    }
}

fn read_all(fs: &MemFs, path: &Path) -> Vec<u8> {
    let f = fs.open(path).unwrap();
    let len = f.len().unwrap() as usize;
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, 0).unwrap();
    buf
}

// ---------------------------------------------------------------------------------------------
// Mutation.

/// SplitMix64: small and seeded.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

const INTERESTING: [&[u8]; 14] = [
    &[0],
    &[0xff],
    &[0x7f],
    &[0x80],
    b"\r\n",
    b"*",
    b"$",
    b"-1",
    b"9223372036854775807",
    b"18446744073709551616",
    &[0xff, 0xff, 0xff, 0xff],
    &[0x7f, 0xff, 0xff, 0xff],
    &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
    &[0, 0, 0, 0],
];

fn mutate(input: &[u8], corpus: &[Vec<u8>], rng: &mut Rng) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = out.len() as u64;
        match rng.below(8) {
            0 if len > 0 => {
                let at = rng.below(len) as usize;
                out[at] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let at = rng.below(len) as usize;
                out[at] = rng.next() as u8;
            }
            2 => {
                let at = rng.below(len + 1) as usize;
                let word = INTERESTING[rng.below(INTERESTING.len() as u64) as usize];
                out.splice(at..at, word.iter().copied());
            }
            3 if len > 0 => {
                // Overwrite with an interesting value (a length field, most likely).
                let word = INTERESTING[rng.below(INTERESTING.len() as u64) as usize];
                let at = rng.below(len) as usize;
                for (k, b) in word.iter().enumerate() {
                    if let Some(slot) = out.get_mut(at + k) {
                        *slot = *b;
                    }
                }
            }
            4 if len > 0 => {
                let at = rng.below(len) as usize;
                let n = 1 + rng.below((len - at as u64).min(32)) as usize;
                out.drain(at..at + n);
            }
            5 if len > 0 => {
                // Duplicate a range.
                let at = rng.below(len) as usize;
                let n = 1 + rng.below((len - at as u64).min(64)) as usize;
                let copy = out[at..at + n].to_vec();
                let to = rng.below(out.len() as u64 + 1) as usize;
                out.splice(to..to, copy);
            }
            6 if !corpus.is_empty() => {
                // Splice with another corpus entry.
                let other = &corpus[rng.below(corpus.len() as u64) as usize];
                let cut = rng.below(out.len() as u64 + 1) as usize;
                let from = rng.below(other.len() as u64 + 1) as usize;
                out.truncate(cut);
                out.extend_from_slice(&other[from..]);
            }
            7 if len > 0 => out.truncate(rng.below(len) as usize),
            _ => out.push(rng.next() as u8),
        }
    }
    out.truncate(256 << 10);
    out
}

// ---------------------------------------------------------------------------------------------
// The driver.

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-corpus").join(target)
}

fn load_corpus(target: &str) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir(target))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

fn save_failure(target: &str, data: &[u8]) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    data.hash(&mut h);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(format!("{target}-{:016x}", h.finish()));
    let _ = std::fs::write(&path, data);
    path
}

/// Runs one input under the checks; panics (after saving it) if one fails.
fn check(name: &str, target: Target, data: &[u8], rng: &mut Rng, started: &AtomicU64, epoch: Instant) {
    started.store(epoch.elapsed().as_millis() as u64 + 1, Ordering::SeqCst);
    let base = reset_peak();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target(data, rng)));
    let used = peak().saturating_sub(base);
    started.store(0, Ordering::SeqCst);
    let failure = match result {
        Err(_) => Some("panicked".to_string()),
        Ok(()) if used > alloc_limit(data.len()) => Some(format!(
            "allocated {used} bytes for a {}-byte input (limit {})",
            data.len(),
            alloc_limit(data.len())
        )),
        Ok(()) => None,
    };
    if let Some(why) = failure {
        let path = save_failure(name, data);
        panic!(
            "{name}: {why}; input saved to {} (hex {})",
            path.display(),
            hex(&data[..data.len().min(512)])
        );
    }
}

fn fuzz(name: &'static str, target: Target) {
    let seconds: u64 = std::env::var("RAFT_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let seed: u64 = std::env::var("RAFT_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed);
    let mut corpus = seeds(name);
    if std::env::var_os("RAFT_FUZZ_WRITE_SEEDS").is_some() {
        // Refreshes the checked-in seed files from the encoders (after a format change).
        let dir = corpus_dir(name);
        std::fs::create_dir_all(&dir).unwrap();
        for (k, seed) in corpus.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{k}")), seed).unwrap();
        }
    }
    corpus.extend(load_corpus(name));
    corpus.push(Vec::new());
    assert!(corpus.len() > 1, "{name}: no seeds");

    // The watchdog: aborts the process if one input runs longer than HANG_LIMIT.
    let started = Arc::new(AtomicU64::new(0));
    let epoch = Instant::now();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watchdog = {
        let (started, done) = (started.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                let s = started.load(Ordering::SeqCst);
                if s > 0 && epoch.elapsed().as_millis() as u64 + 1 - s > HANG_LIMIT.as_millis() as u64 {
                    eprintln!("{name}: an input ran longer than {HANG_LIMIT:?} (hang); aborting");
                    std::process::abort();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };

    let mut rng = Rng(seed ^ name.len() as u64);
    for input in &corpus {
        check(name, target, input, &mut rng, &started, epoch);
    }
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut runs = 0u64;
    while Instant::now() < deadline {
        let base = &corpus[rng.below(corpus.len() as u64) as usize];
        let input = mutate(base, &corpus, &mut rng);
        check(name, target, &input, &mut rng, &started, epoch);
        runs += 1;
    }
    done.store(true, Ordering::SeqCst);
    let _ = watchdog.join();
    eprintln!("{name}: {} corpus inputs and {runs} mutations in {seconds} s, no failure", corpus.len());
}

#[test]
fn fuzz_resp_request() {
    fuzz("resp_request", resp_request);
}

#[test]
fn fuzz_resp_reply() {
    fuzz("resp_reply", resp_reply);
}

#[test]
fn fuzz_peer_frames() {
    fuzz("peer_frames", peer_frames);
}

#[test]
fn fuzz_wal_segment() {
    fuzz("wal_segment", wal_segment);
}

#[test]
fn fuzz_snapshot_file() {
    fuzz("snapshot_file", snapshot_file);
}

#[test]
fn fuzz_proposal() {
    fuzz("proposal", proposal);
}

/// Finding of `fuzz_peer_frames`: a frame header announcing 64 MiB after a valid handshake made
/// `decode_frame` reserve the whole 64 MiB before a byte of the body arrived.
#[test]
fn regression_a_frame_header_alone_does_not_reserve_the_frame() {
    let mut input = BytesMut::new();
    wire::encode_frame(&wire::Handshake::new(7, 2), wire::MAX_HANDSHAKE_FRAME, &mut input).unwrap();
    input.extend_from_slice(&[0x04, 0, 0, 0]);
    let (started, epoch) = (AtomicU64::new(0), Instant::now());
    check("peer_frames", peer_frames, &input, &mut Rng(1), &started, epoch);
    let mut buf = BytesMut::from(&[0x04u8, 0, 0, 0][..]);
    assert_eq!(wire::decode_frame(&mut buf, wire::DEFAULT_MAX_FRAME), Ok(None));
    assert!(buf.capacity() <= 2 * wire::MAX_FRAME_RESERVE, "reserved {}", buf.capacity());
}
