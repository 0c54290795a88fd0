"""Inference over a preprocessed split: batches, user vectors and exact top-K under the history
rules (what validation, evaluation, the figures and the test ranking share)."""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from sdm_tf.core import features as F
from sdm_tf.model.sdm import SDM
from sdm_tf.train import evaluation as E
from sdm_tf.train import ranks as R
from sdm_tf.train.data_dir import load_item_vocab
from sdm_tf.train.input import InputReader


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
    `history` (time-ordered) "excluded" (never returned) and the rules of `ranks.HEAD_RULES`
    (`history_rules.history_first`)."""
    index = {item: c for c, item in enumerate(vocab)}
    k = min(k, len(vocab))
    out: dict[str, list[list[str]]] = {}
    if kept:
        out["kept"] = []
    if history is not None:
        out.update({rule: [] for rule in ("excluded",) + R.HEAD_RULES})

    def left_out(start: int, stop: int) -> list[tuple[int, int]]:
        rows = history[start:stop]
        return [(r, index[i]) for r, row in enumerate(rows) for i in set(row) if i in index]

    for start, stop, kept_top, excl in R.ranked_blocks(
        model.item_table,
        model.output_bias,
        vecs,
        k,
        None if history is None else left_out,
        kept,
        block,
    ):
        if kept:
            out["kept"] += [[vocab[c] for c in row] for row in kept_top]
        if excl is None:
            continue
        excluded = [[vocab[c] for c in row if c != R.END] for row in excl]
        out["excluded"] += excluded
        for rule in R.HEAD_RULES:
            out[rule] += (
                E.history_first(h, ranked, k, rule)
                for h, ranked in zip(history[start:stop], excluded)
            )
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
    history_rule: one of `ranks.RULES` (`rank_rules`); overrides `exclude_seen`.
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
