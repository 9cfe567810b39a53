import dataclasses
import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import data, datasets, preprocess
from helpers.data import DataFormatError

SHARED = Path(os.environ.get("COURSE_DATA_DIR") or datasets.REPO_ROOT.parent / "shared" / "data")
needs_shared = pytest.mark.shared_data  # files checked against the registry's sha256 (tests/conftest.py)


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """An empty cache, and a download that fails: every test reads local files only."""
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path / "cache"))

    def no_network(url, dest, known_hash):
        raise AssertionError(f"tests must not download ({url})")
    monkeypatch.setattr(datasets, "download_file", no_network)


def write_dataset(monkeypatch, root: Path, name: str, files: dict[str, bytes]) -> Path:
    """Write toy ``files`` under ``root`` and pin them in a copy of ``name``'s spec."""
    for rel, content in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(content)
    pins = {rel: hashlib.sha256(content).hexdigest() for rel, content in files.items()}
    spec = datasets.DATASETS[name]
    monkeypatch.setitem(datasets.DATASETS, name, dataclasses.replace(spec, files=pins))
    return root


# --- the real files -------------------------------------------------------------------------

@needs_shared
@pytest.mark.parametrize("name, users, items, rows", [
    ("ml-100k", 943, 1682, 100_000),
    ("ml-latest-small", 610, 9724, 100_836),
    ("beauty", 22_363, 12_101, 198_502),
])
def test_published_counts(name, users, items, rows):
    df = data.load_interactions(name, SHARED)
    assert (df["user_id"].nunique(), df["item_id"].nunique(), len(df)) == (users, items, rows)
    assert df.attrs == {"malformed": 0, "dataset": name}
    assert df.index.equals(pd.RangeIndex(rows))


@needs_shared
def test_movielens_columns_dtypes_and_file_order():
    df = data.load_interactions("ml-100k", SHARED)
    assert list(df.columns) == ["user_id", "item_id", "timestamp", "rating"]
    assert df.dtypes.tolist() == [np.int64, np.int64, np.int64, np.float64]
    assert df.iloc[0].tolist() == [196, 242, 881250949, 3.0]  # first line of u.data
    small = data.load_interactions("ml-latest-small", SHARED)
    assert small.iloc[0].tolist() == [1, 1, 964982703, 4.0]
    assert small["rating"].min() == 0.5 and small["rating"].max() == 5.0


@needs_shared
def test_beauty_matches_a_plain_python_reading():
    df = data.load_interactions("beauty", SHARED)
    assert list(df.columns) == ["user_id", "item_id", "timestamp"]
    rows = [(int(line.split()[0]), int(item), t)
            for line in (SHARED / "amazon/Beauty.txt").read_text().splitlines()
            for t, item in enumerate(line.split()[1:])]
    assert np.array_equal(df.to_numpy(), np.array(rows, dtype=np.int64))


@needs_shared
def test_movielens_100k_items():
    items = data.load_items("ml-100k", SHARED)
    assert len(items) == 1682 and items["item_id"].tolist() == list(range(1, 1683))
    toy_story = items.iloc[0]
    assert (toy_story["title"], toy_story["year"]) == ("Toy Story", 1995)
    assert toy_story["genres"] == ["Animation", "Children's", "Comedy"]
    assert toy_story["release_date"] == pd.Timestamp("1995-01-01")
    unknown = items.set_index("item_id").loc[267]
    assert unknown["title"] == "unknown" and unknown["genres"] == []
    assert pd.isna(unknown["year"]) and pd.isna(unknown["release_date"])
    assert items["year"].dtype == "Int64" and items["year"].isna().sum() == 1
    assert items.set_index("item_id").loc[1412, "title"].endswith("Great Giving (V)")


@needs_shared
def test_movielens_latest_small_items_and_tags():
    items = data.load_items("ml-latest-small", SHARED).set_index("item_id")
    assert len(items) == 9742 and items.index.is_monotonic_increasing
    assert items.loc[1, "tags"] == ["pixar", "fun"] and items.loc[1, "year"] == 1995
    assert items.loc[2, "tags"] == ["fantasy", "magic board game", "Robin Williams", "game"]
    assert items["year"].isna().sum() == 13  # titles with no "(yyyy)", e.g. "Babylon 5"
    assert (items["genres"].map(len) == 0).sum() == 34  # "(no genres listed)"
    assert sum(len(t) for t in items["tags"]) <= 3683
    assert not items["title"].str.endswith(" ").any()


@needs_shared
def test_beauty_items_are_ids_only():
    items = data.load_items("beauty", SHARED)
    assert list(items.columns) == ["item_id"] and items["item_id"].tolist() == list(range(1, 12_102))


# --- formats and bad input, on toy files ------------------------------------------------------

def test_split_title_by_hand():
    titles = pd.Series(["Toy Story (1995)", "Two Friends (1986) ", "Land (1995) (V)",
                        "1900 (Novecento) (1976)", "Babylon 5", "Death Note (2006–2007)"])
    title, year = data.split_title(titles)
    assert title.tolist() == ["Toy Story", "Two Friends", "Land (V)", "1900 (Novecento)",
                              "Babylon 5", "Death Note (2006–2007)"]
    assert year.tolist() == [1995, 1986, 1995, 1976, pd.NA, pd.NA]


def test_malformed_rows_are_dropped_and_counted(tmp_path, monkeypatch):
    lines = [b"1\t10\t4\t100", b"1\t11\t3", b"x\t12\t5\t101", b"2\t1.5\t5\t102",
             b"2\t13\t5\t103\t9", b"", b"2\t14\tfive\t104", b"3\t15\t2\t105",
             *[b"4\t%d\t1\t%d" % (i, 200 + i) for i in range(4)]]
    write_dataset(monkeypatch, tmp_path, "ml-100k", {"ml-100k/u.data": b"\n".join(lines) + b"\n",
                                                     "ml-100k/u.item": b"", "ml-100k/u.genre": b""})
    with pytest.raises(DataFormatError, match=r"5 of 11 lines are malformed.*first is line 2 \('1\\t11\\t3'\): 3 fields"):
        data.load_interactions("ml-100k", tmp_path)
    with pytest.warns(UserWarning, match="5 of 11 lines are malformed"):
        df = data.load_interactions("ml-100k", tmp_path, max_malformed=0.5)
    assert df.attrs["malformed"] == 5  # too short, user "x", item 1.5, too long, rating "five"
    assert df.values.tolist() == [[1, 10, 100, 4.0], [3, 15, 105, 2.0],
                                  *[[4, i, 200 + i, 1.0] for i in range(4)]]


def test_a_long_first_line_is_malformed_not_truncated(tmp_path):
    path = tmp_path / "u.data"
    path.write_bytes(b"1\t2\t3\t4\t5\n6\t7\t8\t9\n10\t11\t12\t13\n")
    with pytest.warns(UserWarning, match=r"line 1 \('1\\t2\\t3\\t4\\t5'\): 5 fields"):
        df = data.read_table(path, "\t", ["user_id", "item_id", "rating", "timestamp"],
                             ints=("user_id", "item_id", "timestamp"), floats=("rating",), max_malformed=0.5)
    assert df["user_id"].tolist() == [6, 10] and df.attrs["malformed"] == 1


def test_mostly_malformed_or_empty_files_raise(tmp_path):
    names, ints = ["user_id", "item_id"], ("user_id", "item_id")
    (tmp_path / "bad").write_text("1\t2\na\tb\nc\td\n")
    with pytest.raises(DataFormatError, match="2 of 3 lines are malformed"):
        data.read_table(tmp_path / "bad", "\t", names, ints=ints)
    (tmp_path / "empty").write_text("")
    with pytest.raises(DataFormatError, match="empty"):
        data.read_table(tmp_path / "empty", "\t", names, ints=ints)
    (tmp_path / "header_only.csv").write_text("userId,movieId\n")
    with pytest.raises(DataFormatError, match="empty"):
        data.read_table(tmp_path / "header_only.csv", ",", names, ints=ints, header=True)
    (tmp_path / "blank.txt").write_text("\n\n")
    with pytest.raises(DataFormatError, match="empty"):
        data.read_sequence_file(tmp_path / "blank.txt")
    (tmp_path / "text.txt").write_text("1 2 3\nuser a b\nuser c\n")
    with pytest.raises(DataFormatError, match="malformed"):
        data.read_sequence_file(tmp_path / "text.txt")


def test_sequence_file_positions_and_malformed_lines(tmp_path):
    (tmp_path / "s.txt").write_bytes(b"7 3 1 3\n8\n9 4 x\n\n5  2\t6 \r\n")
    with pytest.warns(UserWarning, match=r"2 of 4 lines.*line 2 \('8'\): a user id with no item"):
        df = data.read_sequence_file(tmp_path / "s.txt", max_malformed=0.5)
    assert df.values.tolist() == [[7, 3, 0], [7, 1, 1], [7, 3, 2], [5, 2, 0], [5, 6, 1]]
    assert df.attrs["malformed"] == 2  # a user with no item, a non-numeric item


def test_generic_sequence_dataset_loads(tmp_path, monkeypatch):
    text = b"1 5 6\n2 6 7 5\n"
    spec = datasets.sequence_dataset("toys", "https://example.org/Toys_and_Games.txt",
                                     hashlib.sha256(text).hexdigest())
    monkeypatch.setitem(datasets.DATASETS, "toys", spec)
    (tmp_path / "toys").mkdir()
    (tmp_path / "toys/Toys_and_Games.txt").write_bytes(text)
    df = data.load_interactions("toys", tmp_path)
    assert df.values.tolist() == [[1, 5, 0], [1, 6, 1], [2, 6, 0], [2, 7, 1], [2, 5, 2]]
    assert data.load_items("toys", tmp_path)["item_id"].tolist() == [5, 6, 7]


def test_movielens_1m_format(tmp_path, monkeypatch):
    ratings = b"1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n"
    movies = ('1::Toy Story (1995)::Animation|Children\'s|Comedy\n'
              '2::"Great" Caf\xe9 (1999)::Drama\n').encode("latin-1")
    write_dataset(monkeypatch, tmp_path, "ml-1m", {"ml-1m/ratings.dat": ratings, "ml-1m/movies.dat": movies})
    df = data.load_interactions("ml-1m", tmp_path)
    assert df.values.tolist() == [[1, 1193, 978300760, 5.0], [1, 661, 978302109, 3.0],
                                  [2, 1193, 978298413, 4.0]]
    items = data.load_items("ml-1m", tmp_path)
    assert items["title"].tolist() == ["Toy Story", '"Great" Café']
    assert items["year"].tolist() == [1995, 1999]
    assert items["genres"].tolist() == [["Animation", "Children's", "Comedy"], ["Drama"]]


def test_movielens_100k_items_are_latin_1(tmp_path, monkeypatch):
    genre = b"unknown|0\nAction|1\nDrama|2\n\n"
    item = b"1|Caf\xe9 (1995)|01-Jan-1995||http://x|0|1|1\n2|unknown||||1|0|0\n3|broken|line\n"
    write_dataset(monkeypatch, tmp_path, "ml-100k",
                  {"ml-100k/u.data": b"1\t1\t5\t1\n", "ml-100k/u.item": item, "ml-100k/u.genre": genre})
    with pytest.warns(UserWarning, match=r"u.item: 1 of 3 lines.*line 3 \('3\|broken\|line'\)"):
        items = data.load_items("ml-100k", tmp_path, max_malformed=0.5)
    assert items["title"].tolist() == ["Café", "unknown"] and items.attrs["malformed"] == 1
    assert items["genres"].tolist() == [["Action", "Drama"], []]
    assert items["year"].tolist() == [1995, pd.NA]


def test_unknown_name_is_refused():
    with pytest.raises(datasets.UnknownDataset, match="ml-100k"):
        data.load_interactions("movielens")


# --- issue 12: no silent wrong results on bad input ---------------------------------------------

def test_item01_user_on_two_lines_is_appended_in_file_order(tmp_path):
    (tmp_path / "s.txt").write_text("1 10 11 12\n2 20 21 22\n1 13 14 15\n")
    df = data.read_sequence_file(tmp_path / "s.txt")
    ordered, _ = preprocess.sort_chronologically(df)
    assert ordered.loc[ordered["user_id"] == 1, "item_id"].tolist() == [10, 11, 12, 13, 14, 15]
    assert df.loc[df["user_id"] == 1, "timestamp"].tolist() == [0, 1, 2, 3, 4, 5]
    assert df.loc[df["user_id"] == 2, "timestamp"].tolist() == [0, 1, 2]


def test_item02_malformed_lines_warn_then_refuse_naming_the_first(tmp_path):
    good = [f"{u} {u + 1} {u + 2}" for u in range(1, 200)]
    (tmp_path / "half.txt").write_text("\n".join(x for g in good[:100] for x in (g, f"{g} x")) + "\n")
    with pytest.raises(DataFormatError, match=r"half.txt: 100 of 200 lines.*first is line 2 \('1 2 3 x'\): "
                                              r"a token is not a non-negative integer"):
        data.read_sequence_file(tmp_path / "half.txt")
    (tmp_path / "few.txt").write_text("\n".join([*good[:150], "7", *good[150:]]) + "\n")
    with pytest.warns(UserWarning, match=r"few.txt: 1 of 200 lines.*line 151 \('7'\)"):
        assert data.read_sequence_file(tmp_path / "few.txt").attrs["malformed"] == 1


def test_item03_inf_ratings_and_ids_beyond_int64_are_malformed(tmp_path):
    names, kw = ["user_id", "item_id", "rating"], dict(ints=("user_id", "item_id"), floats=("rating",))
    rows = [f"{u}\t{u}\t4" for u in range(1, 40)]
    (tmp_path / "r.tsv").write_text("\n".join([*rows, "40\t40\tinf", "41\t99999999999999999999\t3",
                                               "9223372036854775807\t42\t1"]) + "\n")
    with pytest.warns(UserWarning, match=r"2 of 42 lines.*line 40 \('40\\t40\\tinf'\): rating 'inf' is not finite"):
        df = data.read_table(tmp_path / "r.tsv", "\t", names, **kw)
    assert df["rating"].max() == 4.0 and (df[["user_id", "item_id"]] > 0).all().all()
    assert df["user_id"].iloc[-1] == 2**63 - 1  # the largest int64 is kept exactly
    (tmp_path / "s.txt").write_text("\n".join([*(f"{u} {u}" for u in range(1, 40)),
                                               "40 99999999999999999999 1"]) + "\n")
    with pytest.warns(UserWarning, match=r"line 40 .*an id beyond int64"):
        seq = data.read_sequence_file(tmp_path / "s.txt")
    assert len(seq) == 39 and seq["item_id"].min() > 0
