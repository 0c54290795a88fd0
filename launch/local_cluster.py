"""python -m launch.local_cluster --num_ps 2 --num_workers 2 -- --data_dir ... --model_dir ...

Starts N parameter servers and M workers as separate processes on localhost, each with its own
TF_CONFIG, runs the chief (the same `launch.train` command, as on Kubernetes), and stops every
process it started. Everything after `--` goes to launch.train.
"""

import argparse
import sys
import time

from sdm_tf.train.local_cluster import LocalCluster


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--num_ps", type=int, default=2)
    p.add_argument("--num_workers", type=int, default=2)
    p.add_argument("--log_dir", default=None, help="one log file per task")
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument(
        "--no_data_service", action="store_true",
        help="no tf.data service: every worker reads the whole training split (for comparison)",
    )  # fmt: skip
    a = p.parse_args(argv[:split])
    cluster = LocalCluster(
        argv[split + 1 :], a.num_ps, a.num_workers, a.log_dir, not a.no_data_service
    )
    start = time.perf_counter()
    code = cluster.run(timeout=a.timeout)
    print(f"chief exited with {code} after {time.perf_counter() - start:.1f} s")
    return code


def entry():
    sys.exit(main())


if __name__ == "__main__":
    entry()
