"""Cleaning interaction logs, one counted step at a time.

Every step takes a frame with ``user_id``, ``item_id``, ``timestamp`` (and
``rating`` where the data has it) and returns ``(new_frame, StepReport)``.
:func:`clean` runs steps in order and gathers their reports into one table, so a
notebook can show how many rows, users and items each step removed.

No step reorders rows except :func:`sort_chronologically`, whose *stable* sort
keeps the file order for ties in time. :func:`reindex` then maps ids to
``1..n`` (``PAD = 0`` stays free) and :func:`prepare` does all of it in one call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial

import numpy as np
import pandas as pd
from sklearn.impute import KNNImputer

ID_COLUMNS = ("user_id", "item_id")


@dataclass
class StepReport:
    """What one cleaning step did: one row of the cleaning table."""

    step: str
    rows_in: int
    rows_out: int
    users_out: int
    items_out: int
    note: str = ""
    counts: dict[str, int] = field(default_factory=dict)  # step-specific numbers, e.g. {"passes": 3}


Step = Callable[[pd.DataFrame], tuple[pd.DataFrame, StepReport]]


def _report(step: str, before: pd.DataFrame, after: pd.DataFrame, note: str = "",
            **counts: int) -> StepReport:
    return StepReport(step, len(before), len(after), int(after["user_id"].nunique()),
                      int(after["item_id"].nunique()), note, {k: int(v) for k, v in counts.items()})


def _require(df: pd.DataFrame, *columns: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise KeyError(f"frame lacks column(s) {missing}; it has {list(df.columns)}")


def report_table(reports: Sequence[StepReport]) -> pd.DataFrame:
    """One row per step: rows in/out, rows removed, users and items left, note."""
    table = pd.DataFrame([{k: v for k, v in asdict(r).items() if k != "counts"} for r in reports])
    table.insert(3, "removed", table["rows_in"] - table["rows_out"])
    return table.set_index("step")


def drop_invalid(df: pd.DataFrame) -> tuple[pd.DataFrame, StepReport]:
    """Drop rows whose ids or timestamp are missing or invalid; count each reason.

    An id is invalid when missing (NaN, None, empty string) or, for numeric ids,
    negative or fractional. A timestamp must be a whole, non-negative, finite
    number (Unix seconds or a position). Numeric id columns and the timestamp come
    back as int64. A row bad in several ways is counted once per reason.
    """
    _require(df, *ID_COLUMNS, "timestamp")
    keep = pd.Series(True, index=df.index)
    counts: dict[str, int] = {}
    for col in ID_COLUMNS:
        values = df[col]
        bad = values.isna()
        if pd.api.types.is_numeric_dtype(values):
            bad |= (values < 0) | (values % 1 != 0)
        else:
            bad |= values.astype("string").str.strip().fillna("").eq("")
        counts[f"bad {col}"] = int(bad.sum())
        keep &= ~bad
    ts = pd.to_numeric(df["timestamp"], errors="coerce").astype("float64")
    bad_ts = ~np.isfinite(ts) | (ts < 0) | (ts % 1 != 0)
    counts["bad timestamp"] = int(bad_ts.sum())
    keep &= ~bad_ts
    out = df[keep].copy()
    out["timestamp"] = ts[keep].astype("int64")
    for col in ID_COLUMNS:
        if pd.api.types.is_numeric_dtype(out[col]):
            out[col] = out[col].astype("int64")
    note = ", ".join(f"{v} {k}" for k, v in counts.items())
    return out, _report("drop invalid", df, out, note, **counts)


def drop_duplicates(df: pd.DataFrame, subset: Sequence[str] | None = None) -> tuple[pd.DataFrame, StepReport]:
    """Drop exact duplicate rows (all columns equal, or only ``subset``), keeping the first."""
    out = df.drop_duplicates(subset=None if subset is None else list(subset), keep="first")
    n = len(df) - len(out)
    what = "all columns" if subset is None else ", ".join(subset)
    return out, _report("drop duplicates", df, out, f"{n} duplicates on {what}", duplicates=n)


def implicit(df: pd.DataFrame, min_rating: float | None = None) -> tuple[pd.DataFrame, StepReport]:
    """Turn ratings into implicit positives: keep rows with ``rating >= min_rating``.

    ``None`` keeps every interaction as a positive (the usual choice in sequential
    recommendation: watching a film at all is the signal). The ``rating`` column is
    kept for reference.
    """
    if min_rating is None:
        return df, _report("implicit", df, df, "every interaction is a positive")
    _require(df, "rating")
    out = df[df["rating"] >= min_rating]
    return out, _report("implicit", df, out, f"kept rating >= {min_rating}")


def k_core(df: pd.DataFrame, k_user: int = 5, k_item: int = 5) -> tuple[pd.DataFrame, StepReport]:
    """Keep the largest part where every user has >= k_user and every item >= k_item rows.

    Removing a rare item can push a user below ``k_user`` and the other way round,
    so passes repeat until one removes nothing. Each pass counts users and items on
    the rows left by the previous pass and drops both kinds at once.
    ``counts["passes"]`` is the number of passes that removed rows (0 when the
    frame already is a k-core).
    """
    if k_user < 1 or k_item < 1:
        raise ValueError("k_user and k_item must be >= 1")
    out, passes = df, 0
    while True:
        user_n = out.groupby("user_id")["user_id"].transform("size")
        item_n = out.groupby("item_id")["item_id"].transform("size")
        keep = (user_n >= k_user) & (item_n >= k_item)
        if keep.all():
            break
        out, passes = out[keep], passes + 1
    note = f"users >= {k_user}, items >= {k_item}; passes that removed rows: {passes}"
    return out, _report(f"{k_user}/{k_item}-core", df, out, note, passes=passes)


def subsample_users(df: pd.DataFrame, max_users: int | None, seed: int = 0) -> tuple[pd.DataFrame, StepReport]:
    """Keep ``max_users`` users drawn uniformly at random (``None``: keep all), with all their rows."""
    users = np.sort(df["user_id"].unique())
    if max_users is None or max_users >= len(users):
        return df, _report("subsample users", df, df, "all users kept")
    if max_users < 1:
        raise ValueError("max_users must be >= 1 or None")
    chosen = np.random.default_rng(seed).choice(users, size=max_users, replace=False)
    out = df[df["user_id"].isin(chosen)]
    return out, _report("subsample users", df, out, f"{max_users} of {len(users)} users, seed {seed}")


def sort_chronologically(df: pd.DataFrame) -> tuple[pd.DataFrame, StepReport]:
    """Group rows by user (ascending id), each user's rows by timestamp.

    The tie-break for equal timestamps is the ORIGINAL ROW ORDER: both sorts are
    stable, so two films rated in the same second stay in the order the file lists
    them. We never break ties by item id: in MovieLens many ratings share a second,
    and ordering them by id plants an artificial "next item has a larger id"
    pattern that models learn and that inflates their scores.
    ``counts["ties"]`` counts rows with the same user and time as the row before.
    """
    _require(df, "user_id", "timestamp")
    by_time = np.argsort(df["timestamp"].to_numpy(), kind="stable")
    users = pd.factorize(df["user_id"], sort=True)[0]
    order = by_time[np.argsort(users[by_time], kind="stable")]
    out = df.iloc[order]
    ties = int((out["user_id"].eq(out["user_id"].shift()) & out["timestamp"].eq(out["timestamp"].shift())).sum())
    return out, _report("sort chronologically", df, out, f"{ties} ties in time keep file order", ties=ties)


@dataclass
class IdMap:
    """Original ids of the contiguous ids made by :func:`reindex`.

    New user ``u`` (1-based) is ``users[u - 1]``; new item ``i`` is ``items[i - 1]``.
    Id 0 is never used, so item 0 stays ``PAD``.
    """

    users: pd.Index  # (n_users,) original user ids, sorted
    items: pd.Index  # (n_items,) original item ids, sorted

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @staticmethod
    def _back(index: pd.Index, ids) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 1 or ids.max() > len(index)):
            raise IndexError(f"ids must lie in 1..{len(index)}")
        return index.to_numpy()[ids - 1]

    @staticmethod
    def _forward(index: pd.Index, original) -> np.ndarray:
        codes = index.get_indexer(pd.Index(np.atleast_1d(np.asarray(original))))
        if (codes < 0).any():
            raise KeyError("some original ids are not in the map")
        return codes.astype(np.int64) + 1

    def item_to_original(self, item_ids) -> np.ndarray:
        return self._back(self.items, item_ids)

    def item_from_original(self, original_ids) -> np.ndarray:
        return self._forward(self.items, original_ids)

    def user_to_original(self, user_ids) -> np.ndarray:
        return self._back(self.users, user_ids)

    def user_from_original(self, original_ids) -> np.ndarray:
        return self._forward(self.users, original_ids)

    def items_frame(self) -> pd.DataFrame:
        """``item_id`` (1..n_items) next to ``original_item_id``, for joining titles."""
        return pd.DataFrame({"item_id": np.arange(1, self.n_items + 1), "original_item_id": self.items})


def reindex(df: pd.DataFrame) -> tuple[pd.DataFrame, IdMap]:
    """Map users to ``1..n_users`` and items to ``1..n_items`` in sorted original-id order.

    Rows keep their order. ``PAD = 0`` is never an item. The :class:`IdMap` goes back.
    """
    _require(df, *ID_COLUMNS)
    ids = IdMap(pd.Index(df["user_id"].unique()).sort_values(), pd.Index(df["item_id"].unique()).sort_values())
    out = df.copy()
    out["user_id"] = ids.users.get_indexer(df["user_id"]).astype(np.int64) + 1
    out["item_id"] = ids.items.get_indexer(df["item_id"]).astype(np.int64) + 1
    return out, ids


def fill_missing(items: pd.DataFrame, column: str, method: str = "mean", *,
                 features: Sequence[str] = (), k: int = 5) -> tuple[pd.DataFrame, pd.Series]:
    """Fill missing values of a side feature; return ``(filled_frame, was_missing)``.

    ``"mean"`` puts the column mean everywhere. ``"knn"`` uses scikit-learn's
    ``KNNImputer``: the mean of the ``k`` rows nearest in ``features`` (e.g. genre
    flags and mean rating), each feature standardised first so that no one feature
    dominates the distance. Only missing cells change; the column comes back as
    float64. ``was_missing`` is a boolean Series aligned with ``items``.
    """
    _require(items, column, *features)
    values = items[column].astype("float64")  # nullable Int64 <NA> -> NaN; filled means are fractional
    was_missing = values.isna()
    out = items.copy()
    if method == "mean":
        out[column] = values.fillna(values.mean())
    elif method == "knn":
        if not features:
            raise ValueError("knn filling needs feature columns")
        x = items[list(features)].to_numpy(dtype=np.float64, na_value=np.nan)  # (N, F)
        sd = np.nanstd(x, axis=0)
        x = (x - np.nanmean(x, axis=0)) / np.where(sd > 0, sd, 1.0)
        filled = KNNImputer(n_neighbors=k).fit_transform(np.column_stack([values.to_numpy(), x]))
        out[column] = filled[:, 0]
    else:
        raise ValueError(f"method must be 'mean' or 'knn', not {method!r}")
    return out, was_missing


def clean(df: pd.DataFrame, *steps: Step) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run ``steps`` in order; return the cleaned frame and the report table.

    A step with arguments is passed with ``functools.partial``, e.g.
    ``clean(df, drop_invalid, partial(k_core, k_user=10, k_item=10))``.
    """
    reports = []
    for step in steps:
        df, report = step(df)
        reports.append(report)
    return df, report_table(reports)


@dataclass
class Prepared:
    """A cleaned, chronologically sorted, reindexed interaction log."""

    interactions: pd.DataFrame  # user_id 1..n_users, item_id 1..n_items, timestamp[, rating]
    n_users: int
    n_items: int
    ids: IdMap  # back to the original ids (titles, demographics)
    report: pd.DataFrame  # one row per step, see report_table


_k_core = k_core  # `prepare` takes a parameter called k_core


def prepare(df: pd.DataFrame, *, min_rating: float | None = None, k_core: tuple[int, int] | None = (5, 5),
            max_users: int | None = None, seed: int = 0) -> Prepared:
    """The standard cleaning, in this exact order:

    1. :func:`drop_invalid`; 2. :func:`drop_duplicates` (exact rows);
    3. :func:`implicit` with ``min_rating``; 4. :func:`k_core` with ``(k_user, k_item)``
    unless ``None``; 5. :func:`subsample_users` to ``max_users`` with ``seed`` (after the
    k-core, and not re-cored: in a subsample an item may have fewer than k rows);
    6. :func:`sort_chronologically` (ties keep file order); 7. :func:`reindex` (items
    1..n_items over what is left, so ``n_items`` depends on the subsample).
    """
    steps: list[Step] = [drop_invalid, drop_duplicates, partial(implicit, min_rating=min_rating)]
    if k_core is not None:
        steps.append(partial(_k_core, k_user=k_core[0], k_item=k_core[1]))
    steps += [partial(subsample_users, max_users=max_users, seed=seed), sort_chronologically]
    out, report = clean(df, *steps)
    out, ids = reindex(out.reset_index(drop=True))
    row = _report("reindex", out, out, f"users 1..{ids.n_users}, items 1..{ids.n_items}")
    report = pd.concat([report, report_table([row])])
    return Prepared(out, ids.n_users, ids.n_items, ids, report)
