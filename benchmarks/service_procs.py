"""The service in processes of its own, for serving_bench.py --service_processes N.

Each process loads the export (its item ids extended to the benchmark's catalog, as
serving_bench does) and the index that serving_bench saved, and serves it on its own listening
socket; the N sockets share one port (SO_REUSEPORT), so the kernel spreads the load client's
connections over the processes. The sockets are created with IPPROTO_TCP: asyncio sets
TCP_NODELAY on accepted connections only then, and without it every keep-alive answer waits for
the client's delayed ACK (~40 ms; uvicorn's own `--workers` path has that defect, uvicorn#3149).

    python benchmarks/service_procs.py '{"export_dir": E, "items": N, "index": P, "port": 8500,
                                         "coalesce": 64}'
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def start(settings: dict, processes: int) -> list[subprocess.Popen]:
    """`processes` service processes for `settings` (see `serve`); returns once all are up,
    warmed up and idle."""
    import urllib.request

    env = {**os.environ, "PYTHONPATH": os.path.dirname(HERE)}
    procs = [
        subprocess.Popen([sys.executable, __file__, json.dumps(settings)], env=env)
        for _ in range(processes)
    ]
    url = f"http://127.0.0.1:{settings['port']}/health"
    deadline = time.monotonic() + 600
    while True:
        if any(p.poll() is not None for p in procs):
            stop(procs)
            raise RuntimeError("a service process ended while starting")
        try:
            urllib.request.urlopen(url, timeout=1)
            break
        except OSError:
            if time.monotonic() > deadline:
                stop(procs)
                raise
            time.sleep(0.5)
    # One process answering says nothing of the others: wait until all of them sit idle.
    pids = [p.pid for p in procs]
    while True:
        before = cpu_seconds(pids)
        time.sleep(3)
        if cpu_seconds(pids) - before < 0.1:
            return procs


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of the processes so far (Linux /proc)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # gone
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()


def serve(settings: dict) -> None:
    sys.path.insert(0, os.path.dirname(HERE))
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import faiss
    import tensorflow as tf
    import uvicorn

    from sdm_tf.serving import index as I
    from sdm_tf.serving import service as serving
    from sdm_tf.serving.export import Export

    if settings.get("tf_threads"):
        tf.config.threading.set_intra_op_parallelism_threads(settings["tf_threads"])
        tf.config.threading.set_inter_op_parallelism_threads(settings["tf_threads"])
    faiss.omp_set_num_threads(settings.get("faiss_threads", 1))
    exp = Export(settings["export_dir"])
    n = settings["items"]
    exp.item_ids = exp.item_ids + [f"synthetic-{i}" for i in range(len(exp.item_ids), n)]
    index, cfg = I.load(settings["index"])
    app = serving.create_app(serving.Retriever(exp, index, cfg), max_coalesce=settings["coalesce"])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", settings["port"]))
    sock.listen(2048)
    config = uvicorn.Config(
        app, log_level="error", http=settings.get("http", "auto"), loop=settings.get("loop", "auto")
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    serve(json.loads(sys.argv[1]))
