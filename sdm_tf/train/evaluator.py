"""The evaluator task of a parameter-server job: scores each new checkpoint until the chief is
done (`training.DONE_MARKER`), however long training takes."""

from __future__ import annotations

import os
from collections.abc import Sequence

import tensorflow as tf

from sdm_tf import config as C
from sdm_tf.model.sdm import SDM
from sdm_tf.train.predict import evaluate
from sdm_tf.train.training import CHECKPOINT_DIR, dummy_inputs, load_dataset_spec, training_done


def evaluator_loop(
    model_dir: str,
    data_dir: str,
    ks: Sequence[int] = (20, 50, 100),
    poll_seconds: float = 30,
    max_evaluations: int | None = None,
) -> list[dict]:
    """The evaluator task: scores every new checkpoint of `model_dir` on the eval split and
    writes the metrics to TensorBoard (logs/eval). Waits for checkpoints as long as training
    runs, however long that is, and stops once the chief's done marker is there and the last
    checkpoint is scored (or after `max_evaluations`)."""
    cfg = C.load_config(model_dir)
    spec = load_dataset_spec(data_dir)
    model = SDM(spec, cfg.model)
    model(dummy_inputs(spec))
    ckpt = tf.train.Checkpoint(model=model)
    writer = tf.summary.create_file_writer(os.path.join(model_dir, "logs", "eval"))
    results = []
    for path in tf.train.checkpoints_iterator(
        os.path.join(model_dir, CHECKPOINT_DIR),
        min_interval_secs=0,
        timeout=poll_seconds,
        timeout_fn=lambda: training_done(model_dir),  # True: no new checkpoint will come
    ):
        ckpt.restore(path).expect_partial()
        metrics, _, _ = evaluate(model, data_dir, ks)
        step = int(path.rsplit("-", 1)[-1])
        with writer.as_default(step=step):
            for k in ks:
                for name in ("HitRate", "Recall", "NDCG"):
                    tf.summary.scalar(f"{name}@{k}", metrics[f"{name}@{k}"])
        results.append({"checkpoint": path, **metrics})
        if max_evaluations and len(results) >= max_evaluations:
            break
    return results
