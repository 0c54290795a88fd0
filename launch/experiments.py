"""python -m launch.experiments --split S --output_dir O --table 2|3|4|all [--seeds 3]

The paper's tables (§4.3-4.5) on any ../shared/bench split, each cell a full `bench_split` run
(validation split, early stopping, the history rule chosen on validation, final fit, the test
split scored once), mean ± std over seeds:

* Table 2: popularity, item-CF, YouTube DNN, GRU4Rec and SDMMA / PSDMMA / PSDMMAL / PSDMMAL-N as
  the paper has them (without profile features the user attention gets a learned query), and
  PSDMMAL as sdm runs it (without profile features: no user attention);
* Table 3: multi-head self-attention with 1 / 2 / 4 / 8 heads (PSDMMAL as sdm runs it);
* Table 4: fusion multiply / concat / add / gate, and side information off (PSDMMAL-NoS), the
  same.

The split is preprocessed once, and a configuration that appears in several tables (sdm's
PSDMMAL is Table 3's 4 heads and Table 4's gate) is run once per seed. Writes O/table<N>.md (with the command that made it) and each
run's bench_summary.json under O/runs/; a run that fails is shown as failed, never as a number.
"""

import glob
import json
import os
import shlex
import statistics
import sys
import traceback

from absl import flags

from launch import bench_lib, common
from launch.preprocess import quiet_beam
from sdm_tf import config as C

SPLIT = common.SPLIT
TABLE = flags.DEFINE_enum("table", "all", ["2", "3", "4", "all"], "which table")
SEEDS = flags.DEFINE_integer("seeds", 3, "seeds per cell (train.seed = 0 .. seeds-1)")
METRICS = ("HitRate", "Recall", "Precision", "F1", "NDCG")
KS = (20, 50)

PAPER_QUERY = "model.user_attention_without_profile=true"
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
    "3": [(f"{h} head{'s' * (h > 1)}", [f"model.num_heads={h}"], "PSDMMAL") for h in (1, 2, 4, 8)],
    "4": [(f"fusion {f}", [f"model.fusion={f}"], "PSDMMAL") for f in C.FUSIONS[::-1]]
    + [("PSDMMAL-NoS (no side information)", [], "PSDMMAL-NoS")],
}


def cell(runs: list[dict], system: str, metric: str) -> str:
    vals = [
        r["systems"][system].get("score_py", r["systems"][system]["metrics"])[metric] for r in runs
    ]
    sd = f" ± {statistics.stdev(vals):.4f}" if len(vals) > 1 else ""
    return f"{statistics.mean(vals):.4f}{sd}"


def markdown(table: str, rows: list[tuple[str, list[dict], list[str]]], command: str) -> str:
    cols = [f"{m}@{k}" for k in KS for m in METRICS]
    lines = [f"### Table {table}", "", f"`{command}`", ""]
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


def finished_runs(out: str) -> list[dict]:
    """The summaries of every finished run under OUT/runs/ (of any table)."""
    found = []
    for path in sorted(glob.glob(os.path.join(out, "runs", "*", "bench_summary.json"))):
        with open(path) as f:
            found.append(json.load(f))
    return found


def has_profile(data_dir: str) -> bool:
    """Whether the preprocessed split (once it exists) carries profile features."""
    spec = os.path.join(data_dir, "dataset_spec.json")
    if not os.path.exists(spec):
        return False
    with open(spec) as f:
        return bool(json.load(f).get("profile_features"))


def effective(config: dict, profile: bool) -> dict:
    """A run's config as it acts on the data: with profile features the query rule is moot.
    Configs saved before the rule existed load as they ran (`ExperimentConfig.from_dict`)."""
    config = json.loads(json.dumps(C.ExperimentConfig.from_dict(config).to_dict()))
    if profile:
        config["model"]["user_attention_without_profile"] = False
    return config


def run_table(split: str, out: str, table: str, seeds: int, pipeline_args: list[str]) -> str:
    data_dir = os.path.join(out, "data")
    rows = []
    for label, overrides, variant in TABLES[table]:
        runs, failures = [], []
        for seed in range(seeds):
            slug = label.split(" (")[0].replace(" ", "_").lower()
            run_dir = os.path.join(out, "runs", f"t{table}_{slug}_s{seed}")
            summary_path = os.path.join(run_dir, "bench_summary.json")
            if os.path.exists(summary_path):  # resumable: a finished cell is not run again
                with open(summary_path) as f:
                    runs.append(json.load(f))
                continue
            cfg = C.get_config("default", variant, [*overrides, f"train.seed={seed}"])
            # One run per configuration: PSDMMAL is also Table 3's 4 heads and Table 4's gate.
            profile = has_profile(data_dir)
            resolved = effective(cfg.to_dict(), profile)
            same = [r for r in finished_runs(out) if effective(r["config"], profile) == resolved]
            if same:
                runs.append(same[0])
                continue
            try:
                runs.append(
                    bench_lib.run(
                        split, run_dir, cfg, preprocess_args=pipeline_args, data_dir=data_dir,
                        reuse_data=True, verbose=0,
                    )
                )  # fmt: skip
            except Exception:  # noqa: BLE001  (a failed cell is reported, the table goes on)
                failures.append(traceback.format_exc())
                with open(os.path.join(out, f"failed_t{table}_{slug}_s{seed}.txt"), "w") as f:
                    f.write(failures[-1])
        rows.append((label, runs, failures))
    return markdown(table, rows, "python -m launch.experiments " + shlex.join(sys.argv[1:]))


def main(argv):
    del argv
    common.require(SPLIT, common.OUTPUT_DIR)
    out = common.OUTPUT_DIR.value
    os.makedirs(out, exist_ok=True)
    pipeline_args: list[str] = []
    quiet_beam(pipeline_args)
    for table in ("2", "3", "4") if TABLE.value == "all" else (TABLE.value,):
        text = run_table(SPLIT.value, out, table, SEEDS.value, pipeline_args)
        with open(os.path.join(out, f"table{table}.md"), "w") as f:
            f.write(text)
        print(text)


def entry():
    common.run(main)


if __name__ == "__main__":
    entry()
