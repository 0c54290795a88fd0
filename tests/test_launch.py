"""The launchers share one absl flag namespace: they must import together (as in one process)."""

import importlib
import logging
import os
import subprocess
import sys

LAUNCHERS = [
    "generate", "preprocess", "train", "evaluate", "bench_split", "export", "build_index",
    "serve", "query", "local_cluster", "data_service", "experiments",
]  # fmt: skip


def test_all_launchers_import_together():
    for name in LAUNCHERS:
        importlib.import_module(f"launch.{name}")


def test_flags_parse_with_every_launcher_loaded():
    from absl import flags

    for name in LAUNCHERS:
        importlib.import_module(f"launch.{name}")
    try:
        flags.FLAGS(["prog", "--preset=smoke", "--override=model.dim=8"])
        assert flags.FLAGS.preset == "smoke"
    finally:
        flags.FLAGS.unparse_flags()


def _launch(*args, cwd=None):
    import os
    import pathlib
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd or root, env=env, capture_output=True, text=True
    )


def _one_line_error(out, *fragments):
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0]


def test_train_on_a_missing_data_dir_is_one_line(tmp_path):
    out = _launch("launch.train", "--data_dir", "/missing", "--model_dir", str(tmp_path / "m"))
    _one_line_error(out, "--data_dir /missing", "dataset_spec.json")


def test_evaluate_without_a_model_is_one_line(preprocessed_dir, tmp_path):
    out = _launch(
        "launch.evaluate", "--data_dir", str(preprocessed_dir), "--model_dir", str(tmp_path)
    )
    _one_line_error(out, f"--model_dir {tmp_path}", "config.json")


def test_preprocess_errors_are_one_line(tmp_path):
    out = _launch("launch.preprocess", "--input", "/missing.csv", "--output_dir", str(tmp_path))
    _one_line_error(out, "--input /missing.csv", "no such file")
    bad = tmp_path / "bad.csv"
    bad.write_text("uid,iid,ts\n1,2,1600000000\n")
    out = _launch(
        "launch.preprocess", "--format=csv", "--input", str(bad), "--output_dir", str(tmp_path)
    )
    _one_line_error(out, f"--input {bad}", "'user_id'", "--columns user=NAME")
    items = tmp_path / "items.csv"
    items.write_text("id,brand\n2,b\n")
    good = tmp_path / "good.csv"
    good.write_text("user_id,item_id,timestamp\n1,2,1600000000\n")
    out = _launch(
        "launch.preprocess", "--format=csv", f"--input={good}", f"--item_table={items}",
        "--output_dir", str(tmp_path / "o"),
    )  # fmt: skip
    _one_line_error(out, f"--item_table {items}", "'item_id'")


def test_query_prints_history_beside_the_answer():
    from launch import query

    events = [{"item": "a1", "leaf_category": "L1"}, {"item": "a2", "leaf_category": "L2"}]
    answer = {
        "items": ["b1", "b2", "b3"],
        "sides": [{"leaf_category": "L2"}, {"category": "C9"}, {}],
        "scores": [2.5, 1.25, None],
    }
    lines = query.side_by_side(events, answer).splitlines()
    assert len(lines) == 2 + 3
    assert lines[2].split() == ["a2", "L2", "b1", "L2", "2.500"]  # newest event first
    assert lines[3].split() == ["a1", "L1", "b2", "C9", "1.250"]
    assert lines[4].split() == ["b3", "-"]


def test_preprocess_console_is_quiet_by_default(tmp_path):
    # Beam's worker chatter ("... Worker: severity: INFO ...", hundreds of lines a run) stays
    # off the console unless --beam_logs.
    events = tmp_path / "events.csv"
    rows = [
        f"u{u},i{(u * 7 + j) % 13},{1_600_000_000 + 60 * j}" for u in range(20) for j in range(8)
    ]
    events.write_text("user_id,item_id,timestamp\n" + "\n".join(rows) + "\n")
    out = _launch(
        "launch.preprocess", "--format=csv", f"--input={events}", "--min_item_count=1",
        f"--output_dir={tmp_path / 'out'}", "--direct_num_workers=1",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    console = out.stdout + out.stderr
    assert "severity" not in console and "local_job_service" not in console
    # Nor the lines each worker subprocess prints as it starts (launch/console.py).
    assert "apitools not found" not in console, console[-3000:]
    assert "Logging handler created" not in console, console[-3000:]
    assert len(console.splitlines()) < 40, console[-3000:]


def test_train_console_has_no_info_chatter(preprocessed_dir, tmp_path):
    # absl prints INFO by default; TensorFlow's checkpoint saver alone logs a line per save
    # ("Sharding callback duration: ..."). --verbosity=0 brings such lines back.
    out = _launch(
        "launch.train", f"--data_dir={preprocessed_dir}", f"--model_dir={tmp_path / 'm'}",
        "--preset=smoke", "--steps_per_epoch=2", "--epochs=2",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Sharding callback" not in out.stderr, out.stderr[-2000:]
    # oneDNN's notice for a bool transpose (CPUs without AVX-512): the LSTM takes no mask.
    assert "DT_BOOL" not in out.stderr, out.stderr[-2000:]


def test_the_final_fit_flag_offers_what_bench_lib_runs():
    from absl import flags

    from launch import bench_lib, common

    assert flags.FLAGS[common.FINAL_FIT.name].parser.enum_values == list(bench_lib.FINAL_FITS)


def test_without_lines_drops_matching_lines_of_this_process_and_its_children(capfd):
    from launch import console

    child = "import sys; sys.stderr.write('child noise\\nkeep 2\\nlast, no newline')"
    with console.without_lines(["noise"]):
        os.write(2, b"keep 1\nparent noise\n")
        subprocess.run([sys.executable, "-c", child], check=True)
    os.write(2, b"\nnoise after the block\n")
    assert capfd.readouterr().err == "keep 1\nkeep 2\nlast, no newline\nnoise after the block\n"


def test_drop_messages_filters_by_substring():
    from launch.console import DropMessages

    f = DropMessages(["apitools not found"])
    record = logging.LogRecord("root", logging.WARNING, __file__, 1, "%s", ("x",), None)
    assert f.filter(record)
    record.args = ("apitools not found, and bigquery ...",)
    assert not f.filter(record)


def test_without_lines_runs_where_stderr_is_closed():
    code = (
        "import os\nfrom launch import console\nos.close(2)\n"
        "with console.without_lines(['x']):\n    print('ran')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert (out.returncode, out.stdout) == (0, "ran\n"), out


def test_tensorflow_startup_lines_stay_off_the_console():
    import pathlib

    import pytest

    from launch.console import SHOW_TF_STARTUP_ENV, TF_STARTUP_NOISE

    code = (
        "import sys, launch, tensorflow as tf\n"
        "assert 'Quiet' not in type(tf.__loader__).__name__, tf.__loader__\n"
        "sys.stderr.write('written after the import\\n')"
    )
    root = str(pathlib.Path(__file__).resolve().parents[1])
    env = {k: v for k, v in os.environ.items() if k != SHOW_TF_STARTUP_ENV}
    env.update(PYTHONPATH=root, TF_CPP_MIN_LOG_LEVEL="2")

    def stderr(**extra):
        out = subprocess.run(
            [sys.executable, "-c", code], env={**env, **extra}, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stderr

    shown = [line for line in TF_STARTUP_NOISE if line in stderr(**{SHOW_TF_STARTUP_ENV: "1"})]
    if not shown:
        pytest.skip("this TensorFlow build prints none of the startup lines on this machine")
    quiet = stderr()
    assert not [line for line in shown if line in quiet], quiet
    assert "written after the import\n" in quiet
