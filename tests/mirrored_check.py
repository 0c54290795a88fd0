"""One step under MirroredStrategy on two logical CPUs against one step on one device.

Run in its own process by test_distribute.py: logical devices must be configured before
TensorFlow initialises its runtime.

    python tests/mirrored_check.py DATA_DIR OUT_JSON
"""

import json
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

from sdm_tf import config as C  # noqa: E402
from sdm_tf.core import features as F  # noqa: E402
from sdm_tf.train import training  # noqa: E402


def one_step(strategy, spec, cfg, batch):
    with strategy.scope():
        tf.keras.utils.set_random_seed(0)
        model = training.build_model(spec, cfg)
        # SGD: the step is the gradient itself (Adam's first step hides any scale).
        model.compile(optimizer=tf.keras.optimizers.SGD(1.0))

        def every_class(true_classes, num_sampled):  # deterministic: the full softmax
            del num_sampled
            n = model.num_classes
            return (
                tf.range(n, dtype=tf.int64),
                tf.ones(tf.shape(true_classes), tf.float32),
                tf.ones([n], tf.float32),
            )

        model.candidate_sampler = every_class
    before = [v.numpy() for v in model.trainable_variables]
    data = tf.data.Dataset.from_tensors(batch)
    history = model.fit(data, epochs=1, verbose=0)
    after = [v.numpy() for v in model.trainable_variables]
    return [a - b for a, b in zip(after, before)], float(history.history["loss"][0])


def main(data_dir, out):
    spec = training.load_dataset_spec(data_dir)
    cfg = C.get_config(
        "smoke", "PSDMMAL", ["model.lstm_dropout=0", "train.batch_size=16", "model.num_sampled=8"]
    )
    batch = next(iter(training.train_reader(data_dir, spec, cfg)()))
    batch = {k: v for k, v in batch.items() if k != F.USER_ID}
    single, loss1 = one_step(tf.distribute.OneDeviceStrategy("/cpu:0"), spec, cfg, batch)
    mirrored, loss2 = one_step(
        tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), spec, cfg, batch
    )
    diffs = [float(np.max(np.abs(a - b))) for a, b in zip(single, mirrored)]
    scale = [float(np.max(np.abs(a))) for a in single]
    with open(out, "w") as f:
        json.dump({"max_diff": max(diffs), "max_step": max(scale), "loss": [loss1, loss2]}, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
