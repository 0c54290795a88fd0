"""The user tower."""

import numpy as np
import pytest
import tensorflow as tf

from sdm_tf import config as C
from sdm_tf.core import features as F
from sdm_tf.model.sdm import SDM, UserTower
from tests.model_case import ITEM_ONLY_SPEC, SPEC, batch, item_only, smoke


@pytest.mark.parametrize("variant", sorted(C.VARIANTS))
@pytest.mark.parametrize("fusion", ["gate", "add", "concat", "multiply"])
def test_shapes_for_every_variant(variant, fusion):
    cfg = smoke(
        variant,
        f"model.fusion={fusion}",
        "model.next_n=" + ("3" if variant.endswith("-N") else "1"),
    )
    model = SDM(SPEC, cfg)
    x = batch()
    assert model.tower(x).shape == (3, 6, cfg.dim)
    assert model(x).shape == (3, cfg.dim)
    assert model.score(model(x)).shape == (3, SPEC.num_items)
    loss = model.compute_loss(x, training=True)
    assert loss.shape == () and np.isfinite(loss.numpy())


def test_tied_output_shares_the_item_embedding():
    model = SDM(SPEC, smoke("PSDMMAL", "model.tied_output=true"))
    model(batch())
    np.testing.assert_array_equal(
        model.item_table, model.tower.embeddings.tables["item"][F.NUM_RESERVED :]
    )
    assert not hasattr(model, "output_embeddings")


def test_without_a_profile_the_user_attention_is_left_out():
    spec = ITEM_ONLY_SPEC
    x = item_only(batch())
    tower = UserTower(spec, smoke("PSDMMA"))
    sdmma = UserTower(spec, smoke("SDMMA"))
    out = tower(x)
    sdmma(x)
    assert tower.user_attention is None and "no user attention" in tower.blocks
    assert "user_attention" not in tower.explain(x)
    # The same weights give the same vectors: PSDMMA without a profile is SDMMA.
    sdmma.set_weights(tower.get_weights())
    np.testing.assert_allclose(sdmma(x).numpy(), out.numpy(), rtol=1e-6, atol=1e-6)


def test_without_a_profile_a_learned_query_on_request():
    spec = ITEM_ONLY_SPEC
    x = item_only(batch())
    tower = UserTower(spec, smoke("PSDMMAL", "model.user_attention_without_profile=true"))
    assert tower(x).shape == (3, 6, 8)
    assert tower.user_attention is not None and "(learned query)" in tower.blocks
    # Eq. 10 with one query for everyone: position t's weights over k <= t are one softmax of
    # the same logits, so the last position of a full row weighs every position.
    alpha = tower.explain(x)["user_attention"].numpy()
    np.testing.assert_allclose(alpha.sum(-1)[0], np.ones(6), rtol=1e-5)
    assert np.all(alpha[0, -1] > 0) and np.all(np.triu(alpha[0], 1) == 0)


def test_with_a_profile_the_user_attention_stays():
    tower = UserTower(SPEC, smoke("PSDMMAL"))
    tower(batch())
    assert tower.user_attention is not None and tower.blocks.count("user attention") == 1
    assert "learned" not in tower.blocks


def test_an_empty_long_term_bag_can_leave_the_short_term_alone():
    x = batch()  # row 2's bags are all empty, rows 0 and 1 have items
    fused = UserTower(SPEC, smoke("PSDMMAL"))
    alone = UserTower(SPEC, smoke("PSDMMAL", "model.empty_long_term=short_term"))
    fused(x), alone(x)
    alone.set_weights(fused.get_weights())
    parts, out = fused.explain(x), alone(x).numpy()
    np.testing.assert_allclose(out[2], parts["short_term"].numpy()[2], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out[:2], parts["output"].numpy()[:2], rtol=1e-6, atol=1e-6)
    assert not np.allclose(out[2], parts["output"].numpy()[2])  # "fuse" mixes tanh(b) in
    with pytest.raises(ValueError, match="empty_long_term"):
        smoke("PSDMMAL", "model.empty_long_term=drop")


def test_configs_saved_before_the_rule_keep_the_learned_query():
    old = C.get_config("smoke", "PSDMMAL").to_dict()
    del old["model"]["user_attention_without_profile"]
    assert C.ExperimentConfig.from_dict(old).model.user_attention_without_profile
    assert not C.get_config("smoke", "PSDMMAL").model.user_attention_without_profile
    del old["model"]["mask_inputs"]  # and before the mask, the softmax over every item
    assert C.ExperimentConfig.from_dict(old).model.mask_inputs == "off"


@pytest.mark.parametrize("variant", ["SDMMA", "PSDMMAL"])
def test_tower_is_causal(variant):
    tower = UserTower(SPEC, smoke(variant))
    x = batch()
    base = tower(x, training=False).numpy()
    changed = dict(x)
    ids = x["short_item"].numpy().copy()
    ids[0, 4] = 11 if ids[0, 4] != 11 else 10
    changed["short_item"] = tf.constant(ids)
    out = tower(changed, training=False).numpy()
    np.testing.assert_allclose(out[0, :4], base[0, :4], atol=1e-5)
    assert np.abs(out[0, 4] - base[0, 4]).max() > 1e-6  # the change itself is seen


def test_tower_ignores_padding():
    tower = UserTower(SPEC, smoke("PSDMMAL"))
    x = batch()
    base = tower(x, training=False).numpy()
    changed = dict(x)
    for f in SPEC.item_features:
        ids = x[F.short_key(f)].numpy().copy()
        ids[1, 3:] = 3  # sequence 1 has length 3
        changed[F.short_key(f)] = tf.constant(ids)
    out = tower(changed, training=False).numpy()
    np.testing.assert_allclose(out[1, :3], base[1, :3], atol=1e-5)


def test_last_picks_the_final_valid_position():
    tower = UserTower(SPEC, smoke("PSDMMAL"))
    x = batch()
    out = tower(x)
    last = tower.last(out, x[F.LENGTH]).numpy()
    np.testing.assert_allclose(last[1], out[1, 2])
    np.testing.assert_allclose(last[2], out[2, 0])


def _transpose_dtypes(model, x):
    """The dtypes of every Transpose in a traced training step (gradients included)."""

    def step(x):
        with tf.GradientTape() as tape:
            loss = model.compute_loss(x, training=True)
        return tape.gradient(loss, model.trainable_variables)

    graph = tf.function(step).get_concrete_function(x).graph.as_graph_def()
    nodes = list(graph.node) + [n for f in graph.library.function for n in f.node_def]
    return {tf.as_dtype(n.attr["T"].type).name for n in nodes if n.op == "Transpose"}


@pytest.mark.parametrize("kind", sorted(C.MODEL_KINDS))
@pytest.mark.parametrize("profile", [True, False])
def test_the_training_step_transposes_floats_only(kind, profile):
    # oneDNN prints an error-looking notice ("supports DT_BOOL / DT_INT32 only on platforms
    # with AVX-512") the first time a step transposes such a tensor on a CPU without AVX-512:
    # a Keras mask through an RNN did (bool), and tile's gradient (int32).
    spec, x = (SPEC, batch()) if profile else (ITEM_ONLY_SPEC, item_only(batch()))
    model = SDM(spec, smoke("PSDMMAL", f"model.kind={kind}", "model.next_n=1"))
    model.compute_loss(x, training=True)  # builds the variables
    assert _transpose_dtypes(model, x) <= {"float32"}


def _without_gradient(model, x) -> list[str]:
    """The names of the trainable weights a training step's loss gives no gradient."""
    with tf.GradientTape() as tape:
        loss = model.compute_loss(x, training=True)
    grads = tape.gradient(loss, model.trainable_variables)
    return [v.name for v, g in zip(model.trainable_variables, grads) if g is None]


@pytest.mark.parametrize("variant", sorted(C.VARIANTS))
@pytest.mark.parametrize("profile", [True, False])
def test_every_weight_of_every_variant_gets_a_gradient(variant, profile):
    # A weight no block reads has no gradient, and Keras' fit warns about it on every step
    # (SDMMA without a profile warned about the learned query it built and never read).
    spec, x = (SPEC, batch()) if profile else (ITEM_ONLY_SPEC, item_only(batch()))
    model = SDM(spec, smoke(variant, "model.next_n=" + ("3" if variant.endswith("-N") else "1")))
    assert _without_gradient(model, x) == []


@pytest.mark.parametrize("kind", sorted(C.MODEL_KINDS))
@pytest.mark.parametrize("profile", [True, False])
def test_every_weight_of_every_model_kind_gets_a_gradient(kind, profile):
    spec, x = (SPEC, batch()) if profile else (ITEM_ONLY_SPEC, item_only(batch()))
    model = SDM(spec, smoke("PSDMMAL", f"model.kind={kind}", "model.next_n=1"))
    assert _without_gradient(model, x) == []
