"""Training and evaluation loops over a preprocessed data directory.

A data directory is what `pipelines.preprocess` writes (train/, eval/, vocab/, dataset_spec.json,
stats.json). A model directory holds the resolved config, a copy of the dataset spec,
checkpoints (one per epoch: model, optimizer, epoch counter) and TensorBoard logs. Running `train`
again on the same model directory resumes from the last checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from sdm_tf import config as C
from sdm_tf import evaluation as E
from sdm_tf import features as F
from sdm_tf.input import InputReader
from sdm_tf.model import SDM

CHECKPOINT_DIR = "checkpoints"


def load_dataset_spec(data_dir: str) -> F.DatasetSpec:
    with tf.io.gfile.GFile(os.path.join(data_dir, "dataset_spec.json")) as f:
        return F.DatasetSpec.from_json(f.read())


def load_stats(data_dir: str) -> dict:
    with tf.io.gfile.GFile(os.path.join(data_dir, "stats.json")) as f:
        return json.load(f)


def load_item_vocab(data_dir: str) -> list[str]:
    """Raw item ids by class (class c is vocabulary line c, id c + NUM_RESERVED)."""
    with tf.io.gfile.GFile(os.path.join(data_dir, "vocab", "item.tsv")) as f:
        return [line.split("\t", 1)[0] for line in f.read().splitlines()]


def dummy_inputs(spec: F.DatasetSpec) -> dict[str, tf.Tensor]:
    """A one-example batch that builds every variable of the model."""
    x = {F.LENGTH: tf.constant([1], tf.int64)}
    for f in spec.item_features:
        x[F.short_key(f)] = tf.constant([[F.NUM_RESERVED]], tf.int64)
        x[F.long_key(f)] = tf.constant([[F.NUM_RESERVED]], tf.int64)
    for p in spec.profile_features:
        x[F.profile_key(p)] = tf.constant([F.NUM_RESERVED], tf.int64)
    return x


def build_model(spec: F.DatasetSpec, cfg: C.ExperimentConfig) -> SDM:
    model = SDM(spec, cfg.model)
    model(dummy_inputs(spec))
    model.compile(
        optimizer=tf.keras.optimizers.Adam(
            learning_rate=cfg.train.learning_rate, global_clipnorm=cfg.train.clipnorm
        )
    )
    return model


def train_reader(data_dir: str, spec: F.DatasetSpec, cfg: C.ExperimentConfig) -> InputReader:
    return InputReader(
        pattern=os.path.join(data_dir, F.TRAIN, "*.tfrecord.gz"),
        spec=F.FeatureSpec(spec),
        kind=F.TRAIN,
        batch_size=cfg.train.batch_size,
        training=True,
        bucket_boundaries=tuple(cfg.train.bucket_boundaries),
        shuffle_buffer=cfg.train.shuffle_buffer,
        seed=cfg.train.seed,
    )


def steps_per_epoch(data_dir: str, cfg: C.ExperimentConfig) -> int:
    if cfg.train.steps_per_epoch:
        return cfg.train.steps_per_epoch
    n = load_stats(data_dir)["train_examples"]
    return max(1, math.ceil(n / cfg.train.batch_size))


class _EpochCheckpoint(tf.keras.callbacks.Callback):
    def __init__(self, manager: tf.train.CheckpointManager, epoch: tf.Variable):
        super().__init__()
        self.manager = manager
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.assign(epoch + 1)
        self.manager.save(checkpoint_number=epoch + 1)


def checkpoint_for(model: SDM, epoch: tf.Variable | None = None) -> tf.train.Checkpoint:
    parts = {"model": model}
    if model.optimizer is not None:
        parts["optimizer"] = model.optimizer
    if epoch is not None:
        parts["epoch"] = epoch
    return tf.train.Checkpoint(**parts)


def train(
    cfg: C.ExperimentConfig,
    data_dir: str,
    model_dir: str,
    strategy: tf.distribute.Strategy | None = None,
    verbose: int | str = 1,
) -> dict:
    """Trains (or resumes training of) a model; returns a summary with the loss per epoch."""
    strategy = strategy or tf.distribute.get_strategy()
    tf.keras.utils.set_random_seed(cfg.train.seed)  # initialisation and sampling follow the seed
    spec = load_dataset_spec(data_dir)
    C.save_config(cfg, model_dir)
    with tf.io.gfile.GFile(os.path.join(model_dir, "dataset_spec.json"), "w") as f:
        f.write(spec.to_json())
    with strategy.scope():
        model = build_model(spec, cfg)
        epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    ckpt = checkpoint_for(model, epoch)
    manager = tf.train.CheckpointManager(ckpt, os.path.join(model_dir, CHECKPOINT_DIR), 3)
    if manager.latest_checkpoint:
        ckpt.restore(manager.latest_checkpoint)
    initial_epoch = int(epoch.numpy())
    steps = steps_per_epoch(data_dir, cfg)
    start = time.perf_counter()
    history = {}
    if initial_epoch < cfg.train.epochs:
        reader = train_reader(data_dir, spec, cfg)
        if isinstance(strategy, tf.distribute.ParameterServerStrategy):
            # Each worker builds its own input (and reads its own shard) from the InputContext.
            data = tf.keras.utils.experimental.DatasetCreator(reader)
            verbose = 2 if verbose == 1 else verbose  # Keras allows no progress bar here
        else:
            data = reader()
        h = model.fit(
            data,
            epochs=cfg.train.epochs,
            initial_epoch=initial_epoch,
            steps_per_epoch=steps,
            callbacks=[
                _EpochCheckpoint(manager, epoch),
                tf.keras.callbacks.TensorBoard(os.path.join(model_dir, "logs")),
            ],
            verbose=verbose,
        )
        history = {k: [float(v) for v in vals] for k, vals in h.history.items()}
    return {
        "initial_epoch": initial_epoch,
        "epochs": cfg.train.epochs,
        "steps_per_epoch": steps,
        "train_seconds": time.perf_counter() - start,
        "optimizer_steps": int(model.optimizer.iterations.numpy()),
        "history": history,
        "model": model,
    }


def restore(model_dir: str) -> SDM:
    """The model of `model_dir` at its latest checkpoint."""
    cfg = C.load_config(model_dir)
    with tf.io.gfile.GFile(os.path.join(model_dir, "dataset_spec.json")) as f:
        spec = F.DatasetSpec.from_json(f.read())
    model = SDM(spec, cfg.model)
    model(dummy_inputs(spec))
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, CHECKPOINT_DIR))
    if latest is None:
        raise FileNotFoundError(f"no checkpoint in {model_dir}/{CHECKPOINT_DIR}")
    tf.train.Checkpoint(model=model).restore(latest).expect_partial()
    return model


def eval_batches(data_dir: str, spec: F.DatasetSpec, batch_size: int = 512) -> tf.data.Dataset:
    return InputReader(
        pattern=os.path.join(data_dir, F.EVAL, "*.tfrecord.gz"),
        spec=F.FeatureSpec(spec),
        kind=F.EVAL,
        batch_size=batch_size,
        training=False,
    )()


def user_vectors(model: SDM, data_dir: str, batch_size: int = 512):
    """For every eval example: (user ids, [U, d] vectors, truth lists, seen classes)."""
    users, vectors, truth, seen = [], [], [], []
    keys = F.FeatureSpec(model.dataset).model_input_keys()
    # One trace for every batch shape: sequence and bag lengths vary from batch to batch.
    signature = F.FeatureSpec(model.dataset).model_input_signature()
    predict = tf.function(lambda x: model(x, training=False), input_signature=[signature])
    for batch in eval_batches(data_dir, model.dataset, batch_size):
        vectors.append(predict({k: batch[k] for k in keys}).numpy())
        users += [u.decode() for u in batch[F.USER_ID].numpy()]
        truth += [[t.decode() for t in row if t] for row in batch[F.TRUTH].numpy()]
        hist = np.concatenate(
            [batch[F.short_key(F.ITEM)].numpy(), batch[F.long_key(F.ITEM)].numpy()], axis=1
        )
        seen += [
            sorted({int(c) - F.NUM_RESERVED for c in row if c >= F.NUM_RESERVED}) for row in hist
        ]
    dim = model.cfg.dim
    return users, (np.concatenate(vectors) if vectors else np.zeros([0, dim])), truth, seen


def evaluate(
    model: SDM,
    data_dir: str,
    ks: Sequence[int] = (20, 50, 100),
    exclude_seen: bool = False,
    exclude_items: Mapping[str, Iterable[str]] | None = None,
    batch_size: int = 512,
) -> tuple[dict, dict[str, list[str]], dict[str, list[str]]]:
    """Exact top-K over all items for every eval example.

    exclude_seen: never return items of the example's own short- and long-term features.
    exclude_items: user -> raw item ids never to return to that user (e.g. the full history).
    Returns (metrics, predictions, truth); predictions hold the top max(ks) raw item ids.
    """
    vocab = load_item_vocab(data_dir)
    users, vecs, truth_lists, seen = user_vectors(model, data_dir, batch_size)
    exclude = None
    if exclude_seen or exclude_items:
        index = {item: c for c, item in enumerate(vocab)}
        exclude = []
        for u, s in zip(users, seen):
            classes = set(s) if exclude_seen else set()
            if exclude_items:
                classes.update(index[i] for i in exclude_items.get(u, ()) if i in index)
            exclude.append(sorted(classes))
    classes = E.top_k(
        vecs, model.item_table.numpy(), model.output_bias.numpy(), max(ks), exclude=exclude
    )
    predictions = {u: [vocab[c] for c in row] for u, row in zip(users, classes)}
    truth = dict(zip(users, truth_lists))
    metrics = E.retrieval_metrics(truth, predictions, ks)
    return metrics, predictions, truth


def evaluator_loop(
    model_dir: str,
    data_dir: str,
    ks: Sequence[int] = (20, 50, 100),
    timeout: float | None = None,
    max_evaluations: int | None = None,
) -> list[dict]:
    """The evaluator task: scores every new checkpoint of `model_dir` on the eval split and
    writes the metrics to TensorBoard (logs/eval). Stops after `timeout` seconds without a new
    checkpoint, or after `max_evaluations`."""
    cfg = C.load_config(model_dir)
    spec = load_dataset_spec(data_dir)
    model = SDM(spec, cfg.model)
    model(dummy_inputs(spec))
    ckpt = tf.train.Checkpoint(model=model)
    writer = tf.summary.create_file_writer(os.path.join(model_dir, "logs", "eval"))
    results = []
    for path in tf.train.checkpoints_iterator(
        os.path.join(model_dir, CHECKPOINT_DIR), timeout=timeout
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
