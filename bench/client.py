#!/usr/bin/env python3
"""Sends a fixed number of requests over keep-alive connections and checks every answer.

Used by bench/cost.sh: the server under valgrind is measured in instructions, so the client only
has to send an exact number of requests, not to be fast.

    client.py PORT COUNT CONNS   (request from BENCH_METHOD, BENCH_PATH, BENCH_BODY, BENCH_HEADERS)

Prints `sent=N ok=N` and exits 1 when any answer was not 200.
"""
import http.client
import os
import sys
import threading


def main() -> int:
    port, count, conns = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    method = os.environ.get("BENCH_METHOD", "GET")
    path = os.environ.get("BENCH_PATH", "/")
    body = os.environ.get("BENCH_BODY") or None
    headers = {}
    for line in os.environ.get("BENCH_HEADERS", "").splitlines():
        name, _, value = line.partition(":")
        if name:
            headers[name.strip()] = value.strip()
    ok = [0] * conns
    bad = []

    def worker(i: int) -> None:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        n = count // conns + (1 if i < count % conns else 0)
        for _ in range(n):
            c.request(method, path, body=body, headers=headers)
            r = c.getresponse()
            data = r.read()
            if r.status == 200:
                ok[i] += 1
            elif len(bad) < 3:
                bad.append(f"{r.status} {data[:200]!r}")
        c.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"sent={count} ok={sum(ok)}")
    for b in bad:
        print(f"not ok: {b}", file=sys.stderr)
    return 0 if sum(ok) == count else 1


if __name__ == "__main__":
    sys.exit(main())
