//! `MemFs`: an in-memory disk for the deterministic simulator and for crash tests.
//!
//! It implements [`FileSystem`] and remembers, for every file, what is durable (synced) and which
//! writes happened since, and for every directory which entries are durable and which creates,
//! renames and removes happened since the last directory sync. [`MemFs::crash`] then turns the disk
//! into a state a real disk could show after a power failure:
//! - every file keeps its synced content plus a random *prefix* of the writes (appends, positioned
//!   writes, truncations) issued since its last sync, in order; the last kept write may be torn (only
//!   a prefix of its bytes survives). In one crash out of four per file, the *shrinking* length
//!   changes among them are lost while the later writes are kept: the data landed in place but the
//!   size change did not, as a real file system can show when blocks freed by an unsynced truncate
//!   are reused by later writes. This is how a truncation that is not synced before new appends
//!   resurrects old records behind new ones;
//! - every directory keeps its synced entries plus a random *subset* of the operations since its last
//!   sync, each kept or lost independently and applied in order (an operation that no longer makes
//!   sense, such as renaming a name that does not exist, is skipped);
//! - a file no name refers to afterwards is gone; file handles opened before the crash fail.
//!
//! The subset rule for directories is deliberately harsher than a journaling file system (which
//! keeps a prefix), so code that survives it does not depend on metadata ordering.
//!
//! Invariants:
//! - The crash outcome depends only on the disk state and the seed (all maps are `BTreeMap`).
//! - Directories themselves are created durably by [`FileSystem::create_dir_all`] (a simplification:
//!   the store's directory exists before it is used).
//!
//! Use in the simulator: give each simulated machine its own `MemFs` (a crash affects the whole
//! disk). A *process* crash that keeps the OS page cache is just dropping the `LogStore` and
//! reopening (appends not yet handed to the OS are lost); a *power failure* is `crash(seed)` and then
//! reopening.
//!
//! Fault injection for tests: [`MemFs::corrupt`] flips bits in place, [`MemFs::set_len_durable`]
//! cuts a file, [`MemFs::fail_next`] makes the next writes or syncs fail with an I/O error.
//!
//! Crash points: [`MemFs::set_op_budget`] lets exactly `n` more *mutating* operations succeed and
//! fails every later one with an I/O error, as if the process had died right there (reads keep
//! working, and nothing of a refused operation happens). The mutating operations are:
//! `create_dir_all`, `create`, `rename`, `remove_file`, `sync_dir` on the disk and `append`,
//! `write_at`, `truncate`, `sync` on a file. A test cuts a multi-step procedure off after each of
//! its steps in turn: for `k = 0, 1, 2, ...` rebuild the disk, `set_op_budget(Some(k))`, run the
//! procedure (it fails at step `k + 1`, or completes), then `set_op_budget(None)`, [`MemFs::crash`]
//! and recover. [`MemFs::ops_used`] counts the mutating operations that were let through. The
//! budget survives `crash` (it is the test that decides when the "new process" may write again).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::fs::{FileSystem, FsFile, SyncHandle};
use crate::rng::SplitMix64;

/// A cloneable handle to one in-memory disk; clones share the same disk.
#[derive(Clone, Debug, Default)]
pub struct MemFs {
    /// The shared disk.
    disk: Arc<Mutex<Disk>>,
}

/// An operation that [`MemFs::fail_next`] can make fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultOp {
    /// `append`, `write_at` and `truncate` on a file.
    Write,
    /// `sync` of a file.
    Sync,
    /// `sync_dir`.
    SyncDir,
}

/// Counters of the operations a [`MemFs`] has seen (for tests asserting I/O behaviour).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemFsStats {
    /// Successful file syncs (fdatasync).
    pub file_syncs: u64,
    /// Successful directory syncs.
    pub dir_syncs: u64,
    /// Successful writes (append, write_at, truncate).
    pub writes: u64,
    /// Crashes so far.
    pub crashes: u64,
}

/// The disk behind a [`MemFs`].
#[derive(Debug, Default)]
struct Disk {
    /// Bumped by every crash; handles from an older generation are stale.
    generation: u64,
    /// The next inode number to hand out.
    next_ino: u64,
    /// File contents by inode number (an unlinked file lives on until the next crash, like an open
    /// file on a real disk).
    inodes: BTreeMap<u64, Inode>,
    /// Directories by path.
    dirs: BTreeMap<PathBuf, Dir>,
    /// Remaining injected failures per operation kind.
    faults: BTreeMap<FaultOp, u32>,
    /// Operation counters.
    stats: MemFsStats,
    /// How many more mutating operations may run (`None`: no limit); see [`MemFs::set_op_budget`].
    op_budget: Option<u64>,
    /// Mutating operations let through so far (whatever their outcome).
    ops_used: u64,
}

/// One file's content.
#[derive(Debug, Default)]
struct Inode {
    /// What reads see now.
    data: Vec<u8>,
    /// What is durable.
    synced: Vec<u8>,
    /// The writes since the last sync, in order; replaying them on `synced` gives `data`.
    pending: Vec<FileOp>,
}

/// A write to a file since its last sync.
#[derive(Debug, Clone)]
enum FileOp {
    /// Bytes written at an offset (appends included).
    Write { offset: u64, data: Vec<u8> },
    /// A length change (truncate or zero-extend).
    SetLen(u64),
}

/// One directory.
#[derive(Debug, Default)]
struct Dir {
    /// Entries as seen now: name -> inode.
    live: BTreeMap<String, u64>,
    /// Entries that are durable.
    synced: BTreeMap<String, u64>,
    /// The operations since the last directory sync, in order.
    pending: Vec<DirOp>,
}

/// A change to a directory since its last sync.
#[derive(Debug, Clone)]
enum DirOp {
    /// A new name for an inode (file creation).
    Link(String, u64),
    /// A removed name.
    Unlink(String),
    /// A rename within the directory, replacing the target: the inode that had the old name then
    /// (a real file system records the inode in the new entry, so a crash that keeps this rename
    /// but loses an earlier change of the old name still gives the new name *this* inode).
    Rename(String, String, u64),
}

/// A file of [`MemFs`].
#[derive(Debug)]
pub struct MemFile {
    /// The disk.
    fs: MemFs,
    /// The file's inode.
    ino: u64,
    /// The disk generation this handle was opened in.
    generation: u64,
}

fn apply_file_op(buf: &mut Vec<u8>, op: &FileOp) {
    match op {
        FileOp::Write { offset, data } => {
            let start = *offset as usize;
            let end = start + data.len();
            if buf.len() < end {
                buf.resize(end, 0);
            }
            buf[start..end].copy_from_slice(data);
        }
        FileOp::SetLen(len) => buf.resize(*len as usize, 0),
    }
}

fn apply_dir_op(entries: &mut BTreeMap<String, u64>, op: &DirOp) {
    match op {
        DirOp::Link(name, ino) => {
            entries.insert(name.clone(), *ino);
        }
        DirOp::Unlink(name) => {
            entries.remove(name);
        }
        DirOp::Rename(from, to, ino) => {
            if entries.get(from) == Some(ino) {
                entries.remove(from);
            }
            entries.insert(to.clone(), *ino);
        }
    }
}

fn split(path: &Path) -> io::Result<(PathBuf, String)> {
    let parent = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no UTF-8 file name"))?;
    Ok((parent, name.to_string()))
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{}: no such file or directory", path.display()))
}

impl Disk {
    fn dir_mut(&mut self, dir: &Path) -> io::Result<&mut Dir> {
        self.dirs.get_mut(dir).ok_or_else(|| not_found(dir))
    }

    fn lookup(&self, path: &Path) -> io::Result<u64> {
        let (parent, name) = split(path)?;
        self.dirs.get(&parent).and_then(|d| d.live.get(&name)).copied().ok_or_else(|| not_found(path))
    }

    /// Lets one mutating operation through, or refuses it once the operation budget is spent.
    fn spend(&mut self) -> io::Result<()> {
        if let Some(left) = self.op_budget.as_mut() {
            if *left == 0 {
                return Err(io::Error::other(
                    "MemFs operation budget exhausted: simulated process death at this step",
                ));
            }
            *left -= 1;
        }
        self.ops_used += 1;
        Ok(())
    }

    /// Consumes one injected failure of kind `op`, if any.
    fn injected(&mut self, op: FaultOp) -> io::Result<()> {
        if let Some(n) = self.faults.get_mut(&op) {
            if *n > 0 {
                *n -= 1;
                return Err(io::Error::other(format!("injected {op:?} failure")));
            }
        }
        Ok(())
    }

    fn inode_mut(&mut self, ino: u64) -> io::Result<&mut Inode> {
        self.inodes.get_mut(&ino).ok_or_else(|| io::Error::other("inode vanished"))
    }

    fn write(&mut self, ino: u64, op: FileOp) -> io::Result<()> {
        self.injected(FaultOp::Write)?;
        let inode = self.inode_mut(ino)?;
        apply_file_op(&mut inode.data, &op);
        inode.pending.push(op);
        self.stats.writes += 1;
        Ok(())
    }
}

impl MemFs {
    /// A new, empty disk.
    pub fn new() -> Self {
        MemFs::default()
    }

    fn lock(&self) -> MutexGuard<'_, Disk> {
        // A panic while holding the lock can only come from a bug in this module; the disk state is
        // still consistent enough to inspect, so recover the guard instead of propagating poison.
        self.disk.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Simulates a power failure: afterwards the disk holds a state a real disk could show (see the
    /// module docs). Deterministic for a given disk state and `seed`. Handles opened before the crash
    /// return errors from then on.
    pub fn crash(&self, seed: u64) {
        let mut rng = SplitMix64::new(seed);
        let mut disk = self.lock();
        for dir in disk.dirs.values_mut() {
            let mut entries = std::mem::take(&mut dir.synced);
            for op in std::mem::take(&mut dir.pending) {
                if rng.coin() {
                    apply_dir_op(&mut entries, &op);
                }
            }
            dir.live = entries.clone();
            dir.synced = entries;
        }
        for inode in disk.inodes.values_mut() {
            let mut data = std::mem::take(&mut inode.synced);
            let pending = std::mem::take(&mut inode.pending);
            let kept = rng.below(pending.len() as u64 + 1) as usize;
            let lose_shrinks = rng.below(4) == 0;
            for op in &pending[..kept] {
                match op {
                    FileOp::SetLen(len) if lose_shrinks && (*len as usize) < data.len() => {}
                    _ => apply_file_op(&mut data, op),
                }
            }
            if let Some(FileOp::Write { offset, data: bytes }) = pending.get(kept) {
                let torn = rng.below(bytes.len() as u64 + 1) as usize;
                apply_file_op(&mut data, &FileOp::Write { offset: *offset, data: bytes[..torn].to_vec() });
            }
            inode.data = data.clone();
            inode.synced = data;
        }
        let referenced: std::collections::BTreeSet<u64> =
            disk.dirs.values().flat_map(|d| d.live.values().copied()).collect();
        disk.inodes.retain(|ino, _| referenced.contains(ino));
        disk.generation += 1;
        disk.stats.crashes += 1;
    }

    /// Makes the next `count` operations of kind `op` fail with an I/O error (the failed operation
    /// has no effect).
    pub fn fail_next(&self, op: FaultOp, count: u32) {
        self.lock().faults.insert(op, count);
    }

    /// Lets exactly `budget` more mutating operations succeed, then fails every later one with an
    /// I/O error until the budget is changed (`None` removes the limit). See the module docs.
    pub fn set_op_budget(&self, budget: Option<u64>) {
        self.lock().op_budget = budget;
    }

    /// The mutating operations still allowed (`None`: no limit).
    pub fn op_budget(&self) -> Option<u64> {
        self.lock().op_budget
    }

    /// How many mutating operations have been let through since the disk was created (including
    /// ones that then failed for another reason, such as [`MemFs::fail_next`]).
    pub fn ops_used(&self) -> u64 {
        self.lock().ops_used
    }

    /// XORs the byte at `offset` of `path` with `mask`, in the current and the durable content
    /// alike (media corruption).
    pub fn corrupt(&self, path: &Path, offset: u64, mask: u8) -> io::Result<()> {
        let mut disk = self.lock();
        let ino = disk.lookup(path)?;
        let inode = disk.inode_mut(ino)?;
        let at = offset as usize;
        if at >= inode.data.len() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "offset past end of file"));
        }
        inode.data[at] ^= mask;
        if at < inode.synced.len() {
            inode.synced[at] ^= mask;
        }
        Ok(())
    }

    /// Sets the length of `path` to `len` durably (as if the disk had always held only that much;
    /// pending writes are discarded).
    pub fn set_len_durable(&self, path: &Path, len: u64) -> io::Result<()> {
        let mut disk = self.lock();
        let ino = disk.lookup(path)?;
        let inode = disk.inode_mut(ino)?;
        inode.data.resize(len as usize, 0);
        inode.synced = inode.data.clone();
        inode.pending.clear();
        Ok(())
    }

    /// The current content of `path` (synced or not).
    pub fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        let disk = self.lock();
        let ino = disk.lookup(path)?;
        Ok(disk.inodes.get(&ino).map(|i| i.data.clone()).unwrap_or_default())
    }

    /// The bytes `start .. end` of `path` that survive any crash right now: `None` unless the
    /// file's name is durable in its directory and its synced content reaches `end`.
    pub fn durable_read(&self, path: &Path, start: u64, end: u64) -> Option<Vec<u8>> {
        let disk = self.lock();
        let parent = path.parent()?;
        let name = path.file_name()?.to_str()?;
        let ino = disk.dirs.get(parent)?.synced.get(name)?;
        let synced = &disk.inodes.get(ino)?.synced;
        synced.get(usize::try_from(start).ok()?..usize::try_from(end).ok()?).map(<[u8]>::to_vec)
    }

    /// Operation counters so far.
    pub fn stats(&self) -> MemFsStats {
        self.lock().stats
    }

    /// Total bytes of file writes not yet synced (for tests and simulator statistics).
    pub fn unsynced_bytes(&self) -> u64 {
        let disk = self.lock();
        disk.inodes
            .values()
            .flat_map(|i| i.pending.iter())
            .map(|op| match op {
                FileOp::Write { data, .. } => data.len() as u64,
                FileOp::SetLen(_) => 0,
            })
            .sum()
    }

    fn new_handle(&self, disk: &Disk, ino: u64) -> MemFile {
        MemFile { fs: self.clone(), ino, generation: disk.generation }
    }
}

impl FileSystem for MemFs {
    type File = MemFile;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut disk = self.lock();
        disk.spend()?;
        for ancestor in dir.ancestors() {
            disk.dirs.entry(ancestor.to_path_buf()).or_default();
        }
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let disk = self.lock();
        let d = disk.dirs.get(dir).ok_or_else(|| not_found(dir))?;
        Ok(d.live.keys().cloned().collect())
    }

    fn open(&self, path: &Path) -> io::Result<MemFile> {
        let disk = self.lock();
        let ino = disk.lookup(path)?;
        Ok(self.new_handle(&disk, ino))
    }

    fn create(&self, path: &Path) -> io::Result<MemFile> {
        let (parent, name) = split(path)?;
        let mut disk = self.lock();
        disk.spend()?;
        if let Ok(ino) = disk.lookup(path) {
            disk.write(ino, FileOp::SetLen(0))?;
            return Ok(self.new_handle(&disk, ino));
        }
        disk.dir_mut(&parent)?;
        disk.next_ino += 1;
        let ino = disk.next_ino;
        disk.inodes.insert(ino, Inode::default());
        let dir = disk.dir_mut(&parent)?;
        dir.live.insert(name.clone(), ino);
        dir.pending.push(DirOp::Link(name, ino));
        Ok(self.new_handle(&disk, ino))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (from_dir, from_name) = split(from)?;
        let (to_dir, to_name) = split(to)?;
        if from_dir != to_dir {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "MemFs renames within one directory only",
            ));
        }
        let mut disk = self.lock();
        disk.spend()?;
        let dir = disk.dir_mut(&from_dir)?;
        let ino = dir.live.remove(&from_name).ok_or_else(|| not_found(from))?;
        dir.live.insert(to_name.clone(), ino);
        dir.pending.push(DirOp::Rename(from_name, to_name, ino));
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let (parent, name) = split(path)?;
        let mut disk = self.lock();
        disk.spend()?;
        let dir = disk.dir_mut(&parent)?;
        dir.live.remove(&name).ok_or_else(|| not_found(path))?;
        dir.pending.push(DirOp::Unlink(name));
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut disk = self.lock();
        disk.spend()?;
        disk.injected(FaultOp::SyncDir)?;
        let d = disk.dir_mut(dir)?;
        d.synced = d.live.clone();
        d.pending.clear();
        disk.stats.dir_syncs += 1;
        Ok(())
    }
}

impl MemFile {
    /// Locks the disk, failing if this handle predates a crash.
    fn disk(&self) -> io::Result<MutexGuard<'_, Disk>> {
        let disk = self.fs.lock();
        if disk.generation != self.generation {
            return Err(io::Error::other("stale MemFs file handle: the disk crashed since it was opened"));
        }
        Ok(disk)
    }
}

impl MemFile {
    fn sync_now(&self) -> io::Result<()> {
        let mut disk = self.disk()?;
        disk.spend()?;
        disk.injected(FaultOp::Sync)?;
        let inode = disk.inode_mut(self.ino)?;
        inode.synced = inode.data.clone();
        inode.pending.clear();
        disk.stats.file_syncs += 1;
        Ok(())
    }
}

/// A sync handle of a [`MemFile`] (see [`FsFile::sync_handle`]): syncs whatever the file holds when
/// it runs, and fails like the file's own sync (injected faults, a crash since it was made).
#[derive(Debug)]
pub struct MemSyncHandle(MemFile);

impl SyncHandle for MemSyncHandle {
    fn sync(&self) -> io::Result<()> {
        self.0.sync_now()
    }
}

impl FsFile for MemFile {
    type SyncHandle = MemSyncHandle;

    fn len(&self) -> io::Result<u64> {
        let disk = self.disk()?;
        Ok(disk.inodes.get(&self.ino).map_or(0, |i| i.data.len() as u64))
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let disk = self.disk()?;
        let data = disk.inodes.get(&self.ino).map(|i| i.data.as_slice()).unwrap_or_default();
        let start = offset as usize;
        let end = start.checked_add(buf.len()).filter(|&e| e <= data.len());
        match end {
            Some(end) => {
                buf.copy_from_slice(&data[start..end]);
                Ok(())
            }
            None => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past end of file")),
        }
    }

    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        let mut disk = self.disk()?;
        disk.spend()?;
        let offset = disk.inode_mut(self.ino)?.data.len() as u64;
        disk.write(self.ino, FileOp::Write { offset, data: data.to_vec() })
    }

    fn write_at(&mut self, data: &[u8], offset: u64) -> io::Result<()> {
        let mut disk = self.disk()?;
        disk.spend()?;
        disk.write(self.ino, FileOp::Write { offset, data: data.to_vec() })
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        let mut disk = self.disk()?;
        disk.spend()?;
        disk.write(self.ino, FileOp::SetLen(len))
    }

    fn sync(&mut self) -> io::Result<()> {
        self.sync_now()
    }

    fn sync_handle(&self) -> io::Result<MemSyncHandle> {
        drop(self.disk()?);
        Ok(MemSyncHandle(MemFile { fs: self.fs.clone(), ino: self.ino, generation: self.generation }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn synced_data_survives_unsynced_is_a_prefix() {
        for seed in 0..200 {
            let fs = MemFs::new();
            fs.create_dir_all(&p("/d")).unwrap();
            let mut f = fs.create(&p("/d/a")).unwrap();
            f.append(b"hello").unwrap();
            f.sync().unwrap();
            fs.sync_dir(&p("/d")).unwrap();
            f.append(b" world").unwrap();
            f.append(b"!!").unwrap();
            fs.crash(seed);
            let data = fs.read_file(&p("/d/a")).unwrap();
            assert!(data.starts_with(b"hello"), "seed {seed}: {data:?}");
            assert!(b"hello world!!".starts_with(&data), "seed {seed}: {data:?}");
            assert!(f.append(b"x").is_err(), "stale handle must fail");
        }
    }

    #[test]
    fn crash_outcomes_cover_lost_and_kept_and_torn() {
        let mut lens = std::collections::BTreeSet::new();
        for seed in 0..300 {
            let fs = MemFs::new();
            fs.create_dir_all(&p("/d")).unwrap();
            let mut f = fs.create(&p("/d/a")).unwrap();
            fs.sync_dir(&p("/d")).unwrap();
            f.append(b"abcd").unwrap();
            fs.crash(seed);
            lens.insert(fs.read_file(&p("/d/a")).unwrap().len());
        }
        assert_eq!(lens.into_iter().collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn unsynced_dir_ops_may_be_lost_synced_ones_stay() {
        let (mut lost, mut kept) = (0, 0);
        for seed in 0..100 {
            let fs = MemFs::new();
            fs.create_dir_all(&p("/d")).unwrap();
            let mut f = fs.create(&p("/d/a")).unwrap();
            f.sync().unwrap();
            fs.sync_dir(&p("/d")).unwrap();
            fs.create(&p("/d/b")).unwrap();
            fs.remove_file(&p("/d/a")).unwrap();
            fs.crash(seed);
            let names = fs.list_dir(&p("/d")).unwrap();
            if names.contains(&"b".to_string()) {
                kept += 1;
            } else {
                lost += 1;
            }
            // After a dir sync nothing is lost.
            fs.create(&p("/d/c")).unwrap();
            fs.sync_dir(&p("/d")).unwrap();
            fs.crash(seed + 1000);
            assert!(fs.list_dir(&p("/d")).unwrap().contains(&"c".to_string()));
        }
        assert!(lost > 0 && kept > 0);
    }

    #[test]
    fn rename_without_file_sync_can_expose_empty_file() {
        // The classic bug the atomic-replace protocol avoids: rename before fsync of the data.
        let mut saw_empty = false;
        for seed in 0..100 {
            let fs = MemFs::new();
            fs.create_dir_all(&p("/d")).unwrap();
            let mut f = fs.create(&p("/d/tmp")).unwrap();
            f.append(b"state").unwrap();
            fs.rename(&p("/d/tmp"), &p("/d/state")).unwrap();
            fs.sync_dir(&p("/d")).unwrap();
            fs.crash(seed);
            if fs.read_file(&p("/d/state")).unwrap().is_empty() {
                saw_empty = true;
            }
        }
        assert!(saw_empty);
    }

    #[test]
    fn truncate_then_append_unsynced_replays_in_order_or_loses_the_shrink() {
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..400 {
            let fs = MemFs::new();
            fs.create_dir_all(&p("/d")).unwrap();
            let mut f = fs.create(&p("/d/a")).unwrap();
            f.append(b"0123456789").unwrap();
            f.sync().unwrap();
            fs.sync_dir(&p("/d")).unwrap();
            f.truncate(4).unwrap();
            f.append(b"xy").unwrap();
            fs.crash(seed);
            let data = fs.read_file(&p("/d/a")).unwrap();
            let ok = [&b"0123456789"[..], b"0123", b"0123x", b"0123xy", b"0123x56789", b"0123xy6789"];
            assert!(ok.contains(&data.as_slice()), "seed {seed}: {data:?}");
            seen.insert(data);
        }
        // Including the "mix": new bytes in front of old ones that were truncated.
        assert_eq!(seen.len(), 6, "{seen:?}");
    }

    #[test]
    fn op_budget_cuts_off_every_mutating_operation_and_leaves_reads() {
        let fs = MemFs::new();
        fs.create_dir_all(&p("/d")).unwrap();
        let mut f = fs.create(&p("/d/a")).unwrap();
        f.append(b"abc").unwrap();
        let before = fs.ops_used();
        assert_eq!(before, 3);
        fs.set_op_budget(Some(2));
        f.append(b"d").unwrap();
        f.sync().unwrap();
        assert_eq!(fs.op_budget(), Some(0));
        assert!(f.append(b"e").is_err());
        assert!(f.write_at(b"e", 0).is_err());
        assert!(f.truncate(0).is_err());
        assert!(f.sync().is_err());
        assert!(fs.create(&p("/d/b")).is_err());
        assert!(fs.create(&p("/d/a")).is_err(), "truncating create is refused too");
        assert!(fs.rename(&p("/d/a"), &p("/d/c")).is_err());
        assert!(fs.remove_file(&p("/d/a")).is_err());
        assert!(fs.sync_dir(&p("/d")).is_err());
        assert!(fs.create_dir_all(&p("/e")).is_err());
        assert_eq!(fs.ops_used(), before + 2);
        // Nothing of the refused operations happened; reads still work.
        assert_eq!(fs.read_file(&p("/d/a")).unwrap(), b"abcd");
        assert_eq!(fs.list_dir(&p("/d")).unwrap(), vec!["a".to_string()]);
        let mut buf = [0u8; 4];
        f.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(f.len().unwrap(), 4);
        // The budget survives a crash; lifting it lets the next "process" write again.
        fs.crash(1);
        assert!(fs.create(&p("/d/b")).is_err());
        fs.set_op_budget(None);
        fs.create(&p("/d/b")).unwrap();
        fs.set_op_budget(Some(0));
        assert!(fs.sync_dir(&p("/d")).is_err());
    }

    #[test]
    fn fault_injection_and_corruption() {
        let fs = MemFs::new();
        fs.create_dir_all(&p("/d")).unwrap();
        let mut f = fs.create(&p("/d/a")).unwrap();
        f.append(b"abc").unwrap();
        fs.fail_next(FaultOp::Sync, 1);
        assert!(f.sync().is_err());
        f.sync().unwrap();
        fs.fail_next(FaultOp::Write, 1);
        assert!(f.append(b"d").is_err());
        assert_eq!(fs.read_file(&p("/d/a")).unwrap(), b"abc");
        fs.corrupt(&p("/d/a"), 1, 0xff).unwrap();
        assert_eq!(fs.read_file(&p("/d/a")).unwrap(), [b'a', b'b' ^ 0xff, b'c']);
        fs.set_len_durable(&p("/d/a"), 1).unwrap();
        let mut buf = [0u8; 2];
        assert_eq!(f.read_exact_at(&mut buf, 0).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(fs.stats().file_syncs, 1);
        assert!(fs.open(&p("/d/missing")).is_err());
    }
}
