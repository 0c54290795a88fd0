"""python -m launch.bench_split --split DIR --output_dir OUT [--preset NAME] [--epochs N]

DIR is any directory written by ../shared/bench/prepare.py. Prints score.py's metrics.
"""

import json

from absl import app, flags

from launch import common
from sdm_tf import bench_split

SPLIT = flags.DEFINE_string("split", None, "a prepare.py output directory")
OUTPUT_DIR = common.OUTPUT_DIR
EXCLUDE_SEEN = flags.DEFINE_enum(
    "exclude_seen",
    "auto",
    ["auto", "yes", "no"],
    "drop items of the test user's history from the ranking (auto: yes for leave-one-out)",
)
SCORE_SCRIPT = flags.DEFINE_string("score_script", None, "score.py (default: ../shared/bench)")
PIPELINE_ARGS = flags.DEFINE_multi_string(
    "pipeline_arg", [], "extra launch.preprocess argument, e.g. --pipeline_arg=--long_term_days=30"
)


def main(argv):
    del argv
    common.require(SPLIT, OUTPUT_DIR)
    summary = bench_split.run(
        SPLIT.value,
        OUTPUT_DIR.value,
        common.experiment_config(),
        exclude_seen=EXCLUDE_SEEN.value,
        score_script=SCORE_SCRIPT.value,
        preprocess_args=PIPELINE_ARGS.value,
    )
    print(json.dumps(summary.get("score_py", summary["metrics"]), indent=1))
    print(json.dumps({"seconds": summary["seconds"]}))


def entry():
    app.run(main)


if __name__ == "__main__":
    entry()
