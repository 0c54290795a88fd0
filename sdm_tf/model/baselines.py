"""The paper's learned baselines (§4.3) as user towers beside SDM's: the same input features,
embeddings, output table and softmax objective (`SDM` with `model.kind`), so that only the
way a user vector is formed differs.

* YouTube DNN (Covington et al., 2016): the mean of the item embeddings seen so far (short-term
  sequence up to each position, and the long-term bags), concatenated with the profile
  embedding, through a ReLU MLP to the user vector.
* GRU4Rec (Hidasi et al., 2016): a GRU over the session's item embeddings; its state at each
  position, projected to d, is the user vector.

Both give a vector at every position ([B, T, d]), as `UserTower` does, so the loss is SDM's.
"""

from __future__ import annotations

from collections.abc import Mapping

import tensorflow as tf

from sdm_tf.core import features as F
from sdm_tf.model.layers import FeatureEmbeddings


class _BaselineTower(tf.keras.Model):
    """Embeddings and the profile as SDM's `UserTower` has them."""

    # Whether the tower reads the profile: a table no block reads gets no gradient, and
    # Keras warns about it on every step.
    reads_profile = True

    def __init__(self, dataset: F.DatasetSpec, cfg, dims: Mapping[str, int], **kwargs):
        super().__init__(**kwargs)
        self.dataset = dataset
        self.cfg = cfg
        self.item_features = list(dataset.item_features) if cfg.use_side_info else [F.ITEM]
        self.profile_features = list(dataset.profile_features) if self.reads_profile else []
        used = self.item_features + self.profile_features
        self.embeddings = FeatureEmbeddings(
            {f: dataset.vocab_sizes[f] for f in used}, {f: dims[f] for f in used}, name="embeddings"
        )
        self.embedding_dropout = tf.keras.layers.Dropout(cfg.embedding_dropout)

    def sequence(self, inputs, training=None) -> tf.Tensor:
        """Eq. 3 inputs: [B, T, sum d_f], dropout applied."""
        ids = {f: inputs[F.short_key(f)] for f in self.item_features}
        return self.embedding_dropout(self.embeddings.concat(self.item_features, ids), training)

    def profile(self, inputs) -> tf.Tensor | None:
        if not self.profile_features:
            return None
        ids = {p: inputs[F.profile_key(p)] for p in self.profile_features}
        return self.embeddings.concat(self.profile_features, ids)

    def last(self, outputs: tf.Tensor, length: tf.Tensor) -> tf.Tensor:
        idx = tf.maximum(tf.cast(length, tf.int32) - 1, 0)
        return tf.gather(outputs, idx, batch_dims=1)


class YouTubeDNNTower(_BaselineTower):
    """inputs -> [B, T, d]: MLP([mean of items up to t ; mean of long-term bags ; profile])."""

    def __init__(self, dataset: F.DatasetSpec, cfg, dims: Mapping[str, int], **kwargs):
        super().__init__(dataset, cfg, dims, **kwargs)
        self.hidden = [
            tf.keras.layers.Dense(2 * cfg.dim, activation="relu", name="hidden_0"),
            tf.keras.layers.Dense(cfg.dim, activation="relu", name="hidden_1"),
        ]
        self.dropout = tf.keras.layers.Dropout(cfg.lstm_dropout)
        self.out = tf.keras.layers.Dense(cfg.dim, name="user_vector")

    def call(self, inputs, training=None) -> tf.Tensor:
        x = self.sequence(inputs, training)  # [B, T, D]
        steps = tf.shape(x)[1]
        valid = tf.sequence_mask(inputs[F.LENGTH], steps, dtype=x.dtype)[..., tf.newaxis]
        # Causal mean: position t averages the items 0..t (padding is zero and not counted).
        running = tf.cumsum(x * valid, axis=1) / tf.maximum(tf.cumsum(valid, axis=1), 1.0)
        parts = [running]
        if self.cfg.use_long_term:
            bags = []
            for f in self.item_features:
                ids = inputs[F.long_key(f)]
                e = self.embeddings.embed(f, ids)
                n = tf.reduce_sum(tf.cast(ids != F.PAD_ID, x.dtype), axis=1, keepdims=True)
                bags.append(tf.reduce_sum(e, axis=1) / tf.maximum(n, 1.0))
            parts.append(_over_steps(tf.concat(bags, -1), steps))
        profile = self.profile(inputs)
        if profile is not None:
            parts.append(_over_steps(profile, steps))
        h = tf.concat(parts, axis=-1)
        for layer in self.hidden:
            h = self.dropout(layer(h), training=training)
        return self.out(h)


class GRU4RecTower(_BaselineTower):
    """inputs -> [B, T, d]: a GRU over the session, its state at t projected to d."""

    reads_profile = False

    def __init__(self, dataset: F.DatasetSpec, cfg, dims: Mapping[str, int], **kwargs):
        super().__init__(dataset, cfg, dims, **kwargs)
        self.gru = tf.keras.layers.GRU(cfg.dim, return_sequences=True, name="gru")
        self.dropout = tf.keras.layers.Dropout(cfg.lstm_dropout)
        self.out = tf.keras.layers.Dense(cfg.dim, name="user_vector")

    def call(self, inputs, training=None) -> tf.Tensor:
        x = self.sequence(inputs, training)
        # Right padding and a causal GRU: no mask, as in StackedLSTM (valid outputs unchanged).
        h = self.dropout(self.gru(x, training=training), training=training)
        return self.out(h)


def _over_steps(x: tf.Tensor, steps: tf.Tensor) -> tf.Tensor:
    """[B, D] -> [B, steps, D], the same vector at every step. broadcast_to, not tile: tile's
    gradient transposes an int32 tensor, which makes oneDNN print a notice on CPUs without
    AVX-512."""
    shape = tf.shape(x)
    return tf.broadcast_to(x[:, tf.newaxis], [shape[0], steps, shape[1]])
