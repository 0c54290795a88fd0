"""What the launchers let through to the user's terminal.

TensorFlow writes a few lines straight to file descriptor 2 as it loads, before absl's logging
is initialised, so `TF_CPP_MIN_LOG_LEVEL` cannot hold them back: absl's own notice, oneDNN's,
and on a machine without CUDA drivers two about the GPU (the last at the first device query).
`quiet_tensorflow_import` drops exactly those lines, during the import only.

Beam's DirectRunner starts its workers as subprocesses that inherit this process's stderr, and
each prints two lines before any pipeline option can quiet it: `apitools not found ...` (a
module-level `logging.warning` in Beam's BigQuery client, which also makes `logging` print to
stderr) and then, through that handler, `Logging handler created.` The workers' command line is
fixed inside the runner, so the lines are dropped where they arrive: at file descriptor 2 of
the launcher, for the duration of a pipeline run.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import logging
import os
import sys
import threading
from collections.abc import Iterator, Sequence

BEAM_WORKER_NOISE = (
    "apitools not found, and bigquery client libraries are not available",
    "Logging handler created.",
)


TF_STARTUP_NOISE = (
    "All log messages before absl::InitializeLog() is called are written to STDERR",
    "oneDNN custom operations are on.",
    "Could not find cuda drivers on your machine, GPU will not be used.",
    "failed call to cuInit",
)
SHOW_TF_STARTUP_ENV = "SDM_TF_STARTUP_LOGS"


class DropMessages(logging.Filter):
    """A logging filter that drops records whose message contains any of `patterns`."""

    def __init__(self, patterns: Sequence[str]):
        super().__init__()
        self.patterns = tuple(patterns)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(p in message for p in self.patterns)


def _forward(read_fd: int, write_fd: int, drop: tuple[bytes, ...]) -> None:
    """Copies lines from `read_fd` to `write_fd` until end of file, except lines containing any
    of `drop`; a last line without a newline is copied too. Closes both descriptors."""
    pending = b""
    try:
        while chunk := os.read(read_fd, 65536):
            *lines, pending = (pending + chunk).split(b"\n")
            kept = [line + b"\n" for line in lines if not any(d in line for d in drop)]
            if kept:
                os.write(write_fd, b"".join(kept))
        if pending and not any(d in pending for d in drop):
            os.write(write_fd, pending)
    finally:
        os.close(read_fd)
        os.close(write_fd)


def _flush() -> None:
    """Writes out what Python buffered for stderr (there may be no sys.stderr, or a closed one)."""
    with contextlib.suppress(AttributeError, OSError, ValueError):
        sys.stderr.flush()


@contextlib.contextmanager
def without_lines(patterns: Sequence[str], timeout_s: float = 10.0) -> Iterator[None]:
    """Inside the block, lines written to file descriptor 2 (by this process, and by the
    subprocesses it starts meanwhile, for as long as they run) reach the original stderr
    unless they contain one of `patterns`. A thread copies them as they come, so what is
    printed stays in order and arrives at once. On exit it waits up to `timeout_s` for the
    subprocesses still holding the pipe; past that it goes on copying in the background."""
    drop = tuple(p.encode() for p in patterns)
    _flush()
    try:
        original = os.dup(2)
    except OSError:  # no stderr at all (closed by the caller): nothing to filter
        original = -1
    if original < 0:  # yielded outside the except, so the body's errors chain to nothing
        yield
        return
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    # The copier writes to a descriptor of its own, so restoring fd 2 never races with it.
    thread = threading.Thread(
        target=_forward, args=(read_fd, os.dup(original), drop), daemon=True, name="stderr"
    )
    thread.start()
    try:
        yield
    finally:
        _flush()
        os.dup2(original, 2)  # closes this process's write end of the pipe
        os.close(original)
        thread.join(timeout_s)


class _QuietLoader(importlib.abc.Loader):
    """Runs TensorFlow's own loader inside `without_lines(TF_STARTUP_NOISE)`, then the device
    query that prints the last of those lines. The query initialises nothing that can no longer
    be configured (threads, visible and logical devices stay settable)."""

    def __init__(self, loader: importlib.abc.Loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        module.__loader__ = module.__spec__.loader = self._loader  # as if never wrapped
        with without_lines(TF_STARTUP_NOISE):
            self._loader.exec_module(module)
            module.config.list_physical_devices()


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    """Answers the first import of `tensorflow` only, with the real spec and a quiet loader."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "tensorflow":
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)  # once: the real finders answer from here on
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def quiet_tensorflow_import() -> None:
    """Makes this process's first `import tensorflow`, wherever it happens, drop the startup
    lines in `TF_STARTUP_NOISE` (and nothing else). A no-op once TensorFlow is loaded, or where
    the environment sets SDM_TF_STARTUP_LOGS=1 (to see, say, why a GPU is not used)."""
    if "tensorflow" in sys.modules or os.environ.get(SHOW_TF_STARTUP_ENV) == "1":
        return
    if not any(isinstance(f, _QuietTensorFlowFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowFinder())
