"""Issue 24: the serving half under hostile input. One test (or a few) per numbered item:
no 500s, thread-safe explanations, artefacts that say what they are, per-user state that
refuses what it cannot store correctly."""

import asyncio
import datetime
import hashlib
import json
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import torch
from fastapi.testclient import TestClient

from helpers import batches, compress, privacy, recommender, service
from helpers.evaluate import UnrankedItemsWarning, evaluate
from helpers.ids import user_key
from helpers.online import OnlineHistories
from helpers.preprocess import IdMap
from helpers.sasrec import SASRec, SASRecConfig
from helpers.split import EvalSet
from helpers.train import TrainConfig

RAW = [10, 20, 30, 40, 50, 60]
KEY = b"k" * 32


def make_rec(explain_with: str = "occlusion", n_heads: int = 2) -> recommender.Recommender:
    ids = IdMap(pd.Index([1]), pd.Index(RAW))
    items = pd.DataFrame({"item_id": RAW, "title": ["Heat", "Heat", "Toy Story", "Alien", "Babe", "Fargo"],
                          "year": pd.array([1995, 1986, 1995, None, 1995, 1996], dtype="Int64"),
                          "genres": [["Action"], ["Action"], ["Comedy"], ["Horror"], ["Comedy"], ["Crime"]]})
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(6, max_len=4, hidden=8, n_layers=1, n_heads=n_heads))
    return recommender.Recommender(model, recommender.catalogue(ids, items, [np.array([3, 3, 5, 1])]),
                                   explain_with)


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(service.create_app(make_rec()), raise_server_exceptions=False)


def post_raw(client: TestClient, text: str | bytes, content_type: str | None = "application/json"):
    headers = {"content-type": content_type} if content_type else {}
    return client.post("/recommend", content=text, headers=headers)


def assert_names(response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text[:300]
    assert "Traceback" not in response.text
    for word in words:
        assert word in response.text, (word, response.text[:300])


# ---------------------------------------------------------------- 1. NaN / Infinity
@pytest.mark.parametrize("text, field", [
    ('{"history": [NaN]}', "history"), ('{"history": [10, Infinity]}', "history"),
    ('{"history": [10], "k": NaN}', "k"), ('{"history": [10], "k": -Infinity}', "k"),
])
def test_1_nan_and_infinity_literals_get_a_422_naming_the_field(client, text, field):
    response = post_raw(client, text)
    assert_names(response, 422, "must be finite", field)
    assert response.json()["detail"][0]["field"].startswith(field)


# ---------------------------------------------------------------- 2. Unicode digits
@pytest.mark.parametrize("entry", ["²", "٥٠", "５０", "--5", "5" * 5000])
def test_2_unicode_digits_are_titles_not_numbers(client, entry):
    body = client.post("/recommend", json={"history": [entry[:300]]})
    assert_names(body, 422, "unknown")  # "٥٠" and "５０" are not item 50
    assert client.post("/recommend", json={"history": ["50"]}).json()["history"] == [50]  # ASCII digits are


@pytest.mark.parametrize("path", ["²", "--5", "٥٠", "5" * 5000])
def test_2_item_paths_that_are_no_ascii_number_are_404(client, path):
    response = client.get(f"/items/{path}")
    assert_names(response, 404, "no item")
    assert len(response.content) < 400  # the 5,000-digit id is not echoed whole


def test_2_through_a_real_uvicorn(tmp_path):
    make_rec().save(tmp_path / "artefact")
    with service.running_server(tmp_path / "artefact") as url:
        for path in ["²", "--5", "5" * 5000]:
            assert httpx.get(f"{url}/items/{path}", timeout=10).status_code == 404
        answer = httpx.post(f"{url}/recommend", json={"history": ["²"]}, timeout=10)
        assert answer.status_code == 422 and "unknown" in answer.text
        assert httpx.get(f"{url}/items/50", timeout=10).json()["title"] == "Babe"


# ---------------------------------------------------------------- 3. concurrent gradients
def answer_key(answer: recommender.Answer) -> list:
    return [(r.item, r.because) for r in answer.items]


@pytest.mark.parametrize("method", ["gradient", "occlusion"])
def test_3_explanations_under_many_threads_equal_the_sequential_ones(method):
    rec = make_rec(method)
    histories = [[RAW[(i + j) % 6] for j in range(1 + i % 4)] for i in range(40)]
    sequential = [answer_key(rec.recommend(h, k=3)) for h in histories]
    attribution = [rec.recommend(h, k=3).items[0].because for h in histories]
    assert any(attribution)  # the reasons are not all empty, so a mix-up would show
    with ThreadPoolExecutor(max_workers=16) as pool:
        for _ in range(5):
            together = list(pool.map(lambda h: answer_key(rec.recommend(h, k=3)), histories))
            assert together == sequential


def test_3_the_service_with_gradients_answers_bursts_of_50_like_one_at_a_time():
    rec = make_rec("gradient")
    app = service.create_app(rec)
    bodies = [{"history": [RAW[(i + j) % 6] for j in range(1 + i % 4)], "k": 3} for i in range(50)]

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as c:
            return await asyncio.gather(*(c.post("/recommend", json=b) for b in bodies))

    with TestClient(app) as sync:
        sequential = [sync.post("/recommend", json=b).json() for b in bodies]
    for _ in range(5):
        responses = asyncio.run(burst())
        assert [r.status_code for r in responses] == [200] * 50
        assert [r.json() for r in responses] == sequential


# ---------------------------------------------------------------- 4. strict types, content type
@pytest.mark.parametrize("payload, field", [
    ({"history": [10], "k": True}, "k"), ({"history": [10], "k": 3.0}, "k"),
    ({"history": [10], "explain": "yes"}, "explain"), ({"history": [10], "exclude_seen": 1}, "exclude_seen"),
])
def test_4_bool_and_float_are_not_integers(client, payload, field):
    response = client.post("/recommend", json=payload)
    assert_names(response, 422, field)
    assert response.json()["detail"][0]["allowed"]  # says what the field takes


def test_4_a_5000_digit_integer_names_the_history_field(client):
    response = post_raw(client, '{"history": [' + "7" * 5000 + "]}")
    assert_names(response, 422, "history", "5,000 digits")
    assert len(response.content) < 2000


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", None])
def test_4_json_under_another_content_type_gets_a_415_naming_it(client, content_type):
    response = post_raw(client, '{"history": [10]}', content_type)
    assert_names(response, 415, "application/json", content_type or "none")
    assert post_raw(client, '{"history": [10]}', "application/json; charset=utf-8").status_code == 200


# ---------------------------------------------------------------- 5. body size
def test_5_a_body_over_the_limit_is_a_413_and_errors_never_echo_much(client):
    huge = client.post("/recommend", json={"history": ["x" * 5_000_000]})
    assert_names(huge, 413, f"{service.MAX_BODY_BYTES:,}")
    assert len(huge.content) < 500
    large = client.post("/recommend", json={"history": ["x" * 500_000]})  # under the limit: a 422
    assert_names(large, 422, "at most 300 characters")
    assert len(large.content) < 2000
    deep = post_raw(client, "[" * 100_000)  # nesting deeper than the parser's recursion limit
    assert_names(deep, 422, "not valid JSON")


# ---------------------------------------------------------------- 6. NaN weights
def test_6_nan_weights_are_refused_before_compression_or_serving():
    model = SASRec(SASRecConfig(6, max_len=4, hidden=8, n_layers=1, n_heads=2))
    with torch.no_grad():
        model.item_emb.weight[3, 0] = float("nan")
    for make in (lambda: compress.compress_items(model, "int8"), lambda: compress.quantize_linear(model)):
        with pytest.raises(ValueError, match="item_emb.weight"):
            make()
    rec = make_rec()
    with pytest.raises(ValueError, match="NaN or infinite"):
        recommender.Recommender(model, rec.items)


# ---------------------------------------------------------------- 7. artefact config and catalogue
def rewrite_manifest(folder: Path, names: tuple[str, ...] = recommender.FILES, binary: bool = False) -> str:
    """A manifest over ``names`` as ``sha256sum`` (or ``sha256sum --binary``) writes it; returns its checksum."""
    sep = " *" if binary else "  "
    text = "".join(f"{hashlib.sha256((folder / n).read_bytes()).hexdigest()}{sep}{n}\n" for n in names)
    (folder / recommender.MANIFEST).write_text(text)
    return hashlib.sha256(text.encode()).hexdigest()


def edit_config(folder: Path, change) -> None:
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))
    rewrite_manifest(folder)


def test_7_a_config_without_a_field_is_refused_not_defaulted(tmp_path):
    make_rec(n_heads=1).save(tmp_path)
    edit_config(tmp_path, lambda c: c["config"].pop("n_heads"))
    with pytest.raises(recommender.ArtefactError, match=r"config.json \(format 2.*missing fields \['n_heads'\]"):
        recommender.Recommender.load(tmp_path)


def test_7_an_unknown_field_or_another_format_names_file_and_versions(tmp_path):
    make_rec().save(tmp_path)
    edit_config(tmp_path, lambda c: c["config"].update(colour="red"))
    with pytest.raises(recommender.ArtefactError, match=r"config.json.*format 2.*unknown fields \['colour'\]"):
        recommender.Recommender.load(tmp_path)
    edit_config(tmp_path, lambda c: (c["config"].pop("colour"), c.update(format=3)))
    with pytest.raises(recommender.ArtefactError, match=r"config.json: artefact format 3.*reads formats \[1, 2\]"):
        recommender.Recommender.load(tmp_path)


def test_7_a_format_1_artefact_is_converted_and_answers_the_same(tmp_path):
    rec = make_rec()
    rec.save(tmp_path)
    edit_config(tmp_path, lambda c: c.update(format=1))
    rewrite_manifest(tmp_path, ("weights.pt", "config.json", "items.csv"))  # format 1 listed three files
    assert answer_key(recommender.Recommender.load(tmp_path).recommend([10, 30])) == answer_key(rec.recommend([10, 30]))


def test_7_items_without_year_genres_or_popularity_load(tmp_path):
    rec = make_rec()
    rec.save(tmp_path)
    items = pd.read_csv(tmp_path / "items.csv").drop(columns=["year", "genres", "popularity"])
    items.to_csv(tmp_path / "items.csv", index=False)
    rewrite_manifest(tmp_path)
    loaded = recommender.Recommender.load(tmp_path)
    assert loaded.items["year"].isna().all() and loaded.resolve(["Fargo"]).tolist() == [6]
    pd.read_csv(tmp_path / "items.csv").drop(columns=["title"]).to_csv(tmp_path / "items.csv", index=False)
    rewrite_manifest(tmp_path)
    with pytest.raises(recommender.ArtefactError, match=r"items.csv has no column\(s\) \['title'\]"):
        recommender.Recommender.load(tmp_path)


# ---------------------------------------------------------------- 8. manifest and checksum
def test_8_both_sha256sum_forms_load_and_a_malformed_line_is_named(tmp_path):
    make_rec().save(tmp_path)
    rewrite_manifest(tmp_path, binary=True)
    recommender.Recommender.load(tmp_path)
    text = (tmp_path / recommender.MANIFEST).read_text().replace(" *", " ")
    (tmp_path / recommender.MANIFEST).write_text(text)
    with pytest.raises(recommender.ArtefactError, match="line 1 is not"):
        recommender.Recommender.load(tmp_path)


def test_8_the_manifest_covers_the_weights_sidecar(tmp_path):
    make_rec().save(tmp_path)
    assert "weights.pt.sha256" in (tmp_path / recommender.MANIFEST).read_text()
    rewrite_manifest(tmp_path, ("weights.pt", "config.json", "items.csv"))
    with pytest.raises(recommender.ArtefactError, match=r"format 2\) does not list \['weights.pt.sha256'\]"):
        recommender.Recommender.load(tmp_path)


@pytest.mark.parametrize("spelling", [str.upper, lambda c: c + "\n", lambda c: f"  sha256:{c} ",
                                      lambda c: f"SHA256:{c.upper()}"])
def test_8_the_checksum_is_compared_after_normalising(tmp_path, spelling):
    checksum = make_rec().save(tmp_path)
    assert recommender.Recommender.load(tmp_path, checksum=spelling(checksum)).checksum == checksum
    with pytest.raises(recommender.ArtefactError, match="not a sha256"):
        recommender.Recommender.load(tmp_path, checksum="sha1:abc")


def test_8_swapped_weights_with_a_rewritten_manifest_are_caught_only_by_a_pinned_checksum(tmp_path):
    good = make_rec().save(tmp_path / "good")
    other = make_rec(n_heads=1)
    torch.manual_seed(1)
    other.model.item_emb.weight.data.normal_()
    other.save(tmp_path / "other")
    for name in ("weights.pt", "weights.pt.sha256"):
        (tmp_path / "good" / name).write_bytes((tmp_path / "other" / name).read_bytes())
    edit_config(tmp_path / "good", lambda c: c["config"].update(n_heads=1))
    recommender.Recommender.load(tmp_path / "good")  # consistent files: the manifest cannot tell
    with pytest.raises(recommender.ArtefactError, match="a different or altered artefact"):
        recommender.Recommender.load(tmp_path / "good", checksum=good)


# ---------------------------------------------------------------- 9. observe()
@pytest.mark.parametrize("timestamp, error", [
    (float("nan"), ValueError), (float("inf"), ValueError), (np.float64("-inf"), ValueError),
    ("abc", TypeError), (None, TypeError), (True, TypeError), (pd.NaT, ValueError),
])
def test_9_timestamps_must_be_finite_numbers(timestamp, error):
    store = OnlineHistories(window=3, late="refuse")
    with pytest.raises(error, match="timestamp must be"):
        store.observe(1, 5, timestamp)
    assert 1 not in store  # nothing stored
    assert store.observe(1, 5, 10.0) == "added" and store.observe(1, 6, 11) == "added"  # later events still go in
    assert store.observe(1, 7, 9) == "refused"


@pytest.mark.parametrize("item", [2.9, np.float64(3.7), True, "3", None, 0])
def test_9_items_must_be_integer_course_ids(item):
    store = OnlineHistories(window=3)
    with pytest.raises((TypeError, ValueError), match="item"):
        store.observe(1, item, 1.0)
    assert store.observe(1, np.int64(3), 1.0) == "added" and store.history(1).tolist() == [3]


def test_9_one_kind_of_timestamp_per_store():
    store = OnlineHistories(window=3)
    day = datetime.datetime(2024, 5, 1)
    assert store.observe(1, 5, day) == "added"
    assert store.observe(1, 6, day - datetime.timedelta(hours=1)) == "inserted"
    assert store.observe(1, 6, pd.Timestamp(day - datetime.timedelta(hours=1))) == "duplicate"
    with pytest.raises(TypeError, match="keeps datetime timestamps"):
        store.observe(1, 7, 1.5)
    assert store.history(1).tolist() == [6, 5]


def test_9_the_recommender_refuses_float_and_bool_items():
    rec = make_rec()
    for item in (20.0, np.float64(20.9), True):
        with pytest.raises(recommender.RecommendError, match="not bool or float"):
            rec.observe("u", item, 1.0)
    assert rec.observe("u", "20", 1.0) == "added" and rec.users.history("u").tolist() == [2]


# ---------------------------------------------------------------- 10. pseudonyms
@pytest.mark.parametrize("key, error, says", [
    (b"", ValueError, "0 bytes"), (b"k", ValueError, "1 bytes"), (b"k" * 15, ValueError, "at least 16"),
    ("k" * 32, TypeError, "must be bytes, not str"), (None, KeyError, privacy.KEY_ENV),
])
def test_10_short_or_textual_keys_are_refused(monkeypatch, key, error, says):
    monkeypatch.delenv(privacy.KEY_ENV, raising=False)
    monkeypatch.delenv(privacy.KEY_FILE_ENV, raising=False)
    with pytest.raises(error, match=says):
        privacy.Pseudonymiser(key)


def test_10_a_short_environment_key_is_refused_and_a_good_one_is_used(monkeypatch):
    monkeypatch.setenv(privacy.KEY_ENV, "short")
    with pytest.raises(ValueError, match="at least 16"):
        privacy.Pseudonymiser()
    monkeypatch.setenv(privacy.KEY_ENV, KEY.decode())
    assert privacy.Pseudonymiser()(1) == privacy.Pseudonymiser(KEY)(1)


def test_10_one_user_one_pseudonym_whatever_the_spelling():
    pseudo = privacy.Pseudonymiser(KEY)
    assert len({pseudo(u) for u in (1, 1.0, "1", b"1", " 1 ", np.int64(1), np.float32(1), "1.0")}) == 1
    assert pseudo(1) != pseudo(2) and pseudo("alice") == pseudo(b"alice")
    for bad in (1.5, float("nan"), True, None, ""):
        with pytest.raises((TypeError, ValueError)):
            pseudo(bad)


def test_10_a_row_without_a_user_id_is_refused_by_frame():
    pseudo = privacy.Pseudonymiser(KEY)
    events = pd.DataFrame({"user_id": [1, None, 2], "item_id": [5, 6, 7], "timestamp": [1, 2, 3]})
    with pytest.raises(ValueError, match=r"missing in 1 row\(s\) \(index \[1\]"):
        pseudo.frame(events)
    mixed = pseudo.frame(pd.DataFrame({"user_id": [1, "1", 1.0], "item_id": [5, 6, 7]}))
    assert mixed["user_id"].nunique() == 1


# ---------------------------------------------------------------- 11. deletion
def test_11_delete_user_matches_every_spelling(tmp_path):
    cache = OnlineHistories(window=5)
    cache.observe(7, 5, 1.0)
    log = privacy.EventLog(tmp_path / "events.csv")
    (tmp_path / "events.csv").write_text("user_id,item_id,timestamp\n7.0,5,1\n8.0,6,2\n,9,3\n")
    assert privacy.delete_user("7", {"log": log, "cache": cache}) == {"log": 1, "cache": 1}
    assert 7 not in cache and log.read()["item_id"].tolist() == [6, 9]
    with pytest.warns(UserWarning, match="nothing was deleted"):
        assert privacy.delete_user(7, {"log": log, "cache": cache}) == {"log": 0, "cache": 0}


# ---------------------------------------------------------------- 12. empty catalogue
def test_12_an_empty_catalogue_is_refused_with_a_clear_message():
    model = SASRec(SASRecConfig(0, max_len=4, hidden=8, n_layers=1, n_heads=2))
    with pytest.raises(ValueError, match="no items"):
        compress.compress_items(model, "pq")
    ids = IdMap(pd.Index([1]), pd.Index([], dtype=np.int64))
    with pytest.raises(ValueError, match="catalogue is empty"):
        recommender.Recommender(model, recommender.catalogue(ids))


# ---------------------------------------------------------------- left from the old suite
def test_training_sequences_all_of_length_1_say_there_is_nothing_to_train_on():
    with pytest.raises(ValueError, match="nothing to train on"):
        batches.causal_batches([np.array([1]), np.array([2])], TrainConfig(max_len=4, batch_size=2))
    assert len(batches.CausalBatches([np.array([1])], 4, 2)) == 0  # no NaN on the way


def test_evaluate_warns_when_n_items_leaves_the_models_items_unranked():
    model = SASRec(SASRecConfig(6, max_len=4, hidden=8, n_layers=1, n_heads=2))
    ev = EvalSet(np.array([0]), [np.array([1, 2])], np.array([3]))
    with pytest.warns(UnrankedItemsWarning, match="items 5..6 are never ranked"):
        evaluate(model, ev, 4, ks=(1,))
    assert math.isfinite(evaluate(model, ev, 4, ks=(1,), subset=True).summary()["ndcg@1"])


def test_user_key_is_the_one_spelling():
    assert [user_key(u) for u in (7, "7", 7.0, "7.0", b"7", " 7 ", "007")] == ["7"] * 7
