"""Runner options, and a run that checks that no data was lost.

DirectRunner's multi-processing mode (workers in subprocesses, data over gRPC) lost data in six
of seven runs on 10^7 events, and nothing in the run said so. The cause is a race in Beam's
data plane (`fix_direct_runner_flush_race`). Besides that fix, every accepted row is accounted
for in stats.json (`examples.unaccounted_events`) and every example made is counted again in
the written files (`examples.check_written`), so a loss is caught on any runner.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

from sdm_tf.core.errors import LostDataError

# Above this much input (bytes as stored) sdm's DirectRunner runs in memory: 1.5 x slower than
# two workers at 10^7 events (321 MB of CSV: 513 s against 339 s), but one process of 7.8 GiB
# against 10.0 GiB for the runner and its workers together, and no 2 GiB limit on a worker's
# share of a grouped stage (one gRPC message in multi-processing mode; ~3 x 10^7 events on two
# workers).
IN_MEMORY_ABOVE_BYTES = 128 << 20
IN_MEMORY = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
_DIRECT_FLAGS = ("--runner", "--direct_running_mode", "--direct_num_workers")


def fix_direct_runner_flush_race() -> None:
    """Turns off the periodic flush of the DirectRunner's outbound data streams.

    Beam (2.77) gives the runner side of the gRPC data plane a stream that a background thread
    flushes every second (`TimeBasedBufferingClosableOutputStream`): it sends `get()` and then
    `_clear()`s the buffer, while the runner's thread goes on writing a bundle's input into it
    without the lock. Bytes written between the two calls are dropped: whole ~10 MB chunks of
    a worker's input, so whole users, with no error (`benchmarks/beam_flush_race.py` shows it
    without a pipeline; docs/performance.md). With no time limit the runner sends a bundle's
    input in one message once it is written, as it already did for grouped inputs; the
    workers' streams have no time limit either. A batch run loses only the latency the
    periodic flush is for. A no-op where Beam has no such setting."""
    from apache_beam.runners.portability.fn_api_runner import worker_handlers

    if getattr(worker_handlers, "DATA_BUFFER_TIME_LIMIT_MS", 0):
        worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = 0


def default_pipeline_args(beam_args: Sequence[str], input_bytes: int = 0) -> list[str]:
    """DirectRunner unless the caller picked a runner: in memory for inputs over
    `IN_MEMORY_ABOVE_BYTES`, else multi-processing with one worker per core."""
    args = list(beam_args)
    if any(a.startswith("--runner") for a in args):
        return args
    args += ["--runner=DirectRunner"]
    mode = any(a.startswith("--direct_running_mode") for a in args)
    workers = any(a.startswith("--direct_num_workers") for a in args)
    if not mode and not workers and input_bytes > IN_MEMORY_ABOVE_BYTES:
        return args + IN_MEMORY
    if not mode:
        args += ["--direct_running_mode=multi_processing"]
    if not workers and "--direct_running_mode=in_memory" not in args:
        args += [f"--direct_num_workers={os.cpu_count() or 1}"]
    return args


def run_checked(
    run_once: Callable[[list[str]], dict], beam_args: Sequence[str], input_bytes: int = 0
) -> dict:
    """`run_once(pipeline_args)` -> stats, which raises `LostDataError` on a loss. Where sdm chose
    the runner (no --runner, --direct_running_mode or --direct_num_workers given) and ran it in
    multi-processing mode, a loss runs the job again in memory; a runner the caller chose is
    theirs to change, so the error stands."""
    fix_direct_runner_flush_race()
    args = default_pipeline_args(beam_args, input_bytes)
    try:
        return run_once(args)
    except LostDataError as e:
        pinned = any(a.startswith(_DIRECT_FLAGS) for a in beam_args)
        if pinned or IN_MEMORY[0] in args:
            raise
        print(f"warning: {e} Running again in memory.", file=sys.stderr, flush=True)
        return run_once(default_pipeline_args([*beam_args, *IN_MEMORY]))


def input_bytes(patterns: Sequence[str]) -> int:
    """The bytes, as stored, of every file the patterns match (any filesystem Beam reads)."""
    from apache_beam.io.filesystems import FileSystems

    matches = FileSystems.match([p for p in patterns if p])
    return sum(m.size_in_bytes for r in matches for m in r.metadata_list)
