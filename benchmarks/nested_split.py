"""A nested split of a leave-one-out split, to compare settings without the test split.

Each user's last training event becomes the nested split's test truth, and the rest of their
training events are its training events and test queries. These truths are the targets that
`bench_split` holds out for validation on the outer split, so scoring them reads no test
split. A default `bench_split` on the nested split then carves its own validation one event
earlier. docs/results.md compares final fits this way.

    python benchmarks/nested_split.py OUTER_SPLIT NESTED_SPLIT
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil

from sdm_tf.core import sessions as S


def nest(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """(training events without each user's last one, truth: that event's item per user), by
    the rule of validation's own split (`sessions.split_loo`): a user with too few events gives
    no truth and keeps all of them for training. Users keep their file order; events are ordered
    by timestamp (stable for ties)."""
    per_user: dict[str, list[dict]] = {}
    for r in rows:
        per_user.setdefault(r["user_id"], []).append(r)
    train, truth = [], []
    for user, events in per_user.items():
        events = sorted(events, key=lambda r: int(r["timestamp"]))
        if len(events) < S.LOO_MIN_EVENTS:  # as validation: no target, every event trains
            train += events
            continue
        train += events[:-1]
        truth.append({"user_id": user, "items": [events[-1]["item_id"]]})
    return train, truth


def write(outer: str, nested: str) -> dict:
    with open(os.path.join(outer, "split.json")) as f:
        info = json.load(f)
    if info.get("protocol") != "loo":
        raise ValueError(f"{outer} is a {info.get('protocol')!r} split; nesting needs 'loo'")
    with open(os.path.join(outer, "events_train.csv"), newline="") as f:
        reader = csv.DictReader(f)
        columns, rows = reader.fieldnames, list(reader)
    train, truth = nest(rows)
    os.makedirs(nested, exist_ok=True)
    for name in ("events_train.csv", "test_queries.csv"):
        with open(os.path.join(nested, name), "w", newline="") as f:
            w = csv.DictWriter(f, columns)
            w.writeheader()
            w.writerows(train)
    with open(os.path.join(nested, "test_truth.jsonl"), "w") as f:
        f.writelines(json.dumps(t) + "\n" for t in truth)
    if os.path.exists(os.path.join(outer, "items.csv")):
        shutil.copy(os.path.join(outer, "items.csv"), os.path.join(nested, "items.csv"))
    info.update(
        train_events=len(train),
        test_users=len(truth),
        truth_items=len(truth),
        nested_of=f"{outer} (test: its validation targets)",
    )
    with open(os.path.join(nested, "split.json"), "w") as f:
        json.dump(info, f, indent=1)
    return info


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("outer", help="a prepare.py leave-one-out split")
    ap.add_argument("nested", help="where the nested split goes")
    a = ap.parse_args(argv)
    print(json.dumps(write(a.outer, a.nested)))


if __name__ == "__main__":
    main()
