"""The paper's learned baselines: same input, table and loss as SDM; only the tower differs."""

import numpy as np
import pytest
import tensorflow as tf

from sdm_tf import config as C
from sdm_tf.core import features as F
from sdm_tf.model.sdm import SDM
from tests.model_case import SPEC, batch

KINDS = ["youtube_dnn", "gru4rec"]


def model_of(kind, *overrides):
    return SDM(SPEC, C.get_config("smoke", "PSDMMAL", [f"model.kind={kind}", *overrides]).model)


@pytest.mark.parametrize("kind", KINDS)
def test_a_vector_per_position(kind):
    model = model_of(kind)
    x = batch()
    out = model.tower(x, training=False)
    assert out.shape == (3, 6, model.cfg.dim)
    assert model(x).shape == (3, model.cfg.dim)


@pytest.mark.parametrize("kind", KINDS)
def test_causal(kind):
    # The vector at position t sees items 0..t only: changing later items leaves it alone.
    model = model_of(kind)
    x = batch()
    base = model.tower(x, training=False).numpy()
    changed = dict(x)
    for f in SPEC.item_features:
        ids = x[F.short_key(f)].numpy().copy()
        ids[0, 3:] = 2
        changed[F.short_key(f)] = tf.constant(ids)
    out = model.tower(changed, training=False).numpy()
    np.testing.assert_allclose(out[0, :3], base[0, :3], atol=1e-5)
    assert np.abs(out[0, 3:] - base[0, 3:]).max() > 1e-4


def test_youtube_dnn_pools_without_order_and_gru4rec_does_not():
    # Swapping items 0 and 1 leaves the mean of items 0..1 (position 1 on) unchanged; position
    # 0 sees another item. A GRU's state at position 1 depends on the order.
    x = batch()
    swapped = dict(x)
    for f in SPEC.item_features:
        ids = x[F.short_key(f)].numpy().copy()
        ids[0, [0, 1]] = ids[0, [1, 0]]
        swapped[F.short_key(f)] = tf.constant(ids)
    for kind, same in (("youtube_dnn", True), ("gru4rec", False)):
        model = model_of(kind)
        a = model.tower(x, training=False).numpy()[0]
        b = model.tower(swapped, training=False).numpy()[0]
        assert np.abs(a[0] - b[0]).max() > 1e-4
        assert np.allclose(a[1:], b[1:], atol=1e-5) == same, kind


@pytest.mark.parametrize("kind", KINDS)
def test_the_sdm_objective_trains_it(kind):
    # The exact softmax over the small catalogue: a sampled loss draws new negatives at every
    # call, so one sample before and one after could cross by chance (seen once in CI).
    model = model_of(kind, "model.full_softmax_max_items=1000")
    assert model.full_softmax
    model.compile(optimizer=tf.keras.optimizers.Adam(0.05))
    x = batch()
    before = float(model.compute_loss(x))
    model.fit(tf.data.Dataset.from_tensors(x).repeat(40), verbose=0)
    assert float(model.compute_loss(x)) < before


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError, match=r"model\.kind must be one of"):
        C.get_config("smoke", "PSDMMAL", ["model.kind=narm"])


@pytest.mark.parametrize("kind", KINDS)
def test_train_and_export_a_baseline(kind, preprocessed_dir, tmp_path):
    from sdm_tf.serving import export as X
    from sdm_tf.train import predict, training
    from tests.test_export import raw_inputs

    cfg = C.get_config(
        "smoke", "PSDMMAL", [f"model.kind={kind}", "train.epochs=1", "train.steps_per_epoch=5"]
    )
    model = training.train(cfg, str(preprocessed_dir), str(tmp_path / "m"), verbose=0)["model"]
    exp = X.Export(X.export(model, cfg, str(preprocessed_dir), str(tmp_path / "x")))
    spec = model.dataset
    vocabs = {
        f: X.read_vocab(str(preprocessed_dir), f)
        for f in (*spec.item_features, *spec.profile_features)
    }
    keys = F.FeatureSpec(spec).model_input_keys()
    b = next(iter(predict.eval_batches(str(preprocessed_dir), spec, batch_size=16)))
    ours = model({k: b[k] for k in keys}, training=False).numpy()
    np.testing.assert_allclose(exp.user_vectors(raw_inputs(b, spec, vocabs)), ours, atol=1e-5)
