"""Training with separate ps / worker / chief processes, and the fault-tolerance drills.

The drills are slow (several TensorFlow processes on two cores) and run when SDM_SLOW=1:

    SDM_SLOW=1 .venv/bin/python -m pytest -q tests/test_local_cluster.py
"""

import os
import re
import signal
import time

import pytest
import tensorflow as tf

from sdm_tf.train.local_cluster import LocalCluster
from tests.conftest import stderr_digest

slow = pytest.mark.skipif(os.environ.get("SDM_SLOW") != "1", reason="slow drill: set SDM_SLOW=1")


def train_args(data_dir, model_dir, epochs, steps):
    return [
        f"--data_dir={data_dir}", f"--model_dir={model_dir}", "--preset=smoke",
        f"--epochs={epochs}", f"--steps_per_epoch={steps}", "--ps_min_rows=100",
    ]  # fmt: skip


def checkpoint_state(model_dir):
    path = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    if path is None:
        return None
    reader = tf.train.load_checkpoint(path)
    return {
        "epoch": int(reader.get_tensor("epoch/.ATTRIBUTES/VARIABLE_VALUE")),
        "steps": int(reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE")),
    }


def wait_for(predicate, timeout=300, what="condition"):
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def test_local_cluster_trains_end_to_end(preprocessed_dir, tmp_path):
    model_dir = str(tmp_path / "model")
    cluster = LocalCluster(
        train_args(preprocessed_dir, model_dir, 2, 10), 2, 2, str(tmp_path / "logs")
    )
    assert cluster.run(timeout=600) == 0
    assert checkpoint_state(model_dir) == {"epoch": 2, "steps": 20}
    assert all(p.poll() is not None for p in cluster.procs.values())  # nothing left running


def test_multi_process_workers_divide_an_epoch_with_the_data_service(preprocessed_dir, tmp_path):
    # Separate ps / worker / tf.data service processes (LocalCluster); the chief is
    # tests/ps_data_check.py, which feeds the real training input through a counting model.
    import json
    import subprocess
    import sys

    from sdm_tf.train import distribute as D

    check = os.path.join(os.path.dirname(__file__), "ps_data_check.py")
    out = tmp_path / "report.json"
    with LocalCluster(train_args(preprocessed_dir, tmp_path / "m", 1, 1), 1, 2, None) as c:
        c.start_servers()
        env = dict(os.environ, TF_CONFIG=D.tf_config_for(c.spec, "chief", 0))
        env["SDM_DATA_SERVICE"] = c.data_service
        proc = subprocess.run(
            [sys.executable, check, str(preprocessed_dir), "service", str(out)],
            env=env, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
    assert proc.returncode == 0, stderr_digest(proc.stderr)
    r = json.loads(out.read_text())
    assert r["consumed"] >= 0.95 * r["examples"]
    assert r["repeats"] <= 0.05 * r["consumed"], r
    assert r["distinct_covered"] >= 0.95 * r["examples"], r


@slow
def test_a_killed_worker_does_not_stop_the_job(preprocessed_dir, tmp_path):
    model_dir = str(tmp_path / "model")
    with LocalCluster(
        train_args(preprocessed_dir, model_dir, 6, 20), 2, 2, str(tmp_path / "logs")
    ) as c:
        c.start_servers()
        chief = c.start_chief()
        wait_for(lambda: (checkpoint_state(model_dir) or {}).get("epoch", 0) >= 1, what="epoch 1")
        c.kill("worker", 1)
        time.sleep(3)
        c.start_task("worker", 1)  # the pod comes back
        assert chief.wait(timeout=900) == 0
    state = checkpoint_state(model_dir)
    assert state["epoch"] == 6
    # A step in flight on the killed worker may have reached the parameter servers before the
    # coordinator re-scheduled it elsewhere: at-least-once, so up to one extra step per worker.
    assert 120 <= state["steps"] <= 122


@slow
def test_a_restarted_chief_resumes_from_its_checkpoint(preprocessed_dir, tmp_path):
    model_dir = str(tmp_path / "model")
    logs = tmp_path / "logs"
    with LocalCluster(train_args(preprocessed_dir, model_dir, 6, 20), 2, 2, str(logs)) as c:
        c.start_servers()
        c.start_chief()
        wait_for(lambda: (checkpoint_state(model_dir) or {}).get("epoch", 0) >= 2, what="epoch 2")
        c.kill("chief", 0, signal.SIGKILL)
        before = checkpoint_state(model_dir)
        assert before["steps"] == 20 * before["epoch"]
        chief = c.start_chief()
        assert chief.wait(timeout=900) == 0
    log = (logs / "chief-0.log").read_text(errors="replace")
    initial = [int(x) for x in re.findall(r'"initial_epoch": (\d+)', log)]
    assert initial and initial[-1] >= before["epoch"]  # resumed, not from 0
    assert checkpoint_state(model_dir) == {"epoch": 6, "steps": 120}


@slow
def test_a_killed_parameter_server_costs_a_chief_restart(preprocessed_dir, tmp_path):
    # ClusterCoordinator re-schedules a failed worker's steps, but a parameter server holds
    # variables: when one dies the chief's fit fails (UnavailableError). Recovery is what the
    # TFJob does: the PS pod comes back, the chief restarts and resumes from its last
    # checkpoint. Cost: the steps since that checkpoint (at most one epoch) plus restart time.
    model_dir = str(tmp_path / "model")
    logs = tmp_path / "logs"
    with LocalCluster(train_args(preprocessed_dir, model_dir, 6, 20), 2, 2, str(logs)) as c:
        c.start_servers()
        chief = c.start_chief()
        wait_for(lambda: (checkpoint_state(model_dir) or {}).get("epoch", 0) >= 2, what="epoch 2")
        c.kill("ps", 1)
        assert chief.wait(timeout=600) != 0  # the chief cannot go on without the ps
        before = checkpoint_state(model_dir)
        c.start_task("ps", 1)  # the pod comes back (empty: variables restore from checkpoint)
        chief = c.start_chief()
        assert chief.wait(timeout=900) == 0
    assert before["epoch"] >= 2
    assert checkpoint_state(model_dir) == {"epoch": 6, "steps": 120}
