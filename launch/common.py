"""Flags shared by the launchers (absl). Library code never reads FLAGS; launchers pass values."""

import os
import sys
from collections.abc import Callable

from absl import app, flags, logging

import sdm_tf  # noqa: F401  (the Keras switch, before TensorFlow loads)
from sdm_tf import config as C
from sdm_tf.core.errors import InputError

# Names several launchers share, defined once so that they can live in one process (tests).
# Defaults come from the environment, so a cluster manifest passes only a preset and overrides.
DATA_DIR = flags.DEFINE_string(
    "data_dir", os.environ.get("SDM_DATA_DIR"), "preprocessed data (default: $SDM_DATA_DIR)"
)
MODEL_DIR = flags.DEFINE_string(
    "model_dir", os.environ.get("SDM_MODEL_DIR"), "model directory (default: $SDM_MODEL_DIR)"
)
SPLIT = flags.DEFINE_string("split", None, "a ../shared/bench/prepare.py output directory")
EXPORT_DIR = flags.DEFINE_string("export_dir", None, "export base (or one version) directory")
OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "where this command writes its results")

PRESET = flags.DEFINE_enum(
    "preset", "default", sorted(C.PRESETS), "named preset (default: the validated recipe)"
)
VARIANT = flags.DEFINE_enum(
    "variant", "PSDMMAL", sorted(C.VARIANTS), "paper variant (default: chosen on validation)"
)
MODEL = flags.DEFINE_enum(
    "model", None, list(C.MODEL_KINDS),
    "user tower: sdm (default) or a paper baseline (youtube_dnn, gru4rec); overrides model.kind",
)  # fmt: skip
OVERRIDES = flags.DEFINE_multi_string(
    "override", [], "config override section.field=value, e.g. model.num_heads=8 (repeatable)"
)
EPOCHS = flags.DEFINE_integer("epochs", None, "overrides train.epochs")
BATCH_SIZE = flags.DEFINE_integer("batch_size", None, "overrides train.batch_size")
STEPS = flags.DEFINE_integer("steps_per_epoch", None, "overrides train.steps_per_epoch")
# bench_split's and experiments' (every cell's); the choices are `bench_lib.FINAL_FITS`.
FINAL_FIT = flags.DEFINE_enum(
    "final_fit", "refit", ["refit", "continue", "resume", "warm", "none"],
    "after validation: refit a fresh model on every training event for the chosen epochs; "
    "continue the best weights (fresh optimizer) for --continue_epochs on them; or resume the "
    "best weights and optimizer state at the decayed rate for --continue_epochs; or (warm) "
    "start from where validation's rate dropped: --continue_epochs at the rate, then the "
    "decayed epochs (refit where the rate never dropped); or none: validation's best "
    "checkpoint ranks the test split and popularity and item-CF count the same training "
    "events (a third less time on Beauty; lower scores for every system). launch.experiments "
    "keeps each kind's cells in its own folder (runs/ for refit, runs_KIND/ otherwise)",
)  # fmt: skip


def require(*holders) -> None:
    """Shared flags cannot be marked required globally (another launcher in the same process may
    not need them), so each main checks its own."""
    missing = [f"--{h.name}" for h in holders if h.value in (None, "")]
    if missing:
        raise app.UsageError(f"missing required flags: {' '.join(missing)}")


def experiment_config() -> C.ExperimentConfig:
    overrides = list(OVERRIDES.value)
    if MODEL.value is not None:
        overrides.insert(0, f"model.kind={MODEL.value}")
    if EPOCHS.value is not None:
        overrides.append(f"train.epochs={EPOCHS.value}")
    if BATCH_SIZE.value is not None:
        overrides.append(f"train.batch_size={BATCH_SIZE.value}")
    if STEPS.value is not None:
        overrides.append(f"train.steps_per_epoch={STEPS.value}")
    return C.get_config(PRESET.value, VARIANT.value, overrides)


def report_input_errors(main: Callable) -> Callable:
    """Wraps a main: an `InputError` becomes one line on stderr and exit status 2 (the
    traceback too with --verbosity=1)."""

    def wrapped(argv):
        try:
            return main(argv)
        except InputError as e:
            if logging.get_verbosity() >= logging.DEBUG:
                raise
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    return wrapped


def run(main: Callable) -> None:
    """`app.run` with input errors reported as one line, and warnings and errors only on the
    console: absl prints INFO by default, and TensorFlow's checkpoint saver alone logs a line per
    save (`--verbosity=0` shows INFO again)."""
    checked = report_input_errors(main)

    def quiet(argv):
        if not flags.FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)
        return checked(argv)

    app.run(quiet)


def check_data_dir(path: str, split: str = "train") -> None:
    """A preprocessed data directory (launch.preprocess's output) with `split` examples."""
    import tensorflow as tf

    if not tf.io.gfile.exists(os.path.join(path, "dataset_spec.json")):
        raise InputError(
            f"--data_dir {path}: not a preprocessed data directory (no dataset_spec.json; "
            "launch.preprocess writes one)"
        )
    if not tf.io.gfile.glob(os.path.join(path, split, "*.tfrecord.gz")):
        raise InputError(f"--data_dir {path}: no {split}/*.tfrecord.gz examples")


def check_model_dir(path: str) -> None:
    import tensorflow as tf

    if not tf.io.gfile.exists(os.path.join(path, C.CONFIG_FILE)):
        raise InputError(
            f"--model_dir {path}: no trained model (no {C.CONFIG_FILE}; launch.train writes one)"
        )
