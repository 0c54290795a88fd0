"""Offline evaluation: exact top-K retrieval and the paper's metrics (§4.2.1) plus NDCG.

The metric definitions are those of `../shared/bench/score.py`, averaged over test users:

* HitRate@K: 1 if any of the top K is a ground-truth item;
* Recall@K = |top K ∩ truth| / |truth|;  Precision@K = |top K ∩ truth| / K;
* F1@K = 2 P R / (P + R) (0 without a hit);
* NDCG@K with binary relevance, ideal DCG over min(K, |truth|) hits.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence

from sdm_tf.core.history_rules import (  # noqa: F401  (the rules, here too)
    frequent_first,
    history_first,
    recent_first,
)


def retrieval_metrics(
    truth: Mapping[str, Sequence[str]],
    predictions: Mapping[str, Sequence[str]],
    ks: Iterable[int] = (20, 50, 100),
) -> dict[str, float]:
    """Metrics over every user in `truth`; a user without predictions scores zero.

    A user whose truth is empty cannot be scored: left out of the averages and counted in
    `users_without_truth`. A repeated prediction counts once, in hits and in NDCG alike.
    """
    ks = list(ks)
    scored = {u: gold for u, gold in truth.items() if gold}
    out: dict[str, float] = {"users": len(scored), "users_without_truth": len(truth) - len(scored)}
    sums = {(name, k): 0.0 for k in ks for name in ("HitRate", "Recall", "Precision", "F1", "NDCG")}
    for user, gold in scored.items():
        gold_set = set(gold)
        ranked = list(predictions.get(user, []))
        for k in ks:
            top = ranked[:k]
            first = {i: rank for rank, i in reversed(list(enumerate(top)))}  # first position
            n = sum(1 for i in first if i in gold_set)
            r, p = n / len(gold_set), n / k
            sums["HitRate", k] += 1.0 if n else 0.0
            sums["Recall", k] += r
            sums["Precision", k] += p
            sums["F1", k] += 2 * p * r / (p + r) if n else 0.0
            dcg = sum(1 / math.log2(rank + 2) for i, rank in first.items() if i in gold_set)
            ideal = sum(1 / math.log2(rank + 2) for rank in range(min(k, len(gold_set))))
            sums["NDCG", k] += dcg / ideal
    m = max(len(scored), 1)
    for (name, k), v in sums.items():
        out[f"{name}@{k}"] = v / m
    return out


def format_table(rows: Mapping[str, Mapping[str, float]], ks: Sequence[int]) -> str:
    """A metrics table: one row per system, HitRate/Recall/Precision/F1/NDCG per K."""
    names = ("HitRate", "Recall", "Precision", "F1", "NDCG")
    cols = [f"{n}@{k}" for k in ks for n in names]
    width = max(len(r) for r in rows) + 2
    lines = [" " * width + " ".join(f"{c:>12}" for c in cols)]
    for system, m in rows.items():
        lines.append(f"{system:<{width}}" + " ".join(f"{m[c]:>12.4f}" for c in cols))
    return "\n".join(lines)


def write_predictions(path: str, predictions: Mapping[str, Sequence[str]]) -> None:
    """predictions.jsonl in score.py's format: {"user_id": ..., "items": [...]} per line."""
    import tensorflow as tf

    with tf.io.gfile.GFile(path, "w") as f:
        for user, items in predictions.items():
            f.write(json.dumps({"user_id": user, "items": list(items)}) + "\n")
