//! Tests of argument parsing and of whole runs against an in-process Redis-protocol server.

use std::collections::BTreeMap;
use std::sync::Mutex;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::cli::{self, Command};
use crate::resp::{write_bulk, write_error, write_integer, write_null, write_simple, Limits, Parser};

fn bench_args(line: &str) -> BenchArgs {
    let argv = line.split_whitespace().map(String::from).collect();
    match cli::parse(argv).unwrap().command {
        Command::Bench(b) => b,
        other => panic!("not bench: {other:?}"),
    }
}

#[test]
fn defaults_parse() {
    let a = bench_args("raft-kv bench");
    assert_eq!(a.target, Target::RaftKv);
    assert_eq!(a.clients, 16);
    assert_eq!(a.connections, None);
    assert_eq!(a.duration, Duration::from_secs(10));
    assert_eq!(a.requests, None);
    assert_eq!(a.workload, Workload::Write);
    assert_eq!(a.distribution, Distribution::Uniform);
    assert!(!a.json);
    let plan = Plan::new(a).unwrap();
    assert_eq!(plan.args.endpoints, ["127.0.0.1:10001", "127.0.0.1:10002", "127.0.0.1:10003"]);
    assert_eq!(plan.connections, 16);
}

#[test]
fn every_option_parses() {
    let a = bench_args(
        "raft-kv bench --target etcd --endpoints 127.0.0.1:1,127.0.0.1:2 --clients 64 --connections 4 \
         --duration 1500ms --requests 1000 --workload mixed --read-ratio 0.5 --keys 77 --value-size 9 \
         --distribution zipfian --zipf-theta 1.2 --timeout 2s --no-warmup --seed 5 --json --no-progress",
    );
    assert_eq!(a.target, Target::Etcd);
    assert_eq!(a.endpoints, ["127.0.0.1:1", "127.0.0.1:2"]);
    assert_eq!((a.clients, a.connections), (64, Some(4)));
    assert_eq!(a.duration, Duration::from_millis(1500));
    assert_eq!(a.requests, Some(1000));
    assert_eq!(a.workload, Workload::Mixed);
    assert_eq!(a.read_ratio, 0.5);
    assert_eq!((a.keys, a.value_size), (77, 9));
    assert_eq!(a.distribution, Distribution::Zipfian);
    assert_eq!(a.zipf_theta, 1.2);
    assert_eq!(a.timeout, Duration::from_secs(2));
    assert!(a.no_warmup && a.json && a.no_progress);
    assert_eq!(a.seed, 5);
    assert_eq!(bench_args("raft-kv bench --target etcd").target, Target::Etcd);
    let etcd = Plan::new(bench_args("raft-kv bench --target etcd")).unwrap();
    assert_eq!(etcd.args.endpoints, ["127.0.0.1:2379"]);
}

#[test]
fn bad_arguments_are_refused() {
    let parse = |line: &str| cli::parse(line.split_whitespace().map(String::from).collect());
    assert!(parse("raft-kv bench --workload nope").is_err());
    assert!(parse("raft-kv bench --duration 10x").is_err());
    assert!(parse("raft-kv bench --target redis").is_err());
    assert!(Plan::new(bench_args("raft-kv bench --clients 0")).is_err());
    assert!(Plan::new(bench_args("raft-kv bench --requests 0")).is_err());
    assert!(Plan::new(bench_args("raft-kv bench --keys 0")).is_err());
    assert!(Plan::new(bench_args("raft-kv bench --read-ratio 2")).is_err());
    assert!(Plan::new(bench_args("raft-kv bench --target etcd --workload incr")).is_err());
    assert!(Plan::new(bench_args("raft-kv bench --endpoints localhost")).is_err());
    assert!(Plan::new(bench_args("raft-kv bench --endpoints :1")).is_err());
    // More connections than clients would leave connections idle: clamped.
    assert_eq!(Plan::new(bench_args("raft-kv bench -c 3 --connections 10")).unwrap().connections, 3);
}

#[test]
fn durations_parse() {
    assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
    assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
    assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
    for bad in ["", "s", "-1s", "1.2.3s", "5 parsecs", "1e400"] {
        assert!(parse_duration(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn redis_error_codes_are_the_first_word() {
    assert_eq!(error_code(b"TRYAGAIN no leader"), "TRYAGAIN");
    assert_eq!(error_code(b"ERR value is not an integer"), "ERR");
    assert_eq!(error_code(b""), "ERR");
}

/// A tiny in-memory Redis: SET, GET, INCR; every `fail_every`-th request gets `-TRYAGAIN`.
async fn fake_redis(fail_every: u64) -> (String, Arc<Mutex<BTreeMap<Bytes, Bytes>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let data: Arc<Mutex<BTreeMap<Bytes, Bytes>>> = Arc::default();
    let shared = Arc::clone(&data);
    let count = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let data = Arc::clone(&shared);
            let count = Arc::clone(&count);
            tokio::spawn(async move {
                let mut parser = Parser::requests(Limits::server());
                let mut buf = BytesMut::new();
                while s.read_buf(&mut buf).await.unwrap_or(0) > 0 {
                    let mut out = BytesMut::new();
                    while let Ok(Some(Frame::Array(args))) = parser.parse(&mut buf) {
                        let args: Vec<Bytes> = args.iter().filter_map(|f| f.as_bytes().cloned()).collect();
                        let n = count.fetch_add(1, Ordering::Relaxed) + 1;
                        if fail_every > 0 && n.checked_rem(fail_every) == Some(0) {
                            write_error(&mut out, b"TRYAGAIN no leader");
                            continue;
                        }
                        let mut d = data.lock().unwrap();
                        match (&args[0][..], args.len()) {
                            (b"SET", 3) => {
                                d.insert(args[1].clone(), args[2].clone());
                                write_simple(&mut out, b"OK");
                            }
                            (b"GET", 2) => match d.get(&args[1]) {
                                Some(v) => write_bulk(&mut out, v),
                                None => write_null(&mut out),
                            },
                            (b"INCR", 2) => {
                                let v = d
                                    .get(&args[1])
                                    .map_or(0, |v| std::str::from_utf8(v).unwrap().parse::<i64>().unwrap())
                                    + 1;
                                d.insert(args[1].clone(), Bytes::from(v.to_string()));
                                write_integer(&mut out, v);
                            }
                            _ => write_error(&mut out, b"ERR unknown command"),
                        }
                    }
                    if s.write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_bounded_write_run_does_exactly_that_many_writes() {
    let (addr, data) = fake_redis(0).await;
    let line = format!(
        "raft-kv bench --endpoints {addr},{addr} -c 8 --connections 3 -n 500 --keys 50 --value-size 7"
    );
    let plan = Plan::new(bench_args(&line)).unwrap();
    let report = plan.execute().await.unwrap();
    assert_eq!(report.ops, 500);
    assert_eq!(report.errors, 0);
    assert_eq!((report.clients, report.connections), (8, 3));
    assert!(report.ops_per_sec > 0.0);
    assert!(report.latency_us.p50 > 0 && report.latency_us.p50 <= report.latency_us.max);
    let d = data.lock().unwrap();
    assert!(d.len() <= 50 && d.len() > 40, "uniform over 50 keys, 500 writes: {}", d.len());
    assert!(d.values().all(|v| v.as_ref() == b"xxxxxxx"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_run_preloads_every_key_and_counts_error_replies() {
    let (addr, data) = fake_redis(10).await;
    let line = format!("raft-kv bench --endpoints {addr} -c 4 -n 400 --workload read --keys 20");
    let report = Plan::new(bench_args(&line)).unwrap().execute().await.unwrap();
    // Warm-up retried its TRYAGAINs, so every key exists.
    assert_eq!(data.lock().unwrap().len(), 20);
    // Every 10th request fails; the 400 measured ones include about 40 errors.
    assert_eq!(report.ops + report.errors, 400);
    assert!((30..=50).contains(&report.errors), "{report:?}");
    assert_eq!(report.error_kinds.get("TRYAGAIN"), Some(&report.errors));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incr_run_increments_counters_and_a_duration_run_stops_on_time() {
    let (addr, data) = fake_redis(0).await;
    let line = format!("raft-kv bench --endpoints {addr} -c 2 --workload incr --keys 1 -n 100");
    let report = Plan::new(bench_args(&line)).unwrap().execute().await.unwrap();
    assert_eq!(report.ops, 100);
    assert_eq!(data.lock().unwrap().get(&b"counter:0"[..]).map(|v| v.to_vec()), Some(b"100".to_vec()));
    let line = format!("raft-kv bench --endpoints {addr} -c 2 --duration 300ms");
    let report = Plan::new(bench_args(&line)).unwrap().execute().await.unwrap();
    assert!(report.ops > 0);
    assert!((0.3..5.0).contains(&report.elapsed_s), "{}", report.elapsed_s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_target_is_counted_not_fatal() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let line = format!("raft-kv bench --endpoints {addr} -c 2 -n 6");
    let report = Plan::new(bench_args(&line)).unwrap().execute().await.unwrap();
    assert_eq!((report.ops, report.errors), (0, 6));
    assert_eq!(report.error_kinds.get("connect"), Some(&6));
}
