"""Loaders: each data set as a tidy pandas frame that keeps the original ids.

``load_interactions(name)`` -> one row per event, in file order, with columns
``user_id``, ``item_id`` (int64), ``timestamp`` (int64) and, where the data has it,
``rating`` (float64). MovieLens timestamps are unix seconds; a sequence file (S3-Rec
format, e.g. Beauty) has no times, so ``timestamp`` is the position of the item in its
user's history (0, 1, 2, ...; a user on several lines gets them appended in file order),
which keeps the order.

``load_items(name)`` -> one row per item, sorted by ``item_id`` (a column, not the
index): ``title`` without the year, ``year`` (nullable ``Int64``), ``genres`` (a list
of str, ``[]`` where MovieLens says "unknown" or "(no genres listed)"), plus
``release_date`` (ml-100k, ``NaT`` where missing) or ``tags`` (ml-latest-small, a list
of each movie's distinct tags in file order). Sequence files carry no item text: only
``item_id``.

Lines that cannot be parsed (wrong number of fields, non-numeric or non-finite values,
ids beyond int64) are dropped and counted in ``df.attrs["malformed"]``. Above
:data:`WARN_MALFORMED` of the lines a warning names the first bad line; above
``max_malformed`` (default :data:`MAX_MALFORMED`) the load stops with a
:class:`DataFormatError` that names the file, the first bad line and why it is bad; so
does an empty file. The files come from :func:`helpers.datasets.fetch`.
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
WARN_MALFORMED = 0.001  # share of malformed lines above which a load warns
MAX_MALFORMED = 0.1  # default share above which a load refuses the file
_INT64 = 2**63


class DataFormatError(ValueError):
    """A file that is empty, or with too many lines not in the expected format."""


def _check_counts(path: Path | str, kept: int, malformed: int, max_malformed: float,
                  first_bad: str) -> None:
    """Refuse an empty file or one with more than ``max_malformed`` bad lines; warn above
    :data:`WARN_MALFORMED`. ``first_bad`` describes the first bad line."""
    total = kept + malformed
    if total == 0:
        raise DataFormatError(f"{path} is empty")
    share = malformed / total
    message = (f"{path}: {malformed} of {total} lines are malformed ({share:.1%}); "
               f"the first is {first_bad}")
    if kept == 0 or share > max_malformed:
        raise DataFormatError(f"{message}. Wrong file or format? A load accepts at most "
                              f"max_malformed={max_malformed:g} of the lines (an argument of "
                              "load_interactions and load_items)")
    if share > WARN_MALFORMED:
        warnings.warn(f"{message}; those lines are dropped", stacklevel=3)


def _why_bad(fields: list[str], names: list[str], ints: tuple[str, ...],
             floats: tuple[str, ...]) -> str | None:
    """Why a parsed line does not fit ``names`` (None when it does)."""
    if len(fields) != len(names):
        return f"{len(fields)} fields where {len(names)} ({', '.join(names)}) are expected"
    for name, field in zip(names, fields):
        if name not in ints and name not in floats:
            continue
        try:
            value = float(field)
        except ValueError:
            return f"{name} {field!r} is not a number"
        if not np.isfinite(value):
            return f"{name} {field!r} is not finite"
        if name in ints and not (value % 1 == 0 and -_INT64 <= _exact_int(field, value) < _INT64):
            return f"{name} {field!r} is not an integer within int64"
    return None


def _exact_int(field: str, value: float) -> int:
    """``field`` as an exact int where it is written as one (a float loses digits past 2**53)."""
    try:
        return int(field)
    except ValueError:
        return int(value)


def _first_bad_line(raw: bytes, sep: str, names: list[str], ints: tuple[str, ...],
                    floats: tuple[str, ...], header: bool, encoding: str, quoting: int) -> str:
    """``"line N (<text>): <why>"`` for the first line :func:`read_table` drops."""
    text = raw.decode(encoding, errors="replace")
    reader = csv.reader(io.StringIO(text), delimiter=sep, quoting=quoting)
    for i, fields in enumerate(reader):
        if (header and i == 0) or not fields:
            continue
        why = _why_bad(fields, names, ints, floats)
        if why is not None:
            return f"line {reader.line_num} ({_shown(sep.join(fields))}): {why}"
    return "a line the csv module reads differently from pandas"


def _shown(line: str, width: int = 80) -> str:
    """A line quoted for an error message, cut to ``width`` characters."""
    return repr(line if len(line) <= width else line[: width - 3] + "...")


def read_table(path: Path, sep: str, names: list[str], *, ints: tuple[str, ...] = (),
               floats: tuple[str, ...] = (), header: bool = False, encoding: str = "utf-8",
               quoting: int = csv.QUOTE_NONE, max_malformed: float = MAX_MALFORMED) -> pd.DataFrame:
    """Read a delimited file, dropping and counting lines that do not fit ``names``.

    A line is malformed when it has another number of fields than ``names``, or when a
    column in ``ints`` is not an integer in int64's range, or one in ``floats`` is not a
    finite number (``inf`` and ``nan`` are malformed). ``sep`` may be several characters
    (``"::"``). Returns the good rows (index 0..n-1, ``ints`` as int64, ``floats`` as
    float64, other columns as str) with ``attrs["malformed"]``; see the module docstring
    for when it warns or refuses the file.
    """
    raw = Path(path).read_bytes()
    if len(sep) > 1:
        raw = raw.replace(sep.encode(), b"\t")
        sep = "\t"
    lines = raw.splitlines()
    n_lines = len(lines) - lines.count(b"") - int(header and bool(lines))
    extra = "_extra"  # catches a surplus field (too-long lines are cut at len(names) + 1)
    def parse(as_text: tuple[str, ...]) -> pd.DataFrame:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", pd.errors.ParserWarning)
                return pd.read_csv(io.BytesIO(raw), sep=sep, header=None, skiprows=int(header),
                                   names=[*names, extra], index_col=False, on_bad_lines="skip",
                                   encoding=encoding, quoting=quoting, keep_default_na=False,
                                   na_values=[], dtype={c: str for c in (*as_text, extra)})
        except pd.errors.EmptyDataError:
            return pd.DataFrame(columns=[*names, extra])

    df = parse(())
    if any(df[c].dtype != np.int64 for c in ints):  # a bad or huge id: read ids as text, exactly
        df = parse(ints)
    bad = (df[extra] != "").to_numpy() | df[names].isna().any(axis=1).to_numpy()
    for col in (*ints, *floats):
        values = pd.to_numeric(df[col], errors="coerce")  # "" and "x" become NaN
        bad |= ~np.isfinite(values.to_numpy(dtype=np.float64))  # NaN, inf
        if col in ints:  # an id beyond int64 would wrap to a negative number
            bad |= ((values % 1 != 0) | (values >= _INT64) | (values < -_INT64)).to_numpy()
    df = df.loc[~bad, names].reset_index(drop=True)
    for col in (*ints, *floats):  # again, on good rows only: one huge id no longer makes all floats
        df[col] = pd.to_numeric(df[col])
    malformed = n_lines - len(df)
    first_bad = (_first_bad_line(raw, sep, names, ints, floats, header, encoding, quoting)
                 if malformed else "")
    _check_counts(path, len(df), malformed, max_malformed, first_bad)
    df = df.astype({**{c: "int64" for c in ints}, **{c: "float64" for c in floats}})
    df.attrs["malformed"] = malformed
    return df


def _sequence_line_error(line: bytes) -> str | None:
    """Why one stripped, single-spaced line of a sequence file is malformed (None if fine)."""
    if line.translate(None, b"0123456789 "):
        return "a token is not a non-negative integer"
    if b" " not in line:
        return "a user id with no item"
    if any(len(t) > 18 and int(t) >= _INT64 for t in line.split()):
        return "an id beyond int64"
    return None


def _tokens(lines: list[bytes]) -> np.ndarray | None:
    """Every token of ``lines`` (digits and single spaces) in order; int64 unless one is
    beyond int64's range (then uint64 or float64); None for no lines."""
    if not lines:
        return None
    return pd.read_csv(io.BytesIO(b"\n".join(lines).replace(b" ", b"\n")), header=None)[0].to_numpy()


def read_sequence_file(path: str | os.PathLike, max_malformed: float = MAX_MALFORMED) -> pd.DataFrame:
    """An S3-Rec-format file (``user item item ...`` per line, oldest first) as a frame.

    Returns ``user_id``, ``item_id``, ``timestamp`` (int64), one row per item, in file order.
    A user on several lines gets the items of all of them, appended in file order (the
    natural reading of the format: the file lists each user's items oldest first), and
    ``timestamp`` is the item's position in that whole history (0, 1, 2, ...), so a
    chronological sort keeps it. Lines with a token that is not an integer in int64's
    range, or with no item, are dropped and counted in ``attrs["malformed"]``; see the
    module docstring for when it warns or refuses the file.
    """
    # Parsing every token in Python takes ~0.4 s on Beauty; pandas' C parser ~0.05 s.
    raw = Path(path).read_bytes()
    lines = raw.splitlines()
    if any(odd in raw for odd in (b"\t", b"  ", b"\f", b"\v")):  # make every separator one space
        lines = [b" ".join(line.split()) for line in lines]
    lines = [line.strip() for line in lines]
    fine = [b" " in line and not line.translate(None, b"0123456789 ") for line in lines]
    good = [line for ok, line in zip(fine, lines) if ok]
    tokens = _tokens(good)
    if tokens is not None and tokens.dtype != np.int64:  # an id beyond int64: check line by line
        fine = [ok and _sequence_line_error(line) is None for ok, line in zip(fine, lines)]
        good = [line for ok, line in zip(fine, lines) if ok]
        tokens = _tokens(good)
    malformed = sum(1 for line in lines if line) - len(good)
    first_bad = ""
    if malformed:
        at = next(i for i, (ok, line) in enumerate(zip(fine, lines)) if line and not ok)
        first_bad = (f"line {at + 1} ({_shown(lines[at].decode(errors='replace'))}): "
                     f"{_sequence_line_error(lines[at])}")
    _check_counts(path, len(good), malformed, max_malformed, first_bad)
    lengths = np.array([line.count(b" ") for line in good], dtype=np.int64)  # items per line
    heads = np.cumsum(lengths + 1) - (lengths + 1)  # where each line's user id sits
    is_item = np.ones(len(tokens), dtype=bool)
    is_item[heads] = False
    users = tokens[heads]  # (lines,)
    df = pd.DataFrame({"user_id": np.repeat(users, lengths), "item_id": tokens[is_item]})
    if len(np.unique(users)) == len(users):  # one line per user: the position in the line
        starts = np.cumsum(lengths) - lengths
        df["timestamp"] = np.arange(lengths.sum(), dtype=np.int64) - np.repeat(starts, lengths)
    else:  # a user on several lines: the position in the whole history
        df["timestamp"] = df.groupby("user_id", sort=False).cumcount().astype(np.int64)
    df.attrs["malformed"] = malformed
    return df


def _path(root: Path, spec: DatasetSpec, filename: str) -> Path:
    """The file of ``spec`` whose name is ``filename``, under ``root``."""
    (rel,) = [r for r in spec.files if r.rsplit("/", 1)[-1] == filename]
    return root / rel


def load_interactions(name: str, data_dir: str | os.PathLike | None = None, *,
                      max_malformed: float = MAX_MALFORMED) -> pd.DataFrame:
    """Every interaction of data set ``name``, in file order (see the module docstring)."""
    spec = get_spec(name)
    root = fetch(name, data_dir)
    ratings = ["user_id", "item_id", "rating", "timestamp"]
    kw = dict(ints=("user_id", "item_id", "timestamp"), floats=("rating",), max_malformed=max_malformed)
    if spec.kind == "ml-100k":
        df = read_table(_path(root, spec, "u.data"), "\t", ratings, **kw)
    elif spec.kind == "ml-1m":
        df = read_table(_path(root, spec, "ratings.dat"), "::", ratings, **kw)
    elif spec.kind == "ml-latest":
        df = read_table(_path(root, spec, "ratings.csv"), ",", ratings, header=True, **kw)
    elif spec.kind == "sequence":
        df = read_sequence_file(root / next(iter(spec.files)), max_malformed)
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


def _movielens_100k_items(root: Path, spec: DatasetSpec, max_malformed: float) -> pd.DataFrame:
    genre_names = read_table(_path(root, spec, "u.genre"), "|", ["genre", "index"], ints=("index",),
                             max_malformed=max_malformed)
    genre_names = genre_names.sort_values("index")["genre"].tolist()
    flags = [f"g{i}" for i in range(len(genre_names))]
    df = read_table(_path(root, spec, "u.item"), "|",
                    ["item_id", "title", "release_date", "video_release_date", "imdb_url", *flags],
                    ints=("item_id", *flags), encoding="latin-1", max_malformed=max_malformed)
    title, year = split_title(df["title"])
    release = pd.to_datetime(df["release_date"], format="%d-%b-%Y", errors="coerce")
    year = year.fillna(release.dt.year.astype("Int64"))
    names = np.array(genre_names, dtype=object)
    mask = df[flags].to_numpy(dtype=bool) & ~np.isin(names, list(_NO_GENRE))
    out = pd.DataFrame({"item_id": df["item_id"], "title": title, "year": year,
                        "genres": [names[row].tolist() for row in mask], "release_date": release})
    out.attrs["malformed"] = df.attrs["malformed"]
    return out


def _movielens_1m_items(root: Path, spec: DatasetSpec, max_malformed: float) -> pd.DataFrame:
    df = read_table(_path(root, spec, "movies.dat"), "::", ["item_id", "title", "genres"],
                    ints=("item_id",), encoding="latin-1", max_malformed=max_malformed)
    title, year = split_title(df["title"])
    out = pd.DataFrame({"item_id": df["item_id"], "title": title, "year": year,
                        "genres": _genre_lists(df["genres"])})
    out.attrs["malformed"] = df.attrs["malformed"]
    return out


def _movielens_latest_items(root: Path, spec: DatasetSpec, max_malformed: float) -> pd.DataFrame:
    df = read_table(_path(root, spec, "movies.csv"), ",", ["item_id", "title", "genres"],
                    ints=("item_id",), header=True, quoting=csv.QUOTE_MINIMAL, max_malformed=max_malformed)
    tags = read_table(_path(root, spec, "tags.csv"), ",", ["user_id", "item_id", "tag", "timestamp"],
                      ints=("user_id", "item_id", "timestamp"), header=True, quoting=csv.QUOTE_MINIMAL,
                      max_malformed=max_malformed)
    per_item = tags.groupby("item_id", sort=False)["tag"].agg(lambda s: list(dict.fromkeys(s)))
    title, year = split_title(df["title"])
    out = pd.DataFrame({"item_id": df["item_id"], "title": title, "year": year,
                        "genres": _genre_lists(df["genres"]),
                        "tags": [per_item.get(i, []) for i in df["item_id"]]})
    out.attrs["malformed"] = df.attrs["malformed"] + tags.attrs["malformed"]
    return out


def load_items(name: str, data_dir: str | os.PathLike | None = None, *,
               max_malformed: float = MAX_MALFORMED) -> pd.DataFrame:
    """One row per item of data set ``name``, sorted by ``item_id`` (see the module docstring)."""
    spec = get_spec(name)
    root = fetch(name, data_dir)
    if spec.kind == "ml-100k":
        out = _movielens_100k_items(root, spec, max_malformed)
    elif spec.kind == "ml-1m":
        out = _movielens_1m_items(root, spec, max_malformed)
    elif spec.kind == "ml-latest":
        out = _movielens_latest_items(root, spec, max_malformed)
    elif spec.kind == "sequence":
        seq = read_sequence_file(root / next(iter(spec.files)), max_malformed)
        out = pd.DataFrame({"item_id": np.unique(seq["item_id"].to_numpy())})
        out.attrs["malformed"] = seq.attrs["malformed"]
    else:
        raise ValueError(f"no item loader for kind {spec.kind!r} (dataset {name!r})")
    malformed = out.attrs["malformed"]
    out = out.sort_values("item_id", kind="stable").reset_index(drop=True)
    out.attrs.update(malformed=malformed, dataset=name)
    return out
