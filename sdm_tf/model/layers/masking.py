"""Mask helpers shared by the layers."""

import tensorflow as tf

NEG_INF = -1e9


def masked_softmax(scores: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Softmax over the last axis where `mask` is True; rows with no True entry give zeros.

    Args:
      scores: [..., K] float.
      mask: [..., K] bool, broadcastable to scores.
    """
    mask = tf.broadcast_to(mask, tf.shape(scores))
    weights = tf.nn.softmax(tf.where(mask, scores, NEG_INF), axis=-1)
    return weights * tf.cast(mask, weights.dtype)


def causal_mask(length: tf.Tensor, max_len: tf.Tensor) -> tf.Tensor:
    """[B, T, T] bool: query t may see key k iff k <= t and k < length."""
    valid = tf.sequence_mask(length, max_len)  # [B, T]
    lower = tf.linalg.band_part(tf.ones([max_len, max_len], tf.bool), -1, 0)  # k <= t
    return tf.logical_and(lower[tf.newaxis], valid[:, tf.newaxis, :])
