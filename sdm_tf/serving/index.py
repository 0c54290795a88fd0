"""FAISS item indexes over the exported item table: exact and approximate inner product.

Items are indexed as [v_c, b_c] and queried with [u, 1], so the inner product is exactly the
model's score u . v_c + b_c (the softmax bias included).

Kinds:
  flat    IndexFlatIP: exact (brute force).
  ivf     IndexIVFFlat (inner product): `nlist` coarse cells of full vectors, `nprobe` cells
          searched, exact scores within them. Fast to build; its recall at a given nprobe
          depends on how clustered the items are (docs/performance.md: .97 at nprobe 16 of
          4,096 on a tightly clustered 10^6, .50 on a loosely clustered one, HNSW's .95 / .88).
  ivfpq   IndexIVFPQ (inner product): `nlist` coarse cells, `m` sub-quantizers of `nbits` bits,
          `nprobe` cells searched.
  hnsw    IndexHNSWFlat (inner product): `hnsw_m` links, `ef_construction`, `ef_search`.

Flat, ivf and ivfpq live on every GPU that faiss-gpu finds when the config's `use_gpu` is on (HNSW
is CPU-only in FAISS): `build` and `load` put them there, `save` writes a CPU copy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import tempfile
import time

import numpy as np

try:
    import faiss
except ImportError as e:  # setup.py's extras: exactly one of cpu (faiss-cpu) and gpu (faiss-gpu)
    raise ImportError(
        "sdm's item index needs FAISS: pip install 'sdm[cpu]', or 'sdm[gpu]' on CUDA hosts"
    ) from e
if not hasattr(faiss, "Index"):  # an empty `faiss` folder: what uninstalling one of two leaves
    raise ImportError(
        f"the FAISS install at {list(faiss.__path__)} is broken (faiss-cpu and faiss-gpu were "
        "both installed and one removed?): pip install --force-reinstall faiss-cpu (or faiss-gpu)"
    )

KINDS = ("flat", "ivf", "ivfpq", "hnsw")
_CHUNK = 64 << 20  # bytes read at a time when loading


@dataclasses.dataclass
class IndexConfig:
    kind: str = "hnsw"
    nlist: int = 1024
    m: int = 16
    nbits: int = 8
    nprobe: int = 32
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 800  # recall@300 .964 over 10^6 items at p99 4.5 ms (docs/performance.md)
    use_gpu: bool = True

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"index kind must be one of {KINDS}, got {self.kind!r}")


def num_gpus() -> int:
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


def on_gpu(cfg: IndexConfig) -> bool:
    """Whether `build` and `load` place `cfg`'s index on the GPUs of this host. FAISS GPU indexes
    must not be searched from two threads at once (the service serialises their searches)."""
    return cfg.use_gpu and cfg.kind != "hnsw" and num_gpus() > 0


def _to_gpus(index: faiss.Index, cfg: IndexConfig) -> faiss.Index:
    return faiss.index_cpu_to_all_gpus(index) if on_gpu(cfg) else index


def build(vectors: np.ndarray, cfg: IndexConfig) -> faiss.Index:
    """vectors: [N, D] float32 (augmented items) -> a trained, filled index."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = x.shape
    nlist = max(1, min(cfg.nlist, n // 39))  # ivf kinds: FAISS wants >= 39 points per cell
    if cfg.kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif cfg.kind == "ivf":
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
    elif cfg.kind == "ivfpq":
        # PQ needs m | d: pad with zero dimensions, which leave inner products unchanged.
        d_pad = -(-d // cfg.m) * cfg.m
        ivf = faiss.IndexIVFPQ(
            faiss.IndexFlatIP(d_pad), d_pad, nlist, cfg.m, cfg.nbits, faiss.METRIC_INNER_PRODUCT
        )
        index = ivf
        if d_pad != d:
            remap = faiss.RemapDimensionsTransform(d, d_pad, True)
            index = faiss.IndexPreTransform(remap, ivf)
            index.referenced_objects = [remap, ivf]  # keep the parts alive with the wrapper
    else:
        index = faiss.IndexHNSWFlat(d, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = cfg.ef_construction
    set_search_params(index, cfg)  # efSearch or nprobe, as `load` sets them
    index = _to_gpus(index, cfg)
    if not index.is_trained:
        index.train(x)
    index.add(x)
    return index


def set_search_params(index: faiss.Index, cfg: IndexConfig) -> None:
    """efSearch or nprobe from `cfg`, on a CPU index (`load` sets them before the GPU copy)."""
    if cfg.kind == "hnsw":
        faiss.downcast_index(index).hnsw.efSearch = cfg.ef_search
    elif cfg.kind in ("ivf", "ivfpq"):
        ivf = faiss.extract_index_ivf(index)
        ivf.nprobe = min(cfg.nprobe, ivf.nlist)


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """queries: [B, D] -> (scores [B, k], ids [B, k]); ids are item classes, best first."""
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)


def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Mean |approx top-K ∩ exact top-K| / K."""
    k = exact_ids.shape[1]
    hits = [len(set(a[a >= 0]) & set(e)) for a, e in zip(approx_ids, exact_ids)]
    return float(np.mean(hits) / k)


def _hash_copy(src, out=None) -> tuple[int, str]:
    """Streams `src` in chunks through sha256 (and into `out`, if given): (bytes, hex digest)."""
    digest, size = hashlib.sha256(), 0
    while chunk := src.read(_CHUNK):
        digest.update(chunk)
        size += len(chunk)
        if out is not None:
            out.write(chunk)
    return size, digest.hexdigest()


def save(index: faiss.Index, cfg: IndexConfig, path: str, report: dict) -> None:
    """Writes the index to `path` and then `path`.json (its config, report, size and sha256), on
    any tf.io.gfile filesystem. The metadata goes last and `load` checks the index against it,
    so a half-written index is never picked up; an older metadata file is removed first. FAISS
    writes to disk (a temporary local file when `path` is remote), never through a bytes copy."""
    import tensorflow as tf

    cpu = faiss.index_gpu_to_cpu(index) if on_gpu(cfg) else index
    meta_path = path + ".json"
    if tf.io.gfile.exists(meta_path):
        tf.io.gfile.remove(meta_path)
    tf.io.gfile.makedirs(os.path.dirname(path) or ".")
    local = "://" not in path
    tmp = None if local else tempfile.NamedTemporaryFile(suffix=".faiss", delete=False)
    try:
        if tmp is not None:
            tmp.close()
        faiss.write_index(cpu, path if local else tmp.name)
        copy = contextlib.nullcontext() if local else tf.io.gfile.GFile(path, "wb")
        with open(path if local else tmp.name, "rb") as src, copy as out:
            size, sha256 = _hash_copy(src, out)
    finally:
        if tmp is not None:
            os.unlink(tmp.name)
    meta = {
        "config": dataclasses.asdict(cfg),
        "bytes": size,
        "sha256": sha256,
        **report,
    }
    with tf.io.gfile.GFile(meta_path, "w") as f:
        f.write(json.dumps(meta, indent=1))


def load(path: str) -> tuple[faiss.Index, IndexConfig]:
    """The index at `path`, checked against its metadata. The file is streamed through the
    hash (and, off the local disk, into a temporary local copy) and read by FAISS from disk, so
    the peak memory is the index's own size, not twice it. A GPU index (`on_gpu`) is copied to
    the GPUs and its CPU copy freed."""
    import tensorflow as tf

    meta_path = path + ".json"
    if not tf.io.gfile.exists(meta_path):
        raise FileNotFoundError(f"no complete index at {path} ({meta_path} is missing)")
    with tf.io.gfile.GFile(meta_path) as f:
        meta = json.load(f)
    local = "://" not in path
    tmp = None if local else tempfile.NamedTemporaryFile(suffix=".faiss", delete=False)
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            size, sha256 = _hash_copy(f, tmp)
        if tmp is not None:
            tmp.close()
        if size != meta["bytes"] or sha256 != meta["sha256"]:
            raise ValueError(f"index {path} does not match its metadata (partly written?)")
        index = faiss.read_index(path if local else tmp.name)
    finally:
        if tmp is not None:
            tmp.close()
            os.unlink(tmp.name)
    cfg = IndexConfig(**meta["config"])
    set_search_params(index, cfg)
    return _to_gpus(index, cfg), cfg


def evaluate(index, exact, queries: np.ndarray, k: int) -> dict:
    """Recall@k of `index` against the exact index, and its search time per query."""
    _, truth = search(exact, queries, k)
    start = time.perf_counter()
    _, got = search(index, queries, k)
    seconds = time.perf_counter() - start
    return {
        f"recall@{k}": recall_at_k(got, truth),
        "queries": int(queries.shape[0]),
        "ms_per_query_batched": 1000 * seconds / max(1, queries.shape[0]),
    }
