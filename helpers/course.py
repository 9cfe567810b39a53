"""What every notebook calls first (``setup``) and last (``record``).

``setup()`` seeds every random generator, picks the device, reads the run
profile and sets the plot style. ``record()`` stores a headline number in
``results/<notebook>.json`` so tests and benchmarks can read what a notebook
measured instead of parsing its output.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from helpers.profile import Profile, get_profile

RESULTS_ENV = "COURSE_RESULTS_DIR"
REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Session:
    notebook: str  # e.g. "01_data_cleaning"
    profile: Profile
    device: torch.device
    seed: int


_session: Session | None = None


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def setup(notebook: str, seed: int = 0, profile: str | None = None) -> Session:
    """Seed, choose the device and profile, set the plot style; print one summary line."""
    global _session
    seed_everything(seed)
    _session = Session(notebook, get_profile(profile), default_device(), seed)
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        pass
    else:
        plt.rcParams.update({"figure.figsize": (7, 4), "figure.dpi": 100,
                             "axes.grid": True, "grid.alpha": 0.3,
                             "axes.spines.top": False, "axes.spines.right": False})
    print(f"notebook {notebook} | profile {_session.profile.name} | device {_session.device} "
          f"| torch {torch.__version__} | seed {seed}")
    return _session


def results_dir() -> Path:
    """``$COURSE_RESULTS_DIR``, else ``results/`` at the repository root."""
    return Path(os.environ.get(RESULTS_ENV) or REPO_ROOT / "results")


def results_path(notebook: str) -> Path:
    return results_dir() / f"{notebook}.json"


def record(key: str, value: float, notebook: str | None = None) -> float:
    """Store ``value`` under ``key`` (e.g. ``"sasrec/ml-100k/ndcg@10"``) for this notebook.

    The file is ``results/<notebook>.json``: ``{"profile": ..., "values": {key: value}}``,
    rewritten atomically on every call. Returns ``value`` so it can be used inline.
    """
    if notebook is None:
        if _session is None:
            raise RuntimeError("call helpers.course.setup(<notebook name>) before record()")
        notebook = _session.notebook
    profile = _session.profile.name if _session is not None else get_profile().name
    path = results_path(notebook)
    path.parent.mkdir(parents=True, exist_ok=True)
    stored = json.loads(path.read_text()) if path.exists() else {}
    if stored.get("profile") != profile:
        stored = {"profile": profile, "values": {}}
    stored["values"][key] = float(value)
    write_atomic(path, json.dumps(stored, indent=2, sort_keys=True))
    return value


def load_results(notebook: str) -> dict:
    """What a notebook recorded: ``{"profile": ..., "values": {...}}``."""
    return json.loads(results_path(notebook).read_text())


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
        f.write(text)
        tmp = Path(f.name)
    os.replace(tmp, path)
