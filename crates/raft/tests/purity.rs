//! The core stays pure (DESIGN: no I/O, no clock, no threads, seeded RNG, deterministic iteration):
//! Cargo already keeps tokio and the network crates out of its dependencies, but the standard
//! library is always there. This test reads the core's sources and fails on any use of the parts
//! of `std` that reach outside the process's own memory, or that iterate in a random order.
//!
//! It caught a debugging leftover that read an environment variable on every lease read.

use std::path::Path;

/// Text that must not appear in the core's code (comments are skipped), and why.
const FORBIDDEN: &[(&str, &str)] = &[
    ("std::env", "the environment is process state outside the core's inputs"),
    ("std::fs", "file I/O belongs to the storage crate"),
    ("std::net", "network I/O belongs to the server"),
    ("std::io", "I/O belongs to the hosts"),
    ("std::thread", "the core runs on its caller's thread"),
    ("std::process", "the core never leaves or starts a process"),
    ("std::time", "time reaches the core only as ticks"),
    ("Instant", "time reaches the core only as ticks"),
    ("SystemTime", "time reaches the core only as ticks"),
    ("HashMap", "iteration order must be deterministic (BTreeMap)"),
    ("HashSet", "iteration order must be deterministic (BTreeSet)"),
    ("println!", "the core has no output but its Ready"),
    ("eprintln!", "the core has no output but its Ready"),
    ("print!", "the core has no output but its Ready"),
    ("dbg!", "the core has no output but its Ready"),
    ("thread_rng", "randomness comes only from the core's seeded RNG"),
    ("getrandom", "randomness comes only from the core's seeded RNG"),
];

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("the core's sources are readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The line without its `//` comment (a `//` inside a string literal cuts the line short, which
/// can only hide text, never invent it; the core has no such literal where it matters).
fn code(line: &str) -> &str {
    line.split_once("//").map_or(line, |(code, _)| code)
}

#[test]
fn the_core_uses_no_io_clock_environment_or_random_order() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    assert!(files.len() > 5, "found the core's sources in {}", src.display());
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("a readable source file");
        for (n, line) in text.lines().enumerate() {
            for (needle, why) in FORBIDDEN {
                if code(line).contains(needle) {
                    found.push(format!(
                        "{}:{}: `{needle}`: {why}\n    {}",
                        file.display(),
                        n + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(found.is_empty(), "the core must stay pure:\n{}", found.join("\n"));
}

#[test]
fn the_check_sees_a_forbidden_use() {
    // The scanner itself must be able to fail: a line with a forbidden use is found, its comment is not.
    assert!(code("let x = std::env::var(\"X\");").contains("std::env"));
    assert!(!code("// std::env is forbidden").contains("std::env"));
}
