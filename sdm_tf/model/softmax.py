"""The exact softmax cross-entropy over every item, with its gradient written out.

The loss is log Σ_c exp(z_c) − mean_j z_{label_j} for z = u·Vᵀ + b. Written as TensorFlow ops
(matmul, `sparse_softmax_cross_entropy_with_logits`, autodiff) it is the same numbers, but the
fused cross-entropy kernel and the bias gradient take several passes over the [M, C] logits on
one thread each. Here the forward keeps exp(z − max) once, and the backward feeds it to the two
matmuls as it is and scales their [M, d] and [C] results: on Beauty's shapes (590 positions ×
12,092 items, d = 128) the loss and its gradients took 62–65 ms against 111–117 on one thread
and 38 against 63 on two, with the same losses and gradients to 1e-8; scaling the results
instead of e took them to 53 and 36 ms (docs/performance.md; a test checks them by hand).

`compute_dtype=tf.bfloat16` runs the three [M, C]-sized matmuls on bfloat16 inputs (AMX on
recent Xeons, tensor cores on GPUs); the exponentials, the sums and the label's logit stay
float32.
"""

from __future__ import annotations

import tensorflow as tf

LEFT_OUT = -1e9  # a logit whose exponential underflows to exactly 0 next to any real one
# Rows are padded to a multiple of this for bfloat16: oneDNN builds its AMX kernels for each
# shape it meets, and the number of positions M differs from batch to batch.
ROW_MULTIPLE = 64


def exact_softmax_cross_entropy(
    vectors: tf.Tensor,
    table: tf.Tensor,
    bias: tf.Tensor,
    labels: tf.Tensor,
    masked: tf.Tensor | None = None,
    cells: tf.Tensor | None = None,
    compute_dtype: tf.DType = tf.float32,
) -> tf.Tensor:
    """Cross-entropy of `vectors` [M, d] against every row of `table` [C, d] (+ `bias` [C]),
    the `labels` [M, n] (class ids) weighted 1/n each: the target distribution
    `tf.nn.sampled_softmax_loss` uses. -> [M].

    `masked` [K, 2]: (row, class) cells left out of the softmax; `cells` [M, C] (bool): cells
    left out as well ([0, C]: none). Neither may hold a row's own labels. Gradients flow to
    `vectors`, `table` and `bias`; the masks and labels are constants. `compute_dtype`: the
    type of the matmuls' inputs (module docstring)."""
    labels = tf.convert_to_tensor(labels)
    n = tf.shape(labels)[1]
    num_labels = tf.cast(n, vectors.dtype)
    dtype = vectors.dtype
    low = compute_dtype != dtype
    rows = tf.shape(vectors)[0]
    if low:
        # Padded rows have u = 0 and label 0; their losses are sliced off below, so their
        # dy is 0 and they add nothing to any gradient.
        extra = (ROW_MULTIPLE - rows % ROW_MULTIPLE) % ROW_MULTIPLE
        vectors = tf.pad(vectors, [[0, extra], [0, 0]])
        labels = tf.pad(labels, [[0, extra], [0, 0]])
        if cells is not None:
            cells = tf.pad(cells, [[0, extra * tf.minimum(tf.shape(cells)[0], 1)], [0, 0]])

    @tf.custom_gradient
    def loss(u: tf.Tensor, v: tf.Tensor, b: tf.Tensor):
        if low:
            u_c, v_c = tf.cast(u, compute_dtype), tf.cast(v, compute_dtype)
            logits = tf.cast(tf.matmul(u_c, v_c, transpose_b=True), dtype)
        else:
            u_c, v_c = u, v
            logits = tf.matmul(u, v, transpose_b=True)
        logits = tf.nn.bias_add(logits, b)  # [M, C]
        if masked is not None:
            fill = tf.fill(tf.shape(masked)[:1], tf.constant(LEFT_OUT, logits.dtype))
            logits = tf.tensor_scatter_nd_update(logits, masked, fill)
        if cells is not None:  # 0 rows: none left out in this batch (`masks.left_out`)
            logits = tf.cond(
                tf.shape(cells)[0] > 0,
                lambda: tf.where(cells, tf.constant(LEFT_OUT, logits.dtype), logits),
                lambda: logits,
            )
        top = tf.reduce_max(logits, axis=1, keepdims=True)
        e = tf.exp(logits - top)  # kept for the backward pass: the softmax up to 1 / s
        s = tf.reduce_sum(e, axis=1)
        v_label = tf.reduce_mean(tf.gather(v, labels), axis=1)  # [M, d]
        z_label = tf.reduce_sum(u * v_label, -1) + tf.reduce_mean(tf.gather(b, labels), axis=1)
        out = tf.math.log(s) + top[:, 0] - z_label

        def grad(dy: tf.Tensor):
            with tf.name_scope("full_softmax_grad"):  # profiles charge these to the loss
                # dy · softmax is diag(w) · e with w = dy / s: the row scale goes on the small
                # operands and results ([M, d], [C]) instead of a pass over the [M, C] e.
                w = dy / s
                e_c = tf.cast(e, compute_dtype)
                du = w[:, tf.newaxis] * tf.cast(tf.matmul(e_c, v_c), dtype)
                du -= dy[:, tf.newaxis] * v_label
                uw = tf.cast(u * w[:, tf.newaxis], compute_dtype)
                # Each label's row of V gets −dy/n · u; duplicates add up, as the weights do.
                weight = tf.repeat(dy / num_labels, n)  # [M·n], one per label
                flat = tf.reshape(labels, [-1, 1])
                dv = tf.tensor_scatter_nd_add(
                    tf.cast(tf.matmul(e_c, uw, transpose_a=True), dtype),
                    flat,
                    -weight[:, tf.newaxis] * tf.repeat(u, n, axis=0),
                )
                db = tf.linalg.matvec(e, w, transpose_a=True) - tf.math.unsorted_segment_sum(
                    weight, flat[:, 0], tf.shape(b)[0]
                )
                return du, dv, db

        return out, grad

    # Variables are read here, outside the custom gradient, so theirs flows through the read.
    out = loss(vectors, tf.convert_to_tensor(table), tf.convert_to_tensor(bias))
    return out[:rows] if low else out
