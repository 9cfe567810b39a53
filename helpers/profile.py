"""Run profiles: every size knob a notebook uses comes from here.

The profile is read from the environment variable ``COURSE_PROFILE``:

* ``ci``  - tiny: each notebook runs in well under a minute on 2 CPU cores;
* ``cpu`` - the default: a learner on a laptop finishes a notebook in minutes;
* ``gpu`` - paper scale; chosen automatically when CUDA is available and
  ``COURSE_PROFILE`` is not set.

Notebooks never hard-code a size; they read ``profile.epochs`` and friends.

``COURSE_DRY_RUN=1`` turns any profile into its dry run (:func:`dry_run_of`): every
setting that decides which code runs stays (window, width, layers, data sets, text
length, evaluation batch), every setting that only decides how long it runs (users,
epochs, steps, repeats) is cut to the bone. ``COURSE_PROFILE=gpu COURSE_DRY_RUN=1`` runs
the ``gpu`` code paths on a CPU in seconds; its numbers mean nothing. ``COURSE_DRY_RUN=amp``
also trains under autocast (bfloat16 on a CPU, where CUDA would use mixed precision too),
about four times slower on a CPU without native bfloat16 matrix products.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

ENV_VAR = "COURSE_PROFILE"
DRY_RUN_ENV = "COURSE_DRY_RUN"


@dataclass(frozen=True)
class Profile:
    name: str
    max_users: int | None  # keep this many users (a random subset); None = all
    max_len: int  # history window fed to sequence models
    epochs: int  # training epochs for neural models
    batch_size: int  # training batch (sequences)
    eval_batch_size: int  # users scored at once by `evaluate`
    hidden: int  # embedding / hidden width
    n_layers: int  # encoder layers
    n_heads: int  # attention heads
    dropout: float  # dropout in neural models
    lr: float  # AdamW learning rate
    patience: int  # early-stopping patience (epochs without improvement)
    n_bootstrap: int  # bootstrap resamples for confidence intervals
    datasets: tuple[str, ...]  # data sets a notebook runs its experiments on
    text_model: str = "sentence-transformers/all-MiniLM-L6-v2"  # pretrained BERT: hub id or local path
    finetune_steps: int = 150  # optimizer steps when fine-tuning the pretrained BERT
    text_max_tokens: int = 128  # tokens kept of a history written as text
    finetune_batch_size: int = 16  # examples per fine-tuning step (a BERT step costs far more than SASRec's)
    rerank_k: int = 20  # candidates per user a cross-encoder re-ranks (each costs one BERT pass)
    click_k: int = 50  # candidates per user the feature-based click model re-orders (05)
    id_dropout: float = 0.5  # share of items seen through their text alone per training batch (05)
    new_user_share: float = 0.1  # users held out of all training as real new users (05 on latest-small, 07)
    max_steps: int | None = None  # a run trains the whole epochs that fit in this many steps; None = `epochs`
    cold_epochs: int | None = None  # epochs of each of 05's cold-start models; None = `epochs`
    valid_users: int | None = None  # users a training run validates on (a seeded sample); None = all
    compare_models: tuple[str, ...] | None = None  # registry models in notebook 07's table; None = all
    n_seeds: int = 5  # training seeds per model in notebook 07's variance study
    seed_models: tuple[str, ...] = ("sasrec", "gru4rec")  # the models retrained with every seed
    seed_dataset: str = "beauty"  # the data set of that study
    text_data_models: tuple[str, ...] = ("pop", "markov", "itemknn", "sasrec")  # registry models of 07's table
    # on notebook 05's split of latest-small (05's text-aware models join them from its results file)
    extra_epochs: int | None = None  # epochs (no time budget) of each model 07 trains beyond its table
    explain_users: int = 300  # users in notebook 08's deletion test of explanations
    load_requests: int = 400  # requests in notebook 08's load test
    load_concurrency: int = 200  # requests in flight at once in that test
    latency_repeats: int = 300  # timed calls per latency measurement (08)
    compile_timing: bool = True  # time torch.compile too (its first call compiles: about a minute on CPU)
    student_hidden: int = 16  # width of the distilled student (08)
    gan_steps: int | None = None  # generator updates in 06's adversarial phase (not epochs); None = 5 * epochs
    online_periods: int = 5  # periods the last 20% of the log arrives in (09)
    online_epochs: int = 10  # epochs of the starting model and of each full retraining (09)
    online_finetune_epochs: int = 2  # epochs of an incremental update on a period's new events (09)
    online_eval_events: int | None = 2000  # events evaluated per period (a seeded sample); None = all
    mia_epochs: int = 20  # training epochs the membership-inference curve follows (09)
    dp_epochs: int = 20  # DP-SGD passes over the users, in expectation (09)
    dp_batch_size: int = 240  # expected users per DP-SGD step (09): large batches dilute the noise
    dp_epsilons: tuple[float, ...] = (1.0, 8.0)  # privacy budgets of notebook 09's table (delta = 1/(10 n))
    mb_epochs: int = 5  # epochs of each notebook-10 model (multi-behaviour), at most `epochs`
    mb_weights: tuple[float, ...] = (0.0, 0.5, 0.9, 1.0)  # behaviour-loss weights of notebook 10's joint table
    amp: bool | None = None  # mixed precision in training; None = on CUDA only (bf16, else fp16 with a scaler)
    dry_run: bool = False  # a dry run (COURSE_DRY_RUN): the code paths of `name`, cut to seconds


PROFILES: dict[str, Profile] = {
    "ci": Profile(
        name="ci", max_users=300, max_len=20, epochs=2, batch_size=128,
        eval_batch_size=256, hidden=32, n_layers=1, n_heads=1, dropout=0.2,
        lr=1e-3, patience=1, n_bootstrap=100, datasets=("ml-100k", "beauty"),
        finetune_steps=4, text_max_tokens=32, finetune_batch_size=8, rerank_k=3, click_k=10,
        compare_models=("pop", "markov", "itemknn", "sasrec"), n_seeds=2,
        explain_users=30, load_requests=40, load_concurrency=16, latency_repeats=30, compile_timing=False,
        student_hidden=8,
        online_periods=3, online_epochs=2, online_finetune_epochs=1, online_eval_events=500,
        mia_epochs=3, dp_epochs=2, dp_batch_size=75, dp_epsilons=(8.0,),
    ),
    "cpu": Profile(
        name="cpu", max_users=None, max_len=50, epochs=30, batch_size=256,
        eval_batch_size=1024, hidden=64, n_layers=2, n_heads=2, dropout=0.2,
        lr=1e-3, patience=5, n_bootstrap=1000, datasets=("ml-100k", "beauty"),
        max_steps=900, valid_users=5000, n_seeds=3, extra_epochs=5, seed_dataset="ml-100k",
        # 07's table on a laptop: the registry's models up to SASRec's variants and BERT4Rec (bsarec and
        # sasrec_linear would add several minutes of training; benchmarks/run.py and the gpu profile run them)
        compare_models=("pop", "markov", "itemknn", "bigram", "item2vec", "gru4rec", "sasrec", "sasrec_sampled",
                        "sasrec_bce", "bert4rec"),
        finetune_steps=30, text_max_tokens=64, rerank_k=10, cold_epochs=4, dp_epsilons=(1.0, 4.0, 8.0),
        gan_steps=50,
    ),
    "gpu": Profile(
        name="gpu", max_users=None, max_len=200, epochs=200, batch_size=256,
        eval_batch_size=2048, hidden=128, n_layers=2, n_heads=2, dropout=0.2,
        lr=1e-3, patience=20, n_bootstrap=1000,
        datasets=("ml-100k", "ml-1m", "beauty"),
        finetune_steps=3000, text_max_tokens=512, finetune_batch_size=32, rerank_k=50,
        online_periods=10, online_epochs=50, online_finetune_epochs=3, online_eval_events=None,
        mia_epochs=100, dp_epochs=40, dp_batch_size=240, dp_epsilons=(1.0, 4.0, 8.0),
    ),
}


# What a dry run cuts: only sizes that decide how long a run takes, never which code runs. Kept
# from the profile: max_len, hidden, n_layers, n_heads, datasets, text_max_tokens, eval_batch_size,
# the models compared and the privacy budgets (each is a branch of a loop), and every None that
# means "all" (max_steps, valid_users, online_eval_events). The online periods are cut to 3: each
# period replays the same code, so their number decides the time, not the paths.
# Autocast is left as on a CPU (off) unless COURSE_DRY_RUN=amp: bfloat16 matrix products are emulated
# on most CPUs (4x the time of the whole dry run); tests/test_gpu_path.py trains every registered
# model under bfloat16 autocast and a T4's float16 with its gradient scaler instead.
# compile_timing is off: torch.compile alone takes a minute on a CPU.
DRY_RUN_CUTS = dict(
    max_users=40, batch_size=32, epochs=1, patience=1, n_bootstrap=20,
    finetune_steps=2, finetune_batch_size=2, rerank_k=2, click_k=10, n_seeds=2,
    explain_users=8, load_requests=16, load_concurrency=8, latency_repeats=5, compile_timing=False,
    student_hidden=8, online_epochs=1, online_finetune_epochs=1, mia_epochs=2, dp_epochs=1,
    dp_batch_size=5, mb_epochs=1, online_periods=3, dry_run=True,
)


def dry_run() -> bool:
    """True when ``$COURSE_DRY_RUN`` is set to something other than ``0`` or empty."""
    return os.environ.get(DRY_RUN_ENV, "").strip() not in ("", "0")


def dry_run_of(profile: Profile, amp: bool = False) -> Profile:
    """``profile`` with :data:`DRY_RUN_CUTS` (and autocast on when ``amp``): the same code paths
    in seconds (same ``name``, so every ``profile.name == "gpu"`` branch runs; results go to a
    folder of their own)."""
    return dataclasses.replace(profile, **DRY_RUN_CUTS, **({"amp": True} if amp else {}))


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def profile_name() -> str:
    """The active profile's name: ``$COURSE_PROFILE``, else ``gpu`` with CUDA, else ``cpu``."""
    name = os.environ.get(ENV_VAR, "").strip().lower()
    if not name:
        return "gpu" if _cuda_available() else "cpu"
    if name not in PROFILES:
        raise ValueError(
            f"{ENV_VAR}={name!r} is not a profile; choose one of {sorted(PROFILES)}"
        )
    return name


def get_profile(name: str | None = None, **overrides) -> Profile:
    """The named (or active) profile, with any field overridden by keyword; its dry run
    (:func:`dry_run_of`) when ``$COURSE_DRY_RUN`` is set, the overrides applied after.

    >>> get_profile("ci", epochs=5).epochs
    5
    """
    name = name or profile_name()
    if name not in PROFILES:
        raise ValueError(f"no profile named {name!r}; choose one of {sorted(PROFILES)}")
    unknown = sorted(set(overrides).difference(f.name for f in dataclasses.fields(Profile)))
    if unknown:
        raise TypeError(f"Profile has no field(s) {unknown}; see helpers.profile.Profile")
    amp = os.environ.get(DRY_RUN_ENV, "").strip().lower() == "amp"
    profile = dry_run_of(PROFILES[name], amp) if dry_run() else PROFILES[name]
    return dataclasses.replace(profile, **overrides) if overrides else profile
