//! The durable hard state (term, votedFor), replaced atomically.
//!
//! Raft (§5, Figure 2) requires `currentTerm` and `votedFor` to be on stable storage before the node
//! answers any RPC that depends on them. They live in their own small file, `hardstate`, which is
//! never modified in place. [`write`] replaces it with the classic protocol:
//! 1. write the new content to `hardstate.tmp` and fsync it (so the data is durable before any name
//!    points to it);
//! 2. rename `hardstate.tmp` over `hardstate` (atomic: a reader sees the old or the new file);
//! 3. fsync the directory (so the rename itself is durable).
//!
//! After a crash `hardstate` is therefore either the old or the new version, always complete; a
//! leftover `hardstate.tmp` is garbage and is removed at open. Any damage to `hardstate` (it has a
//! magic number, version and checksum) is refused rather than guessed around: losing a vote could
//! let a node vote twice in one term.
//!
//! Format ([`HARD_STATE_LEN`] = 40 bytes, little-endian):
//! ```text
//! 0  magic      [u8; 8] = b"RKVHARD\n"
//! 8  version    u32     = FORMAT_VERSION
//! 12 flags      u32     bit 0: voted_for is set
//! 16 term       u64
//! 24 voted_for  u64     (0 when not set)
//! 32 reserved   u32     = 0
//! 36 crc        u32     CRC-32 of bytes 0..36
//! ```

use std::io;
use std::path::Path;

use raft::HardState;

use crate::error::{Result, StorageError};
use crate::fs::{read_all, FileSystem, FsFile};
use crate::record::{crc, get_u32, get_u64, FORMAT_VERSION};

/// File name of the hard state.
pub const HARD_STATE_FILE: &str = "hardstate";
/// File name of the hard state being written.
pub const HARD_STATE_TMP_FILE: &str = "hardstate.tmp";
/// Magic number at the start of the hard state file.
pub const HARD_STATE_MAGIC: [u8; 8] = *b"RKVHARD\n";
/// Length of the hard state file.
pub const HARD_STATE_LEN: usize = 40;

/// Encodes `hs` in the file format.
pub(crate) fn encode(hs: &HardState) -> [u8; HARD_STATE_LEN] {
    let mut b = [0u8; HARD_STATE_LEN];
    b[0..8].copy_from_slice(&HARD_STATE_MAGIC);
    b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    let flags: u32 = u32::from(hs.voted_for.is_some());
    b[12..16].copy_from_slice(&flags.to_le_bytes());
    b[16..24].copy_from_slice(&hs.term.to_le_bytes());
    b[24..32].copy_from_slice(&hs.voted_for.unwrap_or(0).to_le_bytes());
    let c = crc(&b[0..36]);
    b[36..40].copy_from_slice(&c.to_le_bytes());
    b
}

/// Decodes the hard state file `path` whose content is `b`.
pub(crate) fn decode(path: &Path, b: &[u8]) -> Result<HardState> {
    if b.len() < 8 || b[0..8] != HARD_STATE_MAGIC {
        return Err(StorageError::corrupt(path, 0, "bad magic number: not a raft-kv hard state file"));
    }
    if b.len() != HARD_STATE_LEN {
        return Err(StorageError::corrupt(
            path,
            b.len().min(HARD_STATE_LEN) as u64,
            format!("hard state file is {} bytes, expected {HARD_STATE_LEN}", b.len()),
        ));
    }
    if crc(&b[0..36]) != get_u32(b, 36) {
        return Err(StorageError::corrupt(path, 0, "hard state checksum mismatch"));
    }
    let version = get_u32(b, 8);
    if version != FORMAT_VERSION {
        return Err(StorageError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let flags = get_u32(b, 12);
    if flags > 1 {
        return Err(StorageError::corrupt(path, 12, format!("unknown hard state flags {flags:#x}")));
    }
    let voted_for = (flags & 1 == 1).then(|| get_u64(b, 24));
    Ok(HardState { term: get_u64(b, 16), voted_for })
}

/// Reads the hard state of `dir`; `None` if it was never written. Removes a leftover temporary file.
pub(crate) fn read<F: FileSystem>(fs: &F, dir: &Path) -> Result<Option<HardState>> {
    let tmp = dir.join(HARD_STATE_TMP_FILE);
    match fs.remove_file(&tmp) {
        Ok(()) => tracing::info!(path = %tmp.display(), "removed leftover temporary hard state file"),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(StorageError::io(&tmp, e)),
    }
    let path = dir.join(HARD_STATE_FILE);
    let file = match fs.open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StorageError::io(&path, e)),
    };
    let bytes = read_all(&file).map_err(|e| StorageError::io(&path, e))?;
    decode(&path, &bytes).map(Some)
}

/// Atomically replaces the hard state of `dir` with `hs` (see the module docs). With `sync`, it is
/// durable on return.
pub(crate) fn write<F: FileSystem>(fs: &F, dir: &Path, hs: &HardState, sync: bool) -> Result<()> {
    let tmp = dir.join(HARD_STATE_TMP_FILE);
    let path = dir.join(HARD_STATE_FILE);
    let mut file = fs.create(&tmp).map_err(|e| StorageError::io(&tmp, e))?;
    file.append(&encode(hs)).map_err(|e| StorageError::io(&tmp, e))?;
    if sync {
        file.sync().map_err(|e| StorageError::io(&tmp, e))?;
    }
    fs.rename(&tmp, &path).map_err(|e| StorageError::io(&path, e))?;
    if sync {
        fs.sync_dir(dir).map_err(|e| StorageError::io(dir, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemFs;
    use std::path::PathBuf;

    #[test]
    fn roundtrip_and_damage_detected() {
        let p = PathBuf::from("/d/hardstate");
        for hs in [
            HardState::default(),
            HardState { term: 5, voted_for: Some(3) },
            HardState { term: u64::MAX, voted_for: Some(0) },
        ] {
            let b = encode(&hs);
            assert_eq!(decode(&p, &b).unwrap(), hs);
            for i in 0..b.len() {
                let mut bad = b;
                bad[i] ^= 0x04;
                assert!(decode(&p, &bad).is_err(), "flip at {i} undetected");
            }
            assert!(decode(&p, &b[..39]).is_err());
        }
    }

    #[test]
    fn atomic_replace_survives_any_crash() {
        let dir = PathBuf::from("/d");
        let old = HardState { term: 1, voted_for: Some(1) };
        let new = HardState { term: 2, voted_for: None };
        for seed in 0..200 {
            let fs = MemFs::new();
            fs.create_dir_all(&dir).unwrap();
            write(&fs, &dir, &old, true).unwrap();
            // Crash at a random point of the replacement: before the rename, or before the dir sync.
            let tmp = dir.join(HARD_STATE_TMP_FILE);
            let mut f = fs.create(&tmp).unwrap();
            f.append(&encode(&new)).unwrap();
            if seed % 2 == 0 {
                f.sync().unwrap();
                fs.rename(&tmp, &dir.join(HARD_STATE_FILE)).unwrap();
            }
            fs.crash(seed);
            let got = read(&fs, &dir).unwrap().unwrap();
            assert!(got == old || got == new, "seed {seed}: {got:?}");
            // And once `write` returns, the new state is there whatever happens.
            write(&fs, &dir, &new, true).unwrap();
            fs.crash(seed + 1_000);
            assert_eq!(read(&fs, &dir).unwrap(), Some(new));
            assert!(!fs.list_dir(&dir).unwrap().contains(&HARD_STATE_TMP_FILE.to_string()));
        }
    }
}
