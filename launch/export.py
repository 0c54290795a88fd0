"""python -m launch.export --data_dir out/ --model_dir runs/sdm --export_dir exports/sdm

Writes a new version directory under --export_dir (complete once its manifest.json, written
last, is there) and prints its path.
"""

from launch import common
from sdm_tf import config as C
from sdm_tf.serving import export
from sdm_tf.train import training

DATA_DIR, MODEL_DIR, EXPORT_DIR = common.DATA_DIR, common.MODEL_DIR, common.EXPORT_DIR


def run(data_dir: str, model_dir: str, export_dir: str) -> str:
    model = training.restore(model_dir)
    path = export.export(model, C.load_config(model_dir), data_dir, export_dir)
    export.Export(path)  # verify: checksums, shapes, and the SavedModel loads
    return path


def main(argv):
    del argv
    common.require(DATA_DIR, MODEL_DIR, EXPORT_DIR)
    common.check_data_dir(DATA_DIR.value)
    common.check_model_dir(MODEL_DIR.value)
    print(run(DATA_DIR.value, MODEL_DIR.value, EXPORT_DIR.value))


def entry():
    common.run(main)


if __name__ == "__main__":
    entry()
