"""FAISS indexes: Flat equals brute force; approximate recall is measured."""

import numpy as np
import pytest

from sdm_tf.serving import index as I


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    items = rng.normal(size=(3000, 17)).astype(np.float32)
    queries = rng.normal(size=(50, 17)).astype(np.float32)
    return items, queries


def test_flat_top_k_equals_brute_force(data):
    items, queries = data
    index = I.build(items, I.IndexConfig(kind="flat"))
    scores, ids = I.search(index, queries, 20)
    brute = queries @ items.T
    expected = np.argsort(-brute, axis=1, kind="stable")[:, :20]
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(brute, expected, 1), rtol=1e-5)


@pytest.mark.parametrize(
    "kind,params", [("hnsw", {"ef_search": 256}), ("ivfpq", {"nlist": 32, "nprobe": 32})]
)
def test_approximate_recall_is_reported(data, kind, params, tmp_path):
    items, queries = data
    cfg = I.IndexConfig(kind=kind, **params)
    index = I.build(items, cfg)
    exact = I.build(items, I.IndexConfig(kind="flat"))
    report = I.evaluate(index, exact, queries, 20)
    assert 0.0 <= report["recall@20"] <= 1.0
    floor = 0.9 if kind == "hnsw" else 0.3  # PQ codes on random Gaussians are lossy
    assert report["recall@20"] >= floor
    path = str(tmp_path / f"{kind}.faiss")
    I.save(index, cfg, path, report)
    loaded, loaded_cfg = I.load(path)
    assert loaded_cfg == cfg
    np.testing.assert_array_equal(I.search(loaded, queries, 5)[1], I.search(index, queries, 5)[1])


def test_recall_by_hand():
    assert I.recall_at_k(
        np.array([[1, 2, 3], [4, 5, -1]]), np.array([[3, 2, 9], [4, 6, 7]])
    ) == pytest.approx(0.5)


def test_unknown_kind():
    with pytest.raises(ValueError):
        I.IndexConfig(kind="lsh")
