"""The SDM model: the user tower and the sampled-softmax retrieval objective.

`UserTower` maps a batch of id features (the `sdm_tf.core.features` layout, model input keys) to one
user vector per position: o_t, which predicts the item after position t. `SDM` adds the output
item table V (+ bias) and the sampled softmax loss, following TFRS' `compute_loss` contract.
"""

from __future__ import annotations

from collections.abc import Mapping

import tensorflow as tf
import tensorflow_recommenders as tfrs

from sdm_tf.config import ModelConfig
from sdm_tf.core import features as F
from sdm_tf.model.layers import (
    CausalSelfAttention,
    FeatureEmbeddings,
    Fusion,
    LongTermPooling,
    StackedLSTM,
    UserAttention,
)
from sdm_tf.model.masks import left_out
from sdm_tf.model.softmax import exact_softmax_cross_entropy


def feature_dims(dataset: F.DatasetSpec, cfg: ModelConfig) -> dict[str, int]:
    dims = {F.ITEM: cfg.item_dim}
    for f in dataset.item_features[1:]:
        dims[f] = cfg.side_dims.get(f, cfg.side_dim)
    for p in dataset.profile_features:
        dims[p] = cfg.profile_dim
    return dims


class UserTower(tf.keras.Model):
    """inputs (dict of int64 ids) -> o: [B, T, d], the user vector at every position.

    Inputs:
      length: [B]; short_<f>: [B, T]; long_<f>: [B, S]; profile_<p>: [B].
    """

    def __init__(self, dataset: F.DatasetSpec, cfg: ModelConfig, **kwargs):
        super().__init__(**kwargs)
        self.dataset = dataset
        self.cfg = cfg
        self.item_features = list(dataset.item_features) if cfg.use_side_info else [F.ITEM]
        # A table or weight no block reads gets no gradient, and Keras warns on every step.
        self.profile_features = list(dataset.profile_features) if self.reads_user else []
        dims = feature_dims(dataset, cfg)
        used = self.item_features + self.profile_features
        self.embeddings = FeatureEmbeddings(
            {f: dataset.vocab_sizes[f] for f in used}, {f: dims[f] for f in used}, name="embeddings"
        )
        self.default_user = None
        if self.reads_user and not self.profile_features:
            # No profile: the user attention and the gate get a learned query instead.
            self.default_user = self.add_weight(
                name="default_user", shape=(cfg.profile_dim,), initializer="glorot_uniform"
            )
        self.embedding_dropout = tf.keras.layers.Dropout(cfg.embedding_dropout)
        self.lstm = None
        if cfg.use_lstm and cfg.num_lstm_layers:
            self.lstm = StackedLSTM(cfg.dim, cfg.num_lstm_layers, cfg.lstm_dropout, name="lstm")
        else:
            self.input_proj = tf.keras.layers.Dense(cfg.dim, name="input_proj")
        self.self_attention = (
            CausalSelfAttention(
                cfg.dim, cfg.num_heads, cfg.attention_dropout, name="self_attention"
            )
            if cfg.use_self_attention
            else None
        )
        self.user_attention = (
            UserAttention(cfg.dim, name="user_attention") if self.uses_user_attention else None
        )
        if cfg.use_long_term:
            self.long_term = LongTermPooling(self.item_features, dims, cfg.dim, name="long_term")
            self.fusion = Fusion(cfg.dim, cfg.fusion, name="fusion")

    @property
    def uses_user_attention(self) -> bool:
        """Eq. 10 needs a user to attend with: a profile, or `user_attention_without_profile`."""
        return self.cfg.use_user_attention and (
            bool(self.dataset.profile_features) or self.cfg.user_attention_without_profile
        )

    @property
    def reads_user(self) -> bool:
        """Whether a block reads e_u (the profile, or the learned query): the user attention and
        the long-term blocks do."""
        return self.uses_user_attention or self.cfg.use_long_term

    @property
    def blocks(self) -> str:
        """The blocks this tower runs, in words (the launchers print it: one is data-driven)."""
        names = []
        if self.lstm is not None:
            names.append(f"{self.cfg.num_lstm_layers}-layer LSTM")
        if self.self_attention is not None:
            names.append(f"{self.cfg.num_heads}-head self-attention")
        if self.user_attention is not None:
            names.append("user attention" + ("" if self.profile_features else " (learned query)"))
        elif self.cfg.use_user_attention:
            names.append("no user attention (the data has no profile features)")
        if self.cfg.use_long_term:
            names.append(f"long-term bags, {self.cfg.fusion} fusion")
            if self.cfg.empty_long_term == "short_term":
                names.append("the short term alone where the bags are empty")
        return ", ".join(names)

    def user_embedding(self, inputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
        """e_u (eq. 4): [B, D_u]."""
        batch = tf.shape(inputs[F.LENGTH])[0]
        if self.default_user is not None:
            # broadcast_to, not tile: tile's gradient transposes an int32 tensor, which makes
            # oneDNN print a notice on CPUs without AVX-512 (tests/test_model.py).
            return tf.broadcast_to(self.default_user, [batch, self.cfg.profile_dim])
        ids = {p: inputs[F.profile_key(p)] for p in self.profile_features}
        return self.embeddings.concat(self.profile_features, ids)

    def call(self, inputs: Mapping[str, tf.Tensor], training=None) -> tf.Tensor:
        return self._forward(inputs, training)[0]

    def explain(self, inputs: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """What the tower weighs, at inference (Fig. 4-5 of the paper). Keys present when the
        block is in the model:

          self_attention: [B, H, T, T], head h's weights of position t over positions k;
          user_attention: [B, T, T], alpha_{t,k} of eq. 10;
          long_term/<f>: [B, S_f], the attention over feature f's long-term bag (eq. 11);
          gate: [B, T, d], G of eq. 13 (1: short-term, 0: long-term);
          short_term: [B, T, d] s_t; long_term: [B, d] p (eq. 12);
          output: [B, T, d], the tower's output o_t.
        """
        return self._forward(inputs, training=False, explain=True)[1]

    def _forward(self, inputs, training=None, explain=False):
        """-> (o [B, T, d], {name: weights} when `explain`, else {})."""
        parts: dict[str, tf.Tensor] = {}
        length = tf.cast(inputs[F.LENGTH], tf.int32)
        short_ids = {f: inputs[F.short_key(f)] for f in self.item_features}
        x = self.embeddings.concat(self.item_features, short_ids)  # eq. 3: [B, T, sum d_f]
        x = self.embedding_dropout(x, training=training)
        e_u = self.user_embedding(inputs) if self.reads_user else None
        if self.lstm is not None:
            h = self.lstm(x, length, training=training)  # eq. 5
        else:
            h = self.input_proj(x)
        if self.self_attention is not None:  # eq. 6-9
            h, parts["self_attention"] = self.self_attention(
                h, length, training=training, return_attention_scores=True
            )
        if self.user_attention is not None:  # eq. 10
            s, parts["user_attention"] = self.user_attention(
                h, e_u, length, return_attention_scores=True
            )
        else:
            s = h  # the causal position output is the short-term vector
        if not self.cfg.use_long_term:
            return s, ({**parts, "output": s} if explain else {})
        bags = {
            f: self.embedding_dropout(
                self.embeddings.embed(f, inputs[F.long_key(f)]), training=training
            )
            for f in self.item_features
        }
        masks = {f: inputs[F.long_key(f)] != F.PAD_ID for f in self.item_features}
        p, weights = self.long_term(bags, masks, e_u, return_attention_scores=True)  # eq. 11-12
        o, gate = self.fusion(s, p, e_u, return_gate=True)  # eq. 13-14
        if self.cfg.empty_long_term == "short_term":  # nothing long-term: the short term alone
            has_long = tf.reduce_any(tf.stack([tf.reduce_any(m, 1) for m in masks.values()]), 0)
            o = tf.where(has_long[:, tf.newaxis, tf.newaxis], o, s)
        if not explain:
            return o, {}
        parts.update({f"long_term/{f}": w for f, w in weights.items()})
        parts.update(short_term=s, long_term=p, output=o)
        if gate is not None:
            parts["gate"] = gate
        return o, parts

    def last(self, outputs: tf.Tensor, length: tf.Tensor) -> tf.Tensor:
        """The user vector after the whole sequence: outputs[b, length[b] - 1]. [B, d]."""
        idx = tf.maximum(tf.cast(length, tf.int32) - 1, 0)
        return tf.gather(outputs, idx, batch_dims=1)


class SDM(tfrs.models.Model):
    """User tower + output item table + sampled softmax with the log-uniform sampler.

    Classes are the real items, `class = item_id - NUM_RESERVED`, ordered by descending
    frequency, which is what `tf.nn.sampled_softmax_loss`'s log-uniform sampler assumes.
    """

    def __init__(self, dataset: F.DatasetSpec, cfg: ModelConfig, **kwargs):
        super().__init__(**kwargs)
        if cfg.next_n > dataset.next_n:
            raise ValueError(f"next_n={cfg.next_n} but the data carries {dataset.next_n} labels")
        self.dataset = dataset
        self.cfg = cfg
        self.num_classes = dataset.num_items
        if cfg.kind == "sdm":
            self.tower = UserTower(dataset, cfg, name="user_tower")
        else:
            from sdm_tf.model import baselines

            tower = {"youtube_dnn": baselines.YouTubeDNNTower, "gru4rec": baselines.GRU4RecTower}
            self.tower = tower[cfg.kind](
                dataset, cfg, feature_dims(dataset, cfg), name="user_tower"
            )
        if not cfg.tied_output:
            self.output_embeddings = self.add_weight(
                name="output_embeddings",
                shape=(self.num_classes, cfg.dim),
                initializer=tf.keras.initializers.TruncatedNormal(stddev=cfg.dim**-0.5),
            )
        self.output_bias = self.add_weight(
            name="output_bias", shape=(self.num_classes,), initializer="zeros"
        )
        # None: tf.nn.sampled_softmax_loss' own log-uniform sampler. Tests inject one that
        # returns every class, which turns the loss into the full softmax.
        self.candidate_sampler = None
        # Keras logs what train_step returned at the epoch's last step; TFRS returns that
        # batch's loss. A training curve wants the epoch's mean (reset by Keras every epoch).
        self.epoch_loss = tf.keras.metrics.Mean(name="epoch_loss")

    def train_step(self, inputs):
        logs = super().train_step(inputs)
        # A replica's loss is its share of the global batch's mean (compute_loss); the metric
        # averages over replicas as well as steps, so each share counts num_replicas times.
        ctx = tf.distribute.get_replica_context()
        replicas = ctx.num_replicas_in_sync if ctx is not None else 1
        self.epoch_loss.update_state(logs["loss"] * replicas)
        logs.pop("epoch_loss", None)
        return {**logs, "loss": self.epoch_loss.result()}

    @property
    def item_table(self) -> tf.Tensor:
        """V: [num_items, d], row c is the item with id c + NUM_RESERVED (unit rows when
        `temperature` > 0)."""
        if self.cfg.tied_output:
            self.tower.embeddings.embed(F.ITEM, tf.constant([0], tf.int64))  # builds the tables
            # tf.slice, not [a:]: its gradient is a Pad, 1.7 ms of op time a Beauty step
            # against StridedSliceGrad's 6.7 (docs/performance.md).
            table = tf.slice(self.tower.embeddings.tables[F.ITEM], [F.NUM_RESERVED, 0], [-1, -1])
        else:
            table = self.output_embeddings
        if self.cfg.temperature > 0:
            table = tf.math.l2_normalize(table, axis=-1)
        return table

    def user_vectors(self, outputs: tf.Tensor) -> tf.Tensor:
        """Tower outputs [..., d] -> the vectors scored against `item_table` (with `temperature`
        > 0: unit length, divided by the temperature, so scores are cosine / temperature)."""
        if self.cfg.temperature > 0:
            return tf.math.l2_normalize(outputs, axis=-1) / self.cfg.temperature
        return outputs

    def call(self, inputs: Mapping[str, tf.Tensor], training=None) -> tf.Tensor:
        """The user vector after the sequence: [B, d]."""
        outputs = self.tower(inputs, training=training)
        return self.user_vectors(self.tower.last(outputs, inputs[F.LENGTH]))

    def loss_mask(self, length: tf.Tensor, steps: tf.Tensor) -> tf.Tensor:
        length = tf.cast(length, tf.int32)
        if self.cfg.loss_positions == "last":
            return tf.one_hot(length - 1, steps, on_value=True, off_value=False, dtype=tf.bool)
        return tf.sequence_mask(length, steps)

    def labels(self, inputs: Mapping[str, tf.Tensor]) -> tf.Tensor:
        """[B, T, next_n] class ids; missing next-N labels repeat the next item."""
        first = inputs[F.LABEL][..., tf.newaxis]
        if self.cfg.next_n == 1:
            labels = first
        else:
            nn = inputs[F.LABEL_NEXT_N][..., : self.cfg.next_n]
            labels = tf.where(nn >= F.NUM_RESERVED, nn, first)
        return labels - F.NUM_RESERVED

    def compute_loss(self, inputs, training: bool = False) -> tf.Tensor:
        outputs = self.user_vectors(self.tower(inputs, training=training))  # [B, T, d]
        labels = self.labels(inputs)
        mask = self.loss_mask(inputs[F.LENGTH], tf.shape(outputs)[1])
        mask = tf.logical_and(mask, labels[..., 0] >= 0)
        vectors = tf.boolean_mask(outputs, mask)  # [M, d]
        classes = tf.boolean_mask(labels, mask)  # [M, next_n]
        if self.full_softmax:
            masked = prior = None
            if self.cfg.mask_inputs == "on":
                masked, prior = left_out(inputs, mask, classes, self.num_classes)
            losses = self.full_softmax_loss(vectors, classes, masked, prior)
        else:
            sampled_values = None
            num_sampled = self.cfg.num_sampled
            if self.candidate_sampler is not None:
                sampled_values = self.candidate_sampler(classes, num_sampled)
                num_sampled = sampled_values[0].shape[0]
            losses = tf.nn.sampled_softmax_loss(
                weights=self.item_table,
                biases=self.output_bias,
                labels=classes,
                inputs=vectors,
                num_sampled=num_sampled,
                num_classes=self.num_classes,
                num_true=self.cfg.next_n,
                sampled_values=sampled_values,
                remove_accidental_hits=True,
            )
        # The mean over every position of the global batch. Under a synchronous strategy Keras
        # sums the replicas' gradients (and, by default, their logged losses), so each replica
        # divides its own sum by the global count: N replicas step as one device does on the
        # whole batch, and the log shows the global batch's loss.
        count = tf.cast(tf.shape(losses)[0], losses.dtype)
        ctx = tf.distribute.get_replica_context()
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            count = ctx.all_reduce(tf.distribute.ReduceOp.SUM, count)
        return tf.reduce_sum(losses) / tf.maximum(count, 1.0)

    @property
    def full_softmax(self) -> bool:
        """The exact softmax over the whole catalogue: for small catalogues
        (`full_softmax_max_items`) and when as many negatives as items are asked for."""
        small = self.num_classes <= max(self.cfg.num_sampled, self.cfg.full_softmax_max_items)
        return small and self.candidate_sampler is None

    @property
    def objective(self) -> str:
        """The training objective in words (the launchers print it: the choice is automatic)."""
        if self.full_softmax:
            masked = ", inputs left out" if self.cfg.mask_inputs == "on" else ""
            low = ", bfloat16 matmuls" if self.cfg.softmax_dtype != "float32" else ""
            return f"exact softmax over {self.num_classes:,} items{masked}{low}"
        return f"sampled softmax, {self.cfg.num_sampled:,} negatives of {self.num_classes:,} items"

    def full_softmax_loss(
        self,
        vectors: tf.Tensor,
        classes: tf.Tensor,
        masked: tf.Tensor | None = None,
        prior: tf.Tensor | None = None,
    ) -> tf.Tensor:
        """Cross-entropy over every item, the `next_n` labels weighted 1/next_n each (the
        target distribution `tf.nn.sampled_softmax_loss` uses). [M, d], [M, n] -> [M].
        `masked` [K, 2]: (row, class) pairs left out of the softmax (`input_classes`);
        `prior` [M or 0, C]: cells left out as well (`masks.left_out`)."""
        with tf.name_scope("full_softmax"):  # a block of its own in profiles
            return exact_softmax_cross_entropy(
                vectors,
                self.item_table,
                self.output_bias,
                classes,
                masked,
                prior,
                compute_dtype=tf.as_dtype(self.cfg.softmax_dtype),
            )

    def score(self, user_vectors: tf.Tensor) -> tf.Tensor:
        """Exact scores against every item: [B, num_items]."""
        return tf.matmul(user_vectors, self.item_table, transpose_b=True) + self.output_bias
