//! Encodings of the script commands and queries (inside proposals of format 2, tags 64 and up;
//! see [`crate::kv::codec`]) and of the script cache (inside snapshots of format 4 and up).
//!
//! ```text
//! command  64 EVAL         body, varint n, n keys, varint m, m args
//!          65 EVALSHA      sha, varint n, n keys, varint m, m args
//!          66 SCRIPT LOAD  body
//!          67 SCRIPT FLUSH
//! query    64 EVAL_RO      body, keys, args (as EVAL)
//!          65 EVALSHA_RO   sha, keys, args
//!          66 EXISTS       varint n, n shas
//! cache    varint n, then per script in increasing SHA1 order:
//!          sha (40 lower-case hex digits, the SHA1 of the body), body, u8 loaded (0/1),
//!          varint used (<= the applied index)
//! ```
//! (byte strings are `varint length` + bytes). Decoding is strict like the rest of the codec.

use bytes::{BufMut, Bytes, BytesMut};

use super::{sha1_hex, Cached, ScriptCache, ScriptCommand, ScriptQuery, ScriptRef};
use crate::kv::codec::{put_bytes, put_varint, DecodeError, Reader};

/// Tags of the script commands (in the proposal's command tag space).
pub(crate) const TAG_EVAL: u8 = 64;
pub(crate) const TAG_EVALSHA: u8 = 65;
pub(crate) const TAG_SCRIPT_LOAD: u8 = 66;
pub(crate) const TAG_SCRIPT_FLUSH: u8 = 67;
/// Tags of the script queries (in a transaction's query tag space).
pub(crate) const QTAG_EVAL_RO: u8 = 64;
pub(crate) const QTAG_EVALSHA_RO: u8 = 65;
pub(crate) const QTAG_EXISTS: u8 = 66;

fn put_list(buf: &mut BytesMut, items: &[Bytes]) {
    put_varint(buf, items.len() as u64);
    for i in items {
        put_bytes(buf, i);
    }
}

fn read_list(r: &mut Reader<'_>) -> Result<Vec<Bytes>, DecodeError> {
    let n = r.count(1)?;
    (0..n).map(|_| r.bytes()).collect()
}

fn put_eval(buf: &mut BytesMut, script: &ScriptRef, keys: &[Bytes], args: &[Bytes], tags: (u8, u8)) {
    match script {
        ScriptRef::Body(b) => {
            buf.put_u8(tags.0);
            put_bytes(buf, b);
        }
        ScriptRef::Sha(s) => {
            buf.put_u8(tags.1);
            put_bytes(buf, s);
        }
    }
    put_list(buf, keys);
    put_list(buf, args);
}

/// Appends a script command: its tag and fields.
pub(crate) fn put_command(buf: &mut BytesMut, c: &ScriptCommand) {
    match c {
        ScriptCommand::Eval { script, keys, args } => {
            put_eval(buf, script, keys, args, (TAG_EVAL, TAG_EVALSHA))
        }
        ScriptCommand::Load { body } => {
            buf.put_u8(TAG_SCRIPT_LOAD);
            put_bytes(buf, body);
        }
        ScriptCommand::Flush => buf.put_u8(TAG_SCRIPT_FLUSH),
    }
}

/// Reads the fields of the script command `tag` (`None`: not a script command tag).
pub(crate) fn decode_command(tag: u8, r: &mut Reader<'_>) -> Option<Result<ScriptCommand, DecodeError>> {
    let read = |r: &mut Reader<'_>| -> Result<ScriptCommand, DecodeError> {
        Ok(match tag {
            TAG_EVAL | TAG_EVALSHA => {
                let text = r.bytes()?;
                let script = if tag == TAG_EVAL { ScriptRef::Body(text) } else { ScriptRef::Sha(text) };
                ScriptCommand::Eval { script, keys: read_list(r)?, args: read_list(r)? }
            }
            TAG_SCRIPT_LOAD => ScriptCommand::Load { body: r.bytes()? },
            _ => ScriptCommand::Flush,
        })
    };
    (TAG_EVAL..=TAG_SCRIPT_FLUSH).contains(&tag).then(|| read(r))
}

/// Appends a script query: its tag and fields.
pub(crate) fn put_query(buf: &mut BytesMut, q: &ScriptQuery) {
    match q {
        ScriptQuery::Eval { script, keys, args } => {
            put_eval(buf, script, keys, args, (QTAG_EVAL_RO, QTAG_EVALSHA_RO))
        }
        ScriptQuery::Exists { shas } => {
            buf.put_u8(QTAG_EXISTS);
            put_list(buf, shas);
        }
    }
}

/// Reads the fields of the script query `tag` (`None`: not a script query tag).
pub(crate) fn decode_query(tag: u8, r: &mut Reader<'_>) -> Option<Result<ScriptQuery, DecodeError>> {
    let read = |r: &mut Reader<'_>| -> Result<ScriptQuery, DecodeError> {
        Ok(match tag {
            QTAG_EVAL_RO | QTAG_EVALSHA_RO => {
                let text = r.bytes()?;
                let script = if tag == QTAG_EVAL_RO { ScriptRef::Body(text) } else { ScriptRef::Sha(text) };
                ScriptQuery::Eval { script, keys: read_list(r)?, args: read_list(r)? }
            }
            _ => ScriptQuery::Exists { shas: read_list(r)? },
        })
    };
    (QTAG_EVAL_RO..=QTAG_EXISTS).contains(&tag).then(|| read(r))
}

/// Appends the cache (snapshot section).
pub(crate) fn write_cache(buf: &mut BytesMut, cache: &ScriptCache) {
    put_varint(buf, cache.scripts.len() as u64);
    for (sha, c) in &cache.scripts {
        put_bytes(buf, sha);
        put_bytes(buf, &c.body);
        buf.put_u8(u8::from(c.loaded));
        put_varint(buf, c.used);
    }
}

/// Reads the cache written by [`write_cache`], checking every rule of the format.
pub(crate) fn read_cache(r: &mut Reader<'_>, applied_index: u64) -> Result<ScriptCache, DecodeError> {
    let fail = |offset: usize, reason: &'static str| DecodeError { offset, reason };
    let n = r.count(4)?;
    let mut cache = ScriptCache::default();
    let mut prev: Option<Bytes> = None;
    for _ in 0..n {
        let at = r.offset();
        let sha = Bytes::copy_from_slice(r.slice()?);
        let body = Bytes::copy_from_slice(r.slice()?);
        if sha1_hex(&body).as_bytes() != &sha[..] {
            return Err(fail(at, "cached script's name is not the SHA1 of its body"));
        }
        if prev.as_ref().is_some_and(|p| *p >= sha) {
            return Err(fail(at, "cached scripts are not in strictly increasing order"));
        }
        prev = Some(sha.clone());
        let at = r.offset();
        let loaded = match r.u8()? {
            0 => false,
            1 => true,
            _ => return Err(fail(at, "invalid cached script flag")),
        };
        let at = r.offset();
        let used = r.varint()?;
        if used > applied_index {
            return Err(fail(at, "cached script used above the applied index"));
        }
        if !loaded && cache.evictable.insert((used, sha.clone())).is_some() {
            return Err(fail(at, "duplicate cached script"));
        }
        cache.scripts.insert(sha, Cached { body, loaded, used });
    }
    if cache.evictable.len() > super::MAX_EVAL_SCRIPTS {
        return Err(fail(r.offset(), "more EVAL scripts than MAX_EVAL_SCRIPTS"));
    }
    Ok(cache)
}
