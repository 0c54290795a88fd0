"""Session data published as SR-GNN's pickles, as the Diginetica CSV that prepare.py reads.

Many session-based recommendation repositories ship their preprocessed data sets (Diginetica,
Tmall, ...) as SR-GNN's `train.txt` / `test.txt`: a pickled pair `(sessions, targets)`, each
session a list of item ids and its target the click after them. This writes each session with its
target as one anonymous session of `prepare.py --format diginetica`
(`sessionId;userId;itemId;timeframe;eventdate`), clicks `click_seconds` apart and sessions one
after the other in the file's order, so that leave-one-out and the time protocol both apply:

    python benchmarks/session_pickle.py train.txt views.csv
    python ../shared/bench/prepare.py --format diginetica --input views.csv --out SPLIT

The pickle is read with no class allowed (lists and ints only): a file from elsewhere cannot run
code here.
"""

from __future__ import annotations

import argparse
import datetime
import io
import pickle

START = datetime.date(2016, 1, 1)


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"{module}.{name}: only lists of ints are read")


def load(data: bytes) -> list[list[int]]:
    """Each session with its target appended: [[i1, ..., in, target], ...]."""
    pair = _PlainUnpickler(io.BytesIO(data)).load()
    seqs = (list, tuple)
    if not (
        isinstance(pair, seqs)
        and len(pair) == 2
        and all(isinstance(x, seqs) for x in pair)
        and len(pair[0]) == len(pair[1])
    ):
        raise ValueError("expected a pickled pair (sessions, targets) of equal length")
    sessions, targets = pair
    return [[*map(int, s), int(t)] for s, t in zip(sessions, targets)]


def rows(sessions: list[list[int]], click_seconds: int = 60):
    """(session id, item, timeframe in ms, date) per click. Session k starts at k times the
    longest session's span, so no two sessions overlap and ids follow time."""
    span = click_seconds * max((len(s) for s in sessions), default=1)
    for k, session in enumerate(sessions):
        for j, item in enumerate(session):
            t = k * span + j * click_seconds
            day, second = divmod(t, 86_400)
            date = (START + datetime.timedelta(days=day)).isoformat()
            yield k + 1, item, second * 1000, date


def write(src: str, dst: str, click_seconds: int = 60) -> int:
    with open(src, "rb") as f:
        sessions = load(f.read())
    n = 0
    with open(dst, "w") as out:
        out.write("sessionId;userId;itemId;timeframe;eventdate\n")
        for sid, item, ms, date in rows(sessions, click_seconds):
            out.write(f"{sid};NA;{item};{ms};{date}\n")
            n += 1
    return n


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("pickle", help="SR-GNN's train.txt / test.txt: pickled (sessions, targets)")
    p.add_argument("csv", help="output, prepare.py's diginetica format")
    p.add_argument("--click_seconds", type=int, default=60)
    a = p.parse_args(argv)
    print(f"{write(a.pickle, a.csv, a.click_seconds):,} clicks -> {a.csv}")


if __name__ == "__main__":
    main()
