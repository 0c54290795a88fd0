"""python -m launch.preprocess --input ... --output_dir ... [Beam pipeline options]
[--beam_logs: Beam's worker logs] [--traceback: tracebacks of input errors]"""

import logging
import sys

import sdm_tf  # noqa: F401  (sets the Keras switch before TensorFlow loads)
from pipelines import preprocess
from sdm_tf.core.errors import InputError, LostDataError


def quiet_beam(argv: list[str]) -> None:
    """Keeps Beam's worker logs (relayed by the job service, INFO and WARN alike) off the
    console; errors still surface as the pipeline's exception."""
    logging.getLogger("apache_beam").setLevel(logging.ERROR)
    if not any(a.startswith("--default_sdk_harness_log_level") for a in argv):
        argv.append("--default_sdk_harness_log_level=ERROR")


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
        preprocess.run(argv)
    except (InputError, LostDataError) as e:
        if traceback:
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2 if isinstance(e, InputError) else 1)


if __name__ == "__main__":
    entry()
