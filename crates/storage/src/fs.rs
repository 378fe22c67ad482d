//! The small file-system interface the store is written against, and its real implementation.
//!
//! The log and hard-state code never touch `std::fs` directly: they use [`FileSystem`] and
//! [`FsFile`], so the deterministic simulator can run the very same code over
//! [`crate::MemFs`], an in-memory disk that models what survives a power failure.
//!
//! The contract (what the code above relies on, and what `MemFs` models):
//! - Data written to a file is durable only after [`FsFile::sync`] returns (fdatasync; it also makes a
//!   size change from [`FsFile::truncate`] or an append durable). Before that, a crash may keep any
//!   *prefix* of the writes issued since the last sync, the last one possibly torn.
//! - A directory entry (a create, rename or remove) is durable only after [`FileSystem::sync_dir`] on
//!   its directory. Before that a crash may lose it, independently of the other unsynced entries.
//! - [`FileSystem::rename`] atomically replaces the target.
//! - Reads see every completed write, synced or not.
//! - [`FsFile::sync_handle`] gives a handle whose [`SyncHandle::sync`] is the file's own sync, callable
//!   from elsewhere (another thread) while the file goes on being written: it makes durable at least
//!   every write completed before the call started.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// A file system: directories, names, and the files they hold.
pub trait FileSystem: Clone {
    /// An open file of this file system.
    type File: FsFile;

    /// Creates `dir` and its parents if missing (a no-op if it exists).
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// The names of the entries of `dir` (files only), sorted.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Opens an existing file for reading and writing.
    fn open(&self, path: &Path) -> io::Result<Self::File>;
    /// Creates `path`, or truncates it to length 0 if it exists, and opens it for reading and writing.
    fn create(&self, path: &Path) -> io::Result<Self::File>;
    /// Renames `from` to `to`, atomically replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes the file `path`.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creates, renames, removes) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// An open file. Positions are explicit: there is no cursor.
pub trait FsFile {
    /// See [`FsFile::sync_handle`].
    type SyncHandle: SyncHandle;

    /// The current length in bytes (including unsynced writes).
    fn len(&self) -> io::Result<u64>;
    /// True if the file has no bytes.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Reads exactly `buf.len()` bytes at `offset` (an `UnexpectedEof` error if the file is shorter).
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `data` at the end of the file.
    fn append(&mut self, data: &[u8]) -> io::Result<()>;
    /// Writes all of `data` at `offset` (extending the file if needed).
    fn write_at(&mut self, data: &[u8], offset: u64) -> io::Result<()>;
    /// Sets the file's length to `len` (shrinking or zero-extending it).
    fn truncate(&mut self, len: u64) -> io::Result<()>;
    /// Makes the content and size durable (fdatasync).
    fn sync(&mut self) -> io::Result<()>;
    /// A handle that syncs this file like [`FsFile::sync`], usable while this handle keeps writing
    /// (for [`crate::LogStore::start_sync`]).
    fn sync_handle(&self) -> io::Result<Self::SyncHandle>;
}

/// Syncs one file from anywhere (see [`FsFile::sync_handle`]).
pub trait SyncHandle {
    /// Makes every write to the file completed before this call durable (fdatasync).
    fn sync(&self) -> io::Result<()>;
}

/// The real file system (`std::fs`), with fdatasync for [`FsFile::sync`].
#[derive(Clone, Copy, Debug, Default)]
pub struct StdFs;

/// A file of [`StdFs`].
#[derive(Debug)]
pub struct StdFile {
    /// The open file (read + write, no `O_APPEND`, so positioned writes work); shared with the
    /// sync handles.
    file: Arc<File>,
    /// Its length as far as this handle knows: where [`FsFile::append`] writes next. Only this handle
    /// writes the file (the data directory is locked), so it stays exact.
    len: u64,
}

impl FileSystem for StdFs {
    type File = StdFile;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                // Names that are not UTF-8 cannot be ours; report them lossily so they stay visible.
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    fn open(&self, path: &Path) -> io::Result<StdFile> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let len = file.metadata()?.len();
        Ok(StdFile { file: Arc::new(file), len })
    }

    fn create(&self, path: &Path) -> io::Result<StdFile> {
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path)?;
        Ok(StdFile { file: Arc::new(file), len: 0 })
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// A sync handle of a [`StdFile`]: the same open file.
#[derive(Clone, Debug)]
pub struct StdSyncHandle(Arc<File>);

impl SyncHandle for StdSyncHandle {
    fn sync(&self) -> io::Result<()> {
        self.0.sync_data()
    }
}

impl FsFile for StdFile {
    type SyncHandle = StdSyncHandle;

    fn len(&self) -> io::Result<u64> {
        Ok(self.len)
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(&*self.file, buf, offset)
    }

    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, self.len)?;
        self.len += data.len() as u64;
        Ok(())
    }

    fn write_at(&mut self, data: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(data, offset)?;
        self.len = self.len.max(offset + data.len() as u64);
        Ok(())
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.len = len;
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn sync_handle(&self) -> io::Result<StdSyncHandle> {
        Ok(StdSyncHandle(self.file.clone()))
    }
}

/// Reads a whole file into memory with one read (used for small files and at recovery).
pub(crate) fn read_all<F: FsFile>(file: &F) -> io::Result<Vec<u8>> {
    let len = usize::try_from(file.len()?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "file too large for memory"))?;
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, 0)?;
    Ok(buf)
}
