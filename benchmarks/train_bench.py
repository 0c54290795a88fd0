"""Training throughput of a preset on this machine: examples/s and positions/s.

    python benchmarks/train_bench.py [--preset paper_offline] [--variant PSDMMAL-N] [--steps 60]

Generates synthetic data, preprocesses it, then times `fit` over --steps steps after a warm-up
epoch (tracing and the first batches excluded). Batches come from the real input pipeline
(gzip TFRecords, parsing, length bucketing), so input cost is included.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # before TensorFlow loads

import tensorflow as tf  # noqa: E402

from pipelines import preprocess, synthetic  # noqa: E402
from sdm_tf import config as C  # noqa: E402
from sdm_tf.core import features as F  # noqa: E402
from sdm_tf.train import training  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="paper_offline")
    ap.add_argument("--variant", default="PSDMMAL-N")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--num_events", type=int, default=300_000)
    ap.add_argument("--workdir", default="")
    a = ap.parse_args(argv)
    work = a.workdir or tempfile.mkdtemp(prefix="sdm_train_bench_")
    data = os.path.join(work, "data")
    if not os.path.exists(os.path.join(data, "stats.json")):
        synthetic.generate(
            synthetic.SyntheticConfig(num_events=a.num_events, num_items=5000),
            os.path.join(work, "raw"),
        )
        preprocess.run(
            [
                f"--input={os.path.join(work, 'raw', 'events.csv')}",
                f"--item_table={os.path.join(work, 'raw', 'items.csv')}",
                f"--user_table={os.path.join(work, 'raw', 'users.csv')}",
                f"--output_dir={data}",
            ]
        )
    cfg = C.get_config(a.preset, a.variant)
    spec = training.load_dataset_spec(data)
    model = training.build_model(spec, cfg)
    ds = training.train_reader(data, spec, cfg)()
    model.fit(ds, epochs=1, steps_per_epoch=10, verbose=0)  # trace + warm up
    # Mean valid positions per batch (each one is a softmax target), from the same input.
    lengths = [int(tf.reduce_sum(x[F.LENGTH])) for x in ds.take(a.steps)]
    start = time.perf_counter()
    model.fit(ds, epochs=1, steps_per_epoch=a.steps, verbose=0)
    seconds = time.perf_counter() - start
    examples = a.steps * cfg.train.batch_size
    result = {
        "preset": a.preset,
        "variant": a.variant,
        "cpus": os.cpu_count(),
        "batch_size": cfg.train.batch_size,
        "steps": a.steps,
        "seconds": round(seconds, 2),
        "examples_per_s": round(examples / seconds, 1),
        "positions_per_s": round(sum(lengths) / seconds, 1),
        "ms_per_step": round(1000 * seconds / a.steps, 1),
    }
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
