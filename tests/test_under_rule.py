"""history_rules.under_rule and benchmarks/under_rule.py: lists under a history rule."""

import json

import pytest

from benchmarks import under_rule
from sdm_tf.core import history_rules as H
from sdm_tf.core.split_files import read_truth


def test_under_rule_by_hand():
    lists = {"u1": ["x", "a", "y", "z"], "u2": ["y", "x"]}
    # u1 saw a, b, a, c (in time order): most recent first c, a, b; most often a (twice), then
    # c before b (more recent). u2 has no history: its list as it was, cut to k.
    histories = {"u1": ["a", "b", "a", "c"]}
    assert H.under_rule(lists, histories, 4, "first") == {
        "u1": ["c", "a", "b", "x"],
        "u2": ["y", "x"],
    }
    assert H.under_rule(lists, histories, 5, "frequent") == {
        "u1": ["a", "c", "b", "x", "y"],
        "u2": ["y", "x"],
    }
    # The ranking rules leave every list as the system ranked it, whatever k.
    for rule in H.RANKING_RULES:
        assert H.under_rule(lists, histories, 1, rule) == lists
    with pytest.raises(ValueError, match="history rule must be one of"):
        H.under_rule(lists, histories, 4, "often")


def test_rewrite_keeps_order_and_fields(tmp_path):
    split = tmp_path / "split"
    split.mkdir()
    (split / "test_queries.csv").write_text(
        "user_id,item_id,timestamp\n7,10,1\n7,11,2\n7,10,3\n8,12,1\n"
    )
    pred = tmp_path / "pred.jsonl"
    pred.write_text(
        '{"user_id": 8, "items": ["13", "14", "15"]}\n'
        '{"user_id": 7, "items": ["12", "13"], "source": "itemcf"}\n'
    )
    out = tmp_path / "out.jsonl"
    assert under_rule.rewrite(str(split), str(pred), str(out), "frequent", k=3) == 2
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    # User 7 saw 10 twice, 11 once: 10, 11, then the list; user 8 saw 12. Ids stay as written.
    assert rows == [
        {"user_id": 8, "items": ["12", "13", "14"]},
        {"user_id": 7, "items": ["10", "11", "12"], "source": "itemcf"},
    ]
    assert read_truth(str(out)) == {"8": ["12", "13", "14"], "7": ["10", "11", "12"]}
