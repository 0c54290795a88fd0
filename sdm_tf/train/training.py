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
import weakref
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from sdm_tf import config as C
from sdm_tf.core import features as F
from sdm_tf.model.sdm import SDM
from sdm_tf.train import evaluation as E
from sdm_tf.train import validation as V
from sdm_tf.train.input import InputReader

CHECKPOINT_DIR = "checkpoints"
# Written by the chief when training has ended (all epochs, or stopped early); the evaluator task
# stops once it has seen it and scored the last checkpoint. Removed when training (re)starts.
DONE_MARKER = "TRAINING_DONE"


def training_done(model_dir: str) -> bool:
    return tf.io.gfile.exists(os.path.join(model_dir, DONE_MARKER))


def load_dataset_spec(data_dir: str) -> F.DatasetSpec:
    with tf.io.gfile.GFile(os.path.join(data_dir, "dataset_spec.json")) as f:
        return F.DatasetSpec.from_json(f.read())


def load_stats(data_dir: str) -> dict:
    with tf.io.gfile.GFile(os.path.join(data_dir, "stats.json")) as f:
        return json.load(f)


def load_vocab(data_dir: str, feature: str) -> list[str]:
    """Raw values of `feature` by vocabulary line (line i is id i + NUM_RESERVED)."""
    with tf.io.gfile.GFile(os.path.join(data_dir, "vocab", f"{feature}.tsv")) as f:
        return [line.split("\t", 1)[0] for line in f.read().splitlines()]


def load_item_vocab(data_dir: str) -> list[str]:
    """Raw item ids by class (class c is vocabulary line c, id c + NUM_RESERVED)."""
    return load_vocab(data_dir, F.ITEM)


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
    t = cfg.train
    # Decoupled weight decay (AdamW) on every variable when asked for; Adam otherwise.
    opt = tf.keras.optimizers.AdamW if t.weight_decay else tf.keras.optimizers.Adam
    wd = dict(weight_decay=t.weight_decay, jit_compile=False) if t.weight_decay else {}
    model.compile(optimizer=opt(learning_rate=t.learning_rate, global_clipnorm=t.clipnorm, **wd))
    return model


def train_reader(
    data_dir: str,
    spec: F.DatasetSpec,
    cfg: C.ExperimentConfig,
    split: str = F.TRAIN,
    data_service: str = "",
) -> InputReader:
    return InputReader(
        data_service=data_service,
        pattern=os.path.join(data_dir, split, "*.tfrecord.gz"),
        spec=F.FeatureSpec(spec),
        kind=F.TRAIN,
        batch_size=cfg.train.batch_size,
        training=True,
        bucket_boundaries=tuple(cfg.train.bucket_boundaries),
        shuffle_buffer=cfg.train.shuffle_buffer,
        seed=cfg.train.seed,
    )


def steps_per_epoch(data_dir: str, cfg: C.ExperimentConfig, split: str = F.TRAIN) -> int:
    if cfg.train.steps_per_epoch:
        return cfg.train.steps_per_epoch
    n = load_stats(data_dir)[f"{split}_examples"]
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
    train_split: str = F.TRAIN,
    validate: bool = True,
    data_service: str = "",
    init_from: str = "",
) -> dict:
    """Trains (or resumes training of) a model; returns a summary with the loss per epoch.

    data_service: a tf.data service dispatcher (grpc://HOST:PORT) that feeds the training input
      (`sdm_tf.train.data_service`); under parameter servers it is what divides each pass over
      the data between the workers.
    init_from: a model directory whose best (else latest) weights start a fresh run (the
      optimizer starts fresh); ignored when `model_dir` already has a checkpoint to resume.

    train_split: F.TRAIN, or F.TRAIN_ALL for the final fit on every event once validation has
      chosen the epochs (`validate=False` then: the validation targets are in the data).
    """
    strategy = strategy or tf.distribute.get_strategy()
    tf.keras.utils.set_random_seed(cfg.train.seed)  # initialisation and sampling follow the seed
    spec = load_dataset_spec(data_dir)
    cfg = C.resolve_auto(cfg, load_stats(data_dir))  # the model dir keeps what it decided
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
    elif init_from:
        start_weights = restore(init_from)
        for var, value in zip(model.variables, start_weights.variables):
            var.assign(value)
    initial_epoch = int(epoch.numpy())
    steps = steps_per_epoch(data_dir, cfg, train_split)
    start = time.perf_counter()
    history = {}
    callbacks = [
        _EpochCheckpoint(manager, epoch),
        tf.keras.callbacks.TensorBoard(os.path.join(model_dir, "logs")),
    ]
    is_ps = isinstance(strategy, tf.distribute.ParameterServerStrategy)
    # Under PS the evaluator task validates.
    validating = validate and V.has_validation(data_dir) and not is_ps
    if validating:
        callbacks.insert(
            0,
            V.RetrievalValidation(
                data_dir,
                model_dir,
                cfg.train.validation_metric,
                cfg.train.patience or 10**9,
                learning_rate=cfg.train.learning_rate,
                decay_factor=cfg.train.decay_factor,
                decay_patience=cfg.train.decay_patience,
            ),
        )
    elif cfg.train.decay_epoch:
        callbacks.insert(
            0,
            V.StepDecay(cfg.train.learning_rate, cfg.train.decay_factor, cfg.train.decay_epoch),
        )
    done = validating and (V.load_state(model_dir) or {}).get("stopped_early")
    epochs = cfg.train.resolved_epochs(validating)
    if initial_epoch < epochs and not done:
        if training_done(model_dir):  # resumed with more epochs: the evaluator must wait again
            tf.io.gfile.remove(os.path.join(model_dir, DONE_MARKER))
        reader = train_reader(data_dir, spec, cfg, train_split, data_service)
        if is_ps and not data_service:
            logging.warning(
                "parameter-server training without the tf.data service: every worker reads "
                "the whole training split (set SDM_DATA_SERVICE or --data_service)"
            )
        if is_ps:
            # Each worker runs the input function; the tf.data service divides the data.
            data = tf.keras.utils.experimental.DatasetCreator(reader)
            verbose = 2 if verbose == 1 else verbose  # Keras allows no progress bar here
        else:
            data = reader()
        h = model.fit(
            data,
            epochs=epochs,
            initial_epoch=initial_epoch,
            steps_per_epoch=steps,
            callbacks=callbacks,
            verbose=verbose,
        )
        history = {k: [float(v) for v in vals] for k, vals in h.history.items()}
    elif validating:
        V.restore_best(model, model_dir)
    with tf.io.gfile.GFile(os.path.join(model_dir, DONE_MARKER), "w") as f:
        f.write(
            json.dumps(
                {"epochs": int(epoch.numpy()), "steps": int(model.optimizer.iterations.numpy())}
            )
        )
    return {
        "initial_epoch": initial_epoch,
        "epochs": epochs,
        "steps_per_epoch": steps,
        "train_seconds": time.perf_counter() - start,
        "optimizer_steps": int(model.optimizer.iterations.numpy()),
        "objective": model.objective,
        "blocks": getattr(model.tower, "blocks", model.cfg.kind),
        "history": history,
        "validation": V.load_state(model_dir) if validating else None,
        "model": model,
    }


def restore(model_dir: str) -> SDM:
    """The model of `model_dir`: the best epoch on validation where training had a validation
    split, else the latest checkpoint."""
    cfg = C.load_config(model_dir)
    with tf.io.gfile.GFile(os.path.join(model_dir, "dataset_spec.json")) as f:
        spec = F.DatasetSpec.from_json(f.read())
    model = SDM(spec, cfg.model)
    model(dummy_inputs(spec))
    if V.restore_best(model, model_dir):
        return model
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, CHECKPOINT_DIR))
    if latest is None:
        raise FileNotFoundError(f"no checkpoint in {model_dir}/{CHECKPOINT_DIR}")
    tf.train.Checkpoint(model=model).restore(latest).expect_partial()
    return model


def eval_batches(
    data_dir: str, spec: F.DatasetSpec, batch_size: int = 512, split: str = F.EVAL
) -> tf.data.Dataset:
    """Batches of `split` (eval/: validation or the eval protocol's queries; test/: held out),
    by length buckets: results are keyed by user, so file order does not matter."""
    return InputReader(
        pattern=os.path.join(data_dir, split, "*.tfrecord.gz"),
        spec=F.FeatureSpec(spec),
        kind=F.EVAL,
        batch_size=batch_size,
        training=False,
        bucket_eval=True,
    )()


_PREDICT_FNS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _predict_fn(model: SDM):
    """The model's inference function, traced once per model (validation calls it every epoch).
    One trace for every batch shape: sequence and bag lengths vary from batch to batch."""
    if model not in _PREDICT_FNS:
        signature = F.FeatureSpec(model.dataset).model_input_signature()
        _PREDICT_FNS[model] = tf.function(
            lambda x: model(x, training=False), input_signature=[signature]
        )
    return _PREDICT_FNS[model]


def tower_vectors(model: SDM, batches: Iterable[Mapping[str, tf.Tensor]]) -> np.ndarray:
    """[U, d]: the user vector of every example of `batches`, in order."""
    keys, predict = F.FeatureSpec(model.dataset).model_input_keys(), _predict_fn(model)
    out = [predict({k: batch[k] for k in keys}).numpy() for batch in batches]
    return np.concatenate(out) if out else np.zeros([0, model.cfg.dim], np.float32)


def user_vectors(
    model: SDM,
    data_dir: str,
    batch_size: int = 512,
    split: str = F.EVAL,
    batches: Iterable[Mapping[str, tf.Tensor]] | None = None,
):
    """For every example of `split`: (user ids, [U, d] vectors, truth lists, fed-history lists).

    `batches`: the split's batches already read (e.g. a list kept across validation epochs)."""
    if batches is None:
        batches = eval_batches(data_dir, model.dataset, batch_size, split)
    users, vectors, truth, history = [], [], [], []
    for batch in batches:  # one pass: the split may be read from files as it goes
        vectors.append(tower_vectors(model, [batch]))
        for out, part in zip((users, truth, history), example_ids([batch])):
            out += part
    vecs = np.concatenate(vectors) if vectors else tower_vectors(model, [])
    return users, vecs, truth, history


def example_ids(batches: Iterable[Mapping[str, tf.Tensor]]):
    """(user ids, truth lists, fed-history lists) of every example of `batches`, decoded."""
    users, truth, history = [], [], []
    for batch in batches:
        users += [u.decode() for u in batch[F.USER_ID].numpy()]
        truth += [[t.decode() for t in row if t] for row in batch[F.TRUTH].numpy()]
        history += [[t.decode() for t in row if t] for row in batch[F.HISTORY].numpy()]
    return users, truth, history


def rank_rules(
    model: SDM,
    vocab: Sequence[str],
    vecs: np.ndarray,
    history: Sequence[Iterable[str]] | None,
    k: int,
    block: int = 2048,
    kept: bool = True,
) -> dict[str, list[list[str]]]:
    """Top-k under the history rules from one scoring pass: "kept" (only if `kept`), and with
    `history` (time-ordered) "excluded" (never returned) and "first" (`sessions.history_first`)."""
    index = {item: c for c, item in enumerate(vocab)}
    table, bias = model.item_table, model.output_bias
    k = min(k, len(vocab))
    out: dict[str, list[list[str]]] = {}
    if kept:
        out["kept"] = []
    if history is not None:
        out["excluded"], out["first"] = [], []
    for start in range(0, len(vecs), block):
        scores = tf.matmul(tf.constant(vecs[start : start + block]), table, transpose_b=True) + bias
        if kept:
            _, top = tf.math.top_k(scores, k)
            out["kept"] += [[vocab[c] for c in row] for row in top.numpy()]
        if history is None:
            continue
        cells = [
            (r, index[i])
            for r, row in enumerate(history[start : start + block])
            for i in set(row)
            if i in index
        ]
        if cells:
            scores = tf.tensor_scatter_nd_update(
                scores, tf.constant(cells, tf.int32), tf.fill([len(cells)], -np.inf)
            )
        values, top = tf.math.top_k(scores, k)
        # Fewer than k items left after the exclusion: the list ends early.
        excluded = [
            [vocab[c] for c, v in zip(row, vals) if v != -np.inf]
            for row, vals in zip(top.numpy(), values.numpy())
        ]
        out["excluded"] += excluded
        out["first"] += map(E.history_first, history[start : start + block], excluded, [k] * block)
    return out


def evaluate(
    model: SDM,
    data_dir: str,
    ks: Sequence[int] = (20, 50, 100),
    exclude_seen: bool = False,
    batch_size: int = 512,
    split: str = F.EVAL,
    history_rule: str | None = None,
) -> tuple[dict, dict[str, list[str]], dict[str, list[str]]]:
    """Exact top-K over all items for every example of `split`.

    exclude_seen: never return items of the user's fed history (every item fed, not only the
      short-term session and bags the model sees).
    history_rule: "kept", "excluded" or "first" (`rank_rules`); overrides `exclude_seen`.
    Returns (metrics, predictions, truth); predictions hold the top max(ks) raw item ids.
    """
    vocab = load_item_vocab(data_dir)
    users, vecs, truth_lists, history = user_vectors(model, data_dir, batch_size, split)
    rule = history_rule or ("excluded" if exclude_seen else "kept")
    kept = rule == "kept"  # the other two rules need the history
    ranked = rank_rules(model, vocab, vecs, None if kept else history, max(ks), kept=kept)[rule]
    predictions = dict(zip(users, ranked))
    truth = dict(zip(users, truth_lists))
    return E.retrieval_metrics(truth, predictions, ks), predictions, truth
