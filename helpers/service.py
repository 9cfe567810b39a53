"""The recommender as an HTTP service (FastAPI), and a load test for it.

Start it with one command (the artefact comes from ``Recommender.save``)::

    COURSE_MODEL_PATH=artefacts/sasrec-ml-100k uvicorn --factory helpers.service:create_app --port 8000

Endpoints: ``POST /recommend`` (body: ``{"history": [50, "Heat (1995)"], "k": 10}``),
``GET /items/{id}``, ``GET /health``. The model is loaded once, when the app is made.
Bodies are validated by pydantic: a malformed body, an unknown item or an ambiguous
title gets a 4xx whose message says what is wrong, never a 500 or a traceback. Each
answer carries a ``Server-Timing: model;dur=<ms>`` header, the time spent in
``recommend``, so a client can tell the model's time from the HTTP overhead.

``load_test`` sends many requests at once through an ``httpx.AsyncClient`` (in-process
with ``httpx.ASGITransport``, or against a real server) and reports throughput, latency
percentiles and errors; ``running_server`` starts a real uvicorn on 127.0.0.1 and stops it.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import httpx
import numpy as np
import pandas as pd
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints

from helpers.recommender import AmbiguousTitle, RecommendError, Recommender, UnknownItems

MODEL_ENV = "COURSE_MODEL_PATH"  # the artefact folder the service loads
CHECKSUM_ENV = "COURSE_MODEL_CHECKSUM"  # optional: refuse any other artefact
MAX_HISTORY = 10_000  # items in one request's history
MAX_K = 1_000

ItemRef = StrictInt | Annotated[str, StringConstraints(min_length=1, max_length=300)]


class RecommendRequest(BaseModel):
    """``history``: raw item IDs (integers) or titles, oldest first."""

    model_config = ConfigDict(extra="forbid")
    history: list[ItemRef] = Field(default_factory=list, max_length=MAX_HISTORY)
    k: int = Field(10, ge=1, le=MAX_K)
    exclude_seen: bool = True
    explain: bool = True  # name the history items behind each recommendation


class Recommended(BaseModel):
    item: int | str
    title: str
    score: float
    because: list[int | str]
    because_titles: list[str]
    shared_genres: list[str]


class RecommendResponse(BaseModel):
    items: list[Recommended]
    source: str  # "model" or the fallback's label
    history: list[int | str]


class ItemInfo(BaseModel):
    item: int | str
    title: str
    year: int | None
    genres: list[str]
    popularity: int  # interactions in the training data


def create_app(recommender: Recommender | None = None) -> FastAPI:
    """The FastAPI app around ``recommender`` (default: the artefact at ``$COURSE_MODEL_PATH``)."""
    if recommender is None:
        path = os.environ.get(MODEL_ENV)
        if not path:
            raise RuntimeError(f"set {MODEL_ENV} to a folder written by Recommender.save")
        recommender = Recommender.load(path, checksum=os.environ.get(CHECKSUM_ENV) or None)
    app = FastAPI(title="next-item recommender", version="1")
    app.state.recommender = recommender

    @app.exception_handler(RecommendError)
    async def bad_request(request: Request, error: RecommendError) -> JSONResponse:
        detail: dict = {"detail": str(error)}
        if isinstance(error, UnknownItems):
            detail["unknown"] = error.items
        if isinstance(error, AmbiguousTitle):
            detail["candidates"] = {str(k): v for k, v in error.candidates.items()}
        return JSONResponse(detail, status_code=422)

    @app.post("/recommend", response_model=RecommendResponse)
    def recommend(body: RecommendRequest) -> JSONResponse:
        # A plain def: FastAPI runs it in a worker thread, so the event loop keeps accepting
        # requests while the model computes (torch releases the GIL inside its kernels).
        start = time.perf_counter()
        answer = recommender.recommend(body.history, k=body.k, exclude_seen=body.exclude_seen,
                                       explain_top=2 if body.explain else 0)
        model_ms = (time.perf_counter() - start) * 1e3
        out = RecommendResponse(items=[Recommended(**vars(r)) for r in answer.items], source=answer.source,
                                history=answer.history)
        return JSONResponse(out.model_dump(), headers={"Server-Timing": f"model;dur={model_ms:.3f}"})

    @app.get("/items/{item_id}", response_model=ItemInfo)
    def item(item_id: str) -> ItemInfo:
        ref: int | str = int(item_id) if item_id.lstrip("-").isdigit() else item_id
        try:
            (course_id,) = recommender.resolve([ref])
        except UnknownItems:
            raise HTTPException(404, f"no item {item_id!r} in the catalogue") from None
        row = recommender.items.loc[int(course_id)]
        return ItemInfo(item=recommender.raw_id(course_id), title=row["title"],
                        year=None if pd.isna(row["year"]) else int(row["year"]),
                        genres=list(row["genres"]), popularity=int(row["popularity"]))

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "items": recommender.n_items, "max_len": recommender.max_len,
                "model": type(recommender.model).__name__, "checksum": recommender.checksum}

    return app


# ---------------------------------------------------------------- load test
@dataclass
class LoadReport:
    """What :func:`load_test` measured; latencies in milliseconds, one per request sent."""

    latencies_ms: np.ndarray  # (N,) client-side, send to full answer
    model_ms: np.ndarray  # (N,) the server's Server-Timing for the model (NaN when absent)
    statuses: np.ndarray  # (N,) HTTP status, 0 = no answer (connection error, timeout)
    seconds: float  # wall time of the whole test
    concurrency: int

    def summary(self) -> dict[str, float]:
        ok = self.statuses == 200
        lat = self.latencies_ms[ok] if ok.any() else np.array([np.nan])
        return {"requests": len(self.statuses), "errors": int((~ok).sum()), "concurrency": self.concurrency,
                "throughput /s": len(self.statuses) / self.seconds,
                "p50 ms": float(np.percentile(lat, 50)), "p95 ms": float(np.percentile(lat, 95)),
                "p99 ms": float(np.percentile(lat, 99)),
                "model p50 ms": float(np.nanpercentile(self.model_ms, 50)) if ok.any() else np.nan}


def _server_timing(response: httpx.Response) -> float:
    header = response.headers.get("server-timing", "")
    return float(header.split("dur=")[1]) if "dur=" in header else np.nan


async def load_test(client: httpx.AsyncClient, bodies: Sequence[dict], concurrency: int = 100,
                    timeout: float = 30.0) -> LoadReport:
    """POST every body to ``/recommend`` with at most ``concurrency`` requests in flight.

    Nothing is dropped: every body is sent once, and a failure is counted, not retried.
    """
    gate = asyncio.Semaphore(concurrency)
    n = len(bodies)
    latencies, model_ms, statuses = np.full(n, np.nan), np.full(n, np.nan), np.zeros(n, dtype=np.int64)

    async def one(i: int) -> None:
        async with gate:
            start = time.perf_counter()
            try:
                response = await client.post("/recommend", json=bodies[i], timeout=timeout)
            except httpx.HTTPError:
                return
            latencies[i] = (time.perf_counter() - start) * 1e3
            statuses[i], model_ms[i] = response.status_code, _server_timing(response)

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return LoadReport(latencies, model_ms, statuses, time.perf_counter() - start, concurrency)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(artefact: str | os.PathLike, port: int | None = None, workers: int = 1, threads: int = 1,
                   startup_timeout: float = 60.0) -> Iterator[str]:
    """A real uvicorn serving ``artefact`` on 127.0.0.1 (``workers`` processes of ``threads``
    torch threads each); yields its base URL and stops it after."""
    port = port or free_port()
    env = {**os.environ, MODEL_ENV: str(Path(artefact).resolve()), "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "helpers.service:create_app", "--host", "127.0.0.1",
           "--port", str(port), "--workers", str(workers), "--log-level", "warning", "--no-access-log"]
    process = subprocess.Popen(cmd, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"uvicorn exited with code {process.returncode}: {' '.join(cmd)}")
            try:
                if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the service did not answer /health within {startup_timeout} s")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
