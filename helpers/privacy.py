"""Keeping users private: pseudonyms, deletion, memorisation and differential privacy.

* **Pseudonyms.** A user id is replaced by ``HMAC-SHA256(key, user_key(id))``: the same id
  always gives the same pseudonym (so histories still join; ``1``, ``1.0``, ``"1"`` and ``b"1"``
  are one user, :func:`helpers.ids.user_key`), and without the key nobody can go back or
  test a guess. The key is bytes, at least ``MIN_KEY_BYTES`` of them (a short key can be
  found by trying keys); it comes from the environment (``COURSE_PSEUDONYM_KEY``) or from a
  file outside the repository (``COURSE_PSEUDONYM_KEY_FILE``); this module never writes it.
* **Deletion.** :func:`delete_user` removes every stored event of a user from an
  :class:`EventLog` (a file) and from caches (anything with ``forget(user)``, such as
  :class:`helpers.online.OnlineHistories`), matching ids by ``user_key``, and warns when
  nothing matched. A trained model still carries them until retrained.
* **Memorisation.** :func:`attack_auc` is the AUC of a loss-threshold membership-inference
  attack: "a sequence the model fits unusually well was in its training data", with a CI
  from :func:`auc_ci`. The plain loss mostly says how *easy* a user is (popular films are
  easy for any model); :func:`calibrated_losses` subtracts the loss a reference model, trained
  the same way on other users, gives the same sequence (Watson et al., 2022; the offline
  reference-model attack of Carlini et al., 2022), so what is left is what training on the
  user added.
* **Differential privacy.** :func:`dp_train` is DP-SGD (Abadi et al., 2016) at the level of
  users: each step samples every user with probability q (Poisson), clips each user's
  gradient to ``max_grad_norm``, adds Gaussian noise, and Opacus's RDP accountant turns
  (noise, q, steps) into epsilon at a given delta. The default delta is ``1 / (10 n)`` for n
  users: delta must be well below 1/n, since a mechanism that publishes one randomly chosen
  user's whole history is (0, 1/n)-DP.

Why per-sample gradients come from ``torch.func`` and not from Opacus's ``GradSampleModule``:
Opacus computes them with hooks on supported modules (Linear, Embedding, LayerNorm; DP
variants for ``nn.GRU`` and ``nn.MultiheadAttention``). SASRec's attention is built from
Linear layers and needs no DP variant, but its output layer reuses the item embedding
(``h @ item_emb.weight.T``, no module call) and its position embedding reads a (T,) index,
not a batch: hooks would silently miss part of the gradient. ``vmap(grad(...))`` gives
exact per-user gradients of any model; Opacus's ``DPOptimizer`` then clips, adds noise and
averages them, and its accountant computes epsilon.

Letters: B batch (users), T window, V = n_items + 1.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from helpers.course import write_atomic
from helpers.ids import IGNORE, PAD, user_key
from helpers.sequences import pad_left
from helpers.split import EvalSet, Split

KEY_ENV = "COURSE_PSEUDONYM_KEY"  # the key itself, as text (e.g. 64 hex characters)
KEY_FILE_ENV = "COURSE_PSEUDONYM_KEY_FILE"  # or a file outside the repository holding it
MIN_KEY_BYTES = 16


# ---------------------------------------------------------------- pseudonyms
def load_key() -> bytes:
    """The pseudonymisation key from ``$COURSE_PSEUDONYM_KEY`` or ``$COURSE_PSEUDONYM_KEY_FILE``.

    A key file inside a git working tree is refused (it could be committed). Make one with
    ``python -c "import secrets; print(secrets.token_hex(32))" > ~/.course_pseudonym_key``.
    """
    text = os.environ.get(KEY_ENV)
    if not text and os.environ.get(KEY_FILE_ENV):
        path = Path(os.environ[KEY_FILE_ENV]).expanduser().resolve()
        if any((folder / ".git").exists() for folder in path.parents):
            raise ValueError(f"{KEY_FILE_ENV} points inside a git repository ({path}); keep the key elsewhere")
        text = path.read_text()
    if not text:
        raise KeyError(f"set {KEY_ENV} (the key) or {KEY_FILE_ENV} (a file outside the repository)")
    return check_key(text.strip().encode())


def check_key(key: object) -> bytes:
    """``key`` as bytes if it is bytes of at least ``MIN_KEY_BYTES``; else an error saying what to pass."""
    how = f"make one with secrets.token_bytes(32), or call load_key() to read ${KEY_ENV} / ${KEY_FILE_ENV}"
    if isinstance(key, str):
        raise TypeError(f"the key must be bytes, not str: pass key.encode() or bytes.fromhex(key); {how}")
    if not isinstance(key, (bytes, bytearray, memoryview)):
        raise TypeError(f"the key must be bytes, got {type(key).__name__}; {how}")
    if len(bytes(key)) < MIN_KEY_BYTES:
        raise ValueError(f"the key has {len(bytes(key))} bytes; use at least {MIN_KEY_BYTES} "
                         f"(a short key is found by trying keys); {how}")
    return bytes(key)


class Pseudonymiser:
    """``HMAC-SHA256(key, user_key(user_id))`` as 64 hex characters; the key stays in memory only.

    ``key``: bytes of at least ``MIN_KEY_BYTES`` (:func:`check_key`); ``None`` reads it with
    :func:`load_key`.
    """

    def __init__(self, key: bytes | None = None):
        self._key = check_key(load_key() if key is None else key)

    def __call__(self, user_id) -> str:
        return hmac.new(self._key, user_key(user_id).encode(), hashlib.sha256).hexdigest()

    def frame(self, df: pd.DataFrame, column: str = "user_id") -> pd.DataFrame:
        """A copy of ``df`` whose ``column`` holds pseudonyms instead of ids; a row without an
        id is a ``ValueError`` naming it (it belongs to no user)."""
        out = df.copy()
        missing = out[column].isna().to_numpy()
        if missing.any():
            rows = out.index[missing]
            raise ValueError(f"{column} is missing in {missing.sum()} row(s) (index {list(rows[:5])}"
                             f"{' ...' if len(rows) > 5 else ''}); drop or fix them before pseudonymising")
        codes, uniques = pd.factorize(out[column])
        out[column] = np.array([self(u) for u in uniques], dtype=object)[codes]
        return out

    def __repr__(self) -> str:
        return "Pseudonymiser(key=<hidden>)"

    def __reduce__(self):
        raise TypeError("a Pseudonymiser holds the key: it is never pickled or written")


class EventLog:
    """An append-only event file (CSV: ``user_id, item_id, timestamp``) with deletion."""

    COLUMNS = ["user_id", "item_id", "timestamp"]

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def read(self) -> pd.DataFrame:
        if not self.path.exists():
            return pd.DataFrame(columns=self.COLUMNS)
        return pd.read_csv(self.path, dtype={"user_id": str})

    def append(self, events: pd.DataFrame) -> None:
        """Add ``events`` (user ids written as :func:`helpers.ids.user_key` spells them)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        events = events[self.COLUMNS].assign(user_id=[user_key(u) for u in events["user_id"]])
        write_atomic(self.path, pd.concat([self.read(), events]).to_csv(index=False))

    def forget(self, user) -> int:
        """Rewrite the file without ``user``'s events (atomically); returns how many went.
        Ids match by :func:`helpers.ids.user_key`, so a log that spells user 7 ``7.0`` matches."""
        df = self.read()
        gone = np.array([_same_user(u, user_key(user)) for u in df["user_id"]], dtype=bool)
        if gone.any():
            write_atomic(self.path, df[~gone].to_csv(index=False))
        return int(gone.sum())


def _same_user(stored: object, key: str) -> bool:
    """Whether a stored id is the user ``key``; an id that is no user id at all (a gap) is not."""
    try:
        return user_key(stored) == key
    except (TypeError, ValueError):
        return False


def delete_user(user, stores: dict) -> dict[str, int]:
    """Remove ``user`` from every store (``name -> object with forget(user)``); events removed per store.

    ``user`` is passed as :func:`helpers.ids.user_key` spells it. A ``UserWarning`` says so
    when no store held anything: a misspelt id must not look like a completed deletion.
    """
    key = user_key(user)
    removed = {name: int(store.forget(key)) for name, store in stores.items()}
    if not any(removed.values()):
        warnings.warn(f"user {user!r} (key {key!r}) was found in none of {sorted(stores)}: nothing was "
                      "deleted; check the id's spelling", UserWarning, stacklevel=2)
    return removed


# ---------------------------------------------------------------- memorisation
def member_split(n_users: int, member_fraction: float = 0.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices of members (trained on) and non-members (held out), a seeded random split."""
    order = np.random.default_rng(seed).permutation(n_users)
    cut = int(round(member_fraction * n_users))
    return np.sort(order[:cut]), np.sort(order[cut:])


def split_members(s: Split, member_fraction: float = 0.5, seed: int = 0) -> tuple[Split, list[np.ndarray]]:
    """Keep a random ``member_fraction`` of ``s``'s users (their training sequences and
    targets) as the members a model trains on; return them and the other users' training
    sequences, the non-members a membership-inference attack must tell apart."""
    members, others = member_split(len(s.train), member_fraction, seed)
    keep = set(s.train_users[members].tolist())

    def part(ev: EvalSet) -> EvalSet:
        rows = [i for i, u in enumerate(ev.users) if u in keep]
        return EvalSet(ev.users[rows], [ev.histories[i] for i in rows], ev.targets[rows])

    member = Split(s.n_items, [s.train[i] for i in members], s.train_users[members],
                   part(s.valid), part(s.test),
                   f"{s.protocol}; members: {len(members)} of {len(s.train)} users (seed {seed})")
    return member, [s.train[i] for i in others]


@torch.no_grad()
def sequence_losses(model: nn.Module, sequences: Sequence[np.ndarray], batch_size: int = 256) -> np.ndarray:
    """(N,) mean next-item cross-entropy over each sequence's last ``model.max_len`` targets."""
    model.eval()
    out = []
    for start in range(0, len(sequences), batch_size):
        window = pad_left(sequences[start:start + batch_size], model.max_len + 1)  # (B, T + 1)
        inputs, labels = window[:, :-1], window[:, 1:].masked_fill(window[:, :-1] == PAD, IGNORE)
        logits, _ = model(inputs.to(_device(model)))  # (B, T, V)
        ce = F.cross_entropy(logits.transpose(1, 2).float(), labels.to(logits.device),
                             reduction="none")  # (B, T)
        real = (labels != IGNORE).to(ce.device)
        out.append((ce * real).sum(1) / real.sum(1).clamp_min(1))
    return torch.cat(out).cpu().numpy()


def calibrated_losses(model: nn.Module, reference: nn.Module, sequences: Sequence[np.ndarray],
                      batch_size: int = 256) -> np.ndarray:
    """(N,) each sequence's loss under ``model`` minus its loss under ``reference`` (a model that
    never saw these sequences): low when ``model`` fits the user better than an outsider would."""
    return sequence_losses(model, sequences, batch_size) - sequence_losses(reference, sequences, batch_size)


def auc_ci(member_scores: np.ndarray, nonmember_scores: np.ndarray,
           level: float = 0.95) -> tuple[float, float, float]:
    """``(auc, low, high)``: :func:`attack_auc` of (M,) and (N,) scores with DeLong's CI.

    DeLong et al. (1988): each member's share of non-members it beats (``v_m``, (M,)) and each
    non-member's share of members that beat it (``v_n``, (N,)) average to the AUC; its variance
    is ``var(v_m) / M + var(v_n) / N``; the CI is normal, clipped to [0, 1]. A closed form, so
    no second bootstrap; both groups' sampling counts.
    """
    from scipy import stats

    wins = _member_wins(member_scores, nonmember_scores)  # (M, N)
    if wins.shape[0] < 2 or wins.shape[1] < 2:
        raise ValueError("DeLong's CI needs at least 2 members and 2 non-members")
    v_m, v_n = wins.mean(1), wins.mean(0)
    auc = float(v_m.mean())
    se = float(np.sqrt(v_m.var(ddof=1) / len(v_m) + v_n.var(ddof=1) / len(v_n)))
    z = float(stats.norm.ppf(0.5 + level / 2))
    return auc, max(0.0, auc - z * se), min(1.0, auc + z * se)


def attack_auc(member_losses: np.ndarray, nonmember_losses: np.ndarray) -> float:
    """AUC of the attack "lower loss = member": P(member loss < non-member loss), ties 1/2.

    0.5 means the model's losses reveal nothing about membership; 1.0 that a threshold
    separates every training user from every held-out one.
    """
    return float(_member_wins(member_losses, nonmember_losses).mean())


def _member_wins(member: np.ndarray, nonmember: np.ndarray) -> np.ndarray:
    """(M, N): 1 where a member's loss is below a non-member's, 1/2 on a tie, else 0."""
    m = np.asarray(member, dtype=np.float64)[:, None]  # (M, 1)
    n = np.asarray(nonmember, dtype=np.float64)[None, :]  # (1, N)
    return (m < n) + 0.5 * (m == n)


# ---------------------------------------------------------------- DP-SGD
@dataclass
class DPConfig:
    epochs: int = 10  # passes, in expectation, over the users
    batch_size: int = 64  # expected users per step: sample rate q = batch_size / n_users
    lr: float = 1e-3  # AdamW learning rate (DP noise is added before the optimizer: post-processing)
    target_epsilon: float | None = 8.0  # None = no clipping, no noise (the same loop, not private)
    delta: float | None = None  # None = 1 / (10 n_users): well below 1/n (see the module docstring)
    max_grad_norm: float = 1.0  # C: each user's gradient is clipped to this L2 norm
    seed: int = 0


@dataclass
class DPResult:
    epsilon: float  # spent, at `delta` (inf when not private)
    delta: float
    noise_multiplier: float  # sigma: noise std = sigma * C on the summed gradient
    steps: int
    sample_rate: float
    losses: list[float]  # mean training loss per step


def default_delta(n_users: int) -> float:
    """``1 / (10 n)``: a delta well below 1/n. At delta = 1/n, publishing one random user's
    whole data would count as private (it reveals each user with probability 1/n)."""
    return 1.0 / (10 * n_users)


def user_windows(sequences: Sequence[np.ndarray], max_len: int,
                 rng: np.random.Generator) -> tuple[Tensor, Tensor]:
    """One training example per user: a random crop of ``max_len + 1`` consecutive items ->
    ``(inputs, labels)`` both (B, max_len), left-padded, labels ``IGNORE`` on padding."""
    crops = []
    for s in sequences:
        end = int(rng.integers(min(len(s), max_len + 1), len(s) + 1))
        crops.append(s[max(0, end - max_len - 1): end])
    window = pad_left(crops, max_len + 1)  # (B, T + 1)
    return window[:, :-1], window[:, 1:].masked_fill(window[:, :-1] == PAD, IGNORE)


def per_sample_grads(model: nn.Module, inputs: Tensor, labels: Tensor) -> tuple[dict[str, Tensor], Tensor]:
    """Gradients of each row's mean next-item loss: ``{name: (B, *param.shape)}`` and losses (B,)."""
    from torch.func import functional_call, grad_and_value, vmap

    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}

    def loss_of_one(p: dict, x: Tensor, y: Tensor) -> Tensor:
        logits, _ = functional_call(model, p, (x[None],))  # (1, T, V)
        return F.cross_entropy(logits[0].float(), y, ignore_index=IGNORE)

    per_row = vmap(grad_and_value(loss_of_one), in_dims=(None, 0, 0), randomness="different")
    grads, losses = per_row(params, inputs, labels)
    return grads, losses


def dp_train(model: nn.Module, sequences: Sequence[np.ndarray], config: DPConfig) -> DPResult:
    """Train ``model`` (``forward(input_ids) -> (logits (B, T, V), _)``) on one random window
    per sampled user per step, with DP-SGD unless ``config.target_epsilon`` is None.

    The noise multiplier is the smallest that keeps epsilon <= ``target_epsilon`` at ``delta``
    after all steps (Opacus ``get_noise_multiplier``, RDP accountant); the epsilon returned is
    the accountant's after the steps actually taken.
    """
    from opacus.accountants import RDPAccountant
    from opacus.accountants.utils import get_noise_multiplier
    from opacus.optimizers import DPOptimizer

    n = len(sequences)
    q = min(1.0, config.batch_size / n)
    steps = max(1, round(config.epochs / q))
    delta = config.delta if config.delta is not None else default_delta(n)
    private = config.target_epsilon is not None
    sigma = get_noise_multiplier(target_epsilon=config.target_epsilon, target_delta=delta, sample_rate=q,
                                 steps=steps) if private else 0.0
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
    if private:
        optimizer = DPOptimizer(optimizer, noise_multiplier=sigma, max_grad_norm=config.max_grad_norm,
                                expected_batch_size=config.batch_size)
    accountant, losses = RDPAccountant(), []
    model.train()
    device = _device(model)
    for _ in range(steps):
        chosen = np.flatnonzero(rng.random(n) < q)  # Poisson sampling: the batch size varies
        inputs, labels = user_windows([sequences[i] for i in chosen], model.max_len, rng)
        inputs, labels = inputs.to(device), labels.to(device)
        optimizer.zero_grad()
        if private:
            if len(chosen):
                grads, loss = per_sample_grads(model, inputs, labels)
            else:  # an empty batch still takes a (pure noise) step, as the accounting assumes
                grads, loss = {}, torch.zeros(1)
            for name, p in model.named_parameters():
                if p.requires_grad:
                    p.grad_sample = grads.get(name, p.new_zeros(0, *p.shape))  # (B, *shape)
            accountant.step(noise_multiplier=sigma, sample_rate=q)
        elif len(chosen):
            logits, _ = model(inputs)  # (B, T, V)
            ce = F.cross_entropy(logits.transpose(1, 2).float(), labels, ignore_index=IGNORE, reduction="none")
            real = labels != IGNORE
            loss = (ce * real).sum(1) / real.sum(1).clamp_min(1)  # (B,): each user's mean, as in private steps
            loss.mean().backward()
        else:
            continue
        optimizer.step()
        losses.append(float(loss.detach().mean()))
    model.eval()
    epsilon = accountant.get_epsilon(delta) if private else float("inf")
    return DPResult(epsilon, delta, sigma, steps, q, losses)


def _device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")
