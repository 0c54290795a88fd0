"""python -m launch.explain --model_dir runs/sdm --data_dir out/ [--user U ...] [--output_dir D]

Writes the paper's figures for a trained SDM model as PNGs (default: MODEL_DIR/figures):
self_attention_<user>.png (Fig. 4: each head's weights over the user's session),
gates.png (Fig. 5: the gate and the long-term attention, users side by side) and
training_curves.png (loss and validation HitRate@50 per epoch). Without --user, the users of
the split with the longest sessions are shown. Needs matplotlib (`pip install 'sdm[figures]'`).
"""

import os

from absl import flags

from launch import common
from sdm_tf import figures

DATA_DIR, MODEL_DIR, OUTPUT_DIR = common.DATA_DIR, common.MODEL_DIR, common.OUTPUT_DIR
USERS = flags.DEFINE_multi_string("user", None, "users to show (repeat the flag)")
NUM_USERS = flags.DEFINE_integer("num_users", 4, "users to show when no --user is given")
EXAMPLES = flags.DEFINE_enum(
    "examples", "eval", ["eval", "test"], "the split whose query examples are shown"
)


def main(argv):
    del argv
    common.require(DATA_DIR, MODEL_DIR)
    common.check_data_dir(DATA_DIR.value, EXAMPLES.value)
    common.check_model_dir(MODEL_DIR.value)
    out = OUTPUT_DIR.value or os.path.join(MODEL_DIR.value, "figures")
    paths = figures.write_figures(
        MODEL_DIR.value, DATA_DIR.value, out, USERS.value, NUM_USERS.value, EXAMPLES.value
    )
    for p in paths:
        print(p)


def entry():
    common.run(main)


if __name__ == "__main__":
    entry()
