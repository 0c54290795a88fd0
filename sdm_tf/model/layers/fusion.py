"""Fusion of short- and long-term preferences: the gate of eq. 13-14, and ablation modes."""

import tensorflow as tf

FUSIONS = ("gate", "add", "concat", "multiply")


class Fusion(tf.keras.layers.Layer):
    """s: [B, T, d] short-term, p: [B, d] long-term, e_u: [B, D_u] -> o: [B, T, d].

    gate:     G = sigmoid(W1 e_u + W2 s_t + W3 p + b);  o_t = (1 - G) * p + G * s_t
    add:      o_t = s_t + p
    concat:   o_t = W [s_t; p] + b
    multiply: o_t = s_t * p
    """

    def __init__(self, dim: int, mode: str = "gate", **kwargs):
        super().__init__(**kwargs)
        if mode not in FUSIONS:
            raise ValueError(f"fusion mode must be one of {FUSIONS}, got {mode!r}")
        self.dim = dim
        self.mode = mode
        if mode == "gate":
            self.w_user = tf.keras.layers.Dense(dim, use_bias=False, name="w_user")
            self.w_short = tf.keras.layers.Dense(dim, use_bias=False, name="w_short")
            self.w_long = tf.keras.layers.Dense(dim, use_bias=True, name="w_long")
        elif mode == "concat":
            self.proj = tf.keras.layers.Dense(dim, name="proj")

    def call(self, s, p, e_u, return_gate=False):
        p = p[:, tf.newaxis, :]
        gate = None
        if self.mode == "gate":
            gate = tf.sigmoid(self.w_user(e_u)[:, tf.newaxis, :] + self.w_short(s) + self.w_long(p))
            o = (1.0 - gate) * p + gate * s
        elif self.mode == "add":
            o = s + p
        elif self.mode == "multiply":
            o = s * p
        else:
            o = self.proj(tf.concat([s, tf.broadcast_to(p, tf.shape(s))], axis=-1))
        return (o, gate) if return_gate else o

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "mode": self.mode}
