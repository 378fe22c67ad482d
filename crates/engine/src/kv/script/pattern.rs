//! Lua 5.1 patterns (reference manual §5.4.1) matched in Rust, with every step counted.
//!
//! Scripts run at apply on every replica, so a script that runs forever stops the state machine of
//! the whole cluster, and its log entry does it again after every restart. Lua's own matcher
//! (`lstrlib.c`) backtracks without bound inside one C call, where the instruction hook never
//! runs: `string.find(string.rep('a', 40), '.-.-.-.-.-.-.-.-b')` took the cluster down. This is
//! the same algorithm (same backtracking order, so the same matches, captures and error texts as
//! Lua 5.1), with a step counter that stops a match once it has used the run's budget.
//!
//! Invariants: a [`MatchState`] never examines more than `limit` steps plus one pattern item's
//! worth before it returns [`PatError::Budget`]; recursion never goes deeper than [`MAX_DEPTH`]
//! (`pattern too complex`, Lua 5.2's text and limit: 5.1 had none and could overflow the C
//! stack); the pattern ends at its first NUL byte, as in Lua 5.1 (`%z` matches a NUL); the subject
//! reads as NUL past its end where Lua's code reads the string's terminator (`%f`, `%b`).

/// Most captures in one pattern (`LUA_MAXCAPTURES`).
pub(crate) const MAX_CAPTURES: usize = 32;

/// Deepest recursion of the matcher (Lua 5.2's `MAXCCALLS`).
pub(crate) const MAX_DEPTH: usize = 200;

/// The characters that make a pattern more than a plain string (`SPECIALS` in `lstrlib.c`).
const SPECIALS: &[u8] = b"^$*+?.([%-";

/// Why a match stopped without an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PatError {
    /// A malformed pattern or bad capture use: Lua's error text.
    Lua(&'static str),
    /// The step limit was reached.
    Budget,
}

/// The length state of one capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CapLen {
    /// Opened, not yet closed.
    Unfinished,
    /// A position capture `()`.
    Position,
    /// Closed, this many bytes long.
    Len(usize),
}

/// One capture's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Capture<'s> {
    /// A substring of the subject.
    Str(&'s [u8]),
    /// A position capture: a 1-based index into the subject.
    Position(usize),
}

/// The part of `pattern` Lua 5.1 reads: up to its first NUL byte.
pub(crate) fn effective(pattern: &[u8]) -> &[u8] {
    match pattern.iter().position(|&c| c == 0) {
        Some(n) => &pattern[..n],
        None => pattern,
    }
}

/// True if `pattern` (up to its first NUL) has a special character: `string.find` searches
/// plainly otherwise.
pub(crate) fn has_specials(pattern: &[u8]) -> bool {
    effective(pattern).iter().any(|c| SPECIALS.contains(c))
}

/// Lua's `match_class`: does `c` belong to the class letter `cl` (`%a`, `%D`, ...; any other
/// character stands for itself)? ASCII only, as in the C locale.
fn match_class(c: u8, cl: u8) -> bool {
    let res = match cl.to_ascii_lowercase() {
        b'a' => c.is_ascii_alphabetic(),
        b'c' => c.is_ascii_control(),
        b'd' => c.is_ascii_digit(),
        b'l' => c.is_ascii_lowercase(),
        b'p' => c.is_ascii_punctuation(),
        b's' => matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'),
        b'u' => c.is_ascii_uppercase(),
        b'w' => c.is_ascii_alphanumeric(),
        b'x' => c.is_ascii_hexdigit(),
        b'z' => c == 0,
        _ => return cl == c,
    };
    if cl.is_ascii_lowercase() {
        res
    } else {
        !res
    }
}

/// One match of a pattern against a subject (Lua's `MatchState`).
pub(crate) struct MatchState<'a> {
    src: &'a [u8],
    pat: &'a [u8],
    level: usize,
    capture: [(usize, CapLen); MAX_CAPTURES],
    depth: usize,
    /// Steps taken since the last [`MatchState::take_steps`].
    steps: u64,
    /// Steps allowed before [`PatError::Budget`].
    limit: u64,
}

impl<'a> MatchState<'a> {
    /// A matcher of `pat` (already without a leading `^` anchor, and cut at its first NUL: see
    /// [`effective`]) over `src`, allowed `limit` steps.
    pub(crate) fn new(src: &'a [u8], pat: &'a [u8], limit: u64) -> MatchState<'a> {
        MatchState {
            src,
            pat,
            level: 0,
            capture: [(0, CapLen::Unfinished); MAX_CAPTURES],
            depth: 0,
            steps: 0,
            limit,
        }
    }

    /// The steps taken since the last call, and a new limit for the ones to come.
    pub(crate) fn take_steps(&mut self, new_limit: u64) -> u64 {
        self.limit = new_limit;
        std::mem::take(&mut self.steps)
    }

    /// Tries to match the whole pattern at `s`; returns where the match ends. Captures are reset
    /// first.
    pub(crate) fn match_at(&mut self, s: usize) -> Result<Option<usize>, PatError> {
        self.level = 0;
        self.depth = 0;
        self.do_match(s, 0)
    }

    /// The captures of the last successful match `s..e`: the whole match if the pattern has
    /// none and `whole` is set (`string.match`, `gmatch`, `gsub`), nothing if it has none and
    /// `whole` is not (`string.find`).
    pub(crate) fn captures(&self, s: usize, e: usize, whole: bool) -> Result<Vec<Capture<'a>>, PatError> {
        let n = if self.level == 0 && whole { 1 } else { self.level };
        (0..n).map(|i| self.capture_value(i, s, e)).collect()
    }

    /// Capture `i` of the last successful match `s..e` (`push_onecapture`): with no captures,
    /// capture 0 is the whole match.
    pub(crate) fn capture_value(&self, i: usize, s: usize, e: usize) -> Result<Capture<'a>, PatError> {
        if i >= self.level {
            return if i == 0 {
                Ok(Capture::Str(&self.src[s..e]))
            } else {
                Err(PatError::Lua("invalid capture index"))
            };
        }
        let (init, len) = self.capture[i];
        match len {
            CapLen::Unfinished => Err(PatError::Lua("unfinished capture")),
            CapLen::Position => Ok(Capture::Position(init + 1)),
            CapLen::Len(n) => Ok(Capture::Str(&self.src[init..init + n])),
        }
    }

    /// The subject's bytes `s..e`.
    pub(crate) fn subject(&self, s: usize, e: usize) -> &'a [u8] {
        &self.src[s..e]
    }

    fn step(&mut self, n: u64) -> Result<(), PatError> {
        self.steps += n;
        if self.steps > self.limit {
            return Err(PatError::Budget);
        }
        Ok(())
    }

    /// The pattern byte at `p`, NUL past the end (where Lua reads the terminator).
    fn pat_at(&self, p: usize) -> u8 {
        self.pat.get(p).copied().unwrap_or(0)
    }

    /// The subject byte at `s`, NUL past the end.
    fn src_at(&self, s: usize) -> u8 {
        self.src.get(s).copied().unwrap_or(0)
    }

    /// Where the single-character class at `p` ends (`classEnd`).
    fn class_end(&self, p: usize) -> Result<usize, PatError> {
        let mut p = p + 1;
        match self.pat_at(p - 1) {
            b'%' => {
                if p >= self.pat.len() {
                    return Err(PatError::Lua("malformed pattern (ends with '%')"));
                }
                Ok(p + 1)
            }
            b'[' => {
                if self.pat_at(p) == b'^' {
                    p += 1;
                }
                loop {
                    if p >= self.pat.len() {
                        return Err(PatError::Lua("malformed pattern (missing ']')"));
                    }
                    let c = self.pat[p];
                    p += 1;
                    if c == b'%' && p < self.pat.len() {
                        p += 1;
                    }
                    if self.pat_at(p) == b']' {
                        return Ok(p + 1);
                    }
                }
            }
            _ => Ok(p),
        }
    }

    /// Does `c` belong to the set `[...]` from `p` (its `[`) to `ec` (its `]`)?
    fn match_bracket_class(&self, c: u8, p: usize, ec: usize) -> bool {
        let mut p = p;
        let mut sig = true;
        if self.pat_at(p + 1) == b'^' {
            sig = false;
            p += 1;
        }
        loop {
            p += 1;
            if p >= ec {
                return !sig;
            }
            let pc = self.pat[p];
            if pc == b'%' {
                p += 1;
                if match_class(c, self.pat_at(p)) {
                    return sig;
                }
            } else if self.pat_at(p + 1) == b'-' && p + 2 < ec {
                p += 2;
                if self.pat[p - 2] <= c && c <= self.pat[p] {
                    return sig;
                }
            } else if pc == c {
                return sig;
            }
        }
    }

    /// Does `c` match the single-character class from `p` to `ep`?
    fn single_match(&self, c: u8, p: usize, ep: usize) -> bool {
        match self.pat_at(p) {
            b'.' => true,
            b'%' => match_class(c, self.pat_at(p + 1)),
            b'[' => self.match_bracket_class(c, p, ep - 1),
            pc => pc == c,
        }
    }

    fn do_match(&mut self, s: usize, p: usize) -> Result<Option<usize>, PatError> {
        if self.depth >= MAX_DEPTH {
            return Err(PatError::Lua("pattern too complex"));
        }
        self.depth += 1;
        let r = self.match_here(s, p);
        self.depth -= 1;
        r
    }

    /// Lua's `match`, its `goto init` tail calls as a loop.
    fn match_here(&mut self, mut s: usize, mut p: usize) -> Result<Option<usize>, PatError> {
        loop {
            self.step(1)?;
            match self.pat_at(p) {
                b'(' => {
                    return if self.pat_at(p + 1) == b')' {
                        self.start_capture(s, p + 2, CapLen::Position)
                    } else {
                        self.start_capture(s, p + 1, CapLen::Unfinished)
                    };
                }
                b')' => return self.end_capture(s, p + 1),
                0 => return Ok(Some(s)),
                b'$' if p + 1 == self.pat.len() => return Ok((s == self.src.len()).then_some(s)),
                b'%' if self.pat_at(p + 1) == b'b' => match self.match_balance(s, p + 2)? {
                    Some(next) => {
                        s = next;
                        p += 4;
                    }
                    None => return Ok(None),
                },
                b'%' if self.pat_at(p + 1) == b'f' => {
                    p += 2;
                    if self.pat_at(p) != b'[' {
                        return Err(PatError::Lua("missing '[' after '%f' in pattern"));
                    }
                    let ep = self.class_end(p)?;
                    let previous = if s == 0 { 0 } else { self.src[s - 1] };
                    if self.match_bracket_class(previous, p, ep - 1)
                        || !self.match_bracket_class(self.src_at(s), p, ep - 1)
                    {
                        return Ok(None);
                    }
                    p = ep;
                }
                b'%' if self.pat_at(p + 1).is_ascii_digit() => {
                    match self.match_capture(s, self.pat_at(p + 1))? {
                        Some(next) => {
                            s = next;
                            p += 2;
                        }
                        None => return Ok(None),
                    }
                }
                _ => {
                    let ep = self.class_end(p)?;
                    let m = s < self.src.len() && self.single_match(self.src[s], p, ep);
                    match self.pat_at(ep) {
                        b'?' => {
                            if m {
                                if let Some(res) = self.do_match(s + 1, ep + 1)? {
                                    return Ok(Some(res));
                                }
                            }
                            p = ep + 1;
                        }
                        b'*' => return self.max_expand(s, p, ep),
                        b'+' => return if m { self.max_expand(s + 1, p, ep) } else { Ok(None) },
                        b'-' => return self.min_expand(s, p, ep),
                        _ => {
                            if !m {
                                return Ok(None);
                            }
                            s += 1;
                            p = ep;
                        }
                    }
                }
            }
        }
    }

    fn max_expand(&mut self, s: usize, p: usize, ep: usize) -> Result<Option<usize>, PatError> {
        let mut i = 0;
        while s + i < self.src.len() && self.single_match(self.src[s + i], p, ep) {
            self.step(1)?;
            i += 1;
        }
        loop {
            if let Some(res) = self.do_match(s + i, ep + 1)? {
                return Ok(Some(res));
            }
            if i == 0 {
                return Ok(None);
            }
            i -= 1;
        }
    }

    fn min_expand(&mut self, mut s: usize, p: usize, ep: usize) -> Result<Option<usize>, PatError> {
        loop {
            if let Some(res) = self.do_match(s, ep + 1)? {
                return Ok(Some(res));
            }
            if s < self.src.len() && self.single_match(self.src[s], p, ep) {
                s += 1;
            } else {
                return Ok(None);
            }
        }
    }

    fn start_capture(&mut self, s: usize, p: usize, what: CapLen) -> Result<Option<usize>, PatError> {
        if self.level >= MAX_CAPTURES {
            return Err(PatError::Lua("too many captures"));
        }
        self.capture[self.level] = (s, what);
        self.level += 1;
        let res = self.do_match(s, p)?;
        if res.is_none() {
            self.level -= 1;
        }
        Ok(res)
    }

    fn end_capture(&mut self, s: usize, p: usize) -> Result<Option<usize>, PatError> {
        let l = (0..self.level)
            .rev()
            .find(|&l| self.capture[l].1 == CapLen::Unfinished)
            .ok_or(PatError::Lua("invalid pattern capture"))?;
        self.capture[l].1 = CapLen::Len(s - self.capture[l].0);
        let res = self.do_match(s, p)?;
        if res.is_none() {
            self.capture[l].1 = CapLen::Unfinished;
        }
        Ok(res)
    }

    /// `%bxy` at `s`, `p` pointing at `x`.
    fn match_balance(&mut self, s: usize, p: usize) -> Result<Option<usize>, PatError> {
        if p + 1 >= self.pat.len() {
            return Err(PatError::Lua("unbalanced pattern"));
        }
        let (b, e) = (self.pat[p], self.pat[p + 1]);
        if self.src_at(s) != b || s >= self.src.len() {
            return Ok(None);
        }
        let mut cont = 1;
        let mut s = s + 1;
        while s < self.src.len() {
            self.step(1)?;
            let c = self.src[s];
            if c == e {
                cont -= 1;
                if cont == 0 {
                    return Ok(Some(s + 1));
                }
            } else if c == b {
                cont += 1;
            }
            s += 1;
        }
        Ok(None)
    }

    /// `%1`..`%9` at `s`: the text of an earlier capture again.
    fn match_capture(&mut self, s: usize, digit: u8) -> Result<Option<usize>, PatError> {
        let l = usize::from(digit.wrapping_sub(b'1'));
        if l >= self.level || self.capture[l].1 == CapLen::Unfinished {
            return Err(PatError::Lua("invalid capture index"));
        }
        let (init, len) = self.capture[l];
        let CapLen::Len(n) = len else {
            return Ok(None); // A position capture has no text (Lua compares a huge length).
        };
        self.step(n as u64 / 8)?;
        if self.src.len() - s >= n && self.src[init..init + n] == self.src[s..s + n] {
            Ok(Some(s + n))
        } else {
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(src: &str, pat: &str) -> Result<Option<(usize, usize, Vec<String>)>, PatError> {
        let (anchor, pat) = match pat.strip_prefix('^') {
            Some(p) => (true, p),
            None => (false, pat),
        };
        let mut ms = MatchState::new(src.as_bytes(), pat.as_bytes(), 1_000_000);
        let mut s = 0;
        loop {
            if let Some(e) = ms.match_at(s)? {
                let caps = ms
                    .captures(s, e, true)?
                    .into_iter()
                    .map(|c| match c {
                        Capture::Str(b) => String::from_utf8_lossy(b).into_owned(),
                        Capture::Position(n) => format!("@{n}"),
                    })
                    .collect();
                return Ok(Some((s + 1, e, caps)));
            }
            if s >= src.len() || anchor {
                return Ok(None);
            }
            s += 1;
        }
    }

    #[test]
    fn the_manuals_examples_match_as_in_lua() {
        assert_eq!(find("hello world", "o w"), Ok(Some((5, 7, vec!["o w".into()]))));
        assert_eq!(find("hello world", "(o)(r)"), Ok(Some((8, 9, vec!["o".into(), "r".into()]))));
        assert_eq!(
            find("key = value", "(%w+)%s*=%s*(%w+)"),
            Ok(Some((1, 11, vec!["key".into(), "value".into()])))
        );
        assert_eq!(find("THE (quick) fox", "%((%a+)%)"), Ok(Some((5, 11, vec!["quick".into()]))));
        assert_eq!(find("x = f(a(b)c) + 1", "%b()"), Ok(Some((6, 12, vec!["(a(b)c)".into()]))));
        assert_eq!(find("THE (quick) fox", "%f[%a]%a+"), Ok(Some((1, 3, vec!["THE".into()]))));
        assert_eq!(find("hello", "()ll()"), Ok(Some((3, 4, vec!["@3".into(), "@5".into()]))));
        assert_eq!(find("abcabc", "(abc)%1"), Ok(Some((1, 6, vec!["abc".into()]))));
        assert_eq!(find("aaab", "a-b"), Ok(Some((1, 4, vec!["aaab".into()]))));
        assert_eq!(find("abc", "^b"), Ok(None));
        assert_eq!(find("abc", "c$"), Ok(Some((3, 3, vec!["c".into()]))));
        assert_eq!(find("a$c", "$c"), Ok(Some((2, 3, vec!["$c".into()]))));
        assert_eq!(find("]", "[]]"), Ok(Some((1, 1, vec!["]".into()]))));
        assert_eq!(find("a-z", "[a%-z]+"), Ok(Some((1, 3, vec!["a-z".into()]))));
        assert_eq!(find("", ""), Ok(Some((1, 0, vec!["".into()]))));
    }

    #[test]
    fn malformed_patterns_have_luas_error_texts() {
        for (pat, text) in [
            ("%", "malformed pattern (ends with '%')"),
            ("[a", "malformed pattern (missing ']')"),
            ("%f", "missing '[' after '%f' in pattern"),
            ("%b", "unbalanced pattern"),
            ("(a", "unfinished capture"),
            ("a)", "invalid pattern capture"),
            ("%1", "invalid capture index"),
            ("(%1)", "invalid capture index"),
        ] {
            assert_eq!(find("a", pat), Err(PatError::Lua(text)), "{pat}");
        }
        let many = "()".repeat(MAX_CAPTURES + 1);
        assert_eq!(find("a", &many), Err(PatError::Lua("too many captures")));
        let deep = "a?".repeat(MAX_DEPTH + 1);
        assert_eq!(find(&"a".repeat(MAX_DEPTH + 1), &deep), Err(PatError::Lua("pattern too complex")));
        // Items that do not recurse (plain characters, an `a?` that does not match) do not count.
        assert!(find("b", &deep).is_ok());
        assert!(find(&"x".repeat(5000), &"x".repeat(5000)).unwrap().is_some());
    }

    #[test]
    fn a_pathological_pattern_stops_at_its_step_limit() {
        let src = "a".repeat(40);
        let mut ms = MatchState::new(src.as_bytes(), b".-.-.-.-.-.-.-.-b", 1_000_000);
        let started = std::time::Instant::now();
        assert_eq!(ms.match_at(0), Err(PatError::Budget));
        assert!(ms.steps > 1_000_000 && ms.steps < 1_000_100, "{}", ms.steps);
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        // A long run of `.*` over a long subject is counted byte by byte.
        let long = "x".repeat(100_000);
        let mut ms = MatchState::new(long.as_bytes(), b".*y", 50_000);
        assert_eq!(ms.match_at(0), Err(PatError::Budget));
    }

    #[test]
    fn the_pattern_ends_at_its_first_nul_and_the_subject_reads_nul_past_its_end() {
        assert_eq!(effective(b"a\0b"), b"a");
        assert!(!has_specials(b"abc\0.*"));
        assert!(has_specials(b"a.c"));
        // `%f[%z]` finds the end of the subject (the terminator Lua reads).
        assert_eq!(find("ab", "%f[%z]"), Ok(Some((3, 2, vec!["".into()]))));
    }
}
