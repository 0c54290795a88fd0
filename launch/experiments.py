"""python -m launch.experiments --split S --output_dir O --table 2|3|4|all [--seeds 3] [--jobs N]
    [--final_fit refit|none|...]

The paper's tables (§4.3-4.5) on any ../shared/bench split, each cell a full `bench_split` run
(validation split, early stopping, the history rule chosen on validation, final fit, the test
split scored once), mean ± std over seeds:

* Table 2: popularity, item-CF, YouTube DNN, GRU4Rec and SDMMA / PSDMMA / PSDMMAL / PSDMMAL-N as
  the paper has them (without profile features the user attention gets a learned query), and
  PSDMMAL as sdm runs it (without profile features: no user attention);
* Table 3: multi-head self-attention with 1 / 2 / 4 / 8 heads (PSDMMAL as sdm runs it, with the
  paper's long-term rule: every user's short and long term fused);
* Table 4: fusion multiply / concat / add / gate, and side information off (PSDMMAL-NoS), the
  same (where almost no example has a long-term history sdm's default skips the fusion, which
  would leave the table nothing to compare).

The split is preprocessed once, and a configuration that appears in several tables (Table 3's
4 heads is Table 4's gate; on most data sets both are sdm's PSDMMAL) is run once per seed.
`--jobs N` runs N cells at a time, each in its own process with its share of the cores (default:
one per core, as memory allows). Writes O/table<N>.md (with the command that made it) and
each run's bench_summary.json under O/runs/; a run that fails is shown as failed, never as a
number. Resumable: finished cells are read, not run again. Stopped (Ctrl-C, SIGTERM), it stops
its cells; killed outright, each cell's process ends itself within a second. `--final_fit none`
ranks the test split with validation's checkpoint in every cell (no final fit; O/runs_none/,
O/table<N>_none.md), and the baselines count the same training events as those checkpoints
(without the validation targets), so every system of the table sees the same data.
"""

import concurrent.futures
import dataclasses
import glob
import json
import multiprocessing
import os
import shlex
import signal
import statistics
import sys
import threading
import time
import traceback
from collections.abc import Sequence

from absl import flags

from launch import bench_lib, common
from launch.preprocess import quiet_beam
from sdm_tf import config as C

SPLIT = common.SPLIT
TABLE = flags.DEFINE_enum("table", "all", ["2", "3", "4", "all"], "which table")
SEEDS = flags.DEFINE_integer("seeds", 3, "seeds per cell (train.seed = 0 .. seeds-1)")
FINAL_FIT = common.FINAL_FIT
JOBS = flags.DEFINE_integer(
    "jobs", 0, "cells run at a time, each in its own process (0: one per core, as memory allows)"
)
METRICS = ("HitRate", "Recall", "Precision", "F1", "NDCG")
KS = (20, 50)

PAPER_QUERY = "model.user_attention_without_profile=true"
PAPER_LONG_TERM = "model.empty_long_term=fuse"
# Each table: rows of (label, preset-level overrides, variant). A label's part before " (" names
# its run directory.
TABLES = {
    "2": [
        ("YouTube DNN", ["model.kind=youtube_dnn"], "PSDMMAL"),
        ("GRU4Rec", ["model.kind=gru4rec"], "PSDMMAL"),
        ("SDMMA", [], "SDMMA"),
        # The paper's blocks as they are: on data without a profile the user attention attends
        # with a learned query, which sdm's default leaves out (the last row).
        ("PSDMMA (learned query without a profile)", [PAPER_QUERY], "PSDMMA"),
        ("PSDMMAL (learned query without a profile)", [PAPER_QUERY], "PSDMMAL"),
        ("PSDMMAL-N (learned query without a profile)", [PAPER_QUERY], "PSDMMAL-N"),
        ("PSDMMAL as sdm runs it (no user attention without a profile)", [], "PSDMMAL"),
    ],
    "3": [
        (f"{h} head{'s' * (h > 1)}", [f"model.num_heads={h}", PAPER_LONG_TERM], "PSDMMAL")
        for h in (1, 2, 4, 8)
    ],
    "4": [
        (f"fusion {f}", [f"model.fusion={f}", PAPER_LONG_TERM], "PSDMMAL") for f in C.FUSIONS[::-1]
    ]
    + [("PSDMMAL-NoS (no side information)", [PAPER_LONG_TERM], "PSDMMAL-NoS")],
}


def cell(runs: list[dict], system: str, metric: str) -> str:
    vals = [
        r["systems"][system].get("score_py", r["systems"][system]["metrics"])[metric] for r in runs
    ]
    sd = f" ± {statistics.stdev(vals):.4f}" if len(vals) > 1 else ""
    return f"{statistics.mean(vals):.4f}{sd}"


def markdown(
    table: str,
    rows: list[tuple[str, list[dict], list[str]]],
    command: str,
    final_fit: str = "refit",
) -> str:
    cols = [f"{m}@{k}" for k in KS for m in METRICS]
    lines = [f"### Table {table}", "", f"`{command}`", ""]
    if final_fit == "none":
        lines += [
            "No final fit: validation's best checkpoint ranks the test split; popularity and"
            " item-CF count the same training events (without the validation targets).",
            "",
        ]
    elif final_fit != "refit":
        lines += [f"Final fit: {final_fit} (`launch.bench_split --final_fit`).", ""]
    lines.append("| model | seeds | " + " | ".join(cols) + " | chosen epochs | wall s |")
    lines.append("|---" * (len(cols) + 4) + "|")
    for label, runs, failures in rows:
        if not runs:
            lines.append(f"| {label} | 0 | " + " | ".join(["failed"] * len(cols)) + " | | |")
            continue
        system = "SDM"
        epochs = ", ".join(str(r["chosen_epoch"]) for r in runs)
        wall = ", ".join(f"{r['seconds']['total']:.0f}" for r in runs)
        note = f" ({len(failures)} failed)" if failures else ""
        cells = [cell(runs, system, c) for c in cols]
        lines.append(
            f"| {label}{note} | {len(runs)} | " + " | ".join(cells) + f" | {epochs} | {wall} |"
        )
        if table == "2" and label == TABLES["2"][0][0]:
            for base in ("popularity", "item-CF"):  # the same split and rule, from that run
                cells = [cell(runs, base, c) for c in cols]
                lines.insert(-1, f"| {base} | {len(runs)} | " + " | ".join(cells) + " | | |")
    return "\n".join(lines) + "\n"


def kind_suffix(final_fit: str) -> str:
    """What tells one kind of final fit's files apart: "" for refit (the default), else "_KIND"
    (runs_none/, table2_none.md, failed_none_*.txt)."""
    return "" if final_fit == "refit" else f"_{final_fit}"


def runs_dir(out: str, final_fit: str = "refit") -> str:
    """Where the cells of one kind of final fit live: OUT/runs/ (refit), else OUT/runs_KIND/."""
    return os.path.join(out, "runs" + kind_suffix(final_fit))


def finished_runs(out: str, final_fit: str = "refit") -> list[dict]:
    """The summaries of every finished run of `final_fit` (of any table), each with its "_dir"."""
    paths = sorted(glob.glob(os.path.join(runs_dir(out, final_fit), "*", "bench_summary.json")))
    return [{**_summary(os.path.dirname(p)), "_dir": os.path.dirname(p)} for p in paths]


def _read_json(path: str) -> dict:
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def has_profile(data_dir: str) -> bool:
    """Whether the preprocessed split (once it exists) carries profile features."""
    return bool(_read_json(os.path.join(data_dir, "dataset_spec.json")).get("profile_features"))


def effective(config: dict, profile: bool, stats: dict | None = None) -> dict:
    """A run's config as it acts on the data: with profile features the query rule is moot, and
    "auto" settings are what the data's `stats` decide. Configs saved before the rules existed
    load as they ran (`ExperimentConfig.from_dict`)."""
    cfg = C.resolve_auto(C.ExperimentConfig.from_dict(config), stats or {})
    config = json.loads(json.dumps(cfg.to_dict()))
    if profile:
        config["model"]["user_attention_without_profile"] = False
    return config


@dataclasses.dataclass
class Cell:
    table: str
    label: str
    seed: int
    run_dir: str
    config: dict  # ExperimentConfig.to_dict()
    same_as: str | None = None  # the run dir of an identical configuration (run once)


def plan(
    out: str,
    tables: Sequence[str],
    seeds: int,
    final_fit: str = "refit",
    overrides: Sequence[str] = (),
) -> list[Cell]:
    """Every (table, row, seed) cell, in table order; `overrides` apply after each row's own. A
    configuration that acts on the data as one already finished or planned (PSDMMAL is also
    Table 3's 4 heads and Table 4's gate) points at that run instead of running again."""
    profile = has_profile(os.path.join(out, "data"))
    stats = _read_json(os.path.join(out, "data", "stats.json"))
    seen = {json.dumps(effective(r["config"], profile, stats), sort_keys=True): r["_dir"]
            for r in finished_runs(out, final_fit)}  # fmt: skip
    cells = []
    for table in tables:
        for label, row, variant in TABLES[table]:
            for seed in range(seeds):
                slug = label.split(" (")[0].replace(" ", "_").lower()
                run_dir = os.path.join(runs_dir(out, final_fit), f"t{table}_{slug}_s{seed}")
                cfg = C.get_config("default", variant, [*row, *overrides, f"train.seed={seed}"])
                key = json.dumps(effective(cfg.to_dict(), profile, stats), sort_keys=True)
                done = os.path.exists(os.path.join(run_dir, "bench_summary.json"))
                same = None if done else seen.get(key)
                seen.setdefault(key, run_dir)
                cells.append(Cell(table, label, seed, run_dir, cfg.to_dict(), same))
    return cells


def _init_cell_process(threads: int, parent: int) -> None:
    """A pool worker's TensorFlow shares the cores with the other workers, and the worker ends
    itself within a second of its parent's end: a parent killed outright (SIGKILL, an OOM kill)
    runs no cleanup, and a cell would otherwise train on for many minutes as an orphan."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def cell_pool(jobs: int) -> concurrent.futures.ProcessPoolExecutor:
    """`jobs` spawned worker processes, each with its share of the cores."""
    return concurrent.futures.ProcessPoolExecutor(
        jobs,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_cell_process,
        initargs=(max(1, (os.cpu_count() or 1) // jobs), os.getpid()),
    )


def run_in_pool(
    executor: concurrent.futures.Executor, calls: dict[str, tuple]
) -> tuple[dict[str, object], dict[str, str]]:
    """Runs each key's `(fn, *args)` on `executor`: (results, failures' tracebacks) by key.

    Interrupted (Ctrl-C, or SIGTERM under `stop_on_sigterm`), it stops the pool's worker
    processes before it re-raises, so no cell outlives the run (a resumed run starts an
    unfinished cell again)."""
    results: dict[str, object] = {}
    failures: dict[str, str] = {}
    try:
        futures = {executor.submit(fn, *args): key for key, (fn, *args) in calls.items()}
        for future in concurrent.futures.as_completed(futures):
            key = futures[future]
            if future.exception() is None:
                results[key] = future.result()
            else:
                failures[key] = "".join(traceback.format_exception(future.exception()))
    except BaseException:
        # ProcessPoolExecutor has no public way to stop running calls before Python 3.14.
        for process in (getattr(executor, "_processes", None) or {}).values():
            process.terminate()
        executor.shutdown(wait=False, cancel_futures=True)
        raise
    executor.shutdown()
    return results, failures


def stop_on_sigterm() -> None:
    """SIGTERM (kill, a pod's end) unwinds like Ctrl-C instead of ending the process on the
    spot, so `run_in_pool` can stop the cells it started."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def _run_cell(
    split: str, run_dir: str, config: dict, pipeline_args: list[str], data_dir: str, final_fit: str
):
    return bench_lib.run(
        split, run_dir, C.ExperimentConfig.from_dict(config), preprocess_args=pipeline_args,
        data_dir=data_dir, reuse_data=True, verbose=0, final_fit=final_fit,
    )  # fmt: skip


# Peak resident memory of one cell, rounded up (a Beauty cell: 2.7 GiB; docs/performance.md).
GIB_PER_JOB = 4


def default_jobs(cores: int | None = None, memory_gib: float | None = None) -> int:
    """Cells at a time: one per core (each with one thread), as many as memory holds at
    `GIB_PER_JOB` each, at least one. A training process on two threads keeps about 1.6 of them
    busy (its LSTM runs step after step), so one-thread cells side by side get more done: on two
    cores, two cells took 1/1.21 of the time they took one after the other (docs/performance.md)."""
    cores = cores or os.cpu_count() or 1
    if memory_gib is None:
        memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return max(1, min(cores, int(memory_gib // GIB_PER_JOB)))


def run_tables(
    split: str,
    out: str,
    tables: Sequence[str],
    seeds: int,
    pipeline_args: list[str],
    jobs: int = 1,
    executor: concurrent.futures.Executor | None = None,
    final_fit: str = "refit",
    overrides: Sequence[str] = (),
) -> dict[str, str]:
    """Runs every missing cell of `tables` (`jobs` at a time, each in its own process, once the
    split is preprocessed) and returns each table's markdown. Resumable: a finished cell is read,
    not run again."""
    data_dir = os.path.join(out, "data")
    if not os.path.exists(os.path.join(data_dir, "stats.json")):
        # Once, before any cell: the cells share it, and the plan reads its stats.
        bench_lib.preprocess_split(split, data_dir, pipeline_args)
    cells = plan(out, tables, seeds, final_fit, overrides)
    todo = [c for c in cells if c.same_as is None and not _summary(c.run_dir)]
    failures: dict[str, str] = {}
    results: dict[str, dict] = {}
    if executor is None and jobs > 1:
        executor = cell_pool(jobs)
    if executor is None:
        for c in todo:
            try:
                results[c.run_dir] = _run_cell(
                    split, c.run_dir, c.config, pipeline_args, data_dir, final_fit
                )
            except Exception:  # noqa: BLE001  (a failed cell is reported, the table goes on)
                failures[c.run_dir] = traceback.format_exc()
    else:
        calls = {
            c.run_dir: (_run_cell, split, c.run_dir, c.config, pipeline_args, data_dir, final_fit)
            for c in todo
        }
        results, failures = run_in_pool(executor, calls)
    for run_dir, text in failures.items():
        name = f"failed{kind_suffix(final_fit)}_{os.path.basename(run_dir)}.txt"
        with open(os.path.join(out, name), "w") as f:
            f.write(text)
    command = "python -m launch.experiments " + shlex.join(sys.argv[1:])
    texts = {}
    for table in tables:
        rows = []
        for label, _, _ in TABLES[table]:
            mine = [c for c in cells if c.table == table and c.label == label]
            dirs = [c.same_as or c.run_dir for c in mine]
            runs = [r for r in (results.get(d) or _summary(d) for d in dirs) if r]
            rows.append((label, runs, [failures[d] for d in dirs if d in failures]))
        texts[table] = markdown(table, rows, command, final_fit)
    return texts


def _summary(run_dir: str) -> dict | None:
    return _read_json(os.path.join(run_dir, "bench_summary.json")) or None


def run_table(split: str, out: str, table: str, seeds: int, pipeline_args: list[str]) -> str:
    return run_tables(split, out, [table], seeds, pipeline_args)[table]


def main(argv):
    del argv
    common.require(SPLIT, common.OUTPUT_DIR)
    stop_on_sigterm()
    out = common.OUTPUT_DIR.value
    os.makedirs(out, exist_ok=True)
    pipeline_args: list[str] = []
    quiet_beam(pipeline_args)
    tables = ("2", "3", "4") if TABLE.value == "all" else (TABLE.value,)
    jobs = JOBS.value or default_jobs()
    texts = run_tables(
        SPLIT.value,
        out,
        tables,
        SEEDS.value,
        pipeline_args,
        jobs=jobs,
        final_fit=FINAL_FIT.value,
        overrides=common.OVERRIDES.value,
    )
    for table, text in texts.items():
        with open(os.path.join(out, f"table{table}{kind_suffix(FINAL_FIT.value)}.md"), "w") as f:
            f.write(text)
        print(text)


def entry():
    common.run(main)


if __name__ == "__main__":
    entry()
