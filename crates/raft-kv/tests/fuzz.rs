//! Hostile input, fuzzed: every decoder that reads bytes an attacker or a damaged disk controls.
//!
//! The targets and their seeds are in `raft_kv::fuzzing` (shared with the cargo-fuzz targets in
//! `fuzz/`).
//!
//! For each input the harness checks: no panic, the peak of memory allocated while decoding stays
//! below [`alloc_limit`] (a counting allocator), and the decode returns within [`HANG_LIMIT`] (a
//! watchdog aborts the process and prints the input otherwise). Inputs come from the corpus in
//! `tests/fuzz-corpus/<target>/` (seeds and every past finding, run first, always) and from
//! mutations of it: bit flips, interesting bytes, huge length fields, insertions, deletions,
//! splices, truncations. `RAFT_FUZZ_RUNS` sets the number of mutated inputs per target (default
//! 20,000; `.ci/run` uses 300,000): a fixed count, so that a run covers the same inputs on a fast or a
//! slow machine; `RAFT_FUZZ_SECONDS` caps each target's time (default 60; the run says when it
//! stopped early), `RAFT_FUZZ_SEED` sets the mutation seed. A failing input is written to
//! `target/fuzz-failures/<target>-<hash>` and printed in hex: add it to the corpus as a regression.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use raft_kv::fuzzing::{self, seeds};
use raft_kv::wire;

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

type Target = fn(&[u8]);

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
fn check(name: &str, target: Target, data: &[u8], started: &AtomicU64, epoch: Instant) {
    started.store(epoch.elapsed().as_millis() as u64 + 1, Ordering::SeqCst);
    let base = reset_peak();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target(data)));
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
    let runs: u64 = std::env::var("RAFT_FUZZ_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let seconds: u64 = std::env::var("RAFT_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
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
        check(name, target, input, &started, epoch);
    }
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut mutated = 0u64;
    while mutated < runs && Instant::now() < deadline {
        let base = &corpus[rng.below(corpus.len() as u64) as usize];
        let input = mutate(base, &corpus, &mut rng);
        check(name, target, &input, &started, epoch);
        mutated += 1;
    }
    done.store(true, Ordering::SeqCst);
    let _ = watchdog.join();
    let capped = if mutated < runs {
        format!(" (stopped by the {seconds} s limit before {runs})")
    } else {
        String::new()
    };
    eprintln!(
        "{name}: {} corpus inputs and {mutated} mutations{capped} in {:.1} s, no failure",
        corpus.len(),
        epoch.elapsed().as_secs_f64()
    );
}

#[test]
fn fuzz_resp_request() {
    fuzz("resp_request", fuzzing::resp_request);
}

#[test]
fn fuzz_resp_reply() {
    fuzz("resp_reply", fuzzing::resp_reply);
}

#[test]
fn fuzz_peer_frames() {
    fuzz("peer_frames", fuzzing::peer_frames);
}

#[test]
fn fuzz_wal_segment() {
    fuzz("wal_segment", fuzzing::wal_segment);
}

#[test]
fn fuzz_snapshot_file() {
    fuzz("snapshot_file", fuzzing::snapshot_file);
}

#[test]
fn fuzz_proposal() {
    fuzz("proposal", fuzzing::proposal);
}

/// Finding of `fuzz_peer_frames`: a frame header announcing 64 MiB after a valid handshake made
/// `decode_frame` reserve the whole 64 MiB before a byte of the body arrived.
#[test]
fn regression_a_frame_header_alone_does_not_reserve_the_frame() {
    let mut input = BytesMut::new();
    wire::encode_frame(&wire::Handshake::new(7, 2), wire::MAX_HANDSHAKE_FRAME, &mut input).unwrap();
    input.extend_from_slice(&[0x04, 0, 0, 0]);
    let (started, epoch) = (AtomicU64::new(0), Instant::now());
    check("peer_frames", fuzzing::peer_frames, &input, &started, epoch);
    let mut buf = BytesMut::from(&[0x04u8, 0, 0, 0][..]);
    assert_eq!(wire::decode_frame(&mut buf, wire::DEFAULT_MAX_FRAME), Ok(None));
    assert!(buf.capacity() <= 2 * wire::MAX_FRAME_RESERVE, "reserved {}", buf.capacity());
}
