"""The files of a split written by `../shared/bench/prepare.py` (plain Python; local files).

`events_train.csv` and `test_queries.csv`: one row per event, each user's events in time order;
`test_truth.jsonl`: one line per test user, `{"user_id": ..., "items": [...]}`.
"""

from __future__ import annotations

import csv
import json


def read_truth(path: str) -> dict[str, list[str]]:
    """user -> the items of a JSON-lines file of `user_id` and `items` (truth or predictions)."""
    out = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                out[str(row["user_id"])] = [str(i) for i in row["items"]]
    return out


def read_events(path: str) -> dict[str, list[str]]:
    """user -> item ids in file order (prepare.py writes each user's events in time order)."""
    out: dict[str, list[str]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            out.setdefault(row["user_id"], []).append(row["item_id"])
    return out
