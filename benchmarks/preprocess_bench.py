"""Preprocessing throughput: the Beam pipeline against the same job done in one process.

    python benchmarks/preprocess_bench.py --num_events 1000000 [--runner_mode multi_processing]

All three run in this one invocation on the same synthetic events file:
* the Beam pipeline (DirectRunner, `--runner_mode`, one worker per core);
* `preprocess_reference`: the same job in one process without Beam: the pipeline's own
  per-element code in plain loops over data in memory. Its outputs are compared with the
  pipeline's (stats, and every train / eval record as a multiset): `identical_outputs`;
* a vectorised numpy sessionizer that does only the core (read, item filter, sort, split
  sessions): a lower bound on time, doing much less (no bags, vocabularies or Examples).

Peak memory: the reference's own process (it holds every event); for the Beam run, sampled
from /proc while it runs (`rss_sampler`), this process (the DirectRunner itself: its bundles
and the GroupByKey's buffers; the data is generated in another process first) apart from its
largest worker and from the whole tree. Comparing them at 10^6 and 10^7 events says which
part grows with the data.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import preprocess_reference as ref  # noqa: E402
from benchmarks.rss_sampler import RssSampler, rss_bytes  # noqa: E402
from pipelines import preprocess, synthetic  # noqa: E402
from sdm_tf.core import features as F  # noqa: E402


def numpy_sessionize(path: str, gap: int = 600, max_len: int = 50, min_item: int = 5) -> dict:
    table = pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(column_names=["user", "item", "cat", "behavior", "ts"]),
        convert_options=pacsv.ConvertOptions(
            column_types={"user": pa.string(), "item": pa.string(), "ts": pa.int64()}
        ),
    )
    user = table["user"].to_numpy(zero_copy_only=False)
    item = table["item"].to_numpy(zero_copy_only=False)
    ts = table["ts"].to_numpy()
    _, item_idx, counts = np.unique(item, return_inverse=True, return_counts=True)
    keep = counts[item_idx] >= min_item
    user, ts = user[keep], ts[keep]
    _, uid = np.unique(user, return_inverse=True)
    order = np.lexsort((ts, uid))
    uid, ts = uid[order], ts[order]
    new_user = np.r_[True, uid[1:] != uid[:-1]]
    new_gap = np.r_[True, np.diff(ts) >= gap]
    start = new_user | new_gap
    sid = np.cumsum(start) - 1
    # the length cap: position inside the gap-session, every max_len-th event starts anew
    first = np.flatnonzero(start)
    pos = np.arange(len(sid)) - first[sid]
    start |= (pos % max_len == 0) & (pos > 0)
    return {"events": int(len(ts)), "sessions": int(start.sum())}


def _reference(events: str, work: str) -> tuple[dict, float, float]:
    """(stats, seconds, peak GiB) of the one-process reference, imports included."""
    t = time.perf_counter()
    stats = ref.run(events, os.path.join(work, "ref"), protocol="none")
    seconds = time.perf_counter() - t
    return stats, seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def compare(ref_stats: dict, stats: dict, ref_dir: str, out_dir: str) -> dict:
    """What differs between the reference's outputs and the pipeline's: stats.json keys as
    (reference, pipeline), and per kind of records how many are only on one side (as
    multisets). Empty when they are the same."""
    out: dict = {}
    for key in sorted(set(ref_stats) | set(stats)):
        if ref_stats.get(key) != stats.get(key):
            out.setdefault("stats", {})[key] = [ref_stats.get(key), stats.get(key)]
    for kind in F.KINDS:
        a = collections.Counter(ref.read_records(ref_dir, kind))
        b = collections.Counter(ref.read_records(out_dir, kind))
        if a != b:
            out[kind] = {
                "reference_only": sum((a - b).values()),
                "pipeline_only": sum((b - a).values()),
                "records": [sum(a.values()), sum(b.values())],
            }
    return out


def _generate(cfg: synthetic.SyntheticConfig, data: str) -> float:
    t = time.perf_counter()
    synthetic.generate(cfg, data)
    return time.perf_counter() - t


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--num_events", type=int, default=1_000_000)
    ap.add_argument(
        "--runner_mode",
        default="multi_processing",
        choices=["multi_processing", "in_memory", "multi_threading"],
    )
    ap.add_argument("--workdir", default="")
    a = ap.parse_args(argv)
    work = a.workdir or tempfile.mkdtemp(prefix="sdm_bench_")
    data = os.path.join(work, "data")
    cfg = synthetic.SyntheticConfig(num_events=a.num_events)
    # In another process, so that this one's memory before the Beam run is imports only.
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        gen_s = pool.submit(_generate, cfg, data).result()
    events = os.path.join(data, "events.csv")

    before = rss_bytes(os.getpid()) / 2**30
    t = time.perf_counter()
    with RssSampler() as rss:
        stats = preprocess.run([
            "--input", events, "--output_dir", os.path.join(work, "out"),
            "--eval_protocol", "none", f"--direct_running_mode={a.runner_mode}",
            "--default_sdk_harness_log_level=ERROR",  # the workers' chatter, as the launchers do
        ])  # fmt: skip
    beam_s = time.perf_counter() - t

    # A fresh interpreter (spawned, not forked), so that its peak memory is its own.
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        ref_stats, ref_s, ref_peak = pool.submit(_reference, events, work).result()

    t = time.perf_counter()
    base = numpy_sessionize(events)
    numpy_s = time.perf_counter() - t
    differences = compare(ref_stats, stats, os.path.join(work, "ref"), os.path.join(work, "out"))
    result = {
        "num_events": a.num_events,
        "cpus": os.cpu_count(),
        "generate_s": round(gen_s, 2),
        "beam_mode": a.runner_mode,
        "beam_s": round(beam_s, 2),
        "beam_events_per_s": round(a.num_events / beam_s),
        "reference_s": round(ref_s, 2),
        "reference_events_per_s": round(a.num_events / ref_s),
        "beam_over_reference_time_ratio": round(beam_s / ref_s, 2),
        "identical_outputs": not differences,
        "differences": differences,
        "train_examples": stats["train_examples"],
        "reference_peak_gib": round(ref_peak, 2),
        "events_csv_gib": round(os.path.getsize(events) / 2**30, 3),
        "beam_runner_process_before_gib": round(before, 2),
        "beam_runner_process_peak_gib": rss.peaks["self"],
        "beam_largest_worker_peak_gib": rss.peaks["largest_child"],
        "beam_all_processes_peak_gib": rss.peaks["all"],
        "beam_worker_processes": rss.peaks["children"],
        "numpy_s": round(numpy_s, 2),
        "numpy_events_per_s": round(a.num_events / numpy_s),
        "beam_over_numpy_time_ratio": round(beam_s / numpy_s, 1),
        "sessions_beam": stats["sessions"],
        "sessions_numpy": base["sessions"],
    }
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
