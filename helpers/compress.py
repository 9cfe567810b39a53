"""Making a trained model small and fast: quantization, distillation, export, and timing.

* :func:`quantize_linear`: int8 **dynamic** quantization of every ``nn.Linear`` (weights
  stored in int8, activations quantized on the fly per batch), PyTorch's
  ``quantize_dynamic``. The item table is not a Linear layer: it stays float.
* :func:`compress_items`: the item table (input lookup and tied output) stored in ``fp16``,
  in ``int8`` with one scale per row (:class:`Int8Embedding`), or by product quantization
  in a few bytes per item (:class:`PQEmbedding`); for a SASRec-size model on a 12k-item
  catalogue the table is most of the bytes. :func:`finetune_codebooks` then trains the
  centroids (codes fixed) with the rest of the model, which recovers most of what PQ loses.
* :func:`distill`: a smaller student trained to match a teacher's softened softmax
  (Hinton et al., 2015) mixed with the next item's cross-entropy, through the course's
  training loop (:class:`Distillation`). The teacher runs once (:func:`teacher_targets`
  keeps its top k at every training target), so an epoch of distillation costs about what an
  epoch of training alone does, and a grid of temperatures and weights reuses one pass.
* :func:`export_onnx` and :class:`OnnxScorer`: the scoring function as an ONNX graph run by
  ONNX Runtime; the scorer follows the harness's interface, so it is evaluated as any model.
* :func:`time_calls` / :func:`latency_summary`: per-call wall time and its percentiles;
  :func:`scoring_latency`: one request and a batch, on one thread (:func:`threads`);
  :func:`model_size_mb`: the bytes of a saved state dict.

Letters: B batch, T window, H hidden, V = n_items + 1, N positions with a label.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from helpers.ids import IGNORE, PAD
from helpers.batches import CausalBatches, causal_windows
from helpers.split import Split
from helpers.train import TrainConfig, TrainResult, train


# ---------------------------------------------------------------- size and time
def model_size_mb(model: nn.Module) -> float:
    """Megabytes (1e6 bytes) of ``torch.save(model.state_dict())``: what a file on disk holds."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes / 1e6


def time_calls(fn: Callable[[], object], repeats: int = 200, warmup: int = 10) -> np.ndarray:
    """(repeats,) milliseconds per call of ``fn()``, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    out = np.empty(repeats)
    for i in range(repeats):
        start = time.perf_counter()
        fn()
        out[i] = (time.perf_counter() - start) * 1e3
    return out


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch threads, then restore the previous count: latency on one
    thread is what one request costs a server that runs one request per core."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@torch.inference_mode()
def scoring_latency(model, one: Tensor, batch: Tensor, repeats: int = 200, n_threads: int = 1) -> dict[str, float]:
    """Median milliseconds of ``model.score`` on one request ``one`` (1, T) and, per user, on a
    batch ``batch`` (B, T), on ``n_threads`` torch threads (:func:`time_calls`)."""
    with threads(n_threads):
        single = time_calls(lambda: model.score(one), repeats=repeats)
        batched = time_calls(lambda: model.score(batch), repeats=max(5, repeats // 10)) / len(batch)
    return {"p50 ms (batch 1)": float(np.median(single)), f"ms per user (batch {len(batch)})": float(np.median(batched))}


def latency_summary(ms: np.ndarray) -> dict[str, float]:
    """Mean and p50/p95/p99 of a latency sample in milliseconds."""
    return {"mean ms": float(np.mean(ms)), "p50 ms": float(np.percentile(ms, 50)),
            "p95 ms": float(np.percentile(ms, 95)), "p99 ms": float(np.percentile(ms, 99))}


class Scores(nn.Module):
    """``forward(input_ids (B, T)) -> (B, V)`` scores of a model with ``hidden`` and ``logits``:
    the one function a service calls, as a module that ``torch.compile`` and the ONNX
    exporter take whole."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.max_len = model.max_len

    def forward(self, input_ids: Tensor) -> Tensor:
        return self.model.logits(self.model.hidden(input_ids)[:, -1]).float()  # (B, V)

    @torch.no_grad()
    def score(self, input_ids: Tensor) -> Tensor:
        return self(input_ids)


# ---------------------------------------------------------------- quantization
def check_finite(model: nn.Module) -> None:
    """Refuse (``ValueError``, naming them) a model whose float weights hold NaN or infinity:
    compressing one would hide the fault until a request fails."""
    broken = [name for name, t in [*model.named_parameters(), *model.named_buffers()]
              if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if broken:
        raise ValueError(f"the model has NaN or infinite values in {broken}; refusing to compress it")


def quantize_linear(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (in eval mode) with every ``nn.Linear`` quantized to int8, dynamically."""
    check_finite(model)
    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated upstream for the separate torchao package; the
        # eager API still works in this torch and needs no extra dependency.
        warnings.filterwarnings("ignore", message=".*torch.ao.quantization is deprecated.*")
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*deprecated.*")
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model).eval(), {nn.Linear}, dtype=torch.qint8)


class Int8Embedding(nn.Module):
    """An item table in int8 with one float scale per row: ``row = q * scale``, (V, H).

    Symmetric per-row quantization: ``scale = max |row| / 127``. ``weight`` dequantizes the
    whole table (a tied output layer reads it); ``forward`` only the rows looked up.
    """

    def __init__(self, weight: Tensor, padding_idx: int | None = PAD):
        super().__init__()
        weight = weight.detach().float()
        scale = weight.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127  # (V, 1)
        self.register_buffer("q", torch.round(weight / scale).to(torch.int8))  # (V, H)
        self.register_buffer("scale", scale.half())  # fp16 scales: 2 bytes per row
        self.padding_idx = padding_idx

    @property
    def weight(self) -> Tensor:
        return self.q.float() * self.scale.float()  # (V, H)

    def forward(self, ids: Tensor) -> Tensor:
        return self.q[ids].float() * self.scale[ids].float()  # (..., H)


class HalfEmbedding(nn.Module):
    """An item table stored in float16, computed with in float32."""

    def __init__(self, weight: Tensor, padding_idx: int | None = PAD):
        super().__init__()
        self.register_buffer("table16", weight.detach().half())  # (V, H)
        self.padding_idx = padding_idx

    @property
    def weight(self) -> Tensor:
        return self.table16.float()

    def forward(self, ids: Tensor) -> Tensor:
        return self.table16[ids].float()


def kmeans(x: Tensor, k: int, iters: int = 25, seed: int = 0,
           weights: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means with k-means++ starting centres: ``(N, d)`` -> centroids ``(k', d)``,
    assignment ``(N,)``; ``k' = min(k, distinct rows)``.

    ``weights`` (N,) make a row count that many times in its centroid's mean.
    """
    generator = torch.Generator().manual_seed(seed)
    w = torch.ones(len(x)) if weights is None else weights.float()  # (N,)
    chosen = [int(torch.randint(len(x), (1,), generator=generator))]
    nearest = ((x - x[chosen[0]]) ** 2).sum(1)  # (N,) squared distance to the closest centre so far
    while len(chosen) < k and nearest.max() > 0:  # k-means++: far rows are likelier next centres
        chosen.append(int(torch.multinomial(nearest, 1, generator=generator)))
        nearest = torch.minimum(nearest, ((x - x[chosen[-1]]) ** 2).sum(1))
    centroids = x[chosen].clone()  # (k', d)
    for _ in range(iters):
        assign = torch.cdist(x, centroids).argmin(dim=1)  # (N,)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x * w[:, None])  # (k, d)
        mass = torch.zeros(len(centroids)).index_add_(0, assign, w).unsqueeze(1)  # (k, 1)
        centroids = torch.where(mass > 0, sums / mass.clamp_min(1e-12), centroids)  # an empty cluster keeps its centre
    return centroids, torch.cdist(x, centroids).argmin(dim=1)


class PQEmbedding(nn.Module):
    """An item table by product quantization (Jegou et al., 2011), as RecJPQ does for SASRec.

    Each row is cut into ``subspaces`` pieces of ``H / subspaces`` values; in each sub-space a
    k-means codebook of 256 centroids is fitted (after training: RecJPQ learns them jointly)
    and a piece is stored as the one-byte index of its nearest centroid. A row costs
    ``subspaces`` bytes instead of ``4 H``; the codebooks add ``256 H`` values, stored in fp16
    (they are computed with in fp32). Row PAD is zero.
    ``item_weights`` (V,), e.g. training counts, make k-means fit frequent items more closely:
    they are the ones most often recommended and most often the target. With ``exact=n`` the
    n heaviest items (by ``item_weights``) keep their own row in int8 (:class:`Int8Embedding`'s
    rounding, ``H + 2`` bytes each plus a 4-byte id): a few popular items carry a large share
    of the events, so their rows are worth more than their bytes.
    """

    def __init__(self, weight: Tensor, subspaces: int = 8, centroids: int = 256, padding_idx: int | None = PAD,
                 seed: int = 0, item_weights: Tensor | None = None, exact: int = 0):
        super().__init__()
        V, H = weight.shape
        if H % subspaces or not 1 < centroids <= 256:
            raise ValueError(f"subspaces must divide hidden={H}, and 1 < centroids <= 256 (one byte)")
        pieces = weight.detach().float()[1:].reshape(V - 1, subspaces, H // subspaces)  # (V-1, m, d), PAD left out
        w = None if item_weights is None else torch.as_tensor(item_weights, dtype=torch.float32)[1:] + 1  # (V-1,)
        fits = [kmeans(pieces[:, j], min(centroids, V - 1), seed=seed + j, weights=w) for j in range(subspaces)]
        self.register_buffer("codebooks", torch.stack([c for c, _ in fits]).half())  # (m, k, d), 2 bytes a value
        codes = torch.stack([a for _, a in fits], dim=1).to(torch.uint8)  # (V-1, m)
        self.register_buffer("codes", torch.cat([codes.new_zeros(1, subspaces), codes]))  # (V, m)
        if exact and item_weights is None:
            raise ValueError("exact=n keeps the n heaviest items: pass item_weights (e.g. training counts)")
        heavy = torch.zeros(0, dtype=torch.long) if not exact else w.argsort(descending=True)[:exact] + 1  # (n,)
        rows = Int8Embedding(weight.detach().float()[heavy])
        self.register_buffer("exact_ids", heavy.to(torch.int32))  # (n,) item ids
        self.register_buffer("exact_q", rows.q)  # (n, H) int8
        self.register_buffer("exact_scale", rows.scale)  # (n, 1) fp16
        self.padding_idx = padding_idx
        self._dense: Tensor | None = None  # the decoded table, kept in memory only (never saved)

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._dense = None  # new codes: decode again

    def _decode(self) -> Tensor:
        m = self.codes.shape[1]
        rows = self.codebooks[torch.arange(m, device=self.codes.device), self.codes.long()].float()  # (V, m, d)
        rows = rows.reshape(len(self.codes), -1)  # (V, H)
        if len(self.exact_ids):
            exact = self.exact_q.float() * self.exact_scale.float()  # (n, H)
            rows = rows.index_put((self.exact_ids.long(),), exact.to(rows.dtype))
        return torch.cat([torch.zeros_like(rows[:1]), rows[1:]])  # row PAD is zero

    @property
    def weight(self) -> Tensor:
        """(V, H) decoded once, on first use: the file stays small, scoring runs at float speed.
        While the codebooks learn (:func:`finetune_codebooks`) it is decoded on every call, so
        gradients reach them."""
        if isinstance(self.codebooks, nn.Parameter) and self.codebooks.requires_grad and torch.is_grad_enabled():
            self._dense = None
            return self._decode()
        if self._dense is None or self._dense.device != self.codes.device:
            self._dense = self._decode().detach()
        return self._dense

    def forward(self, ids: Tensor) -> Tensor:
        return F.embedding(ids, self.weight)  # (..., H)


def finetune_codebooks(model: nn.Module, split: Split, config: TrainConfig, *, only_codebooks: bool = False,
                       targets: TeacherTargets | None = None, temperature: float = 1.0, alpha: float = 0.5,
                       progress: bool = False) -> TrainResult:
    """Train the PQ codebooks of ``model.item_emb`` (a :class:`PQEmbedding`) with the codes
    fixed, and every other weight unless ``only_codebooks``, through the course's loop (early
    stopping on validation, the best epoch kept): quantising after training moves each item to
    its nearest centroids, and a few epochs let the model and the centroids adapt to that, as
    RecJPQ trains them jointly (in fp32; they are stored in fp16 again at the end). With
    ``targets`` (the unquantised model's stored answers, :func:`teacher_targets`) the loss is
    :class:`Distillation`'s: the quantised model learns to say what it said before
    quantisation, not only the next item. The file keeps its size: codes and codebooks keep
    their shapes."""
    table = model.item_emb
    if not isinstance(table, PQEmbedding):
        raise TypeError(f"model.item_emb is a {type(table).__name__}; compress it with "
                        "compress_items(model, 'pq') first")
    codebooks = nn.Parameter(table.codebooks.detach().float())  # learns in fp32
    del table.codebooks  # a buffer becomes a parameter under the same state-dict name
    table.codebooks = codebooks
    if only_codebooks:
        for p in model.parameters():
            p.requires_grad_(p is codebooks)
    if targets is None:
        result = train(model, split, config, progress=progress)
    else:
        result = _distillation_run(model, split, config, targets, temperature, alpha, progress)
    if only_codebooks:
        for p in model.parameters():
            p.requires_grad_(True)
    learned = table.codebooks.detach().half()
    del table.codebooks  # back to a stored fp16 buffer, as compress_items made it
    table.register_buffer("codebooks", learned)
    table._dense = None
    return result


def compress_items(model: nn.Module, dtype: str = "int8", **options) -> nn.Module:
    """A copy of ``model`` whose ``item_emb`` is stored in ``"int8"``, ``"fp16"`` or ``"pq"``
    (``options`` go to :class:`PQEmbedding`, e.g. ``subspaces=8``)."""
    tables = {"int8": Int8Embedding, "fp16": HalfEmbedding, "pq": PQEmbedding}
    if dtype not in tables:
        raise ValueError(f"dtype must be one of {sorted(tables)}, got {dtype!r}")
    check_finite(model)
    if model.item_emb.weight.shape[0] < 2:
        raise ValueError("the item table has no items (only the PAD row): nothing to compress")
    out = copy.deepcopy(model).eval()
    out.item_emb = tables[dtype](model.item_emb.weight, **options)
    return out


# ---------------------------------------------------------------- distillation
@dataclass
class TeacherTargets:
    """The teacher's answer at every training target, computed once (one forward pass).

    The training windows (:func:`helpers.batches.causal_windows`) never change between epochs,
    and a causal, left-padded model's output at a position does not depend on how a batch is
    trimmed, so what the teacher says there is fixed: it is kept as its ``k`` highest logits.
    Row ``n`` describes the ``n``-th labelled position of the windows (row-major order).
    """

    positions: Tensor  # (W, T) int64: each labelled position's row below, IGNORE elsewhere
    targets: Tensor  # (N,) the item that really came next
    items: Tensor  # (N, k) int32: the teacher's k best items (PAD never among them)
    logits: Tensor  # (N, k) their logits, best first
    max_len: int
    top_share: dict[float, Tensor]  # temperature -> (N,) share of the softened distribution in the top k


@torch.no_grad()
def teacher_targets(teacher: nn.Module, sequences: list[np.ndarray], max_len: int, k: int = 128,
                    temperatures: tuple[float, ...] = (1.0, 2.0, 4.0), batch_size: int = 256) -> TeacherTargets:
    """Run ``teacher`` once over the training windows of ``sequences`` (as the loop builds them
    for ``max_len``) and keep its ``k`` best items and logits at every labelled position;
    also records, per temperature, the share of the softened distribution those k hold."""
    inputs, labels = causal_windows(sequences, max_len)  # (W, T) each
    keep = labels != IGNORE
    positions = torch.full_like(labels, IGNORE)
    positions[keep] = torch.arange(int(keep.sum()))
    teacher = teacher.eval()
    device = next(teacher.parameters()).device
    items, logits, share = [], [], {tau: [] for tau in temperatures}
    for start in range(0, len(inputs), batch_size):
        x, m = inputs[start:start + batch_size], keep[start:start + batch_size]
        z = teacher.logits(teacher.hidden(x.to(device))[m.to(device)]).float()  # (n, V), PAD column -inf
        top = z.topk(min(k, z.shape[1] - 1), dim=1)
        items.append(top.indices.to(torch.int32).cpu())
        logits.append(top.values.cpu())
        for tau in temperatures:
            share[tau].append(torch.exp(torch.logsumexp(top.values / tau, 1) - torch.logsumexp(z / tau, 1)).cpu())
    return TeacherTargets(positions, labels[keep], torch.cat(items), torch.cat(logits), max_len,
                          {tau: torch.cat(v) for tau, v in share.items()})


class _TargetBatches(CausalBatches):
    """The loop's next-item batches, labelled by each target's row in a :class:`TeacherTargets`
    (the same windows, the same shuffling: only the label tensor differs)."""

    def __init__(self, sequences, targets: TeacherTargets, batch_size: int):
        super().__init__(sequences, targets.max_len, batch_size)
        if not torch.equal(self.labels != IGNORE, targets.positions != IGNORE):
            raise ValueError("these teacher targets were computed on other training sequences")
        self.labels = targets.positions


class _ChunkedDistillation(torch.autograd.Function):
    """Mean over N positions of (1 - alpha) * CE(z, y) + alpha * T^2 * KL(q || softmax(z / T)),
    z = h @ weight.T with column PAD at -inf, q (N, k) a distribution over ``items`` (N, k).

    As :class:`helpers.losses.ChunkedCrossEntropy`: ``chunk`` rows at a time, the gradients
    formed in the forward pass (d/dz: (1 - alpha) (softmax(z) - onehot(y)) + alpha T
    (softmax(z / T) - q)), so no (N, V) array is kept for autograd.
    """

    @staticmethod
    def forward(ctx, h: Tensor, weight: Tensor, y: Tensor, items: Tensor, q: Tensor, temperature: float,
                alpha: float, chunk: int = 256) -> Tensor:
        N = len(y)
        grad_h, grad_w = torch.empty_like(h), torch.zeros_like(weight)
        log_q = q.clamp_min(1e-30).log()  # (N, k); q = 0 contributes 0
        total = h.new_zeros(())
        logits = torch.empty(min(chunk, N), weight.shape[0], dtype=h.dtype, device=h.device)
        for start in range(0, N, chunk):
            rows = slice(start, start + chunk)
            hc, yc, ic = h[rows], y[rows], items[rows]  # (c, H), (c,), (c, k)
            at = torch.arange(len(yc), device=h.device)
            z = torch.mm(hc, weight.T, out=logits[: len(yc)])  # (c, V)
            z[:, PAD] = float("-inf")
            z -= z.max(dim=1, keepdim=True).values  # stable: every row's largest logit is 0
            target, picked = z[at, yc], z.gather(1, ic) / temperature  # (c,), (c, k)
            soft = None if temperature == 1 else (z / temperature).exp_()  # (c, V) exp(z / T)
            p = z.exp_()  # (c, V), in place
            norm = p.sum(dim=1)  # (c,)
            p /= norm[:, None]  # softmax(z)
            if soft is None:
                soft, norm_t = p, norm
            else:
                norm_t = soft.sum(dim=1)
                soft /= norm_t[:, None]  # softmax(z / T)
            log_p = picked - norm_t.log()[:, None]  # (c, k) student log-probabilities at temperature T
            total += (1 - alpha) * (norm.log() - target).sum()
            total += alpha * temperature ** 2 * (q[rows] * (log_q[rows] - log_p)).sum()
            if soft is p:
                p.mul_(1 - alpha + alpha * temperature)
            else:
                p.mul_(1 - alpha).add_(soft, alpha=alpha * temperature)
            p[at, yc] -= 1 - alpha
            p.scatter_add_(1, ic, q[rows] * -(alpha * temperature))  # d loss / d z, times N
            grad_h[rows] = p @ weight
            grad_w.addmm_(p.T, hc)
        ctx.save_for_backward(grad_h / N, grad_w / N)
        return total / N

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad_h, grad_w = ctx.saved_tensors
        return grad_h * grad, grad_w * grad, None, None, None, None, None, None


def distillation_loss(h: Tensor, weight: Tensor, y: Tensor, items: Tensor, teacher_logits: Tensor,
                      temperature: float = 2.0, alpha: float = 0.5) -> Tensor:
    """(1 - alpha) * CE(next item) + alpha * T^2 * KL(q_T || softmax(h @ weight.T / T)), averaged
    over N positions: ``h`` (N, H) student states, ``weight`` (V, H) its item table, ``y`` (N,)
    the next items, ``items`` / ``teacher_logits`` (N, k) the teacher's top k. q_T is the
    teacher's softmax at temperature T over its top k (the rest of the catalogue gets 0)."""
    if not 0 <= alpha <= 1 or temperature <= 0:
        raise ValueError(f"need 0 <= alpha <= 1 and temperature > 0, got alpha={alpha}, T={temperature}")
    q = torch.softmax(teacher_logits.float() / temperature, 1)  # (N, k)
    return _ChunkedDistillation.apply(h.float(), weight.float(), y, items, q, temperature, alpha)


class Distillation(nn.Module):
    """Student + the teacher's stored answers, for :func:`helpers.train.train`:
    ``forward(input_ids, positions)`` returns :func:`distillation_loss` over every labelled
    position; ``score`` and ``max_len`` are the student's. ``positions`` (B, T) hold each
    target's row in ``targets`` (IGNORE where there is none)."""

    def __init__(self, student: nn.Module, targets: TeacherTargets, temperature: float = 2.0, alpha: float = 0.5):
        super().__init__()
        self.student, self.targets = student, targets
        self.temperature, self.alpha = temperature, alpha

    @property
    def max_len(self) -> int:
        return self.student.max_len

    def score(self, input_ids: Tensor) -> Tensor:
        return self.student.score(input_ids)

    def forward(self, input_ids: Tensor, positions: Tensor) -> tuple[None, Tensor]:
        keep = positions != IGNORE
        h = self.student.hidden(input_ids)[keep]  # (N, H)
        rows = positions[keep].cpu()  # (N,)
        t = self.targets
        loss = distillation_loss(h, self.student.item_emb.weight, t.targets[rows].to(h.device),
                                 t.items[rows].to(h.device, torch.int64), t.logits[rows].to(h.device),
                                 self.temperature, self.alpha)
        return None, loss


def _distillation_run(model: nn.Module, split: Split, config: TrainConfig, targets: TeacherTargets,
                      temperature: float, alpha: float, progress: bool) -> TrainResult:
    if targets.max_len != config.max_len:
        raise ValueError(f"teacher targets were computed for max_len={targets.max_len}, "
                         f"the config trains with max_len={config.max_len}")
    wrapper = Distillation(model, targets, temperature, alpha)
    return train(wrapper, split, config, progress=progress,
                 make_batches=lambda sequences, c: _TargetBatches(sequences, targets, c.batch_size))


def distill(targets: TeacherTargets, student: nn.Module, split: Split, config: TrainConfig, *,
            temperature: float = 2.0, alpha: float = 0.5, progress: bool = False) -> TrainResult:
    """Train ``student`` on ``split.train`` to match a teacher's stored answers
    (:func:`teacher_targets`, see :class:`Distillation`); early stopping on validation as any
    model, the same windows and batches as training alone. The student ends with its best weights."""
    result = _distillation_run(student, split, config, targets, temperature, alpha, progress)
    student.eval()
    return result


# ---------------------------------------------------------------- ONNX
def export_onnx(model: nn.Module, path: str | os.PathLike, batch: int = 2) -> Path:
    """Write ``model``'s scoring function (``Scores``) to ``path`` as ONNX, batch size dynamic."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = Scores(model).eval()
    example = torch.randint(1, 2, (batch, model.max_len))  # (B, T); the values do not matter
    example[0, : model.max_len // 2] = PAD
    quiet = logging.getLogger("torch.onnx")  # it logs a warning per torchvision op it cannot register
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)  # the exporter's own internals
            torch.onnx.export(module, (example,), str(path), input_names=["input_ids"], output_names=["scores"],
                              dynamic_shapes={"input_ids": {0: torch.export.Dim("batch")}}, dynamo=True,
                              external_data=False, verbose=False)  # one file, weights inside
    finally:
        quiet.setLevel(level)
    return path


class OnnxScorer:
    """An exported model run by ONNX Runtime, with the scorer interface (``max_len``, ``score``)."""

    def __init__(self, path: str | os.PathLike, max_len: int, threads: int = 1):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.max_len = max_len

    def score(self, input_ids: Tensor) -> Tensor:
        """(B, T) -> (B, V) float32 scores."""
        ids = np.ascontiguousarray(input_ids.cpu().numpy().astype(np.int64))
        return torch.from_numpy(self.session.run(None, {"input_ids": ids})[0])
