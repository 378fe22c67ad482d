//! RESP2 encoder: writes frames (or reply pieces, without building a [`Frame`]) into a
//! [`BytesMut`].
//!
//! Invariants:
//! - Output is always well-formed RESP2: status and error lines never contain CR or LF (each is
//!   replaced by a space, as Redis does for error messages), bulk strings are length-prefixed and
//!   binary safe.
//! - No allocation besides growing `dst`: integers are formatted with `itoa` on the stack, and
//!   [`encode`] reserves the frame's exact size once.

use bytes::{BufMut, BytesMut};

use super::Frame;

/// Appends the encoding of `frame` to `dst`.
pub fn encode(frame: &Frame, dst: &mut BytesMut) {
    dst.reserve(frame.encoded_len());
    encode_unreserved(frame, dst);
}

fn encode_unreserved(frame: &Frame, dst: &mut BytesMut) {
    match frame {
        Frame::Simple(s) => write_simple(dst, s),
        Frame::Error(e) => write_error(dst, e),
        Frame::Integer(n) => write_integer(dst, *n),
        Frame::Bulk(b) => write_bulk(dst, b),
        Frame::Null => write_null(dst),
        Frame::NullArray => write_null_array(dst),
        Frame::Array(items) => {
            write_array_header(dst, items.len());
            for item in items {
                encode_unreserved(item, dst);
            }
        }
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
