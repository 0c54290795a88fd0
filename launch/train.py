"""python -m launch.train --data_dir out/ --model_dir runs/sdm [--preset ...] [--override ...]"""

import json
import os

import tensorflow as tf
from absl import flags

from launch import common
from sdm_tf.train import data_service, distribute, evaluator, training

DATA_DIR, MODEL_DIR = common.DATA_DIR, common.MODEL_DIR
STRATEGY = flags.DEFINE_enum(
    "strategy", "auto", list(distribute.STRATEGIES),
    "auto: parameter servers when TF_CONFIG names ps tasks, mirrored on a multi-GPU host",
)  # fmt: skip
DATA_SERVICE = flags.DEFINE_string(
    "data_service",
    data_service.address(),
    "tf.data service dispatcher (grpc://HOST:PORT) feeding the training input; under parameter "
    "servers it divides each pass over the data between the workers (default: $SDM_DATA_SERVICE)",
)
PS_MIN_ROWS = flags.DEFINE_integer(
    "ps_min_rows", 4096, "tables with at least this many rows are split across the ps tasks"
)


def main(argv):
    del argv
    common.require(DATA_DIR, MODEL_DIR)
    common.check_data_dir(DATA_DIR.value)
    if not distribute.run_server_if_needed():  # ps / worker tasks serve until killed
        return
    if distribute.task_type() == "evaluator":
        # Runs until the chief's done marker (training.DONE_MARKER), however long training is.
        for result in evaluator.evaluator_loop(MODEL_DIR.value, DATA_DIR.value):
            print(json.dumps(result))
        return
    cfg = common.experiment_config()
    strategy = distribute.get_strategy(STRATEGY.value, PS_MIN_ROWS.value)
    result = training.train(
        cfg, DATA_DIR.value, MODEL_DIR.value, strategy=strategy, data_service=DATA_SERVICE.value
    )
    result.pop("model")
    with tf.io.gfile.GFile(os.path.join(MODEL_DIR.value, "train_summary.json"), "w") as f:
        f.write(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


def entry():
    common.run(main)


if __name__ == "__main__":
    entry()
