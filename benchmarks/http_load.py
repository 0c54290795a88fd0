"""HTTP load client for serving_bench.py: N concurrent clients, each with its own keep-alive
connection, send bounded numbers of requests; prints requests/s, latency percentiles and error
count.

    python benchmarks/http_load.py URL BODIES.jsonl --clients 16 --requests 400

The client shares the machine with the service, so its own CPU per request lowers what the
service can do: `--client stdlib` (http.client, the default) costs less than `httpx`.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import json
import time
import urllib.parse

import numpy as np

HEADERS = {"content-type": "application/json"}
WARM_UP = 5  # requests before the measured ones (serving_bench counts them to the service)


def _stdlib_poster(url: str):
    """(post(body) -> status, close) on one keep-alive http.client connection."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)

    def post(body: bytes) -> int:
        conn.request("POST", u.path, body, HEADERS)
        r = conn.getresponse()
        r.read()
        return r.status

    return post, conn.close


def _httpx_poster(url: str):
    try:
        import httpx2 as httpx  # httpx's maintained successor (what the test extra installs)
    except ImportError:
        import httpx

    client = httpx.Client(timeout=60, headers=HEADERS)
    return (lambda body: client.post(url, content=body).status_code), client.close


POSTERS = {"stdlib": _stdlib_poster, "httpx": _httpx_poster}


def load(url: str, bodies: list[bytes], clients: int, requests: int, kind="stdlib") -> dict:
    per_client = max(1, requests // clients)

    def one(c: int):
        ms, errors = [], 0
        post, close = POSTERS[kind](url)
        try:
            for j in range(per_client):
                body = bodies[(c * per_client + j) % len(bodies)]
                t = time.perf_counter()
                status = post(body)
                ms.append(1000 * (time.perf_counter() - t))
                errors += status != 200
        finally:
            close()
        return ms, errors

    start, cpu = time.perf_counter(), time.process_time()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, range(clients)))
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    ms = np.concatenate([r[0] for r in results])
    return {
        "clients": clients,
        "requests": int(len(ms)),
        "requests_per_s": round(len(ms) / seconds, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "errors": int(sum(r[1] for r in results)),
        # The client's own CPU (HTTP, JSON): on one machine it competes with the service.
        "client_cpu_ms_per_request": round(1000 * cpu / len(ms), 3),
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("bodies")
    ap.add_argument("--clients", type=int, default=1)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--client", default="stdlib", choices=sorted(POSTERS))
    a = ap.parse_args()
    with open(a.bodies, "rb") as f:
        bodies = [line.rstrip(b"\n") for line in f if line.strip()]
    load(a.url, bodies[:1], 1, WARM_UP, a.client)
    print(json.dumps({**load(a.url, bodies, a.clients, a.requests, a.client), "client": a.client}))
