"""Where a training step's CPU time goes, by block, from a `tf.profiler` trace.

`train_bench.py --profile DIR` traces some training steps and calls `block_split` on the
trace: every TensorFlow op that ran on the host ("name:Type" events) is charged to the block
its name belongs to (the Keras layer scopes: `user_tower/lstm`, `self_attention`, ...); the
executor's own spans ("KernelAndDeviceFunc::Run") and the function and loop ops that only
contain other ops are left out, so the blocks add up to the op time of the steps.
"""

from __future__ import annotations

import collections
import glob
import os

# (block, substrings of the op name), first match wins. The LSTM is a while loop: its ops and
# their gradients are named "while..." (the attention has no loop).
BLOCKS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("LSTM", ("/lstm/", "while", "TensorList", "TensorArray")),
    ("self-attention", ("self_attention",)),
    ("user attention, long-term, fusion", ("user_attention", "long_term", "fusion", "gate")),
    ("softmax loss", ("sampled_softmax", "softmax_cross_entropy", "full_softmax")),
    ("optimizer and clipping", ("Adam", "clip", "global_norm")),
    ("embeddings", ("embedding", "embed")),
)
OTHER = "other"
CONTAINERS = frozenset(
    {"While", "StatelessWhile", "PartitionedCall", "StatefulPartitionedCall", "If", "StatelessIf"}
)


def block_of(op_name: str) -> str:
    for block, keys in BLOCKS:
        if any(k in op_name for k in keys):
            return block
    return OTHER


def op_times(xplane_path: str) -> collections.Counter:
    """Picoseconds per "name:Type" op over the host planes of one trace file."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    with open(xplane_path, "rb") as f:
        space.ParseFromString(f.read())
    times: collections.Counter = collections.Counter()
    for plane in space.planes:
        if not plane.name.startswith("/host"):
            continue
        names = {k: v.name for k, v in plane.event_metadata.items()}
        for line in plane.lines:
            for ev in line.events:
                name = names.get(ev.metadata_id, "")
                if ":" not in name or "::" in name or name.startswith("EagerLocalExecute"):
                    continue
                if name.rsplit(":", 1)[1] in CONTAINERS:
                    continue
                times[name] += ev.duration_ps
    return times


def block_split(logdir: str, steps: int) -> dict[str, float]:
    """ms per step by block (and "total"), from the newest trace under `logdir`."""
    files = sorted(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True))
    if not files:
        raise FileNotFoundError(f"no *.xplane.pb under {logdir}")
    by_block: collections.Counter = collections.Counter()
    for name, ps in op_times(max(files, key=os.path.getmtime)).items():
        by_block[block_of(name.rsplit(":", 1)[0])] += ps
    split = {b: round(ps / 1e9 / steps, 2) for b, ps in by_block.most_common()}
    split["total"] = round(sum(by_block.values()) / 1e9 / steps, 2)
    return split
