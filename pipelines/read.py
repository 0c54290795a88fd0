"""Reading: raw files -> per-user event lists (+ dead letters), and the side tables.

Throughput: DirectRunner pays tens of microseconds per element per step, so events never travel
one per element. A reader turns a byte range of a file into one batch per user it saw there, a
GroupByKey on the user gathers a user's batches, and from there on an element is one user. No
element ever holds more than one user's events (an earlier design keyed 64 crc32 buckets, so
each grouped element held 1/64 of the whole log: a hot spot on a distributed runner).

Stats: every transform that counts something also emits plain dicts on a `stats` output; they
are summed into stats.json, which does not depend on a runner's metrics support. The same counts go
to Beam `Metrics` for the runner's UI.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from sdm_tf.core import sessions as S
from sdm_tf.core.events import Event, InputFormat, RowParser, split_header

NAMESPACE = "sdm"
DEAD = "dead_letter"
STATS = "stats"


# ---------------------------------------------------------------------------------------------
# Reading and validation
# ---------------------------------------------------------------------------------------------
def _is_compressed(path: str) -> bool:
    return CompressionTypes.detect_compression_type(path) != CompressionTypes.UNCOMPRESSED


def split_into_ranges(metadata, chunk_bytes: int) -> Iterable[tuple[str, int, int | None]]:
    """(path, start, end) byte ranges; compressed files and Parquet are one range each."""
    path, size = metadata.path, metadata.size_in_bytes
    if _is_compressed(path) or path.endswith(".parquet") or chunk_bytes <= 0:
        yield (path, 0, None)
        return
    for start in range(0, max(size, 1), chunk_bytes):
        yield (path, start, min(start + chunk_bytes, size))


def iter_lines(f, start: int, end: int | None) -> Iterable[tuple[int, bytes]]:
    """Lines whose first byte lies in [start, end), with their offsets, without line endings."""
    pos = 0
    if start > 0:
        f.seek(start - 1)
        pos = start - 1 + len(f.readline())  # finish the line that straddles `start`
    while end is None or pos < end:
        line = f.readline()
        if not line:
            return
        yield pos, line.rstrip(b"\r\n")
        pos += len(line)


def _dead_letter(reason: str, source: str, offset: int, raw: Any) -> str:
    if isinstance(raw, bytes):
        row = raw.decode("utf-8", errors="backslashreplace")
    else:
        row = raw if isinstance(raw, str) else json.dumps(raw, default=str)
    return json.dumps({"reason": reason, "source": source, "offset": offset, "row": row})


class _Counts:
    """Per-bundle counters that go to both Beam Metrics and the stats output."""

    def __init__(self):
        self.c: collections.Counter = collections.Counter()

    def inc(self, key: str, n: int = 1):
        self.c[key] += n

    def flush(self) -> dict:
        for k, v in self.c.items():
            Metrics.counter(NAMESPACE, k).inc(v)
        out, self.c = dict(self.c), collections.Counter()
        return out


class ReadRangeFn(beam.DoFn):
    """Reads one byte range of a log, validates each row, emits one (user, [Event]) batch per
    user of the range.

    Outputs: main = (user, list of Events); `dead_letter` = JSON lines; `stats` = dicts.
    """

    def __init__(self, fmt: InputFormat, rows_prefix: str = ""):
        self.fmt = fmt
        self.prefix = rows_prefix

    def _parser(self, path: str) -> RowParser:
        header = None
        if self.fmt.kind == "csv" and self.fmt.has_header:
            with FileSystems.open(path, compression_type=CompressionTypes.AUTO) as f:
                header = split_header(f.readline(), self.fmt.delimiter)
        return RowParser(self.fmt, header)

    def _rows(self, path, start, end):
        if self.fmt.kind == "parquet":
            import pyarrow.parquet as pq

            with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
                offset = 0
                for batch in pq.ParquetFile(f).iter_batches(batch_size=65536):
                    for row in batch.to_pylist():
                        yield offset, row
                        offset += 1
            return
        with FileSystems.open(path, compression_type=CompressionTypes.AUTO) as f:
            lines = iter_lines(f, start, end)
            if start == 0 and self.fmt.has_header:
                next(lines, None)
            yield from lines

    def process(self, rng):
        path, start, end = rng
        parser = self._parser(path)
        counts = _Counts()
        users: dict[str, list[Event]] = collections.defaultdict(list)
        for offset, raw in self._rows(path, start, end):
            counts.inc(self.prefix + "input_rows")
            order = (path, offset)
            if isinstance(raw, bytes):
                ev = parser.parse_line(raw, order)
            else:
                ev = parser.parse_mapping(raw, order)
            if isinstance(ev, str):
                counts.inc(self.prefix + "rejected_rows")
                counts.inc(f"{self.prefix}rejected:{ev}")
                yield beam.pvalue.TaggedOutput(DEAD, _dead_letter(ev, path, offset, raw))
                continue
            counts.inc(self.prefix + "accepted_rows")
            users[ev.user].append(ev)
        yield from users.items()
        yield beam.pvalue.TaggedOutput(STATS, counts.flush())


class ReadEvents(beam.PTransform):
    """File pattern -> validated event batches keyed by user.

    Returns a dict with `events` ((user, [Event]) elements), `dead_letter` (JSON lines) and
    `stats` (dicts). Accepted + rejected rows always equal the input rows.
    """

    def __init__(
        self,
        pattern: str,
        fmt: InputFormat,
        chunk_bytes: int = 8 << 20,
        rows_prefix: str = "",
    ):
        super().__init__()
        self.pattern = pattern
        self.fmt = fmt
        self.chunk_bytes = chunk_bytes
        self.rows_prefix = rows_prefix

    def expand(self, pbegin):
        results = (
            pbegin
            | "Match" >> fileio.MatchFiles(self.pattern)
            | "Ranges" >> beam.FlatMap(split_into_ranges, self.chunk_bytes)
            | "Spread" >> beam.Reshuffle()
            | "ReadAndValidate"
            >> beam.ParDo(ReadRangeFn(self.fmt, self.rows_prefix)).with_outputs(
                DEAD, STATS, main="events"
            )
        )
        return {"events": results.events, DEAD: results[DEAD], STATS: results[STATS]}


class GroupUsersFn(beam.DoFn):
    """(user, [[Event]]) -> (user, time-sorted events without exact duplicates).

    max_rows: a user with more rows than this is dropped here, before their events are held in
    one list (0: no bound). Distributed runners hand a large group over as a lazy iterable, so
    a crawler's 10^8 rows never sit in one worker's memory; counted as `dropped_raw_heavy_users`
    and `dropped_raw_heavy_user_rows`."""

    def __init__(self, prefix: str = "", max_rows: int = 0):
        self.prefix = prefix
        self.max_rows = max_rows

    def process(self, element):
        user, batches = element
        merged: list[Event] = []
        rows = 0
        for batch in batches:
            rows += len(batch)
            if self.max_rows and rows > self.max_rows:
                merged = []  # counting on, holding nothing
                continue
            merged += batch
        if self.max_rows and rows > self.max_rows:
            counts = _Counts()
            counts.inc(self.prefix + "dropped_raw_heavy_users")
            counts.inc(self.prefix + "dropped_raw_heavy_user_rows", rows)
            yield beam.pvalue.TaggedOutput(STATS, counts.flush())
            return
        events, dropped = S.dedupe(S.sort_events(merged))
        if dropped:  # a stats element only when there is something to count (one per user)
            counts = _Counts()
            counts.inc(self.prefix + "duplicate_events", dropped)
            yield beam.pvalue.TaggedOutput(STATS, counts.flush())
        yield user, events


class GroupByUser(beam.PTransform):
    """Per-user batches -> one element per user: (user, sorted, de-duplicated events); users
    with more than `max_rows` rows are dropped while grouping (`GroupUsersFn`)."""

    def __init__(self, prefix: str = "", max_rows: int = 0):
        super().__init__()
        self.prefix = prefix
        self.max_rows = max_rows

    def expand(self, batches):
        results = (
            batches
            | "GroupUsers" >> beam.GroupByKey()
            | "SortDedupe"
            >> beam.ParDo(GroupUsersFn(self.prefix, self.max_rows)).with_outputs(
                STATS, main="users"
            )
        )
        return {"users": results.users, STATS: results[STATS]}


# ---------------------------------------------------------------------------------------------
# Side tables
# ---------------------------------------------------------------------------------------------
def read_csv_header(path_pattern: str, delimiter: str = ",") -> list[str]:
    match = FileSystems.match([path_pattern])[0].metadata_list
    if not match:
        raise FileNotFoundError(f"no file matches {path_pattern}")
    with FileSystems.open(match[0].path, compression_type=CompressionTypes.AUTO) as f:
        return split_header(f.readline(), delimiter)


class ParseTableRowFn(beam.DoFn):
    """CSV row of a side table -> (key, {column: value}); bad rows to the dead letters."""

    def __init__(self, header: Sequence[str], key_column: str, columns: Mapping[str, str], table):
        self.header = list(header)
        self.key_index = self.header.index(key_column)
        self.columns = {name: self.header.index(col) for name, col in columns.items()}
        self.table = table

    def process(self, line: str):
        import csv

        row = next(csv.reader([line]))
        if len(row) != len(self.header):
            reason = f"{self.table}:wrong_column_count"
        elif not row[self.key_index].strip():
            reason = f"{self.table}:empty_id"
        else:
            yield row[self.key_index].strip(), {k: row[i].strip() for k, i in self.columns.items()}
            return
        Metrics.counter(NAMESPACE, f"rejected:{reason}").inc()
        yield beam.pvalue.TaggedOutput(DEAD, _dead_letter(reason, self.table, -1, line))
        yield beam.pvalue.TaggedOutput(STATS, {f"rejected:{reason}": 1})


class ReadTable(beam.PTransform):
    """A CSV side table with a header -> (key, {name: value}) plus dead letters and stats."""

    def __init__(self, pattern: str, key_column: str, columns: Mapping[str, str], table: str):
        super().__init__()
        self.pattern = pattern
        self.key_column = key_column
        self.columns = dict(columns)
        self.table = table

    def expand(self, pbegin):
        header = read_csv_header(self.pattern)
        if self.key_column not in header:
            raise ValueError(f"{self.table} table: no column {self.key_column!r} in {header}")
        missing = [c for c in self.columns.values() if c not in header]
        if missing:
            raise ValueError(f"{self.table} table: columns {missing} not in {header}")
        results = (
            pbegin
            | "ReadLines" >> beam.io.ReadFromText(self.pattern, skip_header_lines=1)
            | "Parse"
            >> beam.ParDo(
                ParseTableRowFn(header, self.key_column, self.columns, self.table)
            ).with_outputs(DEAD, STATS, main="rows")
        )
        return {"rows": results.rows, DEAD: results[DEAD], STATS: results[STATS]}


def apply_item_table(user_events, item_sides: Mapping[str, Mapping[str, str]]):
    """Overrides an event's side values with the item table's, where the table has them."""
    user, events = user_events
    if not item_sides:
        return user_events
    out = []
    for e in events:
        row = item_sides.get(e.item)
        if row:
            sides = S.join_sides(e.sides, row)
            e = e._replace(sides=sides)
        out.append(e)
    return user, out
