"""python -m launch.serve --export_dir exports/sdm [--index hnsw] [--host 127.0.0.1 --port 8500]

Loads the export (verified) and its index once, then serves HTTP JSON (see sdm_tf.serving.service).
"""

import os

import tensorflow as tf
from absl import flags

import sdm_tf  # noqa: F401
from launch import common
from sdm_tf.core.errors import InputError
from sdm_tf.serving import index as I
from sdm_tf.serving import service as serving
from sdm_tf.serving.export import Export

EXPORT_DIR = common.EXPORT_DIR
INDEX = flags.DEFINE_string("index", "flat", "an index kind built by launch.build_index, or flat")
HOST = flags.DEFINE_string("host", "127.0.0.1", "listen address (localhost by default)")
PORT = flags.DEFINE_integer("port", 8500, "listen port")
FAISS_THREADS = flags.DEFINE_integer(
    "faiss_threads", 1, "OpenMP threads per search (requests already run concurrently)"
)


def make_retriever(export_dir: str, index_kind: str) -> serving.Retriever:
    exp = Export(export_dir)
    path = os.path.join(exp.path, "index", f"{index_kind}.faiss")
    if tf.io.gfile.exists(path + ".json"):
        index, cfg = I.load(path)
        return serving.Retriever(exp, index, cfg)
    if index_kind != "flat":
        raise InputError(
            f"--index {index_kind}: {path} does not exist (run launch.build_index --kind "
            f"{index_kind})"
        )
    return serving.Retriever(exp)


def main(argv):
    del argv
    common.require(EXPORT_DIR)
    import faiss
    import uvicorn

    faiss.omp_set_num_threads(FAISS_THREADS.value)
    retriever = make_retriever(EXPORT_DIR.value, INDEX.value)
    uvicorn.run(
        serving.create_app(retriever), host=HOST.value, port=PORT.value, log_level="warning"
    )


def entry():
    common.run(main)


if __name__ == "__main__":
    entry()
