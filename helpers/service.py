"""The recommender as an HTTP service (FastAPI), and a load test for it.

Start it with one command (the artefact comes from ``Recommender.save``)::

    COURSE_MODEL_PATH=artefacts/sasrec-ml-100k uvicorn --factory helpers.service:create_app --port 8000

Endpoints: ``POST /recommend`` (body: ``{"history": [50, "Heat (1995)"], "k": 10}``),
``GET /items/{id}``, ``GET /health``. The model is loaded once, when the app is made.

A bad request gets a 4xx that names the field and what it allows, never a 500 or a
traceback, and never echoes more than a few dozen characters of what was sent: 415 for a
body that is not ``application/json``, 413 for one over ``MAX_BODY_BYTES``, 422 for JSON
that does not parse, holds ``NaN``/``Infinity`` or an integer of more than ``MAX_DIGITS``
digits, or does not fit :class:`RecommendRequest` (``k`` and the flags are strict: ``true``
is not 1, ``10.0`` is not 10), and for unknown items or ambiguous titles. Item ids follow
:func:`helpers.ids.check_id` (``"50"`` is item 50; ``"²"`` or ``"５０"`` are titles, unknown).
Each answer carries a ``Server-Timing: model;dur=<ms>`` header, the time spent in
``recommend``, so a client can tell the model's time from the HTTP overhead.

``load_test`` sends many requests at once through an ``httpx.AsyncClient`` (in-process
with ``httpx.ASGITransport``, or against a real server) and reports throughput, latency
percentiles and errors; ``running_server`` starts a real uvicorn on 127.0.0.1 and stops it.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import httpx
import numpy as np
import pandas as pd
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StringConstraints, ValidationError

from helpers.ids import ALLOWED_IDS, ascii_int, short_repr
from helpers.recommender import AmbiguousTitle, RecommendError, Recommender, UnknownItems

MODEL_ENV = "COURSE_MODEL_PATH"  # the artefact folder the service loads
CHECKSUM_ENV = "COURSE_MODEL_CHECKSUM"  # optional: refuse any other artefact
MAX_HISTORY = 10_000  # items in one request's history
MAX_K = 1_000
MAX_BODY_BYTES = 1 << 20  # 1 MiB: 10,000 numeric ids take about 60 kB
MAX_DIGITS = 100  # a longer JSON integer is refused before Python converts it
MAX_TITLE = 300
ALLOWED = {  # what each field takes, as an error message says it
    "history": f"a list of at most {MAX_HISTORY:,} items, oldest first, each {ALLOWED_IDS} "
               f"or a title of 1..{MAX_TITLE} characters",
    "k": f"an integer from 1 to {MAX_K:,} (not bool, float or string)",
    "exclude_seen": "true or false",
    "explain": "true or false",
}

ItemRef = StrictInt | Annotated[str, StringConstraints(min_length=1, max_length=MAX_TITLE)]


class RecommendRequest(BaseModel):
    """``history``: raw item IDs (integers) or titles, oldest first."""

    model_config = ConfigDict(extra="forbid")
    history: list[ItemRef] = Field(default_factory=list, max_length=MAX_HISTORY)
    k: StrictInt = Field(10, ge=1, le=MAX_K)
    exclude_seen: StrictBool = True
    explain: StrictBool = True  # name the history items behind each recommendation


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


class BadRequest(Exception):
    """A request refused: ``status`` and a body whose ``detail`` says why (a message or per-field errors)."""

    def __init__(self, status: int, message: str | list[dict], **extra: Any):
        super().__init__(message)
        self.status, self.body = status, {"detail": message, **extra}


class _Refused:
    """A JSON value the parser will not turn into a Python number (NaN, Infinity, an
    integer of too many digits): it stays in place so that validation names its field."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _refuse_constant(name: str) -> _Refused:
    return _Refused(f"{name} (numbers must be finite)")


def _bounded_int(text: str) -> int | _Refused:
    digits = len(text.lstrip("-"))
    return int(text) if digits <= MAX_DIGITS else _Refused(f"an integer of {digits:,} digits (at most {MAX_DIGITS})")


def parse_json(body: bytes, content_type: str | None) -> Any:
    """The JSON value of a request body, or :class:`BadRequest` (415, 413, 422) saying why."""
    media = (content_type or "").split(";")[0].strip().lower()
    if not body.strip():
        raise BadRequest(422, "Field required: the body must be a JSON object such as "
                              '{"history": [50, "Heat (1995)"], "k": 10}', field="body")
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        raise BadRequest(415, f"Content-Type must be application/json, got {content_type or 'none'}",
                         field="Content-Type")
    if len(body) > MAX_BODY_BYTES:
        raise BadRequest(413, f"the body has {len(body):,} bytes, at most {MAX_BODY_BYTES:,} are accepted")
    try:
        return json.loads(body, parse_constant=_refuse_constant, parse_int=_bounded_int)
    except (ValueError, RecursionError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise BadRequest(422, f"the body is not valid JSON: {short_repr(str(error), 120)}", field="body") from None


def validation_errors(error: ValidationError) -> list[dict]:
    """pydantic's errors, one per field (a union's alternatives merged), with what the field
    allows and at most a short excerpt of the value sent."""
    merged: dict[tuple, dict] = {}
    for e in error.errors():
        loc = tuple(e["loc"][:1]) + tuple(p for p in e["loc"][1:2] if isinstance(p, int))
        value = e.get("input")
        msg = f"{value.text} is not allowed" if isinstance(value, _Refused) else e["msg"]
        allowed = ALLOWED.get(str(loc[0])) if loc else None
        entry = merged.setdefault(loc, {"loc": list(loc), "msg": [], "allowed": allowed})
        if msg not in entry["msg"]:
            entry["msg"].append(msg)
        if e["type"] != "missing" and not isinstance(value, dict):
            entry["input"] = short_repr(value)
    return [{**e, "msg": "; ".join(e["msg"]), "field": ".".join(map(str, e["loc"])) or "body"} for e in merged.values()]


async def read_request(request: Request) -> RecommendRequest:
    """The body of ``POST /recommend``, read at most ``MAX_BODY_BYTES`` at a time and validated."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise BadRequest(413, f"the body has {int(declared):,} bytes, at most {MAX_BODY_BYTES:,} are accepted")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise BadRequest(413, f"the body has more than {MAX_BODY_BYTES:,} bytes, the most accepted")
        chunks.append(chunk)
    data = parse_json(b"".join(chunks), request.headers.get("content-type"))
    try:
        return RecommendRequest.model_validate(data)
    except ValidationError as error:
        raise BadRequest(422, validation_errors(error)) from None


def create_app(recommender: Recommender | None = None) -> FastAPI:
    """The FastAPI app around ``recommender`` (default: the artefact at ``$COURSE_MODEL_PATH``)."""
    if recommender is None:
        path = os.environ.get(MODEL_ENV)
        if not path:
            raise RuntimeError(f"set {MODEL_ENV} to a folder written by Recommender.save")
        recommender = Recommender.load(path, checksum=os.environ.get(CHECKSUM_ENV) or None)
    app = FastAPI(title="next-item recommender", version="1")
    app.state.recommender = recommender

    @app.exception_handler(BadRequest)
    async def refused(request: Request, error: BadRequest) -> JSONResponse:
        return JSONResponse(error.body, status_code=error.status)

    @app.exception_handler(RecommendError)
    async def bad_request(request: Request, error: RecommendError) -> JSONResponse:
        detail: dict = {"detail": str(error)}
        if isinstance(error, UnknownItems):
            detail["unknown"] = [item if isinstance(item, int) else short_repr(item) for item in error.items[:20]]
        if isinstance(error, AmbiguousTitle):
            detail["candidates"] = {str(k): v for k, v in error.candidates.items()}
        return JSONResponse(detail, status_code=422)

    body_schema = {"requestBody": {"required": True, "content": {
        "application/json": {"schema": RecommendRequest.model_json_schema()}}}}

    @app.post("/recommend", response_model=RecommendResponse, openapi_extra=body_schema)
    def recommend(body: Annotated[RecommendRequest, Depends(read_request)]) -> JSONResponse:
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
        number = ascii_int(item_id)
        try:
            (course_id,) = recommender.resolve([item_id if number is None else number])
        except UnknownItems:
            raise HTTPException(404, f"no item {short_repr(item_id)} in the catalogue") from None
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
    answers: list | None = None  # (N,) each answer's JSON (None: no answer), when asked for

    def mismatches(self, expected: Sequence) -> int:
        """How many answers differ from ``expected`` (e.g. the same bodies sent one at a time)."""
        if self.answers is None:
            raise ValueError("run load_test(..., keep_answers=True) to compare answers")
        return sum(a != e for a, e in zip(self.answers, expected, strict=True))

    def summary(self) -> dict[str, float]:
        ok = self.statuses == 200
        lat = self.latencies_ms[ok] if ok.any() else np.array([np.nan])
        return {"requests": len(self.statuses), "errors": int((~ok).sum()),
                "5xx": int((self.statuses >= 500).sum()), "concurrency": self.concurrency,
                "throughput /s": len(self.statuses) / self.seconds,
                "p50 ms": float(np.percentile(lat, 50)), "p95 ms": float(np.percentile(lat, 95)),
                "p99 ms": float(np.percentile(lat, 99)),
                "model p50 ms": float(np.nanpercentile(self.model_ms, 50)) if ok.any() else np.nan}


def _server_timing(response: httpx.Response) -> float:
    header = response.headers.get("server-timing", "")
    return float(header.split("dur=")[1]) if "dur=" in header else np.nan


async def load_test(client: httpx.AsyncClient, bodies: Sequence[dict], concurrency: int = 100,
                    timeout: float = 30.0, keep_answers: bool = False) -> LoadReport:
    """POST every body to ``/recommend`` with at most ``concurrency`` requests in flight.

    Nothing is dropped: every body is sent once, and a failure is counted, not retried.
    ``keep_answers`` keeps each answer's JSON in ``LoadReport.answers``.
    """
    gate = asyncio.Semaphore(concurrency)
    n = len(bodies)
    latencies, model_ms, statuses = np.full(n, np.nan), np.full(n, np.nan), np.zeros(n, dtype=np.int64)
    answers: list | None = [None] * n if keep_answers else None

    async def one(i: int) -> None:
        async with gate:
            start = time.perf_counter()
            try:
                response = await client.post("/recommend", json=bodies[i], timeout=timeout)
            except httpx.HTTPError:
                return
            latencies[i] = (time.perf_counter() - start) * 1e3
            statuses[i], model_ms[i] = response.status_code, _server_timing(response)
            if answers is not None:
                answers[i] = response.json() if response.status_code == 200 else None

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return LoadReport(latencies, model_ms, statuses, time.perf_counter() - start, concurrency, answers)


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
