"""Layer tests with hand-computed expectations."""

import numpy as np
import pytest
import tensorflow as tf

from sdm_tf.model.layers import (
    CausalSelfAttention,
    FeatureEmbeddings,
    Fusion,
    LongTermPooling,
    StackedLSTM,
    UserAttention,
)
from sdm_tf.model.layers.masking import causal_mask, masked_softmax


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def test_gate_formula_by_hand():
    fusion = Fusion(2, "gate")
    s = np.array([[[1.0, -1.0], [0.5, 2.0]]], np.float32)  # [1, 2, 2]
    p = np.array([[0.3, 0.7]], np.float32)
    e_u = np.array([[2.0]], np.float32)
    fusion(s, p, e_u)  # build
    w1 = np.array([[0.5, -0.5]], np.float32)
    w2 = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    w3 = np.array([[0.0, 1.0], [1.0, 0.0]], np.float32)
    b = np.array([0.1, -0.1], np.float32)
    fusion.w_user.set_weights([w1])
    fusion.w_short.set_weights([w2])
    fusion.w_long.set_weights([w3, b])
    o, gate = fusion(s, p, e_u, return_gate=True)
    # G = sigmoid(W1 e_u + W2 s_t + W3 p + b), o = (1 - G) p + G s_t
    for t in range(2):
        g = sigmoid(e_u[0] @ w1 + s[0, t] @ w2 + p[0] @ w3 + b)
        np.testing.assert_allclose(gate[0, t], g, rtol=1e-6)
        np.testing.assert_allclose(o[0, t], (1 - g) * p[0] + g * s[0, t], rtol=1e-6)


@pytest.mark.parametrize(
    "mode,expected",
    [("add", [[1.3, -0.3]]), ("multiply", [[0.3, -0.7]])],
)
def test_other_fusions(mode, expected):
    o = Fusion(2, mode)(
        np.array([[[1.0, -1.0]]], np.float32), np.array([[0.3, 0.7]], np.float32), None
    )
    np.testing.assert_allclose(o[0], expected, rtol=1e-6)


def test_concat_fusion_shape():
    o = Fusion(3, "concat")(tf.ones([2, 4, 3]), tf.ones([2, 3]), tf.ones([2, 1]))
    assert o.shape == (2, 4, 3)


def test_masked_softmax_sums_to_one_and_zeros_empty_rows():
    w = masked_softmax(
        tf.constant([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]]),
        tf.constant([[True, True, False], [False] * 3]),
    )
    e = np.exp([1.0, 2.0])
    np.testing.assert_allclose(w[0], [e[0] / e.sum(), e[1] / e.sum(), 0.0], rtol=1e-6)
    np.testing.assert_allclose(w[1], [0, 0, 0])


def test_causal_mask_by_hand():
    m = causal_mask(tf.constant([2]), 3).numpy()[0]
    assert m.tolist() == [[True, False, False], [True, True, False], [True, True, False]]


def test_embeddings_pad_to_zero():
    emb = FeatureEmbeddings({"item": 5, "brand": 3}, {"item": 4, "brand": 2})
    out = emb.concat(
        ["item", "brand"], {"item": tf.constant([[0, 2]]), "brand": tf.constant([[1, 0]])}
    )
    assert out.shape == (1, 2, 6)
    np.testing.assert_array_equal(out[0, 0, :4], 0)
    np.testing.assert_array_equal(out[0, 1, 4:], 0)
    np.testing.assert_allclose(out[0, 1, :4], emb.tables["item"][2])


def _seq(b=2, t=5, d=8, seed=0):
    return tf.random.stateless_normal([b, t, d], seed=[seed, 1])


def _check_causal_and_padding(fn, d=8):
    x = _seq(d=d).numpy()
    length = tf.constant([5, 3])
    base = fn(x, length).numpy()
    later = x.copy()
    later[:, 3] += 10.0  # change position 3: positions 0..2 must not move
    np.testing.assert_allclose(fn(later, length).numpy()[:, :3], base[:, :3], atol=1e-5)
    padded = x.copy()
    padded[1, 3:] = 99.0  # padding of the second sequence (length 3)
    np.testing.assert_allclose(fn(padded, length).numpy()[1, :3], base[1, :3], atol=1e-5)


def test_self_attention_is_causal_and_ignores_padding():
    layer = CausalSelfAttention(8, 2)
    _check_causal_and_padding(lambda x, n: layer(x, n))


def test_self_attention_weights_sum_to_one_over_visible_keys():
    layer = CausalSelfAttention(8, 2)
    _, scores = layer(_seq(), tf.constant([5, 3]), return_attention_scores=True)  # [B, H, T, T]
    np.testing.assert_allclose(tf.reduce_sum(scores, -1), np.ones([2, 2, 5]), rtol=1e-5)
    assert float(tf.reduce_max(scores[0, :, 1, 2:])) == 0.0  # no future
    assert float(tf.reduce_max(scores[1, :, 4, 3:])) == 0.0  # no padding


def test_self_attention_residual_and_layer_norm():
    layer = CausalSelfAttention(4, 2)
    y = layer(_seq(d=4), tf.constant([5, 5]))
    np.testing.assert_allclose(tf.reduce_mean(y, -1), np.zeros([2, 5]), atol=1e-5)


def test_lstm_is_causal_and_ignores_padding():
    layer = StackedLSTM(6, num_layers=2, dropout=0.2)
    _check_causal_and_padding(lambda x, n: layer(x, n, training=False))
    assert layer(_seq(), tf.constant([5, 3])).shape == (2, 5, 6)


def test_lstm_residual_between_layers():
    layer = StackedLSTM(4, num_layers=2, dropout=0.0)
    x = _seq(d=4)
    n = tf.constant([5, 5])
    out = layer(x, n)
    first = layer.cells[0](x)
    second = layer.cells[1](first)
    np.testing.assert_allclose(out, first + second, atol=1e-5)


def test_user_attention_by_hand():
    layer = UserAttention(2)
    h = np.array([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]], np.float32)
    e_u = np.array([[1.0]], np.float32)
    layer(h, e_u, tf.constant([2]))
    layer.query.set_weights([np.array([[1.0, 2.0]], np.float32)])  # q = (1, 2)
    s, alpha = layer(h, e_u, tf.constant([2]), return_attention_scores=True)
    # scores: h0.q = 1, h1.q = 2; position 2 is padding.
    np.testing.assert_allclose(alpha[0, 0], [1, 0, 0], atol=1e-6)
    w = np.exp([1.0, 2.0]) / np.exp([1.0, 2.0]).sum()
    np.testing.assert_allclose(alpha[0, 1], [w[0], w[1], 0], rtol=1e-6)
    np.testing.assert_allclose(alpha[0, 2], [w[0], w[1], 0], rtol=1e-6)
    np.testing.assert_allclose(s[0, 1], w[0] * h[0, 0] + w[1] * h[0, 1], rtol=1e-6)
    np.testing.assert_allclose(tf.reduce_sum(alpha, -1), np.ones([1, 3]), rtol=1e-6)


def test_user_attention_is_causal_and_ignores_padding():
    layer = UserAttention(8)
    e_u = tf.ones([2, 3])
    _check_causal_and_padding(lambda x, n: layer(x, e_u, n))


def test_long_term_pooling_by_hand():
    layer = LongTermPooling(["item"], {"item": 2}, 2)
    g = np.array([[[1.0, 0.0], [0.0, 1.0], [7.0, 7.0]]], np.float32)
    mask = tf.constant([[True, True, False]])
    e_u = np.array([[1.0]], np.float32)
    layer({"item": g}, {"item": mask}, e_u)
    layer.queries["item"].set_weights([np.array([[0.0, np.log(3.0)]], np.float32)])
    w_out = np.array([[1.0, 0.0], [0.0, 2.0]], np.float32)
    layer.out.set_weights([w_out, np.zeros(2, np.float32)])
    p, alpha = layer({"item": g}, {"item": mask}, e_u, return_attention_scores=True)
    # scores 0 and log 3 -> weights 1/4, 3/4; z = (1/4, 3/4); p = tanh(z W)
    np.testing.assert_allclose(alpha["item"][0], [0.25, 0.75, 0.0], rtol=1e-6)
    np.testing.assert_allclose(p[0], np.tanh(np.array([0.25, 0.75]) @ w_out), rtol=1e-6)


def test_long_term_pooling_empty_bag_is_zero_vector():
    layer = LongTermPooling(["item"], {"item": 2}, 2)
    g = tf.zeros([1, 2, 2])
    p, alpha = layer({"item": g}, {"item": tf.constant([[False, False]])}, tf.ones([1, 1]), True)
    np.testing.assert_allclose(alpha["item"], [[0.0, 0.0]])
    np.testing.assert_allclose(p, np.tanh(layer.out.bias.numpy())[None], rtol=1e-6)


def test_lstm_without_a_mask_matches_a_masked_keras_lstm_at_valid_positions():
    # Right padding and a causal LSTM: a Keras mask would change nothing at t < length, in the
    # outputs or in the gradients a loss over those positions sends back.
    x = tf.constant(np.random.default_rng(0).normal(size=[3, 6, 5]), tf.float32)
    length = tf.constant([6, 2, 4])
    valid = tf.cast(tf.sequence_mask(length, 6), tf.float32)[..., tf.newaxis]
    layer = StackedLSTM(4, num_layers=2, dropout=0.0)
    layer(x, length)

    def masked_stack(x):
        mask = tf.sequence_mask(length, 6)
        first = layer.cells[0](x, mask=mask)
        return first + layer.cells[1](first, mask=mask)

    outs, grads = [], []
    for fn in (lambda x: layer(x, length), masked_stack):
        with tf.GradientTape() as tape:
            out = fn(x) * valid
            loss = tf.reduce_sum(tf.sin(out))
        outs.append(out.numpy())
        grads.append(tape.gradient(loss, layer.trainable_variables))
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-6)
    assert np.abs(outs[0][1, 1]).sum() > 0  # the compared positions are not all zero
    for a, b in zip(*grads):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)
