"""benchmarks/tower_probes.py: each probe changes what it says, and only inside its block."""

import numpy as np
import pytest
import tensorflow as tf

from benchmarks import tower_probes as P
from sdm_tf import config as C
from sdm_tf.model.layers import CausalSelfAttention
from sdm_tf.model.layers.masking import causal_mask
from sdm_tf.model.sdm import SDM
from tests.model_case import SPEC, batch


def gru4rec():
    return SDM(SPEC, C.get_config("smoke", "PSDMMAL", ["model.kind=gru4rec"]).model)


def test_gru4rec_lstm_swaps_the_cell_inside_the_block_only():
    with P.probe("gru4rec_lstm"):
        inside = gru4rec()
    outside = gru4rec()
    assert isinstance(inside.tower.gru, tf.keras.layers.LSTM)
    assert isinstance(outside.tower.gru, tf.keras.layers.GRU)
    assert inside.tower(batch(), training=False).shape == (3, 6, inside.cfg.dim)


def test_gru4rec_no_projection_returns_the_recurrent_state():
    with P.probe("gru4rec_no_projection"):
        model = gru4rec()
    x = batch()
    out = model.tower(x, training=False)
    state = model.tower.gru(model.tower.sequence(x, training=False))
    np.testing.assert_allclose(out.numpy(), state.numpy(), atol=1e-6)


@pytest.mark.parametrize(
    "name, pre_norm", [("attention_pre_norm", True), ("attention_no_norm", False)]
)
def test_attention_probes_by_hand(name, pre_norm):
    layer = CausalSelfAttention(8, 2)
    x = tf.random.stateless_normal([2, 5, 8], seed=[1, 2])
    length = tf.constant([5, 3])
    post = layer(x, length).numpy()  # builds the weights; the paper's LN(x + MultiHead(x))
    with P.probe(name):
        y = layer(x, length).numpy()
    q = layer.norm(x) if pre_norm else x
    expected = x + layer.mha(q, q, attention_mask=causal_mask(length, 5))
    np.testing.assert_allclose(y, expected.numpy(), atol=1e-5)
    assert np.abs(y - post).max() > 1e-3
    np.testing.assert_allclose(layer(x, length).numpy(), post, atol=1e-6)  # restored


def test_unknown_probe_is_rejected():
    with pytest.raises(ValueError, match="probe must be one of"):
        with P.probe("nope"):
            pass


def test_lstm_glorot_changes_the_input_initialiser_only():
    def build():
        model = SDM(SPEC, C.get_config("smoke", "PSDMMAL").model)
        model.tower(batch(), training=False)
        return model.tower.lstm

    with P.probe("lstm_glorot"):
        inside = build()
    outside = build()
    assert [c.name for c in inside.cells] == [c.name for c in outside.cells]
    for probed, default in zip(inside.cells, outside.cells):
        assert isinstance(probed.cell.kernel_initializer, tf.keras.initializers.GlorotUniform)
        assert isinstance(default.cell.kernel_initializer, tf.keras.initializers.Orthogonal)
        for cell in (probed, default):
            assert isinstance(cell.cell.recurrent_initializer, tf.keras.initializers.Orthogonal)
    assert len(inside.trainable_weights) == len(outside.trainable_weights)
