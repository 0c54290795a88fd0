"""Train and score SDM on any split written by `../shared/bench/prepare.py`.

The split's files go through the project's own pipeline: `events_train.csv` (+ `items.csv`) make
the training examples and vocabularies; `test_queries.csv` supplies each test user's history, fed
as that user's latest session plus long-term bags by the same session rules; `test_truth.jsonl`
is the ground truth. Then it trains, writes the top-K for every test user to predictions.jsonl
and scores them (with the split's `score.py` when one is found, and always with the same metrics
from `sdm_tf.evaluation`).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence

from sdm_tf import config as C
from sdm_tf import evaluation as E
from sdm_tf import training


def read_truth(path: str) -> dict[str, list[str]]:
    out = {}
    with open(path) as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                out[str(row["user_id"])] = [str(i) for i in row["items"]]
    return out


def read_histories(path: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            out.setdefault(row["user_id"], set()).add(row["item_id"])
    return out


def preprocess_split(split: str, data_dir: str, extra_args: Sequence[str] = ()) -> dict:
    from pipelines import preprocess

    args = [
        "--format=csv",
        f"--input={os.path.join(split, 'events_train.csv')}",
        "--eval_protocol=queries",
        f"--queries={os.path.join(split, 'test_queries.csv')}",
        f"--truth={os.path.join(split, 'test_truth.jsonl')}",
        f"--output_dir={data_dir}",
        # prepare.py already applied the paper's filters to the whole data set; counting again
        # on the training part alone would drop items that the test users need.
        "--min_item_count=1",
        "--max_user_events=0",
        *extra_args,
    ]
    items = os.path.join(split, "items.csv")
    if os.path.exists(items):
        args.append(f"--item_table={items}")
    return preprocess.run(args)


def default_score_script() -> str | None:
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(os.path.dirname(repo), "shared", "bench", "score.py")
    return path if os.path.exists(path) else None


def run(
    split: str,
    output_dir: str,
    cfg: C.ExperimentConfig,
    exclude_seen: str = "auto",
    score_script: str | None = None,
    ks: Sequence[int] = (20, 50, 100),
    preprocess_args: Sequence[str] = (),
    verbose: int | str = 2,
) -> dict:
    """Preprocess, train, predict and score one split. Returns a summary dict."""
    t0 = time.perf_counter()
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(split, "split.json")) as f:
        split_info = json.load(f)
    data_dir = os.path.join(output_dir, "data")
    stats = preprocess_split(split, data_dir, preprocess_args)
    t1 = time.perf_counter()
    result = training.train(cfg, data_dir, os.path.join(output_dir, "model"), verbose=verbose)
    model = result.pop("model")
    t2 = time.perf_counter()
    if exclude_seen == "auto":
        # Leave-one-out targets are new items by construction (ratings, reviews); the time
        # protocol's truth may repeat what was seen earlier that day.
        exclude_seen = "yes" if split_info.get("protocol") == "loo" else "no"
    histories = (
        read_histories(os.path.join(split, "test_queries.csv")) if exclude_seen == "yes" else None
    )
    _, predictions, _ = training.evaluate(model, data_dir, ks, exclude_items=histories)
    truth = read_truth(os.path.join(split, "test_truth.jsonl"))
    # Test users without a usable history get the most popular items.
    popular = training.load_item_vocab(data_dir)
    k = max(ks)
    for user in truth:
        if user not in predictions:
            seen = histories.get(user, set()) if histories else set()
            predictions[user] = [i for i in popular[: k + len(seen)] if i not in seen][:k]
    pred_path = os.path.join(output_dir, "predictions.jsonl")
    E.write_predictions(pred_path, {u: predictions[u] for u in truth})
    metrics = E.retrieval_metrics(truth, predictions, ks)
    t3 = time.perf_counter()
    summary = {
        "split": split_info,
        "preprocess_stats": {k_: stats[k_] for k_ in ("train_examples", "eval_examples", "items")},
        "exclude_seen": exclude_seen,
        "metrics": metrics,
        "train": {k_: v for k_, v in result.items() if k_ != "history"},
        "final_loss": result["history"].get("loss", [None])[-1] if result["history"] else None,
        "seconds": {
            "preprocess": t1 - t0,
            "train": t2 - t1,
            "predict": t3 - t2,
            "total": t3 - t0,
        },
        "config": cfg.to_dict(),
    }
    score_script = score_script or default_score_script()
    if score_script:
        out = subprocess.run(
            [
                sys.executable,
                score_script,
                "--truth",
                os.path.join(split, "test_truth.jsonl"),
                "--pred",
                pred_path,
                "--k",
                *map(str, ks),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        summary["score_py"] = json.loads(out.stdout)
    with open(os.path.join(output_dir, "bench_summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary
