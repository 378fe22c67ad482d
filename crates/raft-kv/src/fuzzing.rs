//! Fuzz targets: each decoder that reads bytes an attacker or a damaged disk controls, as a
//! function of one byte string, and seeds made with the real encoders. Used by the time-bounded
//! mutation fuzzer in `tests/fuzz.rs` (run by CI) and by the cargo-fuzz targets in `fuzz/`
//! (coverage-guided, run by hand). Every target must return for any input without panicking; the
//! callers check allocation and time.
//!
//! - [`resp_request`]: the server's RESP parser, fed the input whole and again in pieces (sizes
//!   drawn from the input itself): both must give the same frames and the same error;
//! - [`resp_reply`]: the client's reply parser;
//! - [`peer_frames`]: the peer framing with the handshake's limit, the handshake (a connection whose
//!   first frame is not a valid handshake of cluster 7 ends there, as in the transport), then
//!   every further frame as a message, by the hand decoder of the write path's frames and by
//!   `prost` (both must agree);
//! - [`wal_segment`]: a log directory holding the input as its segment file, opened and read;
//! - [`snapshot_file`]: the input as a snapshot file, verified, its image restored; the image
//!   decoder also gets the input directly (a leader could send well-checksummed garbage);
//! - [`proposal`]: the data of a replicated entry.

use std::path::Path;

use bytes::{Bytes, BytesMut};
use storage::{FileSystem, FsFile, LogOptions, LogStore, MemFs};

use crate::resp::{Limits, Parser};
use crate::wire;

/// A fuzz target.
pub type Target = fn(&[u8]);

/// Every target by name.
pub const TARGETS: [(&str, Target); 6] = [
    ("resp_request", resp_request),
    ("resp_reply", resp_reply),
    ("peer_frames", peer_frames),
    ("wal_segment", wal_segment),
    ("snapshot_file", snapshot_file),
    ("proposal", proposal),
];

/// The server's RESP parser, whole vs in pieces.
pub fn resp_request(data: &[u8]) {
    let whole = parse_all(Parser::requests(Limits::server()), &[data]);
    // The same bytes in random pieces.
    // Piece sizes from the input's own bytes (1..=64), so the target is a function of the input.
    let mut pieces = Vec::new();
    let mut at = 0;
    let mut k = 0;
    while at < data.len() {
        let n = (1 + usize::from(data[k % data.len()]) % 64).min(data.len() - at);
        pieces.push(&data[at..at + n]);
        at += n;
        k += 7;
    }
    let split = parse_all(Parser::requests(Limits::server()), &pieces);
    assert_eq!(whole, split, "pieces parse differently from the whole");
}

/// The client's reply parser.
pub fn resp_reply(data: &[u8]) {
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

/// Peer frames, handshake and messages.
pub fn peer_frames(data: &[u8]) {
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
        // The hand decoder (wire/decode.rs: AppendEntries and responses, heartbeats and
        // responses, forwards) must agree with prost's on every frame.
        assert_eq!(
            wire::decode_message(body.clone()),
            wire::decode_message_with_prost(body),
            "decoders disagree"
        );
    }
}

/// A WAL segment file, recovered and read.
pub fn wal_segment(data: &[u8]) {
    let fs = MemFs::new();
    let dir = Path::new("/wal");
    fs.create_dir_all(dir).unwrap();
    let mut f = fs.create(&dir.join("00000000000000000001.wal")).unwrap();
    f.append(data).unwrap();
    drop(f);
    // No preallocation: opening then writes no megabyte of zeros (a hundred times more inputs).
    let opts = LogOptions { sync: false, preallocate: 0, ..LogOptions::default() };
    if let Ok((store, _)) = LogStore::open(fs, dir, opts) {
        let (lo, hi) = (store.first_index(), store.last_index());
        if hi >= lo {
            let _ = store.entries(lo, (hi + 1).min(lo + 1000));
        }
    }
}

/// A snapshot file and image.
pub fn snapshot_file(data: &[u8]) {
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

/// A replicated entry's data.
pub fn proposal(data: &[u8]) {
    let _ = engine::kv::decode_proposal(data);
}

/// Valid inputs for `target`, made with the real encoders.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
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
            for body in [
                raft::MessageBody::AppendEntriesResponse {
                    success: true,
                    index: 5,
                    conflict_term: 0,
                    conflict_index: 0,
                },
                raft::MessageBody::AppendEntriesResponse {
                    success: false,
                    index: 4,
                    conflict_term: 2,
                    conflict_index: 3,
                },
                raft::MessageBody::Heartbeat { leader_commit: 5, read_round: 9 },
                raft::MessageBody::HeartbeatResponse { read_round: 9 },
            ] {
                let msg = raft::Message { from: 1, to: 2, term: 3, body };
                wire::encode_message(engine::PeerMessage::Raft(msg), 1 << 20, &mut out).unwrap();
            }
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
