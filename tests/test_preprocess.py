import os
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import preprocess as pp

SHARED = Path(os.environ.get("COURSE_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")


def frame(rows, columns=("user_id", "item_id", "timestamp")) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(columns))


def pairs(df: pd.DataFrame) -> list[tuple]:
    return list(df[["user_id", "item_id"]].itertuples(index=False, name=None))


# --- drop_invalid, drop_duplicates, implicit ------------------------------------------------

def test_drop_invalid_counts_each_reason_and_casts_to_int():
    df = frame([
        (1, 10, 100),  # good
        (np.nan, 10, 101),  # missing user
        (2, -3, 102),  # negative item
        (2, 11, "abc"),  # timestamp not a number
        (2, 12, None),  # missing timestamp
        (3, 12, 1.5),  # fractional timestamp
        (3, 12.0, 103),  # good (a float id that is whole)
    ])
    out, rep = pp.drop_invalid(df)
    assert pairs(out) == [(1, 10), (3, 12)]
    assert out["timestamp"].tolist() == [100, 103]
    assert all(out[c].dtype == np.int64 for c in ("user_id", "item_id", "timestamp"))
    assert rep.counts == {"bad user_id": 1, "bad item_id": 1, "bad timestamp": 3}
    assert (rep.rows_in, rep.rows_out, rep.users_out, rep.items_out) == (7, 2, 2, 2)


def test_drop_invalid_string_ids():
    df = frame([("a", "x", 1), ("", "x", 2), ("b", None, 3), ("  ", "y", 4)])
    out, rep = pp.drop_invalid(df)
    assert pairs(out) == [("a", "x")]
    assert rep.counts["bad user_id"] == 2 and rep.counts["bad item_id"] == 1


def test_drop_duplicates_exact_rows_only():
    df = frame([(1, 1, 5, 4.0), (1, 1, 5, 4.0), (1, 1, 5, 3.0), (2, 1, 5, 4.0)],
               ("user_id", "item_id", "timestamp", "rating"))
    out, rep = pp.drop_duplicates(df)
    assert out.index.tolist() == [0, 2, 3]  # the first copy stays, in place
    assert rep.counts == {"duplicates": 1}
    out, rep = pp.drop_duplicates(df, subset=["user_id", "item_id", "timestamp"])
    assert out.index.tolist() == [0, 3] and rep.counts == {"duplicates": 2}


def test_implicit_threshold():
    df = frame([(1, i, i, float(i)) for i in range(1, 6)], ("user_id", "item_id", "timestamp", "rating"))
    out, rep = pp.implicit(df, min_rating=4)
    assert out["item_id"].tolist() == [4, 5] and rep.rows_out == 2
    assert "rating" in out  # kept for reference
    out, rep = pp.implicit(df, min_rating=None)
    assert len(out) == 5 and rep.rows_in == rep.rows_out == 5
    with pytest.raises(KeyError):
        pp.implicit(df.drop(columns="rating"), min_rating=4)


# --- k-core ---------------------------------------------------------------------------------

def test_k_core_needs_two_passes_worked_by_hand():
    # Pass 1 (k = 2): items 3 and 4 have one user each -> drop (B,3) and (C,4).
    # Then B and C have one row each -> pass 2 drops (B,1) and (C,2).
    # A and D keep items 1 and 2, each now with two users: stable.
    df = frame([("A", 1, 0), ("A", 2, 1), ("B", 1, 2), ("B", 3, 3), ("C", 2, 4), ("C", 4, 5),
                ("D", 1, 6), ("D", 2, 7)])
    out, rep = pp.k_core(df, k_user=2, k_item=2)
    assert pairs(out) == [("A", 1), ("A", 2), ("D", 1), ("D", 2)]
    assert rep.counts["passes"] == 2
    assert (rep.rows_in, rep.rows_out, rep.users_out, rep.items_out) == (8, 4, 2, 2)
    again, rep = pp.k_core(out, 2, 2)
    assert rep.counts["passes"] == 0 and again.equals(out)


def test_k_core_can_empty_the_frame_and_rejects_bad_k():
    df = frame([(1, 1, 0), (1, 2, 1), (2, 1, 2)])
    out, rep = pp.k_core(df, 2, 2)
    assert len(out) == 0 and rep.users_out == 0
    with pytest.raises(ValueError):
        pp.k_core(df, 0, 5)


def test_k_core_matches_networkx_on_a_random_bipartite_graph():
    nx = pytest.importorskip("networkx")
    rng = np.random.default_rng(0)
    df = frame(np.column_stack([rng.integers(0, 80, 600), rng.zipf(1.6, 600) % 150, np.arange(600)]))
    df = df.drop_duplicates(["user_id", "item_id"])  # networkx counts a repeated edge once
    out, _ = pp.k_core(df, 4, 4)
    graph = nx.Graph([(("u", u), ("i", i)) for u, i in pairs(df)])
    core = nx.k_core(graph, 4)
    expected = {(u[1], i[1]) for u, i in (sorted(e, key=lambda n: n[0] != "u") for e in core.edges)}
    assert set(pairs(out)) == expected and len(expected) > 50


# --- ordering, reindexing, subsampling ------------------------------------------------------

def test_sort_chronologically_keeps_file_order_for_ties_not_item_order():
    df = frame([(2, 9, 5), (1, 30, 7), (1, 20, 7), (2, 8, 1), (1, 10, 7), (1, 40, 3)])
    out, rep = pp.sort_chronologically(df)
    assert pairs(out) == [(1, 40), (1, 30), (1, 20), (1, 10), (2, 8), (2, 9)]  # 30, 20, 10: file order
    assert rep.counts["ties"] == 2 and rep.rows_out == 6


def test_reindex_is_contiguous_and_round_trips():
    df = frame([("bob", "m7", 3), ("amy", "m2", 1), ("bob", "m2", 4), ("cat", "m9", 2)])
    out, ids = pp.reindex(df)
    assert out["user_id"].tolist() == [2, 1, 2, 3]  # amy=1, bob=2, cat=3 (sorted originals)
    assert out["item_id"].tolist() == [2, 1, 1, 3]  # m2=1, m7=2, m9=3; 0 stays PAD
    assert (ids.n_users, ids.n_items) == (3, 3)
    assert ids.item_to_original(out["item_id"]).tolist() == df["item_id"].tolist()
    assert ids.user_to_original(out["user_id"]).tolist() == df["user_id"].tolist()
    assert ids.item_from_original(["m9", "m2"]).tolist() == [3, 1]
    assert ids.items_frame().to_dict("list") == {"item_id": [1, 2, 3], "original_item_id": ["m2", "m7", "m9"]}
    with pytest.raises(IndexError):
        ids.item_to_original([0])
    with pytest.raises(KeyError):
        ids.item_from_original(["nope"])


def test_subsample_users_is_seeded_and_keeps_whole_users():
    df = frame([(u, i, i) for u in range(1, 11) for i in range(u)])
    a, rep = pp.subsample_users(df, 4, seed=1)
    b, _ = pp.subsample_users(df, 4, seed=1)
    c, _ = pp.subsample_users(df, 4, seed=2)
    assert a.equals(b) and not a.equals(c)
    assert a["user_id"].nunique() == 4 == rep.users_out
    sizes = a.groupby("user_id").size()
    assert (sizes.to_numpy() == sizes.index.to_numpy()).all()  # user u still has all its u rows
    assert pp.subsample_users(df, None)[0] is df and pp.subsample_users(df, 99)[0] is df


# --- filling side features ------------------------------------------------------------------

def test_fill_missing_mean_and_knn_by_hand():
    items = pd.DataFrame({"item_id": [1, 2, 3, 4, 5],
                          "year": pd.array([1990, 1994, None, 2010, 2012], dtype="Int64"),
                          "drama": [1, 1, 1, 0, 0], "score": [3.0, 3.2, 3.1, 4.5, 4.4]})
    filled, was = pp.fill_missing(items, "year", "mean")
    assert was.tolist() == [False, False, True, False, False]
    assert filled.loc[2, "year"] == pytest.approx((1990 + 1994 + 2010 + 2012) / 4)
    assert filled["year"].drop(2).tolist() == [1990, 1994, 2010, 2012]
    filled, was = pp.fill_missing(items, "year", "knn", features=["drama", "score"], k=2)
    assert filled.loc[2, "year"] == pytest.approx((1990 + 1994) / 2)  # the two other dramas
    assert filled["year"].drop(2).tolist() == [1990, 1994, 2010, 2012]
    with pytest.raises(ValueError):
        pp.fill_missing(items, "year", "median")
    with pytest.raises(ValueError):
        pp.fill_missing(items, "year", "knn")


# --- the pipeline -------------------------------------------------------------------------

def test_clean_collects_one_report_row_per_step():
    df = frame([(1, 1, 0), (1, 1, 0), (1, 2, 1), (2, 1, 2), (2, 3, 3), (None, 1, 4)])
    out, table = pp.clean(df, pp.drop_invalid, pp.drop_duplicates, partial(pp.k_core, k_user=2, k_item=2))
    assert table.index.tolist() == ["drop invalid", "drop duplicates", "2/2-core"]
    assert table["rows_out"].tolist() == [5, 4, 0]
    assert table["removed"].tolist() == [1, 1, 4]
    assert len(out) == 0


def test_prepare_runs_the_documented_order():
    df = frame([
        (7, 30, 5, 5.0), (7, 20, 5, 5.0), (7, 10, 1, 4.0), (7, 10, 1, 4.0),  # a duplicate
        (9, 20, 2, 5.0), (9, 40, 3, 1.0), (9, 10, 4, 5.0), (8, 99, 1, 5.0), (9, 30, 6, 4.0),
    ], ("user_id", "item_id", "timestamp", "rating"))
    p = pp.prepare(df, min_rating=4, k_core=(2, 2))
    assert p.report.index.tolist() == ["drop invalid", "drop duplicates", "implicit", "2/2-core",
                                       "subsample users", "sort chronologically", "reindex"]
    # implicit drops (9, 40); the 2-core drops user 8 and item 99 (one row each);
    # user 7: 10 (t=1), then 30 and 20 tied at t=5 in file order; user 9: 20, 10, 30
    back = list(zip(p.ids.user_to_original(p.interactions["user_id"]),
                    p.ids.item_to_original(p.interactions["item_id"])))
    assert back == [(7, 10), (7, 30), (7, 20), (9, 20), (9, 10), (9, 30)]
    assert (p.n_users, p.n_items) == (2, 3)
    assert p.interactions["item_id"].tolist() == [1, 3, 2, 2, 1, 3]  # 10 -> 1, 20 -> 2, 30 -> 3
    assert p.interactions["user_id"].tolist() == [1, 1, 1, 2, 2, 2]
    assert p.interactions.index.tolist() == list(range(6))
    assert p.report["rows_out"].tolist() == [9, 8, 7, 6, 6, 6, 6]


def test_prepare_on_movielens_100k():
    data = pytest.importorskip("helpers.data")
    if not (SHARED / "ml-100k" / "u.data").is_file():
        pytest.skip("reference data not found; set COURSE_DATA_DIR")
    ratings = data.load_interactions("ml-100k", SHARED)
    p = pp.prepare(ratings)
    # the 5-core of ML-100K used in the sequential-recommendation literature
    assert (len(p.interactions), p.n_users, p.n_items) == (99287, 943, 1349)
    assert p.report.loc["5/5-core", "removed"] == 713
    items = data.load_items("ml-100k", SHARED)
    flags = items["genres"].str.join("|").str.get_dummies()  # one 0/1 column per genre
    items = items.join(flags)
    items["mean_rating"] = items["item_id"].map(ratings.groupby("item_id")["rating"].mean())
    by_mean, was = pp.fill_missing(items, "year", "mean")
    assert items.loc[was, "item_id"].tolist() == [267]  # "unknown": no title year, no release date
    assert by_mean.loc[was, "year"].item() == pytest.approx(items["year"].mean())
    by_knn, _ = pp.fill_missing(items, "year", "knn", features=[*flags.columns, "mean_rating"])
    assert 1922 <= by_knn.loc[was, "year"].item() <= 1998
