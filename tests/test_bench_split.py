"""launch.bench_split on a split it has never seen (the Taobao sample, time protocol)."""

import json
import subprocess
import sys

from sdm_tf import bench_split
from sdm_tf import config as C
from tests.conftest import shared_path


def test_bench_split_end_to_end(tmp_path):
    prepare = shared_path("bench", "prepare.py")
    data = shared_path("data", "taobao_sample", "UserBehavior.csv")
    split = tmp_path / "split"
    subprocess.run(
        [sys.executable, str(prepare), "--format", "taobao", "--input", str(data),
         "--out", str(split), "--protocol", "time", "--min-item-count", "2"],
        check=True, capture_output=True,
    )  # fmt: skip
    cfg = C.get_config("smoke", "PSDMMAL-N", ["train.epochs=1", "train.steps_per_epoch=3"])
    summary = bench_split.run(
        str(split), str(tmp_path / "out"), cfg, preprocess_args=["--direct_running_mode=in_memory"]
    )
    truth = [json.loads(x) for x in (split / "test_truth.jsonl").read_text().splitlines()]
    preds = {
        p["user_id"]: p["items"]
        for p in map(json.loads, (tmp_path / "out" / "predictions.jsonl").read_text().splitlines())
    }
    assert set(preds) == {t["user_id"] for t in truth}
    assert all(len(items) == 100 for items in preds.values())
    assert summary["exclude_seen"] == "no"  # time protocol: repeats are legitimate truth
    # score.py's numbers and ours agree.
    for key in ("HitRate@50", "Recall@20", "NDCG@100"):
        assert abs(summary["score_py"][key] - summary["metrics"][key]) < 1e-12
