import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import datasets, text
from helpers.datasets import ChecksumError
from helpers.preprocess import IdMap

SHARED = Path(os.environ.get("COURSE_DATA_DIR") or datasets.REPO_ROOT.parent / "shared" / "data")
needs_shared = pytest.mark.skipif(not (SHARED / "SHA256SUMS").is_file(),
                                  reason="reference data not found; set COURSE_DATA_DIR")


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
