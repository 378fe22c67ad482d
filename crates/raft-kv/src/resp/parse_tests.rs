use super::*;
use crate::resp::encode;
use bytes::Bytes;
use proptest::prelude::*;

fn bulk(s: &[u8]) -> Frame {
    Frame::Bulk(Bytes::copy_from_slice(s))
}

fn cmd(args: &[&[u8]]) -> Frame {
    Frame::Array(args.iter().map(|a| bulk(a)).collect())
}

/// Parses everything in `input` at once; returns the frames and the error that ended it, if any.
fn parse_all(parser: &mut Parser, input: &[u8]) -> (Vec<Frame>, Option<ProtocolError>) {
    let mut buf = BytesMut::from(input);
    let mut frames = Vec::new();
    loop {
        match parser.parse(&mut buf) {
            Ok(Some(f)) => frames.push(f),
            Ok(None) => return (frames, None),
            Err(e) => return (frames, Some(e)),
        }
    }
}

fn requests(input: &[u8]) -> (Vec<Frame>, Option<ProtocolError>) {
    parse_all(&mut Parser::requests(Limits::server()), input)
}

fn replies(input: &[u8]) -> (Vec<Frame>, Option<ProtocolError>) {
    parse_all(&mut Parser::replies(Limits::client()), input)
}

/// Feeds `input` split at `cuts`, parsing after every chunk.
fn parse_chunked(mut parser: Parser, input: &[u8], cuts: &[usize]) -> (Vec<Frame>, Option<ProtocolError>) {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.push(input.len());
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut start = 0;
    for cut in cuts {
        buf.extend_from_slice(&input[start..cut]);
        start = cut;
        loop {
            match parser.parse(&mut buf) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

#[test]
fn parses_multibulk_requests() {
    let (frames, err) = requests(b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n*1\r\n$4\r\nPING\r\n");
    assert_eq!(err, None);
    assert_eq!(frames, vec![cmd(&[b"GET", b"a"]), cmd(&[b"PING"])]);
}

#[test]
fn bulk_strings_are_binary_safe() {
    let (frames, err) = requests(b"*2\r\n$4\r\n\r\n\0\xff\r\n$0\r\n\r\n");
    assert_eq!(err, None);
    assert_eq!(frames, vec![cmd(&[b"\r\n\0\xff", b""])]);
}

#[test]
fn parses_inline_requests() {
    let (frames, err) = requests(b"PING\r\nset k \"a b\"\nECHO '\\'x'\r\n");
    assert_eq!(err, None);
    assert_eq!(frames, vec![cmd(&[b"PING"]), cmd(&[b"set", b"k", b"a b"]), cmd(&[b"ECHO", b"'x"])]);
}

#[test]
fn skips_empty_requests_like_redis() {
    let (frames, err) = requests(b"\r\n\n   \r\n*0\r\n*-5\r\n*1\r\n$4\r\nPING\r\n");
    assert_eq!(err, None);
    assert_eq!(frames, vec![cmd(&[b"PING"])]);
}

#[test]
fn waits_for_more_bytes() {
    let mut parser = Parser::requests(Limits::server());
    let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$1\r"[..]);
    assert_eq!(parser.parse(&mut buf), Ok(None));
    assert!(!parser.is_idle());
    buf.extend_from_slice(b"\na\r");
    assert_eq!(parser.parse(&mut buf), Ok(None));
    buf.extend_from_slice(b"\n");
    assert_eq!(parser.parse(&mut buf), Ok(Some(cmd(&[b"GET", b"a"]))));
    assert!(parser.is_idle());
    assert!(buf.is_empty());
}

#[test]
fn request_errors_use_redis_wording() {
    let cases: &[(&[u8], &str)] = &[
        (b"*x\r\n", "Protocol error: invalid multibulk length"),
        (b"*01\r\n", "Protocol error: invalid multibulk length"),
        (b"*+1\r\n", "Protocol error: invalid multibulk length"),
        (b"*3000000000\r\n", "Protocol error: invalid multibulk length"),
        (b"*2\r\n$4\r\nPING\r\n:5\r\n", "Protocol error: expected '$', got ':'"),
        (b"*1\r\n$-1\r\n", "Protocol error: invalid bulk length"),
        (b"*1\r\n$x\r\n", "Protocol error: invalid bulk length"),
        (b"*1\r\n$01\r\nP\r\n", "Protocol error: invalid bulk length"),
        (b"*1\r\n$16777217\r\n", "Protocol error: invalid bulk length"),
        (b"*1\r\n$4\r\nPINGXX", "Protocol error: expected CRLF after bulk data"),
        (b"PING \"a\r\n", "Protocol error: unbalanced quotes in request"),
        (b"PING \"a\"b\r\n", "Protocol error: unbalanced quotes in request"),
        (b"*1\r\x00", "Protocol error: invalid multibulk length"),
    ];
    for (input, message) in cases {
        let (_, err) = requests(input);
        let err = err.unwrap_or_else(|| panic!("no error for {input:?}"));
        assert_eq!(err.to_string(), *message, "{input:?}");
        assert_eq!(err.to_frame(), Frame::error(format!("ERR {message}")), "{input:?}");
    }
}

#[test]
fn oversized_headers_and_lines_are_rejected_without_a_newline() {
    let mut big = b"*1\r\n$".to_vec();
    big.extend(std::iter::repeat_n(b'1', 70_000));
    assert_eq!(requests(&big).1, Some(ProtocolError::BulkHeaderTooBig));
    let mut big = b"*".to_vec();
    big.extend(std::iter::repeat_n(b'1', 70_000));
    assert_eq!(requests(&big).1, Some(ProtocolError::MultibulkHeaderTooBig));
    let big = vec![b'A'; 70_000];
    assert_eq!(requests(&big).1, Some(ProtocolError::InlineTooBig));
    // Exactly at the limit is still fine.
    let mut ok = vec![b'A'; 64 << 10];
    assert_eq!(requests(&ok), (vec![], None));
    ok.push(b'\n');
    assert_eq!(requests(&ok).1, None);
}

#[test]
fn limits_are_enforced_before_buffering() {
    let limits =
        Limits { max_bulk_len: 10, max_array_len: 3, max_inline_len: 16, max_depth: 2, max_frame_len: 40 };
    let run = |input: &[u8]| parse_all(&mut Parser::requests(limits.clone()), input);
    assert_eq!(run(b"*4\r\n").1, Some(ProtocolError::InvalidMultibulkLength));
    assert_eq!(run(b"*3\r\n").1, None);
    assert_eq!(run(b"*1\r\n$11\r\n").1, Some(ProtocolError::InvalidBulkLength));
    assert_eq!(run(b"*1\r\n$10\r\n").1, None);
    // 4 + 3 * (4 + 10 + 2) = 52 bytes > 40: refused as soon as the third header arrives,
    // before its data is buffered.
    assert_eq!(
        run(b"*3\r\n$10\r\n0123456789\r\n$10\r\n0123456789\r\n$10\r\n").1,
        Some(ProtocolError::FrameTooLarge)
    );
    // 4 + 2 * 16 = 36 bytes: accepted.
    let (frames, err) = run(b"*2\r\n$10\r\n0123456789\r\n$10\r\n0123456789\r\n");
    assert_eq!((frames.len(), err), (1, None));
    assert_eq!(run(&[b'x'; 17]).1, Some(ProtocolError::InlineTooBig));
    let run = |input: &[u8]| parse_all(&mut Parser::replies(limits.clone()), input);
    assert_eq!(run(b"*1\r\n*1\r\n:1\r\n").1, None);
    assert_eq!(run(b"*1\r\n*1\r\n*1\r\n:1\r\n").1, Some(ProtocolError::NestingTooDeep));
}

#[test]
fn errors_are_sticky() {
    let mut parser = Parser::requests(Limits::server());
    let mut buf = BytesMut::from(&b"*x\r\n"[..]);
    let first = parser.parse(&mut buf);
    assert_eq!(first, Err(ProtocolError::InvalidMultibulkLength));
    let mut fresh = BytesMut::from(&b"PING\r\n"[..]);
    assert_eq!(parser.parse(&mut fresh), first);
}

#[test]
fn parses_every_reply_type() {
    let (frames, err) =
        replies(b"+OK\r\n-ERR bad\r\n:-7\r\n$3\r\nfoo\r\n$-1\r\n*-1\r\n*0\r\n*2\r\n*1\r\n:1\r\n$0\r\n\r\n");
    assert_eq!(err, None);
    assert_eq!(
        frames,
        vec![
            Frame::ok(),
            Frame::error("ERR bad"),
            Frame::Integer(-7),
            bulk(b"foo"),
            Frame::Null,
            Frame::NullArray,
            Frame::Array(vec![]),
            Frame::Array(vec![Frame::Array(vec![Frame::Integer(1)]), bulk(b"")]),
        ]
    );
}

#[test]
fn reply_errors() {
    assert_eq!(replies(b"!x\r\n").1, Some(ProtocolError::InvalidTypeByte(b'!')));
    assert_eq!(replies(b":1x\r\n").1, Some(ProtocolError::InvalidInteger));
    assert_eq!(replies(b"+OK\rX").1, Some(ProtocolError::MissingLineTerminator));
    assert_eq!(replies(b"$-2\r\n").1, Some(ProtocolError::InvalidBulkLength));
    assert_eq!(replies(b"*-2\r\n").1, Some(ProtocolError::InvalidMultibulkLength));
    assert_eq!(replies(b"$3\r\nabcd\r\n").1, Some(ProtocolError::MissingBulkTerminator));
}

#[test]
fn deep_nesting_does_not_recurse() {
    let limits = Limits { max_depth: 1_000_000, ..Limits::client() };
    let depth = 200_000;
    let mut input = b"*1\r\n".repeat(depth);
    input.extend_from_slice(b":1\r\n");
    let (frames, err) = parse_all(&mut Parser::replies(limits), &input);
    assert_eq!(err, None);
    assert_eq!(frames.len(), 1);
    // Drop the deep frame iteratively so the test's own drop does not overflow the stack.
    let mut frame = frames.into_iter().next();
    let mut levels = 0;
    while let Some(Frame::Array(mut items)) = frame {
        levels += 1;
        frame = items.pop();
    }
    assert_eq!(levels, depth);
}

#[test]
fn parse_i64_is_strict() {
    assert_eq!(parse_i64(b"0"), Some(0));
    assert_eq!(parse_i64(b"-1"), Some(-1));
    assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
    assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
    for bad in [
        &b""[..],
        b"-",
        b"+1",
        b"01",
        b"-0",
        b" 1",
        b"1 ",
        b"1.0",
        b"9223372036854775808",
        b"-9223372036854775809",
        b"99999999999999999999999",
    ] {
        assert_eq!(parse_i64(bad), None, "{bad:?}");
    }
}

fn arb_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..40),
        proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'a')], 0..10),
    ]
}

fn arb_line() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>().prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n'), 0..20)
}

fn arb_reply() -> impl Strategy<Value = Frame> {
    let leaf = prop_oneof![
        arb_line().prop_map(|l| Frame::Simple(l.into())),
        arb_line().prop_map(|l| Frame::Error(l.into())),
        any::<i64>().prop_map(Frame::Integer),
        arb_bytes().prop_map(|b| Frame::Bulk(b.into())),
        Just(Frame::Null),
        Just(Frame::NullArray),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| proptest::collection::vec(inner, 0..6).prop_map(Frame::Array))
}

/// Request streams: multibulk commands, inline commands and skipped empty requests.
fn arb_request_chunk() -> impl Strategy<Value = (Vec<u8>, Option<Frame>)> {
    prop_oneof![
        proptest::collection::vec(arb_bytes(), 1..5).prop_map(|args| {
            let mut out = BytesMut::new();
            encode::write_command(&mut out, &args);
            let frame = Frame::Array(args.into_iter().map(|a| Frame::Bulk(a.into())).collect());
            (out.to_vec(), Some(frame))
        }),
        proptest::collection::vec("[a-zA-Z0-9]{1,6}", 1..4).prop_map(|words| {
            let line = format!("{}\r\n", words.join(" "));
            let frame = Frame::Array(words.into_iter().map(|w| Frame::Bulk(w.into_bytes().into())).collect());
            (line.into_bytes(), Some(frame))
        }),
        Just((b"*0\r\n".to_vec(), None)),
        Just((b"\r\n".to_vec(), None)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic_and_chunking_does_not_matter(
        input in proptest::collection::vec(
            prop_oneof![any::<u8>(), Just(b'\r'), Just(b'\n'), Just(b'*'), Just(b'$'), Just(b'1')],
            0..300,
        ),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let small = Limits { max_bulk_len: 50, max_array_len: 5, max_inline_len: 40, max_depth: 3, max_frame_len: 120 };
        for make in [Parser::requests, Parser::replies] {
            let whole = parse_all(&mut make(small.clone()), &input);
            let chunked = parse_chunked(make(small.clone()), &input, &cuts);
            prop_assert_eq!(whole, chunked);
        }
    }

    #[test]
    fn valid_request_streams_parse_identically_in_chunks(
        chunks in proptest::collection::vec(arb_request_chunk(), 0..8),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let input: Vec<u8> = chunks.iter().flat_map(|(b, _)| b.clone()).collect();
        let expected: Vec<Frame> = chunks.into_iter().filter_map(|(_, f)| f).collect();
        let whole = requests(&input);
        prop_assert_eq!(&whole, &(expected, None));
        let chunked = parse_chunked(Parser::requests(Limits::server()), &input, &cuts);
        prop_assert_eq!(whole, chunked);
    }

    #[test]
    fn encoded_replies_round_trip_in_chunks(
        frames in proptest::collection::vec(arb_reply(), 0..6),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let mut out = BytesMut::new();
        for f in &frames {
            encode(f, &mut out);
        }
        let whole = replies(&out);
        prop_assert_eq!(&whole, &(frames, None));
        let chunked = parse_chunked(Parser::replies(Limits::client()), &out, &cuts);
        prop_assert_eq!(whole, chunked);
    }

    #[test]
    fn byte_at_a_time_equals_whole(frames in proptest::collection::vec(arb_reply(), 1..4)) {
        let mut out = BytesMut::new();
        for f in &frames {
            encode(f, &mut out);
        }
        let cuts: Vec<usize> = (0..out.len()).collect();
        prop_assert_eq!(parse_chunked(Parser::replies(Limits::client()), &out, &cuts), (frames, None));
    }
}
