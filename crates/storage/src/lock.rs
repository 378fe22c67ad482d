//! An exclusive lock on a data directory, so two nodes never write the same log.
//!
//! [`DirLock::acquire`] takes a non-blocking exclusive `flock(2)` on the file `LOCK` inside the
//! directory and fails at once with [`StorageError::Locked`] naming the directory (and the holder's
//! pid, which the holder writes into the file) if someone else holds it.
//!
//! Invariants and properties:
//! - The lock lives as long as the [`DirLock`] value; the kernel releases it when the value is dropped
//!   or the process dies (even by SIGKILL), so there is no stale lock to clean up after a crash.
//! - `flock` locks belong to the open file description: a second `acquire` in the *same* process
//!   also fails, which is what we want (two stores in one process on one directory is a bug too).
//! - Only real directories are locked; the in-memory [`crate::MemFs`] needs no lock (the simulator
//!   owns every store it creates). The binary must hold a `DirLock` for as long as its
//!   [`crate::LogStore`] is open.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

use crate::error::{Result, StorageError};

/// File name of the lock file inside the data directory.
pub const LOCK_FILE: &str = "LOCK";

/// Holds the exclusive lock on a data directory until dropped.
#[derive(Debug)]
pub struct DirLock {
    /// The locked directory.
    dir: PathBuf,
    /// The open, flocked lock file; closing it releases the lock.
    _file: File,
}

impl DirLock {
    /// Creates `dir` if needed and locks it, or fails at once if another holder has it.
    pub fn acquire(dir: &Path) -> Result<DirLock> {
        std::fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, e))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StorageError::io(&path, e))?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let mut holder = String::new();
                // Best effort: the holder's pid makes the message actionable, but its absence is fine.
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim().parse::<u32>() {
                    Ok(pid) => format!(" (pid {pid})"),
                    Err(_) => String::new(),
                };
                return Err(StorageError::Locked { dir: dir.to_path_buf(), holder });
            }
            Err(e) => return Err(StorageError::io(&path, e.into())),
        }
        // Informational only (not synced): who holds the lock.
        file.set_len(0).map_err(|e| StorageError::io(&path, e))?;
        writeln!(file, "{}", std::process::id()).map_err(|e| StorageError::io(&path, e))?;
        Ok(DirLock { dir: dir.to_path_buf(), _file: file })
    }

    /// The locked directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_acquire_fails_with_clear_error_until_released() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("node");
        let first = DirLock::acquire(&dir).unwrap();
        assert_eq!(first.dir(), dir);
        let err = DirLock::acquire(&dir).unwrap_err();
        match &err {
            StorageError::Locked { dir: d, holder } => {
                assert_eq!(d, &dir);
                assert_eq!(holder, &format!(" (pid {})", std::process::id()));
            }
            other => panic!("unexpected error {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains(&dir.display().to_string()) && msg.contains("locked"), "{msg}");
        drop(first);
        let again = DirLock::acquire(&dir).unwrap();
        drop(again);
    }
}
