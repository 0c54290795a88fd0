"""What the launchers let through to the user's terminal.

Beam's DirectRunner starts its workers as subprocesses that inherit this process's stderr, and
each prints two lines before any pipeline option can quiet it: `apitools not found ...` (a
module-level `logging.warning` in Beam's BigQuery client, which also makes `logging` print to
stderr) and then, through that handler, `Logging handler created.` The workers' command line is
fixed inside the runner, so the lines are dropped where they arrive: at file descriptor 2 of
the launcher, for the duration of a pipeline run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Iterator, Sequence

BEAM_WORKER_NOISE = (
    "apitools not found, and bigquery client libraries are not available",
    "Logging handler created.",
)


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
