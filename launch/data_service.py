"""python -m launch.data_service --role dispatcher|worker|both [--dispatcher_port 5050]
    [--dispatcher H:P]

Runs tf.data service servers for parameter-server training (`sdm_tf.train.data_service`) until
stopped: the dispatcher, a worker that registers with it, or both in one process (one machine).
Training takes the dispatcher's address from --data_service or $SDM_DATA_SERVICE.
"""

import time

from absl import flags

from launch import common
from sdm_tf.core.errors import InputError
from sdm_tf.train import data_service as DS

ROLE = flags.DEFINE_enum("role", "both", ["dispatcher", "worker", "both"], "which server(s)")
PORT = flags.DEFINE_integer(
    "dispatcher_port", 5050, "the dispatcher's port (role dispatcher / both)"
)
WORKER_PORT = flags.DEFINE_integer("worker_port", 0, "the worker's port (0: any free one)")
DISPATCHER = flags.DEFINE_string(
    "dispatcher", DS.address() or None, "role worker: the dispatcher's HOST:PORT"
)
WORKER_ADDRESS = flags.DEFINE_string(
    "worker_address", None, "how trainers reach this worker (Kubernetes: $(POD_IP):PORT)"
)
NUM_WORKERS = flags.DEFINE_integer("num_workers", 1, "role both: tf.data workers to run")
WORK_DIR = flags.DEFINE_string(
    "work_dir", None, "dispatcher journal (e.g. gs://...): a restarted dispatcher resumes"
)


def main(argv):
    del argv
    servers = []
    if ROLE.value in ("dispatcher", "both"):
        dispatcher = DS.start_dispatcher(PORT.value, WORK_DIR.value)
        servers.append(dispatcher)
        print(f"dispatcher at {dispatcher.target}", flush=True)
    if ROLE.value == "worker" and not DISPATCHER.value:
        raise InputError("--role=worker needs --dispatcher HOST:PORT (or $SDM_DATA_SERVICE)")
    address = DISPATCHER.value if ROLE.value == "worker" else f"localhost:{PORT.value}"
    for _ in range(NUM_WORKERS.value if ROLE.value == "both" else 1):
        if ROLE.value == "dispatcher":
            break
        port = WORKER_PORT.value
        worker_address = WORKER_ADDRESS.value or (f"localhost:{port}" if port else None)
        servers.append(DS.start_worker(address, port, worker_address))
    print("tf.data service running", flush=True)
    while True:  # the servers run on their own threads until the process is stopped
        time.sleep(3600)


def entry():
    common.run(main)


if __name__ == "__main__":
    entry()
