"""python -m launch.evaluate --data_dir out/ --model_dir runs/sdm [--k 20 --k 50 --k 100]
    [--examples eval|test] [--exclude_fed]

Writes metrics.json and predictions.jsonl (../shared/bench/score.py's format) to --output_dir
(default: MODEL_DIR/eval) and prints the metrics table with the popularity baseline.
"""

import json
import os

import tensorflow as tf
from absl import flags

from launch import common
from sdm_tf.core import features as F
from sdm_tf.train import baselines as B
from sdm_tf.train import evaluation as E
from sdm_tf.train import predict, training
from sdm_tf.train import validation as V
from sdm_tf.train.data_dir import load_item_vocab

DATA_DIR, MODEL_DIR, OUTPUT_DIR = common.DATA_DIR, common.MODEL_DIR, common.OUTPUT_DIR
KS = flags.DEFINE_multi_integer("k", [20, 50, 100], "cut-offs")
EXCLUDE_SEEN = flags.DEFINE_bool(
    "exclude_fed", False, "never return items of the user's fed history"
)
EXAMPLES = flags.DEFINE_enum(
    "examples",
    None,
    [F.EVAL, F.TEST],
    "the examples to score; default: test where the data has a validation split (eval then "
    "holds validation's targets, scored by the model of the best validation epoch), else eval",
)


def run(data_dir, model_dir, output_dir, ks, exclude_seen=False, split=None) -> dict:
    model = training.restore(model_dir)
    # With a validation split in eval/, the held-out queries are test/.
    if split is None:
        split = F.TEST if V.has_validation(data_dir) else F.EVAL
    metrics, predictions, truth = predict.evaluate(model, data_dir, ks, exclude_seen, split=split)
    popular = B.popularity_predictions(load_item_vocab(data_dir), {}, truth, max(ks))
    baseline = E.retrieval_metrics(truth, popular, ks)
    tf.io.gfile.makedirs(output_dir)  # gs:// as well as local
    E.write_predictions(os.path.join(output_dir, "predictions.jsonl"), predictions)
    result = {"model": metrics, "popularity": baseline}
    with tf.io.gfile.GFile(os.path.join(output_dir, "metrics.json"), "w") as f:
        f.write(json.dumps(result, indent=1))
    print(E.format_table({"SDM": metrics, "popularity": baseline}, ks))
    return result


def main(argv):
    del argv
    common.require(DATA_DIR, MODEL_DIR)
    common.check_data_dir(DATA_DIR.value, EXAMPLES.value or "eval")
    common.check_model_dir(MODEL_DIR.value)
    out = OUTPUT_DIR.value or os.path.join(MODEL_DIR.value, "eval")
    run(DATA_DIR.value, MODEL_DIR.value, out, KS.value, EXCLUDE_SEEN.value, EXAMPLES.value)


def entry():
    common.run(main)


if __name__ == "__main__":
    entry()
