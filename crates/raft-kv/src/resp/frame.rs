//! The RESP2 value model: one [`Frame`] is one complete protocol value.
//!
//! Every byte-string variant holds [`Bytes`], so frames produced by the parser are zero-copy
//! slices of the connection's read buffer. Such a slice keeps the whole read buffer it came from
//! alive; code that keeps a value for long (a state machine, a cache) should copy it.

use bytes::Bytes;

/// The protocol version a connection speaks; it only changes how replies are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// RESP2, the default of every connection.
    #[default]
    Resp2,
    /// RESP3, after a successful `HELLO 3`: nulls are `_`, maps are `%`.
    Resp3,
}

impl Protocol {
    /// The version number (2 or 3), as `HELLO` reports it.
    pub fn version(self) -> i64 {
        match self {
            Protocol::Resp2 => 2,
            Protocol::Resp3 => 3,
        }
    }
}

/// One RESP2 value.
///
/// | variant    | wire form            |
/// |------------|----------------------|
/// | Simple     | `+OK\r\n`            |
/// | Error      | `-ERR msg\r\n`       |
/// | Integer    | `:42\r\n`            |
/// | Bulk       | `$3\r\nfoo\r\n`      |
/// | Null       | `$-1\r\n`            |
/// | Array      | `*2\r\n...`          |
/// | NullArray  | `*-1\r\n`            |
/// | Map        | RESP2: a flat array `k1 v1 k2 v2 ...`; RESP3: `%2\r\n...` |
///
/// In RESP3 ([`super::Protocol::Resp3`]) both nulls are written `_\r\n`. The parser never
/// produces `Map` (it reads RESP2, where a map is an array).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A status reply (`+`). Never contains CR or LF on the wire (the encoder replaces them).
    Simple(Bytes),
    /// An error reply (`-`), including its code prefix such as `ERR` or `NOPROTO`. Never contains
    /// CR or LF on the wire (the encoder replaces them).
    Error(Bytes),
    /// A signed 64-bit integer (`:`).
    Integer(i64),
    /// A binary-safe bulk string (`$`).
    Bulk(Bytes),
    /// The null bulk string (`$-1`), e.g. the reply of `GET` for a missing key.
    Null,
    /// An array (`*`) of frames, possibly nested.
    Array(Vec<Frame>),
    /// The null array (`*-1`).
    NullArray,
    /// A map (Redis replies such as `HELLO` and `CONFIG GET`): key/value pairs in order.
    Map(Vec<(Frame, Frame)>),
}

impl Frame {
    /// The `+OK` status reply.
    pub fn ok() -> Frame {
        Frame::Simple(Bytes::from_static(b"OK"))
    }

    /// A status reply from a static string, e.g. `Frame::simple("PONG")`.
    pub fn simple(text: &'static str) -> Frame {
        Frame::Simple(Bytes::from_static(text.as_bytes()))
    }

    /// An error reply. `message` is the whole line after `-`, code included (`"ERR syntax error"`).
    pub fn error(message: impl Into<String>) -> Frame {
        Frame::Error(Bytes::from(message.into()))
    }

    /// A bulk string reply.
    pub fn bulk(data: impl Into<Bytes>) -> Frame {
        Frame::Bulk(data.into())
    }

    /// A bulk string copied from a byte slice.
    pub fn bulk_from_slice(data: &[u8]) -> Frame {
        Frame::Bulk(Bytes::copy_from_slice(data))
    }

    /// The bytes of a `Bulk` or `Simple` frame; `None` for every other variant.
    pub fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            Frame::Bulk(b) | Frame::Simple(b) => Some(b),
            _ => None,
        }
    }

    /// Whether this frame is an error reply.
    pub fn is_error(&self) -> bool {
        matches!(self, Frame::Error(_))
    }

    /// The exact number of bytes [`super::encode`] writes for this frame (RESP2).
    pub fn encoded_len(&self) -> usize {
        self.encoded_len_as(Protocol::Resp2)
    }

    /// The exact number of bytes [`super::encode_as`] writes for this frame in `protocol`.
    pub fn encoded_len_as(&self, protocol: Protocol) -> usize {
        match self {
            Frame::Simple(s) | Frame::Error(s) => 1 + s.len() + 2,
            Frame::Integer(n) => 1 + decimal_len(*n) + 2,
            Frame::Bulk(b) => 1 + decimal_len(b.len() as i64) + 2 + b.len() + 2,
            Frame::Null | Frame::NullArray => match protocol {
                Protocol::Resp2 => 5,
                Protocol::Resp3 => 3,
            },
            Frame::Array(items) => {
                let body: usize = items.iter().map(|f| f.encoded_len_as(protocol)).sum();
                1 + decimal_len(items.len() as i64) + 2 + body
            }
            Frame::Map(pairs) => {
                let count = match protocol {
                    Protocol::Resp2 => pairs.len() * 2,
                    Protocol::Resp3 => pairs.len(),
                };
                let body: usize =
                    pairs.iter().map(|(k, v)| k.encoded_len_as(protocol) + v.encoded_len_as(protocol)).sum();
                1 + decimal_len(count as i64) + 2 + body
            }
        }
    }
}

/// Number of characters of the decimal form of `n` (sign included).
pub(crate) fn decimal_len(n: i64) -> usize {
    let mut v = n.unsigned_abs();
    let mut len = if n < 0 { 2 } else { 1 };
    while v >= 10 {
        v /= 10;
        len += 1;
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_len_matches_formatting() {
        for n in [0, 1, 9, 10, 99, 100, -1, -9, -10, i64::MAX, i64::MIN, 12345, -12345] {
            assert_eq!(decimal_len(n), n.to_string().len(), "{n}");
        }
    }
}
