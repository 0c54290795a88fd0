"""benchmarks/head_order.py: the head orders, on a history worked out by hand."""

import pytest

from benchmarks import head_order as H

# Time order: a, b, a, c, d; d is outside the catalogue (no score).
HISTORY = ["a", "b", "a", "c", "d"]
SCORE = {"a": 0.5, "b": 2.0, "c": 1.0}


def test_model_first_orders_by_score_unscored_last():
    assert H.model_first(HISTORY, SCORE) == ["b", "c", "a", "d"]


def test_recent_in_model_order_keeps_firsts_items():
    # "first"'s head at k = 3 is d, c, a (b is the 4th most recent): reordered by score.
    assert H.recent_in_model_order(HISTORY, SCORE, 3) == ["c", "a", "d"]


def test_ties_keep_recency():
    assert H.model_first(["x", "y"], {"x": 1.0, "y": 1.0}) == ["y", "x"]


def test_head_lists_put_the_ranking_after_the_head():
    lists = H.head_lists(HISTORY, SCORE, ranked=["e", "b", "f"], k=6)
    assert lists["first"] == ["d", "c", "a", "b", "e", "f"]
    assert lists["frequent"] == ["a", "d", "c", "b", "e", "f"]  # a seen twice
    assert lists["model"] == ["b", "c", "a", "d", "e", "f"]
    assert lists["first, model order"] == ["b", "c", "a", "d", "e", "f"]


@pytest.mark.parametrize("k", [1, 2])
def test_lists_are_cut_at_k(k):
    lists = H.head_lists(HISTORY, SCORE, ranked=["e"], k=k)
    assert lists["model"] == ["b", "c"][:k]
    assert all(len(items) == k for items in lists.values())
