"""Distribution: strategy selection from TF_CONFIG, role dispatch, in-process clusters.

On a cluster every task runs the same program (`python -m launch.train ...`) with its own
`TF_CONFIG`. `ps` and `worker` tasks start a `tf.distribute.Server` and block; the `chief`
builds a `ParameterServerStrategy`, whose `ClusterCoordinator` (inside Keras `fit`) sends
steps to the workers and re-schedules the steps of a worker that fails. The large tables (item
input embedding, output table V, side-feature tables) are split across the parameter servers by a
variable partitioner.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping

import tensorflow as tf

STRATEGIES = ("auto", "default", "mirrored", "parameter_server")


def tf_config() -> dict:
    return json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")


def task_type() -> str | None:
    return tf_config().get("task", {}).get("type")


def server_config(num_workers: int) -> tf.compat.v1.ConfigProto:
    # Each server runs one op per worker plus its own: with fewer inter-op threads than that a
    # small machine deadlocks at the first step.
    config = tf.compat.v1.ConfigProto()
    config.inter_op_parallelism_threads = num_workers + 1
    return config


class TablePartitioner(tf.distribute.experimental.partitioners.Partitioner):
    """Splits the embedding-like variables (at least `min_rows` rows) row-wise across the
    parameter servers and leaves the small dense kernels whole.

    The rows of the item tables (input embedding, output table V and its bias) and of large
    side-feature tables are the vocabularies; LSTM and attention kernels have a few hundred rows
    at most, and splitting those would only add round trips.
    """

    def __init__(self, num_shards: int, min_rows: int = 4096):
        self.num_shards = num_shards
        self.min_rows = min_rows

    def __call__(self, shape, dtype, axis=0):
        shape = tf.TensorShape(shape)
        parts = [1] * shape.rank
        rows = shape[axis] if shape.rank else 0
        if rows and rows >= self.min_rows:
            parts[axis] = min(self.num_shards, rows)
        return parts


def shard_rows(rows: int, num_shards: int) -> list[int]:
    """The rows of each shard of a `rows`-row table split `num_shards` ways, as
    ParameterServerStrategy cuts it: the first `rows % num_shards` shards take one row more
    (docs/scale.md sizes the parameter servers with it; tests check it against a real cluster)."""
    base, extra = divmod(rows, num_shards)
    return [base + (i < extra) for i in range(num_shards)]


def parameter_server_strategy(
    resolver: tf.distribute.cluster_resolver.ClusterResolver, min_rows: int = 4096
) -> tf.distribute.ParameterServerStrategy:
    num_ps = len(resolver.cluster_spec().as_dict().get("ps", []))
    if num_ps == 0:
        raise ValueError("a parameter-server cluster needs at least one 'ps' task in TF_CONFIG")
    return tf.distribute.ParameterServerStrategy(
        resolver, variable_partitioner=TablePartitioner(num_ps, min_rows)
    )


def get_strategy(kind: str = "auto", min_rows: int = 4096) -> tf.distribute.Strategy:
    """The strategy for this process.

    auto: ParameterServerStrategy when TF_CONFIG names a cluster with ps tasks, MirroredStrategy
    on a host with several GPUs, else the default (one device).
    """
    if kind not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {kind!r}")
    cluster = tf_config().get("cluster", {})
    if kind == "parameter_server" or (kind == "auto" and cluster.get("ps")):
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        return parameter_server_strategy(resolver, min_rows)
    if kind == "mirrored" or (kind == "auto" and len(tf.config.list_physical_devices("GPU")) > 1):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def run_server_if_needed() -> bool:
    """For a `ps` or `worker` task: start the server and serve until the process is stopped.

    For a chief, evaluator or a process without TF_CONFIG, returns True at once: go on.
    """
    role = task_type()
    if role not in ("ps", "worker"):
        return True
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    num_workers = len(resolver.cluster_spec().as_dict().get("worker", []))
    server = tf.distribute.Server(
        resolver.cluster_spec(),
        job_name=resolver.task_type,
        task_index=resolver.task_id,
        protocol=resolver.rpc_layer or "grpc",
        config=server_config(num_workers),
        start=True,
    )
    server.join()
    return False


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def cluster_spec(num_ps: int, num_workers: int, chief: bool = True) -> dict[str, list[str]]:
    ports = free_ports(num_ps + num_workers + (1 if chief else 0))
    spec = {
        "ps": [f"127.0.0.1:{p}" for p in ports[:num_ps]],
        "worker": [f"127.0.0.1:{p}" for p in ports[num_ps : num_ps + num_workers]],
    }
    if chief:
        spec["chief"] = [f"127.0.0.1:{ports[-1]}"]
    return spec


def tf_config_for(spec: Mapping[str, list[str]], role: str, index: int) -> str:
    return json.dumps({"cluster": dict(spec), "task": {"type": role, "index": index}})


def in_process_cluster(num_ps: int, num_workers: int):
    """Starts ps and worker servers in this process; returns (resolver, servers).

    For tests: the same ParameterServerStrategy code path as on a real cluster, without
    processes.
    """
    spec = cluster_spec(num_ps, num_workers, chief=False)
    cluster = tf.train.ClusterSpec(spec)
    config = server_config(num_workers)
    servers = [
        tf.distribute.Server(cluster, job_name=job, task_index=i, protocol="grpc", config=config)
        for job, n in (("worker", num_workers), ("ps", num_ps))
        for i in range(n)
    ]
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(cluster, rpc_layer="grpc")
    return resolver, servers
