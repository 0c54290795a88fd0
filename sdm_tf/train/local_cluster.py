"""A parameter-server cluster of separate OS processes on localhost.

Every task runs the same command (`python -m launch.train ...`), told its role by its own
`TF_CONFIG`, exactly as the pods of the Kubernetes TFJob do. `LocalCluster` starts the ps and
worker processes (and, by default, a tf.data service process that divides the training input
between the workers), runs the chief, and stops everything it started, also on errors.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from sdm_tf.train import distribute as D


class LocalCluster:
    def __init__(self, train_args: Sequence[str], num_ps: int = 2, num_workers: int = 2,
                 log_dir: str | None = None, data_service: bool = True):  # fmt: skip
        self.train_args = list(train_args)
        self.spec = D.cluster_spec(num_ps, num_workers, chief=True)
        self.log_dir = log_dir
        self.procs: dict[tuple[str, int], subprocess.Popen] = {}
        self.data_service = ""
        if data_service:
            (port,) = D.free_ports(1)
            self.data_service = f"grpc://127.0.0.1:{port}"

    def command(self, role: str) -> list[str]:
        if role == "data":
            port = self.data_service.rsplit(":", 1)[1]
            return [
                sys.executable,
                "-m",
                "launch.data_service",
                "--role=both",
                f"--dispatcher_port={port}",
            ]
        return [sys.executable, "-m", "launch.train", *self.train_args]

    def _log(self, name: str):
        if not self.log_dir:
            return subprocess.DEVNULL
        os.makedirs(self.log_dir, exist_ok=True)
        return open(os.path.join(self.log_dir, f"{name}.log"), "ab")  # noqa: SIM115

    def start_task(self, role: str, index: int) -> subprocess.Popen:
        env = dict(os.environ)
        if role != "data":
            env["TF_CONFIG"] = D.tf_config_for(self.spec, role, index)
        if self.data_service:
            env["SDM_DATA_SERVICE"] = self.data_service
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        out = self._log(f"{role}-{index}")
        proc = subprocess.Popen(self.command(role), env=env, stdout=out, stderr=subprocess.STDOUT)
        self.procs[(role, index)] = proc
        return proc

    def start_servers(self) -> None:
        if self.data_service:
            self.start_task("data", 0)
        for role in ("ps", "worker"):
            for i in range(len(self.spec[role])):
                self.start_task(role, i)

    def start_chief(self) -> subprocess.Popen:
        return self.start_task("chief", 0)

    def kill(self, role: str, index: int, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[(role, index)]
        proc.send_signal(sig)
        proc.wait(timeout=30)

    def run(self, timeout: float = 1800) -> int:
        """Starts the servers, runs the chief to the end, stops everything; the chief's code."""
        try:
            self.start_servers()
            return self.start_chief().wait(timeout=timeout)
        finally:
            self.stop()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.time() + 15
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
