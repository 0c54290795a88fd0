"""The retrieval service, through a real HTTP client against a running server."""

import concurrent.futures
import json
import socket
import threading
import time

import httpx
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


def test_service_scores_match_the_retriever(base_url, retriever):
    req = {"events": events(retriever, 3), "k": 10, "profile": {"age": "3", "gender": "1"}}
    direct = retriever.retrieve([serving.RetrieveRequest.model_validate(req)])[0]
    assert httpx.post(f"{base_url}/v1/retrieve", json=req).json()["items"] == direct["items"]


def test_exclude_seen(base_url, retriever):
    evs = events(retriever, 4)
    r = httpx.post(f"{base_url}/v1/retrieve", json={"events": evs, "k": 50, "exclude_seen": True})
    assert not {e["item"] for e in evs} & set(r.json()["items"])


def test_unknown_ids_are_oov_not_errors(base_url):
    req = {
        "events": [{"item": "no-such-item", "brand": "no-such-brand"}],
        "profile": {"age": "999"},
    }
    r = httpx.post(f"{base_url}/v1/retrieve", json=req)
    assert r.status_code == 200 and len(r.json()["items"]) == 100


def test_empty_history_falls_back_to_popular(base_url, retriever):
    r = httpx.post(f"{base_url}/v1/retrieve", json={"events": [], "k": 5})
    assert r.status_code == 200
    assert r.json()["fallback"] is True
    assert r.json()["items"] == retriever.export.item_ids[:5]


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
