"""Where two systems part: their metrics on slices of a split's users.

A system that is level with another overall can win one kind of user and lose another. This
scores prediction files (score.py's format) on slices of the split's test users, with the
project's metrics (`evaluation.retrieval_metrics`, the same numbers as score.py):

- "query events": how many events the user's query has;
- "truth's training count": how often the (first) truth item occurs in the training events;
- "truth follows the last query item": whether some training sequence has the query's last
  item immediately followed by a truth item, the pattern item-CF remembers exactly.

With two or more systems, "share" is each slice's part of the overall difference between the
first two (their difference on the slice, times its share of the users). To compare on
validation, score a nested split (benchmarks/nested_split.py) with predictions for its targets:

    python -m launch.evaluate --data_dir RUN/data --model_dir RUN/model --examples eval \\
        --exclude_fed --output_dir val
    python ../shared/bench/itemcf.py NESTED ref --exclude-seen
    python benchmarks/slices.py NESTED val/predictions.jsonl ref.itemcf.jsonl \\
        --names SDM item-CF --k 20
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence

from sdm_tf.core.split_files import read_events, read_truth
from sdm_tf.train.evaluation import retrieval_metrics

QUERY_EDGES = (0, 4, 5, 6, 8, 12)
COUNT_EDGES = (0, 1, 5, 10, 20, 50, 100)
SLICES = ("query events", "truth's training count", "truth follows the last query item")


def bucket(value: int, edges: Sequence[int]) -> str:
    """The label of the interval of `edges` (ascending lower bounds) that holds `value`:
    "a–b" for [a, b], "a" for a one-value interval, "a+" for the last."""
    if value < edges[0]:
        raise ValueError(f"{value} is below the first edge {edges[0]}")
    for lo, hi in zip(edges, edges[1:]):
        if value < hi:
            return str(lo) if hi == lo + 1 else f"{lo}–{hi - 1}"
    return f"{edges[-1]}+"


def user_slices(
    train: Mapping[str, Sequence[str]],
    queries: Mapping[str, Sequence[str]],
    truth: Mapping[str, Sequence[str]],
) -> dict[str, dict[str, str]]:
    """user -> {slice name: the user's label} for every user of `truth` with a truth item.
    `train` and `queries`: each user's items in time order."""
    counts = Counter(i for items in train.values() for i in items)
    pairs = {pair for items in train.values() for pair in zip(items, items[1:])}
    out = {}
    for user, gold in truth.items():
        if not gold:
            continue
        query = queries.get(user, [])
        follows = bool(query) and any((query[-1], g) in pairs for g in gold)
        out[user] = {
            SLICES[0]: bucket(len(query), QUERY_EDGES),
            SLICES[1]: bucket(counts[gold[0]], COUNT_EDGES),
            SLICES[2]: "yes" if follows else "no",
        }
    return out


def compare(
    truth: Mapping[str, Sequence[str]],
    systems: Mapping[str, Mapping[str, Sequence[str]]],
    slices: Mapping[str, Mapping[str, str]],
    k: int,
) -> list[dict]:
    """One row per (slice, label), labels in ascending order: users, each system's HitRate@k
    and NDCG@k, and with two or more systems `share`, the label's part of the first two
    systems' NDCG@k difference over all users of `slices`."""
    total = len(slices)
    names = list(systems)
    rows = []
    for name in SLICES:
        labels = sorted({s[name] for s in slices.values()}, key=_label_order)
        for label in labels:
            users = {u: truth[u] for u, s in slices.items() if s[name] == label}
            row: dict = {"slice": name, "label": label, "users": len(users)}
            for system, preds in systems.items():
                m = retrieval_metrics(users, preds, [k])
                row[system] = {f"HitRate@{k}": m[f"HitRate@{k}"], f"NDCG@{k}": m[f"NDCG@{k}"]}
            if len(names) > 1:
                a, b = (row[n][f"NDCG@{k}"] for n in names[:2])
                row["share"] = (a - b) * len(users) / total
            rows.append(row)
    return rows


def _label_order(label: str) -> tuple[int, str]:
    head = label.split("–")[0].rstrip("+")
    return (int(head), label) if head.isdigit() else (-1, label)


def format_rows(rows: Sequence[dict], names: Sequence[str], k: int) -> str:
    head = f"{'slice':<36}{'label':>8}{'users':>8}"
    head += "".join(f"{n[:10] + ' HR':>14}{n[:10] + ' NDCG':>16}" for n in names)
    head += f"{'share':>10}" if len(names) > 1 else ""
    lines = [f"HitRate@{k} / NDCG@{k} by slice", head]
    for r in rows:
        line = f"{r['slice']:<36}{r['label']:>8}{r['users']:>8}"
        line += "".join(f"{r[n][f'HitRate@{k}']:>14.4f}{r[n][f'NDCG@{k}']:>16.4f}" for n in names)
        line += f"{r['share']:>+10.4f}" if "share" in r else ""
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("split", help="a prepare.py split: events_train.csv, test_queries.csv, truth")
    ap.add_argument("pred", nargs="+", help="predictions, one JSON line per user: user_id, items")
    ap.add_argument("--names", nargs="+", help="a name per predictions file (default: the files)")
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args(argv)
    names = args.names or args.pred
    if len(names) != len(args.pred) or len(set(names)) != len(names):
        ap.error("--names needs one distinct name per predictions file")
    truth = read_truth(os.path.join(args.split, "test_truth.jsonl"))
    train = read_events(os.path.join(args.split, "events_train.csv"))
    queries = read_events(os.path.join(args.split, "test_queries.csv"))
    systems = {n: read_truth(p) for n, p in zip(names, args.pred)}
    rows = compare(truth, systems, user_slices(train, queries, truth), args.k)
    print(format_rows(rows, names, args.k))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
