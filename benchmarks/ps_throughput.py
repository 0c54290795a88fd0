"""Parameter-server training throughput on this machine: examples/s consumed across workers.

    python benchmarks/ps_throughput.py --data_dir DATA [--steps 200] [--preset default]

Runs `launch.local_cluster` (separate ps / worker / chief processes, as on Kubernetes) with 1
and 2 workers, without and with the tf.data service, for the same total steps, plus one process
without parameter servers for reference. Examples/s = steps x batch / the chief's training
seconds (train_summary.json; start-up and tracing before the first step are included, as
they are in any job). All configurations in one run: compare the ratios, not the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def summary(model_dir: str) -> dict:
    with open(os.path.join(model_dir, "train_summary.json")) as f:
        return json.load(f)


def run(cmd: list[str]) -> float:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_USE_LEGACY_KERAS="1")
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data_dir", required=True)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--preset", default="default")
    ap.add_argument("--num_ps", type=int, default=2)
    a = ap.parse_args(argv)
    work = tempfile.mkdtemp(prefix="sdm_ps_bench_")
    train = [f"--data_dir={a.data_dir}", f"--preset={a.preset}", "--epochs=1",
             f"--steps_per_epoch={a.steps}"]  # fmt: skip
    rows = []
    configs = [("one process", 0, True)] + [
        (f"{w} worker{'s' * (w > 1)}, {'tf.data service' if ds else 'each reads all'}", w, ds)
        for w in (1, 2)
        for ds in (False, True)
    ]
    for name, workers, service in configs:
        model_dir = os.path.join(work, f"m{len(rows)}")
        if workers == 0:
            wall = run([sys.executable, "-m", "launch.train", *train, f"--model_dir={model_dir}"])
        else:
            cluster = [sys.executable, "-m", "launch.local_cluster", f"--num_ps={a.num_ps}",
                       f"--num_workers={workers}"]  # fmt: skip
            if not service:
                cluster.append("--no_data_service")
            wall = run([*cluster, "--", *train, f"--model_dir={model_dir}"])
        s = summary(model_dir)
        with open(os.path.join(model_dir, "config.json")) as f:
            batch = json.load(f)["train"]["batch_size"]
        row = {
            "config": name,
            "steps": s["optimizer_steps"],
            "train_s": round(s["train_seconds"], 1),
            "examples_per_s": round(s["optimizer_steps"] * batch / s["train_seconds"], 1),
            "wall_s": round(wall, 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    base = rows[0]["examples_per_s"]
    for r in rows:
        r["vs_one_process"] = round(r["examples_per_s"] / base, 2)
    print(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
