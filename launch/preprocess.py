"""python -m launch.preprocess --input ... --output_dir ... [Beam pipeline options]
[--beam_logs: Beam's worker logs] [--traceback: tracebacks of input errors]"""

import logging
import sys

import sdm_tf  # noqa: F401  (sets the Keras switch before TensorFlow loads)
from launch import console
from pipelines import preprocess
from sdm_tf.core.errors import InputError, LostDataError

QUIET_WORKERS = "--default_sdk_harness_log_level=ERROR"


def quiet_beam(argv: list[str]) -> None:
    """Keeps Beam's worker logs (relayed by the job service, INFO and WARN alike) off the
    console, and with them (`run`) the lines each worker prints as it starts; errors still
    surface as the pipeline's exception."""
    logging.getLogger("apache_beam").setLevel(logging.ERROR)
    if not any(a.startswith("--default_sdk_harness_log_level") for a in argv):
        argv.append(QUIET_WORKERS)


def run(argv: list[str]) -> dict:
    """`pipelines.preprocess.run(argv)`; where `quiet_beam` marked `argv`, the workers'
    start-up lines (`console.BEAM_WORKER_NOISE`) stay off the console as well."""
    if QUIET_WORKERS not in argv:
        return preprocess.run(argv)
    with console.without_lines(console.BEAM_WORKER_NOISE):
        return preprocess.run(argv)


def entry() -> None:
    """Input problems are one line and exit status 2 (--traceback shows the traceback)."""
    argv = sys.argv[1:]
    traceback = "--traceback" in argv
    argv = [a for a in argv if a != "--traceback"]
    if "--beam_logs" in argv:
        argv.remove("--beam_logs")
    else:  # Beam's worker chatter (hundreds of lines a run) only on request
        quiet_beam(argv)
    try:
        run(argv)
    except (InputError, LostDataError) as e:
        if traceback:
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2 if isinstance(e, InputError) else 1)


if __name__ == "__main__":
    entry()
