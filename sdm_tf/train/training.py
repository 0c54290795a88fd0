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

import tensorflow as tf
from absl import logging

from sdm_tf import config as C
from sdm_tf.core import features as F
from sdm_tf.model.sdm import SDM
from sdm_tf.train import item_init
from sdm_tf.train import validation as V
from sdm_tf.train.data_dir import load_dataset_spec, load_stats
from sdm_tf.train.input import InputReader

CHECKPOINT_DIR = "checkpoints"
# Written by the chief when training has ended (all epochs, or stopped early); the evaluator task
# stops once it has seen it and scored the last checkpoint. Removed when training (re)starts.
DONE_MARKER = "TRAINING_DONE"


def training_done(model_dir: str) -> bool:
    return tf.io.gfile.exists(os.path.join(model_dir, DONE_MARKER))


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


def seed_everything(cfg: C.ExperimentConfig) -> None:
    """Initialisation and sampling follow the seed; with `train.deterministic` the ops too (and
    tf.data's order), so one seed gives the same weights run after run."""
    tf.keras.utils.set_random_seed(cfg.train.seed)
    if cfg.train.deterministic:
        tf.config.experimental.enable_op_determinism()


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
    init_optimizer: bool = False,
    init_checkpoint: str = V.BEST_DIR,
) -> dict:
    """Trains (or resumes training of) a model; returns a summary with the loss per epoch.

    data_service: a tf.data service dispatcher (grpc://HOST:PORT) that feeds the training input
      (`sdm_tf.train.data_service`); under parameter servers it is what divides each pass over
      the data between the workers.
    init_from: a model directory whose best (else latest) weights start a fresh run (the
      optimizer starts fresh); ignored when `model_dir` already has a checkpoint to resume.
    init_optimizer: with `init_from`, start from its best weights *and* optimizer state (Adam's
      moments), at this config's learning rate; `init_checkpoint` V.DROP_DIR: from the weights
      validation's decayed phase started from.

    train_split: F.TRAIN, or F.TRAIN_ALL for the final fit on every event once validation has
      chosen the epochs (`validate=False` then: the validation targets are in the data).
    """
    strategy = strategy or tf.distribute.get_strategy()
    seed_everything(cfg)
    spec = load_dataset_spec(data_dir)
    cfg = C.resolve_auto(cfg, load_stats(data_dir))  # the model dir keeps what it decided
    C.save_config(cfg, model_dir)
    with tf.io.gfile.GFile(os.path.join(model_dir, "dataset_spec.json"), "w") as f:
        f.write(spec.to_json())
    with strategy.scope():
        model = build_model(spec, cfg)
        epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    ckpt = checkpoint_for(model, epoch)
    item_init_summary = None
    manager = tf.train.CheckpointManager(ckpt, os.path.join(model_dir, CHECKPOINT_DIR), 3)
    if manager.latest_checkpoint:
        ckpt.restore(manager.latest_checkpoint)
    elif init_from and init_optimizer:
        with strategy.scope():
            model.optimizer.build(model.trainable_variables)  # slots to restore into
        if not V.restore_best(model, init_from, optimizer=True, which=init_checkpoint):
            raise FileNotFoundError(f"no checkpoint in {init_from}/{init_checkpoint}")
        # The checkpoint carries the rate it was written at; this run's config decides.
        model.optimizer.learning_rate = cfg.train.learning_rate
    elif init_from:
        start_weights = restore(init_from)
        for var, value in zip(model.variables, start_weights.variables):
            var.assign(value)
    elif cfg.train.item_init == "cooccurrence":  # a fresh model: the item table's start
        item_init_summary = item_init.initialise_item_table(
            model, data_dir, train_split, cfg.train.seed
        )
    initial_epoch = int(epoch.numpy())
    steps = steps_per_epoch(data_dir, cfg, train_split)
    start = time.perf_counter()
    history = {}
    callbacks = [
        _EpochCheckpoint(manager, epoch),
        tf.keras.callbacks.TensorBoard(os.path.join(model_dir, "logs")),
    ]
    is_ps = isinstance(strategy, tf.distribute.ParameterServerStrategy)
    validating = validate and V.has_validation(data_dir)
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
        "item_init": item_init_summary,
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
