//! Incremental RESP2 parser with hard limits.
//!
//! A [`Parser`] is fed a growing [`BytesMut`] (the connection's read buffer) and returns
//! `Ok(None)` until a complete frame has arrived. It consumes bytes from the front of the buffer
//! as soon as an element is complete and keeps partially received arrays on an explicit stack,
//! so
//! - total work is linear in the input, however the input is split into reads;
//! - there is no recursion: nesting depth cannot overflow the thread's stack;
//! - bulk strings are zero-copy slices of the read buffer (`split_to().freeze()`).
//!
//! Two modes:
//! - **requests** (server side), exactly as Redis reads them: either a multibulk (`*N` followed
//!   by N bulk strings, nothing else) or an *inline* command (a text line split like a shell
//!   does, see [`super::split_args`]). Empty lines and `*0`/negative counts are skipped
//!   silently, as in Redis. Every request is returned as `Frame::Array` of `Frame::Bulk`.
//! - **replies** (client side): any RESP2 value, nested arrays included, up to a depth limit.
//!
//! Limits (see [`Limits`]) are checked before the data they guard is buffered, so a peer cannot
//! make the parser hold more than `max_frame_len` bytes of one frame. Errors use Redis's wording
//! (`Protocol error: invalid bulk length`, ...). After an error the stream cannot be resynchronized:
//! the parser keeps returning the same error and the caller must reply (if it wants) and close the
//! connection, as Redis does.
//!
//! Deliberate strictness beyond Redis: the CRLF after bulk data and after every header is checked
//! (Redis skips two bytes without looking), so a desynchronized peer is detected at once.

use bytes::{Buf, BytesMut};
use thiserror::Error;

use super::args::split_args;
use super::Frame;

/// Hard limits applied while parsing. They bound the memory one connection can make us use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest accepted bulk string, in bytes (Redis: `proto-max-bulk-len`, 512 MiB by default).
    pub max_bulk_len: usize,
    /// Most elements accepted in one array.
    pub max_array_len: usize,
    /// Longest inline command, status line, error line or length header, in bytes (Redis: 64 KiB).
    pub max_inline_len: usize,
    /// Deepest accepted array nesting (replies only; requests are always flat).
    pub max_depth: usize,
    /// Most bytes one whole frame may occupy on the wire, headers included.
    pub max_frame_len: usize,
}

impl Limits {
    /// Limits for a server reading client requests: 16 MiB per value, 1 Mi elements per command,
    /// 64 KiB inline commands, 64 MiB per command in total.
    pub const fn server() -> Limits {
        Limits {
            max_bulk_len: 16 << 20,
            max_array_len: 1 << 20,
            max_inline_len: 64 << 10,
            max_depth: 1,
            max_frame_len: 64 << 20,
        }
    }

    /// Generous limits for a client reading replies from a server it chose to trust:
    /// 512 MiB per value (Redis's own maximum), 16 Mi elements, depth 64, 1 GiB per reply.
    pub const fn client() -> Limits {
        Limits {
            max_bulk_len: 512 << 20,
            max_array_len: 16 << 20,
            max_inline_len: 1 << 20,
            max_depth: 64,
            max_frame_len: 1 << 30,
        }
    }
}

impl Default for Limits {
    /// The same as [`Limits::server`].
    fn default() -> Self {
        Limits::server()
    }
}

/// A protocol violation. The `Display` form is Redis's message without the `ERR ` code; use
/// [`ProtocolError::to_frame`] for the reply a server sends before closing the connection.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ProtocolError {
    /// An inline command (or a reply status line) longer than `max_inline_len`.
    #[error("Protocol error: too big inline request")]
    InlineTooBig,
    /// An inline command with a quote that is not closed, or closed and followed by a non-space.
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    /// An array header (`*...`) longer than `max_inline_len` without its CR.
    #[error("Protocol error: too big mbulk count string")]
    MultibulkHeaderTooBig,
    /// An array count that is not an integer, is out of range or exceeds `max_array_len`.
    #[error("Protocol error: invalid multibulk length")]
    InvalidMultibulkLength,
    /// Inside a request array, an element that is not a bulk string.
    #[error("Protocol error: expected '$', got '{}'", char::from(*.0))]
    ExpectedBulk(u8),
    /// A bulk header (`$...`) longer than `max_inline_len` without its CR.
    #[error("Protocol error: too big bulk count string")]
    BulkHeaderTooBig,
    /// A bulk length that is not an integer, is negative (in a request) or exceeds
    /// `max_bulk_len`.
    #[error("Protocol error: invalid bulk length")]
    InvalidBulkLength,
    /// Bulk data not followed by CRLF.
    #[error("Protocol error: expected CRLF after bulk data")]
    MissingBulkTerminator,
    /// A frame larger than `max_frame_len` in total.
    #[error("Protocol error: request too large")]
    FrameTooLarge,
    /// Reply parsing: a frame that starts with an unknown type byte.
    #[error("Protocol error: invalid type byte '{}'", char::from(*.0))]
    InvalidTypeByte(u8),
    /// Reply parsing: an integer reply that is not a valid 64-bit integer.
    #[error("Protocol error: invalid integer")]
    InvalidInteger,
    /// Reply parsing: a status or error line whose CR is not followed by LF.
    #[error("Protocol error: expected CRLF at end of line")]
    MissingLineTerminator,
    /// Reply parsing: arrays nested deeper than `max_depth`.
    #[error("Protocol error: nesting too deep")]
    NestingTooDeep,
}

impl ProtocolError {
    /// The error reply a server sends before closing: `-ERR Protocol error: ...`.
    pub fn to_frame(&self) -> Frame {
        Frame::error(format!("ERR {self}"))
    }
}

/// Parses a decimal integer exactly like Redis's `string2ll`: optional `-`, no `+`, no leading
/// zeros, no spaces, no overflow. (The state machine's parser, so arguments and stored values are
/// read by one function.)
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    engine::kv::parse_i64(s)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Requests,
    Replies,
}

/// An array whose elements are still arriving.
#[derive(Debug)]
struct Pending {
    /// Elements still expected (always > 0 while on the stack).
    remaining: usize,
    /// Elements received so far.
    items: Vec<Frame>,
}

/// What one parsing step produced.
enum Step {
    /// More bytes are needed.
    More,
    /// Bytes were consumed but nothing is produced (skipped empty request, array opened).
    Continue,
    /// A complete value (scalar, or empty / null array).
    Value(Frame),
}

/// Which header is being read; selects the error variants.
#[derive(Clone, Copy)]
enum Header {
    Array,
    Bulk,
}

/// An incremental RESP2 parser; see the module documentation.
#[derive(Debug)]
pub struct Parser {
    /// Limits in force.
    limits: Limits,
    /// Requests (server side) or replies (client side).
    mode: Mode,
    /// Arrays being received, outermost first.
    stack: Vec<Pending>,
    /// Bytes of the current frame already consumed from the buffer.
    consumed: usize,
    /// The first error; once set, every call returns it.
    failed: Option<ProtocolError>,
}

impl Parser {
    /// A parser for client requests (multibulk or inline), as a server reads them.
    pub fn requests(limits: Limits) -> Parser {
        Parser::new(limits, Mode::Requests)
    }

    /// A parser for server replies (any RESP2 value), as a client reads them.
    pub fn replies(limits: Limits) -> Parser {
        Parser::new(limits, Mode::Replies)
    }

    fn new(limits: Limits, mode: Mode) -> Parser {
        Parser { limits, mode, stack: Vec::new(), consumed: 0, failed: None }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// True when no frame is partially consumed (the parser holds no bytes of the stream).
    pub fn is_idle(&self) -> bool {
        self.stack.is_empty() && self.consumed == 0
    }

    /// Parses the next complete frame from the front of `buf`, consuming its bytes.
    ///
    /// Returns `Ok(None)` when `buf` holds no complete frame yet: read more bytes, append them to
    /// `buf` and call again (the parser remembers its progress; bytes it already consumed are
    /// gone from `buf`). Call repeatedly to drain pipelined frames.
    pub fn parse(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = self.parse_inner(buf);
        if let Err(e) = &result {
            self.failed = Some(e.clone());
        }
        result
    }

    fn parse_inner(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        loop {
            let Some(&first) = buf.first() else {
                return Ok(None);
            };
            let step = match (self.mode, self.stack.is_empty()) {
                (Mode::Requests, true) if first == b'*' => self.request_header(buf)?,
                (Mode::Requests, true) => self.inline(buf)?,
                (Mode::Requests, false) if first == b'$' => self.bulk(buf)?,
                (Mode::Requests, false) => return Err(ProtocolError::ExpectedBulk(first)),
                (Mode::Replies, _) => self.reply_value(buf, first)?,
            };
            match step {
                Step::More => return Ok(None),
                Step::Continue => {}
                Step::Value(value) => {
                    if let Some(frame) = self.complete(value) {
                        self.consumed = 0;
                        return Ok(Some(frame));
                    }
                }
            }
        }
    }

    /// Adds a finished value to the innermost pending array, closing arrays that become
    /// complete. Returns the top-level frame once it is complete.
    fn complete(&mut self, mut value: Frame) -> Option<Frame> {
        loop {
            let Some(top) = self.stack.last_mut() else {
                return Some(value);
            };
            top.items.push(value);
            top.remaining -= 1;
            if top.remaining > 0 {
                return None;
            }
            value = Frame::Array(std::mem::take(&mut top.items));
            self.stack.pop();
        }
    }

    /// Accounts `n` more bytes to the current frame, enforcing `max_frame_len`.
    fn charge(&self, n: usize) -> Result<(), ProtocolError> {
        match self.consumed.checked_add(n) {
            Some(total) if total <= self.limits.max_frame_len => Ok(()),
            _ => Err(ProtocolError::FrameTooLarge),
        }
    }

    fn consume(&mut self, buf: &mut BytesMut, n: usize) {
        self.consumed += n;
        buf.advance(n);
    }

    /// Finds the CR of the first line of `buf`, searching at most `max_inline_len` bytes.
    /// Returns `Ok(Some(cr))` when the full line (with its LF) is present.
    fn line_end(
        &self,
        buf: &[u8],
        too_big: ProtocolError,
        bad_end: ProtocolError,
    ) -> Result<Option<usize>, ProtocolError> {
        let window = &buf[..buf.len().min(self.limits.max_inline_len.saturating_add(1))];
        match memchr::memchr(b'\r', window) {
            None if buf.len() > self.limits.max_inline_len => Err(too_big),
            None => Ok(None),
            Some(cr) => match buf.get(cr + 1) {
                None => Ok(None),
                Some(b'\n') => Ok(Some(cr)),
                Some(_) => Err(bad_end),
            },
        }
    }

    /// Reads a `*N` or `$N` header. Returns the number and the header's length (CRLF included).
    fn header(&self, buf: &[u8], kind: Header) -> Result<Option<(i64, usize)>, ProtocolError> {
        let (too_big, invalid) = match kind {
            Header::Array => (ProtocolError::MultibulkHeaderTooBig, ProtocolError::InvalidMultibulkLength),
            Header::Bulk => (ProtocolError::BulkHeaderTooBig, ProtocolError::InvalidBulkLength),
        };
        let Some(cr) = self.line_end(buf, too_big, invalid.clone())? else {
            return Ok(None);
        };
        let n = parse_i64(&buf[1..cr]).ok_or(invalid)?;
        Ok(Some((n, cr + 2)))
    }

    /// Request mode, top level, `*`: opens the request array (or skips an empty one).
    fn request_header(&mut self, buf: &mut BytesMut) -> Result<Step, ProtocolError> {
        let Some((count, header_len)) = self.header(buf, Header::Array)? else {
            return Ok(Step::More);
        };
        if count > 0 && count as u64 > self.limits.max_array_len as u64 {
            return Err(ProtocolError::InvalidMultibulkLength);
        }
        self.charge(header_len)?;
        self.consume(buf, header_len);
        if count <= 0 {
            // Redis ignores empty and negative multibulk requests.
            self.consumed = 0;
            return Ok(Step::Continue);
        }
        self.open_array(count as usize);
        Ok(Step::Continue)
    }

    fn open_array(&mut self, count: usize) {
        self.stack.push(Pending { remaining: count, items: Vec::with_capacity(count.min(1024)) });
    }

    /// Request mode, top level, anything but `*`: one inline command line.
    fn inline(&mut self, buf: &mut BytesMut) -> Result<Step, ProtocolError> {
        let max = self.limits.max_inline_len;
        let window = &buf[..buf.len().min(max.saturating_add(1))];
        let Some(lf) = memchr::memchr(b'\n', window) else {
            return if buf.len() > max { Err(ProtocolError::InlineTooBig) } else { Ok(Step::More) };
        };
        let line = match buf[..lf].split_last() {
            Some((b'\r', rest)) => rest,
            _ => &buf[..lf],
        };
        let args = split_args(line).map_err(|_| ProtocolError::UnbalancedQuotes)?;
        self.charge(lf + 1)?;
        self.consume(buf, lf + 1);
        self.consumed = 0;
        if args.is_empty() {
            return Ok(Step::Continue);
        }
        let items = args.into_iter().map(|a| Frame::Bulk(a.into())).collect::<Vec<_>>();
        Ok(Step::Value(Frame::Array(items)))
    }

    /// A `$` bulk string (or, in reply mode, the null bulk string).
    fn bulk(&mut self, buf: &mut BytesMut) -> Result<Step, ProtocolError> {
        let Some((len, header_len)) = self.header(buf, Header::Bulk)? else {
            return Ok(Step::More);
        };
        if len == -1 && self.mode == Mode::Replies {
            self.charge(header_len)?;
            self.consume(buf, header_len);
            return Ok(Step::Value(Frame::Null));
        }
        let len = usize::try_from(len).map_err(|_| ProtocolError::InvalidBulkLength)?;
        if len > self.limits.max_bulk_len {
            return Err(ProtocolError::InvalidBulkLength);
        }
        let total = header_len + len + 2;
        self.charge(total)?;
        if buf.len() < total {
            return Ok(Step::More);
        }
        if &buf[header_len + len..total] != b"\r\n" {
            return Err(ProtocolError::MissingBulkTerminator);
        }
        self.consume(buf, header_len);
        let data = buf.split_to(len).freeze();
        self.consume(buf, 2);
        self.consumed += len;
        Ok(Step::Value(Frame::Bulk(data)))
    }

    /// Reply mode: any value.
    fn reply_value(&mut self, buf: &mut BytesMut, first: u8) -> Result<Step, ProtocolError> {
        match first {
            b'+' | b'-' | b':' => {
                let Some(cr) =
                    self.line_end(buf, ProtocolError::InlineTooBig, ProtocolError::MissingLineTerminator)?
                else {
                    return Ok(Step::More);
                };
                let integer = match first {
                    b':' => Some(parse_i64(&buf[1..cr]).ok_or(ProtocolError::InvalidInteger)?),
                    _ => None,
                };
                self.charge(cr + 2)?;
                if let Some(n) = integer {
                    self.consume(buf, cr + 2);
                    return Ok(Step::Value(Frame::Integer(n)));
                }
                self.consume(buf, 1);
                let text = buf.split_to(cr - 1).freeze();
                self.consumed += cr - 1;
                self.consume(buf, 2);
                Ok(Step::Value(if first == b'+' { Frame::Simple(text) } else { Frame::Error(text) }))
            }
            b'$' => self.bulk(buf),
            b'*' => {
                let Some((count, header_len)) = self.header(buf, Header::Array)? else {
                    return Ok(Step::More);
                };
                let value = match count {
                    -1 => Some(Frame::NullArray),
                    0 => Some(Frame::Array(Vec::new())),
                    n if n < 0 || n as u64 > self.limits.max_array_len as u64 => {
                        return Err(ProtocolError::InvalidMultibulkLength)
                    }
                    _ if self.stack.len() >= self.limits.max_depth => {
                        return Err(ProtocolError::NestingTooDeep)
                    }
                    _ => None,
                };
                self.charge(header_len)?;
                self.consume(buf, header_len);
                match value {
                    Some(v) => Ok(Step::Value(v)),
                    None => {
                        self.open_array(count as usize);
                        Ok(Step::Continue)
                    }
                }
            }
            other => Err(ProtocolError::InvalidTypeByte(other)),
        }
    }
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
