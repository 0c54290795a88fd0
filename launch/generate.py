"""python -m launch.generate --output_dir data/ --num_events 1000000 [--seed 0]"""

import json

from absl import flags

from launch import common
from pipelines import synthetic

FLAGS = common.OUTPUT_DIR  # events.csv, items.csv, users.csv go here
_EVENTS = flags.DEFINE_integer("num_events", 1_000_000, "events to write")
_ITEMS = flags.DEFINE_integer("num_items", 20_000, "catalog size")
_DAYS = flags.DEFINE_integer("days", 14, "days of logs")
_SEED = flags.DEFINE_integer("seed", 0, "random seed (the output is a function of it)")


def main(argv):
    del argv
    common.require(FLAGS)
    cfg = synthetic.SyntheticConfig(
        num_events=_EVENTS.value, num_items=_ITEMS.value, days=_DAYS.value, seed=_SEED.value
    )
    print(json.dumps(synthetic.generate(cfg, FLAGS.value)))


def entry():
    common.run(main)


if __name__ == "__main__":
    entry()
