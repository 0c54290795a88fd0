"""The launchers share one absl flag namespace: they must import together (as in one process)."""

import importlib

LAUNCHERS = [
    "generate", "preprocess", "train", "evaluate", "bench_split", "export", "build_index",
    "serve", "query", "local_cluster",
]  # fmt: skip


def test_all_launchers_import_together():
    for name in LAUNCHERS:
        importlib.import_module(f"launch.{name}")


def test_flags_parse_with_every_launcher_loaded():
    from absl import flags

    for name in LAUNCHERS:
        importlib.import_module(f"launch.{name}")
    try:
        flags.FLAGS(["prog", "--preset=smoke", "--override=model.dim=8"])
        assert flags.FLAGS.preset == "smoke"
    finally:
        flags.FLAGS.unparse_flags()
