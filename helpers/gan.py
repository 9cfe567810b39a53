"""GAN-style generation of item sequences: generator, discriminator, adversarial training.

The objective (Goodfellow et al., 2014), with ``D(x)`` the probability that ``x`` is real:

    L_D = -E_x[log D(x)] - E_z[log(1 - D(G(z)))]        (the discriminator's loss)
    L_G = -E_z[log D(G(z))]                              (the "non-saturating" generator loss)

**Generator**: any causal next-item model whose ``forward(input_ids)`` returns logits
(B, T, V) with column ``t`` depending only on items ``0..t``, however long the input (GRU4Rec;
not this course's SASRec, whose positions count back from the last column). It is first
trained by maximum likelihood with the shared loop (:func:`helpers.train.train`); this
module samples from it autoregressively. A sequence's first item comes from the empirical
distribution of real first items (a causal model never learns it: no window has a label
before its first input), and its length from the empirical distribution of real lengths,
so the generator learns *which* items follow which, not how long users stay.

**Adversarial training** over discrete items cannot backpropagate through the sampling.
We use the score-function (REINFORCE) estimator, as SeqGAN does (Yu et al., 2017), with
one simplification, chosen for speed and stated here: the reward is **per sequence**
(``log D(y)`` of the finished sequence, so the surrogate's gradient is exactly the
gradient of ``L_G``), minus the batch mean as a baseline to cut variance, instead of
SeqGAN's Monte-Carlo rollouts that give every prefix its own reward.

Letters: B batch, T time, H hidden, V = n_items + 1 (PAD column included), L length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from helpers.course import quiet
from helpers.ids import IGNORE, PAD
from helpers.sequences import pad_left


# ---------------------------------------------------------------- the generator
def first_item_probs(sequences: Sequence[np.ndarray], n_items: int, smoothing: float = 0.0) -> np.ndarray:
    """(V,) empirical distribution of the first item of ``sequences``, plus ``smoothing``
    pseudo-counts per item (so an unseen first item keeps a finite log-probability); PAD is 0."""
    counts = np.bincount([int(s[0]) for s in sequences if len(s)], minlength=n_items + 1) + float(smoothing)
    counts[PAD] = 0.0
    return counts / counts.sum()


def _next_log_probs(logits: Tensor, seen: Tensor | None, temperature: float) -> Tensor:
    """(B, V) logits -> log-probabilities; PAD and, when given, ``seen`` (B, V) items get -inf."""
    logits = logits.float() / temperature
    logits[:, PAD] = float("-inf")
    if seen is not None:
        logits = logits.masked_fill(seen, float("-inf"))
    return F.log_softmax(logits, dim=-1)


@torch.no_grad()
def sample(model: nn.Module, lengths: Sequence[int], first_probs: np.ndarray, *,
           temperature: float = 1.0, exclude_seen: bool = True,
           generator: torch.Generator | None = None) -> Tensor:
    """Draw one sequence per entry of ``lengths``; returns (B, L), L = max(lengths).

    Row ``b`` holds ``lengths[b]`` items (ids 1..n_items) followed by PAD on the right.
    Item ``t + 1`` is drawn from ``softmax(logits[:, t] / temperature)`` of ``model`` run
    over items ``0..t``; with ``exclude_seen`` an item never repeats (as in MovieLens).
    A model with a ``step(item_ids (B,), state) -> (logits (B, V), state)`` method (GRU4Rec)
    is advanced one item at a time instead of re-reading the prefix: O(L) instead of O(L^2).
    """
    lengths = torch.as_tensor(list(lengths), dtype=torch.long)
    if len(lengths) == 0 or int(lengths.min()) < 1:
        raise ValueError("need at least one sequence, each of length >= 1")
    if exclude_seen and int(lengths.max()) > len(first_probs) - 1:
        raise ValueError("without repeats a sequence cannot be longer than the catalogue")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    B, L = len(lengths), int(lengths.max())
    first = torch.multinomial(torch.as_tensor(first_probs, dtype=torch.float).expand(B, -1), 1,
                              generator=generator)  # (B, 1)
    out = first.to(device)
    seen = torch.zeros(B, len(first_probs), dtype=torch.bool, device=device)
    seen.scatter_(1, out, True)
    step, state = getattr(model, "step", None), None
    for _ in range(L - 1):
        if step is not None:  # a recurrent model carries its state: one step per item
            logits, state = step(out[:, -1], state)  # (B, V)
        else:  # otherwise re-read the whole prefix
            logits = model(out)[0][:, -1]  # (B, V)
        log_p = _next_log_probs(logits, seen if exclude_seen else None, temperature)
        nxt = torch.multinomial(log_p.exp().cpu(), 1, generator=generator).to(device)  # (B, 1)
        out = torch.cat([out, nxt], dim=1)
        seen.scatter_(1, nxt, True)
    model.train(was_training)
    keep = torch.arange(L)[None, :] < lengths[:, None]  # (B, L)
    return out.cpu().masked_fill(~keep, PAD)


def to_arrays(samples: Tensor) -> list[np.ndarray]:
    """(B, L) right-padded samples -> B arrays without PAD (the course's sequence lists)."""
    return [row[row != PAD] for row in samples.numpy()]


def pad_right(sequences: Sequence[np.ndarray]) -> Tensor:
    """Arrays of item ids -> (B, L) right-padded LongTensor, the layout :func:`sample` returns."""
    out = torch.full((len(sequences), max(map(len, sequences))), PAD, dtype=torch.long)
    for row, s in enumerate(sequences):
        out[row, : len(s)] = torch.as_tensor(np.asarray(s, dtype=np.int64))
    return out


def right_to_left(samples: Tensor) -> Tensor:
    """Right-padded (B, L) samples -> left-padded (B, L), the course's input layout."""
    n_pad = (samples == PAD).sum(1)  # (B,)
    L = samples.shape[1]
    idx = (torch.arange(L)[None, :] - n_pad[:, None]) % L  # (B, L)
    return samples.gather(1, idx)


def sequence_log_probs(model: nn.Module, samples: Tensor, first_probs: np.ndarray, *,
                       temperature: float = 1.0, exclude_seen: bool = True) -> Tensor:
    """(B,) log-probability of each right-padded sequence (B, L) under :func:`sample`'s process.

    Sums ``log first_probs[y_0]`` and ``log p(y_t | y_<t)`` over the real items of a row,
    in one teacher-forced pass over the left-padded rows (the models' input layout);
    differentiable with respect to ``model``'s parameters.
    """
    device = next(model.parameters()).device
    x = right_to_left(samples).to(device)  # (B, L), most recent item last
    B, L = x.shape
    n_real = (x != PAD).sum(1)  # (B,)
    first_ids = x.gather(1, (L - n_real)[:, None]).squeeze(1)  # (B,)
    first = torch.as_tensor(first_probs, dtype=torch.float, device=device)[first_ids].log()  # (B,)
    if L == 1:
        return first
    logits, _ = model(x[:, :-1])  # (B, L - 1, V)
    V = logits.shape[-1]
    seen = None
    if exclude_seen:
        hit = torch.zeros(B, L - 1, V, dtype=torch.uint8, device=device).scatter_(2, x[:, :-1, None], 1)
        seen = hit.cummax(1).values.bool().reshape(-1, V)  # (B (L - 1), V): items read so far
    log_p = _next_log_probs(logits.reshape(-1, V), seen, temperature)  # (B (L - 1), V)
    target = x[:, 1:].reshape(-1)  # (B (L - 1),)
    valid = (target != PAD) & (x[:, :-1].reshape(-1) != PAD)  # a target with an item before it
    picked = log_p.gather(1, target[:, None]).squeeze(1)  # (B (L - 1),)
    picked = torch.where(valid, picked, torch.zeros_like(picked))
    return first + picked.view(B, L - 1).sum(1)


# ---------------------------------------------------------------- the discriminator
@dataclass
class DiscriminatorConfig:
    n_items: int  # items are 1..n_items, 0 is PAD
    max_len: int = 50  # longest sequence it reads (the most recent items)
    hidden: int = 64  # H: item embedding width
    n_filters: int = 32  # convolution filters per kernel width
    kernel_sizes: tuple[int, ...] = (1, 2, 3, 4)  # n-gram widths the filters look at
    dropout: float = 0.2  # before the output layer


class Discriminator(nn.Module):
    """A text-CNN over item ids (Kim, 2014; SeqGAN's choice): logit that a sequence is real.

    ``embedding -> Conv1d per kernel width -> ReLU -> max over real positions -> linear``.
    Inputs are left-padded (B, T); PAD positions never win the max-pool.
    """

    def __init__(self, config: DiscriminatorConfig):
        super().__init__()
        self.config = config
        self.item_emb = nn.Embedding(config.n_items + 1, config.hidden, padding_idx=PAD)
        self.convs = nn.ModuleList(nn.Conv1d(config.hidden, config.n_filters, k, padding=k - 1)
                                   for k in config.kernel_sizes)
        self.drop = nn.Dropout(config.dropout)
        self.out = nn.Linear(config.n_filters * len(config.kernel_sizes) + 1, 1)

    @property
    def max_len(self) -> int:
        return self.config.max_len

    def forward(self, input_ids: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """(B, T) ids -> ``(logits (B,), loss)``; ``labels`` (B,) 1 = real, 0 = generated,
        and the loss is then their mean binary cross-entropy."""
        input_ids = input_ids[:, -self.max_len:]
        T = input_ids.shape[1]
        real = input_ids != PAD  # (B, T)
        x = self.item_emb(input_ids).transpose(1, 2)  # (B, H, T)
        pooled = []
        for conv in self.convs:
            h = F.relu(conv(x))[:, :, :T]  # (B, F, T): window ending at t
            pooled.append(h.masked_fill(~real[:, None, :], 0.0).amax(2))  # (B, F)
        length = real.sum(1, keepdim=True).float() / self.max_len  # (B, 1): length is evidence too
        logits = self.out(self.drop(torch.cat(pooled + [length], dim=1))).squeeze(1)  # (B,)
        if labels is None:
            return logits, None
        return logits, F.binary_cross_entropy_with_logits(logits, labels.float())


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """L_D = -mean log D(x) - mean log(1 - D(G(z))), from logits (stable: log sigmoid)."""
    return -F.logsigmoid(real_logits).mean() - F.logsigmoid(-fake_logits).mean()


def generator_loss(fake_logits: Tensor) -> Tensor:
    """L_G = -mean log D(G(z)) (the non-saturating generator loss), from logits."""
    return -F.logsigmoid(fake_logits).mean()


def policy_gradient_loss(log_probs: Tensor, rewards: Tensor) -> Tensor:
    """REINFORCE surrogate ``-mean((r - mean r) * log p(y))``; log_probs, rewards (B,).

    Its gradient is an unbiased estimate of ``grad E[r]`` up to sign (the baseline
    ``mean r`` is almost independent of one sample for a large batch and cuts variance).
    """
    advantage = (rewards - rewards.mean()).detach()
    return -(advantage * log_probs).mean()


# ---------------------------------------------------------------- adversarial training
@dataclass
class AdversarialConfig:
    steps: int = 100  # generator updates
    batch_size: int = 128  # sequences per step (real and generated each)
    d_steps: int = 1  # discriminator updates per generator update
    d_pretrain_steps: int = 50  # discriminator updates against the MLE generator first
    g_lr: float = 1e-4  # generator learning rate (small: policy gradients are noisy)
    d_lr: float = 1e-3  # discriminator learning rate
    mle_weight: float = 0.0  # add this times the teacher-forced NLL of a real batch to L_G
    temperature: float = 1.0  # sampling temperature during training
    exclude_seen: bool = True  # generated items never repeat
    seed: int = 0

    def __post_init__(self):
        if self.d_steps < 1 or self.batch_size < 1 or self.temperature <= 0:
            raise ValueError("need d_steps >= 1, batch_size >= 1 and temperature > 0")


def real_batch(sequences: Sequence[np.ndarray], max_len: int, rows: np.ndarray) -> Tensor:
    """(B, T) left-padded last ``max_len`` items of the chosen real ``sequences``."""
    return pad_left([sequences[i] for i in rows], max_len)


def _mle_loss(model: nn.Module, batch: Tensor) -> Tensor:
    """Teacher-forced next-item loss of a left-padded real batch (B, T)."""
    labels = batch[:, 1:].masked_fill(batch[:, 1:] == PAD, IGNORE)
    labels = labels.masked_fill(batch[:, :-1] == PAD, IGNORE)  # no label without an input
    _, loss = model(batch[:, :-1], labels)
    return loss


def adversarial_train(generator: nn.Module, discriminator: Discriminator, sequences: Sequence[np.ndarray],
                      n_items: int, config: AdversarialConfig, *, progress: bool = True) -> pd.DataFrame:
    """Alternate discriminator and generator updates; returns one row per generator step.

    A progress bar follows the generator steps unless ``progress=False`` or ``$TQDM_DISABLE`` is set.

    ``sequences``: the real training sequences (each used through its last
    ``discriminator.max_len`` items). Generated lengths are drawn from the real ones.
    Columns: ``step``, ``d_loss`` (L_D), ``g_loss`` (L_G on the step's samples), ``d_real``
    and ``d_fake`` (mean D on real and generated), ``log_prob`` (mean log-probability
    of the samples under the generator: it rises when the generator collapses).
    """
    rng = np.random.default_rng(config.seed)
    torch_rng = torch.Generator().manual_seed(config.seed)
    max_len = discriminator.max_len
    seqs = [np.asarray(s[-max_len:]) for s in sequences if len(s)]
    lengths = np.array([len(s) for s in seqs])
    first = first_item_probs(seqs, n_items)
    g_opt = torch.optim.Adam(generator.parameters(), lr=config.g_lr)
    d_opt = torch.optim.Adam(discriminator.parameters(), lr=config.d_lr)
    device = next(discriminator.parameters()).device
    kw = {"temperature": config.temperature, "exclude_seen": config.exclude_seen}

    def batch() -> tuple[Tensor, Tensor]:
        rows = rng.integers(0, len(seqs), config.batch_size)
        fake = sample(generator, lengths[rng.integers(0, len(seqs), config.batch_size)], first,
                      generator=torch_rng, **kw)
        return real_batch(seqs, max_len, rows).to(device), fake

    def d_step() -> tuple[float, Tensor, Tensor]:
        real, fake = batch()
        discriminator.train()
        loss = discriminator_loss(discriminator(real)[0], discriminator(right_to_left(fake).to(device))[0])
        d_opt.zero_grad(set_to_none=True)
        loss.backward()
        d_opt.step()
        return loss.item(), real, fake

    for _ in range(config.d_pretrain_steps):
        d_step()
    history = []
    hide = quiet(progress)
    for step in tqdm(range(1, config.steps + 1), disable=hide, desc="adversarial", leave=False):
        d_losses = []
        for _ in range(config.d_steps):  # the generator step reuses the last batch (half the sampling)
            loss, real, fake = d_step()
            d_losses.append(loss)
        discriminator.eval()
        with torch.no_grad():
            fake_logits = discriminator(right_to_left(fake).to(device))[0]  # (B,)
            real_logits = discriminator(real)[0]
        generator.eval()  # on-policy: the same (dropout-free) distribution the samples came from
        log_p = sequence_log_probs(generator, fake, first, **kw)  # (B,)
        loss = policy_gradient_loss(log_p, F.logsigmoid(fake_logits))  # reward log D(y): L_G's gradient
        if config.mle_weight:
            loss = loss + config.mle_weight * _mle_loss(generator, real)
        g_opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(generator.parameters(), 1.0)
        g_opt.step()
        history.append({"step": step, "d_loss": float(np.mean(d_losses)),
                        "g_loss": generator_loss(fake_logits).item(),
                        "d_real": torch.sigmoid(real_logits).mean().item(),
                        "d_fake": torch.sigmoid(fake_logits).mean().item(),
                        "log_prob": log_p.mean().item()})
    generator.eval()
    discriminator.eval()
    return pd.DataFrame(history)
