"""HTTP load client for serving_bench.py: N concurrent clients, each with its own connection,
send bounded numbers of requests; prints requests/s, latency percentiles and error count.

    python benchmarks/http_load.py URL BODIES.jsonl --clients 16 --requests 400
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import time

import httpx
import numpy as np


def load(url: str, bodies: list[bytes], clients: int, requests: int) -> dict:
    per_client = max(1, requests // clients)

    def one(c: int):
        ms, errors = [], 0
        with httpx.Client(timeout=60, headers={"content-type": "application/json"}) as client:
            for j in range(per_client):
                body = bodies[(c * per_client + j) % len(bodies)]
                t = time.perf_counter()
                r = client.post(url, content=body)
                ms.append(1000 * (time.perf_counter() - t))
                errors += r.status_code != 200
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
    a = ap.parse_args()
    with open(a.bodies, "rb") as f:
        bodies = [line.rstrip(b"\n") for line in f if line.strip()]
    load(a.url, bodies[:1], 1, 5)  # warm-up (serving_bench.WARM_UP)
    print(json.dumps(load(a.url, bodies, a.clients, a.requests)))
