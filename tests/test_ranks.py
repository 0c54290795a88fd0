"""Validation's metrics from the truth items' positions: by hand, and the same numbers as
`evaluation.retrieval_metrics` over `predict.rank_rules`' lists."""

import math
import types

import numpy as np
import pytest
import tensorflow as tf

from sdm_tf.train import evaluation as E
from sdm_tf.train import predict
from sdm_tf.train import ranks as R


def test_metrics_from_positions_by_hand():
    # User 0 hit at the top, user 1 at position 3, user 2 missed; user 3 has two truth items,
    # one at position 1 and one missed; user 4 has none (not scored).
    ranks = np.array([[0, np.inf], [3, np.inf], [np.inf, np.inf], [1, np.inf], [np.inf] * 2])
    n_gold = np.array([1, 1, 1, 2, 0])
    m = R.metrics(ranks, n_gold, (1, 5))
    assert m["users"] == 4 and m["users_without_truth"] == 1
    assert m["HitRate@1"] == pytest.approx(1 / 4)
    assert m["HitRate@5"] == pytest.approx(3 / 4)
    assert m["Recall@5"] == pytest.approx((1 + 1 + 0 + 1 / 2) / 4)
    assert m["Precision@5"] == pytest.approx((1 / 5 + 1 / 5 + 0 + 1 / 5) / 4)
    f1 = lambda p, r: 2 * p * r / (p + r)  # noqa: E731
    assert m["F1@5"] == pytest.approx((f1(1 / 5, 1) * 2 + f1(1 / 5, 1 / 2)) / 4)
    user3 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))  # ideal: both truth items on top
    assert m["NDCG@5"] == pytest.approx((1 + 1 / math.log2(5) + 0 + user3) / 4)


def test_same_numbers_as_the_ranked_lists():
    rng = np.random.default_rng(3)
    items, dim, users, k = 40, 4, 300, 7
    table = rng.normal(size=[items, dim]).astype(np.float32)
    table[10] = table[3]  # ties: the lower class must come first, as top_k puts it
    table[11] = table[3]
    model = types.SimpleNamespace(
        item_table=tf.constant(table), output_bias=tf.constant(np.zeros(items, np.float32))
    )
    vocab = [f"i{c}" for c in range(items)]
    pool = [*vocab, "oov1", "oov2"]  # items outside the catalogue in truth and history
    truth = [list(rng.choice(pool, rng.integers(0, 4))) for _ in range(users)]
    truth[0] = [vocab[3], vocab[3]]  # a repeated truth item counts once
    history = [list(rng.choice(pool, rng.integers(0, 12))) for _ in range(users)]
    history[1] = [vocab[c] for c in range(items - 2)]  # "excluded" ends early
    vecs = rng.normal(size=[users, dim]).astype(np.float32)
    vecs[2] = table[3]  # scores the three tied items first: 3, 10, 11 in that order
    truth[2] = [vocab[11]]
    q = R.Queries.build(vocab, truth, history, k)
    got = R.rule_metrics(model.item_table, model.output_bias, vecs, q, (3, k))
    lists = predict.rank_rules(model, vocab, vecs, history, k, block=64)
    ids = [f"u{u}" for u in range(users)]
    for rule in R.RULES:
        want = E.retrieval_metrics(dict(zip(ids, truth)), dict(zip(ids, lists[rule])), (3, k))
        assert got[rule] == pytest.approx(want, abs=1e-12), rule
    with pytest.raises(ValueError, match="lists of 7 items"):
        R.rule_metrics(model.item_table, model.output_bias, vecs, q, (20,))


@pytest.mark.parametrize("max_extra", [R.MAX_EXTRA, 0])  # one deeper top_k, or a second one
def test_ranked_blocks_against_numpy(max_extra, monkeypatch):
    """The shared top-k by hand: blocks, ties to the lower class, left-out cells (one given
    twice), early ends."""
    monkeypatch.setattr(R, "MAX_EXTRA", max_extra)
    rng = np.random.default_rng(5)
    items, dim, users, k = 30, 3, 50, 8
    table = rng.normal(size=[items, dim]).astype(np.float32)
    table[2] = table[7] = [10.0, 0.0, 0.0]  # a tie: 2 before 7
    bias = rng.normal(size=[items]).astype(np.float32)
    bias[7] = bias[2]
    vecs = rng.normal(size=[users, dim]).astype(np.float32)
    vecs[0] = [1.0, 0.0, 0.0]  # scores the tied pair first
    seen = {u: {int(c) for c in rng.choice(items, rng.integers(0, 5))} for u in range(users)}
    seen[1] = set(range(items - 3))  # 3 classes left: the list ends early
    seen[20] = set()

    def left_out(start, stop):
        cells = [(u - start, c) for u in range(start, stop) for c in sorted(seen[u])]
        return cells + cells[:1]

    blocks = list(
        R.ranked_blocks(tf.constant(table), tf.constant(bias), vecs, k, left_out, True, 16)
    )
    assert [(a, b) for a, b, _, _ in blocks] == [(0, 16), (16, 32), (32, 48), (48, 50)]
    kept = np.concatenate([b[2] for b in blocks])
    excluded = np.concatenate([b[3] for b in blocks])
    scores = (tf.matmul(vecs, table, transpose_b=True) + bias).numpy()
    order = np.argsort(-scores, axis=1, kind="stable")
    np.testing.assert_array_equal(kept, order[:, :k])
    assert list(kept[0][:2]) == [2, 7]
    for u in range(users):
        want = [c for c in order[u] if c not in seen[u]][:k]
        assert list(excluded[u]) == want + [R.END] * (k - len(want)), u
    assert list(excluded[1]) == [*order[1][np.isin(order[1], [27, 28, 29])], R.END, R.END, R.END,
                                 R.END, R.END]  # fmt: skip
    assert [b[3] for b in R.ranked_blocks(table, bias, vecs, k, None, False, 64)] == [None]
    with pytest.raises(ValueError, match="lists of 31 items from a catalogue of 30"):
        next(R.ranked_blocks(table, bias, vecs, items + 1, None))
