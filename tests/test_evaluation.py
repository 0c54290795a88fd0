"""Metrics by hand, and against the benchmark's own scorer."""

import importlib.util
import math

import numpy as np
import pytest

from sdm_tf.train import evaluation as E
from tests.conftest import shared_path


def test_metrics_by_hand():
    truth = {"u1": ["a", "b"], "u2": ["c"]}
    pred = {"u1": ["a", "x", "b"], "u2": ["x", "y", "z"]}
    m = E.retrieval_metrics(truth, pred, [2])
    ndcg_u1 = 1.0 / (1.0 + 1.0 / math.log2(3))
    assert m["HitRate@2"] == 0.5
    assert m["Recall@2"] == 0.25
    assert m["Precision@2"] == 0.25
    assert m["F1@2"] == pytest.approx(0.25)  # u1: P = R = 0.5
    assert m["NDCG@2"] == pytest.approx(ndcg_u1 / 2)


def test_missing_user_scores_zero():
    m = E.retrieval_metrics({"u": ["a"]}, {}, [1])
    assert m["HitRate@1"] == 0.0 and m["users"] == 1


def test_metrics_agree_with_score_py():
    path = shared_path("bench", "score.py")
    spec = importlib.util.spec_from_file_location("score", path)
    score = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(score)
    rng = np.random.default_rng(0)
    items = [str(i) for i in range(60)]
    truth = {f"u{u}": list(rng.choice(items, rng.integers(1, 6), replace=False)) for u in range(50)}
    pred = {u: list(rng.choice(items, 30, replace=False)) for u in list(truth)[:45]}
    ours = E.retrieval_metrics(truth, pred, [5, 20])
    theirs = score.score(truth, pred, [5, 20])
    for key in ("HitRate@5", "Recall@20", "Precision@5", "F1@20", "NDCG@5", "NDCG@20"):
        assert ours[key] == pytest.approx(theirs[key], abs=1e-12), key


def test_empty_truth_is_left_out_not_a_division_by_zero():
    m = E.retrieval_metrics({"u": ["a"], "v": []}, {"u": ["a"], "v": ["a"]}, [1])
    assert m["users"] == 1 and m["users_without_truth"] == 1
    assert m["HitRate@1"] == 1.0 and m["NDCG@1"] == 1.0


def test_repeated_predictions_count_once():
    # ["a", "a", "b"] against {a, b} at K=3: hits a (rank 0) and b (rank 2) once each;
    # NDCG = (1 + 1/log2(4)) / (1 + 1/log2(3)) < 1 (counting "a" twice would exceed 1).
    m = E.retrieval_metrics({"u": ["a", "b"]}, {"u": ["a", "a", "b"]}, [3])
    assert m["Recall@3"] == 1.0 and m["Precision@3"] == pytest.approx(2 / 3)
    assert m["NDCG@3"] == pytest.approx((1 + 0.5) / (1 + 1 / math.log2(3)))
    m = E.retrieval_metrics({"u": ["a"]}, {"u": ["a", "a"]}, [2])
    assert m["NDCG@2"] == 1.0


def test_rank_never_returns_excluded_items_even_when_fewer_than_k_remain():
    import types

    import tensorflow as tf

    from sdm_tf.train import predict

    items = np.array([[1.0], [2.0], [3.0], [4.0], [5.0]], np.float32)
    model = types.SimpleNamespace(
        item_table=tf.constant(items), output_bias=tf.zeros([5], tf.float32)
    )
    vocab = ["a", "b", "c", "d", "e"]
    users = np.array([[1.0], [-1.0]], np.float32)
    got = predict.rank_rules(model, vocab, users, [["e", "d", "c"], []], 4, kept=False)["excluded"]
    assert got[0] == ["b", "a"]  # 2 left after the exclusion, best first
    assert got[1] == ["a", "b", "c", "d"]


def test_history_first_by_hand():
    history = ["a", "b", "a", "c"]  # time order: c last, then a, then b
    assert E.recent_first(history) == ["c", "a", "b"]
    ranked = ["x", "a", "y", "z"]  # a ranking may still hold history items: not twice
    assert E.history_first(history, ranked, 5) == ["c", "a", "b", "x", "y"]
    assert E.history_first(history, ranked, 2) == ["c", "a"]
    assert E.history_first([], ranked, 3) == ["x", "a", "y"]


def test_frequent_first_by_hand():
    history = ["a", "b", "a", "c", "b", "d"]  # a and b twice (b last at 4), c and d once
    assert E.frequent_first(history) == ["b", "a", "d", "c"]
    ranked = ["x", "c", "y"]
    assert E.history_first(history, ranked, 6, "frequent") == ["b", "a", "d", "c", "x", "y"]
    assert E.history_first(history, ranked, 6) == ["d", "b", "c", "a", "x", "y"]
    assert E.history_first(history, ranked, 1, "frequent") == ["b"]
    with pytest.raises(KeyError):
        E.history_first(history, ranked, 3, "often")
