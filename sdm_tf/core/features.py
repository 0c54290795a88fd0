"""The one feature spec.

Everything that reads or writes SDM examples derives from this module:

* the Beam pipeline encodes records with `FeatureSpec.encode`;
* the tf.data reader parses them with `FeatureSpec.parse_spec` / `FeatureSpec.parse`;
* the exported user tower takes raw string ids described by `FeatureSpec.serving_signature`.

A dataset does not have to carry every side feature (Taobao UserBehavior only has a leaf
category). `DatasetSpec` records which ones a dataset has, and the vocabulary sizes; it is written
by the pipeline as `dataset_spec.json` and read back by training and serving, so nothing
downstream hard-codes the list.

Id conventions (every vocabulary): 0 is padding, 1 is out-of-vocabulary, and real values start
at `NUM_RESERVED`, ordered by descending frequency. The softmax classes are the real items only,
`class = item_id - NUM_RESERVED`, so class 0 is the most frequent item, as the log-uniform
sampler assumes.

Record layout (per example), with L the sequence length and N = next_n:

=====================  =========  ==========  ===========================================
key                    dtype      shape       meaning
=====================  =========  ==========  ===========================================
user_id                string     []          raw user id
length                 int64      []          L, valid positions of the short-term sequence
short_<f>              int64      [L]         short-term sequence of feature f
long_<f>               int64      [<=S]       long-term bag of feature f (most recent first)
profile_<p>            int64      []          user profile feature p
label                  int64      [L]         (train) next item after each position
label_next_n           int64      [L, N]      (train) next N items after each position, 0-padded
truth                  string     [T]         (eval) raw ids of the ground-truth items
history                string     [H]         (eval) distinct raw ids of every fed item, in order
=====================  =========  ==========  ===========================================
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

from sdm_tf.core import example_proto as P

PAD_ID = 0
OOV_ID = 1
NUM_RESERVED = 2
PAD_TOKEN = ""
OOV_TOKEN = "[OOV]"

# Item-side features in their canonical order; "item" is always present and first.
ITEM = "item"
ALL_ITEM_FEATURES: tuple[str, ...] = ("item", "leaf_category", "category", "brand", "shop")
# Profile features the synthetic generator produces; real datasets may name their own.
DEFAULT_PROFILE_FEATURES: tuple[str, ...] = ("age", "gender", "life_stage")

TRAIN = "train"
EVAL = "eval"
KINDS = (TRAIN, EVAL)
# Directory of the held-out test queries (EVAL layout). With a test set, eval/ is the validation
# split carved from the training events, and test/ is scored once, at the end.
TEST = "test"
# Beside a validation split: training examples from every event, validation targets included,
# for the final fit once validation has chosen the number of epochs.
TRAIN_ALL = "train_all"


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What one preprocessed dataset contains.

    Attributes:
      item_features: item-side features present, "item" first (subset of ALL_ITEM_FEATURES).
      profile_features: user profile features present.
      vocab_sizes: feature name -> vocabulary size including the reserved ids.
      max_session_length: longest short-term sequence.
      long_term_size: longest long-term bag per feature.
      next_n: labels per position for next-N training.
      session_gap: seconds; the session rule the data was built with (serving reuses it).
      long_term_days: the long-term window the data was built with.
      prior_size: longest `PRIOR` list of a training record (0: none written).
    """

    item_features: tuple[str, ...] = (ITEM,)
    profile_features: tuple[str, ...] = ()
    vocab_sizes: Mapping[str, int] = dataclasses.field(default_factory=dict)
    max_session_length: int = 50
    long_term_size: int = 20
    next_n: int = 5
    session_gap: int = 600
    long_term_days: float = 7.0
    prior_size: int = 1000

    def __post_init__(self):
        features = tuple(self.item_features)
        if not features or features[0] != ITEM:
            raise ValueError(f"item_features must start with {ITEM!r}, got {features}")
        unknown = [f for f in features if f not in ALL_ITEM_FEATURES]
        if unknown:
            raise ValueError(f"unknown item features {unknown}; known: {ALL_ITEM_FEATURES}")
        if len(set(features)) != len(features):
            raise ValueError(f"duplicate item features in {features}")
        object.__setattr__(self, "item_features", features)
        object.__setattr__(self, "profile_features", tuple(self.profile_features))
        object.__setattr__(self, "vocab_sizes", dict(self.vocab_sizes))
        for name in (*features, *self.profile_features):
            if self.vocab_sizes and name not in self.vocab_sizes:
                raise ValueError(f"no vocabulary size for feature {name!r}")
        for name in ("max_session_length", "long_term_size", "next_n"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.prior_size < 0:
            raise ValueError("prior_size must be >= 0")

    @property
    def num_items(self) -> int:
        """Number of softmax classes (real items, without the reserved ids)."""
        return self.vocab_sizes[ITEM] - NUM_RESERVED

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DatasetSpec:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in fields})

    @classmethod
    def from_json(cls, text: str) -> DatasetSpec:
        return cls.from_dict(json.loads(text))


def short_key(feature: str) -> str:
    return f"short_{feature}"


def long_key(feature: str) -> str:
    return f"long_{feature}"


def profile_key(feature: str) -> str:
    return f"profile_{feature}"


USER_ID = "user_id"
LENGTH = "length"
LABEL = "label"
LABEL_NEXT_N = "label_next_n"
TRUTH = "truth"
HISTORY = "history"
# Training records: the user's distinct items before the record's session, for the softmax mask.
PRIOR = "prior"


@dataclasses.dataclass(frozen=True)
class FeatureDef:
    """One stored feature.

    `shape` is the per-example shape after parsing; None is a variable dimension.
    `stored_shape` is how it sits in the tf.train.Example (a flat list or a scalar).
    """

    name: str
    dtype: str  # "int64" or "string"
    shape: tuple[int | None, ...]

    @property
    def is_scalar(self) -> bool:
        return self.shape == ()


class FeatureSpec:
    """Derives the parse spec, the Example encoder and the serving signature from a DatasetSpec."""

    def __init__(self, dataset: DatasetSpec):
        self.dataset = dataset

    # -- the feature list -------------------------------------------------------------------
    def features(self, kind: str = TRAIN) -> dict[str, FeatureDef]:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        d = self.dataset
        out = [FeatureDef(USER_ID, "string", ()), FeatureDef(LENGTH, "int64", ())]
        out += [FeatureDef(short_key(f), "int64", (None,)) for f in d.item_features]
        out += [FeatureDef(long_key(f), "int64", (None,)) for f in d.item_features]
        out += [FeatureDef(profile_key(p), "int64", ()) for p in d.profile_features]
        if kind == TRAIN:
            out += [
                FeatureDef(LABEL, "int64", (None,)),
                FeatureDef(LABEL_NEXT_N, "int64", (None, d.next_n)),
                FeatureDef(PRIOR, "int64", (None,)),
            ]
        else:
            out += [FeatureDef(TRUTH, "string", (None,)), FeatureDef(HISTORY, "string", (None,))]
        return {f.name: f for f in out}

    def model_input_keys(self) -> list[str]:
        """Keys the user tower consumes (no labels, no ids)."""
        d = self.dataset
        return (
            [LENGTH]
            + [short_key(f) for f in d.item_features]
            + [long_key(f) for f in d.item_features]
            + [profile_key(p) for p in d.profile_features]
        )

    # -- tf.data side -----------------------------------------------------------------------
    def parse_spec(self, kind: str = TRAIN) -> dict[str, Any]:
        import tensorflow as tf

        spec = {}
        for f in self.features(kind).values():
            dtype = tf.int64 if f.dtype == "int64" else tf.string
            if f.is_scalar:
                spec[f.name] = tf.io.FixedLenFeature([], dtype)
            else:
                spec[f.name] = tf.io.FixedLenSequenceFeature([], dtype, allow_missing=True)
        return spec

    def parse(self, serialized, kind: str = TRAIN):
        """Parses one serialized Example into a dict of dense tensors with `features()` shapes."""
        import tensorflow as tf

        parsed = tf.io.parse_single_example(serialized, self.parse_spec(kind))
        if kind == TRAIN:
            parsed[LABEL_NEXT_N] = tf.reshape(parsed[LABEL_NEXT_N], [-1, self.dataset.next_n])
        return parsed

    def model_input_signature(self) -> dict[str, Any]:
        """Id inputs of the user tower (int64, batched; 0 = padding): the model-side twin of
        `serving_signature`."""
        import tensorflow as tf

        return {
            k: tf.TensorSpec([None] if k == LENGTH or k.startswith("profile_") else [None, None],
                             tf.int64, name=k)
            for k in self.model_input_keys()
        }  # fmt: skip

    def serving_signature(self) -> dict[str, Any]:
        """Raw-id inputs of the exported user tower: strings, batched, "" is padding."""
        import tensorflow as tf

        d = self.dataset
        sig = {LENGTH: tf.TensorSpec([None], tf.int64, name=LENGTH)}
        for f in d.item_features:
            sig[short_key(f)] = tf.TensorSpec([None, None], tf.string, name=short_key(f))
            sig[long_key(f)] = tf.TensorSpec([None, None], tf.string, name=long_key(f))
        for p in d.profile_features:
            sig[profile_key(p)] = tf.TensorSpec([None], tf.string, name=profile_key(p))
        return sig

    # -- pipeline side ----------------------------------------------------------------------
    def validate_record(self, record: Mapping[str, Any], kind: str = TRAIN) -> None:
        """Raises ValueError when a record does not match the spec (keys, lengths)."""
        feats = self.features(kind)
        missing = set(feats) - set(record)
        extra = set(record) - set(feats)
        if missing or extra:
            raise ValueError(f"record keys differ from the spec: missing={missing} extra={extra}")
        n = int(record[LENGTH])
        if not 1 <= n <= self.dataset.max_session_length:
            raise ValueError(f"length {n} outside [1, {self.dataset.max_session_length}]")
        for f in self.dataset.item_features:
            if len(record[short_key(f)]) != n:
                raise ValueError(f"{short_key(f)} has {len(record[short_key(f)])} values, not {n}")
            if len(record[long_key(f)]) > self.dataset.long_term_size:
                raise ValueError(f"{long_key(f)} longer than {self.dataset.long_term_size}")
        if kind == TRAIN:
            if len(record[LABEL]) != n:
                raise ValueError(f"{LABEL} has {len(record[LABEL])} values, not {n}")
            if len(record[LABEL_NEXT_N]) != n * self.dataset.next_n:
                raise ValueError(f"{LABEL_NEXT_N} must hold length * next_n values")
            if len(record[PRIOR]) > self.dataset.prior_size:
                raise ValueError(f"{PRIOR} longer than {self.dataset.prior_size}")

    def encode(self, record: Mapping[str, Any], kind: str = TRAIN) -> bytes:
        """Serializes one record (python ints / strings / lists) to a tf.train.Example: the bytes
        TensorFlow's deterministic serialization gives (its map-key order, the same in every
        process), written by `example_proto` so that the pipeline's workers never load
        TensorFlow."""
        self.validate_record(record, kind)
        feature = {}
        for f in self.features(kind).values():
            value = record[f.name]
            values: Sequence[Any] = [value] if f.is_scalar else value
            if f.dtype == "int64":
                feature[f.name] = P.int64_feature(values)
            else:
                feature[f.name] = P.bytes_feature(
                    v.encode("utf-8") if isinstance(v, str) else v for v in values
                )
        return P.example(feature)
