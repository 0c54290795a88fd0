"""The DirectRunner's data loss, in isolation: Beam's time-flushed data stream drops bytes.

    python benchmarks/beam_flush_race.py [--chunks 3000] [--chunk_kib 1024] [--flush_ms 10 100 1000]

In multi-processing mode the runner sends a bundle's input to a worker through a stream
(`TimeBasedBufferingClosableOutputStream`) that a background thread flushes every second:
`flush` sends `get()` and then `_clear()`s the buffer, and the runner's thread writes into the
same buffer without the lock. Whatever is written between those two calls is lost. This script
writes `--chunks` chunks into such a stream, as the runner writes a partition's chunks, and
counts the bytes its callbacks received, for each flush period; then the same through the
stream the runner gets once `pipelines.runner.fix_direct_runner_flush_race` has run (no time
limit: the runner's input goes out in one message at close). Beam's runner uses 1,000 ms.
Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def stream_delivery(stream_factory, chunks: int, chunk: bytes) -> dict:
    """Writes `chunks` x `chunk` into a stream from `stream_factory(callback)`; returns what
    the callbacks got, and whether it is the written bytes in order."""
    got: list[bytes] = []
    stream = stream_factory(got.append)
    for _ in range(chunks):
        stream.write(chunk)
    stream.close()
    received = b"".join(got)
    written = chunks * len(chunk)
    return {
        "written_bytes": written,
        "received_bytes": len(received),
        "lost_bytes": written - len(received),
        "messages": sum(1 for g in got if g),
        "intact": len(received) == written and received == chunk * chunks,
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chunks", type=int, default=3000)
    ap.add_argument("--chunk_kib", type=int, default=1024)
    ap.add_argument("--flush_ms", type=int, nargs="+", default=[10, 100, 1000])
    a = ap.parse_args(argv)

    from apache_beam.runners.portability.fn_api_runner import worker_handlers
    from apache_beam.runners.worker import data_plane

    from pipelines import runner

    chunk = b"x" * (a.chunk_kib << 10)
    out: dict = {
        "chunks": a.chunks,
        "chunk_bytes": len(chunk),
        "beam_runner_flush_ms": worker_handlers.DATA_BUFFER_TIME_LIMIT_MS,
    }
    for ms in a.flush_ms:

        def timed(callback, ms=ms):
            return data_plane.TimeBasedBufferingClosableOutputStream(
                close_callback=callback, flush_callback=callback, time_flush_threshold_ms=ms
            )

        out[f"time_flushed_{ms}ms"] = stream_delivery(timed, a.chunks, chunk)

    runner.fix_direct_runner_flush_race()

    def fixed(callback):
        # The runner's channel as Beam builds it, with the limit sdm leaves it.
        channel = data_plane._GrpcDataChannel(worker_handlers.DATA_BUFFER_TIME_LIMIT_MS)
        channel._enqueue_to_send = lambda elem: callback(elem.data)
        return channel.output_stream("bundle", "read")

    out["runner_stream_after_fix"] = stream_delivery(fixed, a.chunks, chunk)
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
