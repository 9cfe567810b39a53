"""The ID convention, fixed once for the whole course.

Every item id that reaches a model obeys it:

* ``PAD = 0`` fills histories shorter than the model's window (left padding: the
  most recent item is always the last column);
* real items are ``1 .. n_items``;
* ``mask_id(n_items) = n_items + 1`` is the ``[MASK]`` token of masked models;
* ``IGNORE = -100`` marks label positions that carry no loss (PyTorch's and
  Hugging Face's default ``ignore_index``).

Score matrices have ``n_items + 1`` columns: column ``PAD`` exists so that item
``i`` is column ``i``, and it is never ranked.

Ids from outside (a request, a file, a caller) pass one rule before they are looked
up: :func:`check_id` for items (integers or strings, never bool or float) and
:func:`user_key` for users (one spelling per user, for pseudonyms, state and deletion).
"""

import math

import numpy as np

PAD = 0
IGNORE = -100


def mask_id(n_items: int) -> int:
    """The ``[MASK]`` token id for a catalogue of ``n_items`` items."""
    return n_items + 1


def vocab_size(n_items: int, with_mask: bool = False) -> int:
    """Rows of an embedding table: PAD, the items, and MASK when asked."""
    return n_items + 2 if with_mask else n_items + 1


# ---------------------------------------------------------------- ids from outside
# What a client, a file or a caller may pass as an item or user id, one rule for the
# service, the recommender, ``observe()`` and the privacy helpers: integers (Python or
# numpy, never bool) and strings; a string of ASCII digits (at most MAX_ID_DIGITS) means
# the integer it spells. Floats are refused: 2.9 is not item 2, and True is not item 1.
# Unicode digits ("²", "٥٠", "５０") are not ASCII digits: they stay strings (titles).
MAX_ID_DIGITS = 19  # an int64 has at most 19 digits
ALLOWED_IDS = f"an integer (not bool or float), or a string (ASCII digits, at most {MAX_ID_DIGITS}, mean that integer)"


def ascii_int(text: str) -> int | None:
    """The integer that ``text`` spells in 1..MAX_ID_DIGITS ASCII digits, else None."""
    if 0 < len(text) <= MAX_ID_DIGITS and text.isascii() and text.isdigit():
        return int(text)
    return None


def check_id(value: object, what: str = "item id") -> int | str:
    """``value`` as an id: an int for integers, the string itself for strings.

    Raises ``TypeError`` naming ``what`` for bool, float, None and any other type (numpy
    integers count as integers).
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, str)):
        raise TypeError(f"{what} must be {ALLOWED_IDS}; got {type(value).__name__} {short_repr(value)}")
    return value if isinstance(value, str) else int(value)


def user_key(user: object) -> str:
    """The one spelling of a user id used for pseudonyms, per-user state and deletion.

    Integers (Python or numpy), integral floats (``7.0``: a CSV column with a gap is read as
    floats), and ASCII-digit strings or bytes with an optional ``.0`` all become the decimal
    integer (``"7"``); other strings and bytes are stripped of surrounding spaces. Refused
    (``TypeError``/``ValueError``): bool, None, NaN, non-integral floats, empty strings.
    """
    if isinstance(user, (bytes, bytearray)):
        try:
            user = bytes(user).decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"user id bytes are not UTF-8: {short_repr(user)}") from None
    if isinstance(user, bool) or user is None:
        raise TypeError(f"a user id must be an integer or a string; got {user!r}")
    if isinstance(user, (int, np.integer)):
        return str(int(user))
    if isinstance(user, (float, np.floating)):
        if not math.isfinite(user) or user != int(user):
            raise ValueError(f"a user id must be an integer or a string; got the float {user!r}")
        return str(int(user))
    if not isinstance(user, str):
        raise TypeError(f"a user id must be an integer or a string; got {type(user).__name__} {short_repr(user)}")
    text = user.strip()
    head, dot, tail = text.partition(".")
    if head.isascii() and head.isdigit() and (not dot or (tail and set(tail) == {"0"})):
        return str(int(head))
    if not text:
        raise ValueError("a user id must not be empty")
    return text


def short_repr(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for error messages about client input."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
