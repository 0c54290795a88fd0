"""FAISS indexes: Flat equals brute force; approximate recall is measured."""

import pathlib
import subprocess
import sys

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


def test_ivf_searching_every_cell_is_exact_and_fewer_cells_cost_recall(data, tmp_path):
    """IVF-Flat keeps full vectors: with nprobe = nlist it visits every item and returns the
    exact top-K; one cell of 32 holds only part of each query's top 20."""
    items, queries = data
    exact = I.build(items, I.IndexConfig(kind="flat"))
    cfg = I.IndexConfig(kind="ivf", nlist=32, nprobe=32)
    index = I.build(items, cfg)
    assert I.evaluate(index, exact, queries, 20)["recall@20"] == 1.0
    cfg.nprobe = 1
    I.set_search_params(index, cfg)
    assert I.evaluate(index, exact, queries, 20)["recall@20"] < 0.8
    I.save(index, cfg, str(tmp_path / "ivf.faiss"), {})
    loaded, loaded_cfg = I.load(str(tmp_path / "ivf.faiss"))
    assert loaded_cfg.nprobe == 1 and I.faiss.extract_index_ivf(loaded).nprobe == 1


def test_recall_by_hand():
    assert I.recall_at_k(
        np.array([[1, 2, 3], [4, 5, -1]]), np.array([[3, 2, 9], [4, 6, 7]])
    ) == pytest.approx(0.5)


def test_unknown_kind():
    with pytest.raises(ValueError):
        I.IndexConfig(kind="lsh")


def test_gpu_indexes_are_placed_by_build_and_load_and_saved_from_a_cpu_copy(
    data, tmp_path, monkeypatch
):
    """faiss-gpu faked on a CPU host: what goes to the GPUs and what comes back, per config."""
    items, queries = data
    moved, back = [], []
    monkeypatch.setattr(I, "num_gpus", lambda: 1)
    # faiss-cpu has no index_gpu_to_cpu: raising=False adds it.
    monkeypatch.setattr(I.faiss, "index_cpu_to_all_gpus", lambda ix: moved.append(ix) or ix, False)
    monkeypatch.setattr(I.faiss, "index_gpu_to_cpu", lambda ix: back.append(ix) or ix, False)
    gpu, cpu, hnsw = (
        I.IndexConfig(kind="flat"),
        I.IndexConfig(kind="flat", use_gpu=False),
        I.IndexConfig(kind="hnsw", ef_search=64),
    )
    assert [I.on_gpu(c) for c in (gpu, cpu, hnsw)] == [True, False, False]
    for name, cfg in (("gpu", gpu), ("cpu", cpu), ("hnsw", hnsw)):
        index = I.build(items, cfg)
        assert len(moved) == (name == "gpu")
        I.save(index, cfg, str(tmp_path / name), {})
        assert len(back) == (name == "gpu")  # a CPU index is written as it is, not copied
        loaded, _ = I.load(str(tmp_path / name))
        assert len(moved) == 2 * (name == "gpu")  # load puts it back on the GPUs
        assert (I.search(loaded, queries, 5)[1] == I.search(index, queries, 5)[1]).all()
        moved.clear(), back.clear()
    monkeypatch.setattr(I, "num_gpus", lambda: 0)
    assert not I.on_gpu(gpu)


def test_a_broken_faiss_install_is_named_at_import(tmp_path):
    # What `pip uninstall faiss-cpu` leaves of faiss-gpu installed beside it: a folder without
    # the module, which Python imports as an empty namespace package. `-S`: no site-packages
    # (their faiss would win), numpy linked in by hand.
    site = pathlib.Path(np.__file__).parents[1]
    for name in ("numpy", "numpy.libs"):
        if (site / name).exists():
            (tmp_path / name).symlink_to(site / name)
    (tmp_path / "faiss").mkdir()
    (tmp_path / "faiss" / "_gpu_build.py").write_text("IS_GPU_BUILD = True\n")
    out = subprocess.run(
        [sys.executable, "-S", "-c", "import sdm_tf.serving.index"],
        env={"PYTHONPATH": str(tmp_path)},
        cwd=str(pathlib.Path(I.__file__).parents[2]),
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1 and "is broken" in out.stderr, out.stderr[-500:]
