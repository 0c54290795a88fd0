"""The paper's session rules (§3.1, §4.1) and example construction, as plain Python.

Everything here works on one user's events and is deterministic, so the Beam transforms stay
thin and these rules are tested on hand-built cases.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Container, Iterable, Mapping, Sequence

from sdm_tf.core import features as F
from sdm_tf.core.events import SIDE_FIELDS, Event
from sdm_tf.core.history_rules import recent_first

DAY = 86400
# The "auto" session gap (`pipelines.preprocess --session_gap=auto`, the default): the paper's
# gap rule (600 s), unless at least this share of the sessions it makes come after a pause
# longer than the long-term window (`sessions_after_long_pause`). There the model would see
# nothing of those users' history, and the gap rule gives way to one sequence per user
# (session_gap 0). MovieLens-small: 28.4 % of its sessions (rating bursts days or months
# apart); validation NDCG@50 .1205-.1265 -> .1370-.1424 without the gap (3 seeds). The Taobao
# sample and Amazon Beauty: 0. The threshold lies between; it is not tuned.
NO_GAP_SHARE = 0.1
DEFAULT_SESSION_GAP = 600


@dataclasses.dataclass(frozen=True)
class SessionConfig:
    """Session and example rules.

    Attributes:
      session_gap: seconds; adjacent events strictly less than this apart share a session.
        0: no gap rule: a user's events (those without a session id) are one sequence, cut
        into sessions of `max_session_length` (`NO_GAP_SHARE` says where that is chosen).
      max_session_length: events per session; a longer session continues as a new one.
      long_term_days: the long-term window before a session's start, in days.
      long_term_size: distinct values kept per long-term bag (most recent first).
      next_n: labels per position for next-N training.
      min_session_length: sessions shorter than this yield no training example (at least 2).
      prior_size: distinct items of the user's history before a session (most recent first)
        that its training record carries as `F.PRIOR`, for the softmax mask; 0: none.
    """

    session_gap: int = DEFAULT_SESSION_GAP
    max_session_length: int = 50
    long_term_days: float = 7.0
    long_term_size: int = 20
    next_n: int = 5
    min_session_length: int = 2
    prior_size: int = 1000

    def __post_init__(self):
        if self.session_gap < 0:
            raise ValueError("session_gap must be >= 0")
        if self.max_session_length < 2:
            raise ValueError("max_session_length must be >= 2")
        if self.min_session_length < 2:
            raise ValueError("a training session needs at least 2 events")
        if self.prior_size < 0:
            raise ValueError("prior_size must be >= 0")


def sort_events(events: Iterable[Event]) -> list[Event]:
    """Time order; equal timestamps keep file order (source, offset)."""
    return sorted(events, key=lambda e: (e.timestamp, e.order))


def dedupe(events: Sequence[Event]) -> tuple[list[Event], int]:
    """Collapses exact duplicates (same item, time, session, behaviour, sides) of sorted events.

    Returns the kept events and the number removed.
    """
    seen: set = set()
    out = []
    for e in events:
        k = e.key()
        if k in seen:
            continue
        seen.add(k)
        out.append(e)
    return out, len(events) - len(out)


def session_groups(events: Sequence[Event], cfg: SessionConfig) -> list[list[int]]:
    """One user's sessions, uncapped, as index lists into the time-sorted `events`.

    Rules:
      * events that carry a backend session id: one session per id, whatever the gaps and
        whatever other events lie between (two tabs open at once are two sessions);
      * an event without an id joins its predecessor's session when it is less than
        `session_gap` seconds after it, and starts a new session otherwise.
    Sessions are ordered by their first event.
    """
    groups: list[list[int]] = []
    by_id: dict[str, list[int]] = {}
    group_of: list[list[int]] = []
    for i, e in enumerate(events):
        if e.session_id:
            group = by_id.get(e.session_id)
            if group is None:
                group = by_id[e.session_id] = []
                groups.append(group)
        elif i and (not cfg.session_gap or e.timestamp - events[i - 1].timestamp < cfg.session_gap):
            group = group_of[i - 1]
        else:
            group = []
            groups.append(group)
        group.append(i)
        group_of.append(group)
    return groups


def sessions_after_long_pause(events: Sequence[Event], cfg: SessionConfig) -> int:
    """How many of one user's sessions (`sessionize`'s, of any length) have earlier events but
    none in the long-term window before their start: the user's history that neither the
    session nor the long-term bags show."""
    count = 0
    for chunk in _chunks(events, cfg):
        start, i = events[chunk[0]].timestamp, chunk[0] - 1
        while i >= 0 and events[i].timestamp >= start:  # time order: the latest earlier event
            i -= 1
        count += i >= 0 and events[i].timestamp < start - cfg.long_term_days * DAY
    return count


def long_pause_share(stats: Mapping) -> float:
    """The share of the sessions in a pipeline's stats that come after a long pause."""
    return stats.get("sessions_after_long_pause", 0) / max(1, stats.get("sessions", 0))


def auto_session_gap(stats: Mapping) -> int:
    """The session gap "auto" chooses for data preprocessed with the paper's gap rule."""
    return 0 if long_pause_share(stats) >= NO_GAP_SHARE else DEFAULT_SESSION_GAP


def sessionize(events: Sequence[Event], cfg: SessionConfig) -> list[list[Event]]:
    """Splits one user's time-sorted events into sessions (`session_groups`); a session longer
    than `max_session_length` continues as a new session (chunks of the cap, in order)."""
    return [[events[i] for i in chunk] for chunk in _chunks(events, cfg)]


def _chunks(events: Sequence[Event], cfg: SessionConfig) -> list[list[int]]:
    cap = cfg.max_session_length
    chunks = [g[i : i + cap] for g in session_groups(events, cfg) for i in range(0, len(g), cap)]
    return sorted(chunks, key=lambda c: c[0])


def query_window(events: Sequence[Event], cfg: SessionConfig) -> list[int]:
    """Indices of a query's short-term sequence in the sorted `events`: the last
    `max_session_length` events of the latest session (the one holding the latest event). A
    session longer than the cap is a sliding window here, not the remainder chunk `sessionize`
    would leave (which can be a single event)."""
    if not events:
        return []
    last = len(events) - 1
    group = next(g for g in session_groups(events, cfg) if g[-1] == last)
    return group[-cfg.max_session_length :]


def feature_value(e: Event, feature: str) -> str:
    """The raw value of an item feature of an event ("" where the event has no such value)."""
    return e.item if feature == F.ITEM else e.sides[SIDE_FIELDS.index(feature)]


def join_sides(sides: Sequence[str], row: Mapping[str, str] | None) -> tuple[str, ...]:
    """An event's side values after the item-table join: the table's value where it has one,
    the event's own otherwise (the same rule for training events, queries and requests)."""
    if not row:
        return tuple(sides)
    return tuple(row.get(f) or sides[i] for i, f in enumerate(SIDE_FIELDS))


class Encoder:
    """Maps raw values to vocabulary ids: "" (a missing side value) -> padding, a value outside
    the vocabulary -> OOV. The serving tower's lookups apply the same mapping."""

    def __init__(self, vocabs: Mapping[str, Mapping[str, int]], item_features: Sequence[str]):
        self.vocabs = vocabs
        self.item_features = tuple(item_features)

    def encode(self, values: Iterable[str], feature: str) -> list[int]:
        vocab = self.vocabs[feature]
        return [vocab.get(v, F.OOV_ID) if v else F.PAD_ID for v in values]

    def ids(self, events: Sequence[Event], feature: str) -> list[int]:
        return self.encode((feature_value(e, feature) for e in events), feature)


def raw_bags(
    history: Sequence[Event], end: int, start_ts: int, features: Sequence[str], cfg: SessionConfig
) -> dict[str, list[str]]:
    """Long-term bags of raw values, one per item feature, for a session starting at `start_ts`.

    `history[:end]` are the user's sorted events before the session. Events with
    `start_ts - long_term_days * DAY <= timestamp < start_ts` count, whichever session they
    belong to (a session's own earlier chunks included: the events before a capped window are
    the most recent behaviour the window does not show); each bag keeps the most recent
    `long_term_size` distinct values, most recent first; missing side values ("") are skipped.
    """
    lo = start_ts - cfg.long_term_days * DAY
    bags: dict[str, list[str]] = {f: [] for f in features}
    seen: dict[str, set] = {f: set() for f in features}
    open_features = set(features)
    for i in range(end - 1, -1, -1):
        e = history[i]
        if e.timestamp >= start_ts:
            continue
        if e.timestamp < lo:
            break
        for f in list(open_features):
            v = feature_value(e, f)
            if not v or v in seen[f]:
                continue
            seen[f].add(v)
            bags[f].append(v)
            if len(bags[f]) >= cfg.long_term_size:
                open_features.discard(f)
        if not open_features:
            break
    return bags


@dataclasses.dataclass(frozen=True)
class Query:
    """A query in raw values, per item feature: the short-term sequence ("" = no value) and the
    long-term bags (most recent first). The pipeline encodes it with its vocabularies, the
    service sends it through the SavedModel's lookups: both get the same ids."""

    short: dict[str, list[str]]
    long: dict[str, list[str]]

    @property
    def length(self) -> int:
        return len(self.short[F.ITEM])


def build_query(
    events: Iterable[Event],
    cfg: SessionConfig,
    item_features: Sequence[str],
    known_items: Container[str] | None = None,
) -> Query | None:
    """The one query builder, for evaluation examples and for live requests.

    The user's events are put in time order (file / request order breaks ties), exact duplicates
    are collapsed and items outside `known_items` dropped, as the pipeline does before training;
    the latest session's last `max_session_length` events are the short-term sequence and the
    `long_term_days` before it feed the long-term bags. None when no event is left.
    """
    kept, _ = dedupe(sort_events(events))
    if known_items is not None:
        kept = [e for e in kept if e.item in known_items]
    if not kept:
        return None
    window = query_window(kept, cfg)
    short = {f: [feature_value(kept[i], f) for i in window] for f in item_features}
    long = raw_bags(kept, window[0], kept[window[0]].timestamp, item_features, cfg)
    return Query(short, long)


def _base_record(user, profile_ids, short, long, enc) -> dict:
    rec = {F.USER_ID: user, F.LENGTH: len(short[F.ITEM])}
    for f in enc.item_features:
        rec[F.short_key(f)] = enc.encode(short[f], f)
        rec[F.long_key(f)] = enc.encode(long[f], f)
    for p, v in profile_ids.items():
        rec[F.profile_key(p)] = v
    return rec


def train_records(
    user: str,
    events: Sequence[Event],
    enc: Encoder,
    cfg: SessionConfig,
    profile_ids: Mapping[str, int],
) -> tuple[list[dict], list[int]]:
    """One training record per session of >= min_session_length events.

    The inputs are the session's first n-1 events; `label[t]` is event t+1's item and
    `label_next_n[t]` the items t+1 .. t+N (0-padded at the session's end).
    Returns the records and the lengths of all sessions.
    """
    records = []
    chunks = _chunks(events, cfg)
    n_next = cfg.next_n
    for chunk in chunks:
        if len(chunk) < cfg.min_session_length:
            continue
        s = [events[i] for i in chunk]
        long = raw_bags(events, chunk[0], s[0].timestamp, enc.item_features, cfg)
        short = {f: [feature_value(e, f) for e in s[:-1]] for f in enc.item_features}
        rec = _base_record(user, profile_ids, short, long, enc)
        items = enc.ids(s, F.ITEM)
        rec[F.LABEL] = items[1:]
        nn = []
        for t in range(len(s) - 1):
            nxt = items[t + 1 : t + 1 + n_next]
            nn.extend(nxt + [F.PAD_ID] * (n_next - len(nxt)))
        rec[F.LABEL_NEXT_N] = nn
        prior = recent_first([e.item for e in events[: chunk[0]]])[: cfg.prior_size]
        rec[F.PRIOR] = enc.encode(prior, F.ITEM)
        records.append(rec)
    return records, [len(c) for c in chunks]


def labels_in_input(record: Mapping) -> int:
    """How many of a training record's labels repeat an item of their position's input (the
    session up to it, the long-term item bag) or of the user's history before the session:
    users coming back to items they had."""
    seen = set(record[F.long_key(F.ITEM)]) | set(record.get(F.PRIOR, ()))
    repeats = 0
    for item, label in zip(record[F.short_key(F.ITEM)], record[F.LABEL]):
        seen.add(item)
        repeats += label in seen
    return repeats


def query_record(
    user: str,
    fed: Sequence[Event],
    truth: Sequence[str],
    enc: Encoder,
    cfg: SessionConfig,
    profile_ids: Mapping[str, int],
) -> dict | None:
    """An evaluation record: `build_query` of the fed events, encoded, with the raw ground-truth
    ids and the raw ids of everything fed, in time order with repeats (what a "history excluded"
    ranking leaves out, and what the "first" and "frequent" rules order by recency and count).
    None when nothing usable is fed or nothing is true."""
    if not truth:
        return None
    query = build_query(fed, cfg, enc.item_features, known_items=enc.vocabs[F.ITEM])
    if query is None:
        return None
    rec = _base_record(user, profile_ids, query.short, query.long, enc)
    rec[F.TRUTH] = list(truth)
    rec[F.HISTORY] = [e.item for e in fed]
    return rec


def distinct_items(events: Iterable[Event]) -> list[str]:
    return list(dict.fromkeys(e.item for e in events))


def split_time(events: Sequence[Event], test_day_start: int | None):
    """The paper's protocol. Returns (train events, fed events, truth items)."""
    if test_day_start is None:
        return list(events), [], []
    before = [e for e in events if e.timestamp < test_day_start]
    today = [e for e in events if e.timestamp >= test_day_start]
    if len(today) < 2:
        return before, [], []
    fed_n = max(1, math.ceil(0.25 * len(today)))
    return before, before + today[:fed_n], distinct_items(today[fed_n:])


# prepare.py's rule too: a target needs at least two events before it to query with and learn on.
LOO_MIN_EVENTS = 3


def split_loo(events: Sequence[Event]):
    """Leave-one-out. Returns (train events, fed events, truth items); a user with fewer than
    `LOO_MIN_EVENTS` events gives no target, and all of them train."""
    if len(events) < LOO_MIN_EVENTS:
        return list(events), [], []
    return list(events[:-1]), list(events[:-1]), [events[-1].item]


def day_start(ts: int) -> int:
    return ts - ts % DAY
