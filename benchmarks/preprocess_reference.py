"""The preprocessing job in one process without Beam: the benchmark's like-for-like reference.

It runs the pipeline's own per-element code (the row parser and range reader, GroupUsersFn,
FilterUsersFn, the vocabulary counts, MakeExamplesFn, the TFRecord framing) in plain loops over
data held in memory, so its outputs are the pipeline's record for record (a test checks it on
the synthetic log); what it leaves out is Beam itself: the encoding between steps, the shuffles,
the worker processes. One event file pattern, no item or user tables, the `time`, `loo` and
`none` protocols, one shard per output.
"""

from __future__ import annotations

import collections
import gzip
import json
from collections.abc import Iterable

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.tfrecordio import _TFRecordUtil

from pipelines import examples as X
from pipelines import preprocess as P
from pipelines import read as R
from pipelines import vocab as V
from sdm_tf.core import features as F
from sdm_tf.core import sessions as S
from sdm_tf.core.events import InputFormat


def _split(outputs: Iterable, main: list, tagged: dict[str, list]) -> None:
    """A DoFn's outputs: untagged ones to `main`, TaggedOutputs to `tagged[tag]`."""
    for out in outputs:
        if isinstance(out, beam.pvalue.TaggedOutput):
            tagged[out.tag].append(out.value)
        else:
            main.append(out)


def _write_records(path: str, records: Iterable[bytes]) -> None:
    with gzip.open(path, "wb", compresslevel=6) as f:
        for r in records:
            _TFRecordUtil.write_record(f, r)


def run(
    pattern: str,
    output_dir: str,
    fmt: InputFormat | None = None,
    session: S.SessionConfig | None = None,
    min_item_count: int = 5,
    max_user_events: int = 1000,
    max_user_rows: int = 100_000,
    protocol: str = "none",
) -> dict:
    """Writes what `pipelines.preprocess` writes for the same arguments (`session` None: its
    default, the "auto" session gap); returns stats.json."""
    if protocol not in ("time", "loo", "none"):
        raise ValueError(f"the reference runs the time, loo and none protocols, not {protocol!r}")
    fmt = fmt or InputFormat(kind="taobao")

    def once(s: S.SessionConfig) -> dict:
        return _run_once(pattern, output_dir, fmt, s, min_item_count, max_user_events,
                         max_user_rows, protocol)  # fmt: skip

    if session is None:
        return P.run_with_auto_gap(once, S.SessionConfig(), output_dir)
    return once(session)


def _run_once(
    pattern: str,
    output_dir: str,
    fmt: InputFormat,
    session: S.SessionConfig,
    min_item_count: int,
    max_user_events: int,
    max_user_rows: int,
    protocol: str,
) -> dict:
    tagged: dict[str, list] = collections.defaultdict(list)

    batches: list = []
    reader = R.ReadRangeFn(fmt)
    for meta in FileSystems.match([pattern])[0].metadata_list:
        _split(reader.process((meta.path, 0, None)), batches, tagged)
    per_user: dict[str, list] = collections.defaultdict(list)
    for user, events in batches:
        per_user[user].append(events)
    del batches

    users: list = []
    group = R.GroupUsersFn(max_rows=max_user_rows)
    for element in per_user.items():
        _split(group.process(element), users, tagged)
    del per_user

    item_counts = collections.Counter()
    for u in users:
        item_counts.update(V._item_counts(u))
    kept: list = []
    keep = V.FilterUsersFn(min_item_count, max_user_events)
    for u in users:
        _split(keep.process(u, item_counts), kept, tagged)
    del users

    test_day = None
    if protocol == "time" and kept:
        test_day = S.day_start(max(X._max_timestamp(u) for u in kept))
    combine = V.NestedCounterCombineFn()
    counts = combine.create_accumulator()
    for u in kept:
        combine.add_input(counts, V._feature_counts(u, test_day))
    vocabs = V.finalize_vocabs(counts, {})
    tagged[R.STATS].append({"items": len(vocabs["features"][F.ITEM])})

    make = X.MakeExamplesFn(session, protocol)
    for user, events in kept:
        _split(make.process((user, {"events": [events]}), vocabs, test_day), [], tagged)

    for kind in F.KINDS:
        FileSystems.mkdirs(FileSystems.join(output_dir, kind))
        name = FileSystems.join(output_dir, kind, "part-00000-of-00001.tfrecord.gz")
        _write_records(name, tagged[kind])
    FileSystems.mkdirs(FileSystems.join(output_dir, "dead_letter"))
    V.write_text(
        FileSystems.join(output_dir, "dead_letter", "part-00000-of-00001.jsonl"),
        "".join(line + "\n" for line in tagged[R.DEAD]),
    )
    V.write_vocabularies(vocabs, output_dir, session)
    total = V.CounterCombineFn()
    acc = total.create_accumulator()
    for s in tagged[R.STATS]:
        total.add_input(acc, s)
    stats = X.finalize_stats(total.extract_output(acc))
    V.write_text(
        FileSystems.join(output_dir, "stats.json"), json.dumps(stats, indent=1, sort_keys=True)
    )
    return stats


def read_records(output_dir: str, kind: str) -> list[bytes]:
    """Every record of `output_dir/kind/` (any number of shards), sorted: outputs compare as
    multisets, since shard assignment and order differ between runners."""
    out = []
    for meta in FileSystems.match([FileSystems.join(output_dir, kind, "*.tfrecord.gz")])[
        0
    ].metadata_list:
        with gzip.open(meta.path, "rb") as f:
            while (record := _TFRecordUtil.read_record(f)) is not None:
                out.append(record)
    return sorted(out)
