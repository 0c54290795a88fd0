"""Peak resident memory of a process and of its descendants, sampled from /proc (Linux).

`getrusage` gives one number per process family (self, or the largest waited-for child) and
cannot tell a runner's own buffers from its workers'. This samples every `interval` seconds:

    with RssSampler() as s:
        run_pipeline()
    s.peaks  # {"self": GiB, "largest_child": GiB, "all": GiB, "children": n}

"all" sums the resident sets of the whole tree at one instant (shared pages counted once per
process; the Beam workers are spawned interpreters, so little is shared). A process that lives
less than one interval can be missed: a lower bound, fine for multi-second jobs.
"""

from __future__ import annotations

import os
import threading

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes(pid: int) -> int:
    """Resident bytes of one process; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0  # gone between the listing and the read


def _parents() -> dict[int, int]:
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
                out[int(name)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return out


def descendants(root: int) -> list[int]:
    parents = _parents()
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


class RssSampler:
    def __init__(self, interval: float = 0.25, root: int | None = None):
        self.interval = interval
        self.root = root or os.getpid()
        self._stop = threading.Event()
        self._self = self._all = 0
        self._by_pid: dict[int, int] = {}
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def sample(self) -> None:
        own = rss_bytes(self.root)
        kids = descendants(self.root)
        sizes = [rss_bytes(p) for p in kids]
        for pid, size in zip(kids, sizes):
            self._by_pid[pid] = max(self._by_pid.get(pid, 0), size)
        self._self = max(self._self, own)
        self._all = max(self._all, own + sum(sizes))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> RssSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def peak_of(self, pid: int) -> float:
        """GiB, the largest resident set seen of one descendant."""
        return self._by_pid.get(pid, 0) / 2**30

    @property
    def peaks(self) -> dict:
        gib = 2**30
        return {
            "self": round(self._self / gib, 2),
            # The largest of each child's peak: the same as the peak of the largest child.
            "largest_child": round(max(self._by_pid.values(), default=0) / gib, 2),
            "all": round(self._all / gib, 2),
            "children": len(self._by_pid),
        }
