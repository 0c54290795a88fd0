"""The retrieval service, through a real HTTP client against a running server."""

import concurrent.futures
import json
import socket
import threading
import time

import httpx2 as httpx
import pytest
import uvicorn

from sdm_tf.serving import service as serving
from sdm_tf.serving.export import Export


@pytest.fixture(scope="module")
def retriever(export_dir):
    return serving.Retriever(Export(str(export_dir)))


@pytest.fixture(scope="module")
def base_url(retriever):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = serving.create_app(retriever, max_body_bytes=64 * 1024)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert time.time() < deadline, "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def events(retriever, n=5, t0=1_512_000_000, gap=30):
    return [{"item": retriever.export.item_ids[i], "timestamp": t0 + gap * i} for i in range(n)]


def test_health(base_url, retriever):
    r = httpx.get(f"{base_url}/health")
    assert r.status_code == 200
    assert r.json()["items"] == len(retriever.export.item_ids)


def test_good_request(base_url, retriever):
    r = httpx.post(f"{base_url}/v1/retrieve", json={"events": events(retriever), "k": 25})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["items"]) == 25 and len(set(body["items"])) == 25
    assert body["scores"] == sorted(body["scores"], reverse=True)
    assert body["fallback"] is False
    # Each answer item carries its side values from the export's item table.
    assert len(body["sides"]) == 25
    for item, sides in zip(body["items"], body["sides"]):
        want = {k: v for k, v in retriever.export.item_sides[item].items() if v}
        assert sides == want and "category" in sides


def test_service_scores_match_the_retriever(base_url, retriever):
    req = {"events": events(retriever, 3), "k": 10, "profile": {"age": "3", "gender": "1"}}
    direct = retriever.retrieve([serving.RetrieveRequest.model_validate(req)])[0]
    assert httpx.post(f"{base_url}/v1/retrieve", json=req).json()["items"] == direct["items"]


def test_exclude_seen(base_url, retriever):
    evs = events(retriever, 4)
    r = httpx.post(f"{base_url}/v1/retrieve", json={"events": evs, "k": 50, "exclude_seen": True})
    assert not {e["item"] for e in evs} & set(r.json()["items"])


def test_history_first(base_url, retriever):
    """The request's items, most recent first, then what exclude_seen would have returned."""
    evs = events(retriever, 4)
    evs = [{**e, "timestamp": t} for e, t in zip(evs, (10, 40, 20, 30))]  # sent out of order
    body = {"events": evs, "k": 8}
    excluded = httpx.post(f"{base_url}/v1/retrieve", json={**body, "exclude_seen": True}).json()
    first = httpx.post(f"{base_url}/v1/retrieve", json={**body, "history_first": True}).json()
    by_time = [evs[i]["item"] for i in (1, 3, 2, 0)]  # timestamps 40, 30, 20, 10
    head = list(dict.fromkeys(by_time))
    assert first["items"] == head + excluded["items"][: 8 - len(head)]
    assert first["scores"][: len(head)] == [None] * len(head)
    assert first["scores"][len(head) :] == excluded["scores"][: 8 - len(head)]
    # "frequent": the item sent twice goes ahead of the more recent ones (another query, so
    # its own excluded ranking behind).
    evs.append({**evs[0], "timestamp": 5})
    body = {"events": evs, "k": 8}
    excluded = httpx.post(f"{base_url}/v1/retrieve", json={**body, "exclude_seen": True}).json()
    body.update(history_first=True, history_order="frequent")
    often = httpx.post(f"{base_url}/v1/retrieve", json=body).json()
    twice = evs[0]["item"]
    tail = excluded["items"][: 8 - len(head)]
    assert often["items"] == [twice, *[i for i in head if i != twice], *tail]
    bad = httpx.post(f"{base_url}/v1/retrieve", json={**body, "history_order": "often"})
    assert bad.status_code == 422


def test_unknown_ids_are_not_errors(base_url, retriever):
    # An unknown item is dropped (the pipeline drops items it has no vocabulary for), an
    # unknown brand or profile value is OOV: a request of unknown items only gets the fallback.
    req = {
        "events": [{"item": "no-such-item", "brand": "no-such-brand"}],
        "profile": {"age": "999"},
    }
    r = httpx.post(f"{base_url}/v1/retrieve", json=req)
    assert r.status_code == 200 and len(r.json()["items"]) == 100 and r.json()["fallback"]
    req["events"].append({"item": retriever.export.item_ids[0], "brand": "no-such-brand"})
    r = httpx.post(f"{base_url}/v1/retrieve", json=req)
    assert r.status_code == 200 and not r.json()["fallback"]


def test_empty_history_falls_back_to_popular(base_url, retriever):
    r = httpx.post(f"{base_url}/v1/retrieve", json={"events": [], "k": 5})
    assert r.status_code == 200
    assert r.json()["fallback"] is True
    assert r.json()["items"] == retriever.export.item_ids[:5]


def test_the_fallback_follows_the_history_rule(base_url, retriever):
    # Items the model does not know leave no query, so popularity answers. Under a history-first
    # rule the request's own items still come first (most recent, or most often seen, first),
    # as bench_split ranks such users and as it does when the request has a known item too.
    popular = retriever.export.item_ids[:5]
    events = [
        {"item": "gone-a", "timestamp": 100},
        {"item": "gone-a", "timestamp": 150},
        {"item": "gone-c", "timestamp": 200},
        {"item": "gone-b", "timestamp": 300},
    ]
    body = {"events": events, "k": 5, "history_first": True}
    recent = httpx.post(f"{base_url}/v1/retrieve", json=body).json()
    assert recent["fallback"] is True and recent["scores"] == [None] * 5
    assert recent["items"] == ["gone-b", "gone-c", "gone-a", *popular[:2]]
    often = httpx.post(f"{base_url}/v1/retrieve", json={**body, "history_order": "frequent"})
    assert often.json()["items"] == ["gone-a", "gone-b", "gone-c", *popular[:2]]
    for flags in ({"history_first": False}, {"history_first": False, "exclude_seen": True}):
        answer = httpx.post(f"{base_url}/v1/retrieve", json={**body, **flags}).json()
        assert answer["items"] == popular and answer["fallback"] is True


@pytest.mark.parametrize(
    "body,status",
    [
        (b"{not json", 400),
        (b'{"events": "abc"}', 422),
        (b'{"events": [{"item": 5}]}', 422),
        (b'{"events": [{"item": ""}]}', 422),
        (b'{"k": 0}', 422),
        (b'{"k": 100000}', 422),
        (b'{"colour": 1}', 422),
        (b'{"profile": {"shoe_size": "9"}, "events": [{"item": "x"}]}', 422),
        (b'{"long_term": {"colour": ["red"]}, "events": [{"item": "x"}]}', 422),
    ],
)
def test_bad_requests_get_a_4xx_with_a_message(base_url, body, status):
    r = httpx.post(
        f"{base_url}/v1/retrieve", content=body, headers={"content-type": "application/json"}
    )
    assert r.status_code == status
    assert "error" in r.json()


def test_oversized_requests_are_refused(base_url):
    too_many = {"events": [{"item": "x"}] * (serving.MAX_EVENTS + 1)}
    assert httpx.post(f"{base_url}/v1/retrieve", json=too_many).status_code == 422
    huge = json.dumps({"events": [{"item": "x" * 200}] * 500})  # ~100 KB > the 64 KB limit
    r = httpx.post(
        f"{base_url}/v1/retrieve", content=huge, headers={"content-type": "application/json"}
    )
    assert r.status_code == 413


def test_oversized_chunked_bodies_are_refused_without_reading_them_whole(retriever):
    # Straight on the ASGI app: a body without Content-Length arrives in 8 KB messages; the
    # app must answer 413 after reading just past its 64 KB limit, not after all 1 MB.
    import asyncio

    app = serving.create_app(retriever, max_body_bytes=64 * 1024)
    received, sent = [0], []

    async def receive():
        received[0] += 1
        return {"type": "http.request", "body": b"x" * 8192, "more_body": received[0] < 128}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/retrieve", "raw_path": b"/v1/retrieve",
        "query_string": b"", "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "root_path": "",
    }  # fmt: skip
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413
    assert received[0] <= 9  # 9 x 8 KB > 64 KB


@pytest.mark.parametrize(
    "serialize,kind,gpus,peak_expected",
    [
        (None, None, 0, 4),  # no config: a CPU index
        (True, None, 0, 1),
        (None, "flat", 0, 4),  # faiss finds no GPU: the flat index stays on the CPU
        (None, "flat", 1, 1),  # a GPU index: one search at a time
        (None, "hnsw", 1, 4),  # FAISS has no GPU HNSW
    ],
)
def test_only_gpu_index_searches_are_serialised(
    retriever, monkeypatch, serialize, kind, gpus, peak_expected
):
    inside, peak, lock = [0], [0], threading.Lock()
    real = serving.I.search

    def slow_search(index, queries, k):
        with lock:
            inside[0] += 1
            peak[0] = max(peak[0], inside[0])
        time.sleep(0.2)
        with lock:
            inside[0] -= 1
        return real(index, queries, k)

    monkeypatch.setattr(serving.I, "search", slow_search)
    monkeypatch.setattr(serving.I, "num_gpus", lambda: gpus)
    cfg = kind and serving.I.IndexConfig(kind=kind)
    r = serving.Retriever(retriever.export, retriever.index, cfg, serialize_search=serialize)
    req = serving.RetrieveRequest.model_validate({"events": events(retriever, 2), "k": 5})
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: r.retrieve([req]), range(4)))
    assert peak[0] == peak_expected


def _coalesce(retrieve, ks):
    """One request per k to a Coalescer over `retrieve`: the first, then the others together
    while it runs; returns the results in order."""
    import asyncio

    async def go():
        c = serving.Coalescer(retrieve, max_batch=8)
        reqs = [serving.RetrieveRequest.model_validate({"events": [], "k": k}) for k in ks]
        first = asyncio.ensure_future(c.submit(reqs[0]))
        await asyncio.sleep(0.05)  # the first is in the tower when the others arrive
        return [await first] + await asyncio.gather(*(c.submit(r) for r in reqs[1:]))

    return asyncio.run(go())


def test_concurrent_requests_are_coalesced_into_batches():
    sizes = []

    def retrieve(requests):
        sizes.append(len(requests))
        time.sleep(0.2 if len(sizes) == 1 else 0)  # the others queue meanwhile
        return [{"k": r.k} for r in requests]

    results = _coalesce(retrieve, [1, 2, 3, 4, 5])
    assert results == [{"k": k} for k in [1, 2, 3, 4, 5]]  # each its own answer
    assert sizes == [1, 4]  # the first went alone, the four behind it together


def test_a_bad_request_fails_alone_in_its_batch():
    def retrieve(requests):
        time.sleep(0.1)
        if any(r.k == 13 for r in requests):
            raise ValueError("unlucky")
        return [{"k": r.k} for r in requests]

    results = _coalesce(retrieve, [1, 2, 13, 4])
    assert results[:2] == [{"k": 1}, {"k": 2}] and results[3] == {"k": 4}
    assert isinstance(results[2], ValueError) and "unlucky" in str(results[2])


def test_warm_up_runs_every_batch_size_the_coalescer_can_form(retriever, monkeypatch):
    sizes = []
    monkeypatch.setattr(retriever, "vectors", lambda queries: sizes.append(len(queries)))
    retriever.warm_up(64)
    assert sizes == [1, 2, 4, 8, 16, 32, 64]
    sizes.clear()
    retriever.warm_up(5)  # a batch of 5 runs padded to 8
    assert sizes == [1, 2, 4, 8]


def test_sixteen_concurrent_clients_get_their_own_answers(base_url, retriever):
    """Coalesced requests of different lengths and k come back to the right client, equal to
    what each gets alone."""
    bodies = [{"events": events(retriever, 1 + i % 7, gap=30 + i), "k": 5 + i} for i in range(16)]
    alone = [
        retriever.retrieve([serving.RetrieveRequest.model_validate(b)])[0]["items"] for b in bodies
    ]

    def one(i):
        with httpx.Client(timeout=30) as client:
            return [client.post(f"{base_url}/v1/retrieve", json=bodies[i]).json() for _ in range(3)]

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(one, range(16)))
    for i, got in enumerate(answers):
        assert [a["items"] for a in got] == [alone[i]] * 3


def test_batch_endpoint(base_url, retriever):
    reqs = [{"events": events(retriever, 3), "k": 7}, {"events": [], "k": 3}]
    r = httpx.post(f"{base_url}/v1/retrieve/batch", json={"requests": reqs})
    assert r.status_code == 200
    results = r.json()["results"]
    assert [len(x["items"]) for x in results] == [7, 3]
    single = httpx.post(f"{base_url}/v1/retrieve", json=reqs[0]).json()
    assert results[0]["items"] == single["items"]


def test_fifty_concurrent_clients(base_url, retriever):
    def one(i):
        with httpx.Client(timeout=30) as client:
            codes = []
            for j in range(4):
                body = {"events": events(retriever, 1 + (i + j) % 7), "k": 50}
                if (i + j) % 5 == 0:
                    body = b"{broken"
                    codes.append(client.post(f"{base_url}/v1/retrieve", content=body).status_code)
                else:
                    codes.append(client.post(f"{base_url}/v1/retrieve", json=body).status_code)
            return codes

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        codes = [c for cs in pool.map(one, range(50)) for c in cs]
    assert len(codes) == 200
    assert all(c < 500 for c in codes)
    assert codes.count(200) >= 150
    assert httpx.get(f"{base_url}/health").status_code == 200  # still alive


def test_query_uses_the_session_rules(retriever):
    ids = retriever.export.item_ids
    evs = [
        {"item": ids[0], "timestamp": 1000},
        {"item": ids[1], "timestamp": 1100},
        {"item": ids[2], "timestamp": 5000},  # > 10 minutes later: a new session
        {"item": ids[3], "timestamp": 5060},
    ]
    q = retriever.query(serving.RetrieveRequest.model_validate({"events": evs}))
    assert q["short"]["item"] == [ids[2], ids[3]]
    assert q["long"]["item"] == [ids[1], ids[0]]  # most recent first
    unsorted = retriever.query(serving.RetrieveRequest.model_validate({"events": evs[::-1]}))
    assert unsorted == q


def test_the_query_client_gets_the_services_answer(base_url, retriever):
    from launch import query

    assert query.wait_healthy(base_url, 10)["status"] == "ok"
    body = {"events": events(retriever), "k": 7}
    answer, timings = query.retrieve(base_url, body, repeats=2)
    assert answer == httpx.post(f"{base_url}/v1/retrieve", json=body).json()
    assert len(timings) == 2 and min(timings) > 0
    with pytest.raises(RuntimeError, match="HTTP 422"):
        query.retrieve(base_url, {"events": [], "k": 0}, repeats=1)
