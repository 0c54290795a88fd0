"""Online retrieval: request -> user tower (SavedModel) -> FAISS top-N.

`Retriever` holds the loaded export and index and does the work; `create_app` wraps it in a
FastAPI application:

  GET  /health               liveness + what is loaded
  POST /v1/retrieve          one request  -> {"items": [...], "scores": [...], "sides": [...],
                                                "fallback": bool}; sides: each item's side
                                                values from the export (category, brand, ...)
  POST /v1/retrieve/batch    {"requests": [...]} -> {"results": [...]} (one tower call, one search)

A request carries the user's recent events (item, optional timestamp / session id / side values),
and optionally a profile and explicit long-term bags. With timestamps, the events are split by the
same session rules as the pipeline (the latest session is the short-term sequence, the
`long_term_days` before it feed the long-term bags); without, the last `max_session_length`
events are the session. The query is built by the pipeline's own `build_query`: side values come
from the export's item table where it has them, exact duplicates collapse, items the model never
saw are dropped, and unknown side or profile values become OOV inside the SavedModel. A request
with no known item gets the most popular items (`fallback: true`).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sdm_tf.core import features as F
from sdm_tf.core import history_rules as H
from sdm_tf.core import sessions as S
from sdm_tf.core.events import SIDE_FIELDS
from sdm_tf.core.events import Event as LogEvent
from sdm_tf.serving import index as I
from sdm_tf.serving.export import Export, augment_queries

MAX_EVENTS = 1000
MAX_K = 1000
MAX_BATCH = 256
MAX_BODY_BYTES = 1 << 20


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item: str = Field(min_length=1, max_length=256)
    timestamp: int | None = None
    session_id: str | None = Field(default=None, max_length=256)
    leaf_category: str | None = Field(default=None, max_length=256)
    category: str | None = Field(default=None, max_length=256)
    brand: str | None = Field(default=None, max_length=256)
    shop: str | None = Field(default=None, max_length=256)


class RetrieveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: str | None = Field(default=None, max_length=256)
    events: list[EventIn] = Field(default_factory=list, max_length=MAX_EVENTS)
    profile: dict[str, str] = Field(default_factory=dict, max_length=64)
    long_term: dict[str, list[str]] = Field(default_factory=dict, max_length=8)
    k: int = Field(default=100, ge=1, le=MAX_K)
    exclude_seen: bool = False
    # The request's items first, most recent first (score null), then the retrieved items
    # without them: bench_split's "first" history rule, for data where users come back;
    # with history_order "frequent", the most often seen first (its "frequent" rule).
    history_first: bool = False
    history_order: Literal["recent", "frequent"] = "recent"


# history_order -> the history rule of the same order (`history_rules.HEAD_ORDERS`).
HEAD_RULE = {"recent": "first", "frequent": "frequent"}


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    requests: list[RetrieveRequest] = Field(min_length=1, max_length=MAX_BATCH)


class Retriever:
    """Export + index -> top-N for raw requests."""

    def __init__(
        self,
        export: Export,
        index=None,
        index_cfg: I.IndexConfig | None = None,
        serialize_search: bool | None = None,
    ):
        """index, index_cfg: as `index.build` or `index.load` returned them; None: an exact
        index built here, on the GPUs where faiss-gpu finds any. serialize_search: one search at a
        time. None (the default): only for a GPU index (`index.on_gpu`); FAISS CPU searches are
        thread-safe and run concurrently."""
        self.export = export
        self.spec = export.dataset
        self.session_cfg = S.SessionConfig(
            session_gap=self.spec.session_gap,
            max_session_length=max(2, self.spec.max_session_length),
            long_term_days=self.spec.long_term_days,
            long_term_size=self.spec.long_term_size,
        )
        if index is None:
            index_cfg = I.IndexConfig(kind="flat")
            index = I.build(export.augmented_items(), index_cfg)
        self.index = index
        self.index_cfg = index_cfg
        self.popular = list(range(len(export.item_ids)))
        self.known_items = frozenset(export.item_ids)
        if serialize_search is None:  # an index passed without its config is taken as on the CPU
            serialize_search = index_cfg is not None and I.on_gpu(index_cfg)
        self._search_guard = threading.Lock() if serialize_search else contextlib.nullcontext()

    # -- query construction -----------------------------------------------------------------
    def events(self, req: RetrieveRequest) -> list[LogEvent]:
        """A request's events as log events, side values joined with the export's item table
        by the pipeline's rule. Without timestamps every event gets time 0: one session, the
        last `max_session_length` events, no long-term bags."""
        clock = all(e.timestamp is not None for e in req.events)
        return [
            LogEvent(
                "",
                e.item,
                e.timestamp if clock else 0,
                e.session_id or "",
                "",
                S.join_sides(
                    tuple(getattr(e, f) or "" for f in SIDE_FIELDS),
                    self.export.item_sides.get(e.item),
                ),
                ("", i),
            )
            for i, e in enumerate(req.events)
        ]

    def query(self, req: RetrieveRequest) -> dict | None:
        """The raw short-term sequence, long-term bags and profile of one request, by the
        pipeline's query builder (`sdm_tf.core.sessions.build_query`): unknown items and exact
        duplicates are dropped there as in training. None: no known item to build on."""
        features = self.spec.item_features
        unknown = set(req.long_term) - set(features)
        if unknown:
            raise ValueError(
                f"unknown long-term features {sorted(unknown)}; known: {list(features)}"
            )
        unknown = set(req.profile) - set(self.spec.profile_features)
        if unknown:
            raise ValueError(f"unknown profile features {sorted(unknown)}")
        q = S.build_query(self.events(req), self.session_cfg, features, self.known_items)
        if q is None:
            return None
        bags = {f: list(q.long[f]) for f in features}
        for f, values in req.long_term.items():  # explicit bags from the caller
            for v in values:
                if v and v not in bags[f] and len(bags[f]) < self.spec.long_term_size:
                    bags[f].append(v)
        return {
            "short": q.short,
            "long": bags,
            # A missing profile value is OOV, as the pipeline encodes a user without one.
            "profile": {p: req.profile.get(p) or F.OOV_TOKEN for p in self.spec.profile_features},
        }

    def inputs(self, queries: Sequence[dict]) -> dict[str, np.ndarray]:
        """Pads raw queries into the serving signature's arrays ("" = padding), UTF-8 encoded."""
        features = self.spec.item_features
        t = max(len(q["short"][F.ITEM]) for q in queries)
        s = max(1, max(len(q["long"][f]) for q in queries for f in features))
        out = {F.LENGTH: np.array([len(q["short"][F.ITEM]) for q in queries], np.int64)}
        for f in features:
            short = np.full((len(queries), t), b"", dtype=object)
            long = np.full((len(queries), s), b"", dtype=object)
            for b, q in enumerate(queries):
                short[b, : len(q["short"][f])] = [v.encode("utf-8") for v in q["short"][f]]
                long[b, : len(q["long"][f])] = [v.encode("utf-8") for v in q["long"][f]]
            out[F.short_key(f)] = short
            out[F.long_key(f)] = long
        for p in self.spec.profile_features:
            out[F.profile_key(p)] = np.array(
                [q["profile"][p].encode("utf-8") for q in queries], dtype=object
            )
        return out

    def vectors(self, queries: Sequence[dict]) -> np.ndarray:
        """[len(queries), d] user vectors of raw queries (`query`'s output)."""
        return self.export.user_vectors(self.inputs(queries))

    def warm_up(self, max_batch: int = 1) -> float:
        """Runs the tower once per batch size the export compiles for (powers of two up to
        `max_batch`), so that no request pays a compilation; returns the seconds it took."""
        start = time.perf_counter()
        query = self.query(RetrieveRequest(events=[EventIn(item=self.export.item_ids[0])]))
        if query is not None:
            n = 1
            while True:
                self.vectors([query] * n)
                if n >= max_batch:
                    break
                n *= 2
        return time.perf_counter() - start

    def sides(self, items: Sequence[str]) -> list[dict[str, str]]:
        """Each item's side values from the export's item table (the ones it has), so that an
        answer can be read: {"category": ..., "brand": ...} per item."""
        return [{k: v for k, v in self.export.item_sides.get(i, {}).items() if v} for i in items]

    # -- retrieval --------------------------------------------------------------------------
    def retrieve(self, requests: Sequence[RetrieveRequest]) -> list[dict]:
        queries = [self.query(r) for r in requests]
        live = [i for i, q in enumerate(queries) if q is not None]
        results: list[dict] = [{} for _ in requests]
        if live:
            vectors = self.vectors([queries[i] for i in live])
            k_max = max(
                requests[i].k + (len(requests[i].events) if _drops_history(requests[i]) else 0)
                for i in live
            )
            k_max = min(k_max, len(self.export.item_ids))
            with self._search_guard:
                scores, ids = I.search(self.index, augment_queries(vectors), k_max)
            for row, i in enumerate(live):
                ranked = ((c, float(score)) for c, score in zip(ids[row], scores[row]))
                results[i] = self._answer(requests[i], ranked, fallback=False)
        for i, q in enumerate(queries):
            if q is None:  # no known item: the most popular items, under the same rule
                results[i] = self._answer(
                    requests[i], ((c, None) for c in self.popular), fallback=True
                )
        return results

    def _answer(
        self, req: RetrieveRequest, ranked: Iterable[tuple[int, float | None]], fallback: bool
    ) -> dict:
        """The top k of `ranked` ((class, score) best first; class -1: none) under the request's
        history rule, as bench_split ranks every user, a fallback's too: without the request's
        items where they are dropped, behind them (score None) where they come first, known to
        the model or not."""
        seen = {e.item for e in req.events} if _drops_history(req) else set()
        items, scores = [], []
        for c, score in ranked:
            if len(items) == req.k:
                break
            if c < 0:
                continue
            item = self.export.item_ids[c]
            if item in seen:
                continue
            items.append(item)
            scores.append(score)
        if req.history_first:
            score_of = dict(zip(items, scores))
            in_time = [e.item for e in S.sort_events(self.events(req))]
            items = H.history_first(in_time, items, req.k, HEAD_RULE[req.history_order])
            scores = [score_of.get(item) for item in items]
        return {"items": items, "scores": scores, "sides": self.sides(items), "fallback": fallback}


def _drops_history(req: RetrieveRequest) -> bool:
    return req.exclude_seen or req.history_first


class Coalescer:
    """Single requests that arrive while the tower and the index are busy wait, then go
    through them together: one tower call and one search for up to `max_batch` requests
    (a TensorFlow call and a FAISS search cost much the same for one query as for dozens).
    A lone request goes at once; batches form only under load. A request that fails as a
    caller's mistake (ValueError) fails alone: its batch is then run one request at a time."""

    def __init__(self, retrieve, max_batch: int = 64):
        self.retrieve = retrieve
        self.max_batch = max_batch
        self.queue: asyncio.Queue | None = None
        self.worker: asyncio.Task | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    async def submit(self, request: RetrieveRequest):
        """The request's result dict, or the ValueError it raised."""
        loop = asyncio.get_running_loop()
        if self.loop is not loop or self.worker is None or self.worker.done():
            self.loop, self.queue = loop, asyncio.Queue()
            self.worker = loop.create_task(self._serve())
        done = loop.create_future()
        self.queue.put_nowait((request, done))
        return await done

    async def _serve(self):
        while True:
            batch = [await self.queue.get()]
            while len(batch) < self.max_batch and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            requests = [r for r, _ in batch]
            try:
                results = await run_in_threadpool(self.retrieve, requests)
            except ValueError:
                results = [await self._alone(r) for r in requests]
            except Exception as e:  # noqa: BLE001 - every waiter gets it, the worker goes on
                results = [e] * len(batch)
            for (_, done), result in zip(batch, results):
                if done.done():  # the client went away
                    continue
                if isinstance(result, BaseException) and not isinstance(result, ValueError):
                    done.set_exception(result)
                else:
                    done.set_result(result)

    async def _alone(self, request):
        try:
            return (await run_in_threadpool(self.retrieve, [request]))[0]
        except ValueError as e:
            return e


def create_app(retriever: Retriever, max_body_bytes: int = MAX_BODY_BYTES, max_coalesce: int = 64):
    """A FastAPI app around `retriever`. Every bad request gets a 4xx with a message.

    max_coalesce: concurrent single requests go through the tower and the index together, up
      to this many (`Coalescer`); 1: each alone."""
    app = FastAPI(title="sdm retrieval", version="1")
    # Every batch size the coalescer can form is compiled now, not under the first load (a
    # compilation stalls its batch for seconds: a 16-client p99 of 3 s without this).
    retriever.warm_up(max_coalesce)
    coalescer = Coalescer(retriever.retrieve, max_coalesce)

    async def parse(request: Request, model):
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_body_bytes:
            return None, JSONResponse({"error": f"body over {max_body_bytes} bytes"}, 413)
        body = bytearray()  # without a Content-Length (chunked): stop at the limit
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body_bytes:
                return None, JSONResponse({"error": f"body over {max_body_bytes} bytes"}, 413)
        try:
            return model.model_validate_json(body), None
        except ValidationError as e:
            errors = e.errors(include_url=False, include_context=False, include_input=False)
            status = 400 if any(err["type"] == "json_invalid" for err in errors) else 422
            return None, JSONResponse({"error": "invalid request", "details": errors}, status)

    async def run(requests):
        try:
            return await run_in_threadpool(retriever.retrieve, requests), None
        except ValueError as e:  # unknown feature names and the like: the caller's mistake
            return None, JSONResponse({"error": str(e)}, 422)

    @app.get("/health")
    def health():
        return {
            "status": "ok",
            "export": retriever.export.manifest["version"],
            "items": len(retriever.export.item_ids),
            "dim": retriever.export.dim,
            "index": retriever.index_cfg.kind if retriever.index_cfg else "flat",
        }

    @app.post("/v1/retrieve")
    async def retrieve(request: Request):
        req, err = await parse(request, RetrieveRequest)
        if err:
            return err
        out = await coalescer.submit(req)
        if isinstance(out, ValueError):  # unknown feature names and the like
            return JSONResponse({"error": str(out)}, 422)
        # Plain JSON types already: FastAPI's jsonable_encoder would walk all k items again
        # (~1 ms of CPU a request for k = 300).
        return JSONResponse(out)

    @app.post("/v1/retrieve/batch")
    async def retrieve_batch(request: Request):
        req, err = await parse(request, BatchRequest)
        if err:
            return err
        out, err = await run(req.requests)
        return err or JSONResponse({"results": out})

    return app
