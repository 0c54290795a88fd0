"""Serving latency and recall over a 10^6-item catalog, on this CPU.

    python benchmarks/serving_bench.py --export_dir demo_out/export [--items 1000000]

The user tower is the exported SavedModel (the real request path: JSON-shaped request -> session
rules -> raw-id signature). The catalog is the export's trained item vectors tiled to --items rows
with Gaussian noise (so the index sees clustered, model-shaped vectors rather than the model's few
thousand), searched for the top 300. Reported, all in one run:

* p50 / p99 latency of one request (tower + top-K) with the exact index and each other one;
* throughput with batches of --batch requests;
* recall@K of HNSW at each --ef_search, and of IVF-Flat at each --nprobe (with --nlist cells),
  against exact search, on the benchmark's user vectors;
* with --clients: HTTP throughput and p99 under 1, 4, 16 concurrent clients (loopback; a client
  process apart from the server, `benchmarks/http_load.py`) against the service on the HNSW
  index (`--http_index ivf`: IVF-Flat at the first --nprobe), each request through the tower
  and the index alone (before) and coalesced with the requests that arrive meanwhile (the
  service's default, `service.Coalescer`); the service runs in this process, or with
  `--service_processes N` in N processes of its own on one port (`service_procs.py`).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402

from benchmarks import http_load, service_procs  # noqa: E402
from sdm_tf.serving import index as I  # noqa: E402
from sdm_tf.serving import service as serving  # noqa: E402
from sdm_tf.serving.export import Export, augment_queries  # noqa: E402


def expand_catalog(exp: Export, n: int, noise: float, seed: int = 0) -> np.ndarray:
    base = exp.augmented_items()
    rng = np.random.default_rng(seed)
    reps = -(-n // len(base))
    tiled = np.tile(base, (reps, 1))[:n]
    scale = noise * np.linalg.norm(base[:, :-1], axis=1).mean() / np.sqrt(base.shape[1] - 1)
    tiled[:, :-1] += rng.normal(0, scale, size=(n, base.shape[1] - 1)).astype(np.float32)
    tiled[: len(base)] = base  # the real items keep their vectors
    return np.ascontiguousarray(tiled, dtype=np.float32)


def requests(exp: Export, n: int, seed: int = 1) -> list[serving.RetrieveRequest]:
    rng = np.random.default_rng(seed)
    out = []
    popular = min(len(exp.item_ids), 2000)
    for _ in range(n):
        length = int(rng.integers(1, 30))
        items = rng.integers(0, popular, size=length)
        t = 1_512_000_000 + np.cumsum(rng.integers(5, 120, size=length))
        out.append(
            serving.RetrieveRequest(
                events=[{"item": exp.item_ids[i], "timestamp": int(ts)} for i, ts in zip(items, t)],
                k=300,
            )
        )
    return out


def timed_build(catalog: np.ndarray, cfg: I.IndexConfig, search_threads: int):
    """The index, built on every core (searched on `search_threads`), and its build seconds."""
    import faiss

    t = time.perf_counter()
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    index = I.build(catalog, cfg)
    faiss.omp_set_num_threads(search_threads)
    return index, round(time.perf_counter() - t, 1)


def approx_rows(
    exp, index, cfg: I.IndexConfig, param: str, values, reqs, queries, truth, k: int, batch: int
) -> list[dict]:
    """One row per value of the search parameter `param`: recall@k against the exact top-k
    of the benchmark's user vectors, one request's latency, batched throughput."""
    rows = []
    for value in values:
        setattr(cfg, param, value)
        I.set_search_params(index, cfg)
        _, got = I.search(index, queries, k)
        approx = serving.Retriever(exp, index, cfg)
        row = {
            param: value,
            f"recall@{k}": round(I.recall_at_k(got, truth), 4),
            **time_single(approx, reqs),
            **time_batched(approx, reqs, batch),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def percentiles(ms: list[float]) -> dict:
    a = np.array(ms)
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 3),
        "p99_ms": round(float(np.percentile(a, 99)), 3),
    }


def time_single(retriever: serving.Retriever, reqs) -> dict:
    for r in reqs[:10]:  # warm-up
        retriever.retrieve([r])
    ms = []
    for r in reqs:
        t = time.perf_counter()
        retriever.retrieve([r])
        ms.append(1000 * (time.perf_counter() - t))
    return percentiles(ms)


def time_batched(retriever: serving.Retriever, reqs, batch: int) -> dict:
    retriever.retrieve(reqs[:batch])
    t = time.perf_counter()
    n = 0
    for i in range(0, len(reqs) - batch + 1, batch):
        retriever.retrieve(reqs[i : i + batch])
        n += batch
    return {"batch": batch, "requests_per_s": round(n / (time.perf_counter() - t), 1)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--export_dir", required=True)
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--k", type=int, default=300)
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--noise", type=float, default=0.5)
    ap.add_argument("--hnsw_m", type=int, default=32)  # launch.build_index's defaults
    ap.add_argument("--ef_construction", type=int, default=200)
    ap.add_argument(
        "--ef_search",
        type=int,
        nargs="*",
        default=[300, 800, 1600],
        help="hnsw rows (none: no hnsw)",
    )
    ap.add_argument("--nlist", type=int, default=4096, help="ivf: coarse cells")
    ap.add_argument("--nprobe", type=int, nargs="*", default=[], help="ivf rows, e.g. 16 32 64")
    ap.add_argument(
        "--http_index", default="hnsw", choices=["hnsw", "ivf"],
        help="the index under --clients, at the first --ef_search or --nprobe",
    )  # fmt: skip
    ap.add_argument("--faiss_threads", type=int, default=1, help="OpenMP threads per search")
    ap.add_argument("--clients", type=int, nargs="*", default=[], help="e.g. 1 4 16")
    ap.add_argument("--http_requests", type=int, default=400, help="per concurrency level")
    ap.add_argument("--coalesce", type=int, default=64, help="the service's max_coalesce")
    ap.add_argument("--tf_threads", type=int, default=0, help="TF threads (0: TF's default)")
    ap.add_argument(
        "--service_processes", type=int, nargs="+", default=[0],
        help="under --clients, each in turn: N service processes of their own on one port "
        "(0: the service runs in this process)",
    )  # fmt: skip
    ap.add_argument(
        "--http_stacks", nargs="+", default=["auto"], choices=sorted(HTTP_STACKS),
        help="the service's HTTP parser and event loop, each measured in turn",
    )  # fmt: skip
    ap.add_argument(
        "--load_client", default="stdlib", choices=sorted(http_load.POSTERS),
        help="http_load.py's client (stdlib http.client costs the least CPU per request)",
    )  # fmt: skip
    a = ap.parse_args(argv)
    if a.clients and not (a.nprobe if a.http_index == "ivf" else a.ef_search):
        ap.error(f"--clients on --http_index {a.http_index} needs its --nprobe or --ef_search")
    if a.tf_threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(a.tf_threads)
        tf.config.threading.set_inter_op_parallelism_threads(a.tf_threads)
    import faiss

    exp = Export(a.export_dir)
    catalog = expand_catalog(exp, a.items, a.noise)
    exp.item_ids = exp.item_ids + [f"synthetic-{i}" for i in range(len(exp.item_ids), a.items)]
    reqs = requests(exp, a.requests)
    result: dict = {
        "items": a.items, "k": a.k, "cpus": os.cpu_count(), "requests": a.requests,
        "faiss_threads": a.faiss_threads, "tf_threads": a.tf_threads or "default",
    }  # fmt: skip

    faiss.omp_set_num_threads(a.faiss_threads)
    t = time.perf_counter()
    flat_cfg = I.IndexConfig(kind="flat", use_gpu=False)
    flat = I.build(catalog, flat_cfg)
    result["flat_build_s"] = round(time.perf_counter() - t, 1)
    exact = serving.Retriever(exp, flat, flat_cfg)

    def tower(r):
        return exact.vectors([exact.query(r)])

    for r in reqs[:10]:  # warm-up
        tower(r)
    result["tower_only"] = percentiles([1000 * _timed(lambda r=r: tower(r)) for r in reqs[:200]])
    result["flat"] = {**time_single(exact, reqs), **time_batched(exact, reqs, a.batch)}

    queries = augment_queries(
        np.concatenate(
            [exact.vectors([exact.query(r) for r in reqs[i : i + 100]])
             for i in range(0, len(reqs), 100)]
        )
    )  # fmt: skip
    _, truth = I.search(flat, queries, a.k)
    truth_of = (queries, truth, a.k, a.batch)  # what approx_rows measures against

    hnsw = hnsw_cfg = ivf = ivf_cfg = None
    if a.ef_search:
        hnsw_cfg = I.IndexConfig(kind="hnsw", hnsw_m=a.hnsw_m, ef_construction=a.ef_construction)
        hnsw, result["hnsw_build_s"] = timed_build(catalog, hnsw_cfg, a.faiss_threads)
        result["hnsw_m"], result["ef_construction"] = a.hnsw_m, a.ef_construction
        result["hnsw"] = approx_rows(exp, hnsw, hnsw_cfg, "ef_search", a.ef_search, reqs, *truth_of)
    if a.nprobe:
        ivf_cfg = I.IndexConfig(kind="ivf", nlist=a.nlist, use_gpu=False)
        ivf, result["ivf_build_s"] = timed_build(catalog, ivf_cfg, a.faiss_threads)
        result["nlist"] = a.nlist
        result["ivf"] = approx_rows(exp, ivf, ivf_cfg, "nprobe", a.nprobe, reqs, *truth_of)
    if a.clients:
        index, cfg, param, value = (
            (ivf, ivf_cfg, "nprobe", a.nprobe[0])
            if a.http_index == "ivf"
            else (hnsw, hnsw_cfg, "ef_search", a.ef_search[0])
        )
        setattr(cfg, param, value)
        I.set_search_params(index, cfg)
        result["http"] = {"index": a.http_index, param: value, "load_client": a.load_client}
        retriever = serving.Retriever(exp, index, cfg)
        processes = {
            "export_dir": a.export_dir, "items": a.items, "tf_threads": a.tf_threads,
            "faiss_threads": a.faiss_threads,
        }  # fmt: skip
        if any(a.service_processes):
            saved = tempfile.mkdtemp()
            processes["index"] = os.path.join(saved, "index.faiss")
            I.save(index, cfg, processes["index"], {})
            atexit.register(shutil.rmtree, saved, True)
        for stack in a.http_stacks:
            for count in a.service_processes:
                key = f"{stack}, {count} service processes" if count else stack
                rows = result["http"].setdefault(key, {})
                for name, coalesce in (("one_at_a_time", 1), ("coalesced", a.coalesce)):
                    rows[name] = http_concurrency(
                        retriever, reqs, a.clients, a.http_requests, coalesce, stack,
                        a.load_client, {**processes, "count": count} if count else None,
                    )  # fmt: skip
                    print(json.dumps({"service": key, name: rows[name]}), flush=True)
    print(json.dumps(result, indent=1))
    return result


# uvicorn's HTTP parser and event loop: "auto" is what `launch.serve` gets (httptools and
# uvloop where installed, as `uvicorn[standard]` installs them); "h11" the pure-Python pair.
HTTP_STACKS = {
    "auto": {"http": "auto", "loop": "auto"},
    "h11": {"http": "h11", "loop": "asyncio"},
    "httptools": {"http": "httptools", "loop": "uvloop"},
}


def http_concurrency(
    retriever,
    reqs,
    clients: list[int],
    n: int,
    coalesce: int = 64,
    stack: str = "auto",
    load_client: str = "stdlib",
    processes: dict | None = None,
) -> list[dict]:
    """The service on `retriever` in this process (coalescing up to `coalesce` concurrent
    requests, on the HTTP stack `stack`); load from a separate client process. processes:
    {"count": N, **service_procs settings}: N service processes of their own instead."""
    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    if processes:
        settings = {**processes, "port": port, "coalesce": coalesce, **HTTP_STACKS[stack]}
        procs = service_procs.start(settings, processes["count"])
        pids = [p.pid for p in procs]

        def cpu_seconds() -> float:
            return service_procs.cpu_seconds(pids)

        def shut_down() -> None:
            service_procs.stop(procs)

    else:
        app = serving.create_app(retriever, max_coalesce=coalesce)
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="error", **HTTP_STACKS[stack]
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        cpu_seconds = time.process_time  # this process is the service (idle threads sleep)

        def shut_down() -> None:
            server.should_exit = True
            thread.join(timeout=10)

    rows = []
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        f.writelines(r.model_dump_json(exclude_none=True) + "\n" for r in reqs)
    client = http_load.__file__
    try:
        for c in clients:
            cpu = cpu_seconds()
            out = subprocess.run(
                [sys.executable, client, f"http://127.0.0.1:{port}/v1/retrieve", f.name,
                 "--clients", str(c), "--requests", str(n), "--client", load_client],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            row = json.loads(out.stdout.strip().splitlines()[-1])
            # CPU per request on each side (the client's warm-up requests count to the
            # service's): with both on one machine, cores x 1000 / their sum bounds requests/s.
            served = row["requests"] + http_load.WARM_UP
            row["service_cpu_ms_per_request"] = round(1000 * (cpu_seconds() - cpu) / served, 3)
            both = row["service_cpu_ms_per_request"] + row["client_cpu_ms_per_request"]
            row["cpu_bound_requests_per_s"] = round((os.cpu_count() or 1) * 1000 / both, 1)
            rows.append(row)
    finally:
        shut_down()
        os.unlink(f.name)
    return rows


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
