"""The service against the offline ranking on real data: every test user of a bench_split run.

`launch.bench_split` ranks each test user's history (the split's `test_queries.csv`, built into
examples by the pipeline) with its model and writes `predictions.jsonl`. This sends the same raw
events, user by user, as requests to the serving path (the export's SavedModel behind
`build_query`, a flat index, the history rule bench_split chose as the request's flags) and
compares the top K of both, to the list. Where the two disagree, the service and the pipeline do
not build the same query from the same events (the rule of one query builder, on your data):

    python -m launch.export --data_dir RUN/data --model_dir RUN/model_final --export_dir EXPORT
    python benchmarks/serving_parity.py --split SPLIT --run_dir RUN --export_dir EXPORT

Without `--url` the requests go to a `Retriever` in this process; with it (a running
`launch.serve` on the same export, `--index flat`), over HTTP to `/v1/retrieve/batch`. Users
whose events hold no item the model knows get the most popular items under the rule on both
sides; they are counted apart, and must be identical. Two lists that differ
only in the order of near-equal scores (within `--tolerance`, relative) count as tied, not as a
mismatch: the tower's float sums differ in the last bits between batch sizes (a Beauty user's
vector by 8e-7 of a norm of 18, batched or alone), enough to swap two items whose scores are
9e-7 apart. Exits 1 on a mismatch.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import os
import sys
import urllib.parse
from collections.abc import Callable, Sequence

from sdm_tf.core.events import SIDE_FIELDS
from sdm_tf.core.split_files import read_truth

# bench_split's history rule -> the request's flags (`service.RetrieveRequest`).
FLAGS = {
    "kept": {},
    "excluded": {"exclude_seen": True},
    "first": {"history_first": True},
    "frequent": {"history_first": True, "history_order": "frequent"},
}
# The log's fields a request event carries besides item and timestamp (`service.EventIn`).
SIDES = ("session_id", *SIDE_FIELDS)


def requests_of(queries_csv: str, rule: str, k: int) -> dict[str, dict]:
    """user -> the request body for the user's raw query events (file order), under `rule`."""
    events: dict[str, list[dict]] = {}
    with open(queries_csv, newline="") as f:
        for row in csv.DictReader(f):
            event = {"item": row["item_id"], "timestamp": int(float(row["timestamp"]))}
            event.update({s: row[s] for s in SIDES if row.get(s)})
            events.setdefault(row["user_id"], []).append(event)
    return {u: {"user_id": u, "events": e, "k": k, **FLAGS[rule]} for u, e in events.items()}


def near_tie_blocks(scores: Sequence[float | None], tolerance: float) -> list[tuple[int, int]]:
    """[lo, hi) runs of positions whose neighbouring scores differ by at most
    tolerance * max(1, |score|). A position without a score (the user's own items that a
    history-first rule puts ahead) is a run of its own."""

    def close(a: float | None, b: float | None) -> bool:
        return a is not None and b is not None and abs(a - b) <= tolerance * max(1.0, abs(b))

    blocks, lo = [], 0
    for p in range(1, len(scores) + 1):
        if p == len(scores) or not close(scores[p - 1], scores[p]):
            blocks.append((lo, p))
            lo = p
    return blocks


def tied(served: Sequence[str], scores: Sequence[float], ours: Sequence[str], tol: float) -> bool:
    """Whether `ours` (k items) is `served` (k or more, with scores) up to the order of near-ties:
    each of our items sits in the served list's near-tie run of its own position."""
    for lo, hi in near_tie_blocks(scores, tol):
        if lo >= len(ours):
            break
        if not set(ours[lo:hi]) <= set(served[lo:hi]):
            return False
    return len(ours) <= len(served)


def compare(
    ours: dict[str, list[str]], served: dict[str, dict], k: int, tolerance: float
) -> dict[str, int | float | list]:
    """Counts of identical and near-tie top-k lists over users with a model query, identical
    lists over the fallbacks, and the users whose lists differ (either kind)."""
    out = dict.fromkeys(["users", "identical", "tied", "fallback_users", "fallback_identical"], 0)
    differ = []
    for user, answer in served.items():
        a, b = answer["items"], ours[user][:k]
        same = a[:k] == b
        if answer["fallback"]:  # popularity under the rule on both sides: no scores, no ties
            out["fallback_users"] += 1
            out["fallback_identical"] += same
        else:
            out["users"] += 1
            out["identical"] += same
            if not same and tied(a, answer["scores"], b, tolerance):
                out["tied"] += 1
                continue
        if not same:
            differ.append(user)
    out["differ"] = len(differ)
    out["differing_users"] = differ[:10]
    return out


def in_process(export_dir: str) -> Callable[[Sequence[dict]], list[dict]]:
    from sdm_tf.serving import service
    from sdm_tf.serving.export import Export

    retriever = service.Retriever(Export(export_dir))

    def call(bodies):
        return retriever.retrieve([service.RetrieveRequest(**b) for b in bodies])

    return call


def over_http(url: str) -> Callable[[Sequence[dict]], list[dict]]:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=60)

    def call(bodies):
        payload = json.dumps({"requests": list(bodies)}).encode()
        conn.request("POST", "/v1/retrieve/batch", payload, {"Content-Type": "application/json"})
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"{url}: HTTP {response.status}: {body[:500]!r}")
        return json.loads(body)["results"]

    return call


def run(
    split: str,
    run_dir: str,
    export_dir: str,
    url: str | None = None,
    k: int = 50,
    batch: int = 64,
    tolerance: float = 1e-5,
) -> dict:
    with open(os.path.join(run_dir, "bench_summary.json")) as f:
        rule = json.load(f)["history_rule"]
    ours = read_truth(os.path.join(run_dir, "predictions.jsonl"))
    # A few items past k: the near-tie run at the k-th place may go on beyond it.
    bodies = requests_of(os.path.join(split, "test_queries.csv"), rule, k + 10)
    missing = set(ours) - set(bodies)
    if missing:  # users bench_split ranked from no events: not a query this tool can send
        raise ValueError(f"{len(missing)} ranked users have no events in test_queries.csv")
    call = over_http(url) if url else in_process(export_dir)
    users = sorted(ours)
    served = {}
    for i in range(0, len(users), batch):
        chunk = users[i : i + batch]
        served.update(zip(chunk, call([bodies[u] for u in chunk]), strict=True))
    return {
        "history_rule": rule,
        "k": k,
        "tolerance": tolerance,
        **compare(ours, served, k, tolerance),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--split", required=True, help="the prepare.py split bench_split ran on")
    p.add_argument("--run_dir", required=True, help="bench_split's --output_dir")
    p.add_argument("--export_dir", required=True, help="launch.export of the run's model")
    p.add_argument("--url", default=None, help="a running launch.serve (default: in process)")
    p.add_argument("--k", type=int, default=50)
    p.add_argument("--batch", type=int, default=64, help="requests per call")
    p.add_argument("--tolerance", type=float, default=1e-5, help="near-tie, relative")
    a = p.parse_args(argv)
    result = run(a.split, a.run_dir, a.export_dir, a.url, a.k, a.batch, a.tolerance)
    print(json.dumps(result, indent=1))
    ok = result["differ"] == 0 and result["users"] > 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
