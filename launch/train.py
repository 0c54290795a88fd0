"""python -m launch.train --data_dir out/ --model_dir runs/sdm [--preset ...] [--override ...]"""

import json

from absl import app, flags

from launch import common
from sdm_tf import training

DATA_DIR = flags.DEFINE_string("data_dir", None, "preprocessed data (launch.preprocess output)")
MODEL_DIR = flags.DEFINE_string("model_dir", None, "checkpoints, config, logs")
flags.mark_flags_as_required(["data_dir", "model_dir"])


def main(argv):
    del argv
    cfg = common.experiment_config()
    result = training.train(cfg, DATA_DIR.value, MODEL_DIR.value)
    result.pop("model")
    print(json.dumps(result, indent=1))


def entry():
    app.run(main)


if __name__ == "__main__":
    entry()
