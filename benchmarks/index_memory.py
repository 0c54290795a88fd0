"""Resident memory of the service with a 10^6-item index: flat, IVF-PQ and HNSW.

    python benchmarks/index_memory.py --export_dir demo_out/export [--items 1000000]

The catalogue is built as in `serving_bench.py` (the export's item vectors tiled to --items rows
with noise). Each index is built once (recall@300 against the flat index on 200 user vectors,
and its serialized bytes), saved with `sdm_tf.serving.index.save`, then loaded by a fresh
process the way `launch.serve` loads it (Export + index + Retriever, 50 requests answered),
which reports its resident memory (VmRSS) and peak (VmHWM). A process with the export and no
index beyond the export's own items gives the tower's share.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402


def proc_status() -> dict:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM")):
                key, value = line.split(":")
                out[key] = int(value.split()[0]) / 1024  # kB -> MiB
    return out


def child(export_dir: str, index_path: str, items: int) -> None:
    """Loads the export and (unless empty) the index as the service does; prints its memory."""
    from benchmarks.serving_bench import requests
    from sdm_tf.serving import index as I
    from sdm_tf.serving import service as serving
    from sdm_tf.serving.export import Export

    exp = Export(export_dir)
    if index_path:
        index, cfg = I.load(index_path)
        exp.item_ids = exp.item_ids + [f"synthetic-{i}" for i in range(len(exp.item_ids), items)]
        retriever = serving.Retriever(exp, index, cfg)
    else:
        retriever = serving.Retriever(exp)  # the export's own items, flat
    for r in requests(exp, 50):
        retriever.retrieve([r])
    print(json.dumps(proc_status()))


def measure(export_dir: str, index_path: str, items: int) -> dict:
    cmd = [sys.executable, __file__, "--child", "--export_dir", export_dir, "--items", str(items)]
    out = subprocess.run([*cmd, "--index", index_path], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--export_dir", required=True)
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--k", type=int, default=300)
    ap.add_argument("--kinds", nargs="+", default=["flat", "ivfpq", "hnsw"])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--index", default="", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        child(a.export_dir, a.index, a.items)
        return {}
    import faiss

    from benchmarks.serving_bench import expand_catalog
    from sdm_tf.serving import index as I
    from sdm_tf.serving.export import Export

    exp = Export(a.export_dir)
    catalog = expand_catalog(exp, a.items, 0.5)
    rng = np.random.default_rng(2)
    queries = np.ascontiguousarray(catalog[rng.choice(a.items, 200, replace=False)])
    queries += rng.normal(0, 0.1, queries.shape).astype(np.float32)
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    result: dict = {"items": a.items, "dim": int(catalog.shape[1]), "k": a.k}
    result["export_only"] = measure(a.export_dir, "", a.items)
    exact = I.build(catalog, I.IndexConfig(kind="flat", use_gpu=False))
    _, truth = I.search(exact, queries, a.k)
    with tempfile.TemporaryDirectory() as tmp:
        for kind in a.kinds:
            # launch.build_index's defaults; IVF-PQ probes 64 of 1,024 lists.
            cfg = I.IndexConfig(kind=kind, use_gpu=False, ef_search=800, nprobe=64)
            t = time.perf_counter()
            index = exact if kind == "flat" else I.build(catalog, cfg)
            build_s = time.perf_counter() - t
            _, got = I.search(index, queries, a.k)
            path = os.path.join(tmp, f"{kind}.faiss")
            I.save(index, cfg, path, {})
            row = {
                "build_s": round(build_s, 1),
                f"recall@{a.k}": round(I.recall_at_k(got, truth), 4),
                "index_bytes_per_item": round(os.path.getsize(path) / a.items, 1),
                **measure(a.export_dir, path, a.items),
            }
            result[kind] = row
            print(json.dumps({kind: row}), flush=True)
            del index
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
