"""Train and score SDM on any split written by `../shared/bench/prepare.py`.

The split's files go through the project's own pipeline: `events_train.csv` (+ `items.csv`) make
the training examples and vocabularies, and a validation split is carved from them by the split's
own protocol (leave-one-out: each user's last training event; time: the last training day);
`test_queries.csv` supplies each test user's history, fed as that user's latest session plus
long-term bags by the same session rules; `test_truth.jsonl` is the ground truth. Training keeps
the best epoch on validation and stops early (`sdm_tf.train.validation`), which also decides the
history rule: the user's history kept, excluded, or first, most recent or most frequent first
(`history_rules.history_first`). Then the
test split is ranked once, for SDM and for popularity and item-CF (`sdm_tf.train.baselines`)
under the same history rule, and scored (with the split's `score.py` when one is found, and
always with `sdm_tf.train.evaluation`).
"""

from __future__ import annotations

import copy
import csv
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from sdm_tf import config as C
from sdm_tf.core import features as F
from sdm_tf.core import history_rules as H
from sdm_tf.core import sessions as S
from sdm_tf.core.split_files import read_events, read_truth
from sdm_tf.train import evaluation as E
from sdm_tf.train import predict, training
from sdm_tf.train import validation as V
from sdm_tf.train.data_dir import load_item_vocab


class _Row(NamedTuple):
    item: str
    timestamp: int


def validation_train_events(path: str, protocol: str) -> dict[str, list[str]]:
    """user -> the items of events_train.csv (`path`) that the validation run trained on, in
    time order: each user's events less what the pipeline's split of the same protocol holds
    out for validation (`sessions.split_loo`; `split_time` from the start of the log's last
    day). For baselines that must see what that run's model saw. Exact duplicate events stay,
    as in the reference item-CF (the pipeline drops them)."""
    rows: dict[str, list[_Row]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            rows.setdefault(row["user_id"], []).append(_Row(row["item_id"], int(row["timestamp"])))
    for user_rows in rows.values():
        user_rows.sort(key=lambda r: r.timestamp)  # stable: ties keep the file's order
    if protocol == "time":
        start = S.day_start(max(r.timestamp for user_rows in rows.values() for r in user_rows))
        kept = {u: S.split_time(rs, start)[0] for u, rs in rows.items()}
    else:
        kept = {u: S.split_loo(rs)[0] for u, rs in rows.items()}
    return {u: [r.item for r in rs] for u, rs in kept.items() if rs}


def preprocess_split(split: str, data_dir: str, extra_args: Sequence[str] = ()) -> dict:
    """events_train.csv -> train/ + eval/ (the validation split, carved from the training events
    by the split's own protocol); test_queries.csv + test_truth.jsonl -> test/."""
    from launch import preprocess as launch_preprocess

    with open(os.path.join(split, "split.json")) as f:
        protocol = json.load(f).get("protocol", "loo")
    args = [
        "--format=csv",
        f"--input={os.path.join(split, 'events_train.csv')}",
        f"--eval_protocol={'time' if protocol == 'time' else 'loo'}",
        f"--test_queries={os.path.join(split, 'test_queries.csv')}",
        f"--test_truth={os.path.join(split, 'test_truth.jsonl')}",
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
    return launch_preprocess.run(args)


# bench_split's --exclude_seen values -> validation's history rules.
RULE_OF = {"no": "kept", "yes": "excluded", "first": "first", "frequent": "frequent"}


def default_score_script() -> str | None:
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(os.path.dirname(repo), "shared", "bench", "score.py")
    return path if os.path.exists(path) else None


def score_with_script(script: str, truth_path: str, pred_path: str, ks: Sequence[int]) -> dict:
    out = subprocess.run(
        [sys.executable, script, "--truth", truth_path, "--pred", pred_path, "--k", *map(str, ks)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


# What follows validation (`run`'s `final_fit`).
FINAL_FITS = ("refit", "continue", "resume", "warm", "none")


def final_fit_plan(
    final_fit: str, validation: Mapping, train: C.TrainConfig, continue_epochs: int
) -> tuple[str, int, int, float]:
    """What the final fit runs, from `validation`'s state (best_epoch, decay_started,
    decay_epoch): (kind, epochs, decay_epoch, learning_rate). `run`'s `final_fit` says what each
    kind starts from; "warm" becomes "refit" where the rate's drop never won."""
    if final_fit == "warm" and not V.decayed_epochs(validation):
        final_fit = "refit"  # the rate never dropped to a better epoch: nothing to start from
    rate = train.learning_rate
    if final_fit == "refit":  # the same epochs, the rate decayed where validation's was
        return (final_fit, *V.fit_schedule(validation), rate)
    if final_fit == "warm":  # from the drop: epochs at the rate, then the decayed ones
        return final_fit, continue_epochs + V.decayed_epochs(validation), continue_epochs, rate
    if final_fit == "resume":  # at the rate validation's decayed phase ran at
        rate *= train.decay_factor or 1.0
    return final_fit, continue_epochs, train.decay_epoch, rate


def run(
    split: str,
    output_dir: str,
    cfg: C.ExperimentConfig,
    exclude_seen: str = "auto",
    score_script: str | None = None,
    ks: Sequence[int] = (20, 50, 100),
    preprocess_args: Sequence[str] = (),
    verbose: int | str = 2,
    baselines: bool = True,
    final_fit: str = "refit",
    continue_epochs: int = 3,
    data_dir: str | None = None,
    reuse_data: bool = False,
) -> dict:
    """Preprocess, train with model selection on validation, then rank and score the test split
    once, beside popularity and item-CF under the same history rule. Returns a summary dict.

    data_dir: where the preprocessed split goes (default OUTPUT_DIR/data); with `reuse_data`,
      an existing one is used as it is (several runs on one split).
    final_fit: "refit" (a fresh model for the chosen epochs), "continue" (the best weights and
      a fresh optimizer, `continue_epochs` more epochs on every training event), "resume" (the
      best weights and optimizer state, `continue_epochs` more at the decayed learning rate),
      "warm" (the weights and optimizer state validation's rate dropped from, `continue_epochs`
      at the rate, then the decayed epochs validation needed; "refit" where the drop never won),
      or "none": no final fit, validation's best checkpoint ranks the test split (the protocol
      of published leave-one-out tables: a cheaper run, a model that never had the validation
      targets as labels; popularity and item-CF then count the same training events).
    """
    if final_fit not in FINAL_FITS:
        raise ValueError(f"final_fit must be one of {FINAL_FITS}, not {final_fit!r}")
    from sdm_tf.train import baselines as B

    t0 = time.perf_counter()
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(split, "split.json")) as f:
        split_info = json.load(f)
    if data_dir is None:
        data_dir = os.path.join(output_dir, "data")
    if os.path.exists(os.path.join(data_dir, "stats.json")) and reuse_data:
        with open(os.path.join(data_dir, "stats.json")) as f:
            stats = json.load(f)
    else:
        stats = preprocess_split(split, data_dir, preprocess_args)
    t1 = time.perf_counter()
    result = training.train(cfg, data_dir, os.path.join(output_dir, "model"), verbose=verbose)
    model = result.pop("model")
    validation = result.pop("validation") or {}
    refit = None
    # (epochs, decay_epoch) that reach validation's best weights again: `validation.fit_schedule`.
    schedule = V.fit_schedule(validation) if validation.get("best_epoch") else None
    if schedule and final_fit != "none":
        # The final fit: every training event (validation targets included) for the chosen
        # number of epochs. A test query ends with the user's latest training event, which this
        # fit has seen as a label, as validation queries end with one the first fit had seen.
        final = copy.deepcopy(cfg)
        final_fit, *plan = final_fit_plan(final_fit, validation, cfg.train, continue_epochs)
        final.train.epochs, final.train.decay_epoch, final.train.learning_rate = plan
        refit = training.train(
            final,
            data_dir,
            os.path.join(output_dir, "model_final"),
            verbose=verbose,
            train_split=F.TRAIN_ALL,
            validate=False,
            init_from="" if final_fit == "refit" else os.path.join(output_dir, "model"),
            init_optimizer=final_fit in ("resume", "warm"),
            init_checkpoint=V.DROP_DIR if final_fit == "warm" else V.BEST_DIR,
        )
        model = refit.pop("model")
    t2 = time.perf_counter()
    if exclude_seen == "auto":  # the rule that won on validation
        rule = validation.get("rule") or "kept"
    else:
        rule = RULE_OF[exclude_seen]
    exclude = rule != "kept"  # "first", "frequent": the history ahead of the excluded ranking
    _, predictions, _ = predict.evaluate(model, data_dir, ks, split=F.TEST, history_rule=rule)
    truth_path = os.path.join(split, "test_truth.jsonl")
    truth = read_truth(truth_path)
    queries = read_events(os.path.join(split, "test_queries.csv"))
    k = max(ks)
    # Test users without a usable history get the most popular items.
    vocab = load_item_vocab(data_dir)  # by descending training frequency

    def under_rule(preds: dict[str, list[str]]) -> dict[str, list[str]]:
        return H.under_rule(preds, queries, k, rule)  # kept, excluded: the ranking as it is

    fallback = under_rule(B.popularity_predictions(vocab, queries, truth, k, exclude))
    predictions = {u: predictions.get(u) or fallback[u] for u in truth}
    systems = {"SDM": predictions}
    t3 = time.perf_counter()
    if baselines:  # the same rule for every system
        events_path = os.path.join(split, "events_train.csv")
        if final_fit == "none":  # the model never had the validation targets: nor do these
            protocol = split_info.get("protocol", "loo")
            train_events = validation_train_events(events_path, protocol)
        else:
            train_events = read_events(events_path)
        popular = B.popularity(train_events)
        systems["popularity"] = under_rule(
            B.popularity_predictions(popular, queries, truth, k, exclude)
        )
        systems["item-CF"] = under_rule(
            B.itemcf_predictions(train_events, queries, truth, k, exclude)
        )
    t4 = time.perf_counter()
    score_script = score_script or default_score_script()
    table = {}
    for name, preds in systems.items():
        slug = {"SDM": "predictions", "item-CF": "itemcf"}.get(name, name)
        pred_path = os.path.join(output_dir, f"{slug}.jsonl")
        E.write_predictions(pred_path, preds)
        table[name] = {"metrics": E.retrieval_metrics(truth, preds, ks)}
        if score_script:
            table[name]["score_py"] = score_with_script(score_script, truth_path, pred_path, ks)
    summary = {
        "split": split_info,
        "preprocess_stats": {
            k_: stats.get(k_, 0)
            for k_ in (
                "train_events",
                "users",
                "train_examples",
                "train_examples_without_long_term",
                "train_labels",
                "train_labels_in_input",
                "eval_examples",
                "test_examples",
                "train_all_examples",
                "items",
                "sessions",
                "sessions_after_long_pause",
            )
        }
        | {"session_gap_auto": stats.get("session_gap_auto")},
        "exclude_seen": {r: flag for flag, r in RULE_OF.items()}[rule],
        "history_rule": rule,
        # The training events the baselines counted: all, or the validation run's (no final fit).
        "baseline_events": "validation" if final_fit == "none" else "all",
        "validation": validation,
        "chosen_epoch": validation.get("best_epoch"),
        "fit_schedule": schedule,
        # What the final fit ran: its kind, (epochs, decay_epoch) and learning rate.
        "final_fit_run": (
            [final_fit, final.train.epochs, final.train.decay_epoch, final.train.learning_rate]
            if refit
            else None
        ),
        "metrics": table["SDM"]["metrics"],
        "systems": table,
        "train": {k_: v for k_, v in result.items() if k_ != "history"},
        "final_fit": (
            {k_: v for k_, v in refit.items() if k_ not in ("history", "validation")}
            if refit
            else None
        ),
        "final_loss": result["history"].get("loss", [None])[-1] if result["history"] else None,
        "seconds": {
            "preprocess": t1 - t0,
            "train": t2 - t1,
            "predict": t3 - t2,
            "baselines": t4 - t3,
            "total": time.perf_counter() - t0,
        },
        "config": C.load_config(os.path.join(output_dir, "model")).to_dict(),  # as resolved
    }
    if "score_py" in table["SDM"]:
        summary["score_py"] = table["SDM"]["score_py"]
    with open(os.path.join(output_dir, "bench_summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary
