"""Tensor files that are written whole or not at all, and never read back unverified.

``save_tensors(obj, path)`` serialises ``obj`` (a dict of tensors, numbers, strings and
lists, what ``torch.load(..., weights_only=True)`` accepts) with ``torch.save``, writes it
to a temporary file in the same folder, and moves it into place with ``os.replace``: a
reader sees the old file or the new one, never half of one. Beside it goes a sidecar
``path + ".sha256"`` in ``sha256sum`` format (``<hex>  <name>``), so
``sha256sum -c model.pt.sha256`` checks it from a shell too.

``load_tensors(path)`` refuses, with a :class:`CorruptFile` error that names the file and
says what to do, a file that is empty, has no sidecar, does not match its sidecar, or
does not unpickle with ``weights_only=True``. A caller that can rebuild the file (a
cache) catches :class:`CorruptFile` and treats the entry as missing.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

SIDECAR = ".sha256"


class CorruptFile(ValueError):
    """A tensor file that is empty, truncated, unverified or altered; the message names it."""


def checksum_path(path: str | os.PathLike) -> Path:
    """The sidecar of ``path``: ``path + ".sha256"``."""
    path = Path(path)
    return path.with_name(path.name + SIDECAR)


def _write_atomic(data: bytes, path: Path) -> None:
    """Write ``data`` to a temporary file beside ``path``, flush it to disk, then rename it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_tensors(obj: dict[str, Any], path: str | os.PathLike) -> None:
    """Write ``obj`` to ``path`` atomically, with its sha256 in ``path + ".sha256"``.

    The parent folder must exist (a missing folder is an error here, not after training).
    The data file is replaced first and the sidecar second; a crash between the two leaves
    a pair that does not match, which :func:`load_tensors` refuses rather than trusts.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot save {path}: the folder {path.parent} does not exist; "
                                "create it first")
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getvalue()
    _write_atomic(data, path)
    digest = hashlib.sha256(data).hexdigest()
    _write_atomic(f"{digest}  {path.name}\n".encode(), checksum_path(path))


def _recorded_sha256(path: Path) -> str:
    sidecar = checksum_path(path)
    what_to_do = f"delete {path} and create it again"
    if not sidecar.is_file():
        raise CorruptFile(f"{path} has no checksum file {sidecar.name}, so it cannot be verified "
                          f"(written by an older version, or the save was interrupted); {what_to_do}")
    digest = sidecar.read_text().split(maxsplit=1)[0] if sidecar.stat().st_size else ""
    if len(digest) != 64:
        raise CorruptFile(f"{sidecar} does not hold a sha256; {what_to_do}")
    return digest


def load_tensors(path: str | os.PathLike, map_location: str | torch.device | None = "cpu") -> Any:
    """Read a file written by :func:`save_tensors`, after checking it against its sidecar.

    Raises ``FileNotFoundError`` for a missing file and :class:`CorruptFile` (naming the
    file and what to do) for an empty or truncated file, a missing or different checksum,
    or content that ``torch.load(..., weights_only=True)`` refuses.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    data = path.read_bytes()
    what_to_do = f"delete {path} (and {checksum_path(path).name}) and create it again"
    if not data:
        raise CorruptFile(f"{path} is empty (0 bytes): an interrupted write; {what_to_do}")
    expected = _recorded_sha256(path)
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise CorruptFile(f"{path} does not match its checksum (expected sha256 {expected}, got "
                          f"{actual}): the file was truncated or altered; {what_to_do}")
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        raise CorruptFile(f"{path} passed its checksum but cannot be loaded as tensors "
                          f"({type(e).__name__}: {e}); {what_to_do}") from e


def remove(path: str | os.PathLike) -> None:
    """Delete ``path`` and its sidecar (either may be missing)."""
    Path(path).unlink(missing_ok=True)
    checksum_path(path).unlink(missing_ok=True)
