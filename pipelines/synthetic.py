"""A synthetic generator of Taobao-schema behaviour logs: the built-in default data set.

It plants the structure SDM is meant to find, so a model that learns beats popularity on it:

* items in a two-level category tree (top category -> leaf), with brands per top category and
  shops per brand; popularity is Zipf-distributed inside each leaf;
* users with a profile (age bucket, gender, life stage) that tilts which top categories they like;
* long-term interests: each user has a handful of leaf categories (and favourite brands) that recur
  across days, with a slow drift;
* sessions separated by gaps longer than 10 minutes, events inside a session less than 10 minutes
  apart; a session mixes two or three of the user's interests;
* sequential structure: inside an interest, the next item is often one of the previous item's
  "successors" (a fixed, item-specific set), so order matters.

It is deterministic by seed and streams: users are generated one at a time (each from its own
seeded RNG) and written immediately, so 10^7 events never sit in memory together.

Files (Taobao UserBehavior schema plus the side tables the pipeline joins):
  events.csv   user_id,item_id,leaf_category_id,behavior,timestamp   (no header, as UserBehavior)
  items.csv    item_id,leaf_category,category,brand,shop            (header)
  users.csv    user_id,age,gender,life_stage                          (header)
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import os

import numpy as np

DAY = 86400
BEHAVIORS = ("pv", "cart", "fav", "buy")
BEHAVIOR_P = (0.9, 0.05, 0.03, 0.02)


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    num_events: int = 1_000_000
    num_items: int = 20_000
    num_top_categories: int = 20
    leaves_per_category: int = 10
    brands_per_category: int = 25
    shops_per_brand: int = 4
    days: int = 14
    start_timestamp: int = 1511539200  # 2017-11-25 00:00 UTC, as the Taobao data
    events_per_user: float = 100.0  # mean; users = num_events / events_per_user
    interests_per_user: tuple[int, int] = (3, 6)
    session_length_mean: float = 8.0
    successor_prob: float = 0.5
    zipf_exponent: float = 1.1
    drift_per_day: float = 0.1
    seed: int = 0

    @property
    def num_leaves(self) -> int:
        return self.num_top_categories * self.leaves_per_category

    @property
    def num_users(self) -> int:
        return max(1, int(round(self.num_events / self.events_per_user)))


class Catalog:
    """Items, their category tree, brands, shops, popularity and successors."""

    def __init__(self, cfg: SyntheticConfig):
        rng = np.random.default_rng([cfg.seed, 0])
        n, n_leaves = cfg.num_items, cfg.num_leaves
        # Raw ids are shuffled numbers, so nothing downstream can read popularity off them.
        self.item_ids = [str(x) for x in rng.choice(10 * n, size=n, replace=False) + 1000]
        self.leaf_of = rng.integers(0, n_leaves, size=n)
        self.leaf_of[:n_leaves] = np.arange(n_leaves)  # every leaf has an item
        self.top_of_leaf = np.arange(n_leaves) // cfg.leaves_per_category
        top = self.top_of_leaf[self.leaf_of]
        brand_in_cat = rng.integers(0, cfg.brands_per_category, size=n)
        self.brand_of = top * cfg.brands_per_category + brand_in_cat
        self.shop_of = self.brand_of * cfg.shops_per_brand + rng.integers(
            0, cfg.shops_per_brand, size=n
        )
        self.leaf_items: list[np.ndarray] = []
        self.leaf_cdf: list[list[float]] = []
        for leaf in range(n_leaves):
            items = rng.permutation(np.flatnonzero(self.leaf_of == leaf))
            w = 1.0 / np.arange(1, len(items) + 1) ** cfg.zipf_exponent
            self.leaf_items.append(items)
            self.leaf_cdf.append(list(np.cumsum(w / w.sum())))
        # Successors: three items of the same leaf, picked once per item.
        self.successors = np.empty((n, 3), dtype=np.int64)
        for items in self.leaf_items:
            picks = rng.integers(0, len(items), size=(len(items), 3))
            self.successors[items] = items[picks]

    def sample(self, leaf: int, u: float) -> int:
        cdf = self.leaf_cdf[leaf]
        return int(self.leaf_items[leaf][min(bisect.bisect_left(cdf, u), len(cdf) - 1)])


def _user_profile(rng) -> tuple[int, int, int]:
    return int(rng.integers(0, 7)), int(rng.integers(0, 2)), int(rng.integers(0, 5))


def generate_user(cfg: SyntheticConfig, cat: Catalog, user: int, affinity: np.ndarray):
    """One user's profile and events [(item index, timestamp, behavior)], time-ordered."""
    rng = np.random.default_rng([cfg.seed, 1, user])
    age, gender, stage = _user_profile(rng)
    # The profile tilts the top categories (affinity rows are per (gender, age bucket)).
    tops_p = affinity[gender * 7 + age]
    k = int(rng.integers(cfg.interests_per_user[0], cfg.interests_per_user[1] + 1))
    tops = rng.choice(cfg.num_top_categories, size=k, p=tops_p)
    interests = [
        int(t * cfg.leaves_per_category + rng.integers(cfg.leaves_per_category)) for t in tops
    ]
    weights = rng.dirichlet(np.ones(k))
    sessions_per_day = cfg.events_per_user / cfg.session_length_mean / cfg.days
    events = []
    for day in range(cfg.days):
        if rng.random() < cfg.drift_per_day:  # slow drift of long-term interests
            j = int(rng.integers(k))
            t = rng.choice(cfg.num_top_categories, p=tops_p)
            interests[j] = int(t * cfg.leaves_per_category + rng.integers(cfg.leaves_per_category))
        n_sessions = int(rng.poisson(sessions_per_day))
        if not n_sessions:
            continue
        # Session starts: sorted in the day, at least 15 minutes plus a session's span apart.
        starts = np.sort(rng.uniform(0, DAY - 3 * 3600, size=n_sessions))
        t_prev_end = -1e9
        for s0 in starts:
            t = max(float(s0), t_prev_end + 900 + rng.uniform(0, 1800))
            length = 1 + int(rng.geometric(1.0 / cfg.session_length_mean))
            mix = rng.choice(k, size=min(k, int(rng.integers(2, 4))), replace=False, p=weights)
            u = rng.random(length * 3)
            gaps = np.minimum(rng.exponential(45.0, size=length), 540.0)
            beh = rng.choice(len(BEHAVIORS), size=length, p=BEHAVIOR_P)
            cur_interest = int(mix[0])
            prev_item = -1
            for i in range(length):
                if i and u[3 * i] < 0.3:  # switch interest inside the session
                    cur_interest = int(mix[int(u[3 * i + 1] * len(mix)) % len(mix)])
                    prev_item = -1
                leaf = interests[cur_interest]
                if prev_item >= 0 and u[3 * i + 2] < cfg.successor_prob:
                    item = int(cat.successors[prev_item, int(u[3 * i + 1] * 3) % 3])
                else:
                    item = cat.sample(leaf, u[3 * i + 2])
                if i:
                    t += float(gaps[i])
                events.append((item, int(cfg.start_timestamp + day * DAY + t), int(beh[i])))
                prev_item = item
            t_prev_end = t
    return (age, gender, stage), events


def _affinity(cfg: SyntheticConfig) -> np.ndarray:
    rng = np.random.default_rng([cfg.seed, 2])
    return rng.dirichlet(np.full(cfg.num_top_categories, 0.3), size=14)


def write_items(cfg: SyntheticConfig, cat: Catalog, path: str) -> None:
    with open(path, "w") as f:
        f.write("item_id,leaf_category,category,brand,shop\n")
        for i, raw in enumerate(cat.item_ids):
            leaf = int(cat.leaf_of[i])
            f.write(
                f"{raw},L{leaf},C{int(cat.top_of_leaf[leaf])},B{int(cat.brand_of[i])},"
                f"S{int(cat.shop_of[i])}\n"
            )


def generate(cfg: SyntheticConfig, out_dir: str) -> dict:
    """Writes events.csv, items.csv and users.csv; returns counts. Stops at num_events."""
    os.makedirs(out_dir, exist_ok=True)
    cat = Catalog(cfg)
    write_items(cfg, cat, os.path.join(out_dir, "items.csv"))
    affinity = _affinity(cfg)
    n_events = n_users = 0
    with (
        open(os.path.join(out_dir, "events.csv"), "w") as ev,
        open(os.path.join(out_dir, "users.csv"), "w") as us,
    ):
        us.write("user_id,age,gender,life_stage\n")
        for user in itertools.count():
            if n_events >= cfg.num_events:
                break
            (age, gender, stage), events = generate_user(cfg, cat, user, affinity)
            events = events[: cfg.num_events - n_events]
            if not events:
                continue
            uid = str(100000 + user)
            us.write(f"{uid},{age},{gender},{stage}\n")
            ev.write(
                "".join(
                    f"{uid},{cat.item_ids[i]},L{int(cat.leaf_of[i])},{BEHAVIORS[b]},{ts}\n"
                    for i, ts, b in events
                )
            )
            n_events += len(events)
            n_users += 1
    return {"events": n_events, "users": n_users, "items": cfg.num_items}
