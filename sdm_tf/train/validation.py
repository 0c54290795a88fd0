"""Model selection on a validation split: retrieval metrics per epoch, best checkpoint, early stop.

The validation split is `eval/` of a data directory whose held-out test queries live in `test/`
(`pipelines.preprocess --test_queries ...`, what `launch.bench_split` does), so epochs, the
history rule and every default are chosen without reading the test split.

Each validation ranks all items under four rules for the user's fed history: kept (ranked as
any item), excluded (never returned), first (the user's own items, most recently seen first,
then the ranking without them) and frequent (the same, the most often seen first), because
whether users come back to the same items is a property of the data: on leave-one-out review or
rating data the target is new by construction (there "first" and "frequent" can only lose), on
click logs repeats are much of the truth. The best epoch is the one whose kept or excluded
ranking scores highest (the model's own ranking); the rule that scores highest at that epoch is
the one the test split is ranked with (ties go to the earlier rule).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import tensorflow as tf

from sdm_tf.core import features as F
from sdm_tf.train import predict
from sdm_tf.train import ranks as R
from sdm_tf.train.data_dir import load_item_vocab

# The user's fed history: ranked as any item / never returned / ranked first, most recent first
# / most often seen first. Epochs are chosen on the first two (the model's own ranking: under
# "first" a user with a long history gets the same list from any epoch); the rule, at the chosen
# epoch, among all four.
RULES = R.RULES  # kept, excluded, first, frequent
MODEL_RULES = RULES[:2]
BEST_DIR = "best"
DROP_DIR = "drop"  # the weights and optimizer state the decayed phase started from
STATE_FILE = "validation.json"
# Users per tower call in a validation pass: Beauty's 22,363 took 1.45 s in batches of 2,048
# against 1.84 s in 512s (fewer calls; the tower is inference only, its memory is small).
BATCH = 2048


class ValidationSet:
    """eval/ read once for every epoch: its batches, and the truth and history in class ids
    (`ranks.Queries`); an epoch only runs the tower and ranks."""

    def __init__(self, model, data_dir: str, k: int):
        self.batches = list(predict.eval_batches(data_dir, model.dataset, BATCH))
        _, truth, history = predict.example_ids(self.batches)  # no tower pass: ids only
        self.queries = R.Queries.build(load_item_vocab(data_dir), truth, history, k)


def validate(
    model, data_dir: str, ks: Sequence[int] = (20, 50), data: ValidationSet | None = None
) -> dict[str, dict]:
    """Metrics on `eval/` under every history rule: {"kept": {...}, "excluded": {...}, ...}:
    `evaluation.retrieval_metrics` of `predict.rank_rules`' lists, computed from where the
    truth lands (`ranks`). `data`: eval/ already read, to parse it once for every epoch."""
    data = data or ValidationSet(model, data_dir, max(ks))
    vecs = predict.tower_vectors(model, data.batches)
    return R.rule_metrics(model.item_table, model.output_bias, vecs, data.queries, ks)


def fit_schedule(state: dict) -> tuple[int, int]:
    """(epochs, decay_epoch) that reach validation's best weights again in a run without
    validation: the phase-1 epochs up to the weights the decay started from, then the decayed
    epochs up to the best one. decay_epoch 0: the best epoch came before any decay."""
    best, started = state["best_epoch"], state.get("decay_started")
    if not started or best <= started:
        return best, 0
    return state["decay_epoch"] + best - started, state["decay_epoch"]


def decayed_epochs(state: dict) -> int:
    """Epochs of the decayed phase up to the best one; 0 when the best came before any decay."""
    best, started = state.get("best_epoch", 0), state.get("decay_started")
    return best - started if started and best > started else 0


class StepDecay(tf.keras.callbacks.Callback):
    """The learning rate times `factor` from epoch `decay_epoch` on (0-based count of epochs
    done); logged per epoch as `learning_rate`. The final fit's replay of `fit_schedule`."""

    def __init__(self, learning_rate: float, factor: float, decay_epoch: int):
        super().__init__()
        self.learning_rate, self.factor, self.decay_epoch = learning_rate, factor, decay_epoch

    def on_epoch_begin(self, epoch, logs=None):
        decayed = epoch >= self.decay_epoch
        self.model.optimizer.learning_rate = self.learning_rate * (self.factor if decayed else 1)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(self.model.optimizer.learning_rate.numpy())


class RetrievalValidation(tf.keras.callbacks.Callback):
    """Scores `eval/` after every epoch and keeps the best weights. After `patience` epochs
    without improvement it goes back to the best weights and optimizer state at
    `learning_rate * decay_factor`, and stops after `decay_patience` more epochs without
    improvement (at once when there is no decay); the best weights are restored at the end.

    The best weights are also written to `model_dir/best/` and the curve to
    `model_dir/validation.json`, so a resumed run continues the same selection.
    """

    def __init__(
        self,
        data_dir: str,
        model_dir: str,
        metric: str = "NDCG@50",
        patience: int = 5,
        ks: Sequence[int] = (20, 50),
        learning_rate: float = 1e-3,
        decay_factor: float = 0.0,
        decay_patience: int = 3,
    ):
        super().__init__()
        self.data_dir = data_dir
        self.model_dir = model_dir
        self.metric = metric
        self.patience = patience
        self.learning_rate = learning_rate
        self.decays = decay_factor not in (0.0, 1.0)
        self.decay_factor = decay_factor
        self.decay_patience = decay_patience
        self.ks = tuple(sorted(set(ks) | {int(metric.split("@")[1])}))
        self.state = load_state(model_dir) or {
            "metric": metric,
            "best_epoch": 0,
            "best": -1.0,
            "rule": None,
            "curve": [],
        }

        self._data: ValidationSet | None = None

    @property
    def best_prefix(self) -> str:
        return os.path.join(self.model_dir, BEST_DIR, "ckpt")

    def on_train_begin(self, logs=None):
        if self.state.get("decay_started"):  # resumed after the decay
            self.model.optimizer.learning_rate = self.learning_rate * self.decay_factor

    def _decay(self, epoch: int) -> None:
        ckpt = tf.train.Checkpoint(model=self.model, optimizer=self.model.optimizer)
        ckpt.read(self.best_prefix).expect_partial()
        ckpt.write(os.path.join(self.model_dir, DROP_DIR, "ckpt"))  # for a warm final fit
        self.model.optimizer.learning_rate = self.learning_rate * self.decay_factor
        self.state.update(decay_epoch=self.state["best_epoch"], decay_started=epoch)

    def on_epoch_end(self, epoch, logs=None):
        if self._data is None:
            self._data = ValidationSet(self.model, self.data_dir, max(self.ks))
        result = validate(self.model, self.data_dir, self.ks, self._data)
        value = max(result[r][self.metric] for r in MODEL_RULES)
        rule = max(RULES, key=lambda r: result[r][self.metric])
        point = {"epoch": epoch + 1, "loss": float((logs or {}).get("loss", float("nan")))}
        for r in RULES:
            point.update({f"{r}/{k}": v for k, v in result[r].items() if k != "users"})
        self.state["curve"].append(point)
        decayed = self.state.get("decay_started", 0)
        if value > self.state["best"]:
            self.state.update(best=value, best_epoch=epoch + 1, rule=rule)
            # The optimizer too: the decayed phase continues from the best epoch's state, as
            # the final fit (`fit_schedule`) does.
            tf.train.Checkpoint(model=self.model, optimizer=self.model.optimizer).write(
                self.best_prefix
            )
        elif decayed and epoch + 1 - max(self.state["best_epoch"], decayed) >= self.decay_patience:
            self.model.stop_training = True
            self.state["stopped_early"] = True
        elif not decayed and epoch + 1 - self.state["best_epoch"] >= self.patience:
            if self.decays:
                self._decay(epoch + 1)
            else:
                self.model.stop_training = True
                self.state["stopped_early"] = True
        save_state(self.model_dir, self.state)
        if logs is not None:
            logs[f"val_{self.metric}"] = value

    def on_train_end(self, logs=None):
        restore_best(self.model, self.model_dir)


def load_state(model_dir: str) -> dict | None:
    path = os.path.join(model_dir, STATE_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def save_state(model_dir: str, state: dict) -> None:
    with tf.io.gfile.GFile(os.path.join(model_dir, STATE_FILE), "w") as f:
        f.write(json.dumps(state, indent=1))


def restore_best(model, model_dir: str, optimizer: bool = False, which: str = BEST_DIR) -> bool:
    """Loads `model_dir/best/` (or `which`: DROP_DIR) into `model` (and its optimizer's state,
    whose slots must exist); False when there is none."""
    prefix = os.path.join(model_dir, which, "ckpt")
    if not tf.io.gfile.exists(prefix + ".index"):
        return False
    if optimizer:
        ckpt = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
        ckpt.read(prefix).assert_existing_objects_matched()
    else:
        tf.train.Checkpoint(model=model).read(prefix).expect_partial()
    return True


def has_validation(data_dir: str) -> bool:
    """A validation split exists when eval/ holds examples and test/ holds the test queries."""
    return bool(tf.io.gfile.glob(os.path.join(data_dir, F.TEST, "*.tfrecord.gz"))) and bool(
        tf.io.gfile.glob(os.path.join(data_dir, F.EVAL, "*.tfrecord.gz"))
    )
