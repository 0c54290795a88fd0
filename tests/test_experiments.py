"""launch.experiments: the tables' cells, by hand, and a failed run shown as failed."""

import json
import os

import pytest

from launch import experiments as X


def summary(value, epoch=5, seconds=10.0):
    metrics = {f"{m}@{k}": value for k in X.KS for m in X.METRICS}
    systems = {"SDM": {"metrics": metrics}}
    systems["popularity"] = {"metrics": {k: value / 10 for k in metrics}}
    systems["item-CF"] = {"metrics": {k: value / 2 for k in metrics}}
    return {"systems": systems, "chosen_epoch": epoch, "seconds": {"total": seconds}}


def finished(run_dir, cfg, value=0.1):
    """What a finished bench_split run leaves: its summary, with the config, in run_dir."""
    result = {**summary(value), "config": cfg.to_dict()}
    os.makedirs(run_dir)
    with open(os.path.join(run_dir, "bench_summary.json"), "w") as f:
        json.dump(result, f)
    return result


def preprocessed(out, stats=None):
    """The split's data dir as the tables find it once preprocessed (they preprocess first)."""
    (out / "data").mkdir()
    (out / "data" / "stats.json").write_text(json.dumps(stats or {}))


def test_cells_are_mean_and_std_over_seeds():
    runs = [summary(0.1), summary(0.2), summary(0.3)]
    assert X.cell(runs, "SDM", "NDCG@20") == "0.2000 ± 0.1000"
    assert X.cell(runs[:1], "SDM", "NDCG@20") == "0.1000"


def test_run_table_reports_a_failed_cell_as_failed(monkeypatch, tmp_path):
    calls = []

    def fake_run(split, run_dir, cfg, **kwargs):
        calls.append((cfg.model.num_heads, cfg.train.seed, kwargs["reuse_data"]))
        if cfg.model.num_heads == 2:
            raise RuntimeError("out of memory")
        return summary(0.1 * cfg.model.num_heads, epoch=cfg.model.num_heads)

    monkeypatch.setattr(X.bench_lib, "run", fake_run)
    preprocessed(tmp_path)
    text = X.run_table("split", str(tmp_path), "3", seeds=2, pipeline_args=[])
    assert len(calls) == 8 and all(reuse for _, _, reuse in calls)
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if "head" in line}
    assert "| failed |" in rows["2 heads"] and "0.4000" not in rows["2 heads"]
    assert rows["4 heads"].count("0.4000") == len(X.KS) * len(X.METRICS)
    assert "| 4, 4 |" in rows["4 heads"]
    assert (tmp_path / "failed_t3_2_heads_s0.txt").read_text().strip().endswith("out of memory")


def test_a_configuration_in_several_tables_runs_once_per_seed(monkeypatch, tmp_path):
    calls = []

    def fake_run(split, run_dir, cfg, **kwargs):
        calls.append(os.path.basename(run_dir))
        return finished(run_dir, cfg)

    monkeypatch.setattr(X.bench_lib, "run", fake_run)
    preprocessed(tmp_path)
    X.run_table("split", str(tmp_path), "3", seeds=2, pipeline_args=[])
    text = X.run_table("split", str(tmp_path), "4", seeds=2, pipeline_args=[])
    # Table 4's gate is Table 3's 4 heads: 2 x 4 + 2 x 4 runs, not 2 x 9.
    assert len(calls) == 16 and "t4_fusion_gate_s0" not in calls
    gate = next(line for line in text.splitlines() if line.startswith("| fusion gate"))
    assert "| 2 |" in gate and "0.1000 ± 0.0000" in gate


def test_overrides_apply_to_every_cell_after_the_rows_own(tmp_path):
    preprocessed(tmp_path)
    cells = X.plan(str(tmp_path), ["3"], seeds=1, overrides=["train.item_init=random"])
    assert {c.config["train"]["item_init"] for c in cells} == {"random"}
    heads = {c.label: c.config["model"]["num_heads"] for c in cells}
    assert heads["2 heads"] == 2 and heads["8 heads"] == 8
    (tmp_path / "other").mkdir()
    preprocessed(tmp_path / "other")
    default = X.plan(str(tmp_path / "other"), ["3"], seeds=1)
    assert {c.config["train"]["item_init"] for c in default} == {"cooccurrence"}


def test_runs_from_before_item_init_count_as_random_starts(tmp_path):
    from sdm_tf import config as C

    preprocessed(tmp_path)
    old = C.get_config("default", "PSDMMAL", [X.PAPER_LONG_TERM, "train.seed=0"]).to_dict()
    del old["train"]["item_init"]  # saved before the field existed: those runs started randomly
    run_dir = os.path.join(X.runs_dir(str(tmp_path)), "t3_4_heads_s0")
    os.makedirs(run_dir)
    with open(os.path.join(run_dir, "bench_summary.json"), "w") as f:
        json.dump({**summary(0.1), "config": old}, f)
    as_they_ran = X.plan(str(tmp_path), ["4"], 1, overrides=["train.item_init=random"])
    assert next(c for c in as_they_ran if c.label == "fusion gate").same_as == run_dir
    default = X.plan(str(tmp_path), ["4"], 1)
    assert next(c for c in default if c.label == "fusion gate").same_as is None


@pytest.mark.parametrize("table", ["2", "3", "4"])
def test_every_row_is_a_valid_config(table):
    from sdm_tf import config as C

    for _, overrides, variant in X.TABLES[table]:
        C.get_config("default", variant, overrides)


@pytest.mark.parametrize("profile, same", [([], False), (["age"], True)])
def test_the_query_rule_is_moot_with_a_profile(tmp_path, profile, same):
    from sdm_tf import config as C

    (tmp_path / "dataset_spec.json").write_text(json.dumps({"profile_features": profile}))
    paper = C.get_config("default", "PSDMMAL", [X.PAPER_QUERY]).to_dict()
    default = C.get_config("default", "PSDMMAL").to_dict()
    saved_before = json.loads(json.dumps(default))
    del saved_before["model"]["user_attention_without_profile"]  # ran the learned query
    eff = lambda c: X.effective(c, X.has_profile(str(tmp_path)))  # noqa: E731
    assert (eff(paper) == eff(default)) is same
    assert (eff(saved_before) == eff(default)) is same
    assert eff(saved_before) == eff(paper)


def test_cells_run_in_parallel_workers_and_failures_stay_failures(monkeypatch, tmp_path):
    """The pooled path: every distinct cell goes to the executor once; Table 4's gate reads
    Table 3's 4-heads run; a worker's exception becomes a failed row and a failure file."""
    import concurrent.futures
    import threading

    calls, lock = [], threading.Lock()

    def fake_run(split, run_dir, cfg, **kwargs):
        with lock:
            calls.append(os.path.basename(run_dir))
        if cfg.model.fusion == "concat":
            raise RuntimeError("killed")
        return finished(run_dir, cfg, 0.05 * cfg.model.num_heads)

    monkeypatch.setattr(X.bench_lib, "run", fake_run)
    preprocessed(tmp_path)
    pool = concurrent.futures.ThreadPoolExecutor(2)
    texts = X.run_tables("split", str(tmp_path), ["3", "4"], 1, [], executor=pool)
    assert sorted(calls) == sorted(
        ["t3_1_head_s0", "t3_2_heads_s0", "t3_4_heads_s0", "t3_8_heads_s0"]
        + ["t4_fusion_multiply_s0", "t4_fusion_concat_s0", "t4_fusion_add_s0", "t4_psdmmal-nos_s0"]
    )
    gate = next(line for line in texts["4"].splitlines() if line.startswith("| fusion gate"))
    assert "| 1 | 0.2000 |" in gate  # 4 heads x 0.05
    concat = next(line for line in texts["4"].splitlines() if line.startswith("| fusion concat"))
    assert "| 0 | failed |" in concat and "0.2000" not in concat
    assert "killed" in (tmp_path / "failed_t4_fusion_concat_s0.txt").read_text()
    # Resumed: nothing finished runs again; the failed cell is tried once more.
    calls.clear()
    X.run_tables("split", str(tmp_path), ["3", "4"], 1, [], executor=None)
    assert calls == ["t4_fusion_concat_s0"]


def test_cells_run_for_real_in_two_spawned_processes(monkeypatch, tmp_path):
    """The process pool users get with --jobs 2: real (tiny) bench_split runs in spawned
    workers, on one preprocessing of the split."""
    from tests.conftest import IN_MEMORY, taobao_time_split

    split = taobao_time_split(tmp_path / "split", min_item_count=2)
    tiny = ["model.dim=8", "model.item_dim=8", "model.side_dim=4", "train.epochs=1"]
    tiny += ["train.steps_per_epoch=2", "model.num_lstm_layers=1"]
    monkeypatch.setitem(
        X.TABLES, "3", [(f"{h} heads", [*tiny, f"model.num_heads={h}"], "PSDMMAL") for h in (1, 2)]
    )
    out = tmp_path / "out"
    texts = X.run_tables(str(split), str(out), ["3"], 1, IN_MEMORY, jobs=2)
    rows = [line for line in texts["3"].splitlines() if "heads |" in line]
    assert len(rows) == 2 and not any("failed" in r for r in rows), texts["3"]
    for h in (1, 2):
        with open(out / "runs" / f"t3_{h}_heads_s0" / "bench_summary.json") as f:
            assert json.load(f)["config"]["model"]["num_heads"] == h
    assert len(list(out.glob("data/stats.json"))) == 1 and not list(out.glob("runs/*/data"))


@pytest.mark.parametrize("empty, same", [(95, False), (40, True)])
def test_tables_3_and_4_keep_the_papers_long_term_rule(empty, same):
    # sdm's default decides from the data (short term alone where >= 90 % of the examples have
    # no long-term history); the heads and fusion tables keep the paper's fusion for everyone,
    # so their 4-heads / gate cell is sdm's default run only where the two rules agree.
    from sdm_tf import config as C

    stats = {"train_examples": 100, "train_examples_without_long_term": empty}
    sdm = C.get_config("default", "PSDMMAL").to_dict()
    label, overrides, variant = X.TABLES["3"][2]
    assert label == "4 heads"
    heads4 = C.get_config("default", variant, overrides).to_dict()
    assert (X.effective(sdm, False, stats) == X.effective(heads4, False, stats)) is same


@pytest.mark.parametrize(
    "cores, memory_gib, jobs",
    [(2, 24, 2), (16, 32, 8), (16, 128, 16), (2, 7.9, 1), (1, 64, 1), (8, 2, 1)],
)
def test_default_jobs_is_one_per_core_as_memory_allows(cores, memory_gib, jobs):
    # GIB_PER_JOB = 4: 32 GiB hold 8 cells, 7.9 GiB one; never fewer than one.
    assert X.default_jobs(cores, memory_gib) == jobs


def test_final_fit_none_runs_its_own_cells_and_says_so(monkeypatch, tmp_path):
    """Cells without a final fit live beside the refit ones (runs_none/), never reuse them, and
    pass the kind to bench_split; the table says what ranked the test split."""
    calls = []

    def fake_run(split, run_dir, cfg, **kwargs):
        calls.append((os.path.relpath(run_dir, tmp_path), kwargs["final_fit"]))
        return finished(run_dir, cfg)

    monkeypatch.setattr(X.bench_lib, "run", fake_run)
    monkeypatch.setitem(X.TABLES, "3", [("4 heads", [], "PSDMMAL")])
    preprocessed(tmp_path)
    refit = X.run_tables("split", str(tmp_path), ["3"], 1, [])["3"]
    none = X.run_tables("split", str(tmp_path), ["3"], 1, [], final_fit="none")["3"]
    assert calls == [
        (os.path.join("runs", "t3_4_heads_s0"), "refit"),
        (os.path.join("runs_none", "t3_4_heads_s0"), "none"),
    ]
    assert "No final fit" in none and "No final fit" not in refit
    X.run_tables("split", str(tmp_path), ["3"], 1, [], final_fit="none")  # resumed: read
    assert len(calls) == 2


POOL_SCRIPT = """
import os, sys, time
from launch import experiments as X

def cell(path):
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(300)

if __name__ == "__main__":
    X.stop_on_sigterm()
    out = sys.argv[1]
    X.run_in_pool(X.cell_pool(2), {n: (cell, os.path.join(out, n)) for n in ("a", "b")})
"""


def _gone(pid: int) -> bool:
    """No such process, or only its zombie (a container's init may not reap orphans)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc to find the cells")
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGKILL"])
def test_stopping_a_two_cell_run_leaves_no_cell_running(tmp_path, sig):
    """SIGTERM: the run stops its cells and exits 143. SIGKILL (no cleanup runs): each cell
    sees its parent gone and ends itself within about a second."""
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "run.py"
    script.write_text(POOL_SCRIPT)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root}
    parent = subprocess.Popen([sys.executable, str(script), str(tmp_path)], cwd=root, env=env)
    try:
        deadline = time.monotonic() + 120
        while not all((tmp_path / n).exists() for n in "ab"):
            assert parent.poll() is None and time.monotonic() < deadline, "cells never started"
            time.sleep(0.2)
        time.sleep(0.2)
        cells = [int((tmp_path / n).read_text()) for n in "ab"]
        assert not any(_gone(pid) for pid in cells)
        parent.send_signal(getattr(signal, sig))
        assert parent.wait(timeout=30) == (143 if sig == "SIGTERM" else -signal.SIGKILL)
        deadline = time.monotonic() + 10
        while not all(_gone(pid) for pid in cells) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert all(_gone(pid) for pid in cells), f"cells {cells} outlived the run"
    finally:
        parent.kill()
