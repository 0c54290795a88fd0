"""Readers of what preprocessing writes into a data directory: the dataset spec, stats.json and
the vocabularies. Through `tf.io.gfile`, so the directory may live on any filesystem TensorFlow
reads (gs://, hdfs://)."""

from __future__ import annotations

import json
import os

import tensorflow as tf

from sdm_tf.core import features as F


def load_dataset_spec(data_dir: str) -> F.DatasetSpec:
    with tf.io.gfile.GFile(os.path.join(data_dir, "dataset_spec.json")) as f:
        return F.DatasetSpec.from_json(f.read())


def load_stats(data_dir: str) -> dict:
    with tf.io.gfile.GFile(os.path.join(data_dir, "stats.json")) as f:
        return json.load(f)


def load_vocab(data_dir: str, feature: str) -> list[str]:
    """Raw values of `feature` by vocabulary line (line i is id i + NUM_RESERVED)."""
    with tf.io.gfile.GFile(os.path.join(data_dir, "vocab", f"{feature}.tsv")) as f:
        return [line.split("\t", 1)[0] for line in f.read().splitlines()]


def load_item_vocab(data_dir: str) -> list[str]:
    """Raw item ids by class (class c is vocabulary line c, id c + NUM_RESERVED)."""
    return load_vocab(data_dir, F.ITEM)
