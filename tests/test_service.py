"""The HTTP service: answers, 4xx (never 500) on bad bodies, and the in-process load test."""

import asyncio

import httpx
import numpy as np
import pandas as pd
import pytest
import torch
from fastapi.testclient import TestClient

from helpers import recommender, service
from helpers.preprocess import IdMap
from helpers.sasrec import SASRec, SASRecConfig

RAW = [10, 20, 30, 40, 50, 60]


@pytest.fixture(scope="module")
def rec() -> recommender.Recommender:
    ids = IdMap(pd.Index([1]), pd.Index(RAW))
    items = pd.DataFrame({"item_id": RAW, "title": ["Heat", "Heat", "Toy Story", "Alien", "Babe", "Fargo"],
                          "year": pd.array([1995, 1986, 1995, None, 1995, 1996], dtype="Int64"),
                          "genres": [["Action"], ["Action"], ["Comedy"], ["Horror"], ["Comedy"], ["Crime"]]})
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(6, max_len=4, hidden=8, n_layers=1, n_heads=2))
    return recommender.Recommender(model, recommender.catalogue(ids, items, [np.array([3, 3, 5, 1])]))


@pytest.fixture(scope="module")
def client(rec) -> TestClient:
    return TestClient(service.create_app(rec), raise_server_exceptions=False)


def test_recommend_answers_like_the_recommender(client, rec):
    response = client.post("/recommend", json={"history": [10, "Toy Story"], "k": 3})
    assert response.status_code == 200
    body = response.json()
    expected = rec.recommend([10, "Toy Story"], k=3)
    assert [r["item"] for r in body["items"]] == [r.item for r in expected.items]
    assert body["source"] == "model" and body["history"] == [10, 30]
    assert "model;dur=" in response.headers["server-timing"]


def test_empty_history_is_the_labelled_fallback(client):
    body = client.post("/recommend", json={"history": []}).json()
    assert body["source"].startswith("popularity") and body["items"][0]["item"] == 30


@pytest.mark.parametrize("payload, status, says", [
    ({"history": [10, 99, "Jaws"]}, 422, "unknown"),
    ({"history": ["Heat"]}, 422, "fits 2 items"),
    ({"history": [10], "k": 0}, 422, "greater than or equal to 1"),
    ({"history": [10], "k": "ten"}, 422, "valid integer"),
    ({"history": "10, 20"}, 422, "valid list"),
    ({"history": [1.5]}, 422, "history"),
    ({"history": [True]}, 422, "history"),
    ({"history": [[10]]}, 422, "history"),
    ({"history": [""]}, 422, "at least 1 character"),
    ({"history": [10], "colour": "red"}, 422, "Extra inputs"),
    ({"history": [2 ** 70]}, 422, "unknown"),
    ({"history": [10] * (service.MAX_HISTORY + 1)}, 422, "at most"),
    (None, 422, "Field required"),
    ([10, 20], 422, "valid dictionary"),
    ({"history": [10], "k": 10 ** 30}, 422, "less than or equal"),
    ({"history": ["x" * 301]}, 422, "at most 300 characters"),
])
def test_malformed_bodies_get_a_4xx_that_says_why(client, payload, status, says):
    response = client.post("/recommend", json=payload) if payload is not None else client.post("/recommend")
    assert response.status_code == status
    assert says in response.text and "Traceback" not in response.text


def test_broken_json_and_wrong_method_are_4xx(client):
    broken = client.post("/recommend", content=b'{"history": [10,', headers={"content-type": "application/json"})
    assert broken.status_code == 422 and "JSON" in broken.text
    assert client.get("/recommend").status_code == 405


def test_items_and_health(client):
    assert client.get("/items/30").json() == {"item": 30, "title": "Toy Story", "year": 1995,
                                              "genres": ["Comedy"], "popularity": 2}
    assert client.get("/items/40").json()["year"] is None
    assert client.get("/items/Fargo").json()["item"] == 60
    missing = client.get("/items/99")
    assert missing.status_code == 404 and "99" in missing.json()["detail"]
    assert client.get("/health").json()["status"] == "ok"


def test_the_app_loads_the_artefact_named_by_the_environment(rec, tmp_path, monkeypatch):
    checksum = rec.save(tmp_path)
    monkeypatch.setenv(service.MODEL_ENV, str(tmp_path))
    monkeypatch.setenv(service.CHECKSUM_ENV, checksum)
    with TestClient(service.create_app()) as c:
        assert c.get("/health").json()["checksum"] == checksum
    monkeypatch.delenv(service.MODEL_ENV)
    with pytest.raises(RuntimeError, match=service.MODEL_ENV):
        service.create_app()


def test_load_test_in_process_sends_everything_and_counts_errors(rec):
    app = service.create_app(rec)
    bodies = [{"history": [10, 30]}] * 30 + [{"history": [99]}] * 2

    async def run():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            return await service.load_test(c, bodies, concurrency=16)

    report = asyncio.run(run())
    summary = report.summary()
    assert summary["requests"] == 32 and summary["errors"] == 2
    assert (report.statuses[:30] == 200).all() and summary["p99 ms"] >= summary["p50 ms"] > 0
