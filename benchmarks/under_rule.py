"""Any system's test lists under a history rule, as `bench_split` ranks its baselines.

docs/results.md reports the reference item-CF under the rules its own script does not have
("first", "frequent": the user's own items, most recent or most often seen first, then the
excluded ranking). This applies `history_rules.under_rule` to a predictions file with the split's
test queries as the histories, so those rows can be recomputed and scored with score.py:

    python ../shared/bench/itemcf.py SPLIT ref --exclude-seen
    python benchmarks/under_rule.py SPLIT ref.itemcf.jsonl ref.frequent.jsonl --rule frequent
    python ../shared/bench/score.py --truth SPLIT/test_truth.jsonl --pred ref.frequent.jsonl
"""

from __future__ import annotations

import argparse
import json
import os

from sdm_tf.core import history_rules as H
from sdm_tf.core.split_files import read_events

K = 100  # the reference's list length


def rewrite(split: str, pred_path: str, out_path: str, rule: str, k: int = K) -> int:
    """Writes `pred_path`'s lines with each "items" list under `rule`, in the same order and with
    their other fields; returns the number of lines."""
    histories = read_events(os.path.join(split, "test_queries.csv"))
    with open(pred_path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    lists = H.under_rule({str(r["user_id"]): r["items"] for r in rows}, histories, k, rule)
    with open(out_path, "w") as f:
        f.writelines(json.dumps({**r, "items": lists[str(r["user_id"])]}) + "\n" for r in rows)
    return len(rows)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("split", help="a prepare.py split (its test_queries.csv are the histories)")
    ap.add_argument("pred", help="predictions, one JSON line per user: user_id, items")
    ap.add_argument("out", help="where the lists under the rule go")
    rules = (*H.RANKING_RULES, *H.HEAD_ORDERS)
    ap.add_argument("--rule", choices=rules, default="first")
    ap.add_argument("--k", type=int, default=K, help="items per list")
    a = ap.parse_args(argv)
    print(json.dumps({"users": rewrite(a.split, a.pred, a.out, a.rule, a.k), "rule": a.rule}))


if __name__ == "__main__":
    main()
