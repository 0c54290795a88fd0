"""The loss: sampled and exact softmax, next-N labels, and the cells the softmax leaves out."""

import numpy as np
import pytest
import tensorflow as tf

from sdm_tf import config as C
from sdm_tf.core import features as F
from sdm_tf.model import masks
from sdm_tf.model.masks import input_classes, left_out, prior_mask, prior_pairs
from sdm_tf.model.sdm import SDM
from sdm_tf.model.softmax import exact_softmax_cross_entropy
from tests.model_case import SPEC, batch, smoke


def every_class(num_classes):
    def sampler(true_classes, num_sampled):
        del num_sampled
        n = tf.shape(true_classes)
        return (
            tf.range(num_classes, dtype=tf.int64),
            tf.ones(n, tf.float32),
            tf.ones([num_classes], tf.float32),
        )

    return sampler


@pytest.mark.parametrize("positions", ["all", "last"])
@pytest.mark.parametrize("full", [False, True])
def test_loss_equals_full_softmax_when_every_class_is_sampled(positions, full):
    # full: num_sampled >= the number of items switches to the exact softmax; otherwise a
    # sampler that returns every class makes the sampled loss the full one.
    overrides = [f"model.loss_positions={positions}"]
    if full:
        overrides.append(f"model.num_sampled={SPEC.num_items}")
    model = SDM(SPEC, smoke("PSDMMAL", *overrides))
    if not full:
        model.candidate_sampler = every_class(SPEC.num_items)
    assert model.full_softmax == full

    x = batch()
    loss = float(model.compute_loss(x))
    o = model.tower(x).numpy()
    logits = np.einsum("btd,cd->btc", o, model.item_table.numpy()) + model.output_bias.numpy()
    labels = x[F.LABEL].numpy() - F.NUM_RESERVED
    terms = []
    for b, n in enumerate(x[F.LENGTH].numpy()):
        for t in range(n) if positions == "all" else [n - 1]:
            z = logits[b, t]
            terms.append(np.log(np.exp(z - z.max()).sum()) + z.max() - z[labels[b, t]])
    assert loss == pytest.approx(np.mean(terms), rel=1e-4)


def test_small_catalogues_get_the_full_softmax():
    full = SDM(SPEC, smoke("PSDMMAL", "model.full_softmax_max_items=10"))
    sampled = SDM(SPEC, smoke("PSDMMAL", "model.full_softmax_max_items=9", "model.num_sampled=9"))
    assert SPEC.num_items == 10 and full.full_softmax and not sampled.full_softmax
    assert full.objective == "exact softmax over 10 items"
    assert sampled.objective == "sampled softmax, 9 negatives of 10 items"
    assert C.get_config().model.full_softmax_max_items == 20_000  # the default: on


def test_next_n_loss_by_hand():
    model = SDM(SPEC, smoke("PSDMMAL-N", "model.next_n=3"))
    model.candidate_sampler = every_class(SPEC.num_items)
    x = batch()
    loss = float(model.compute_loss(x))
    o = model.tower(x).numpy()
    logits = np.einsum("btd,cd->btc", o, model.item_table.numpy()) + model.output_bias.numpy()
    nn = x[F.LABEL_NEXT_N].numpy()
    first = x[F.LABEL].numpy()
    terms = []
    for b, n in enumerate(x[F.LENGTH].numpy()):
        for t in range(n):
            true = [c if c >= 2 else first[b, t] for c in nn[b, t]]
            true = np.array(true) - F.NUM_RESERVED
            # sampled softmax with N true columns: labels 1/N each over [true..., others]
            others = [c for c in range(SPEC.num_items) if c not in set(true)]
            z = np.concatenate([logits[b, t, true], logits[b, t, others]])
            lse = np.log(np.exp(z - z.max()).sum()) + z.max()
            terms.append(np.mean(lse - logits[b, t, true]))
    assert loss == pytest.approx(np.mean(terms), rel=1e-4)


def test_full_softmax_next_n_loss_by_hand():
    model = SDM(SPEC, smoke("PSDMMAL-N", "model.next_n=3", "model.num_sampled=1000"))
    x = batch()
    loss = float(model.compute_loss(x))
    o = model.tower(x).numpy()
    logits = np.einsum("btd,cd->btc", o, model.item_table.numpy()) + model.output_bias.numpy()
    nn, first = x[F.LABEL_NEXT_N].numpy(), x[F.LABEL].numpy()
    terms = []
    for b, n in enumerate(x[F.LENGTH].numpy()):
        for t in range(n):
            true = np.array([c if c >= 2 else first[b, t] for c in nn[b, t]]) - F.NUM_RESERVED
            z = logits[b, t]
            lse = np.log(np.exp(z - z.max()).sum()) + z.max()  # every item once
            terms.append(np.mean(lse - z[true]))
    assert loss == pytest.approx(np.mean(terms), rel=1e-4)


def test_log_uniform_loss_trains():
    model = SDM(SPEC, smoke("PSDMMAL-N", "model.next_n=3", "model.num_sampled=4"))
    assert not model.full_softmax
    model.compile(optimizer=tf.keras.optimizers.Adam(0.05))
    x = batch(b=3)
    ds = tf.data.Dataset.from_tensors(x).repeat(60)

    def mean_loss():  # each call draws new negatives: average the draws
        return np.mean([float(model.compute_loss(x)) for _ in range(20)])

    before = mean_loss()
    model.fit(ds, verbose=0)
    assert mean_loss() < before  # by 0.1-0.5 over 3 inits, 4+ standard errors of the means


def test_next_n_beyond_the_data_is_rejected():
    with pytest.raises(ValueError, match="next_n"):
        SDM(SPEC, smoke("PSDMMAL-N", "model.next_n=5"))


def test_the_logged_loss_is_the_epochs_mean_not_its_last_batch():
    cfg = smoke(
        "PSDMMAL", "model.full_softmax_max_items=10", "model.lstm_dropout=0",
        "model.embedding_dropout=0", "model.attention_dropout=0",
    )  # fmt: skip
    model = SDM(SPEC, cfg)
    model.compile(optimizer=tf.keras.optimizers.SGD(0.0))  # the weights stay put
    xs = [batch(seed=s) for s in (1, 2, 3)]
    losses = [float(model.compute_loss(x)) for x in xs]
    assert max(losses) - min(losses) > 1e-3  # the three batches differ
    data = tf.data.Dataset.from_generator(
        lambda: iter(xs),
        output_signature={k: tf.TensorSpec.from_tensor(v) for k, v in xs[0].items()},
    )
    history = model.fit(data, epochs=2, verbose=0).history
    assert history["loss"] == pytest.approx([np.mean(losses)] * 2, rel=1e-5)
    assert "epoch_loss" not in history


def test_input_classes_by_hand():
    # One session 5, 6, 5 (classes 3, 4, 3) with the bag 7, pad (class 5); labels 4, 3, 9.
    # Position 0 sees {3} + bag {5}; position 1 sees {3, 4} but 3 is its label; position 2
    # sees 3, 4, 3 (the repeat listed twice: the same update) and the bag.
    x = {
        F.short_key(F.ITEM): tf.constant([[5, 6, 5]], tf.int64),
        F.long_key(F.ITEM): tf.constant([[7, 0]], tf.int64),
    }
    mask = tf.constant([[True, True, True]])
    labels = tf.constant([[4], [3], [9]], tf.int64)
    got = input_classes(x, mask, labels).numpy().tolist()
    assert got == [[0, 3], [0, 5], [1, 4], [1, 5], [2, 3], [2, 4], [2, 3], [2, 5]]
    # Padded positions are not rows: only position 1 of a length-2 session, here row 0.
    got = input_classes(x, tf.constant([[False, True, False]]), labels[1:2]).numpy().tolist()
    assert got == [[0, 4], [0, 5]]


def test_prior_mask_by_hand():
    # Record 0 (2 positions) had items 9, 8 (classes 7, 6) before its session, record 1 (1
    # position) had item 2 (class 0); padding and OOV ids (0, 1) are not classes. A position's
    # own label stays in: position 1 is labelled 7.
    prior = tf.constant([[9, 8, 1], [2, 0, 0]], tf.int64)
    mask = tf.constant([[True, True], [True, False]])
    labels = tf.constant([[3], [7], [5]], tf.int64)
    got = prior_mask(prior, mask, labels, 8).numpy()
    want = np.zeros([3, 8], bool)
    want[0, [6, 7]] = True
    want[1, 6] = True
    want[2, 0] = True
    np.testing.assert_array_equal(got, want)
    pairs = prior_pairs(prior, mask, labels).numpy().tolist()
    assert pairs == [[0, 7], [0, 6], [1, 6], [2, 0]]  # the same cells (rows in order)


@pytest.mark.parametrize("num_classes", [8, 1000])
def test_left_out_takes_pairs_or_the_dense_prior_with_the_same_cells(num_classes):
    # test_prior_mask_by_hand's prior: 5 cells. Of 3 × 8 logits that is dense; of 3 × 1,000
    # it is under one in 64 (PRIOR_PAIRS_SHARE), so pairs. Session items 4, 5 (classes 2, 3).
    x = {
        F.short_key(F.ITEM): tf.constant([[4, 5], [5, 0]], tf.int64),
        F.long_key(F.ITEM): tf.constant([[0], [0]], tf.int64),
        F.PRIOR: tf.constant([[9, 8, 1], [2, 0, 0]], tf.int64),
    }
    mask = tf.constant([[True, True], [True, False]])
    labels = tf.constant([[3], [7], [5]], tf.int64)
    pairs, cells = left_out(x, mask, labels, num_classes)
    assert cells.shape[0] == (3 if num_classes == 8 else 0)
    got = np.zeros([3, num_classes], bool)
    got[tuple(pairs.numpy().T)] = True
    got[: cells.shape[0]] |= cells.numpy()
    want = np.zeros([3, num_classes], bool)
    want[0, [2, 6, 7]] = True  # its session item (class 2), the prior (7, 6)
    want[1, [2, 3, 6]] = True  # the session's 2, 3; the prior's 7 is its own label
    want[2, [0, 3]] = True
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("share", [0, 10**9], ids=["prior_as_pairs", "prior_dense"])
def test_masked_inputs_leave_the_softmax_by_hand(share, monkeypatch):
    monkeypatch.setattr(masks, "PRIOR_PAIRS_SHARE", share)
    model = SDM(SPEC, smoke("PSDMMAL", "model.num_sampled=1000", "model.mask_inputs=on"))
    assert model.full_softmax
    x = batch()
    x[F.PRIOR] = tf.constant([[9, 10, 11, 2], [3, 0, 0, 0], [0, 0, 0, 0]], tf.int64)
    loss = float(model.compute_loss(x))
    o = model.tower(x).numpy()
    logits = np.einsum("btd,cd->btc", o, model.item_table.numpy()) + model.output_bias.numpy()
    labels = x[F.LABEL].numpy() - F.NUM_RESERVED
    short = x[F.short_key(F.ITEM)].numpy() - F.NUM_RESERVED
    bag = x[F.long_key(F.ITEM)].numpy() - F.NUM_RESERVED
    prior = x[F.PRIOR].numpy() - F.NUM_RESERVED
    terms = []
    for b, n in enumerate(x[F.LENGTH].numpy()):
        for t in range(n):
            seen = {c for c in [*short[b, : t + 1], *bag[b], *prior[b]] if c >= 0}
            seen -= {labels[b, t]}
            z = np.array([v for c, v in enumerate(logits[b, t]) if c not in seen])
            lse = np.log(np.exp(z - z.max()).sum()) + z.max()
            terms.append(lse - logits[b, t, labels[b, t]])
    assert loss == pytest.approx(np.mean(terms), rel=1e-4)
    unmasked = SDM(SPEC, smoke("PSDMMAL", "model.num_sampled=1000", "model.mask_inputs=off"))
    unmasked(x)
    unmasked.set_weights(model.get_weights())
    assert float(unmasked.compute_loss(x)) > loss  # the masked items held probability


def _softmax_by_hand(u, v, b, labels, left_out, dy):
    """Loss and gradients of the masked softmax cross-entropy, one row at a time in numpy."""
    losses, du, dv, db = [], np.zeros_like(u), np.zeros_like(v), np.zeros_like(b)
    for m in range(len(u)):
        z = v @ u[m] + b
        kept = [c for c in range(len(v)) if c not in left_out[m]]
        p = np.zeros(len(v))
        p[kept] = np.exp(z[kept] - z[kept].max()) / np.exp(z[kept] - z[kept].max()).sum()
        target = np.zeros(len(v))
        for c in labels[m]:
            target[c] += 1.0 / len(labels[m])
        losses.append(np.log(np.exp(z[kept] - z[kept].max()).sum()) + z[kept].max() - target @ z)
        g = dy[m] * (p - target)  # d loss_m / d z
        du[m] = g @ v
        dv += np.outer(g, u[m])
        db += g
    return np.array(losses), du, dv, db


def _exact_softmax(u, v, b, labels, masked, cells, dy, compute_dtype=tf.float32):
    """`exact_softmax_cross_entropy`'s losses and the gradients of Σ dy · loss for u, v, b."""
    args = [tf.constant(x) for x in (u, v, b)]
    with tf.GradientTape() as tape:
        tape.watch(args)
        losses = exact_softmax_cross_entropy(
            *args, tf.constant(labels, tf.int64), masked, cells, compute_dtype=compute_dtype
        )
        total = tf.reduce_sum(losses * dy)
    return losses, tape.gradient(total, args)


@pytest.mark.parametrize(
    "labels", [[[2], [5], [3], [0]], [[2, 2], [5, 1], [3, 0], [0, 5]]], ids=["next", "next_n"]
)
def test_exact_softmax_loss_and_gradients_by_hand(labels):
    rng = np.random.default_rng(0)
    u, v, b = (rng.normal(size=s).astype(np.float32) for s in ([4, 3], [6, 3], [6]))
    masked = [[0, 1], [0, 4], [2, 1]]  # (row, class) pairs
    cells = np.zeros([4, 6], bool)
    cells[3, [1, 2]] = True
    dy = np.array([1.0, 0.5, 2.0, 1.0], np.float32)  # a weighted sum checks dy's scaling
    losses, grads = _exact_softmax(u, v, b, labels, tf.constant(masked, tf.int64), cells, dy)
    left_out = [{1, 4}, set(), {1}, {1, 2}]
    want = _softmax_by_hand(u, v, b, labels, left_out, dy)
    np.testing.assert_allclose(losses.numpy(), want[0], rtol=1e-5)
    for got, expected in zip(grads, want[1:]):
        np.testing.assert_allclose(got.numpy(), expected, atol=1e-5)


def test_exact_softmax_in_bfloat16_pads_and_slices_back():
    """bfloat16 matmuls: the float32 answer to bfloat16's precision, for 4 rows padded to 64
    inside; a padded row leaking into the gradients would move db[0] by about 1."""
    rng = np.random.default_rng(0)
    u, v, b = (rng.normal(size=s).astype(np.float32) for s in ([4, 3], [6, 3], [6]))
    labels = [[2], [5], [3], [0]]
    cells = np.zeros([4, 6], bool)
    cells[3, [1, 2]] = True
    dy = np.array([1.0, 0.5, 2.0, 1.0], np.float32)
    losses, grads = _exact_softmax(u, v, b, labels, None, cells, dy, tf.bfloat16)
    want = _softmax_by_hand(u, v, b, labels, [set(), set(), set(), {1, 2}], dy)
    assert losses.dtype == tf.float32 and losses.shape == (4,)
    np.testing.assert_allclose(losses.numpy(), want[0], atol=0.03)
    for got, expected in zip(grads, want[1:]):
        assert got.shape == expected.shape
        np.testing.assert_allclose(got.numpy(), expected, atol=0.03)
