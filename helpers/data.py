"""Loaders: each data set as a tidy pandas frame that keeps the original ids.

``load_interactions(name)`` -> one row per event, in file order, with columns
``user_id``, ``item_id`` (int64), ``timestamp`` (int64) and, where the data has it,
``rating`` (float64). MovieLens timestamps are unix seconds; a sequence file (S3-Rec
format, e.g. Beauty) has no times, so ``timestamp`` is the position of the item in its
user's line (0, 1, 2, ...), which keeps the order.

``load_items(name)`` -> one row per item, sorted by ``item_id`` (a column, not the
index): ``title`` without the year, ``year`` (nullable ``Int64``), ``genres`` (a list
of str, ``[]`` where MovieLens says "unknown" or "(no genres listed)"), plus
``release_date`` (ml-100k, ``NaT`` where missing) or ``tags`` (ml-latest-small, a list
of each movie's distinct tags in file order). Sequence files carry no item text: only
``item_id``.

Lines that cannot be parsed (wrong number of fields, non-numeric ids) are dropped and
counted in ``df.attrs["malformed"]``; a file that is empty or mostly malformed raises
:class:`DataFormatError`. The files come from :func:`helpers.datasets.fetch`.
"""

from __future__ import annotations

import csv
import io
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from helpers.datasets import DatasetSpec, fetch, get_spec

COLUMNS = ["user_id", "item_id", "timestamp", "rating"]
_NO_GENRE = {"unknown", "(no genres listed)"}


class DataFormatError(ValueError):
    """A file that is empty, or whose lines are mostly not in the expected format."""


def _check_counts(path: Path | str, kept: int, malformed: int) -> None:
    if kept + malformed == 0:
        raise DataFormatError(f"{path} is empty")
    if malformed > kept:
        raise DataFormatError(f"{path}: {malformed} of {kept + malformed} lines are malformed "
                              "(wrong number of fields or non-numeric ids); wrong file or format?")


def read_table(path: Path, sep: str, names: list[str], *, ints: tuple[str, ...] = (),
               floats: tuple[str, ...] = (), header: bool = False, encoding: str = "utf-8",
               quoting: int = csv.QUOTE_NONE) -> pd.DataFrame:
    """Read a delimited file, dropping and counting lines that do not fit ``names``.

    A line is malformed when it has another number of fields than ``names``, or when a
    column in ``ints`` is not an integer or one in ``floats`` is not a number. ``sep`` may
    be several characters (``"::"``). Returns the good rows (index 0..n-1, ``ints`` as
    int64, ``floats`` as float64, other columns as str) with ``attrs["malformed"]``.
    """
    raw = Path(path).read_bytes()
    if len(sep) > 1:
        raw = raw.replace(sep.encode(), b"\t")
        sep = "\t"
    lines = raw.splitlines()
    n_lines = len(lines) - lines.count(b"") - int(header and bool(lines))
    extra = "_extra"  # catches a surplus field (too-long lines are cut at len(names) + 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", pd.errors.ParserWarning)
            df = pd.read_csv(io.BytesIO(raw), sep=sep, header=None, skiprows=int(header),
                             names=[*names, extra], index_col=False, on_bad_lines="skip",
                             encoding=encoding, quoting=quoting, keep_default_na=False,
                             na_values=[], dtype={extra: str})
    except pd.errors.EmptyDataError:
        df = pd.DataFrame(columns=[*names, extra])
    bad = (df[extra] != "").to_numpy() | df[names].isna().any(axis=1).to_numpy()
    for col in (*ints, *floats):
        values = pd.to_numeric(df[col], errors="coerce")  # "" and "x" become NaN
        bad |= values.isna().to_numpy()
        if col in ints:
            bad |= (values % 1 != 0).to_numpy()
        df[col] = values
    df = df.loc[~bad, names].reset_index(drop=True)
    malformed = n_lines - len(df)
    _check_counts(path, len(df), malformed)
    df = df.astype({**{c: "int64" for c in ints}, **{c: "float64" for c in floats}})
    df.attrs["malformed"] = malformed
    return df


def read_sequence_file(path: str | os.PathLike) -> pd.DataFrame:
    """An S3-Rec-format file (``user item item ...`` per line, oldest first) as a frame.

    Returns ``user_id``, ``item_id``, ``timestamp`` (int64), one row per item, in file order;
    ``timestamp`` is the item's position in its user's line (0, 1, 2, ...). Lines with a
    non-integer token or no item are dropped and counted in ``attrs["malformed"]``.
    """
    # Parsing every token in Python takes ~0.4 s on Beauty; pandas' C parser ~0.05 s.
    raw = Path(path).read_bytes()
    lines = raw.splitlines()
    if any(odd in raw for odd in (b"\t", b"  ", b"\f", b"\v")):  # make every separator one space
        lines = [b" ".join(line.split()) for line in lines]
    lines = [line.strip() for line in lines if line.strip()]
    good = [line for line in lines if b" " in line and not line.translate(None, b"0123456789 ")]
    malformed = len(lines) - len(good)
    _check_counts(path, len(good), malformed)
    tokens = pd.read_csv(io.BytesIO(b"\n".join(good).replace(b" ", b"\n")), header=None,
                         dtype=np.int64)[0].to_numpy()
    lengths = np.array([line.count(b" ") for line in good], dtype=np.int64)  # items per line
    heads = np.cumsum(lengths + 1) - (lengths + 1)  # where each line's user id sits
    is_item = np.ones(len(tokens), dtype=bool)
    is_item[heads] = False
    starts = np.cumsum(lengths) - lengths
    df = pd.DataFrame({
        "user_id": np.repeat(tokens[heads], lengths),
        "item_id": tokens[is_item],
        "timestamp": np.arange(lengths.sum(), dtype=np.int64) - np.repeat(starts, lengths),
    })
    df.attrs["malformed"] = malformed
    return df


def _path(root: Path, spec: DatasetSpec, filename: str) -> Path:
    """The file of ``spec`` whose name is ``filename``, under ``root``."""
    (rel,) = [r for r in spec.files if r.rsplit("/", 1)[-1] == filename]
    return root / rel


def load_interactions(name: str, data_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """Every interaction of data set ``name``, in file order (see the module docstring)."""
    spec = get_spec(name)
    root = fetch(name, data_dir)
    ratings = ["user_id", "item_id", "rating", "timestamp"]
    kw = dict(ints=("user_id", "item_id", "timestamp"), floats=("rating",))
    if spec.kind == "ml-100k":
        df = read_table(_path(root, spec, "u.data"), "\t", ratings, **kw)
    elif spec.kind == "ml-1m":
        df = read_table(_path(root, spec, "ratings.dat"), "::", ratings, **kw)
    elif spec.kind == "ml-latest":
        df = read_table(_path(root, spec, "ratings.csv"), ",", ratings, header=True, **kw)
    elif spec.kind == "sequence":
        df = read_sequence_file(root / next(iter(spec.files)))
    else:
        raise ValueError(f"no interaction loader for kind {spec.kind!r} (dataset {name!r})")
    out = df[[c for c in COLUMNS if c in df]]
    out.attrs.update(df.attrs, dataset=name)
    return out


def split_title(titles: pd.Series) -> tuple[pd.Series, pd.Series]:
    """``"Toy Story (1995)"`` -> ``("Toy Story", 1995)``; no ``(yyyy)``: title kept, year <NA>.

    The last ``(yyyy)`` is the year; text after it (e.g. ``" (V)"``) stays in the title.
    """
    titles = titles.str.strip()
    parts = titles.str.extract(r"^(?P<head>.*)\((?P<year>\d{4})\)(?P<tail>.*)$")  # greedy: last (yyyy)
    without_year = (parts["head"].str.strip() + " " + parts["tail"].str.strip()).str.strip()
    title = titles.where(parts["year"].isna(), without_year)
    return title.astype(str), pd.to_numeric(parts["year"]).astype("Int64")


def _genre_lists(genres: pd.Series) -> pd.Series:
    return genres.map(lambda s: [g for g in s.split("|") if g and g not in _NO_GENRE])


def _movielens_100k_items(root: Path, spec: DatasetSpec) -> pd.DataFrame:
    genre_names = read_table(_path(root, spec, "u.genre"), "|", ["genre", "index"], ints=("index",))
    genre_names = genre_names.sort_values("index")["genre"].tolist()
    flags = [f"g{i}" for i in range(len(genre_names))]
    df = read_table(_path(root, spec, "u.item"), "|",
                    ["item_id", "title", "release_date", "video_release_date", "imdb_url", *flags],
                    ints=("item_id", *flags), encoding="latin-1")
    title, year = split_title(df["title"])
    release = pd.to_datetime(df["release_date"], format="%d-%b-%Y", errors="coerce")
    year = year.fillna(release.dt.year.astype("Int64"))
    names = np.array(genre_names, dtype=object)
    mask = df[flags].to_numpy(dtype=bool) & ~np.isin(names, list(_NO_GENRE))
    out = pd.DataFrame({"item_id": df["item_id"], "title": title, "year": year,
                        "genres": [names[row].tolist() for row in mask], "release_date": release})
    out.attrs["malformed"] = df.attrs["malformed"]
    return out


def _movielens_1m_items(root: Path, spec: DatasetSpec) -> pd.DataFrame:
    df = read_table(_path(root, spec, "movies.dat"), "::", ["item_id", "title", "genres"],
                    ints=("item_id",), encoding="latin-1")
    title, year = split_title(df["title"])
    out = pd.DataFrame({"item_id": df["item_id"], "title": title, "year": year,
                        "genres": _genre_lists(df["genres"])})
    out.attrs["malformed"] = df.attrs["malformed"]
    return out


def _movielens_latest_items(root: Path, spec: DatasetSpec) -> pd.DataFrame:
    df = read_table(_path(root, spec, "movies.csv"), ",", ["item_id", "title", "genres"],
                    ints=("item_id",), header=True, quoting=csv.QUOTE_MINIMAL)
    tags = read_table(_path(root, spec, "tags.csv"), ",", ["user_id", "item_id", "tag", "timestamp"],
                      ints=("user_id", "item_id", "timestamp"), header=True, quoting=csv.QUOTE_MINIMAL)
    per_item = tags.groupby("item_id", sort=False)["tag"].agg(lambda s: list(dict.fromkeys(s)))
    title, year = split_title(df["title"])
    out = pd.DataFrame({"item_id": df["item_id"], "title": title, "year": year,
                        "genres": _genre_lists(df["genres"]),
                        "tags": [per_item.get(i, []) for i in df["item_id"]]})
    out.attrs["malformed"] = df.attrs["malformed"] + tags.attrs["malformed"]
    return out


def load_items(name: str, data_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """One row per item of data set ``name``, sorted by ``item_id`` (see the module docstring)."""
    spec = get_spec(name)
    root = fetch(name, data_dir)
    if spec.kind == "ml-100k":
        out = _movielens_100k_items(root, spec)
    elif spec.kind == "ml-1m":
        out = _movielens_1m_items(root, spec)
    elif spec.kind == "ml-latest":
        out = _movielens_latest_items(root, spec)
    elif spec.kind == "sequence":
        seq = read_sequence_file(root / next(iter(spec.files)))
        out = pd.DataFrame({"item_id": np.unique(seq["item_id"].to_numpy())})
        out.attrs["malformed"] = seq.attrs["malformed"]
    else:
        raise ValueError(f"no item loader for kind {spec.kind!r} (dataset {name!r})")
    malformed = out.attrs["malformed"]
    out = out.sort_values("item_id", kind="stable").reset_index(drop=True)
    out.attrs.update(malformed=malformed, dataset=name)
    return out
