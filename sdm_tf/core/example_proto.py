"""tf.train.Example's wire format, written without TensorFlow.

The Beam workers that encode the records then never load TensorFlow (about 6 s and its log lines
in every worker process). The bytes are those of `example_pb2.Example.SerializeToString(
deterministic=True)` for int64 and bytes features (a test compares them), whatever protobuf
backend is installed: map entries in upb's order (`_map_order`), each entry its key (field 1)
and its Feature (field 2); a Feature is `bytes_list` (field 1) or `int64_list` (field 3, packed
varints), present even when its list is empty.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

_INT64 = (-(1 << 63), 1 << 63)
_LEN = 2  # the length-delimited wire type


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    return bytes([number << 3 | _LEN]) + _varint(len(payload)) + payload


def int64_feature(values: Iterable[int]) -> bytes:
    """An encoded Feature holding an Int64List."""
    packed = bytearray()
    for v in values:
        v = int(v)
        if not _INT64[0] <= v < _INT64[1]:
            raise ValueError(f"{v} is outside int64")
        packed += _varint(v + (1 << 64) if v < 0 else v)  # two's complement, 10 bytes
    return _field(3, _field(1, bytes(packed)) if packed else b"")


def bytes_feature(values: Iterable[bytes]) -> bytes:
    """An encoded Feature holding a BytesList."""
    return _field(1, b"".join(_field(1, v) for v in values))


def _map_order(name: str) -> tuple[int, ...]:
    """Python protobuf's (upb's) deterministic order of map keys: their bytes compared, and where
    one key starts the other, the longer first ("bcb" before "b")."""
    return (*name.encode("utf-8"), 256)


def example(features: Mapping[str, bytes]) -> bytes:
    """A serialized Example from name -> encoded Feature (`int64_feature`, `bytes_feature`)."""
    entries = b"".join(
        _field(1, _field(1, name.encode("utf-8")) + _field(2, features[name]))
        for name in sorted(features, key=_map_order)
    )
    return _field(1, entries)
