"""tf.data input: TFRecords written by the pipeline -> padded batches of the spec's features.

`InputReader` is a callable of `tf.distribute.InputContext`, so the same object feeds a single
device, `MirroredStrategy` (one input pipeline per worker: file shards) and a `DatasetCreator`
under `ParameterServerStrategy`, where the context never shards: there `data_service` divides
each pass between the workers (`sdm_tf.train.data_service`).
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from sdm_tf.core import features as F


@dataclasses.dataclass
class InputReader:
    """Reads `pattern` (sharded gzip TFRecords) as batches of `kind` examples.

    Training input is shuffled, repeated, and batched by length buckets (sequences of similar
    length together, §4.4), which keeps padding small. Evaluation input keeps file order.

    Attributes:
      pattern: file glob.
      spec: the FeatureSpec of the data.
      kind: features.TRAIN or features.EVAL.
      batch_size: global batch size (split across replicas by the input context).
      training: shuffle + repeat + bucket.
      bucket_boundaries: length boundaries of the buckets.
      shuffle_buffer: examples in the shuffle buffer.
      seed: shuffle seed.
      bucket_eval: batch evaluation input by length buckets too (deterministic, but not in file
        order): much less padding, for callers that key results by user.
      data_service: the tf.data service dispatcher (grpc://HOST:PORT) for training input: the
        pipeline runs on the service and every batch goes to one consumer, so parameter-server
        workers split each pass over the data instead of each reading all of it
        (`sdm_tf.train.data_service`). "" reads locally.
    """

    pattern: str
    spec: F.FeatureSpec
    kind: str = F.TRAIN
    batch_size: int = 256
    training: bool = True
    bucket_boundaries: tuple[int, ...] = (4, 8, 16, 32)
    shuffle_buffer: int = 10_000
    seed: int | None = None
    bucket_eval: bool = False
    data_service: str = ""

    def files(self) -> list[str]:
        files = sorted(tf.io.gfile.glob(self.pattern))
        if not files:
            raise FileNotFoundError(f"no TFRecord file matches {self.pattern}")
        return files

    def __call__(self, input_context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
        batch_size = self.batch_size
        ds = tf.data.Dataset.from_tensor_slices(self.files())
        if input_context is not None:
            batch_size = input_context.get_per_replica_batch_size(self.batch_size)
            if input_context.num_input_pipelines > 1 and not self.data_service:
                ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        if self.training:
            ds = ds.shuffle(len(self.files()), seed=self.seed)
        if self.training:
            ds = ds.interleave(
                lambda f: tf.data.TFRecordDataset(f, compression_type="GZIP"),
                num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=False,
            )
        else:  # file order, so predictions line up run after run
            ds = tf.data.TFRecordDataset(ds, compression_type="GZIP")
        if self.training:
            ds = ds.shuffle(self.shuffle_buffer, seed=self.seed).repeat()
        ds = ds.map(
            lambda s: self.spec.parse(s, self.kind),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=not self.training,
        )
        if self.training or self.bucket_eval:
            # Sequences of similar length together: a batch pads to its own longest sequence.
            boundaries = list(self.bucket_boundaries)
            ds = ds.bucket_by_sequence_length(
                lambda ex: tf.cast(ex[F.LENGTH], tf.int32),
                bucket_boundaries=boundaries,
                bucket_batch_sizes=[batch_size] * (len(boundaries) + 1),
                drop_remainder=self.training,
            )
        else:
            ds = ds.padded_batch(batch_size)
        if self.training and self.data_service:
            from sdm_tf.train import data_service

            ds = data_service.distribute(ds, self.data_service)
        return ds.prefetch(tf.data.AUTOTUNE)
