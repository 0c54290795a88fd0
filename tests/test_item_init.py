"""The item table's start from co-occurrences: counts, PPMI and the SVD by hand, then in a run."""

import math

import numpy as np
import pytest
import tensorflow as tf

from sdm_tf import config as C
from sdm_tf.core import features as F
from sdm_tf.train import item_init as I
from sdm_tf.train import training

ITEMS = F.short_key(F.ITEM)


def _pairs(rows, cols, counts) -> dict[tuple[int, int], float]:
    return {(int(r), int(c)): float(n) for r, c, n in zip(rows, cols, counts)}


def test_pairs_are_each_input_with_its_next_n_items_both_ways():
    # One session of items (ids) 2, 3, 4, 5 with N = 2: inputs 2, 3, 4 and their next two.
    # Classes are ids - 2: pairs (0,1) (0,2) (1,2) (1,3) (2,3).
    session = {ITEMS: [[2, 3, 4]], F.LABEL_NEXT_N: [[[3, 4], [4, 5], [5, 0]]]}
    # A second record: a repeat (3 -> 3) and an out-of-vocabulary item (1) count for nothing;
    # (3, 4) again makes (1, 2) a count of 2.
    other = {ITEMS: [[3, 1, 0]], F.LABEL_NEXT_N: [[[3, 4], [4, 0], [0, 0]]]}
    got = _pairs(*I.count_pairs([session, other], num_items=5))
    one_way = {(0, 1): 1, (0, 2): 1, (1, 2): 2, (1, 3): 1, (2, 3): 1}
    want = {**one_way, **{(b, a): n for (a, b), n in one_way.items()}}
    assert got == want


def test_pairs_merge_across_compactions(monkeypatch):
    batch = {ITEMS: [[2, 3]], F.LABEL_NEXT_N: [[[3], [2]]]}  # 0 -> 1 and 1 -> 0
    monkeypatch.setattr(I, "_COMPACT_EVERY", 2)  # merge after every batch
    assert _pairs(*I.count_pairs([batch] * 3, num_items=2)) == {(0, 1): 6.0, (1, 0): 6.0}


def test_an_id_beyond_the_vocabulary_is_a_clear_error():
    batch = {ITEMS: [[2]], F.LABEL_NEXT_N: [[[9]]]}
    with pytest.raises(ValueError, match="beyond the vocabulary of 3 items"):
        I.count_pairs([batch], num_items=3)


def test_ppmi_by_hand():
    # Symmetric counts c01 = 1, c02 = 4, c12 = 4: T = 18, r = (5, 5, 8).
    # pmi01 = log(1·18 / 25) < 0 -> 0; pmi02 = pmi12 = log(4·18 / 40) = log 1.8.
    rows = np.array([0, 1, 0, 2, 1, 2])
    cols = np.array([1, 0, 2, 0, 2, 1])
    counts = np.array([1.0, 1, 4, 4, 4, 4])
    np.testing.assert_allclose(I.ppmi(rows, cols, counts), [0, 0] + [math.log(1.8)] * 4, rtol=1e-12)


def test_every_item_with_a_pair_keeps_a_positive_ppmi():
    # The docstring's argument, on skewed counts with hubs: no row of pairs is all zero.
    rng = np.random.default_rng(1)
    sessions = np.minimum(rng.zipf(1.3, size=(300, 8)), 60) + 1  # items 2..61, a few hubs
    batch = {ITEMS: sessions[:, :-1], F.LABEL_NEXT_N: sessions[:, 1:, np.newaxis]}
    rows, cols, counts = I.count_pairs([batch], num_items=64)
    values = I.ppmi(rows, cols, counts)
    assert (values == 0).any()  # the counts do have non-positive PMIs to clip
    assert set(rows[values > 0]) == set(rows)


def test_truncated_svd_finds_the_top_of_a_known_spectrum():
    # [[2, 1], [1, 2]] ⊕ [0.5]: singular values 3 (on (1, 1, 0)/√2), 1 (on (1, -1, 0)/√2), 0.5.
    rows, cols = np.array([0, 0, 1, 1, 2]), np.array([0, 1, 0, 1, 2])
    values = np.array([2.0, 1, 1, 2, 0.5])
    u, s = I.truncated_svd(rows, cols, values, size=3, rank=2)
    np.testing.assert_allclose(s, [3, 1], rtol=1e-5)
    r = math.sqrt(0.5)
    np.testing.assert_allclose(np.abs(u), [[r, r], [r, r], [0, 0]], atol=1e-5)
    assert u[0, 1] * u[1, 1] < 0  # the second vector is the difference


def test_embeddings_have_the_random_initialisers_spread_and_leave_lonely_items_out():
    rng = np.random.default_rng(0)
    sessions = rng.integers(2, 2 + 30, size=(40, 6))  # 30 items of which 2..31 occur
    batch = {ITEMS: sessions[:, :-1], F.LABEL_NEXT_N: sessions[:, 1:, np.newaxis]}
    rows, cols, counts = I.count_pairs([batch], num_items=34)  # classes 30..33 never occur
    vectors, has_pairs = I.embeddings(rows, cols, counts, num_items=34, dim=8)
    assert vectors.shape == (34, 8)
    assert has_pairs[:30].all() and not has_pairs[30:].any()
    assert vectors[has_pairs].std() == pytest.approx(8**-0.5, rel=1e-5)
    assert not vectors[30:].any()


def _model(preprocessed_dir, *overrides):
    cfg = C.get_config("smoke", "PSDMMAL-N", list(overrides))
    return training.build_model(training.load_dataset_spec(str(preprocessed_dir)), cfg)


@pytest.mark.parametrize("tied", [True, False])
def test_the_item_table_starts_from_the_training_splits_pairs(preprocessed_dir, tied):
    model = _model(preprocessed_dir, f"model.tied_output={str(tied).lower()}")
    table = model.tower.embeddings.tables[F.ITEM]
    before = table.numpy().copy()
    out_before = None if tied else model.output_embeddings.numpy().copy()
    summary = I.initialise_item_table(model, str(preprocessed_dir), F.TRAIN, seed=3)
    after = table.numpy()
    rows, cols, counts = I.pairs_of_split(str(preprocessed_dir), F.TRAIN, model.dataset)
    vectors, has_pairs = I.embeddings(
        rows, cols, counts, model.dataset.num_items, after.shape[1], 3
    )
    assert summary["items_initialised"] == has_pairs.sum() > 0
    assert summary["pairs"] == counts.sum()
    np.testing.assert_array_equal(after[: F.NUM_RESERVED], before[: F.NUM_RESERVED])
    body, old = after[F.NUM_RESERVED :], before[F.NUM_RESERVED :]
    np.testing.assert_allclose(body[has_pairs], vectors[has_pairs], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(body[~has_pairs], old[~has_pairs])
    if not tied:
        out = model.output_embeddings.numpy()
        np.testing.assert_allclose(out[has_pairs], vectors[has_pairs], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(out[~has_pairs], out_before[~has_pairs])


def test_training_starts_from_pairs_by_default_and_from_the_initialiser_when_asked(
    preprocessed_dir, tmp_path
):
    steps = ["train.epochs=1", "train.steps_per_epoch=1", "train.learning_rate=0"]
    runs = {}
    for init in ("cooccurrence", "random"):
        cfg = C.get_config("smoke", "PSDMMAL-N", steps + [f"train.item_init={init}"])
        runs[init] = training.train(cfg, str(preprocessed_dir), str(tmp_path / init), verbose=0)
    assert runs["random"]["item_init"] is None
    summary = runs["cooccurrence"]["item_init"]
    assert summary["items_initialised"] > 0
    # A learning rate of 0 leaves the start in place: the pairs' vectors in one, not the other.
    model = runs["cooccurrence"]["model"]
    rows, cols, counts = I.pairs_of_split(str(preprocessed_dir), F.TRAIN, model.dataset)
    table = tf.convert_to_tensor(model.tower.embeddings.tables[F.ITEM]).numpy()
    vectors, has_pairs = I.embeddings(rows, cols, counts, model.dataset.num_items, table.shape[1])
    np.testing.assert_allclose(table[F.NUM_RESERVED :][has_pairs], vectors[has_pairs], atol=1e-6)
    other = runs["random"]["model"].tower.embeddings.tables[F.ITEM].numpy()[F.NUM_RESERVED :]
    assert np.abs(other[has_pairs] - vectors[has_pairs]).max() > 0.01


def test_item_init_is_checked_and_old_configs_read_as_random():
    with pytest.raises(ValueError, match="train.item_init must be"):
        C.get_config("smoke", overrides=["train.item_init=svd"])
    old = C.get_config("smoke").to_dict()
    del old["train"]["item_init"]
    assert C.ExperimentConfig.from_dict(old).train.item_init == "random"
    assert C.get_config("smoke").train.item_init == "cooccurrence"


def test_a_catalogue_over_the_bound_keeps_its_random_start(preprocessed_dir, monkeypatch):
    model = _model(preprocessed_dir)
    table = model.tower.embeddings.tables[F.ITEM]
    before = table.numpy().copy()
    monkeypatch.setattr(I, "MAX_ITEMS", model.dataset.num_items - 1)
    summary = I.initialise_item_table(model, str(preprocessed_dir), F.TRAIN)
    assert summary["items_initialised"] == 0 and summary["skipped"] == "too many"
    np.testing.assert_array_equal(table.numpy(), before)


def test_bench_split_says_how_the_item_table_started():
    from launch.bench_split import item_init_text

    done = {"items_initialised": 1200, "items": 1349, "pairs": 902288, "seconds": 1.3}
    assert item_init_text(done) == (
        "started from co-occurrences (PPMI-SVD): 1,200 of 1,349 items, 902,288 pairs, 1.3 s"
    )
    assert item_init_text(None) == "random start"
    skipped = {"items_initialised": 0, "items": 2_000_000, "skipped": "too many"}
    assert item_init_text(skipped) == "random start (too many items for the co-occurrence start)"
