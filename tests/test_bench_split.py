"""launch.bench_split on a split it has never seen (the Taobao sample, time protocol)."""

import json
import subprocess
import sys

import pytest

from benchmarks import serving_parity, under_rule
from launch import bench_lib as bench_split
from launch import evaluate as evaluate_launcher
from launch import export as export_launcher
from sdm_tf import config as C
from tests.conftest import shared_path, taobao_time_split


def test_bench_split_end_to_end(tmp_path):
    itemcf = shared_path("bench", "itemcf.py")
    split = taobao_time_split(tmp_path / "split", min_item_count=2)
    cfg = C.get_config("smoke", "PSDMMAL-N", ["train.epochs=2", "train.steps_per_epoch=3"])
    out = tmp_path / "out"
    summary = bench_split.run(
        str(split), str(out), cfg, preprocess_args=["--direct_running_mode=in_memory"]
    )
    truth = [json.loads(x) for x in (split / "test_truth.jsonl").read_text().splitlines()]
    preds = {
        p["user_id"]: p["items"]
        for p in map(json.loads, (out / "predictions.jsonl").read_text().splitlines())
    }
    assert set(preds) == {t["user_id"] for t in truth}
    assert all(len(items) == 100 for items in preds.values())
    # Validation ran every epoch on the last training day, and chose the history rule.
    val = summary["validation"]
    assert [p["epoch"] for p in val["curve"]] == [1, 2] and summary["chosen_epoch"] in (1, 2)
    assert summary["history_rule"] == val["rule"] in ("kept", "excluded", "first", "frequent")
    # The final fit: a fresh model on every training event for the chosen epochs, no decay.
    lr = cfg.train.learning_rate
    assert summary["final_fit_run"] == ["refit", summary["chosen_epoch"], 0, lr]
    assert summary["preprocess_stats"]["eval_examples"] > 0
    assert summary["train"]["objective"].endswith(f"{summary['preprocess_stats']['items']:,} items")
    assert summary["preprocess_stats"]["test_examples"] > 0
    # The baselines ran under the same rule, and item-CF is the reference's, to the list
    # ("first", "frequent": the reference's excluded lists behind the user's history, most
    # recent or most frequent first).
    flag = ["--exclude-seen"] if summary["history_rule"] != "kept" else []
    subprocess.run(
        [sys.executable, str(itemcf), str(split), str(tmp_path / "ref"), *flag], check=True
    )
    ref = tmp_path / "ref.itemcf.jsonl"
    under_rule.rewrite(
        str(split), str(ref), str(tmp_path / "ref.rule.jsonl"), rule=summary["history_rule"]
    )
    assert (out / "itemcf.jsonl").read_text() == (tmp_path / "ref.rule.jsonl").read_text()
    assert set(summary["systems"]) == {"SDM", "popularity", "item-CF"}
    assert summary["baseline_events"] == "all"
    # score.py's numbers and ours agree.
    for system in summary["systems"].values():
        for key in ("HitRate@50", "Recall@20", "NDCG@100"):
            assert abs(system["score_py"][key] - system["metrics"][key]) < 1e-12
    # The service, sent each test user's raw events under the chosen rule, returns the lists
    # the pipeline's test examples got: one query builder, on real data.
    exported = export_launcher.run(
        str(out / "data"), str(out / "model_final"), str(tmp_path / "export")
    )
    parity = serving_parity.run(str(split), str(out), exported, k=100)
    assert parity["users"] + parity["fallback_users"] == len(truth)
    assert parity["users"] > 0 and parity["differ"] == 0
    # A different model's export is told apart (the validation run's weights, not the final
    # fit's).
    other = export_launcher.run(str(out / "data"), str(out / "model"), str(tmp_path / "other"))
    assert serving_parity.run(str(split), str(out), other, k=100)["differ"] > 0


def test_without_a_final_fit_validations_checkpoint_ranks_the_test_split(tmp_path):
    split = taobao_time_split(tmp_path / "split", min_item_count=2)
    cfg = C.get_config("smoke", "PSDMMAL", ["train.epochs=2", "train.steps_per_epoch=2"])
    with pytest.raises(ValueError, match="final_fit must be one of"):
        bench_split.run(str(split), str(tmp_path / "bad"), cfg, final_fit="nothing")
    assert not (tmp_path / "bad").exists()  # refused before any work
    out = tmp_path / "out"
    summary = bench_split.run(
        str(split), str(out), cfg, preprocess_args=["--direct_running_mode=in_memory"],
        final_fit="none",
    )  # fmt: skip
    assert summary["chosen_epoch"] in (1, 2) and summary["baseline_events"] == "validation"
    assert summary["final_fit_run"] is None and summary["final_fit"] is None
    assert not (out / "model_final").exists() and (out / "predictions.jsonl").exists()
    # launch.evaluate on validation's targets scores the best epoch's model as validation did.
    best = summary["validation"]["curve"][summary["chosen_epoch"] - 1]
    val = evaluate_launcher.run(
        str(out / "data"), str(out / "model"), str(tmp_path / "val"), [20, 50], split="eval"
    )["model"]
    for key in ("HitRate@20", "NDCG@20", "NDCG@50"):
        assert val[key] == pytest.approx(best[f"kept/{key}"], abs=1e-9)
    assert val["users"] == summary["preprocess_stats"]["eval_examples"]


def test_baselines_without_a_final_fit_count_the_validation_runs_events(tmp_path):
    """What the pipeline holds out for validation, the baselines do not count either."""
    path = tmp_path / "events_train.csv"
    day = 86_400
    rows = [  # user, item, timestamp; u1 out of time order in the file
        ("u1", "a", 10), ("u1", "c", 30), ("u1", "b", 20),
        ("u2", "a", 5), ("u2", "d", 2 * day + 7),
        ("u3", "x", 1), ("u3", "y", 2),
        ("u4", "b", 100), ("u4", "e", 2 * day + 1), ("u4", "f", 2 * day + 2),
    ]  # fmt: skip
    path.write_text("user_id,item_id,timestamp\n" + "".join(f"{u},{i},{t}\n" for u, i, t in rows))
    # Leave-one-out: the last event of every user with 3 or more; u3 (2 events) keeps both.
    assert bench_split.validation_train_events(str(path), "loo") == {
        "u1": ["a", "b"], "u2": ["a", "d"], "u3": ["x", "y"], "u4": ["b", "e"],
    }  # fmt: skip
    # Time: the log's last day starts at 2 * day; nothing of it is trained on (u2 has one event
    # that day, too few to validate on, and it is still not a training event).
    assert bench_split.validation_train_events(str(path), "time") == {
        "u1": ["a", "b", "c"], "u2": ["a"], "u3": ["x", "y"], "u4": ["b"],
    }  # fmt: skip


def test_final_fit_plans_by_hand():
    """Session 15's Beauty run: best epoch 37, the rate dropped after epoch 26 from epoch 18's
    weights. The refit replays 18 epochs at the rate and 37 - 26 = 11 decayed ones."""
    train = C.TrainConfig(learning_rate=1e-3, decay_factor=0.1)
    dropped = {"best_epoch": 37, "decay_started": 26, "decay_epoch": 18}
    plan = bench_split.final_fit_plan
    assert plan("refit", dropped, train, 3) == ("refit", 29, 18, 1e-3)
    assert plan("warm", dropped, train, 3) == ("warm", 14, 3, 1e-3)  # 3 at the rate, then 11
    assert plan("continue", dropped, train, 3) == ("continue", 3, 0, 1e-3)
    kind, epochs, decay_epoch, rate = plan("resume", dropped, train, 3)
    assert (kind, epochs, decay_epoch) == ("resume", 3, 0) and abs(rate - 1e-4) < 1e-12
    # The drop never beat epoch 18: warm has nothing to start from and refits 18 epochs.
    never = {"best_epoch": 18, "decay_started": 26, "decay_epoch": 18}
    assert plan("warm", never, train, 3) == ("refit", 18, 0, 1e-3)
    assert plan("refit", {"best_epoch": 12}, train, 3) == ("refit", 12, 0, 1e-3)
