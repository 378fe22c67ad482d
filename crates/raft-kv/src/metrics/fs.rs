//! The file system the server's node runs on: [`storage::StdFs`], with every fsync timed into the
//! `raftkv_fsync_duration_seconds` histogram when metrics are on. The timing happens here, in the
//! host layer, so that the driver and the storage code stay free of clocks.
//!
//! Every `fsync` of a Raft file is counted: log segments (almost all of them), the hard state and
//! snapshot files; directory syncs are not. Without metrics ([`MeteredFs::plain`]) it is `StdFs`
//! plus one branch per sync.

use std::io;
use std::path::Path;
use std::time::Instant;

use super::Log2Histogram as Histogram;
use storage::{FileSystem, FsFile, StdFs, SyncHandle};

/// [`StdFs`] with timed fsyncs.
#[derive(Clone, Debug, Default)]
pub struct MeteredFs {
    fsync: Option<Histogram>,
}

impl MeteredFs {
    /// Times every fsync into `fsync`.
    pub fn new(fsync: Histogram) -> Self {
        MeteredFs { fsync: Some(fsync) }
    }

    /// Times nothing.
    pub fn plain() -> Self {
        MeteredFs { fsync: None }
    }
}

/// Runs `sync`, timing it if there is a histogram.
fn timed(fsync: &Option<Histogram>, sync: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
    match fsync {
        Some(h) => {
            let started = Instant::now();
            let result = sync();
            h.observe_duration(started.elapsed());
            result
        }
        None => sync(),
    }
}

/// A file of [`MeteredFs`].
pub struct MeteredFile {
    inner: <StdFs as FileSystem>::File,
    fsync: Option<Histogram>,
}

/// A sync handle of a [`MeteredFile`] (used by the `raft-sync` thread, see `crate::node`).
pub struct MeteredSyncHandle {
    inner: <<StdFs as FileSystem>::File as FsFile>::SyncHandle,
    fsync: Option<Histogram>,
}

impl FileSystem for MeteredFs {
    type File = MeteredFile;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        StdFs.create_dir_all(dir)
    }
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        StdFs.list_dir(dir)
    }
    fn open(&self, path: &Path) -> io::Result<MeteredFile> {
        Ok(MeteredFile { inner: StdFs.open(path)?, fsync: self.fsync.clone() })
    }
    fn create(&self, path: &Path) -> io::Result<MeteredFile> {
        Ok(MeteredFile { inner: StdFs.create(path)?, fsync: self.fsync.clone() })
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        StdFs.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        StdFs.remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        StdFs.sync_dir(dir)
    }
}

impl FsFile for MeteredFile {
    type SyncHandle = MeteredSyncHandle;

    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_exact_at(buf, offset)
    }
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.inner.append(data)
    }
    fn write_at(&mut self, data: &[u8], offset: u64) -> io::Result<()> {
        self.inner.write_at(data, offset)
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.inner.truncate(len)
    }
    fn sync(&mut self) -> io::Result<()> {
        let inner = &mut self.inner;
        timed(&self.fsync, || inner.sync())
    }
    fn sync_handle(&self) -> io::Result<MeteredSyncHandle> {
        Ok(MeteredSyncHandle { inner: self.inner.sync_handle()?, fsync: self.fsync.clone() })
    }
}

impl SyncHandle for MeteredSyncHandle {
    fn sync(&self) -> io::Result<()> {
        timed(&self.fsync, || self.inner.sync())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsyncs_are_timed_and_files_work() {
        let dir = tempfile::tempdir().unwrap();
        let h = Histogram::seconds(std::time::Duration::from_micros(25), 18);
        let fs = MeteredFs::new(h.clone());
        let path = dir.path().join("f");
        let mut f = fs.create(&path).unwrap();
        f.append(b"hello").unwrap();
        f.sync().unwrap();
        f.sync_handle().unwrap().sync().unwrap();
        let mut back = [0u8; 5];
        fs.open(&path).unwrap().read_exact_at(&mut back, 0).unwrap();
        assert_eq!(&back, b"hello");
        let mut text = String::new();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("fsync", "t", h);
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("fsync_count 2"), "{text}");
        // Without a histogram: plain StdFs.
        let mut g = MeteredFs::plain().open(&path).unwrap();
        g.sync().unwrap();
    }
}
