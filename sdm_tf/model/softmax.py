"""The exact softmax cross-entropy over every item, with its gradient written out.

The loss is log Σ_c exp(z_c) − mean_j z_{label_j} for z = u·Vᵀ + b. Written as TensorFlow ops
(matmul, `sparse_softmax_cross_entropy_with_logits`, autodiff) it is the same numbers, but the
fused cross-entropy kernel and the bias gradient take several passes over the [M, C] logits on
one thread each. Here the forward keeps exp(z − max) once, and the backward scales it once and
feeds it to the two matmuls: on Beauty's shapes (590 positions × 12,092 items, d = 128) the loss
and its gradients took 62–65 ms against 111–117 on one thread and 38 against 63 on two, with
the same losses and gradients to 1e-8 (docs/performance.md; a test checks them by hand).
"""

from __future__ import annotations

import tensorflow as tf

LEFT_OUT = -1e9  # a logit whose exponential underflows to exactly 0 next to any real one


def exact_softmax_cross_entropy(
    vectors: tf.Tensor,
    table: tf.Tensor,
    bias: tf.Tensor,
    labels: tf.Tensor,
    masked: tf.Tensor | None = None,
    cells: tf.Tensor | None = None,
) -> tf.Tensor:
    """Cross-entropy of `vectors` [M, d] against every row of `table` [C, d] (+ `bias` [C]),
    the `labels` [M, n] (class ids) weighted 1/n each: the target distribution
    `tf.nn.sampled_softmax_loss` uses. -> [M].

    `masked` [K, 2]: (row, class) cells left out of the softmax; `cells` [M, C] (bool): cells
    left out as well. Neither may hold a row's own labels. Gradients flow to `vectors`,
    `table` and `bias`; the masks and labels are constants."""
    labels = tf.convert_to_tensor(labels)
    n = tf.shape(labels)[1]
    num_labels = tf.cast(n, vectors.dtype)

    @tf.custom_gradient
    def loss(u: tf.Tensor, v: tf.Tensor, b: tf.Tensor):
        logits = tf.nn.bias_add(tf.matmul(u, v, transpose_b=True), b)  # [M, C]
        if masked is not None:
            fill = tf.fill(tf.shape(masked)[:1], tf.constant(LEFT_OUT, logits.dtype))
            logits = tf.tensor_scatter_nd_update(logits, masked, fill)
        if cells is not None:
            logits = tf.where(cells, tf.constant(LEFT_OUT, logits.dtype), logits)
        top = tf.reduce_max(logits, axis=1, keepdims=True)
        e = tf.exp(logits - top)  # kept for the backward pass: the softmax up to 1 / s
        s = tf.reduce_sum(e, axis=1)
        v_label = tf.reduce_mean(tf.gather(v, labels), axis=1)  # [M, d]
        z_label = tf.reduce_sum(u * v_label, -1) + tf.reduce_mean(tf.gather(b, labels), axis=1)
        out = tf.math.log(s) + top[:, 0] - z_label

        def grad(dy: tf.Tensor):
            with tf.name_scope("full_softmax_grad"):  # profiles charge these to the loss
                p = e * (dy / s)[:, tf.newaxis]  # dy · softmax, [M, C]
                du = tf.matmul(p, v) - dy[:, tf.newaxis] * v_label
                # Each label's row of V gets −dy/n · u; duplicates add up, as the weights do.
                weight = tf.repeat(dy / num_labels, n)  # [M·n], one per label
                flat = tf.reshape(labels, [-1, 1])
                dv = tf.tensor_scatter_nd_add(
                    tf.matmul(p, u, transpose_a=True),
                    flat,
                    -weight[:, tf.newaxis] * tf.repeat(u, n, axis=0),
                )
                db = tf.reduce_sum(p, axis=0) - tf.math.unsorted_segment_sum(
                    weight, flat[:, 0], tf.shape(b)[0]
                )
                return du, dv, db

        return out, grad

    # Variables are read here, outside the custom gradient, so theirs flows through the read.
    return loss(vectors, tf.convert_to_tensor(table), tf.convert_to_tensor(bias))
