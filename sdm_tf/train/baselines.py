"""Popularity and item-based CF on a prepare.py split, the references SDM is measured against.

Pure Python (no TensorFlow), and the same algorithm as `../shared/bench/itemcf.py`, so that its
numbers can be reproduced inside the project on any split:

* popularity: items by training frequency;
* item-CF: cosine co-occurrence of items within `window` neighbouring events of a user's
  time-ordered training history; a user is scored from the last `recent` fed events, the r-th most
  recent weighted 1 / (1 + r), each contributing its `neighbours` strongest co-occurrences; popular
  items fill the tail.

With `exclude_history`, nothing the user was fed is returned (the "excluded" rule of
`sdm_tf.train.validation`).
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable, Mapping, Sequence


def popularity(train: Mapping[str, Sequence[str]]) -> list[str]:
    """Items by descending training frequency (ties: first seen first)."""
    counts = collections.Counter(i for events in train.values() for i in events)
    return [i for i, _ in counts.most_common()]


def _fill(ranked: list[str], popular: Sequence[str], exclude: set, k: int) -> list[str]:
    seen = set(ranked) | exclude
    return ranked + [j for j in popular if j not in seen][: k - len(ranked)]


def popularity_predictions(
    popular: Sequence[str],
    queries: Mapping[str, Sequence[str]],
    users: Iterable[str],
    k: int = 100,
    exclude_history: bool = False,
) -> dict[str, list[str]]:
    """The `popular` items (best first) for every user, less the user's history if excluded."""
    out = {}
    for u in users:
        hist = set(queries.get(u, ())) if exclude_history else set()
        out[u] = [j for j in popular[: k + len(hist)] if j not in hist][:k]
    return out


class ItemCF:
    """Item-to-item cosine co-occurrence within a sliding window of each user's history."""

    def __init__(self, train: Mapping[str, Sequence[str]], window: int = 5):
        self.count = collections.Counter(i for events in train.values() for i in events)
        self.popular = [i for i, _ in self.count.most_common()]
        self.co: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        for events in train.values():
            n = len(events)
            for a in range(n):
                for b in range(max(0, a - window), min(n, a + window + 1)):
                    if a != b and events[a] != events[b]:
                        self.co[events[a]][events[b]] += 1
        self._neighbours: dict[tuple[str, int], list] = {}

    def neighbours(self, item: str, n: int) -> list[tuple[str, int, float]]:
        """The n strongest co-occurrences of `item`: (item, count, cosine denominator)."""
        key = (item, n)
        if key not in self._neighbours:
            c_i = self.count[item]
            self._neighbours[key] = [
                (j, c, math.sqrt(c_i * self.count[j])) for j, c in self.co[item].most_common(n)
            ]
        return self._neighbours[key]

    def recommend(
        self,
        history: Sequence[str],
        k: int = 100,
        exclude_history: bool = False,
        recent: int = 20,
        neighbours: int = 200,
    ) -> list[str]:
        score: collections.Counter = collections.Counter()
        for r, item in enumerate(reversed(history[-recent:])):
            w = 1.0 / (1 + r)
            for j, c, denom in self.neighbours(item, neighbours):
                score[j] += w * c / denom  # the reference's operation order: equal ties
        hist = set(history) if exclude_history else set()
        ranked = [j for j, _ in score.most_common(k + len(hist)) if j not in hist][:k]
        return _fill(ranked, self.popular, hist, k)


def itemcf_predictions(
    train: Mapping[str, Sequence[str]],
    queries: Mapping[str, Sequence[str]],
    users: Iterable[str],
    k: int = 100,
    exclude_history: bool = False,
) -> dict[str, list[str]]:
    cf = ItemCF(train)
    return {u: cf.recommend(queries.get(u, []), k, exclude_history) for u in users}
