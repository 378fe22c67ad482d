//! WAL benchmark (not a test): raw fdatasync latency, batched and single appends with sync, and the
//! time to reopen (recover) a large log.
//!
//! ```text
//! cargo run --release -p storage --example wal_bench -- [--dir DIR] [--entries N] [--batch B]
//!     [--size BYTES] [--single N] [--fsync-iters N] [--no-sync-too]
//! ```
//! The directory (default: a fresh one under /tmp) is created and removed afterwards.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use raft::Entry;
use storage::{LogOptions, LogStore, StdFs};

struct Args {
    dir: PathBuf,
    entries: u64,
    batch: u64,
    size: usize,
    single: u64,
    fsync_iters: u64,
    no_sync_too: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        dir: std::env::temp_dir().join(format!("wal-bench-{}", std::process::id())),
        entries: 1_000_000,
        batch: 64,
        size: 100,
        single: 2_000,
        fsync_iters: 2_000,
        no_sync_too: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--no-sync-too" {
            a.no_sync_too = true;
            continue;
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = || value.parse::<u64>().map_err(|e| format!("{flag} {value}: {e}"));
        match flag.as_str() {
            "--dir" => a.dir = PathBuf::from(&value).join(format!("wal-bench-{}", std::process::id())),
            "--entries" => a.entries = num()?,
            "--batch" => a.batch = num()?.max(1),
            "--size" => a.size = num()? as usize,
            "--single" => a.single = num()?,
            "--fsync-iters" => a.fsync_iters = num()?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(a)
}

/// Latency summary of `samples` (sorted in place).
fn summary(samples: &mut [Duration]) -> String {
    samples.sort();
    let pick = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    let mean = samples.iter().sum::<Duration>() / samples.len().max(1) as u32;
    format!(
        "mean {:.1} us, p50 {:.1} us, p99 {:.1} us, max {:.1} us",
        mean.as_secs_f64() * 1e6,
        pick(0.5).as_secs_f64() * 1e6,
        pick(0.99).as_secs_f64() * 1e6,
        pick(1.0).as_secs_f64() * 1e6
    )
}

fn raw_fdatasync(a: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let path = a.dir.join("raw-fsync");
    let file = OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&path)?;
    let block = vec![0xAB_u8; a.size + 28];
    let mut lat = Vec::with_capacity(a.fsync_iters as usize);
    for i in 0..a.fsync_iters {
        let t = Instant::now();
        file.write_all_at(&block, i * block.len() as u64)?;
        file.sync_data()?;
        lat.push(t.elapsed());
    }
    println!("raw write({} B) + fdatasync x{}: {}", block.len(), a.fsync_iters, summary(&mut lat));
    std::fs::remove_file(path)?;
    Ok(())
}

fn batched(a: &Args, sync: bool) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let dir = a.dir.join(if sync { "batched" } else { "batched-nosync" });
    let opts = LogOptions { sync, ..LogOptions::default() };
    let (mut store, _) = LogStore::open(StdFs, &dir, opts)?;
    let data = Bytes::from(vec![b'x'; a.size]);
    let mut lat = Vec::with_capacity((a.entries / a.batch + 1) as usize);
    let start = Instant::now();
    let mut next = 1;
    while next <= a.entries {
        let n = a.batch.min(a.entries + 1 - next);
        let batch: Vec<Entry> = (next..next + n).map(|i| Entry::new(1, i, data.clone())).collect();
        let t = Instant::now();
        store.append(&batch)?;
        store.sync()?;
        lat.push(t.elapsed());
        next += n;
    }
    let secs = start.elapsed().as_secs_f64();
    let mb = (a.entries as f64 * a.size as f64) / 1e6;
    println!(
        "append {} x {} B in batches of {} + 1 sync each (sync={sync}): {:.2} s, {:.0} entries/s, {:.1} MB/s payload, {} segments; per batch: {}",
        a.entries,
        a.size,
        a.batch,
        secs,
        a.entries as f64 / secs,
        mb / secs,
        store.segment_count(),
        summary(&mut lat)
    );
    Ok(dir)
}

fn single(a: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let dir = a.dir.join("single");
    let (mut store, _) = LogStore::open(StdFs, &dir, LogOptions::default())?;
    let data = Bytes::from(vec![b'y'; a.size]);
    let mut lat = Vec::with_capacity(a.single as usize);
    let start = Instant::now();
    for i in 1..=a.single {
        let t = Instant::now();
        store.append(&[Entry::new(1, i, data.clone())])?;
        store.sync()?;
        lat.push(t.elapsed());
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "single append + sync x{}: {:.0} entries/s; per entry: {}",
        a.single,
        a.single as f64 / secs,
        summary(&mut lat)
    );
    Ok(())
}

fn reopen(dir: &std::path::Path, expect: u64) -> Result<(), Box<dyn std::error::Error>> {
    for attempt in 1..=3 {
        let t = Instant::now();
        let (store, rec) = LogStore::open(StdFs, dir, LogOptions::default())?;
        let took = t.elapsed();
        if rec.entries.len() as u64 != expect || store.last_index() != expect {
            return Err(format!("recovered {} entries, expected {expect}", rec.entries.len()).into());
        }
        println!(
            "reopen #{attempt} of a {expect}-entry log ({} segments): {:.1} ms",
            store.segment_count(),
            took.as_secs_f64() * 1e3
        );
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = parse_args()?;
    std::fs::create_dir_all(&a.dir)?;
    println!("directory: {}", a.dir.display());
    let result = (|| {
        raw_fdatasync(&a)?;
        let dir = batched(&a, true)?;
        single(&a)?;
        reopen(&dir, a.entries)?;
        if a.no_sync_too {
            batched(&a, false)?;
        }
        Ok(())
    })();
    std::fs::remove_dir_all(&a.dir)?;
    result
}
