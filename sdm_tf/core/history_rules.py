"""History rules: where the user's own items go in a ranked list (pure; no TensorFlow).

Validation (`train.ranks`), the test predictions (`train.predict`, `launch.bench_lib`) and the
service (`serving.service`) all take the rules from here.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence


def recent_first(history: Sequence[str]) -> list[str]:
    """Distinct items of a time-ordered history, the most recently seen first."""
    return list(dict.fromkeys(reversed(history)))


def frequent_first(history: Sequence[str]) -> list[str]:
    """Distinct items of a time-ordered history, the most often seen first, the most recently
    seen first among equals (S-POP / P-TopFreq, the repeat-consumption baseline)."""
    order = recent_first(history)
    counts = collections.Counter(history)
    return sorted(order, key=lambda item: -counts[item])  # stable: recency breaks ties


# How each "first"-type history rule orders the user's own items.
HEAD_ORDERS = {"first": recent_first, "frequent": frequent_first}


def history_first(
    history: Sequence[str], ranked: Sequence[str], k: int, rule: str = "first"
) -> list[str]:
    """The "first" history rule: the user's own items, most recently seen first, then `ranked`
    without them; k items at most. "frequent": the same with the user's own items the most often
    seen first (`frequent_first`). The same for every system ranked and for the service (the
    history is the request's, whether or not a system's catalogue has the item). On click logs
    users come back to what they saw (the Taobao sample's validation day: 59 % of the users click
    again an item of their history), which neither an item-to-item nor a user-vector score ranks
    on its own."""
    return with_head(HEAD_ORDERS[rule](history), ranked, k)


def with_head(head: Sequence[str], ranked: Sequence[str], k: int) -> list[str]:
    """`head` (cut at k), then `ranked` without it: k items at most."""
    head = list(head)[:k]
    seen = set(head)
    return head + [i for i in ranked if i not in seen][: k - len(head)]


# The rules a system applies while it ranks: the history ranked as any item, or never returned.
RANKING_RULES = ("kept", "excluded")


def under_rule(
    lists: Mapping[str, Sequence[str]], histories: Mapping[str, Sequence[str]], k: int, rule: str
) -> dict[str, list[str]]:
    """Each user's list under a history rule. "kept" and "excluded" leave the lists as they are
    (the system ranked them under that rule); "first" and "frequent" put the user's history
    (`histories`, in time order; none if absent) ahead of the list (`history_first`)."""
    if rule in RANKING_RULES:
        return {u: list(items) for u, items in lists.items()}
    if rule not in HEAD_ORDERS:
        raise ValueError(
            f"history rule must be one of {RANKING_RULES + tuple(HEAD_ORDERS)}, got {rule!r}"
        )
    return {u: history_first(histories.get(u, ()), items, k, rule) for u, items in lists.items()}
