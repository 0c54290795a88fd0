"""The profile split of benchmarks/train_bench.py, on a hand-built trace."""

import pytest

from benchmarks import step_profile


def write_trace(path, events):
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    host = space.planes.add(name="/host:CPU")
    device = space.planes.add(name="/device:GPU:0")
    line = host.lines.add(name="tf_Compute")
    for i, (name, ms) in enumerate(events):
        host.event_metadata[i + 1].name = name
        line.events.add(metadata_id=i + 1, duration_ps=int(ms * 1e9))
    device.event_metadata[1].name = "user_tower/lstm/while/MatMul:MatMul"
    device.lines.add(name="stream").events.add(metadata_id=1, duration_ps=int(50e9))
    path.parent.mkdir(parents=True)
    path.write_bytes(space.SerializeToString())


def test_op_time_is_charged_to_blocks_per_step(tmp_path):
    write_trace(
        tmp_path / "plugins" / "profile" / "run1" / "host.xplane.pb",
        [
            ("user_tower/lstm/while/MatMul:_MklMatMul", 3.0),
            ("gradients/while_grad/while_grad/body/_1/MatMul:_MklMatMul", 1.0),
            ("user_tower/self_attention/mha/einsum/Einsum:_MklEinsum", 2.0),
            ("full_softmax/MatMul:_MklMatMul", 1.5),
            ("Adam/UnsortedSegmentSum:UnsortedSegmentSum", 1.0),
            ("boolean_mask/Where:Where", 0.5),
            ("KernelAndDeviceFunc::Run", 100.0),  # the executor's span: not an op
            ("StatefulPartitionedCall:StatefulPartitionedCall", 90.0),  # contains the ops
            ("train_step", 95.0),  # a Python span
        ],
    )
    split = step_profile.block_split(str(tmp_path), steps=2)
    assert split == {
        "LSTM": 2.0,
        "self-attention": 1.0,
        "softmax loss": 0.75,
        "optimizer and clipping": 0.5,
        "other": 0.25,
        "total": 4.5,
    }


def test_a_missing_trace_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="xplane"):
        step_profile.block_split(str(tmp_path), steps=1)
