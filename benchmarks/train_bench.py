"""Training throughput of a preset on this machine: examples/s and training pairs/s.

    python benchmarks/train_bench.py [--preset default] [--variant PSDMMAL] [--steps 60]
        [--data_dir PREPROCESSED] [--override model.dim=32 ...] [--threads 1]

Times `fit` over --steps steps after a warm-up (tracing and the first batches excluded), on
--data_dir (any preprocessed data) or on generated synthetic data. --steps 0: one epoch, the
pass a training run makes. The first steps of a pass lean to short sessions (length buckets
of short sessions fill first), so a few steps read fast: on Beauty 100 steps took 98–104 ms a
step where a whole epoch took 115.5 (docs/performance.md). Batches come from the real
input pipeline (gzip TFRecords, parsing, length bucketing), so input cost is included.
Training pairs/s counts (history -> next item) targets: positions with a label.
--threads N pins TensorFlow's intra- and inter-op pools to N threads (1: a per-core figure).
--input_only times the input pipeline alone. --profile DIR traces --profile_steps more steps
with `tf.profiler` (after the timed run) and reports their op time by block (step_profile.py).
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

from benchmarks import step_profile  # noqa: E402
from pipelines import preprocess, synthetic  # noqa: E402
from sdm_tf import config as C  # noqa: E402
from sdm_tf.core import features as F  # noqa: E402
from sdm_tf.train import training  # noqa: E402


class _LastStep(tf.keras.callbacks.Callback):
    """When the last training step ended."""

    at = 0.0

    def on_train_batch_end(self, batch, logs=None):
        self.at = time.perf_counter()


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="default")
    ap.add_argument("--variant", default="PSDMMAL")
    ap.add_argument("--data_dir", default="", help="preprocessed data (default: synthetic)")
    ap.add_argument("--override", action="append", default=[], help="section.field=value")
    ap.add_argument("--threads", type=int, default=0, help="TF threads (0: TensorFlow's default)")
    ap.add_argument("--steps", type=int, default=60, help="0: one epoch")
    ap.add_argument(
        "--steps_per_execution", type=int, default=1, help="Keras' steps per compiled call"
    )
    ap.add_argument("--num_events", type=int, default=300_000)
    ap.add_argument("--workdir", default="")
    ap.add_argument(
        "--input_only", action="store_true", help="time the input pipeline alone (no training)"
    )
    ap.add_argument("--profile", default="", help="trace steps into this dir, split by block")
    ap.add_argument("--profile_steps", type=int, default=40)
    a = ap.parse_args(argv)
    if a.threads:
        tf.config.threading.set_intra_op_parallelism_threads(a.threads)
        tf.config.threading.set_inter_op_parallelism_threads(a.threads)
    work = a.workdir or tempfile.mkdtemp(prefix="sdm_train_bench_")
    data = a.data_dir or os.path.join(work, "data")
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
    # The data-decided settings ("auto") as a training run on this data resolves them.
    cfg = C.resolve_auto(C.get_config(a.preset, a.variant, a.override), training.load_stats(data))
    a.steps = a.steps or training.steps_per_epoch(data, cfg)
    spec = training.load_dataset_spec(data)
    training.seed_everything(cfg)  # as a training run does (train.deterministic included)
    model = training.build_model(spec, cfg)
    if a.steps_per_execution > 1:
        model.compile(optimizer=model.optimizer, steps_per_execution=a.steps_per_execution)
    reader = training.train_reader(data, spec, cfg)
    # Batches differ in cost with their length bucket (on Beauty 11 of 180 batches hold 27 %
    # of the time), and every new iterator of the shuffled input draws another order. So each
    # pass below reads a freshly built input, whose seeded order is the same: the warm-up
    # (which traces every batch shape the timed pass meets), the pair count and the timed pass
    # all see the same `steps` batches.
    model.fit(reader(), epochs=1, steps_per_epoch=a.steps, verbose=0)
    # Training pairs per batch: positions with a label (each one a softmax target).
    pairs = [
        int(tf.reduce_sum(tf.cast(x[F.LABEL] >= F.NUM_RESERVED, tf.int64)))
        for x in reader().take(a.steps)
    ]
    start = time.perf_counter()
    if a.input_only:  # read, parse and bucket the same number of batches
        for _ in reader().take(a.steps):
            pass
        seconds = time.perf_counter() - start
    else:
        # Up to the end of the last step: `fit` returned 0 or 7 s after it (varying from run to
        # run, on two threads; not the input's iterator, docs/performance.md), which a training
        # run pays once and a 100-step timing would have counted as ~70 ms a step.
        clock = _LastStep()
        model.fit(reader(), epochs=1, steps_per_epoch=a.steps, verbose=0, callbacks=[clock])
        seconds = clock.at - start
    split = {}
    if a.profile and not a.input_only:
        tf.profiler.experimental.start(a.profile)
        model.fit(reader(), epochs=1, steps_per_epoch=a.profile_steps, verbose=0)
        tf.profiler.experimental.stop()
        split = step_profile.block_split(a.profile, a.profile_steps)
    examples = a.steps * cfg.train.batch_size
    result = {
        "preset": a.preset,
        "variant": a.variant,
        "cpus": os.cpu_count(),
        "batch_size": cfg.train.batch_size,
        "steps": a.steps,
        "seconds": round(seconds, 2),
        "examples_per_s": round(examples / seconds, 1),
        "pairs_per_s": round(sum(pairs) / seconds, 1),
        "threads": a.threads or "default",
        "overrides": a.override,
        "full_softmax": bool(model.full_softmax),
        "input_only": a.input_only,
        "steps_per_execution": a.steps_per_execution,
        "ms_per_step": round(1000 * seconds / a.steps, 1),
    }
    if split:  # op time under the profiler (it adds its own overhead), ms per step
        result["profile_ms_per_step"] = split
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
