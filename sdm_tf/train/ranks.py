"""Validation's metrics under every history rule, in class ids, without building ranked lists.

`predict.rank_rules` ranks raw item ids for the predictions a test run writes; validation only
needs where each truth item lands. Everything that no epoch changes (the truth items' classes,
the history cells to leave out, where the "first" and "frequent" rules put the user's own
items) is worked out once (`Queries`); an epoch then costs one scoring pass and one `top_k` a
block. The metrics are `evaluation.retrieval_metrics` over `rank_rules`' lists, the same numbers
(a test checks it), in less time: on Beauty's 22,363 validation users, ranking and metrics took
1.1 s an epoch instead of 2.2–2.5 s, and with one `top_k` a block 1.0 s instead of 1.5 on a
later, slower machine (docs/performance.md).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from sdm_tf.core.history_rules import HEAD_ORDERS, RANKING_RULES

HEAD_RULES = tuple(HEAD_ORDERS)  # "first", "frequent": the user's own items, then "excluded"
RULES = (*RANKING_RULES, *HEAD_RULES)  # those of `validation.RULES`, in that order


@dataclasses.dataclass(frozen=True)
class Queries:
    """The validation users' truth and history, in class ids, for lists of `k` items.

    gold [U, G]: each distinct truth item's class, -1 for padding or an item outside the
      catalogue (no ranking of the model can return it);
    head_pos {rule: [U, G]}: for each rule of `HEAD_RULES`, its position among the user's own
      items (the history in the rule's order, cut at k; items outside the catalogue
      included), inf if not there;
    head_len [U]: how many items of those lists are the user's own (the same for every rule of
      `HEAD_RULES`);
    n_gold [U]: distinct truth items (0: the user cannot be scored);
    seen [N, 2]: (user, class) of every history item in the catalogue (left out by every rule
      but "kept");
    k: the lists' length (at most `items`, the catalogue's size).
    """

    gold: np.ndarray
    head_pos: dict[str, np.ndarray]
    head_len: np.ndarray
    n_gold: np.ndarray
    seen: np.ndarray
    k: int
    items: int

    @classmethod
    def build(
        cls,
        vocab: Sequence[str],
        truth: Sequence[Sequence[str]],
        history: Sequence[Sequence[str]],
        k: int,
    ) -> Queries:
        index = {item: c for c, item in enumerate(vocab)}
        k = min(k, len(vocab))
        golds = [list(dict.fromkeys(t)) for t in truth]
        width = max([len(g) for g in golds] + [1])
        gold = np.full([len(golds), width], -1, np.int64)
        head_pos = {rule: np.full([len(golds), width], np.inf) for rule in HEAD_RULES}
        head_len = np.zeros(len(golds), np.int64)
        seen = []
        for u, (g, h) in enumerate(zip(golds, history)):
            for j, item in enumerate(g):
                gold[u, j] = index.get(item, -1)
            head_len[u] = min(k, len(set(h)))  # every head rule lists each distinct item once
            for rule in HEAD_RULES:
                head = {item: p for p, item in enumerate(HEAD_ORDERS[rule](h)[:k])}
                for j, item in enumerate(g):
                    head_pos[rule][u, j] = head.get(item, np.inf)
            seen += [(u, index[i]) for i in set(h) if i in index]
        seen_array = np.array(seen, np.int64).reshape([-1, 2])
        n_gold = np.array([len(g) for g in golds], np.int64)
        return cls(gold, head_pos, head_len, n_gold, seen_array, k, len(vocab))


def _positions(top: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Where each gold class is in its row of `top` [b, k]: [b, G] floats, inf if absent."""
    eq = top[:, np.newaxis, :] == gold[:, :, np.newaxis]  # [b, G, k]
    return np.where(eq.any(-1), eq.argmax(-1), np.inf)


# A `ranked_blocks` list ends before k here; never a class, nor `Queries.gold`'s padding (-1).
END = -2
# Beauty's validation users leave out at most 202 cells (median 4; its ranking 1.5 -> 1.0 s an
# epoch with one top_k); MovieLens' up to 991 (median 62), where the deeper top_k costs more.
MAX_EXTRA = 256


@tf.function(reduce_retracing=True)
def _scores(vecs: tf.Tensor, table: tf.Tensor, bias: tf.Tensor) -> tf.Tensor:
    # Traced, so the bias add fuses into the matmul (one pass over the [b, C] scores, not two).
    return tf.nn.bias_add(tf.matmul(vecs, table, transpose_b=True), bias)


def _without(top: np.ndarray, cells: np.ndarray, num_classes: int, k: int) -> np.ndarray:
    """The first `k` classes of each row of `top` [b, K] that are not among its `cells`
    [(row, class)], in order; END where fewer are left."""
    keys = cells[:, 0] * num_classes + cells[:, 1]  # int64, as `ranked_blocks` made them
    rows = np.arange(len(top), dtype=np.int64)[:, np.newaxis]
    out = np.isin(rows * num_classes + top, keys)  # [b, K]: left out
    order = np.argsort(out, axis=1, kind="stable")[:, :k]  # the kept cells first, in order
    picked = np.take_along_axis(top, order, 1)
    return np.where(np.take_along_axis(out, order, 1), END, picked)


def ranked_blocks(
    table: tf.Tensor,
    bias: tf.Tensor,
    vecs: np.ndarray,
    k: int,
    left_out: Callable[[int, int], Sequence] | None,
    kept: bool = True,
    block: int = 2048,
):
    """The exact top-`k` classes of `vecs` [U, d] under the history rules, `block` users at a
    time: yields (start, stop, kept [b, k] or None unless `kept`, excluded [b, k] or None
    when `left_out` is None). `left_out(start, stop)`: the (row in the block, class) cells to
    leave out; `excluded` holds END where fewer than k classes are left. One scoring pass and
    one `top_k` a block: the excluded list is the top k + (the most cells a row leaves out)
    without the left-out cells, which is the top k of what is left (ties go to the lower class,
    as `top_k` breaks them). Where a row leaves out more than `MAX_EXTRA` cells, a second
    `top_k` over the scores with those cells at −inf (a copy of the block's scores) is cheaper
    than sorting that much deeper: the same lists."""
    num_classes = int(table.shape[0])
    if k > num_classes:
        raise ValueError(f"lists of {k} items from a catalogue of {num_classes} classes")
    for start in range(0, len(vecs), block):
        stop = min(start + block, len(vecs))
        scores = _scores(tf.constant(vecs[start:stop]), table, bias)
        if left_out is None:
            yield start, stop, tf.math.top_k(scores, k)[1].numpy() if kept else None, None
            continue
        cells = np.asarray(left_out(start, stop), np.int64).reshape(-1, 2)
        widest = int(np.bincount(cells[:, 0]).max()) if len(cells) else 0
        if widest <= MAX_EXTRA:  # one top_k of k + widest, the left-out cells dropped after
            top = tf.math.top_k(scores, min(num_classes, k + widest))[1].numpy()
            yield start, stop, top[:, :k] if kept else None, _without(top, cells, num_classes, k)
            continue
        kept_top = tf.math.top_k(scores, k)[1].numpy() if kept else None
        scores = tf.tensor_scatter_nd_update(
            scores, tf.constant(cells, tf.int32), tf.fill([len(cells)], -np.inf)
        )
        values, top = (t.numpy() for t in tf.math.top_k(scores, k))
        yield start, stop, kept_top, np.where(values == -np.inf, END, top)


def rule_ranks(
    table: tf.Tensor, bias: tf.Tensor, vecs: np.ndarray, q: Queries, block: int = 2048
) -> dict[str, np.ndarray]:
    """Each gold item's 0-based position in the k-list of every rule: {rule: [U, G]}, inf where
    the list does not hold it. The lists are `ranked_blocks`', as `predict.rank_rules`' are."""
    out = {rule: np.full(q.gold.shape, np.inf) for rule in RULES}

    def left_out(start: int, stop: int) -> np.ndarray:
        return q.seen[(q.seen[:, 0] >= start) & (q.seen[:, 0] < stop)] - [start, 0]

    for start, stop, kept, excl in ranked_blocks(table, bias, vecs, q.k, left_out, True, block):
        gold = q.gold[start:stop]
        out["kept"][start:stop] = _positions(kept, gold)
        excluded = _positions(excl, gold)
        out["excluded"][start:stop] = excluded
        behind = q.head_len[start:stop, np.newaxis] + excluded  # after the user's own items
        for rule in HEAD_RULES:
            head = q.head_pos[rule][start:stop]
            out[rule][start:stop] = np.where(np.isfinite(head), head, behind)
    return out


def metrics(ranks: np.ndarray, n_gold: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    """`evaluation.retrieval_metrics` from the gold items' positions [U, G] (inf: not listed).
    Per-user values are summed in user order, as there."""
    scored = n_gold > 0
    ranks, n_gold = ranks[scored], n_gold[scored]
    out: dict[str, float] = {
        "users": int(scored.sum()),
        "users_without_truth": int((~scored).sum()),
    }
    top = max(ks)
    discount = np.array([1 / math.log2(r + 2) for r in range(top)] + [0.0])
    ideal = np.array([sum(1 / math.log2(r + 2) for r in range(n)) for n in range(top + 1)])
    m = max(len(n_gold), 1)

    def mean(values: np.ndarray) -> float:
        return float(np.cumsum(values)[-1]) / m if len(values) else 0.0  # sequential, as there

    for k in ks:
        hit = ranks < k
        n = hit.sum(1)
        r, p = n / n_gold, n / k
        dcg = np.where(hit, discount[np.where(hit, ranks, top).astype(np.int64)], 0.0).sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = np.where(n > 0, 2 * p * r / (p + r), 0.0)
        out[f"HitRate@{k}"] = mean((n > 0).astype(np.float64))
        out[f"Recall@{k}"] = mean(r)
        out[f"Precision@{k}"] = mean(p)
        out[f"F1@{k}"] = mean(f1)
        out[f"NDCG@{k}"] = mean(dcg / ideal[np.minimum(k, n_gold)])
    return out


def rule_metrics(
    table: tf.Tensor, bias: tf.Tensor, vecs: np.ndarray, q: Queries, ks: Sequence[int]
) -> dict[str, dict[str, float]]:
    """{rule: metrics} for every rule of `RULES`; `q` built for lists of max(ks) items."""
    if max(ks) > q.k and q.k < q.items:
        raise ValueError(f"queries built for lists of {q.k} items; metrics at {max(ks)} asked")
    return {rule: metrics(r, q.n_gold, ks) for rule, r in rule_ranks(table, bias, vecs, q).items()}
