//! String commands beyond the basics: `SETRANGE`, `INCRBYFLOAT` (writes) and `GETRANGE` (read),
//! with Redis 7's semantics and error texts.
//!
//! Invariants: a write that changes a value keeps its deadline (Redis' `dbReplaceValue`) and
//! sets its version to the entry's index; the result is never longer than
//! [`super::MAX_VALUE_LEN`] (checked by [`Command::validate`] for `SETRANGE`, by construction
//! for `INCRBYFLOAT`, whose output is at most about 5,000 bytes). `INCRBYFLOAT` computes with
//! [`super::ldouble`], never with the host's floating point, so every replica writes the same
//! bytes.

use bytes::{Bytes, BytesMut};

use super::command::{Command, Reply};
use super::ldouble;
use super::store::{Db, View};

/// Redis' error for a value or increment that is not a float.
pub(crate) const NOT_A_FLOAT_ERR: &str = "ERR value is not a valid float";
/// Redis' error when an increment gives NaN or an infinity.
pub(crate) const NAN_OR_INFINITY_ERR: &str = "ERR increment would produce NaN or Infinity";

/// Executes [`Command::SetRange`] and [`Command::IncrByFloat`].
pub(crate) fn execute(db: &mut Db<'_>, command: &Command) -> Reply {
    match command {
        Command::SetRange { key, offset, value } => {
            let old = match db.get_string(key) {
                Ok(old) => old,
                Err(e) => return e,
            };
            let Some(old) = old else {
                if value.is_empty() {
                    return Reply::Int(0);
                }
                let mut buf = BytesMut::zeroed(*offset as usize + value.len());
                buf[*offset as usize..].copy_from_slice(value);
                let len = buf.len();
                db.put(key, buf.freeze());
                return Reply::Int(len as i64);
            };
            if value.is_empty() {
                return Reply::Int(old.len() as i64);
            }
            let offset = *offset as usize;
            let len = old.len().max(offset + value.len());
            let mut buf = BytesMut::zeroed(len);
            buf[..old.len()].copy_from_slice(old);
            buf[offset..offset + value.len()].copy_from_slice(value);
            db.put(key, buf.freeze());
            Reply::Int(len as i64)
        }
        Command::IncrByFloat { key, by } => {
            let current = match db.get_string(key) {
                Ok(v) => v,
                Err(e) => return e,
            };
            let current = match current {
                None => ldouble::Parsed::Finite(ldouble::LongDouble::default()),
                Some(v) => match ldouble::parse(v) {
                    Some(p) => p,
                    None => return Reply::Error(NOT_A_FLOAT_ERR.to_owned()),
                },
            };
            let Some(by) = ldouble::parse(by) else { return Reply::Error(NOT_A_FLOAT_ERR.to_owned()) };
            let Some(text) = ldouble::add_human(&current, &by) else {
                return Reply::Error(NAN_OR_INFINITY_ERR.to_owned());
            };
            let value = Bytes::from(text);
            db.put(key, value.clone());
            Reply::Bulk(value)
        }
        _ => Reply::Error(format!("ERR internal: '{}' is not a string command", command.name())),
    }
}

impl View<'_> {
    /// `GETRANGE key start end` (Redis 7's index rules).
    pub(crate) fn getrange_reply(&self, key: &[u8], start: i64, end: i64) -> Reply {
        let value = match self.live_string(key) {
            Ok(Some(v)) => v,
            Ok(None) => return Reply::Bulk(Bytes::new()),
            Err(e) => return e,
        };
        let len = value.len() as i128;
        let (mut start, mut end) = (i128::from(start), i128::from(end));
        if start < 0 && end < 0 && start > end {
            return Reply::Bulk(Bytes::new());
        }
        if start < 0 {
            start += len;
        }
        if end < 0 {
            end += len;
        }
        start = start.max(0);
        end = end.max(0);
        if end >= len {
            end = len - 1;
        }
        if start > end || len == 0 {
            return Reply::Bulk(Bytes::new());
        }
        Reply::Bulk(value.slice(start as usize..=end as usize))
    }
}
