//! RESP encoder: writes frames (or reply pieces, without building a [`Frame`]) into a
//! [`BytesMut`], in RESP2 (the default) or RESP3 (only nulls and maps differ).
//!
//! Invariants:
//! - Output is always well-formed RESP2: status and error lines never contain CR or LF (each is
//!   replaced by a space, as Redis does for error messages), bulk strings are length-prefixed and
//!   binary safe.
//! - No allocation besides growing `dst`: integers are formatted with `itoa` on the stack, and
//!   [`encode`] reserves the frame's exact size once.

use bytes::{BufMut, BytesMut};

use super::{Frame, Protocol};

/// Appends the RESP2 encoding of `frame` to `dst`.
pub fn encode(frame: &Frame, dst: &mut BytesMut) {
    encode_as(frame, Protocol::Resp2, dst);
}

/// Appends the encoding of `frame` in `protocol` to `dst`.
pub fn encode_as(frame: &Frame, protocol: Protocol, dst: &mut BytesMut) {
    dst.reserve(frame.encoded_len_as(protocol));
    encode_unreserved(frame, protocol, dst);
}

fn encode_unreserved(frame: &Frame, protocol: Protocol, dst: &mut BytesMut) {
    match frame {
        Frame::Simple(s) => write_simple(dst, s),
        Frame::Error(e) => write_error(dst, e),
        Frame::Integer(n) => write_integer(dst, *n),
        Frame::Bulk(b) => write_bulk(dst, b),
        Frame::Null | Frame::NullArray if protocol == Protocol::Resp3 => dst.put_slice(b"_\r\n"),
        Frame::Null => write_null(dst),
        Frame::NullArray => write_null_array(dst),
        Frame::Array(items) => {
            write_array_header(dst, items.len());
            for item in items {
                encode_unreserved(item, protocol, dst);
            }
        }
        Frame::Map(pairs) => {
            write_map_header(dst, pairs.len(), protocol);
            for (key, value) in pairs {
                encode_unreserved(key, protocol, dst);
                encode_unreserved(value, protocol, dst);
            }
        }
    }
}

/// Writes a map header for `pairs` key/value pairs: `%pairs` in RESP3, an array header of
/// `2 * pairs` in RESP2. The caller then writes the keys and values alternately.
pub fn write_map_header(dst: &mut BytesMut, pairs: usize, protocol: Protocol) {
    match protocol {
        Protocol::Resp2 => write_array_header(dst, pairs * 2),
        Protocol::Resp3 => write_prefixed_number(dst, b'%', pairs as i64),
    }
}

/// Writes a status reply `+text\r\n` (CR and LF in `text` become spaces).
pub fn write_simple(dst: &mut BytesMut, text: &[u8]) {
    write_line(dst, b'+', text);
}

/// Writes an error reply `-message\r\n` (CR and LF in `message` become spaces). `message`
/// includes its code, e.g. `ERR syntax error`.
pub fn write_error(dst: &mut BytesMut, message: &[u8]) {
    write_line(dst, b'-', message);
}

fn write_line(dst: &mut BytesMut, prefix: u8, text: &[u8]) {
    dst.reserve(text.len() + 3);
    dst.put_u8(prefix);
    if memchr::memchr2(b'\r', b'\n', text).is_none() {
        dst.put_slice(text);
    } else {
        for &b in text {
            dst.put_u8(if b == b'\r' || b == b'\n' { b' ' } else { b });
        }
    }
    dst.put_slice(b"\r\n");
}

/// Writes an integer reply `:n\r\n`.
pub fn write_integer(dst: &mut BytesMut, n: i64) {
    write_prefixed_number(dst, b':', n);
}

/// Writes a bulk string `$len\r\ndata\r\n`.
pub fn write_bulk(dst: &mut BytesMut, data: &[u8]) {
    write_prefixed_number(dst, b'$', data.len() as i64);
    dst.reserve(data.len() + 2);
    dst.put_slice(data);
    dst.put_slice(b"\r\n");
}

/// Writes the null bulk string `$-1\r\n`.
pub fn write_null(dst: &mut BytesMut) {
    dst.put_slice(b"$-1\r\n");
}

/// Writes the null array `*-1\r\n`.
pub fn write_null_array(dst: &mut BytesMut) {
    dst.put_slice(b"*-1\r\n");
}

/// Writes an array header `*len\r\n`; the caller then writes exactly `len` values.
pub fn write_array_header(dst: &mut BytesMut, len: usize) {
    write_prefixed_number(dst, b'*', len as i64);
}

/// Writes a client command: an array of bulk strings, the form every Redis server accepts.
pub fn write_command<A: AsRef<[u8]>>(dst: &mut BytesMut, args: &[A]) {
    let payload: usize = args.iter().map(|a| a.as_ref().len() + 16).sum();
    dst.reserve(payload + 16);
    write_array_header(dst, args.len());
    for arg in args {
        write_bulk(dst, arg.as_ref());
    }
}

fn write_prefixed_number(dst: &mut BytesMut, prefix: u8, n: i64) {
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(n).as_bytes();
    dst.reserve(digits.len() + 3);
    dst.put_u8(prefix);
    dst.put_slice(digits);
    dst.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn enc(frame: &Frame) -> Vec<u8> {
        let mut dst = BytesMut::new();
        encode(frame, &mut dst);
        assert_eq!(dst.len(), frame.encoded_len(), "encoded_len of {frame:?}");
        dst.to_vec()
    }

    #[test]
    fn encodes_every_variant() {
        assert_eq!(enc(&Frame::ok()), b"+OK\r\n");
        assert_eq!(enc(&Frame::error("ERR x")), b"-ERR x\r\n");
        assert_eq!(enc(&Frame::Integer(-42)), b":-42\r\n");
        assert_eq!(enc(&Frame::Integer(i64::MIN)), b":-9223372036854775808\r\n");
        assert_eq!(enc(&Frame::bulk_from_slice(b"a\r\nb")), b"$4\r\na\r\nb\r\n");
        assert_eq!(enc(&Frame::bulk_from_slice(b"")), b"$0\r\n\r\n");
        assert_eq!(enc(&Frame::Null), b"$-1\r\n");
        assert_eq!(enc(&Frame::NullArray), b"*-1\r\n");
        assert_eq!(enc(&Frame::Array(vec![])), b"*0\r\n");
        let nested =
            Frame::Array(vec![Frame::Integer(1), Frame::Array(vec![Frame::Null, Frame::simple("PONG")])]);
        assert_eq!(enc(&nested), b"*2\r\n:1\r\n*2\r\n$-1\r\n+PONG\r\n");
    }

    #[test]
    fn resp3_differs_only_in_nulls_and_maps() {
        let frame = Frame::Map(vec![
            (Frame::bulk_from_slice(b"a"), Frame::Null),
            (Frame::bulk_from_slice(b"b"), Frame::Array(vec![Frame::NullArray])),
        ]);
        let mut v2 = BytesMut::new();
        encode_as(&frame, Protocol::Resp2, &mut v2);
        assert_eq!(&v2[..], b"*4\r\n$1\r\na\r\n$-1\r\n$1\r\nb\r\n*1\r\n*-1\r\n");
        assert_eq!(v2.len(), frame.encoded_len_as(Protocol::Resp2));
        let mut v3 = BytesMut::new();
        encode_as(&frame, Protocol::Resp3, &mut v3);
        assert_eq!(&v3[..], b"%2\r\n$1\r\na\r\n_\r\n$1\r\nb\r\n*1\r\n_\r\n");
        assert_eq!(v3.len(), frame.encoded_len_as(Protocol::Resp3));
    }

    #[test]
    fn status_and_error_lines_never_carry_newlines() {
        assert_eq!(enc(&Frame::error("ERR a\r\nb")), b"-ERR a  b\r\n");
        assert_eq!(enc(&Frame::Simple(Bytes::from_static(b"x\ny"))), b"+x y\r\n");
    }

    #[test]
    fn writes_commands_as_bulk_arrays() {
        let mut dst = BytesMut::new();
        write_command(&mut dst, &["SET", "k", "v v"]);
        assert_eq!(&dst[..], b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv v\r\n");
    }
}
