//! Encodings of the script commands and queries (inside proposals of format 2, tags 64 and up;
//! see [`crate::kv::codec`]) and of the script cache (inside snapshots of format 4 and up).
//!
//! ```text
//! command  64 EVAL         body, varint n, n keys, varint m, m args
//!          65 EVALSHA      sha, varint n, n keys, varint m, m args
//!          66 SCRIPT LOAD  body
//!          67 SCRIPT FLUSH
//!          68 EVAL         as 64, then the caller's rules (acl)
//!          69 EVALSHA      as 65, then acl
//! query    64 EVAL_RO      body, keys, args (as EVAL)
//!          65 EVALSHA_RO   sha, keys, args
//!          66 EXISTS       varint n, n shas
//!          67 EVAL_RO      as 64, then acl
//!          68 EVALSHA_RO   as 65, then acl
//! acl      user, u8 categories (bit 0 read, bit 1 write, bit 2 admin; others refused),
//!          varint n, n key patterns (see `acl.rs`)
//! cache    varint n, then per script in increasing SHA1 order:
//!          sha (40 lower-case hex digits, the SHA1 of the body), body, u8 loaded (0/1),
//!          varint used (<= the applied index)
//! ```
//! (byte strings are `varint length` + bytes). Decoding is strict like the rest of the codec.
//!
//! Compatibility: a script of an unrestricted caller is written with the old tags (64/65), byte
//! for byte as before the rules travelled; entries with those tags (all entries written before)
//! decode as unrestricted (`acl: None`). Only a restricted caller's script uses the new tags,
//! which a build without them refuses with "unknown command tag" / "unknown query tag" (it stops
//! rather than run the script without its rules): upgrade every node before restricted users run
//! scripts. Snapshots never hold script commands (only the cache of bodies), so they are
//! unchanged.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use super::{sha1_hex, Cached, ScriptAcl, ScriptCache, ScriptCommand, ScriptQuery, ScriptRef};
use crate::kv::codec::{put_bytes, put_varint, DecodeError, Reader};

/// Tags of the script commands (in the proposal's command tag space).
pub(crate) const TAG_EVAL: u8 = 64;
pub(crate) const TAG_EVALSHA: u8 = 65;
pub(crate) const TAG_SCRIPT_LOAD: u8 = 66;
pub(crate) const TAG_SCRIPT_FLUSH: u8 = 67;
pub(crate) const TAG_EVAL_ACL: u8 = 68;
pub(crate) const TAG_EVALSHA_ACL: u8 = 69;
/// Tags of the script queries (in a transaction's query tag space).
pub(crate) const QTAG_EVAL_RO: u8 = 64;
pub(crate) const QTAG_EVALSHA_RO: u8 = 65;
pub(crate) const QTAG_EXISTS: u8 = 66;
pub(crate) const QTAG_EVAL_RO_ACL: u8 = 67;
pub(crate) const QTAG_EVALSHA_RO_ACL: u8 = 68;

/// The tags of an `EVAL`-like command or query: (body, sha) without rules, then with rules.
struct EvalTags {
    plain: (u8, u8),
    with_acl: (u8, u8),
}

const COMMAND_TAGS: EvalTags =
    EvalTags { plain: (TAG_EVAL, TAG_EVALSHA), with_acl: (TAG_EVAL_ACL, TAG_EVALSHA_ACL) };
const QUERY_TAGS: EvalTags =
    EvalTags { plain: (QTAG_EVAL_RO, QTAG_EVALSHA_RO), with_acl: (QTAG_EVAL_RO_ACL, QTAG_EVALSHA_RO_ACL) };

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

fn put_eval(
    buf: &mut BytesMut,
    script: &ScriptRef,
    keys: &[Bytes],
    args: &[Bytes],
    acl: &Option<Arc<ScriptAcl>>,
    tags: &EvalTags,
) {
    let tags = if acl.is_some() { tags.with_acl } else { tags.plain };
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
    if let Some(acl) = acl {
        acl.put(buf);
    }
}

/// The fields of an `EVAL`-like command or query: script, keys, args, the caller's rules.
type EvalFields = (ScriptRef, Vec<Bytes>, Vec<Bytes>, Option<Arc<ScriptAcl>>);

/// Reads the fields of an `EVAL`-like tag (after the tag), or `None` if `tag` is not one of
/// `tags`.
fn read_eval(tag: u8, tags: &EvalTags, r: &mut Reader<'_>) -> Option<Result<EvalFields, DecodeError>> {
    let (body_tag, with_acl) = match tag {
        t if t == tags.plain.0 || t == tags.plain.1 => (tags.plain.0, false),
        t if t == tags.with_acl.0 || t == tags.with_acl.1 => (tags.with_acl.0, true),
        _ => return None,
    };
    let mut read = || {
        let text = r.bytes()?;
        let script = if tag == body_tag { ScriptRef::Body(text) } else { ScriptRef::Sha(text) };
        let keys = read_list(r)?;
        let args = read_list(r)?;
        let acl = if with_acl { Some(Arc::new(ScriptAcl::read(r)?)) } else { None };
        Ok((script, keys, args, acl))
    };
    Some(read())
}

/// Appends a script command: its tag and fields.
pub(crate) fn put_command(buf: &mut BytesMut, c: &ScriptCommand) {
    match c {
        ScriptCommand::Eval { script, keys, args, acl } => {
            put_eval(buf, script, keys, args, acl, &COMMAND_TAGS)
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
    if let Some(eval) = read_eval(tag, &COMMAND_TAGS, r) {
        return Some(eval.map(|(script, keys, args, acl)| ScriptCommand::Eval { script, keys, args, acl }));
    }
    match tag {
        TAG_SCRIPT_LOAD => Some(r.bytes().map(|body| ScriptCommand::Load { body })),
        TAG_SCRIPT_FLUSH => Some(Ok(ScriptCommand::Flush)),
        _ => None,
    }
}

/// Appends a script query: its tag and fields.
pub(crate) fn put_query(buf: &mut BytesMut, q: &ScriptQuery) {
    match q {
        ScriptQuery::Eval { script, keys, args, acl } => put_eval(buf, script, keys, args, acl, &QUERY_TAGS),
        ScriptQuery::Exists { shas } => {
            buf.put_u8(QTAG_EXISTS);
            put_list(buf, shas);
        }
    }
}

/// Reads the fields of the script query `tag` (`None`: not a script query tag).
pub(crate) fn decode_query(tag: u8, r: &mut Reader<'_>) -> Option<Result<ScriptQuery, DecodeError>> {
    if let Some(eval) = read_eval(tag, &QUERY_TAGS, r) {
        return Some(eval.map(|(script, keys, args, acl)| ScriptQuery::Eval { script, keys, args, acl }));
    }
    (tag == QTAG_EXISTS).then(|| read_list(r).map(|shas| ScriptQuery::Exists { shas }))
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
