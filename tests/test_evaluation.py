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


def test_top_k_is_brute_force_with_exclusions():
    rng = np.random.default_rng(1)
    users, items, bias = rng.normal(size=(7, 4)), rng.normal(size=(30, 4)), rng.normal(size=30)
    exclude = [[0, 1, 2]] + [[] for _ in range(6)]
    got = E.top_k(users, items, bias, 5, exclude=exclude, block=3)
    scores = users @ items.T + bias
    scores[0, [0, 1, 2]] = -np.inf
    np.testing.assert_array_equal(got, np.argsort(-scores, axis=1, kind="stable")[:, :5])
