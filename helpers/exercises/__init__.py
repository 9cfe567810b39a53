"""Exercises that check themselves: ``check(key, fn)`` runs hidden cases against a learner's function.

Each notebook ends with a few write-the-code exercises. The cell under each one calls

    exercises.check("02.ndcg", ndcg_at_10)

which runs the cases kept in ``helpers/exercises/nbNN.py`` and prints one line: ``passed``, or the
first failing case (the input, what was expected, what came back, and a hint), or ``not done yet``
while the function still raises ``NotImplementedError``. A wrong answer never raises: ``Run all``
goes on. Messages show inputs and values, never the reference code; where the course has a helper
for the idea (``helpers.metrics`` for NDCG, ``helpers.stats.holm``, ...) that helper is the
reference, so the checker and the course never disagree. ``progress("02")`` lists a notebook's
exercises with what ``check`` said about each in this session.

The cases of notebook NN live in ``nbNN.py``, each registered with ``@exercise(key, title)``: a
function that receives the learner's function and calls :func:`attempt` and :func:`expect`.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

NOTEBOOKS = ("01", "02", "03", "04", "05", "06", "07", "08", "09")
PASSED, FAILED, NOT_DONE = "passed", "failed", "not done yet"


class Failed(Exception):
    """A case the learner's function got wrong; the message says which and gives a hint."""


@dataclass
class Exercise:
    key: str  # "02.ndcg": notebook, then a short name
    title: str  # what the learner writes, in a few words
    run: Callable[[Callable], None]  # raises Failed at the first wrong case


@dataclass
class Verdict:
    key: str
    status: str  # PASSED, FAILED or NOT_DONE
    message: str = ""  # for FAILED: the case, expected, got, hint
    seconds: float = 0.0

    def __str__(self) -> str:
        head = f"[{self.key}] {self.status}"
        return f"{head}: {self.message}" if self.message else head


_REGISTRY: dict[str, Exercise] = {}
_SEEN: dict[str, Verdict] = {}  # the latest verdict of each exercise in this session


def exercise(key: str, title: str):
    """Register the decorated function as the cases of exercise ``key``."""
    def register(run: Callable[[Callable], None]) -> Callable[[Callable], None]:
        _REGISTRY[key] = Exercise(key, title, run)
        return run
    return register


def exercises_of(notebook: str) -> list[Exercise]:
    """The exercises of notebook ``"NN"`` (or ``"NN_name"``), in the order they were registered."""
    nn = str(notebook)[:2]
    importlib.import_module(f"helpers.exercises.nb{nn}")
    return [e for k, e in _REGISTRY.items() if k.startswith(f"{nn}.")]


def _lookup(key: str) -> Exercise:
    if key not in _REGISTRY:
        exercises_of(key[:2])  # imports helpers.exercises.nbNN, which registers its exercises
    if key not in _REGISTRY:
        raise KeyError(f"no exercise {key!r}; notebook {key[:2]} has {[e.key for e in exercises_of(key[:2])]}")
    return _REGISTRY[key]


# ---------------------------------------------------------------- what the cases call
def show(value, limit: int = 160) -> str:
    """A short, readable text of a case's input or output (arrays rounded, long ones cut)."""
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        text = np.array2string(value, precision=4, suppress_small=True, separator=", ", threshold=24)
        text = f"array({text}, shape {value.shape})" if value.ndim > 1 else text
    elif isinstance(value, (float, np.floating)):
        text = f"{float(value):.6g}"
    else:
        text = repr(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def attempt(fn: Callable, *args, case: str, **kwargs):
    """``fn(*args, **kwargs)``; an error other than NotImplementedError becomes :class:`Failed`."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise
    except Exception as error:  # the learner's code may raise anything: report it with the input
        raise Failed(f"for {case} your function raised {type(error).__name__}: {error}") from None


def _as_array(value) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _equal(got, expected, atol: float, rtol: float) -> bool:
    want = _as_array(expected)
    try:
        have = _as_array(got)
    except Exception:  # an object numpy cannot read: not a number or an array
        return False
    if have.shape != want.shape:
        return False
    if want.dtype.kind in "biufc":
        return have.dtype.kind in "biufc?" and bool(np.allclose(have.astype(np.float64), want.astype(np.float64),
                                                                 atol=atol, rtol=rtol, equal_nan=False))
    return bool(np.all(have == want))


def expect(got, expected, *, case: str, hint: str, mistakes: Sequence[tuple[object, str]] = (),
           atol: float = 1e-6, rtol: float = 1e-5) -> None:
    """Raise :class:`Failed` unless ``got`` equals ``expected`` (same shape; numbers to tolerance).

    ``mistakes``: ``(value, hint)`` pairs of known wrong answers; when ``got`` equals one of them,
    its hint replaces the general one (it names the mistake, e.g. "ties placed first").
    """
    if _equal(got, expected, atol, rtol):
        return
    hint = next((h for value, h in mistakes if _equal(got, value, atol, rtol)), hint)
    try:
        have, want = _as_array(got).shape, _as_array(expected).shape
        shape = f" (shape {have}, expected {want})" if have != want else ""
    except Exception:
        shape = ""
    raise Failed(f"for {case}: expected {show(expected)}, got {show(got)}{shape}. Hint: {hint}")


def require(condition: bool, *, case: str, got, hint: str) -> None:
    """Raise :class:`Failed` unless ``condition`` holds (for properties with no single answer)."""
    if not condition:
        raise Failed(f"for {case}: got {show(got)}. Hint: {hint}")


# ---------------------------------------------------------------- what the notebook calls
def verdict(key: str, fn: Callable) -> Verdict:
    """Run exercise ``key``'s cases on ``fn`` and return the verdict (nothing printed)."""
    ex = _lookup(key)
    start = time.perf_counter()
    try:
        ex.run(fn)
        status, message = PASSED, ""
    except NotImplementedError:
        status, message = NOT_DONE, "the function still raises NotImplementedError: write it, rerun its cell, then this one"
    except Failed as failure:
        status, message = FAILED, str(failure)
    except Exception as error:  # the learner's function broke a case in a way attempt() did not see
        status, message = FAILED, f"your function raised {type(error).__name__}: {error}"
    result = Verdict(key, status, message, time.perf_counter() - start)
    _SEEN[key] = result
    return result


def check(key: str, fn: Callable) -> None:
    """Print whether ``fn`` solves exercise ``key``; never raises for a wrong answer."""
    print(verdict(key, fn))


def progress(notebook: str) -> None:
    """Print every exercise of ``notebook`` ("NN") with its latest verdict in this session."""
    exs = exercises_of(notebook)
    done = sum(_SEEN.get(e.key, Verdict(e.key, "")).status == PASSED for e in exs)
    print(f"notebook {str(notebook)[:2]}: {done} of {len(exs)} exercises pass")
    for e in exs:
        seen = _SEEN.get(e.key)
        print(f"  [{'x' if seen and seen.status == PASSED else ' '}] {e.key:<22} {e.title}"
              f" ({seen.status if seen else 'not checked yet'})")
