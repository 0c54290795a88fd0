"""Composite Beam transforms of the preprocessing pipeline.

Throughput: DirectRunner pays tens of microseconds per element per step, so events never travel
one per element. A reader turns a byte range of a file into per-bucket batches (bucket = crc32 of
the user id), a GroupByKey gathers each bucket, and from there on an element is one user.

Stats: every transform that counts something also emits plain dicts on a `stats` output; they
are summed into stats.json, which does not depend on a runner's metrics support. The same counts go
to Beam `Metrics` for the runner's UI.
"""

from __future__ import annotations

import collections
import json
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from pipelines import sessions as S
from pipelines.events import SIDE_FIELDS, Event, InputFormat, RowParser, split_header
from sdm_tf import features as F

NAMESPACE = "sdm"
DEAD = "dead_letter"
STATS = "stats"


def user_bucket(user: str, num_buckets: int) -> int:
    # crc32, not hash(): Python's str hash is salted per process.
    return zlib.crc32(user.encode("utf-8")) % num_buckets


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
    """Reads one byte range of a log, validates each row, emits (bucket, [Event]) batches.

    Outputs: main = (bucket, list of Events); `dead_letter` = JSON lines; `stats` = dicts.
    """

    def __init__(self, fmt: InputFormat, num_buckets: int, rows_prefix: str = ""):
        self.fmt = fmt
        self.num_buckets = num_buckets
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
        buckets: dict[int, list[Event]] = collections.defaultdict(list)
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
            buckets[user_bucket(ev.user, self.num_buckets)].append(ev)
        yield from buckets.items()
        yield beam.pvalue.TaggedOutput(STATS, counts.flush())


class ReadEvents(beam.PTransform):
    """File pattern -> validated event batches keyed by user bucket.

    Returns a dict with `events` ((bucket, [Event]) elements), `dead_letter` (JSON lines) and
    `stats` (dicts). Accepted + rejected rows always equal the input rows.
    """

    def __init__(
        self,
        pattern: str,
        fmt: InputFormat,
        num_buckets: int = 64,
        chunk_bytes: int = 8 << 20,
        rows_prefix: str = "",
    ):
        super().__init__()
        self.pattern = pattern
        self.fmt = fmt
        self.num_buckets = num_buckets
        self.chunk_bytes = chunk_bytes
        self.rows_prefix = rows_prefix

    def expand(self, pbegin):
        results = (
            pbegin
            | "Match" >> fileio.MatchFiles(self.pattern)
            | "Ranges" >> beam.FlatMap(split_into_ranges, self.chunk_bytes)
            | "Spread" >> beam.Reshuffle()
            | "ReadAndValidate"
            >> beam.ParDo(ReadRangeFn(self.fmt, self.num_buckets, self.rows_prefix)).with_outputs(
                DEAD, STATS, main="events"
            )
        )
        return {"events": results.events, DEAD: results[DEAD], STATS: results[STATS]}


class GroupUsersFn(beam.DoFn):
    """(bucket, [[Event]]) -> (user, time-sorted events without exact duplicates)."""

    def __init__(self, prefix: str = ""):
        self.prefix = prefix

    def process(self, element):
        _, batches = element
        per_user: dict[str, list[Event]] = collections.defaultdict(list)
        for batch in batches:
            for e in batch:
                per_user[e.user].append(e)
        counts = _Counts()
        for user in sorted(per_user):
            events, dropped = S.dedupe(S.sort_events(per_user[user]))
            if dropped:
                counts.inc(self.prefix + "duplicate_events", dropped)
            yield user, events
        yield beam.pvalue.TaggedOutput(STATS, counts.flush())


class GroupByUser(beam.PTransform):
    """Bucketed batches -> one element per user: (user, sorted, de-duplicated events)."""

    def __init__(self, prefix: str = ""):
        super().__init__()
        self.prefix = prefix

    def expand(self, batches):
        results = (
            batches
            | "GroupBuckets" >> beam.GroupByKey()
            | "SortDedupe"
            >> beam.ParDo(GroupUsersFn(self.prefix)).with_outputs(STATS, main="users")
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
            sides = tuple(row.get(f) or e.sides[i] for i, f in enumerate(SIDE_FIELDS))
            e = e._replace(sides=sides)
        out.append(e)
    return user, out


# ---------------------------------------------------------------------------------------------
# Filters (§4.1)
# ---------------------------------------------------------------------------------------------
class CounterCombineFn(beam.CombineFn):
    """Sums dicts of counts (also used for stats)."""

    def create_accumulator(self):
        return collections.Counter()

    def add_input(self, acc, element):
        acc.update(element)
        return acc

    def merge_accumulators(self, accs):
        out = collections.Counter()
        for a in accs:
            out.update(a)
        return out

    def extract_output(self, acc):
        return dict(acc)


def _item_counts(user_events) -> dict:
    return collections.Counter(e.item for e in user_events[1])


class FilterUsersFn(beam.DoFn):
    """Drops events of rare items, then users with too many events."""

    def __init__(self, min_item_count: int, max_user_events: int):
        self.min_item_count = min_item_count
        self.max_user_events = max_user_events

    def process(self, user_events, item_counts):
        user, events = user_events
        kept = [e for e in events if item_counts.get(e.item, 0) >= self.min_item_count]
        stats = {"dropped_rare_item_events": len(events) - len(kept)}
        if self.max_user_events and len(kept) > self.max_user_events:
            stats["dropped_heavy_users"] = 1
            stats["dropped_heavy_user_events"] = len(kept)
            kept = []
        for k, v in stats.items():
            if v:
                Metrics.counter(NAMESPACE, k).inc(v)
        yield beam.pvalue.TaggedOutput(STATS, stats)
        if kept:
            yield user, kept


class FilterEvents(beam.PTransform):
    """Paper §4.1: items seen fewer than `min_item_count` times and users with more than
    `max_user_events` events are dropped (0 turns the user rule off)."""

    def __init__(self, min_item_count: int = 5, max_user_events: int = 1000):
        super().__init__()
        self.min_item_count = min_item_count
        self.max_user_events = max_user_events

    def expand(self, users):
        counts = (
            users
            | "CountItems" >> beam.Map(_item_counts)
            | "SumItemCounts" >> beam.CombineGlobally(CounterCombineFn())
        )
        results = users | "Filter" >> beam.ParDo(
            FilterUsersFn(self.min_item_count, self.max_user_events),
            item_counts=beam.pvalue.AsSingleton(counts),
        ).with_outputs(STATS, main="users")
        return {"users": results.users, STATS: results[STATS]}


# ---------------------------------------------------------------------------------------------
# Vocabularies
# ---------------------------------------------------------------------------------------------
def _feature_counts(user_events) -> dict:
    """{feature: Counter(value)} for the item features of one user's events ("" skipped)."""
    _, events = user_events
    out = {F.ITEM: collections.Counter(e.item for e in events)}
    for i, f in enumerate(SIDE_FIELDS):
        c = collections.Counter(e.sides[i] for e in events if e.sides[i])
        if c:
            out[f] = c
    out["_item_sides"] = collections.Counter((e.item, e.sides) for e in events)
    return out


class NestedCounterCombineFn(beam.CombineFn):
    def create_accumulator(self):
        return {}

    def add_input(self, acc, element):
        for k, c in element.items():
            acc.setdefault(k, collections.Counter()).update(c)
        return acc

    def merge_accumulators(self, accs):
        out: dict = {}
        for a in accs:
            self.add_input(out, a)
        return out

    def extract_output(self, acc):
        return acc


def ordered_vocab(counts: Mapping[str, int]) -> list[tuple[str, int]]:
    """Descending count, ties by value, so ids are deterministic; id = index + NUM_RESERVED."""
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def finalize_vocabs(counts: Mapping[str, Mapping], profiles: Mapping[str, Mapping]) -> dict:
    """Builds {'features': {name: [(value, count)]}, 'item_features', 'profile_features',
    'item_sides': {item: sides}} from the combined counts."""
    item_features = [F.ITEM] + [f for f in SIDE_FIELDS if counts.get(f)]
    feats = {f: ordered_vocab(counts.get(f, {})) for f in item_features}
    for p, c in profiles.items():
        feats[p] = ordered_vocab(c)
    sides: dict[str, tuple] = {}
    best: dict[str, int] = {}
    for (item, s), n in sorted(counts.get("_item_sides", {}).items()):
        if n > best.get(item, 0):
            best[item], sides[item] = n, s
    return {
        "features": feats,
        "item_features": [f for f in F.ALL_ITEM_FEATURES if f in item_features],
        "profile_features": sorted(profiles),
        "item_sides": sides,
    }


def _profile_counts(row) -> dict:
    _, values = row
    return {k: collections.Counter([v]) for k, v in values.items() if v}


class BuildVocabularies(beam.PTransform):
    """Users (and profile rows) -> a singleton PCollection with the vocabularies."""

    def __init__(self, profiles=None):
        super().__init__()
        self.profiles = profiles

    def expand(self, users):
        counts = (
            users
            | "CountFeatures" >> beam.Map(_feature_counts)
            | "SumFeatures" >> beam.CombineGlobally(NestedCounterCombineFn())
        )
        if self.profiles is not None:
            profile_counts = (
                self.profiles
                | "CountProfiles" >> beam.Map(_profile_counts)
                | "SumProfiles" >> beam.CombineGlobally(NestedCounterCombineFn())
            )
        else:
            profile_counts = users.pipeline | "NoProfiles" >> beam.Create([{}])
        return counts | "Finalize" >> beam.Map(
            finalize_vocabs, beam.pvalue.AsSingleton(profile_counts)
        )


def dataset_spec_from_vocabs(vocabs: Mapping, cfg: S.SessionConfig) -> F.DatasetSpec:
    return F.DatasetSpec(
        item_features=tuple(vocabs["item_features"]),
        profile_features=tuple(vocabs["profile_features"]),
        vocab_sizes={k: len(v) + F.NUM_RESERVED for k, v in vocabs["features"].items()},
        max_session_length=cfg.max_session_length,
        long_term_size=cfg.long_term_size,
        next_n=cfg.next_n,
        session_gap=cfg.session_gap,
        long_term_days=cfg.long_term_days,
    )


# ---------------------------------------------------------------------------------------------
# Examples
# ---------------------------------------------------------------------------------------------
PROTOCOLS = ("time", "loo", "queries", "none")


class MakeExamplesFn(beam.DoFn):
    """(user, {'events', 'fed', 'truth', 'profile'}) -> serialized train / eval Examples."""

    def __init__(self, cfg: S.SessionConfig, protocol: str):
        self.cfg = cfg
        self.protocol = protocol
        self._cache_key = None

    def _setup_vocabs(self, vocabs):
        # Side inputs are the same object within a bundle; build the lookups once.
        if self._cache_key is not vocabs:
            self._cache_key = vocabs
            lookup = {
                k: {v: i + F.NUM_RESERVED for i, (v, _) in enumerate(vals)}
                for k, vals in vocabs["features"].items()
            }
            self.spec = F.FeatureSpec(dataset_spec_from_vocabs(vocabs, self.cfg))
            self.enc = S.Encoder(lookup, vocabs["item_features"])
            self.profile_lookup = {p: lookup[p] for p in vocabs["profile_features"]}

    def process(self, element, vocabs, test_day_start):
        self._setup_vocabs(vocabs)
        user, groups = element
        events = next(iter(groups.get("events", [])), [])
        profile = next(iter(groups.get("profile", [])), {})
        profile_ids = {
            p: lk.get(profile.get(p, ""), F.OOV_ID) for p, lk in self.profile_lookup.items()
        }
        if self.protocol == "time":
            train, fed, truth = S.split_time(events, test_day_start)
        elif self.protocol == "loo":
            train, fed, truth = S.split_loo(events)
        elif self.protocol == "queries":
            train = events
            fed = next(iter(groups.get("fed", [])), [])
            truth = next(iter(groups.get("truth", [])), [])
        else:
            train, fed, truth = events, [], []
        stats = collections.Counter()
        records, lengths = S.train_records(user, train, self.enc, self.cfg, profile_ids)
        stats.update(
            kept_events=len(events),
            train_events=len(train),
            sessions=len(lengths),
            session_events=sum(lengths),
            train_examples=len(records),
            users=1 if events else 0,
        )
        for rec in records:
            yield beam.pvalue.TaggedOutput(F.TRAIN, self.spec.encode(rec, F.TRAIN))
        queries = [(F.EVAL, fed, truth)]
        if "test_truth" in groups:  # held-out test queries beside the validation split
            if len(train) != len(events):  # validation targets held out: the final fit has them
                records, _ = S.train_records(user, events, self.enc, self.cfg, profile_ids)
            stats[f"{F.TRAIN_ALL}_examples"] += len(records)
            for rec in records:
                yield beam.pvalue.TaggedOutput(F.TRAIN_ALL, self.spec.encode(rec, F.TRAIN))
            test_fed = next(iter(groups.get("test_fed", [])), [])
            queries.append((F.TEST, test_fed, next(iter(groups["test_truth"]), [])))
        for tag, q_fed, q_truth in queries:
            query = S.query_record(user, q_fed, q_truth, self.enc, self.cfg, profile_ids)
            if query is not None:
                stats[f"{tag}_examples"] += 1
                yield beam.pvalue.TaggedOutput(tag, self.spec.encode(query, F.EVAL))
            elif q_truth:
                stats[f"{tag}_users_without_history"] += 1
        yield beam.pvalue.TaggedOutput(STATS, dict(stats))


def _max_timestamp(user_events) -> int:
    return max(e.timestamp for e in user_events[1])


class MakeExamples(beam.PTransform):
    """Per-user groups + vocabularies -> train / eval serialized Examples and stats."""

    def __init__(self, cfg: S.SessionConfig, protocol: str, vocabs, users_for_time=None):
        super().__init__()
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}")
        self.cfg = cfg
        self.protocol = protocol
        self.vocabs = vocabs
        self.users_for_time = users_for_time

    def expand(self, grouped):
        if self.protocol == "time":
            test_day = (
                self.users_for_time
                | "MaxTimestamp" >> beam.Map(_max_timestamp)
                | "GlobalMax" >> beam.CombineGlobally(max).without_defaults()
                | "TestDay" >> beam.Map(S.day_start)
            )
            test_day_side = beam.pvalue.AsSingleton(test_day, default_value=None)
        else:
            test_day_side = beam.pvalue.AsSingleton(
                grouped.pipeline | "NoTestDay" >> beam.Create([None])
            )
        results = grouped | "Examples" >> beam.ParDo(
            MakeExamplesFn(self.cfg, self.protocol),
            vocabs=beam.pvalue.AsSingleton(self.vocabs),
            test_day_start=test_day_side,
        ).with_outputs(F.TRAIN, F.EVAL, F.TEST, F.TRAIN_ALL, STATS)
        return {tag: results[tag] for tag in (F.TRAIN, F.EVAL, F.TEST, F.TRAIN_ALL, STATS)}


# ---------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------
def _write_text(path: str, text: str) -> None:
    with FileSystems.create(path) as f:
        f.write(text.encode("utf-8"))


def write_vocabularies(vocabs, output_dir: str, cfg: S.SessionConfig) -> None:
    """vocab/<feature>.tsv ("value<TAB>count", line i is id i + NUM_RESERVED), items.tsv with each
    item's side values, and dataset_spec.json."""
    for name, values in vocabs["features"].items():
        lines = "".join(f"{v}\t{c}\n" for v, c in values)
        _write_text(FileSystems.join(output_dir, "vocab", f"{name}.tsv"), lines)
    sides = vocabs["item_sides"]
    header = "\t".join(["item", "id", "count", *SIDE_FIELDS]) + "\n"
    rows = "".join(
        "\t".join([item, str(i + F.NUM_RESERVED), str(count), *sides.get(item, ("",) * 4)]) + "\n"
        for i, (item, count) in enumerate(vocabs["features"][F.ITEM])
    )
    _write_text(FileSystems.join(output_dir, "items.tsv"), header + rows)
    spec = dataset_spec_from_vocabs(vocabs, cfg)
    _write_text(FileSystems.join(output_dir, "dataset_spec.json"), spec.to_json())


def finalize_stats(counts: Mapping[str, int]) -> dict:
    """Raw summed counts -> stats.json content, with the required keys always present."""
    rejected_by_reason = {
        k.split(":", 1)[1]: v for k, v in sorted(counts.items()) if k.startswith("rejected:")
    }
    sessions = counts.get("sessions", 0)
    out = {
        "input_rows": counts.get("input_rows", 0),
        "accepted_rows": counts.get("accepted_rows", 0),
        "rejected_rows": counts.get("rejected_rows", 0),
        "rejected_by_reason": rejected_by_reason,
        "duplicate_events": counts.get("duplicate_events", 0),
        "events": counts.get("kept_events", 0),
        "users": counts.get("users", 0),
        "items": counts.get("items", 0),
        "sessions": sessions,
        "train_examples": counts.get("train_examples", 0),
        "eval_examples": counts.get("eval_examples", 0),
        "avg_session_length": (counts.get("session_events", 0) / sessions) if sessions else 0.0,
    }
    for k, v in sorted(counts.items()):
        if k not in out and not k.startswith("rejected:"):
            out[k] = v
    return out
