"""The feature spec, and the round trip: pipeline output read by the spec's parser."""

import json
import random

import pytest
import tensorflow as tf

from sdm_tf.core import features as F
from tests.feature_case import SPEC, _record


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
        "from tests.feature_case import SPEC, _record; from sdm_tf.core import features as F; "
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


def _tf_example(feats: dict) -> bytes:
    from tensorflow.core.example import example_pb2, feature_pb2

    feature = {
        k: (
            feature_pb2.Feature(int64_list=feature_pb2.Int64List(value=v))
            if kind == "i"
            else feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=v))
        )
        for k, (kind, v) in feats.items()
    }
    msg = example_pb2.Example(features=feature_pb2.Features(feature=feature))
    return msg.SerializeToString(deterministic=True)


def test_example_bytes_are_tensorflows():
    from sdm_tf.core import example_proto as P

    edges = {
        "z_empty_ints": ("i", []),
        "empty_bytes": ("b", []),
        "an_empty_string": ("b", [b""]),
        "ints": ("i", [0, 1, 127, 128, 16383, 16384, 2**35, -1, -(2**63), 2**63 - 1]),
        "utf8": ("b", ["连衣裙-é".encode(), b"\x00\xff"]),
        "long_value": ("b", [b"x" * 300]),  # a two-byte length
        "ünïcode_key": ("i", [5]),
        "A": ("i", [3]),
    }
    rng = random.Random(0)
    cases = [edges, {"only": ("i", [7])}]
    for _ in range(200):
        cases.append({
            "".join(rng.choices("abc_", k=rng.randint(1, 6))): (
                ("i", [rng.randint(-(2**63), 2**63 - 1) for _ in range(rng.randint(0, 40))])
                if rng.random() < 0.5
                else ("b", [rng.randbytes(rng.randint(0, 200)) for _ in range(rng.randint(0, 5))])
            )
            for _ in range(rng.randint(1, 12))
        })  # fmt: skip
    for feats in cases:
        ours = P.example(
            {
                k: P.int64_feature(v) if kind == "i" else P.bytes_feature(v)
                for k, (kind, v) in feats.items()
            }
        )
        assert ours == _tf_example(feats), feats
    with pytest.raises(ValueError, match="outside int64"):
        P.int64_feature([2**63])


def test_encoding_loads_no_tensorflow():
    import subprocess
    import sys

    code = (
        "import sys; from tests.feature_case import SPEC, _record; "
        "from sdm_tf.core import features as F; F.FeatureSpec(SPEC).encode(_record()); "
        "print('tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
