//! Splitting a line of text into arguments the way Redis does (`sdssplitargs`): used for inline
//! commands (`PING\r\n` typed into telnet) and by the client console.
//!
//! Rules (identical to Redis and `redis-cli`):
//! - Arguments are separated by whitespace (space, tab, CR, LF; VT and FF also count between
//!   arguments).
//! - `"double quotes"` understand the escapes `\n \r \t \b \a \\ \"`, `\xHH` (two hex digits) and
//!   `\c` for any other `c`.
//! - `'single quotes'` are literal except `\'`.
//! - A closing quote must be followed by whitespace or the end of the line; a quote opened inside
//!   an unquoted word continues that word (`a"b c"` is the single argument `ab c`).
//!
//! One deliberate difference: Redis, written in C, stops at a NUL byte; here NUL is an ordinary
//! byte, so the splitter is binary safe.

use thiserror::Error;

/// Why a line could not be split.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum SplitError {
    /// A quoted argument is not closed before the end of the line.
    #[error("unbalanced quotes")]
    UnterminatedQuote,
    /// A closing quote is directly followed by something other than whitespace.
    #[error("closing quote must be followed by a space")]
    TextAfterClosingQuote,
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Quote {
    None,
    Double,
    Single,
}

/// Splits `line` into arguments. An empty or all-blank line gives an empty vector.
pub fn split_args(line: &[u8]) -> Result<Vec<Vec<u8>>, SplitError> {
    let mut args = Vec::new();
    let mut p = 0;
    let at = |i: usize| line.get(i).copied();
    loop {
        while at(p).is_some_and(is_space) {
            p += 1;
        }
        if p >= line.len() {
            return Ok(args);
        }
        let mut current = Vec::new();
        let mut quote = Quote::None;
        loop {
            let Some(c) = at(p) else {
                if quote != Quote::None {
                    return Err(SplitError::UnterminatedQuote);
                }
                break;
            };
            match quote {
                Quote::Double => {
                    if c == b'\\' {
                        match at(p + 1) {
                            Some(b'x') => {
                                let hi = at(p + 2).and_then(hex_value);
                                let lo = at(p + 3).and_then(hex_value);
                                if let (Some(hi), Some(lo)) = (hi, lo) {
                                    current.push(hi * 16 + lo);
                                    p += 4;
                                } else {
                                    current.push(b'x');
                                    p += 2;
                                }
                            }
                            Some(e) => {
                                current.push(match e {
                                    b'n' => b'\n',
                                    b'r' => b'\r',
                                    b't' => b'\t',
                                    b'b' => 0x08,
                                    b'a' => 0x07,
                                    other => other,
                                });
                                p += 2;
                            }
                            None => return Err(SplitError::UnterminatedQuote),
                        }
                    } else if c == b'"' {
                        if at(p + 1).is_some_and(|n| !is_space(n)) {
                            return Err(SplitError::TextAfterClosingQuote);
                        }
                        p += 1;
                        break;
                    } else {
                        current.push(c);
                        p += 1;
                    }
                }
                Quote::Single => {
                    if c == b'\\' && at(p + 1) == Some(b'\'') {
                        current.push(b'\'');
                        p += 2;
                    } else if c == b'\'' {
                        if at(p + 1).is_some_and(|n| !is_space(n)) {
                            return Err(SplitError::TextAfterClosingQuote);
                        }
                        p += 1;
                        break;
                    } else {
                        current.push(c);
                        p += 1;
                    }
                }
                Quote::None => match c {
                    b' ' | b'\n' | b'\r' | b'\t' => {
                        p += 1;
                        break;
                    }
                    b'"' => {
                        quote = Quote::Double;
                        p += 1;
                    }
                    b'\'' => {
                        quote = Quote::Single;
                        p += 1;
                    }
                    other => {
                        current.push(other);
                        p += 1;
                    }
                },
            }
        }
        args.push(current);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Vec<String> {
        split_args(line.as_bytes())
            .unwrap_or_else(|e| panic!("{line:?}: {e}"))
            .into_iter()
            .map(|a| String::from_utf8_lossy(&a).into_owned())
            .collect()
    }

    #[test]
    fn splits_words() {
        assert_eq!(ok("set a hello-world"), ["set", "a", "hello-world"]);
        assert_eq!(ok("  get\t a  \r\n"), ["get", "a"]);
        assert!(ok("").is_empty());
        assert!(ok(" \t \x0b\x0c ").is_empty());
    }

    #[test]
    fn double_quotes_and_escapes() {
        assert_eq!(ok(r#"set k "hello world""#), ["set", "k", "hello world"]);
        assert_eq!(ok(r#""a\nb\r\t\"\\""#), ["a\nb\r\t\"\\"]);
        assert_eq!(ok(r#""\x41\x4a\x6b""#), ["AJk"]);
        assert_eq!(split_args(br#""\xff\x00""#), Ok(vec![vec![0xff, 0x00]]));
        assert_eq!(split_args(br#""\a\b""#), Ok(vec![vec![0x07, 0x08]]));
        // An incomplete \x escape is the letter x, as in Redis.
        assert_eq!(ok(r#""\x4""#), ["x4"]);
        assert_eq!(ok(r#""\q""#), ["q"]);
        assert_eq!(ok(r#""""#), [""]);
    }

    #[test]
    fn single_quotes_are_literal() {
        assert_eq!(ok(r#"'it\'s' 'a\nb'"#), ["it's", "a\\nb"]);
        assert_eq!(ok("''"), [""]);
    }

    #[test]
    fn quote_inside_a_word_continues_it() {
        assert_eq!(ok(r#"a"b c""#), ["ab c"]);
        assert_eq!(ok("x'y z' w"), ["xy z", "w"]);
    }

    #[test]
    fn reports_unbalanced_quotes() {
        assert_eq!(split_args(br#"set k "abc"#), Err(SplitError::UnterminatedQuote));
        assert_eq!(split_args(b"set k 'abc"), Err(SplitError::UnterminatedQuote));
        assert_eq!(split_args(br#""abc\"#), Err(SplitError::UnterminatedQuote));
        assert_eq!(split_args(br#""a"b"#), Err(SplitError::TextAfterClosingQuote));
        assert_eq!(split_args(b"'a'b"), Err(SplitError::TextAfterClosingQuote));
    }

    #[test]
    fn nul_is_an_ordinary_byte() {
        assert_eq!(split_args(b"a\0b c"), Ok(vec![b"a\0b".to_vec(), b"c".to_vec()]));
    }
}
