"""User attention with the profile embedding as the query (eq. 10), per position."""

import tensorflow as tf

from sdm_tf.model.layers.masking import causal_mask, masked_softmax


class UserAttention(tf.keras.layers.Layer):
    """h: [B, T, d], e_u: [B, D_u], length: [B] -> s: [B, T, d].

    s_t = sum_{k <= t, k < length} alpha_{t,k} h_k with alpha_{t,.} = softmax_k((W e_u) . h_k):
    the short-term vector at position t only pools what the user had seen by then.
    """

    def __init__(self, dim: int, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim
        self.query = tf.keras.layers.Dense(dim, use_bias=False, name="query")

    def call(self, h, e_u, length, return_attention_scores=False):
        q = self.query(e_u)  # [B, d]
        logits = tf.einsum("btd,bd->bt", h, q)  # one score per key position
        batch, steps = tf.shape(h)[0], tf.shape(h)[1]
        logits = tf.broadcast_to(logits[:, tf.newaxis, :], [batch, steps, steps])
        alpha = masked_softmax(logits, causal_mask(length, steps))  # [B, T, T]
        s = tf.einsum("btk,bkd->btd", alpha, h)
        return (s, alpha) if return_attention_scores else s

    def get_config(self):
        return {**super().get_config(), "dim": self.dim}
