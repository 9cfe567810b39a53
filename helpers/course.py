"""What every notebook calls first (``setup``) and last (``record``).

``setup()`` seeds every random generator, picks the device, reads the run
profile, stops at once when the ``gpu`` profile finds no GPU (:func:`check_device`),
fits the evaluation batch to the GPU's memory, sets the plot style and says what the
profile will train and roughly how long it takes (a recorded reference run, else an
estimate from FLOPs and the device's measured speed: :mod:`helpers.budget`). ``record()`` stores a headline number in
``results/<profile>/<notebook>.json`` so tests and benchmarks can read what a
notebook measured instead of parsing its output; each profile keeps its own
file, so a quick ``ci`` run never replaces the numbers of a ``cpu`` run.

Where files go: ``$COURSE_RESULTS_DIR`` if set, else ``results/`` in the course's
checkout, else (a regular ``pip install``, as on Colab) ``results/`` in the
working directory, never site-packages. A dry run (``COURSE_DRY_RUN``) records under
``results/<profile>-dry-run/``, never beside a real run's numbers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from helpers import budget
from helpers.datasets import checkout_root
from helpers.profile import DRY_RUN_ENV, PROFILES, Profile, dry_run, get_profile
from helpers.profile import ENV_VAR as PROFILE_ENV

RESULTS_ENV = "COURSE_RESULTS_DIR"

# What setup() says about run time where no reference run of the notebook was recorded
# (reference_times.json) for the profile; only ci's is a budget the tests hold (90 s a notebook).
REFERENCE_TIMES = Path(__file__).with_name("reference_times.json")
ROUGH_TIME = {
    "ci": "about a minute (a smoke test: the numbers mean little)",
    "cpu": "minutes to tens of minutes on a laptop CPU, depending on the notebook",
    "gpu": "tens of minutes to hours on one GPU (more data, longer windows, many more epochs)",
}
# Profiles whose time setup() estimates from FLOPs when no reference run exists: in the small
# profiles a step is so small that Python's overhead, not FLOPs, sets the time.
ESTIMATED = ("gpu",)
NO_GPU = (f"profile gpu needs a CUDA GPU and none was found: on this CPU the notebook would run for "
          "hours, so it stops here. On Colab: Runtime > Change runtime type > a GPU (T4), save, then run "
          f"this cell again. Without a GPU: run %env {PROFILE_ENV}=cpu in a cell (minutes per notebook) and "
          f"rerun this cell. To check the gpu code paths on a CPU in seconds: {DRY_RUN_ENV}=1.")


class NoGPU(RuntimeError):
    """The ``gpu`` profile was asked for on a machine without CUDA."""


@dataclass
class Session:
    notebook: str  # e.g. "01_data_cleaning"
    profile: Profile
    device: torch.device
    seed: int
    started: float = 0.0  # time.time() at setup: record() stores the run time so far
    picked: bool = False  # the profile was picked from the device ($COURSE_PROFILE unset)
    memory: str = ""  # what setup() found about the GPU's memory ("" on a CPU)


_session: Session | None = None


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def quiet(progress: bool) -> bool:
    """Whether a loop hides its bar: ``progress=False`` or ``$TQDM_DISABLE`` set (an explicit
    ``tqdm(disable=False)`` would override the variable, so loops pass this instead)."""
    return not progress or bool(os.environ.get("TQDM_DISABLE"))


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def check_device(profile: Profile, device: torch.device) -> None:
    """Raise :class:`NoGPU` (what to do, on Colab and elsewhere) when the ``gpu`` profile would
    run on a CPU; its dry run is meant for a CPU and passes."""
    if profile.name == "gpu" and device.type != "cuda" and not profile.dry_run:
        raise NoGPU(NO_GPU)


def fit_to_memory(profile: Profile, device: torch.device) -> tuple[Profile, str]:
    """``profile`` with the largest evaluation batch (up to its own) that fits the GPU, and a line
    saying so; a training batch that cannot fit is refused here, before any cell trains (the
    largest catalogue of ``profile.datasets`` at the profile's full window). On a CPU: unchanged, ""."""
    free = budget.device_budget(device)
    if free is None:
        return profile, ""
    items = max(budget.DATA_SIZES.get(name, (0, 0, 0))[2] for name in profile.datasets)
    shape = budget.Shape.of(profile, items)
    tokens = profile.batch_size * profile.max_len
    budget.check_training(shape, tokens, free, amp=profile.amp is not False)
    users = budget.largest_batch(lambda b: budget.eval_bytes(shape, b), profile.eval_batch_size, free,
                                 "full-ranking evaluation")
    line = (f"memory: {torch.cuda.get_device_name(device)}, {free / budget.GiB:.1f} GiB usable; training "
            f"needs at most {budget.train_bytes(shape, tokens) / budget.GiB:.1f} GiB ({items:,} items), "
            f"evaluation batch {users} users ({budget.eval_bytes(shape, users) / budget.GiB:.1f} GiB)")
    if users < profile.eval_batch_size:
        line += f", cut from {profile.eval_batch_size} to fit (the metrics do not change)"
    return dataclasses.replace(profile, eval_batch_size=users), line


def setup(notebook: str, seed: int = 0, profile: str | None = None) -> Session:
    """Seed, choose the device and profile, stop if the ``gpu`` profile finds no GPU, fit the
    evaluation batch to the GPU, set the plot style; print what the run will do."""
    global _session
    seed_everything(seed)
    chosen, device = get_profile(profile), default_device()
    check_device(chosen, device)
    chosen, memory = fit_to_memory(chosen, device)
    picked = profile is None and not os.environ.get(PROFILE_ENV, "").strip()
    _session = Session(notebook, chosen, device, seed, time.time(), picked, memory)
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        pass
    else:
        # No global grid: it would cross images (confusion matrices) and double on twin axes;
        # a plot that needs one asks for it (ax.grid(alpha=0.3)).
        plt.rcParams.update({"figure.figsize": (7, 4), "figure.dpi": 100, "grid.alpha": 0.3,
                             "axes.spines.top": False, "axes.spines.right": False})
    print(summary(_session))
    return _session


def summary(session: Session) -> str:
    """What ``setup`` prints: the run, what its profile trains, roughly how long, how to change it."""
    p = session.profile
    users = "all users" if p.max_users is None else f"{p.max_users} users each"
    seconds = _last_run_seconds(session.notebook, p.name)
    took = expected_time(session.notebook, p.name, session.device)
    if seconds is not None:
        took += f"; the last {p.name} run of this notebook here took {seconds / 60:.1f} min"
    cap = f", at most the whole epochs that fit in {p.max_steps} steps" if p.max_steps else ""
    others = " or ".join(f"%env {PROFILE_ENV}={name}" for name in PROFILES if name != p.name)
    lines = [
        f"notebook {session.notebook} | profile {p.name} | device {session.device} "
        f"| torch {torch.__version__} | seed {session.seed}",
        f"profile {p.name}: {', '.join(p.datasets)} ({users}); neural models up to {p.epochs} epochs "
        f"(early stop after {p.patience} without gain), window {p.max_len}, width {p.hidden}, "
        f"{p.n_layers} layer(s){cap}; BERT fine-tuning {p.finetune_steps} steps",
        f"time: {took}",
        f"another profile: run {others} in a cell (or set {PROFILE_ENV} before starting), "
        "then rerun this cell",
    ]
    if session.picked and session.device.type != "cuda":
        lines.insert(1, f"no GPU found, so profile {p.name} (on Colab, Runtime > Change runtime type > a GPU "
                        "picks the gpu profile)")
    if p.dry_run:
        lines.insert(1, f"DRY RUN ({DRY_RUN_ENV}): profile {p.name}'s code paths (window, width, data sets, "
                        f"mixed precision) cut to a minute or less; ml-1m is a toy file; results go to "
                        f"{_folder(p.name)}/ and mean nothing")
    if session.memory:
        lines.insert(-1, session.memory)
    return "\n".join(lines)


def _reference_runs() -> dict:
    return json.loads(REFERENCE_TIMES.read_text())["runs"] if REFERENCE_TIMES.is_file() else {}


def reference_minutes(notebook: str) -> dict[str, float]:
    """Minutes ``notebook`` took in each profile's recorded reference run (profiles without one left out)."""
    return {name: runs[notebook]["seconds"] / 60 for name, runs in _reference_runs().items() if notebook in runs}


def expected_time(notebook: str, profile: str, device: torch.device | None = None) -> str:
    """What setup() says about run time: this profile's reference minutes and the other profiles';
    without a reference run, an estimate on ``device`` (:func:`estimated_time`), else a rough phrase."""
    minutes = reference_minutes(notebook)
    if profile not in minutes:
        estimate = estimated_time(notebook, profile, device) if device is not None and profile in ESTIMATED else None
        return estimate or f"expect {ROUGH_TIME.get(profile, 'no estimate for this profile')}"
    run = _reference_runs()[profile][notebook]
    others = ", ".join(f"{name} {m:.1f}" for name, m in minutes.items() if name != profile)
    return (f"about {minutes[profile]:.1f} min (reference run: {run['machine']}, commit {run['commit']})"
            + (f"; other profiles, min: {others}" if others else ""))


def estimated_time(notebook: str, profile: str, device: torch.device) -> str | None:
    """The minutes ``notebook`` should take under the full profile ``profile`` on ``device``, from
    the FLOPs of its trainings and a throughput measured once here (:mod:`helpers.budget`);
    None for a notebook without a plan in ``budget.PLANS``."""
    full = PROFILES[profile]
    flops = budget.notebook_flops(notebook, full)
    if flops is None:
        return None
    rate = budget.measure_flops(full, device)
    minutes = budget.OVERHEAD * flops / rate / 60
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "this CPU"
    took = f"{minutes:.0f} min" if minutes < 120 else f"{minutes / 60:,.0f} hours"
    return (f"about {took} for profile {profile} on {where}, estimated from an empty model cache "
            f"({flops / 1e12:,.0f} TFLOP of training at {rate / 1e9:,.1f} GFLOP/s measured here); no "
            f"recorded {profile} run yet, so this is an order of magnitude")


def results_dir() -> Path:
    """``$COURSE_RESULTS_DIR``; else ``results/`` in the checkout; else in the working directory."""
    if os.environ.get(RESULTS_ENV):
        return Path(os.environ[RESULTS_ENV])
    return (checkout_root() or Path.cwd()) / "results"


def logs_dir() -> Path:
    """Where TensorBoard logs go: ``runs/`` beside the results folder."""
    return results_dir().parent / "runs"


def _active_profile() -> str:
    return _session.profile.name if _session is not None else get_profile().name


def _folder(profile: str) -> str:
    """The results folder of ``profile``: its name, or ``<name>-dry-run`` in a dry run."""
    return f"{profile}-dry-run" if dry_run() else profile


def results_path(notebook: str, profile: str | None = None) -> Path:
    """``results/<profile>/<notebook>.json`` (the active profile when ``profile`` is None;
    ``results/<profile>-dry-run/`` in a dry run)."""
    return results_dir() / _folder(profile or _active_profile()) / f"{notebook}.json"


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); delete it and rerun the notebook "
                         "that records it") from None


def _last_run_seconds(notebook: str, profile: str) -> float | None:
    path = results_path(notebook, profile)
    try:
        seconds = _read(path).get("seconds") if path.is_file() else None
    except ValueError:
        return None
    return float(seconds) if isinstance(seconds, (int, float)) else None


def record(key: str, value: float, notebook: str | None = None) -> float:
    """Store ``value`` under ``key`` (e.g. ``"sasrec/ml-100k/ndcg@10"``) for this notebook.

    The file is ``results/<profile>/<notebook>.json``:
    ``{"profile": ..., "values": {key: value}, "seconds": ...}`` where ``seconds`` is the time
    since ``setup`` (so after a full run it is about the notebook's run time, which the next
    ``setup`` prints). The file is rewritten atomically on every call. Returns ``value`` so it
    can be used inline.
    """
    if notebook is None:
        if _session is None:
            raise RuntimeError("call helpers.course.setup(<notebook name>) before record()")
        notebook = _session.notebook
    profile = _active_profile()
    path = results_path(notebook, profile)
    path.parent.mkdir(parents=True, exist_ok=True)
    stored = _read(path) if path.exists() else {}
    if stored.get("profile") != profile:
        stored = {"profile": profile, "values": {}}
    if dry_run():
        stored["dry_run"] = True
    stored["values"][key] = float(value)
    if _session is not None and _session.notebook == notebook:
        stored["seconds"] = round(time.time() - _session.started, 1)
    write_atomic(path, json.dumps(stored, indent=2, sort_keys=True))
    return value


def load_results(notebook: str, profile: str | None = None) -> dict:
    """What a notebook recorded in ``profile`` (default: the active one):
    ``{"profile": ..., "values": {...}, ...}``.

    A missing file is a ``FileNotFoundError`` saying which notebook and profile to run.
    """
    profile = profile or _active_profile()
    path = results_path(notebook, profile)
    if not path.is_file():
        have = sorted(p.parent.name for p in results_dir().glob(f"*/{notebook}.json"))
        raise FileNotFoundError(
            f"{path} does not exist: run notebooks/{notebook}.ipynb with {PROFILE_ENV}={profile} "
            f"first (results of this notebook exist for: {', '.join(have) or 'no profile'})")
    return _read(path)


def tensorboard(run: str, log_dir: str | os.PathLike | None = None) -> Callable[[torch.nn.Module, dict], None]:
    """An ``on_epoch`` hook for ``helpers.train.train`` that logs each epoch's numbers to TensorBoard.

    Logs go to ``log_dir``, else ``runs/<notebook>/<run>-<date-time>`` (see :func:`logs_dir`; a rerun
    gets its own curve instead of drawing over the last one); watch them with
    ``tensorboard --logdir runs`` (in Jupyter: ``%load_ext tensorboard`` then ``%tensorboard --logdir runs``).
    """
    from torch.utils.tensorboard import SummaryWriter

    notebook = _session.notebook if _session is not None else "session"
    writer = SummaryWriter(str(log_dir or logs_dir() / notebook / f"{run}-{time.strftime('%Y%m%d-%H%M%S')}"))

    def on_epoch(model: torch.nn.Module, row: dict) -> None:
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)):
                writer.add_scalar(key, value, row["epoch"])
        writer.flush()

    on_epoch.log_dir = writer.log_dir
    return on_epoch


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as f:
        f.write(text)
        tmp = Path(f.name)
    os.replace(tmp, path)
