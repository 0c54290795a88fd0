"""Input embeddings with side information (eq. 3) and the profile embedding (eq. 4)."""

from collections.abc import Mapping, Sequence

import tensorflow as tf


class FeatureEmbeddings(tf.keras.layers.Layer):
    """One embedding table per feature; id 0 (padding) embeds to zeros.

    The same tables serve the short-term sequence, the long-term bags and the profile, so an item
    has one input embedding wherever it appears.

    Args:
      vocab_sizes: feature -> vocabulary size (reserved ids included).
      dims: feature -> embedding size.
    """

    def __init__(self, vocab_sizes: Mapping[str, int], dims: Mapping[str, int], **kwargs):
        super().__init__(**kwargs)
        self.vocab_sizes = dict(vocab_sizes)
        self.dims = dict(dims)
        self.tables = {}

    def build(self, input_shape=None):
        for name, size in self.vocab_sizes.items():
            d = self.dims[name]
            self.tables[name] = self.add_weight(
                name=f"{name}_embedding",
                shape=(size, d),
                initializer=tf.keras.initializers.TruncatedNormal(stddev=d**-0.5),
            )
        super().build(input_shape)

    def embed(self, feature: str, ids: tf.Tensor) -> tf.Tensor:
        """ids: [...] int64 -> [..., dims[feature]]; padding (0) gives zeros."""
        if not self.built:
            self.build()
        vectors = tf.nn.embedding_lookup(self.tables[feature], ids)
        return vectors * tf.cast(ids != 0, vectors.dtype)[..., tf.newaxis]

    def concat(self, features: Sequence[str], ids: Mapping[str, tf.Tensor]) -> tf.Tensor:
        """Eq. 3 / eq. 4: the concatenation of each feature's embedding.

        ids[f]: [B, T] (or [B]) -> [B, T, sum(dims[f])] (or [B, sum]).
        """
        return tf.concat([self.embed(f, ids[f]) for f in features], axis=-1)

    def call(self, ids: Mapping[str, tf.Tensor]) -> tf.Tensor:
        return self.concat(list(ids), ids)

    def get_config(self):
        return {**super().get_config(), "vocab_sizes": self.vocab_sizes, "dims": self.dims}
