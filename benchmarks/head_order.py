"""How to order the user's own items ahead of a ranking, measured on a run's validation split.

The "first" and "frequent" history rules (`core.history_rules`) put the user's own items, most
recently or most often seen first, ahead of the model's ranking without them. This asks
whether the model itself orders those items better, on the validation split only (eval/ of
`bench_split`'s data directory, and validation's best checkpoint in its model directory):

- first, frequent: the rules as they are;
- model: every history item, the model's highest score first (items outside the catalogue
  last, most recent first);
- first, model order: the same items as "first" (the k most recent), in the model's order.

Each head is followed by the model's ranking without the history ("excluded"), cut at k.

    python benchmarks/head_order.py RUN      # RUN: a bench_split --output_dir
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping, Sequence

from sdm_tf.core.history_rules import frequent_first, recent_first, with_head

KS = (20, 50)


def by_score(items: Sequence[str], score: Mapping[str, float]) -> list[str]:
    """`items`, the highest `score` first; items without a score (outside the catalogue) last;
    ties keep their order (sorted is stable)."""
    return sorted(items, key=lambda i: -score.get(i, float("-inf")))


def model_first(history: Sequence[str], score: Mapping[str, float]) -> list[str]:
    """Distinct items of a time-ordered history, the highest `score` first, the most recently
    seen first among equals."""
    return by_score(recent_first(history), score)


def recent_in_model_order(history: Sequence[str], score: Mapping[str, float], k: int) -> list[str]:
    """The k most recently seen distinct items ("first"'s head), the highest `score` first."""
    return by_score(recent_first(history)[:k], score)


def head_lists(
    history: Sequence[str], score: Mapping[str, float], ranked: Sequence[str], k: int
) -> dict[str, list[str]]:
    """One user's list under every order of the head, `ranked` (the excluded ranking) after."""
    heads = {
        "first": recent_first(history),
        "frequent": frequent_first(history),
        "model": model_first(history, score),
        "first, model order": recent_in_model_order(history, score, k),
    }
    return {name: with_head(head, ranked, k) for name, head in heads.items()}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", help="a bench_split --output_dir (data/ and model/)")
    args = parser.parse_args(argv)
    import numpy as np

    from sdm_tf.train import predict, training
    from sdm_tf.train import validation as V
    from sdm_tf.train.data_dir import load_item_vocab
    from sdm_tf.train.evaluation import retrieval_metrics

    data_dir, k = os.path.join(args.run, "data"), max(KS)
    model = training.restore(os.path.join(args.run, "model"))  # validation's best epoch
    vocab = load_item_vocab(data_dir)
    index = {item: c for c, item in enumerate(vocab)}
    batches = list(predict.eval_batches(data_dir, model.dataset, V.BATCH))  # eval/, once
    users, truth, history = predict.example_ids(batches)
    vecs = predict.tower_vectors(model, batches)
    excluded = predict.rank_rules(model, vocab, vecs, history, k, kept=False)["excluded"]
    table, bias = np.asarray(model.item_table), np.asarray(model.output_bias)
    lists: dict[str, dict[str, list[str]]] = {}
    for u, user in enumerate(users):
        cls = [index[i] for i in set(history[u]) if i in index]
        scores = table[cls] @ vecs[u] + bias[cls]
        score = {vocab[c]: float(s) for c, s in zip(cls, scores)}
        for name, items in head_lists(history[u], score, excluded[u], k).items():
            lists.setdefault(name, {})[user] = items
    gold = dict(zip(users, truth))
    rows = {name: retrieval_metrics(gold, preds, KS) for name, preds in lists.items()}
    keys = [f"{m}@{k_}" for k_ in KS for m in ("HitRate", "NDCG")]
    print(f"{len(users)} validation users; head order: " + " / ".join(keys))
    for name, metrics in rows.items():
        print(f"  {name:20s} " + " / ".join(f"{metrics[key]:.4f}" for key in keys))
    print(json.dumps({name: {key: m[key] for key in keys} for name, m in rows.items()}))


if __name__ == "__main__":
    main()
