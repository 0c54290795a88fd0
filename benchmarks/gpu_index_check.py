"""The GPU path of `sdm_tf.serving.index` on a host with faiss-gpu: checks, then timings.

    python benchmarks/gpu_index_check.py [--items 1000000] [--scale_items 12500000]

Checks (exit 1 on a failure): a flat index built on the GPUs returns the CPU's exact top-k; an
ivfpq index built there keeps its nprobe and reaches the CPU ivfpq's recall; `save` writes a CPU
copy and `load` puts both back on the GPUs with the same answers. Then the time of one search
call (top-k of `--items`, and of `--scale_items` for docs/scale.md's index tier) per batch size.
Random Gaussian items and queries at d = 129 (d = 128 plus the bias column, as the export's).
Prints one JSON report.
"""

import argparse
import json
import os
import sys
import tempfile
import time

import faiss
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from sdm_tf.serving import index as I  # noqa: E402


def timed(index, queries, k, repeats=5):
    """(best, median) milliseconds of one `search` call over all `queries`, after a warm-up."""
    I.search(index, queries, k)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        I.search(index, queries, k)
        times.append(1000 * (time.perf_counter() - start))
    return round(min(times), 3), round(float(np.median(times)), 3)


def recall(index, queries, truth):
    return I.recall_at_k(I.search(index, queries, truth.shape[1])[1], truth)


def inner(index):
    """The index under an IndexPreTransform (ivfpq's padding), downcast to its class."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexPreTransform):
        index = faiss.downcast_index(index.index)
    return index


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--scale_items", type=int, default=0, help="also time flat over this many")
    p.add_argument("--dim", type=int, default=129)
    p.add_argument("--k", type=int, default=300)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64, 1024])
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    items = rng.standard_normal((args.items, args.dim), dtype=np.float32)
    queries = rng.standard_normal((max(args.batches), args.dim), dtype=np.float32)
    report = {"faiss": faiss.__version__, "gpus": I.num_gpus(), "items": args.items}
    failures = []

    def check(name, ok, **values):
        report[name] = {"ok": bool(ok), **values}
        if not ok:
            failures.append(name)

    flat_cpu = I.build(items, I.IndexConfig(kind="flat", use_gpu=False))
    flat_gpu = I.build(items, I.IndexConfig(kind="flat"))
    q = queries[:256]
    cpu_scores, truth = I.search(flat_cpu, q, args.k)
    gpu_scores, gpu_ids = I.search(flat_gpu, q, args.k)
    check(
        "flat_gpu_equals_cpu",
        I.recall_at_k(gpu_ids, truth) >= 0.999 and np.allclose(gpu_scores, cpu_scores, atol=1e-3),
        placed=type(inner(flat_gpu)).__name__,
        recall=I.recall_at_k(gpu_ids, truth),
        max_score_diff=float(np.abs(gpu_scores - cpu_scores).max()),
    )
    pq = dict(kind="ivfpq", nlist=1024, m=16, nprobe=32)
    t = time.perf_counter()
    ivf_gpu = I.build(items, I.IndexConfig(**pq))
    build_gpu = time.perf_counter() - t
    t = time.perf_counter()
    ivf_cpu = I.build(items, I.IndexConfig(**pq, use_gpu=False))
    build_cpu = time.perf_counter() - t
    r_gpu, r_cpu = recall(ivf_gpu, q, truth), recall(ivf_cpu, q, truth)
    check(
        "ivfpq_gpu_recall_as_cpu",
        abs(r_gpu - r_cpu) <= 0.05,
        placed=type(inner(ivf_gpu)).__name__,
        nprobe=getattr(inner(ivf_gpu), "nprobe", None),
        recall_gpu=r_gpu,
        recall_cpu=r_cpu,
        build_s_gpu=round(build_gpu, 2),
        build_s_cpu=round(build_cpu, 2),
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name, index, cfg in (
            ("flat", flat_gpu, I.IndexConfig(kind="flat")),
            ("ivfpq", ivf_gpu, I.IndexConfig(**pq)),
        ):
            path = os.path.join(tmp, name + ".faiss")
            I.save(index, cfg, path, {})
            loaded, _ = I.load(path)
            same = np.array_equal(I.search(loaded, q, 50)[1], I.search(index, q, 50)[1])
            check(f"{name}_save_load", same, placed=type(inner(loaded)).__name__)
    # [best, median] ms of one call: the configured index, and the same kind on the CPU here.
    report["ms_per_call"] = {
        f"{kind}, batch {b}": {side: timed(x, queries[:b], args.k) for side, x in pair.items()}
        for kind, pair in (
            ("flat", {"gpu": flat_gpu, "cpu": flat_cpu}),
            ("ivfpq", {"gpu": ivf_gpu, "cpu": ivf_cpu}),
        )
        for b in args.batches
    }
    del flat_cpu, ivf_cpu, ivf_gpu
    if args.scale_items:
        del flat_gpu, items
        big = rng.standard_normal((args.scale_items, args.dim), dtype=np.float32)
        t = time.perf_counter()
        index = I.build(big, I.IndexConfig(kind="flat"))
        report[f"flat over {args.scale_items}"] = {
            "build_s": round(time.perf_counter() - t, 2),
            **{f"batch {b}": timed(index, queries[:b], args.k) for b in args.batches},
        }
    report["failures"] = failures
    print(json.dumps(report, indent=1))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
