"""Long-term behaviour: attention pooling per feature bag (eq. 11), then dense + tanh (eq. 12)."""

from collections.abc import Mapping, Sequence

import tensorflow as tf

from sdm_tf.model.layers.masking import masked_softmax


class LongTermPooling(tf.keras.layers.Layer):
    """bags: {f: [B, S_f, D_f]} embedded bags, masks {f: [B, S_f]}, e_u: [B, D_u] -> p: [B, d].

    For each feature, alpha_k = softmax_k((W_f e_u) . g_k) over the bag's valid entries and
    z_f = sum_k alpha_k g_k (zeros for an empty bag); p = tanh(W [z_f ...] + b).
    """

    def __init__(self, features: Sequence[str], dims: Mapping[str, int], dim: int, **kwargs):
        super().__init__(**kwargs)
        self.features = list(features)
        self.dims = dict(dims)
        self.dim = dim
        self.queries = {
            f: tf.keras.layers.Dense(self.dims[f], use_bias=False, name=f"query_{f}")
            for f in self.features
        }
        self.out = tf.keras.layers.Dense(
            dim, activation="tanh", kernel_initializer="orthogonal", name="out"
        )

    def call(self, bags, masks, e_u, return_attention_scores=False):
        pooled, weights = [], {}
        for f in self.features:
            g = bags[f]
            logits = tf.einsum("bsd,bd->bs", g, self.queries[f](e_u))
            alpha = masked_softmax(logits, masks[f])
            weights[f] = alpha
            pooled.append(tf.einsum("bs,bsd->bd", alpha, g))
        p = self.out(tf.concat(pooled, axis=-1))
        return (p, weights) if return_attention_scores else p

    def get_config(self):
        return {
            **super().get_config(),
            "features": self.features,
            "dims": self.dims,
            "dim": self.dim,
        }
