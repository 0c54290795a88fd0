"""Preprocessing throughput: the Beam pipeline against the same job done in one process.

    python benchmarks/preprocess_bench.py --num_events 1000000 [--runner_mode multi_processing]

All three run in this one invocation on the same synthetic events file:
* the Beam pipeline (DirectRunner, `--runner_mode`, one worker per core);
* `preprocess_reference`: the same job in one process without Beam: the pipeline's own
  per-element code in plain loops over data in memory. Its outputs are compared with the
  pipeline's (stats, and every train / eval record as a multiset): `identical_outputs`;
* a vectorised numpy sessionizer that does only the core (read, item filter, sort, split
  sessions): a lower bound on time, doing much less (no bags, vocabularies or Examples).

Peak memory: the reference's own process (it holds every event), and the largest process of
the Beam run (its workers: this process only generated the data before it).
"""

from __future__ import annotations

import argparse
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
    t = time.perf_counter()
    synthetic.generate(cfg, data)
    gen_s = time.perf_counter() - t
    events = os.path.join(data, "events.csv")

    t = time.perf_counter()
    stats = preprocess.run([
        "--input", events, "--output_dir", os.path.join(work, "out"), "--eval_protocol", "none",
        f"--direct_running_mode={a.runner_mode}",
    ])  # fmt: skip
    beam_s = time.perf_counter() - t
    # The largest finished child: the Beam workers (this process has only generated the data).
    beam_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB -> GiB

    # A fresh interpreter (spawned, not forked), so that its peak memory is its own.
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        ref_stats, ref_s, ref_peak = pool.submit(_reference, events, work).result()

    t = time.perf_counter()
    base = numpy_sessionize(events)
    numpy_s = time.perf_counter() - t
    identical = ref_stats == stats and all(
        ref.read_records(os.path.join(work, "ref"), k)
        == ref.read_records(os.path.join(work, "out"), k)
        for k in F.KINDS
    )
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
        "identical_outputs": identical,
        "train_examples": stats["train_examples"],
        "reference_peak_gib": round(ref_peak, 2),
        "beam_largest_process_peak_gib": round(beam_peak, 2),
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
