"""Markdown table of bench_split runs: every system's score.py metrics, SDM's chosen epoch, the
history rule and the wall time; runs of one split with several seeds as mean ± std.

    python benchmarks/quality_table.py RUN_DIR [RUN_DIR ...]
"""

import json
import os
import statistics
import sys

METRICS = ("HitRate@20", "HitRate@50", "Recall@50", "NDCG@20", "NDCG@50")


def main(run_dirs):
    groups: dict[str, list[dict]] = {}
    for d in run_dirs:
        path = os.path.join(d, "bench_summary.json")
        if not os.path.exists(path):
            print(f"| {d} | failed or cut short: no bench_summary.json |")
            continue
        with open(path) as f:
            s = json.load(f)
        split = s["split"]
        name = f"{split['format']} {split['protocol']}"
        groups.setdefault(name, []).append(s)
    print(
        "| split | system | seeds | " + " | ".join(METRICS) + " | chosen epoch | history | wall s |"
    )
    print("|---" * (len(METRICS) + 6) + "|")
    for name, runs in groups.items():
        for system in runs[0]["systems"]:
            vals = {
                m: [r["systems"][system].get("score_py", r["systems"][system]["metrics"])[m]
                    for r in runs]
                for m in METRICS
            }  # fmt: skip
            cells = []
            for m in METRICS:
                v = vals[m]
                sd = f" ± {statistics.stdev(v):.3f}" if len(v) > 1 else ""
                cells.append(f"{statistics.mean(v):.4f}{sd}")
            sdm = system == "SDM"
            epochs = ", ".join(str(r["chosen_epoch"]) for r in runs) if sdm else ""
            rule = runs[0].get("history_rule", runs[0]["exclude_seen"]) if sdm else "same"
            wall = ", ".join(f"{r['seconds']['total']:.0f}" for r in runs) if sdm else ""
            row = [name, system, str(len(runs)), *cells, epochs, rule, wall]
            print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
