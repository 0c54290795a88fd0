"""A small feature spec, a batch of it and the smoke config: shared by the tower and loss tests."""

import numpy as np
import tensorflow as tf

from sdm_tf import config as C
from sdm_tf.core import features as F

SPEC = F.DatasetSpec(
    item_features=("item", "leaf_category", "brand"),
    profile_features=("age", "gender"),
    vocab_sizes={"item": 12, "leaf_category": 5, "brand": 4, "age": 4, "gender": 3},
    next_n=3,
)


def batch(b=3, t=6, s=4, seed=0):
    rng = np.random.default_rng(seed)
    length = np.array([t, 3, 1][:b] + [t] * max(0, b - 3), np.int64)
    valid = np.arange(t)[None] < length[:, None]
    out = {F.LENGTH: length}
    for f in SPEC.item_features:
        n = SPEC.vocab_sizes[f]
        out[F.short_key(f)] = np.where(valid, rng.integers(2, n, (b, t)), 0)
        bag = rng.integers(2, n, (b, s))
        bag[1, 2:] = 0  # a short bag
        bag[2, :] = 0  # an empty bag
        out[F.long_key(f)] = bag
    for p in SPEC.profile_features:
        out[F.profile_key(p)] = rng.integers(2, SPEC.vocab_sizes[p], (b,))
    out[F.LABEL] = np.where(valid, rng.integers(2, 12, (b, t)), 0)
    nn = rng.integers(2, 12, (b, t, 3))
    nn[:, -1, 1:] = 0
    out[F.LABEL_NEXT_N] = np.where(valid[..., None], nn, 0)
    return {k: tf.constant(v) for k, v in out.items()}


# Items only: no side features, no profile (the learned user query's case).
ITEM_ONLY_SPEC = F.DatasetSpec(vocab_sizes={"item": 12}, next_n=3)


def item_only(x):
    """`batch()`'s item, length and label tensors: a batch of ITEM_ONLY_SPEC."""
    labels = (F.LENGTH, F.LABEL, F.LABEL_NEXT_N)
    return {k: v for k, v in x.items() if k.endswith("item") or k in labels}


def smoke(variant, *overrides):
    return C.get_config("smoke", variant, overrides).model
