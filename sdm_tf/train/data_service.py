"""The tf.data service for parameter-server training: each worker trains on its own part.

Under `ParameterServerStrategy` the dataset function is traced once on the chief and run on
every worker, and the `InputContext` it gets has `num_input_pipelines == 1`: without help every
worker reads the whole data set, so an "epoch" of steps spread over N workers covers about 1/N
of the examples N times. The tf.data service (the TF guide's way for this) fixes it: a
dispatcher hands each file of the training split to a tf.data worker once per pass
("distributed_epoch"), the tf.data workers read, shuffle, parse and batch, and every batch goes
to exactly one training worker.

Topology: one dispatcher, any number of tf.data workers (a `WorkerServer` beside each training
worker, or a pool of their own); training workers only need the dispatcher's address
(`SDM_DATA_SERVICE` or `launch.train --data_service`). `launch.data_service` runs either server.
"""

from __future__ import annotations

import dataclasses
import os

import tensorflow as tf

ENV = "SDM_DATA_SERVICE"  # grpc://HOST:PORT of the dispatcher
DEFAULT_PORT = 5050
JOB_NAME = "sdm-train"


def address() -> str:
    """The dispatcher address from the environment ("" when there is none)."""
    return os.environ.get(ENV, "")


def start_dispatcher(
    port: int = 0, work_dir: str | None = None
) -> tf.data.experimental.service.DispatchServer:
    """work_dir (optional, e.g. on gs://): the dispatcher's journal, so that a restarted
    dispatcher resumes its jobs (fault_tolerant_mode)."""
    config = tf.data.experimental.service.DispatcherConfig(
        port=port, work_dir=work_dir, fault_tolerant_mode=bool(work_dir)
    )
    return tf.data.experimental.service.DispatchServer(config)


def start_worker(
    dispatcher: str, port: int = 0, worker_address: str | None = None
) -> tf.data.experimental.service.WorkerServer:
    """dispatcher: HOST:PORT (or grpc://HOST:PORT). worker_address: how training workers reach
    this server (on Kubernetes the pod IP and port); by default its own host name."""
    kwargs = {"dispatcher_address": dispatcher.split("://")[-1], "port": port}
    if worker_address:
        kwargs["worker_address"] = worker_address
    return tf.data.experimental.service.WorkerServer(
        tf.data.experimental.service.WorkerConfig(**kwargs)
    )


@dataclasses.dataclass
class LocalService:
    """A dispatcher and `num_workers` tf.data workers in this process (tests, one machine)."""

    num_workers: int = 1

    def __post_init__(self):
        self.dispatcher = start_dispatcher()
        self.workers = [start_worker(self.dispatcher.target) for _ in range(self.num_workers)]

    @property
    def target(self) -> str:
        return self.dispatcher.target


def distribute(ds: tf.data.Dataset, service: str, job_name: str = JOB_NAME) -> tf.data.Dataset:
    """Runs `ds` on the tf.data service: each element once per pass, to one consumer."""
    if "://" not in service:
        service = f"grpc://{service}"
    return ds.apply(
        tf.data.experimental.service.distribute(
            processing_mode=tf.data.experimental.service.ShardingPolicy.DYNAMIC,
            service=service,
            job_name=job_name,
        )
    )
