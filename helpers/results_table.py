"""Reading results tables safely: numbers from another profile or another version of the data
are refused, never silently compared.

A table file (``benchmarks/run.py --json``, or :func:`write_table`) is JSON:
``{"profile": "cpu", "data_versions": {"ml-100k": "3f2a..."}, "rows": [{...}, ...]}``.
A data version is :func:`data_version` of the split the rows were measured on: a hash of
every training sequence and evaluation target, so a change in the data files, the cleaning,
the user subsample or the split gives another version.

Numbers recorded by notebooks (``course.record``) carry their profile only:
:func:`read_recorded` refuses another profile.

Per-user test metrics (:func:`write_per_user`) carry both the profile and the data version, so
a later notebook can put a model it does not train (notebook 05's text-aware SASRec) in its
table with a bootstrap CI, or pair it with its own models user by user: :func:`read_per_user`
refuses another profile or another version of the data.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from helpers import course
from helpers.split import EvalSet, Split


class StaleResults(ValueError):
    """A results file measured under another profile or on another version of the data."""


def _update(digest, array) -> None:
    array = np.ascontiguousarray(np.asarray(array, dtype=np.int64))
    digest.update(np.int64(array.size).tobytes())
    digest.update(array.tobytes())


def _eval_set(digest, eval_set: EvalSet) -> None:
    _update(digest, eval_set.users)
    _update(digest, eval_set.targets)
    for history in eval_set.histories:
        _update(digest, history)


def data_version(sp: Split) -> str:
    """16 hex digits identifying a split: its item count, sequences, users and targets."""
    digest = hashlib.sha256(np.int64(sp.n_items).tobytes())
    _update(digest, sp.train_users)
    for seq in sp.train:
        _update(digest, seq)
    _eval_set(digest, sp.valid)
    _eval_set(digest, sp.test)
    return digest.hexdigest()[:16]


def write_table(path: str | Path, table: pd.DataFrame, profile: str, versions: Mapping[str, str]) -> None:
    """Write ``table`` (one row per dataset x model, a ``dataset`` column) with its provenance."""
    missing = set(table["dataset"]) - set(versions)
    if missing:
        raise ValueError(f"no data version for {sorted(missing)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    course.write_atomic(path, json.dumps({"profile": profile, "data_versions": dict(versions),
                                          "rows": table.to_dict("records")}, indent=2))


def read_table(path: str | Path, profile: str, versions: Mapping[str, str]) -> pd.DataFrame:
    """The rows of ``path`` for the data sets in ``versions`` (name -> :func:`data_version`).

    Raises :class:`StaleResults` when the file was written under another profile, has no
    data versions (an older format), or was measured on another version of one of
    these data sets; rerun the benchmark in that case.
    """
    stored = json.loads(Path(path).read_text())
    if stored.get("profile") != profile:
        raise StaleResults(f"{path} was measured under profile {stored.get('profile')!r}, not {profile!r}: "
                           f"rerun it with COURSE_PROFILE={profile}")
    if "data_versions" not in stored:
        raise StaleResults(f"{path} records no data version, so its numbers cannot be matched to "
                           "this data: rerun the benchmark")
    table = pd.DataFrame(stored["rows"])
    table = table[table["dataset"].isin(list(versions))].reset_index(drop=True)
    for name in table["dataset"].unique():
        theirs = stored["data_versions"].get(name)
        if theirs != versions[name]:
            raise StaleResults(f"{path}: {name} was measured on data version {theirs}, this split is "
                               f"{versions[name]} (other files, cleaning, subsample or split): rerun it")
    return table


def read_recorded(notebook: str, profile: str) -> dict[str, float] | None:
    """What ``notebook`` recorded under ``profile``; None when it has not run yet.

    Raises :class:`StaleResults` when the file says it holds another profile's numbers
    (a file copied into the wrong folder, or written by an older version of the course).
    """
    try:
        stored = course.load_results(notebook, profile)
    except FileNotFoundError:
        return None
    if stored.get("profile") != profile:
        raise StaleResults(f"{notebook} recorded its numbers under profile {stored.get('profile')!r}, "
                           f"not {profile!r}: run it again under {profile!r}")
    return dict(stored["values"])


def per_user_path(notebook: str, dataset: str, profile: str) -> Path:
    """``results/<profile>/<notebook>.per-user.<dataset>.json``."""
    return course.results_path(f"{notebook}.per-user.{dataset}", profile)


def write_per_user(notebook: str, dataset: str, sp: Split, results: Mapping[str, object], profile: str,
                   metrics: tuple[str, ...] = ("hr@10", "ndcg@10")) -> Path:
    """Store each model's per-user test ``metrics`` (``results``: name -> an EvalResult on ``sp.test``,
    or its ``metrics`` dict) with the profile and ``sp``'s data version, atomically; returns the path."""
    rows = {name: {m: np.asarray(getattr(r, "metrics", r)[m], dtype=float).tolist() for m in metrics}
            for name, r in results.items()}
    path = per_user_path(notebook, dataset, profile)
    path.parent.mkdir(parents=True, exist_ok=True)
    course.write_atomic(path, json.dumps({"profile": profile, "dataset": dataset, "data_version": data_version(sp),
                                          "users": np.asarray(sp.test.users).tolist(), "models": rows}))
    return path


def read_per_user(notebook: str, dataset: str, sp: Split, profile: str) -> dict[str, dict[str, np.ndarray]] | None:
    """What :func:`write_per_user` stored for ``notebook`` on ``dataset``: name -> metric -> (N,)
    in ``sp.test``'s user order; None when the notebook has not run under ``profile`` yet.

    Raises :class:`StaleResults` when the file holds another profile's numbers or was measured
    on another version of the data than ``sp``.
    """
    path = per_user_path(notebook, dataset, profile)
    if not path.exists():
        return None
    stored = json.loads(path.read_text())
    if stored.get("profile") != profile:
        raise StaleResults(f"{path} holds profile {stored.get('profile')!r}'s numbers, not {profile!r}: "
                           f"run {notebook} again under {profile!r}")
    if stored.get("data_version") != data_version(sp):
        raise StaleResults(f"{path} was measured on data version {stored.get('data_version')}, this split is "
                           f"{data_version(sp)} (other files, cleaning, subsample or split): run {notebook} again")
    return {name: {m: np.asarray(v, dtype=float) for m, v in values.items()} for name, values in stored["models"].items()}
