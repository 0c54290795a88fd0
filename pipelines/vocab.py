"""Filters (rare items, heavy users), vocabularies by descending frequency, and their files."""

from __future__ import annotations

import collections
from collections.abc import Mapping

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from pipelines.read import NAMESPACE, STATS
from sdm_tf.core import features as F
from sdm_tf.core import sessions as S
from sdm_tf.core.events import SIDE_FIELDS


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
def _feature_counts(user_events, before: int | None = None) -> dict:
    """{feature: Counter(value)} for the item features of one user's events ("" skipped);
    with `before`, only the events before that time (the training part of the time protocol)."""
    _, events = user_events
    if before is not None:
        events = [e for e in events if e.timestamp < before]
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

    def __init__(self, profiles=None, before=None):
        """before: a singleton PCollection (a time) or None; with it, frequencies are counted
        on the events before that time only, so that held-out events order neither the
        vocabularies, nor the sampler's distribution, nor the popularity baseline."""
        super().__init__()
        self.profiles = profiles
        self.before = before

    def expand(self, users):
        before = None  # no cutoff: a plain argument, no side input
        if self.before is not None:
            before = beam.pvalue.AsSingleton(self.before, default_value=None)
        counts = (
            users
            | "CountFeatures" >> beam.Map(_feature_counts, before)
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
        prior_size=cfg.prior_size,
    )


# ---------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------
def write_text(path: str, text: str) -> None:
    with FileSystems.create(path) as f:
        f.write(text.encode("utf-8"))


def write_vocabularies(vocabs, output_dir: str, cfg: S.SessionConfig) -> None:
    """vocab/<feature>.tsv ("value<TAB>count", line i is id i + NUM_RESERVED), items.tsv with each
    item's side values, and dataset_spec.json."""
    for name, values in vocabs["features"].items():
        lines = "".join(f"{v}\t{c}\n" for v, c in values)
        write_text(FileSystems.join(output_dir, "vocab", f"{name}.tsv"), lines)
    sides = vocabs["item_sides"]
    header = "\t".join(["item", "id", "count", *SIDE_FIELDS]) + "\n"
    rows = "".join(
        "\t".join([item, str(i + F.NUM_RESERVED), str(count), *sides.get(item, ("",) * 4)]) + "\n"
        for i, (item, count) in enumerate(vocabs["features"][F.ITEM])
    )
    write_text(FileSystems.join(output_dir, "items.tsv"), header + rows)
    spec = dataset_spec_from_vocabs(vocabs, cfg)
    write_text(FileSystems.join(output_dir, "dataset_spec.json"), spec.to_json())
