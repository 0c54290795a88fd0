"""python -m launch.preprocess --input ... --output_dir ... [Beam pipeline options]"""

import sys

import sdm_tf  # noqa: F401  (sets the Keras switch before TensorFlow loads)
from pipelines import preprocess


def entry() -> None:
    preprocess.run(sys.argv[1:])


if __name__ == "__main__":
    entry()
