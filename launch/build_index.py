"""python -m launch.build_index --export_dir exports/sdm [--kind hnsw] [--recall_k 300]

Builds a FAISS index over the exported item table, reports the recall@K of the approximate
index against the exact one, and writes EXPORT/index/<kind>.faiss (+ .json with the report).
"""

import json
import os

import numpy as np
from absl import flags

from launch import common
from sdm_tf.serving import index as I
from sdm_tf.serving.export import Export

EXPORT_DIR = common.EXPORT_DIR
KIND = flags.DEFINE_enum("kind", "hnsw", list(I.KINDS), "index kind")
K = flags.DEFINE_integer("recall_k", 300, "K of the recall report")
NLIST = flags.DEFINE_integer("nlist", 1024, "ivf, ivfpq: coarse cells")
M = flags.DEFINE_integer("m", 16, "ivfpq: sub-quantizers")
NBITS = flags.DEFINE_integer("nbits", 8, "ivfpq: bits per code")
NPROBE = flags.DEFINE_integer("nprobe", 32, "ivf, ivfpq: cells searched")
HNSW_M = flags.DEFINE_integer("hnsw_m", 32, "hnsw: links per node")
EF_CONSTRUCTION = flags.DEFINE_integer("ef_construction", 200, "hnsw: build beam")
EF_SEARCH = flags.DEFINE_integer(
    "ef_search",
    800,
    "hnsw: search beam (800: recall@300 .964 over 10^6 items, docs/performance.md)",
)
NO_GPU = flags.DEFINE_bool("no_gpu", False, "stay on the CPU even if faiss-gpu finds a GPU")
QUERIES = flags.DEFINE_integer("num_queries", 1000, "queries of the recall report")


def run(export_dir: str, cfg: I.IndexConfig, k: int, num_queries: int) -> dict:
    exp = Export(export_dir)
    items = exp.augmented_items()
    index = I.build(items, cfg)
    exact = I.build(items, I.IndexConfig(kind="flat", use_gpu=cfg.use_gpu))
    # Report queries: item vectors with a 1 appended play users; deterministic.
    rng = np.random.default_rng(0)
    rows = rng.choice(len(items), size=min(num_queries, len(items)), replace=False)
    queries = np.hstack([exp.item_embeddings[rows], np.ones((len(rows), 1), np.float32)])
    report = I.evaluate(index, exact, queries, min(k, len(items)))
    report.update(kind=cfg.kind, items=len(items), gpu=I.num_gpus() > 0 and cfg.use_gpu)
    path = os.path.join(exp.path, "index", f"{cfg.kind}.faiss")
    I.save(index, cfg, path, report)
    report["path"] = path
    return report


def main(argv):
    del argv
    common.require(EXPORT_DIR)
    cfg = I.IndexConfig(
        kind=KIND.value, nlist=NLIST.value, m=M.value, nbits=NBITS.value, nprobe=NPROBE.value,
        hnsw_m=HNSW_M.value, ef_construction=EF_CONSTRUCTION.value, ef_search=EF_SEARCH.value,
        use_gpu=not NO_GPU.value,
    )  # fmt: skip
    print(json.dumps(run(EXPORT_DIR.value, cfg, K.value, QUERIES.value), indent=1))


def entry():
    common.run(main)


if __name__ == "__main__":
    entry()
