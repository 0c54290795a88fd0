"""python -m launch.query --url http://127.0.0.1:8500 --events_csv raw/events.csv --user 100000

Sends one retrieval request built from a user's latest events in a Taobao-schema log and prints
the answer (a small client for the demo and for smoke checks).
"""

import csv
import http.client
import json
import time
import urllib.parse

from absl import flags

from launch import common

URL = flags.DEFINE_string("url", "http://127.0.0.1:8500", "service base URL")
EVENTS_CSV = flags.DEFINE_string(
    "events_csv", None, "UserBehavior-style log (user,item,cat,behavior,ts)"
)
USER = flags.DEFINE_string("user", None, "user id (default: the first user of the log)")
LAST = flags.DEFINE_integer("last", 20, "events to send")
K = flags.DEFINE_integer("top_n", 10, "items to ask for")
WAIT = flags.DEFINE_float("wait", 120.0, "seconds to wait for /health")


def _connect(url: str, timeout: float) -> tuple[http.client.HTTPConnection, str]:
    """One keep-alive connection to the service (the standard library: no client to install),
    and the URL's path prefix."""
    parts = urllib.parse.urlsplit(url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    return kind(parts.hostname, parts.port, timeout=timeout), parts.path.rstrip("/")


def _call(conn, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode("utf-8")
    headers = {} if body is None else {"Content-Type": "application/json"}
    conn.request(method, path, body=data, headers=headers)
    response = conn.getresponse()
    return response.status, response.read()


def wait_healthy(url: str, seconds: float) -> dict:
    deadline = time.time() + seconds
    while True:
        conn, prefix = _connect(url, 2)
        try:
            status, data = _call(conn, "GET", f"{prefix}/health")
            if status == 200:
                return json.loads(data)
        except (OSError, http.client.HTTPException):
            pass
        finally:
            conn.close()
        if time.time() > deadline:
            raise TimeoutError(f"{url} not healthy after {seconds} s")
        time.sleep(0.5)


def retrieve(url: str, body: dict, repeats: int = 3) -> tuple[dict, list[float]]:
    """The service's answer to `body`, sent `repeats` times on one connection (the first also
    pays the tower's compilation): (the last answer, milliseconds per request)."""
    conn, prefix = _connect(url, 30)
    timings = []
    try:
        for _ in range(repeats):
            t = time.perf_counter()
            status, data = _call(conn, "POST", f"{prefix}/v1/retrieve", body)
            timings.append(round(1000 * (time.perf_counter() - t), 1))
            if status != 200:
                raise RuntimeError(f"{url}: HTTP {status}: {data[:500].decode(errors='replace')}")
    finally:
        conn.close()
    return json.loads(data), timings


def main(argv):
    del argv
    common.require(EVENTS_CSV)
    user, events = USER.value, []
    with open(EVENTS_CSV.value, newline="") as f:
        for row in csv.reader(f):
            user = user or row[0]
            if row[0] == user:
                events.append({"item": row[1], "leaf_category": row[2], "timestamp": int(row[4])})
            elif events:
                break
    health = wait_healthy(URL.value, WAIT.value)
    body = {"user_id": user, "events": events[-LAST.value :], "k": K.value}
    answer, timings = retrieve(URL.value, body)
    print(json.dumps({"service": health, "user": user, "sent_events": len(body["events"]),
                      "latency_ms_first_then_warm": timings}))  # fmt: skip
    print(side_by_side(body["events"], answer))


def side_by_side(events: list[dict], answer: dict, rows: int = 10) -> str:
    """The user's latest events (newest first) beside the answer: item, category, score."""
    history = [(e["item"], e.get("leaf_category") or "") for e in reversed(events)][:rows]
    top = [
        (item, sides.get("leaf_category") or sides.get("category", ""), score)
        for item, sides, score in zip(answer["items"], answer["sides"], answer["scores"])
    ][:rows]
    lines = [f"{'recent history (newest first)':<34}  {'answer':<24} {'score':>8}"]
    lines.append(f"{'item':<16} {'category':<17}  {'item':<12} {'category':<11} {'':>8}")
    for i in range(max(len(history), len(top))):
        left = f"{history[i][0]:<16} {history[i][1]:<17}" if i < len(history) else " " * 34
        if i < len(top):
            item, cat, score = top[i]
            shown = "-" if score is None else f"{score:.3f}"  # fallback answers have no score
            right = f"{item:<12} {cat:<11} {shown:>8}"
        else:
            right = ""
        lines.append(f"{left}  {right}")
    return "\n".join(lines)


def entry():
    common.run(main)


if __name__ == "__main__":
    entry()
