//! Glob-style matching as Redis's `stringmatchlen` (`KEYS`, `SCAN MATCH`, `HSCAN MATCH`,
//! `CONFIG GET`, ACL key patterns), and the literal prefix of a pattern, which lets a scan of
//! the ordered key space start at the first key that can match instead of the first key.

/// Glob-style matching as Redis's `stringmatchlen`: `*`, `?`, `[abc]`, `[^a-z]`, `\x`.
/// Iterative (no recursion, linear backtracking on `*`), so any pattern is safe.
pub fn glob_match(pattern: &[u8], string: &[u8], nocase: bool) -> bool {
    let eq = |a: u8, b: u8| {
        if nocase {
            a.eq_ignore_ascii_case(&b)
        } else {
            a == b
        }
    };
    let (mut p, mut s) = (0, 0);
    // Position after the last `*` and the string position it is currently matched up to.
    let mut star: Option<(usize, usize)> = None;
    while s < string.len() {
        let step = match pattern.get(p) {
            Some(b'*') => {
                star = Some((p + 1, s));
                p += 1;
                continue;
            }
            Some(b'?') => Some(p + 1),
            Some(b'[') => match_class(pattern, p, string[s], nocase),
            Some(b'\\') if p + 1 < pattern.len() => eq(pattern[p + 1], string[s]).then_some(p + 2),
            Some(&c) => eq(c, string[s]).then_some(p + 1),
            None => None,
        };
        match (step, star) {
            (Some(next), _) => {
                p = next;
                s += 1;
            }
            (None, Some((after_star, matched))) => {
                p = after_star;
                s = matched + 1;
                star = Some((after_star, matched + 1));
            }
            (None, None) => return false,
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the class starting at `pattern[open] == b'['`; returns the position
/// after the class when it matches. An unterminated class extends to the end of the pattern.
fn match_class(pattern: &[u8], open: usize, c: u8, nocase: bool) -> Option<usize> {
    let fold = |b: u8| if nocase { b.to_ascii_lowercase() } else { b };
    let c = fold(c);
    let mut i = open + 1;
    let negate = pattern.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let mut matched = false;
    while let Some(&b) = pattern.get(i) {
        if b == b']' {
            break;
        }
        if b == b'\\' && i + 1 < pattern.len() {
            matched |= fold(pattern[i + 1]) == c;
            i += 2;
        } else if pattern.get(i + 1) == Some(&b'-') && i + 2 < pattern.len() {
            let (mut lo, mut hi) = (fold(b), fold(pattern[i + 2]));
            if lo > hi {
                std::mem::swap(&mut lo, &mut hi);
            }
            matched |= (lo..=hi).contains(&c);
            i += 3;
        } else {
            matched |= fold(b) == c;
            i += 1;
        }
    }
    (matched != negate).then_some((i + 1).min(pattern.len()))
}

/// The bytes every string matching `pattern` (case-sensitively) starts with: the pattern up to
/// its first special character (`*`, `?`, `[`), with `\\x` escapes resolved.
pub(crate) fn literal_prefix(pattern: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(&c) = pattern.get(i) {
        match c {
            b'*' | b'?' | b'[' => break,
            b'\\' if i + 1 < pattern.len() => {
                out.push(pattern[i + 1]);
                i += 2;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert_eq!(literal_prefix(b"user:*"), b"user:".to_vec());
        assert_eq!(literal_prefix(b"*"), b"".to_vec());
        assert_eq!(literal_prefix(b"a\\*b*"), b"a*b".to_vec());
        assert_eq!(literal_prefix(b"abc"), b"abc".to_vec());
        assert_eq!(literal_prefix(b"ab?c"), b"ab".to_vec());
        // A trailing backslash matches itself.
        assert_eq!(literal_prefix(b"ab\\"), b"ab\\".to_vec());
        for (p, s) in [("user:*", "user:1"), ("a\\*b*", "a*bc"), ("ab\\", "ab\\")] {
            assert!(glob_match(p.as_bytes(), s.as_bytes(), false));
            assert!(s.as_bytes().starts_with(&literal_prefix(p.as_bytes())));
        }
    }
}
