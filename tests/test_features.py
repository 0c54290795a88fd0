"""The feature spec, and the round trip: pipeline output read by the spec's parser."""

import json

import pytest
import tensorflow as tf

from sdm_tf.core import features as F

SPEC = F.DatasetSpec(
    item_features=("item", "leaf_category", "brand"),
    profile_features=("age",),
    vocab_sizes={"item": 10, "leaf_category": 5, "brand": 4, "age": 3},
    next_n=2,
)


def _record():
    return {
        F.USER_ID: "u1",
        F.LENGTH: 2,
        "short_item": [2, 3],
        "short_leaf_category": [2, 2],
        "short_brand": [3, 1],
        "long_item": [4],
        "long_leaf_category": [],
        "long_brand": [2],
        "profile_age": 2,
        F.LABEL: [3, 4],
        F.LABEL_NEXT_N: [3, 4, 4, 0],
        F.PRIOR: [5, 4],
    }


def test_dataset_spec_json_round_trip():
    assert F.DatasetSpec.from_json(SPEC.to_json()) == SPEC
    assert SPEC.num_items == 8


@pytest.mark.parametrize(
    "kwargs",
    [
        {"item_features": ("brand",)},
        {"item_features": ("item", "colour")},
        {"item_features": ("item", "brand", "brand")},
        {"vocab_sizes": {"item": 3}, "item_features": ("item", "brand")},
        {"next_n": 0},
        {"prior_size": -1},
    ],
)
def test_dataset_spec_rejects_bad_specs(kwargs):
    with pytest.raises(ValueError):
        F.DatasetSpec(**kwargs)


def test_encode_then_parse_is_identity():
    fs = F.FeatureSpec(SPEC)
    parsed = fs.parse(tf.constant(fs.encode(_record())))
    rec = _record()
    assert set(parsed) == set(fs.features(F.TRAIN))
    assert parsed[F.USER_ID].numpy() == b"u1"
    assert parsed["short_brand"].numpy().tolist() == [3, 1]
    assert parsed["long_leaf_category"].numpy().tolist() == []
    assert parsed[F.LABEL_NEXT_N].numpy().tolist() == [[3, 4], [4, 0]]
    assert parsed[F.PRIOR].numpy().tolist() == [5, 4]
    assert int(parsed["profile_age"]) == rec["profile_age"]


def test_a_prior_longer_than_the_spec_is_rejected():
    fs = F.FeatureSpec(F.DatasetSpec(**{**SPEC.__dict__, "prior_size": 1}))
    with pytest.raises(ValueError, match="prior longer than 1"):
        fs.encode(_record())
    assert fs.encode({**_record(), F.PRIOR: [5]})


def test_encode_gives_the_same_bytes_in_every_process():
    """Beam workers are separate processes: a record's bytes must not follow the hash seed."""
    import os
    import subprocess
    import sys

    code = (
        "from tests.test_features import SPEC, _record; from sdm_tf.core import features as F; "
        "print(F.FeatureSpec(SPEC).encode(_record()).hex())"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in (1, 2)
    }
    assert outs == {F.FeatureSpec(SPEC).encode(_record()).hex()}


def test_encode_rejects_records_that_do_not_match():
    fs = F.FeatureSpec(SPEC)
    bad = _record()
    bad["short_item"] = [2]
    with pytest.raises(ValueError, match="short_item"):
        fs.encode(bad)
    extra = _record()
    extra["colour"] = 1
    with pytest.raises(ValueError, match="extra"):
        fs.encode(extra)


def test_serving_signature_takes_raw_strings():
    sig = F.FeatureSpec(SPEC).serving_signature()
    assert set(sig) == set(F.FeatureSpec(SPEC).model_input_keys())
    assert sig["short_item"].dtype == tf.string and sig["short_item"].shape.as_list() == [
        None,
        None,
    ]
    assert sig["profile_age"].shape.as_list() == [None]
    assert sig[F.LENGTH].dtype == tf.int64


def _dtype(name):
    return tf.int64 if name == "int64" else tf.string


@pytest.mark.parametrize("kind", F.KINDS)
def test_pipeline_output_matches_the_spec(preprocessed_dir, kind):
    spec = F.DatasetSpec.from_json((preprocessed_dir / "dataset_spec.json").read_text())
    assert spec.item_features == F.ALL_ITEM_FEATURES  # the synthetic data has every side feature
    assert spec.profile_features == ("age", "gender", "life_stage")
    fs = F.FeatureSpec(spec)
    files = sorted(str(p) for p in (preprocessed_dir / kind).glob("*.tfrecord.gz"))
    assert files
    ds = tf.data.TFRecordDataset(files, compression_type="GZIP").map(lambda s: fs.parse(s, kind))
    n = 0
    for ex in ds:
        n += 1
        assert set(ex) == set(fs.features(kind))
        for name, fdef in fs.features(kind).items():
            t = ex[name]
            assert t.dtype == _dtype(fdef.dtype), name
            assert t.shape.rank == len(fdef.shape), name
            assert tf.TensorShape(fdef.shape).is_compatible_with(t.shape), name
        length = int(ex[F.LENGTH])
        assert 1 <= length <= spec.max_session_length
        for f in spec.item_features:
            assert ex[F.short_key(f)].shape[0] == length
            assert ex[F.long_key(f)].shape[0] <= spec.long_term_size
            ids = ex[F.short_key(f)].numpy()
            assert ids.min() >= F.OOV_ID and ids.max() < spec.vocab_sizes[f]
        if kind == F.TRAIN:
            assert ex[F.LABEL].shape[0] == length
            assert ex[F.LABEL].numpy().min() >= F.NUM_RESERVED
    stats = json.loads((preprocessed_dir / "stats.json").read_text())
    assert n == stats[f"{kind}_examples"] > 0
