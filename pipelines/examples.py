"""Example construction: per-user events -> train / validation / test Examples, and stats.json."""

from __future__ import annotations

import collections
import struct
from collections.abc import Iterable, Mapping

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipelines.read import STATS
from pipelines.vocab import dataset_spec_from_vocabs
from sdm_tf.core import features as F
from sdm_tf.core import sessions as S
from sdm_tf.core.errors import LostDataError

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
            sessions_after_long_pause=S.sessions_after_long_pause(train, self.cfg),
            session_events=sum(lengths),
            train_examples=len(records),
            # "auto" settings read it (sdm_tf.config.resolve_auto)
            train_examples_without_long_term=sum(
                not any(r[F.long_key(f)] for f in self.enc.item_features) for r in records
            ),
            train_labels=sum(len(r[F.LABEL]) for r in records),
            train_labels_in_input=sum(S.labels_in_input(r) for r in records),
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


class TestDayStart(beam.PTransform):
    """Users -> a singleton: the start (UTC midnight) of the last day in the log, the day the
    time protocol holds out."""

    def expand(self, users):
        return (
            users
            | "MaxTimestamp" >> beam.Map(_max_timestamp)
            | "GlobalMax" >> beam.CombineGlobally(max).without_defaults()
            | "TestDay" >> beam.Map(S.day_start)
        )


class MakeExamples(beam.PTransform):
    """Per-user groups + vocabularies -> train / eval serialized Examples and stats."""

    def __init__(self, cfg: S.SessionConfig, protocol: str, vocabs, test_day=None):
        super().__init__()
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}")
        if (protocol == "time") != (test_day is not None):
            raise ValueError("the time protocol, and only it, needs test_day (TestDayStart)")
        self.cfg = cfg
        self.protocol = protocol
        self.vocabs = vocabs
        self.test_day = test_day

    def expand(self, grouped):
        test_day_side = None  # no test day: a plain argument, no side input
        if self.test_day is not None:
            test_day_side = beam.pvalue.AsSingleton(self.test_day, default_value=None)
        results = grouped | "Examples" >> beam.ParDo(
            MakeExamplesFn(self.cfg, self.protocol),
            vocabs=beam.pvalue.AsSingleton(self.vocabs),
            test_day_start=test_day_side,
        ).with_outputs(F.TRAIN, F.EVAL, F.TEST, F.TRAIN_ALL, STATS)
        return {tag: results[tag] for tag in (F.TRAIN, F.EVAL, F.TEST, F.TRAIN_ALL, STATS)}


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
        "sessions_after_long_pause": counts.get("sessions_after_long_pause", 0),
        "train_examples": counts.get("train_examples", 0),
        "train_examples_without_long_term": counts.get("train_examples_without_long_term", 0),
        "train_labels": counts.get("train_labels", 0),
        "train_labels_in_input": counts.get("train_labels_in_input", 0),
        "eval_examples": counts.get("eval_examples", 0),
        "avg_session_length": (counts.get("session_events", 0) / sessions) if sessions else 0.0,
    }
    out["unaccounted_events"] = unaccounted_events(counts)
    for k, v in sorted(counts.items()):
        if k not in out and not k.startswith("rejected:"):
            out[k] = v
    return out


# Where each accepted row of the event log ends up: exactly one of these counters.
ACCOUNTED = (
    "duplicate_events",  # GroupUsersFn
    "dropped_raw_heavy_user_rows",  # GroupUsersFn, --max_user_rows (rows, duplicates included)
    "dropped_rare_item_events",  # FilterUsersFn, --min_item_count
    "dropped_heavy_user_events",  # FilterUsersFn, --max_user_events
    "kept_events",  # MakeExamplesFn
)


def unaccounted_events(counts: Mapping[str, int]) -> int:
    """Accepted rows that no step accounts for: 0 unless the runner lost (or, if negative,
    duplicated) elements between reading and the examples. Each step counts what it drops
    (`ACCOUNTED`), so this holds on any runner; the counts travel as data, not as metrics."""
    return counts.get("accepted_rows", 0) - sum(counts.get(k, 0) for k in ACCOUNTED)


def check_accounting(stats: Mapping, output_dir: str) -> None:
    """`LostDataError` where stats.json leaves accepted events unaccounted for."""
    lost = stats.get("unaccounted_events", 0)
    if lost:
        raise LostDataError(
            f"{output_dir} is incomplete: {lost:,} of {stats['accepted_rows']:,} accepted "
            "events are missing from every count after reading (stats.json: "
            "unaccounted_events). The runner lost them (seen in DirectRunner's multi-processing "
            "mode at 10^7 events, docs/performance.md)."
        )


def count_records(pattern: str) -> int:
    """Records in the TFRecord files matching `pattern` (gzip or plain, on any filesystem Beam
    reads), counted from their length headers: a check that needs no TensorFlow."""
    n = 0
    for meta in FileSystems.match([pattern])[0].metadata_list:
        with FileSystems.open(meta.path, compression_type=CompressionTypes.AUTO) as f:
            while header := f.read(12):  # uint64 length, uint32 CRC of the length
                (length,) = struct.unpack("<Q", header[:8].ljust(8, b"\0"))
                body = f.read(length + 4)  # the record, uint32 CRC of the record
                if len(header) < 12 or len(body) < length + 4:
                    raise LostDataError(f"{meta.path} ends inside a record")
                n += 1
    return n


def check_written(stats: Mapping, output_dir: str, kinds: Iterable[str]) -> None:
    """`LostDataError` where the files of a split hold another number of records than the
    examples stats.json counted when they were made (a loss after counting, or stale files)."""
    for kind in kinds:
        expected = stats.get(f"{kind}_examples", 0)
        found = count_records(FileSystems.join(output_dir, kind, "*.tfrecord.gz"))
        if found != expected:
            raise LostDataError(
                f"{output_dir}/{kind} holds {found:,} records, but {expected:,} examples were "
                "made (stats.json). The runner lost records after making them (seen in "
                "DirectRunner's multi-processing mode at 10^7 events, docs/performance.md), or the "
                "directory holds files of another run."
            )
