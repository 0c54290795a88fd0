"""ParameterServerStrategy with an in-process cluster (2 PS, 2 workers)."""

import json
import pathlib
import subprocess
import sys

import pytest
import tensorflow as tf

from sdm_tf.train import distribute as D
from tests.conftest import stderr_digest


def test_table_partitioner_splits_only_tables():
    p = D.TablePartitioner(num_shards=2, min_rows=100)
    assert p(tf.TensorShape([600, 8]), tf.float32) == [2, 1]
    assert p(tf.TensorShape([600]), tf.float32) == [2]
    assert p(tf.TensorShape([24, 32]), tf.float32) == [1, 1]
    assert p(tf.TensorShape([]), tf.float32) == []


def test_shard_rows_split_tables_near_equally():
    assert D.shard_rows(10**6, 4) == [250_000] * 4
    assert D.shard_rows(10, 4) == [3, 3, 2, 2]  # the first rows % n shards take one more
    # docs/scale.md: 10^8 items x d 128 over 40 PS, float32 weights + 2 Adam slots.
    rows = D.shard_rows(10**8 + 2, 40)
    assert max(rows) - min(rows) <= 1 and sum(rows) == 10**8 + 2
    assert max(rows) * 128 * 4 * 3 / 2**30 == pytest.approx(3.58, abs=0.01)


def test_get_strategy_reads_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert D.get_strategy("auto") is tf.distribute.get_strategy()
    spec = D.cluster_spec(1, 1)
    monkeypatch.setenv("TF_CONFIG", D.tf_config_for(spec, "chief", 0))
    assert D.task_type() == "chief"
    with pytest.raises(ValueError):
        D.get_strategy("nope")


def test_ps_training_shards_tables_and_learns(preprocessed_dir, trained_model_dir, tmp_path):
    """2 PS + 2 workers in one (separate) process; see tests/ps_check.py."""
    out = tmp_path / "report.json"
    check = pathlib.Path(__file__).with_name("ps_check.py")
    proc = subprocess.run(
        [sys.executable, str(check), str(preprocessed_dir), str(tmp_path / "model"),
         str(trained_model_dir), str(out)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, stderr_digest(proc.stderr)
    report = json.loads(out.read_text())
    for name in ("item_embedding", "output_embeddings", "output_bias"):
        devices = report["devices"][name]
        assert any("/job:ps/replica:0/task:0" in d for d in devices), (name, devices)
        assert any("/job:ps/replica:0/task:1" in d for d in devices), (name, devices)
    assert len(report["devices"]["lstm_kernel"]) == 1  # small kernels stay whole
    # The cluster cuts the tables as D.shard_rows says (docs/scale.md sizes the PS with it).
    for name, rows in report["shard_rows"].items():
        assert rows == D.shard_rows(sum(rows), 2), (name, rows)
    assert report["losses"][-1] < report["losses"][0]
    assert report["optimizer_steps"] == 100
    # The PS-trained model restores on one device and exports to the same signature.
    assert report["same_signature"] and report["same_outputs"]
    assert report["restored_equals_trained"]
    # With a validation split the chief validates as a local run does: a score every epoch,
    # the best kept, the rate halved from it after one epoch without a gain, a stop after one
    # more, and the best weights at the end (`validated_run`).
    val = report["validation"]
    assert val["curve_epochs"] == list(range(1, val["epochs_run"] + 1))
    assert 1 <= val["best_epoch"] <= val["epochs_run"] and val["best"] == val["best_in_curve"]
    assert val["ends_on_best"]
    flat = report["validation_flat"]
    assert flat["curve_epochs"] == [1, 2, 3] and flat["best_epoch"] == 1
    assert flat["decay_started"] == 2 and flat["drop_saved"] and flat["stopped_early"]
    # The final fit's replay of a drop (`train.decay_epoch`) under PS: two epochs at the rate,
    # then half of it.
    assert report["step_decay_rates"] == pytest.approx([0.004, 0.004, 0.002])
    # The item tables' co-occurrence start, written shard by shard (`item_init`).
    for name, (shards, max_error) in report["sharded_item_init"].items():
        assert shards == 2 and max_error < 1e-6, name


def test_mirrored_step_equals_one_device_step(preprocessed_dir, tmp_path):
    """Two logical CPUs under MirroredStrategy move the weights as one device does on the whole
    batch (the loss is the global batch's mean, not N per-replica means summed); see
    tests/mirrored_check.py."""
    out = tmp_path / "report.json"
    check = pathlib.Path(__file__).with_name("mirrored_check.py")
    proc = subprocess.run(
        [sys.executable, str(check), str(preprocessed_dir), str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, stderr_digest(proc.stderr)
    report = json.loads(out.read_text())
    assert report["max_step"] > 1e-3  # the step moved the weights
    assert report["max_diff"] < 1e-5 * max(1.0, report["max_step"]), report
    assert report["loss"][1] == pytest.approx(report["loss"][0], rel=1e-5)


@pytest.mark.parametrize("mode", ["service", "local"])
def test_ps_workers_divide_an_epoch_with_the_data_service(preprocessed_dir, tmp_path, mode):
    """Two PS workers for one epoch of steps (tests/ps_data_check.py): with the tf.data
    service the examples they consume are close to a permutation of the training split; each
    reading on its own (the behaviour before it) repeats a large share and misses as much."""
    out = tmp_path / "report.json"
    check = pathlib.Path(__file__).with_name("ps_data_check.py")
    proc = subprocess.run(
        [sys.executable, str(check), str(preprocessed_dir), mode, str(out)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, stderr_digest(proc.stderr)
    r = json.loads(out.read_text())
    assert r["consumed"] >= 0.95 * r["examples"]  # one epoch of steps
    if mode == "service":
        assert r["repeats"] <= 0.05 * r["consumed"], r
        assert r["distinct_covered"] >= 0.95 * r["examples"], r
    else:
        assert r["repeats"] >= 0.2 * r["consumed"], r
