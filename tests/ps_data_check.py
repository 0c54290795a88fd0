"""Which training examples parameter-server workers consume over one epoch, with and without
the tf.data service; run in its own process by test_distribute.py (a cluster connection changes
TensorFlow's global context) on an in-process cluster, and by test_local_cluster.py as the chief
of a multi-process cluster (TF_CONFIG and SDM_DATA_SERVICE set by LocalCluster).

    python tests/ps_data_check.py DATA_DIR service|local OUT_JSON

Two workers run `training.train_reader`'s input (the real one) under ParameterServerStrategy
for one epoch of steps; a counting model adds a fingerprint of every example it is fed (user,
length, first label) to a table on the parameter server, which is compared with the training
split read directly.
"""

import collections
import json
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402

from sdm_tf import config as C  # noqa: E402
from sdm_tf.core import features as F  # noqa: E402
from sdm_tf.train import data_service as DS  # noqa: E402
from sdm_tf.train import distribute as D  # noqa: E402
from sdm_tf.train import training  # noqa: E402
from sdm_tf.train.input import InputReader  # noqa: E402

BUCKETS = 1 << 18


def fingerprint(batch):
    key = tf.strings.join(
        [batch[F.USER_ID], tf.strings.as_string(batch[F.LENGTH]),
         tf.strings.as_string(batch[F.LABEL][:, 0])], ":",
    )  # fmt: skip
    return tf.strings.to_hash_bucket_fast(key, BUCKETS)


class Count(tf.keras.Model):
    def __init__(self):
        super().__init__()
        self.counts = tf.Variable(tf.zeros([BUCKETS], tf.int64), trainable=False)
        self.w = tf.Variable(0.0)

    def train_step(self, batch):
        fp = fingerprint(batch)
        self.counts.scatter_add(tf.IndexedSlices(tf.ones_like(fp), fp))
        with tf.GradientTape() as tape:
            loss = self.w * self.w
        self.optimizer.apply_gradients(zip(tape.gradient(loss, [self.w]), [self.w]))
        return {"loss": loss}


def main(data_dir, mode, out):
    cfg = C.get_config("smoke", "PSDMMAL")
    spec = training.load_dataset_spec(data_dir)
    # Every example of the split, fingerprinted the same way, read directly.
    whole = InputReader(
        pattern=os.path.join(data_dir, F.TRAIN, "*.tfrecord.gz"), spec=F.FeatureSpec(spec),
        kind=F.TRAIN, batch_size=256, training=False,
    )()  # fmt: skip
    expected = collections.Counter(int(x) for b in whole for x in fingerprint(b).numpy())
    if os.environ.get("TF_CONFIG"):  # the chief of a multi-process cluster (LocalCluster)
        resolver, servers = tf.distribute.cluster_resolver.TFConfigClusterResolver(), None
        target = DS.address() if mode == "service" else ""
    else:  # an in-process cluster, and a tf.data service in this process
        service = DS.LocalService(num_workers=1) if mode == "service" else None
        resolver, servers = D.in_process_cluster(num_ps=1, num_workers=2)
        target = service.target if service else ""
    strategy = D.parameter_server_strategy(resolver)
    reader = training.train_reader(data_dir, spec, cfg, data_service=target)
    with strategy.scope():
        model = Count()
        model.compile(optimizer=tf.keras.optimizers.SGD(0.1))
    steps = training.steps_per_epoch(data_dir, cfg)
    model.fit(
        tf.keras.utils.experimental.DatasetCreator(reader),
        epochs=1, steps_per_epoch=steps, verbose=0,
    )  # fmt: skip
    counts = model.counts.numpy()
    consumed = int(counts.sum())
    covered = sum(min(int(counts[k]), n) for k, n in expected.items())
    with open(out, "w") as f:
        json.dump(
            {"examples": sum(expected.values()), "consumed": consumed, "distinct_covered": covered,
             "repeats": consumed - covered, "steps": steps},
            f,
        )  # fmt: skip
    del servers


if __name__ == "__main__":
    main(*sys.argv[1:4])
    # The report is written. Tearing down a connected cluster logs gRPC errors ("Failed to
    # remove function remotely") and can turn the exit status non-zero after the work is done;
    # a failure before this point still exits non-zero through the exception.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
