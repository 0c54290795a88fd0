"""Multi-head self-attention (eq. 6-9) with a causal mask, residual and layer norm."""

import tensorflow as tf

from sdm_tf.model.layers.masking import causal_mask


class CausalSelfAttention(tf.keras.layers.Layer):
    """x: [B, T, d], length: [B] -> [B, T, d].

    Position t attends to positions k <= t with k < length, so the per-position loss never sees
    the future and padding never leaks in. Output = LayerNorm(x + MultiHead(x)).
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim
        self.num_heads = num_heads
        self.dropout_rate = dropout
        self.mha = tf.keras.layers.MultiHeadAttention(
            num_heads=num_heads,
            key_dim=dim // num_heads,
            dropout=dropout,
            kernel_initializer="orthogonal",
            name="mha",
        )
        self.norm = tf.keras.layers.LayerNormalization(epsilon=1e-6, name="norm")

    def call(self, x, length, training=None, return_attention_scores=False):
        mask = causal_mask(length, tf.shape(x)[1])
        out, scores = self.mha(
            x, x, attention_mask=mask, return_attention_scores=True, training=training
        )
        y = self.norm(x + out)
        return (y, scores) if return_attention_scores else y

    def get_config(self):
        return {
            **super().get_config(),
            "dim": self.dim,
            "num_heads": self.num_heads,
            "dropout": self.dropout_rate,
        }
