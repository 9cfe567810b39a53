"""Recommender: raw IDs and titles in, ranked items out; the fallback; the artefact's checksum."""

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import recommender, textrec
from helpers.preprocess import IdMap
from helpers.recommender import AmbiguousTitle, ArtefactError, Recommender, UnknownItems
from helpers.sasrec import SASRec, SASRecConfig
from helpers.sequences import pad_left

RAW = [10, 20, 30, 40, 50, 60]  # raw item IDs; course IDs are 1..6 in this order


@pytest.fixture
def rec() -> Recommender:
    ids = IdMap(pd.Index([1, 2]), pd.Index(RAW))
    items = pd.DataFrame({"item_id": RAW, "title": ["Heat", "Heat", "Toy Story", "Alien", "Babe", "Fargo"],
                          "year": pd.array([1995, 1986, 1995, 1979, 1995, 1996], dtype="Int64"),
                          "genres": [["Action"], ["Action"], ["Animation", "Comedy"], ["Horror", "Sci-Fi"],
                                     ["Comedy"], ["Crime"]]})
    popularity = [np.array([3, 3, 3, 5, 5, 1]), np.array([3, 5, 2, 2])]  # item 3 most popular, then 5, 2
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(6, max_len=4, hidden=8, n_layers=1, n_heads=2))
    return Recommender(model, recommender.catalogue(ids, items, popularity))


def test_catalogue_maps_course_ids_to_raw_ids_titles_and_counts(rec):
    assert rec.items.loc[3, "raw_id"] == 30 and rec.items.loc[3, "title"] == "Toy Story"
    assert rec.items["popularity"].tolist() == [1, 2, 4, 0, 3, 0]


def test_resolve_raw_ids_and_titles(rec):
    assert rec.resolve([30, "toy story", "Heat (1986)", "Alien"]).tolist() == [3, 3, 2, 4]


def test_unknown_items_are_all_listed(rec):
    with pytest.raises(UnknownItems, match=r"\[99, 'Jaws'\]") as err:
        rec.recommend([10, 99, "Jaws"])
    assert err.value.items == [99, "Jaws"]


def test_an_ambiguous_title_lists_its_candidates(rec):
    with pytest.raises(AmbiguousTitle) as err:
        rec.resolve(["Heat"])
    assert set(err.value.candidates) == {10, 20}


def test_empty_history_gets_the_labelled_popularity_fallback(rec):
    answer = rec.recommend([], k=3)
    assert answer.source.startswith("popularity")
    assert [r.item for r in answer.items] == [30, 50, 20]
    assert all(r.because == [] for r in answer.items)


def test_recommend_matches_scoring_by_hand_and_excludes_seen(rec):
    history = [10, 30, 40]
    answer = rec.recommend(history, k=10)
    scores = rec.model.score(pad_left([np.array([1, 3, 4])], 4))[0]  # (V,)
    scores[[0, 1, 3, 4]] = float("-inf")
    expected = [RAW[i - 1] for i in scores.topk(3).indices.tolist()]
    assert answer.source == "model" and [r.item for r in answer.items] == expected  # only 3 unseen left
    assert np.allclose([r.score for r in answer.items], scores.topk(3).values.numpy(), atol=1e-5)
    for r in answer.items:
        assert set(r.because) <= set(history) and len(r.because) <= 2
    assert len(rec.recommend(history, k=10, exclude_seen=False).items) == 6


def test_because_sentences_name_titles(rec):
    lines = rec.recommend(["Toy Story", "Alien"], k=2, explain_top=1).sentence()
    assert len(lines) == 2 and all("because you watched" in line or "popularity" in line for line in lines)


def test_artefact_round_trip_gives_the_same_answers(rec, tmp_path):
    checksum = rec.save(tmp_path / "art")
    loaded = Recommender.load(tmp_path / "art", checksum=checksum)
    assert loaded.checksum == checksum
    for history in ([10, 30, 40], ["Babe"], []):
        a, b = rec.recommend(history), loaded.recommend(history)
        assert [r.item for r in a.items] == [r.item for r in b.items]
        assert np.allclose([r.score for r in a.items], [r.score for r in b.items])
    assert loaded.items.loc[3, "genres"] == ["Animation", "Comedy"] and loaded.items.loc[1, "year"] == 1995


@pytest.mark.parametrize("name", ["weights.pt", "items.csv", "config.json"])
def test_the_checksum_catches_a_modified_file(rec, tmp_path, name):
    rec.save(tmp_path)
    path = tmp_path / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtefactError, match=name):
        Recommender.load(tmp_path)


def test_a_different_expected_checksum_is_refused(rec, tmp_path):
    rec.save(tmp_path)
    with pytest.raises(ArtefactError, match="expected"):
        Recommender.load(tmp_path, checksum="0" * 64)
    (tmp_path / "items.csv").unlink()
    with pytest.raises(ArtefactError, match="missing"):
        Recommender.load(tmp_path)


def test_a_text_aware_model_is_baked_to_a_plain_table_with_the_same_scores():
    torch.manual_seed(0)
    config = SASRecConfig(6, max_len=4, hidden=8, n_layers=1, n_heads=2)
    model = textrec.text_sasrec(config, torch.randn(7, 5)).eval()
    window = torch.tensor([[0, 1, 2, 3]])
    before = model.score(window)
    assert torch.allclose(recommender.bake(model).score(window), before)
    assert isinstance(model.item_emb, torch.nn.Embedding)


def test_bad_k(rec):
    with pytest.raises(recommender.RecommendError, match="k must be"):
        rec.recommend([10], k=0)


def test_observe_keeps_per_user_windows_and_recommend_for_answers_from_them(rec):
    assert rec.observe("ann", 10, 100.0) == "added"
    assert rec.observe("ann", "Toy Story", 200.0) == "added"
    assert rec.observe("ann", 30, 200.0) == "duplicate"
    assert rec.observe("ann", 40, 150.0) == "inserted"  # out of order: put in place
    assert rec.users.history("ann").tolist() == [1, 4, 3]
    expected = rec.recommend([10, 40, 30], k=3)
    assert [r.item for r in rec.recommend_for("ann", k=3).items] == [r.item for r in expected.items]
    assert rec.recommend_for("bob", k=2).source.startswith("popularity")
    with pytest.raises(UnknownItems):
        rec.observe("ann", 99, 300.0)
