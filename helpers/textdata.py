"""Behaviour written as text: histories as strings, next-item examples, tokenised data sets.

A user's recent history becomes one string (``history_text``: oldest first, most recent
last, items joined with ``"; "``). Examples are prefixes of the *training* sequences only
(``prefix_examples``); validation and test come from ``split.valid`` / ``split.test``, so no
evaluation target is ever trained on. Labels come from the target interaction
(``next_values``, e.g. its rating) or the target item (``first_genres``). Tokenisation uses
Hugging Face ``datasets`` (``Dataset.from_dict(...).map(...)``) and cuts histories from the
**old** end (``truncation_side="left"``) so the most recent items survive.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from datasets import Dataset
from torch.utils.data import DataLoader
from transformers import AutoTokenizer, DataCollatorWithPadding, PreTrainedTokenizerBase

from helpers.split import EvalSet, Split, user_sequences
from helpers.text import resolve_model


# ---------------------------------------------------------------- histories as text
def history_text(texts: Sequence[str], history: np.ndarray, max_items: int | None = None,
                 sep: str = "; ", ratings: np.ndarray | None = None) -> str:
    """The last ``max_items`` items of ``history`` as one string, most recent last.

    ``texts[i]`` is the text of course item ``i`` (index 0 = PAD, never in a history).
    ``ratings``, aligned with ``history``, adds what the user gave each item: ``"... (rated 4.5)"``.
    """
    history = np.asarray(history, dtype=np.int64)
    start = 0 if max_items is None else max(len(history) - max_items, 0) if max_items > 0 else len(history)
    parts = [texts[int(i)] for i in history[start:]]
    if ratings is not None:
        if len(ratings) != len(history):
            raise ValueError(f"{len(ratings)} ratings for a history of {len(history)} items")
        parts = [f"{p} (rated {r:g})" for p, r in zip(parts, np.asarray(ratings)[start:])]
    return sep.join(parts)


def prefix_examples(split: Split, last: int | None = None, min_history: int = 1) -> EvalSet:
    """Next-item examples from the training sequences: ``seq[:j] -> seq[j]``.

    Only ``split.train`` is read (the validation and test targets are not in it). ``last``
    keeps each user's ``last`` most recent examples (None = all with ``min_history`` items).
    """
    users, histories, targets = [], [], []
    for user, seq in zip(split.train_users, split.train):
        first = max(min_history, len(seq) - last if last is not None else min_history)
        for j in range(first, len(seq)):
            users.append(user)
            histories.append(seq[:j])
            targets.append(seq[j])
    return EvalSet(np.array(users, dtype=np.int64), histories, np.array(targets, dtype=np.int64))


def next_values(df: pd.DataFrame, examples: EvalSet, column: str = "rating") -> np.ndarray:
    """``column`` of each example's target interaction, e.g. the rating the next item got.

    Every history must be the user's full prefix (leave-one-out and ``prefix_examples``),
    so the target sits at position ``len(history)`` of the user's sequence; checked.
    """
    return np.asarray([values[len(h)] for values, h in zip(_aligned(df, examples, column), examples.histories)])


def history_values(df: pd.DataFrame, examples: EvalSet, column: str = "rating") -> list[np.ndarray]:
    """``column`` of every history interaction (aligned with ``examples.histories``); never the target's."""
    return [values[: len(h)] for values, h in zip(_aligned(df, examples, column), examples.histories)]


def _aligned(df: pd.DataFrame, examples: EvalSet, column: str) -> list[np.ndarray]:
    """Each example's user sequence of ``column``, after checking history + target is its prefix."""
    users, items = user_sequences(df)
    _, values = user_sequences(df, column)
    row = {int(u): i for i, u in enumerate(users)}
    out = []
    for user, history, target in zip(examples.users, examples.histories, examples.targets):
        seq, pos = items[row[int(user)]], len(history)
        if pos >= len(seq) or seq[pos] != target or not np.array_equal(seq[:pos], history):
            raise ValueError(f"user {user}: the history is not a prefix followed by the target")
        out.append(values[row[int(user)]])
    return out


def first_genres(items: pd.DataFrame, ids, n_items: int) -> tuple[np.ndarray, list[str]]:
    """``(classes (n_items + 1,), names)``: each course item's first listed genre as a class index.

    ``items`` is ``data.load_items(...)`` (``item_id``, ``genres``), ``ids`` the ``IdMap`` of
    the prepared log. Items without a genre get the class ``"(none)"``; index 0 (PAD) gets -1.
    """
    genres = items.set_index("item_id")["genres"]
    original = ids.item_to_original(np.arange(1, n_items + 1))
    first = [g[0] if len(g) else "(none)" for g in genres.reindex(original)
             .map(lambda g: g if isinstance(g, list) else [])]
    names = sorted(set(first))
    classes = np.array([-1] + [names.index(f) for f in first], dtype=np.int64)
    return classes, names


# ---------------------------------------------------------------- tokenised data sets
def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """The model's tokenizer, truncating from the left (the oldest items go first)."""
    return AutoTokenizer.from_pretrained(resolve_model(name_or_path), truncation_side="left")


def clip_texts(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_tokens: int) -> list[str]:
    """Each text cut after its first ``max_tokens`` tokens (at a token boundary of the original string)."""
    encoded = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True)
    return [t if len(offsets) <= max_tokens else t[: offsets[max_tokens - 1][1]]
            for t, offsets in zip(texts, encoded["offset_mapping"])]


def text_dataset(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], labels: Sequence,
                 pairs: Sequence[str] | None = None, max_length: int = 256) -> Dataset:
    """A tokenised ``datasets.Dataset`` (input_ids, attention_mask, ..., labels).

    With ``pairs`` each example is ``[CLS] text [SEP] pair [SEP]``: the pair (a candidate
    item) keeps its first ``max_length // 2`` tokens, and ``text`` (the history) is cut from
    its old end to fill the rest.
    """
    if tokenizer.truncation_side != "left":
        raise ValueError("load the tokenizer with truncation_side='left' (see load_tokenizer)")
    columns = {"text": list(texts), "labels": list(labels)}
    if pairs is not None:
        columns["pair"] = list(pairs)

    def tokenize(batch: dict) -> dict:
        if pairs is None:
            return tokenizer(batch["text"], max_length=max_length, truncation=True)
        return tokenizer(batch["text"], clip_texts(tokenizer, batch["pair"], max_length // 2),
                         max_length=max_length, truncation="only_first")

    data = Dataset.from_dict(columns)
    return data.map(tokenize, batched=True, remove_columns=[c for c in columns if c != "labels"])


def loader(data: Dataset, tokenizer: PreTrainedTokenizerBase, batch_size: int,
           shuffle: bool = False, seed: int = 0) -> DataLoader:
    """Batches padded to their longest example (``DataCollatorWithPadding``)."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=generator,
                      collate_fn=DataCollatorWithPadding(tokenizer))
