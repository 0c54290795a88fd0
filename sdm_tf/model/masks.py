"""What the exact softmax leaves out: the items a position had in its input and the user's
history before its session, on data where users do not come back to items (`mask_inputs`).
Evaluation leaves the user's history out of the ranking; training leaves it out of the softmax."""

from __future__ import annotations

from collections.abc import Mapping

import tensorflow as tf

from sdm_tf.core import features as F


def prior_mask(prior: tf.Tensor, mask: tf.Tensor, labels: tf.Tensor, num_classes: int) -> tf.Tensor:
    """[M, C]: true at the classes of the user's history before the session (`prior` [B, P],
    item ids, 0-padded) for every position of `mask` [B, T] (`tf.boolean_mask` order), except
    the position's own labels [M, n]. On data where users do not come back to items these
    are never the next one, and evaluation leaves the whole history out of the ranking. Dense
    rather than (row, class) pairs: the prior is the same for every position of a record, and
    on MovieLens (~180 items a record) the loss and its gradient took 8–11 % less time than
    with pairs (docs/performance.md)."""
    classes = prior - F.NUM_RESERVED
    batch = tf.shape(classes)[0]
    rows = tf.tile(tf.range(batch, dtype=classes.dtype)[:, None], [1, tf.shape(classes)[1]])
    keep = classes >= 0
    where = tf.stack([tf.boolean_mask(rows, keep), tf.boolean_mask(classes, keep)], axis=1)
    hits = tf.scatter_nd(where, tf.ones(tf.shape(where)[:1], tf.int32), [batch, num_classes])
    cells = tf.gather(hits > 0, tf.where(mask)[:, 0])  # [M, C]
    positions = tf.shape(labels, out_type=labels.dtype)[0]
    own = tf.stack(
        [
            tf.repeat(tf.range(positions), tf.shape(labels)[1]),
            tf.reshape(labels, [-1]),
        ],
        axis=1,
    )
    own = tf.boolean_mask(own, own[:, 1] >= 0)
    return tf.tensor_scatter_nd_update(cells, own, tf.zeros(tf.shape(own)[:1], tf.bool))


def _pairs(classes: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """(row, class) of every class of `classes` [M, S] that is one (padding and OOV are below 0)
    and not among its row's `labels` [M, n]: [K, 2], in row order."""
    own = tf.reduce_any(classes[:, :, tf.newaxis] == labels[:, tf.newaxis, :], axis=-1)
    where = tf.where(tf.logical_and(classes >= 0, tf.logical_not(own)))  # (row, slot)
    return tf.stack([where[:, 0], tf.gather_nd(classes, where)], axis=1)


def input_classes(inputs: Mapping[str, tf.Tensor], mask: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """(row, class) of every item a position has in its input (the session up to and including
    it, and the long-term item bag) other than its own labels: [K, 2], rows numbering the
    positions of `mask` [B, T] in `tf.boolean_mask` order; `labels` [M, n] are those positions'
    classes. On data where users do not come back to an item these can never be the next one,
    and evaluation leaves the history out of the ranking: the softmax leaves them out too (the
    earlier history: `prior_mask`)."""
    short = inputs[F.short_key(F.ITEM)]  # [B, T]
    steps = tf.shape(mask)[1]
    short = short[:, :steps]
    prefix = tf.linalg.band_part(tf.ones([steps, steps], tf.bool), -1, 0)  # [t, j]: j <= t
    ids = tf.where(prefix[tf.newaxis], short[:, tf.newaxis, :], tf.zeros_like(short)[:, None])
    # The bag is the same for every position of a record: gathered per position's row.
    bag = tf.gather(inputs[F.long_key(F.ITEM)], tf.where(mask)[:, 0])  # [M, L]
    ids = tf.concat([tf.boolean_mask(ids, mask), bag], axis=-1)  # [M, T + L]
    return _pairs(ids - F.NUM_RESERVED, labels)


def prior_pairs(prior: tf.Tensor, mask: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """`prior_mask`'s true cells as (row, class) pairs [K, 2], in row order: the form
    `input_classes` has, for batches where few positions have a prior."""
    return _pairs(tf.gather(prior, tf.where(mask)[:, 0]) - F.NUM_RESERVED, labels)  # [M, P]


# The prior goes in as pairs while it has at most one cell in this many of the [M, C] logits,
# else as the dense mask. Both leave out the same cells; this only decides the cost. Amazon
# Beauty (149 of 22,512 records with a prior) takes pairs: the dense mask's scatter, gather,
# update and select cost 14.5 ms of op time a step there, for a few dozen cells. MovieLens
# (~180 prior items a record) stays dense, 8-11 % faster there than pairs (`prior_mask`).
PRIOR_PAIRS_SHARE = 64


def left_out(
    inputs: Mapping[str, tf.Tensor], mask: tf.Tensor, labels: tf.Tensor, num_classes: int
) -> tuple[tf.Tensor, tf.Tensor | None]:
    """What `exact_softmax_cross_entropy` leaves out, as its `masked` pairs [K, 2] and `cells`
    [M or 0, C] (bool; 0 rows: none) or None: `input_classes`, and the prior (`F.PRIOR`) as
    pairs or as the dense `prior_mask`, whichever is cheaper for the batch."""
    pairs = input_classes(inputs, mask, labels)
    if F.PRIOR not in inputs:
        return pairs, None
    prior = inputs[F.PRIOR]
    per_record = tf.reduce_sum(tf.cast(prior >= F.NUM_RESERVED, tf.int64), axis=1)
    rows = tf.where(mask)[:, 0]
    count = tf.reduce_sum(tf.gather(per_record, rows))
    few = count * PRIOR_PAIRS_SHARE <= tf.size(rows, out_type=tf.int64) * num_classes
    return tf.cond(
        few,
        lambda: (
            tf.concat([pairs, prior_pairs(prior, mask, labels)], 0),
            tf.zeros([0, num_classes], tf.bool),
        ),
        lambda: (pairs, prior_mask(prior, mask, labels, num_classes)),
    )
