//! Printing replies the way `redis-cli` does on a terminal.
//!
//! `OK` (status, unquoted), `(error) ERR ...`, `(integer) 5`, `"quoted"` bulk strings with C-style
//! escapes for anything not printable ASCII, `(nil)`, `(empty array)`, and arrays as numbered
//! lists whose nested elements are indented under their index.

use crate::resp::Frame;

/// Formats `frame` as `redis-cli` prints it on a terminal. Every line ends with `\n`.
pub fn format_reply(frame: &Frame) -> String {
    let mut out = String::new();
    format_into(frame, "", &mut out);
    out
}

fn format_into(frame: &Frame, prefix: &str, out: &mut String) {
    match frame {
        Frame::Simple(text) => {
            out.push_str(&String::from_utf8_lossy(text));
            out.push('\n');
        }
        Frame::Error(text) => {
            out.push_str("(error) ");
            out.push_str(&String::from_utf8_lossy(text));
            out.push('\n');
        }
        Frame::Integer(n) => {
            out.push_str("(integer) ");
            out.push_str(&n.to_string());
            out.push('\n');
        }
        Frame::Bulk(data) => {
            quote_into(data, out);
            out.push('\n');
        }
        Frame::Null | Frame::NullArray => out.push_str("(nil)\n"),
        Frame::Array(items) => format_list(&items.iter().collect::<Vec<_>>(), prefix, out),
        // Shown as RESP2 shows it: keys and values alternately.
        Frame::Map(pairs) => {
            format_list(&pairs.iter().flat_map(|(k, v)| [k, v]).collect::<Vec<_>>(), prefix, out)
        }
    }
}

fn format_list(items: &[&Frame], prefix: &str, out: &mut String) {
    if items.is_empty() {
        out.push_str("(empty array)\n");
        return;
    }
    let width = items.len().to_string().len();
    let nested = format!("{prefix}{}", " ".repeat(width + 2));
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(prefix);
        }
        out.push_str(&format!("{:>width$}) ", i + 1));
        format_into(item, &nested, out);
    }
}

/// Appends `data` in double quotes with `redis-cli`'s escapes (`sdscatrepr`): `\\ \" \n \r \t
/// \a \b`, printable ASCII as is, every other byte as `\xHH`.
pub fn quote_into(data: &[u8], out: &mut String) {
    out.push('"');
    for &b in data {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x07 => out.push_str("\\a"),
            0x08 => out.push_str("\\b"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push('"');
}
