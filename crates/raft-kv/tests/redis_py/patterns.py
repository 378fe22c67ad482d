"""What applications do with redis-py, against a raft-kv cluster (driven by tests/redis_py.rs).

argv[1]: the client ports of every node, comma-separated. Prints one "ok ..." line per pattern
and exits non-zero with the reason on the first violation.

1. WATCH retry loop: 12 clients (4 per node, so most go through followers) increment one
   counter with redis-py's pipeline()/watch()/multi()/execute(), retrying on WatchError. The
   final count must be exact, every execute that returned must have counted once, and retries
   must have happened: in the first round every client reads the counter, waits for all the
   others to have read it too, and only then sends EXEC, so at most one of those EXECs can win.
2. SETEX caches: a get-or-compute cache with SETEX/PSETEX through one node, read through the
   others; the value is served until its deadline and is gone on every node after it (polled
   with a generous deadline, no fixed sleep).
3. SCAN: keys written through every node, then scan_iter(match=, count=) on each node while
   another client creates and deletes other keys: every key present for the whole scan comes
   back exactly once, nothing comes back twice.
"""

import sys
import threading
import time

import redis
from redis.exceptions import WatchError

ports = [int(p) for p in sys.argv[1].split(",")]


def client(port):
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=30, decode_responses=True)


def fail(msg):
    print("FAIL " + msg, flush=True)
    sys.exit(1)


# 1. WATCH/MULTI/EXEC retry loop ----------------------------------------------------------------
def watch_counter():
    per_node = 4
    rounds = 20
    n_clients = per_node * len(ports)
    barrier = threading.Barrier(n_clients, timeout=30)
    lock = threading.Lock()
    stats = {"retries": 0, "first_round_retries": 0, "executed": 0}
    errors = []

    def worker(port):
        r = client(port)
        try:
            for i in range(rounds):
                first = True
                with r.pipeline() as pipe:
                    while True:
                        try:
                            pipe.watch("wc:counter")
                            v = int(pipe.get("wc:counter") or 0)
                            if i == 0 and first:
                                # Everyone has read the same counter before anyone writes it.
                                barrier.wait()
                            pipe.multi()
                            pipe.set("wc:counter", v + 1)
                            pipe.execute()
                            with lock:
                                stats["executed"] += 1
                            break
                        except WatchError:
                            with lock:
                                stats["retries"] += 1
                                if i == 0 and first:
                                    stats["first_round_retries"] += 1
                            first = False
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(f"{port}: {e!r}")
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(p,)) for p in ports for _ in range(per_node)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        fail("watch loop errors: " + "; ".join(errors[:5]))
    want = rounds * n_clients
    for p in ports:
        got = int(client(p).get("wc:counter"))
        if got != want:
            fail(f"watch loop: counter {got} on port {p}, want {want} (lost or doubled increments)")
    if stats["executed"] != want:
        fail(f"watch loop: {stats['executed']} executes succeeded, want {want}")
    # All but one of the first round's EXECs read a counter another EXEC changed.
    if stats["first_round_retries"] < n_clients - 1:
        fail(f"watch loop: {stats['first_round_retries']} first-round retries, want >= {n_clients - 1}")
    print(f"ok watch counter={want} retries={stats['retries']}", flush=True)


# 2. SETEX caches -------------------------------------------------------------------------------
def setex_cache():
    writer = client(ports[0])
    readers = [client(p) for p in ports]
    computed = []

    def cached(r, key, ttl_ms):
        v = r.get(key)
        if v is None:
            v = f"computed-{len(computed)}"
            computed.append(key)
            writer.psetex(key, ttl_ms, v)
        return v

    # A long TTL: SETEX through one node, a hit on every node, TTL counted down from the log time.
    if not writer.setex("cache:long", 100, "long-value"):
        fail("SETEX answered false")
    for r in readers:
        if r.get("cache:long") != "long-value":
            fail("SETEX value not served by every node")
        ttl = r.ttl("cache:long")
        if not 0 < ttl <= 100:
            fail(f"TTL of a SETEX 100 key is {ttl}")

    # A short TTL through the get-or-compute helper: a miss computes, later gets hit until the
    # deadline; after the deadline every node misses. The deadline is the leader's stamp of the
    # PSETEX entry plus the TTL, and the stamp is at least the wall time the PSETEX was sent at
    # (one machine, one clock), so a read that completes earlier than sent + ttl must hit.
    ttl_ms = 1500
    sent = time.time()
    v = cached(readers[1], "cache:short", ttl_ms)
    for r in readers:
        got = r.get("cache:short")
        if got != v and time.time() - sent < ttl_ms / 1000:
            fail(f"cache:short missed {time.time() - sent:.3f}s after PSETEX {ttl_ms}ms")
    if len(computed) != 1:
        fail(f"cache computed {len(computed)} times before the deadline")
    pttl = readers[2].pttl("cache:short")
    if not (pttl == -2 or 0 < pttl <= ttl_ms):
        fail(f"PTTL {pttl} of a PSETEX {ttl_ms} key")
    deadline = time.time() + 30
    while any(r.exists("cache:short") for r in readers):
        if time.time() > deadline:
            fail("cache:short still exists 30 s after its deadline")
        time.sleep(0.05)
    if time.time() - sent < ttl_ms / 1000:
        fail("cache:short expired before its deadline")
    for r in readers:
        if r.get("cache:short") is not None or r.pttl("cache:short") != -2:
            fail("an expired key is still visible on a node")
    v2 = cached(readers[2], "cache:short", 60_000)
    if v2 == v or len(computed) != 2:
        fail("the cache did not recompute after expiry")
    if readers[0].get("cache:short") != v2:
        fail("the recomputed value is not served")
    print(f"ok setex hits-before={len(readers)} recomputed-after-expiry", flush=True)


# 3. SCAN --------------------------------------------------------------------------------------
def scan_exactly_once():
    n = 600
    want = set()
    for k, p in enumerate(ports):
        pipe = client(p).pipeline(transaction=False)
        for i in range(k, n, len(ports)):
            pipe.set(f"scan:{i:04d}", i)
            want.add(f"scan:{i:04d}")
        pipe.execute()
        client(p).hset(f"scan:hash{k}", "f", "v")  # a hash: TYPE filtering below
        want.add(f"scan:hash{k}")

    stop = threading.Event()
    churned = []

    def churn():
        r = client(ports[-1])
        i = 0
        while not stop.is_set():
            r.set(f"scan:churn{i}", 1)
            churned.append(f"scan:churn{i}")
            if i % 2:
                r.delete(f"scan:churn{i - 1}")
            i += 1

    t = threading.Thread(target=churn)
    t.start()
    try:
        for p in ports:
            r = client(p)
            for count in (7, 100):
                got = list(r.scan_iter(match="scan:*", count=count))
                stable = [k for k in got if not k.startswith("scan:churn")]
                if len(got) != len(set(got)):
                    dup = sorted(k for k in set(got) if got.count(k) > 1)[:5]
                    fail(f"SCAN on port {p} count {count} returned keys twice: {dup}")
                if set(stable) != want:
                    missing = sorted(want - set(stable))[:5]
                    extra = sorted(set(stable) - want)[:5]
                    fail(f"SCAN on port {p} count {count}: missing {missing} extra {extra}")
            hashes = set(r.scan_iter(match="scan:*", count=50, _type="hash"))
            if hashes != {f"scan:hash{k}" for k in range(len(ports))}:
                fail(f"SCAN TYPE hash on port {p} returned {sorted(hashes)}")
            sevens = list(r.scan_iter(match="scan:*7", count=13))
            want7 = {k for k in want if k.endswith("7")}
            stable7 = {k for k in sevens if not k.startswith("scan:churn")}
            if len(sevens) != len(set(sevens)) or stable7 != want7:
                fail(f"SCAN MATCH scan:*7 on port {p}: {len(sevens)} keys, want {len(want7)}")
    finally:
        stop.set()
        t.join()
    print(f"ok scan keys={len(want)} churned={len(churned)}", flush=True)


watch_counter()
setex_cache()
scan_exactly_once()
print("ok all", flush=True)
