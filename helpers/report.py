"""Result tables for the benchmark scripts: a mean and its confidence interval in one cell.

A row holds ``"ndcg@10"`` and, when an interval was computed, ``"ndcg@10 lo"`` and
``"ndcg@10 hi"`` (as :meth:`helpers.evaluate.EvalResult.table` and the scripts write them);
:func:`fold_ci` turns the three into one text cell, ``0.0456 [0.0431, 0.0482]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd


def ci_text(mean: float, lo: float | None = None, hi: float | None = None, digits: int = 4) -> str:
    """``"0.0456 [0.0431, 0.0482]"``; just the mean without an interval, ``""`` for a missing mean.

    >>> ci_text(0.04561, 0.04312, 0.0482)
    '0.0456 [0.0431, 0.0482]'
    """
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return ""
    if lo is None or hi is None or (isinstance(lo, float) and math.isnan(lo)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def fold_ci(rows: pd.DataFrame | Sequence[dict], metrics: Sequence[str] = ("hr@10", "ndcg@10"),
            digits: int = 4) -> pd.DataFrame:
    """A copy of ``rows`` in which each metric of ``metrics`` and its ``lo``/``hi`` columns are one
    text column (:func:`ci_text`); the other columns are unchanged."""
    table = pd.DataFrame(rows).copy()
    for metric in metrics:
        if metric not in table:
            continue
        lo, hi = (table[f"{metric} {end}"] if f"{metric} {end}" in table else [None] * len(table)
                  for end in ("lo", "hi"))
        table[metric] = [ci_text(m, a, b, digits) for m, a, b in zip(table[metric], lo, hi)]
        table = table.drop(columns=[c for c in (f"{metric} lo", f"{metric} hi") if c in table])
    return table


def markdown(rows: pd.DataFrame | Sequence[dict], columns: Sequence[str], formats: dict[str, str] | None = None,
             metrics: Sequence[str] = ("hr@10", "ndcg@10"), digits: int = 4) -> str:
    """``rows`` as a Markdown table of ``columns``: ``metrics`` with their intervals folded,
    ``formats`` (column -> format spec, e.g. ``".0f"``) applied, blank where a row has no value."""
    table = fold_ci(rows, metrics, digits)
    out = pd.DataFrame({c: table[c] if c in table else [""] * len(table) for c in columns})
    for column, spec in (formats or {}).items():
        out[column] = ["" if v is None or v == "" or (isinstance(v, float) and math.isnan(v)) else format(v, spec)
                       for v in out[column]]
    return out.to_markdown(index=False, disable_numparse=True)
