"""benchmarks/nested_split.py: each user's last training event becomes the nested truth."""

import csv
import json

import pytest

from benchmarks import nested_split

COLUMNS = ["user_id", "item_id", "timestamp"]


def test_last_training_event_is_the_nested_truth(tmp_path):
    outer, nested = tmp_path / "outer", tmp_path / "nested"
    outer.mkdir()
    # u1's events out of time order in the file. u2 (one event) and u3 (two) are too short for
    # a validation target (sessions.split_loo): all their events stay training events.
    rows = [
        ("u1", "b", 120), ("u1", "a", 60), ("u2", "z", 5), ("u3", "y", 9), ("u1", "c", 180),
        ("u3", "x", 8),
    ]  # fmt: skip
    with open(outer / "events_train.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        w.writerows(rows)
    (outer / "split.json").write_text(json.dumps({"protocol": "loo", "train_events": 4}))
    info = nested_split.write(str(outer), str(nested))
    assert (info["train_events"], info["test_users"]) == (5, 1)
    for name in ("events_train.csv", "test_queries.csv"):
        got = [(r["user_id"], r["item_id"]) for r in csv.DictReader(open(nested / name))]
        assert got == [("u1", "a"), ("u1", "b"), ("u2", "z"), ("u3", "x"), ("u3", "y")]
    truth = [json.loads(x) for x in (nested / "test_truth.jsonl").read_text().splitlines()]
    assert truth == [{"user_id": "u1", "items": ["c"]}]


def test_only_leave_one_out_splits_nest(tmp_path):
    (tmp_path / "split.json").write_text(json.dumps({"protocol": "time"}))
    with pytest.raises(ValueError, match="needs 'loo'"):
        nested_split.write(str(tmp_path), str(tmp_path / "n"))
