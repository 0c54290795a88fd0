"""Shared fixtures: one small synthetic data set, preprocessed once per session."""

import os
import pathlib

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from pipelines import preprocess, synthetic  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

# Tiny but structured: a few hundred users, a small catalog, two weeks.
TINY = synthetic.SyntheticConfig(
    num_events=30_000,
    num_items=600,
    num_top_categories=6,
    leaves_per_category=4,
    brands_per_category=5,
    seed=7,
)


def shared_path(*parts: str) -> pathlib.Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is missing (../shared is only beside a checkout that has the data)")
    return path


def prepare_split(out: pathlib.Path, fmt: str, data: pathlib.Path, *args: str) -> pathlib.Path:
    """../shared's prepare.py run on `data` in `fmt`, its split written to `out`."""
    import subprocess
    import sys

    prepare = shared_path("bench", "prepare.py")
    subprocess.run(
        [sys.executable, str(prepare), "--format", fmt, "--input", str(data), "--out", str(out),
         *args],
        check=True, capture_output=True,
    )  # fmt: skip
    return out


def taobao_time_split(out: pathlib.Path, min_item_count: int) -> pathlib.Path:
    """../shared's Taobao sample as a prepare.py time-protocol split in `out`."""
    data = shared_path("data", "taobao_sample", "UserBehavior.csv")
    return prepare_split(
        out, "taobao", data, "--protocol", "time", "--min-item-count", str(min_item_count)
    )


IN_MEMORY = ["--direct_running_mode=in_memory"]

_GRPC_NOISE = ("grpc", "GRPC", "remote target", "Failed to remove function", "E0000", "W0000")


def stderr_digest(stderr: str, tail: int = 3000) -> str:
    """A subprocess's stderr for an assertion message, without TensorFlow's gRPC shutdown lines
    (which otherwise fill the tail and hide the traceback)."""
    lines = [line for line in stderr.splitlines() if not any(n in line for n in _GRPC_NOISE)]
    return "\n".join(lines)[-tail:]


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("synthetic")
    synthetic.generate(TINY, str(out))
    return out


@pytest.fixture(scope="session")
def preprocessed_dir(synthetic_dir, tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("preprocessed")
    preprocess.run(
        [
            "--input",
            str(synthetic_dir / "events.csv"),
            "--item_table",
            str(synthetic_dir / "items.csv"),
            "--user_table",
            str(synthetic_dir / "users.csv"),
            "--output_dir",
            str(out),
            "--num_shards",
            "2",
            *IN_MEMORY,
        ]
    )
    return out


@pytest.fixture(scope="session")
def trained_model_dir(preprocessed_dir, tmp_path_factory) -> pathlib.Path:
    from sdm_tf import config as C
    from sdm_tf.train import training

    out = tmp_path_factory.mktemp("model")
    cfg = C.get_config("smoke", "PSDMMAL-N", ["train.epochs=1", "train.steps_per_epoch=20"])
    training.train(cfg, str(preprocessed_dir), str(out), verbose=0)
    return out


@pytest.fixture(scope="session")
def export_dir(preprocessed_dir, trained_model_dir, tmp_path_factory) -> pathlib.Path:
    from launch import export as export_launcher

    base = tmp_path_factory.mktemp("exports")
    return pathlib.Path(
        export_launcher.run(str(preprocessed_dir), str(trained_model_dir), str(base))
    )
