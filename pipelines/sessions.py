"""The paper's session rules (§3.1, §4.1) and example construction, as plain Python.

Everything here works on one user's events and is deterministic, so the Beam transforms stay
thin and these rules are tested on hand-built cases.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence

from pipelines.events import SIDE_FIELDS, Event
from sdm_tf import features as F

DAY = 86400


@dataclasses.dataclass(frozen=True)
class SessionConfig:
    """Session and example rules.

    Attributes:
      session_gap: seconds; adjacent events strictly less than this apart share a session.
      max_session_length: events per session; a longer session continues as a new one.
      long_term_days: the long-term window before a session's start, in days.
      long_term_size: distinct values kept per long-term bag (most recent first).
      next_n: labels per position for next-N training.
      min_session_length: sessions shorter than this yield no training example (at least 2).
    """

    session_gap: int = 600
    max_session_length: int = 50
    long_term_days: float = 7.0
    long_term_size: int = 20
    next_n: int = 5
    min_session_length: int = 2

    def __post_init__(self):
        if self.session_gap < 0:
            raise ValueError("session_gap must be >= 0")
        if self.max_session_length < 2:
            raise ValueError("max_session_length must be >= 2")
        if self.min_session_length < 2:
            raise ValueError("a training session needs at least 2 events")


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


def sessionize(events: Sequence[Event], cfg: SessionConfig) -> list[list[Event]]:
    """Splits one user's time-sorted events into sessions.

    Rules, in order, between an event and its predecessor:
      * both carry a session id: equal ids share a session (whatever the gap), different ids
        start a new one;
      * otherwise a gap < `session_gap` seconds shares the session;
    and a session that reaches `max_session_length` events continues as a new session.
    """
    sessions: list[list[Event]] = []
    current: list[Event] = []
    for e in events:
        if current:
            if not same_session(current[-1], e, cfg) or len(current) >= cfg.max_session_length:
                sessions.append(current)
                current = []
        current.append(e)
    if current:
        sessions.append(current)
    return sessions


def same_session(prev: Event, e: Event, cfg: SessionConfig) -> bool:
    """The session rule between an event and its predecessor (`sessionize`), without the cap."""
    if prev.session_id and e.session_id:
        return prev.session_id == e.session_id
    return e.timestamp - prev.timestamp < cfg.session_gap


def query_start(events: Sequence[Event], cfg: SessionConfig) -> int:
    """Where a query's short-term sequence starts in the sorted `events`: the last session's last
    `max_session_length` events. A session longer than the cap is a sliding window here, not the
    remainder chunk `sessionize` would leave (which can be a single event); the events before the
    window feed the long-term bags, as the earlier chunks do in training."""
    start = len(events) - 1
    while start > 0 and same_session(events[start - 1], events[start], cfg):
        start -= 1
    return max(start, len(events) - cfg.max_session_length)


class Encoder:
    """Maps raw values to vocabulary ids. `vocabs[feature][value] -> id`; missing -> OOV."""

    def __init__(self, vocabs: Mapping[str, Mapping[str, int]], item_features: Sequence[str]):
        self.vocabs = vocabs
        self.item_features = tuple(item_features)
        self._side_pos = {f: SIDE_FIELDS.index(f) for f in self.item_features if f != F.ITEM}

    def value(self, e: Event, feature: str) -> str:
        return e.item if feature == F.ITEM else e.sides[self._side_pos[feature]]

    def ids(self, events: Sequence[Event], feature: str) -> list[int]:
        vocab = self.vocabs[feature]
        return [vocab.get(self.value(e, feature), F.OOV_ID) for e in events]


def recent_distinct(
    history: Sequence[Event],
    end: int,
    start_ts: int,
    values: Mapping[str, Callable[[Event], Hashable | None]],
    cfg: SessionConfig,
) -> dict[str, list]:
    """Long-term bags for a session starting at `start_ts`, one per entry of `values`.

    `history[:end]` are the user's sorted events before the session. Events with
    `start_ts - long_term_days * DAY <= timestamp < start_ts` count; each bag keeps the most recent
    `long_term_size` distinct values (`values[f](event)`; None is skipped), most recent first.
    """
    lo = start_ts - cfg.long_term_days * DAY
    bags: dict[str, list] = {f: [] for f in values}
    seen: dict[str, set] = {f: set() for f in values}
    open_features = set(values)
    for i in range(end - 1, -1, -1):
        e = history[i]
        if e.timestamp >= start_ts:
            continue
        if e.timestamp < lo:
            break
        for f in list(open_features):
            v = values[f](e)
            if v is None or v in seen[f]:
                continue
            seen[f].add(v)
            bags[f].append(v)
            if len(bags[f]) >= cfg.long_term_size:
                open_features.discard(f)
        if not open_features:
            break
    return bags


def long_term_bags(
    history: Sequence[Event],
    end: int,
    start_ts: int,
    enc: Encoder,
    cfg: SessionConfig,
) -> dict[str, list[int]]:
    """`recent_distinct` over vocabulary ids of the encoder's item features."""
    values = {
        f: (lambda e, f=f: enc.vocabs[f].get(enc.value(e, f), F.OOV_ID)) for f in enc.item_features
    }
    return recent_distinct(history, end, start_ts, values, cfg)


def _base_record(user, profile_ids, bags, enc, seq) -> dict:
    rec = {F.USER_ID: user, F.LENGTH: len(seq)}
    for f in enc.item_features:
        rec[F.short_key(f)] = enc.ids(seq, f)
        rec[F.long_key(f)] = bags[f]
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
    sessions = sessionize(events, cfg)
    start = 0
    n_next = cfg.next_n
    for s in sessions:
        if len(s) >= cfg.min_session_length:
            bags = long_term_bags(events, start, s[0].timestamp, enc, cfg)
            items = enc.ids(s, F.ITEM)
            rec = _base_record(user, profile_ids, bags, enc, s[:-1])
            rec[F.LABEL] = items[1:]
            nn = []
            for t in range(len(s) - 1):
                nxt = items[t + 1 : t + 1 + n_next]
                nn.extend(nxt + [F.PAD_ID] * (n_next - len(nxt)))
            rec[F.LABEL_NEXT_N] = nn
            records.append(rec)
        start += len(s)
    return records, [len(s) for s in sessions]


def query_record(
    user: str,
    fed: Sequence[Event],
    truth: Sequence[str],
    enc: Encoder,
    cfg: SessionConfig,
    profile_ids: Mapping[str, int],
) -> dict | None:
    """An evaluation record: the latest session of `fed` as the short-term sequence, the long-term
    bags before it, the raw ground-truth ids, and the distinct raw ids of everything fed (what a
    "history excluded" ranking leaves out). None when nothing is fed or nothing is true."""
    if not fed or not truth:
        return None
    start = query_start(fed, cfg)
    last = fed[start:]
    bags = long_term_bags(fed, start, last[0].timestamp, enc, cfg)
    rec = _base_record(user, profile_ids, bags, enc, last)
    rec[F.TRUTH] = list(truth)
    rec[F.HISTORY] = distinct_items(fed)
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


def split_loo(events: Sequence[Event]):
    """Leave-one-out. Returns (train events, fed events, truth items)."""
    if len(events) < 3:
        return list(events), [], []
    return list(events[:-1]), list(events[:-1]), [events[-1].item]


def day_start(ts: int) -> int:
    return ts - ts % DAY
