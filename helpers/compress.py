"""Making a trained model small and fast: quantization, distillation, export, and timing.

* :func:`quantize_linear`: int8 **dynamic** quantization of every ``nn.Linear`` (weights
  stored in int8, activations quantized on the fly per batch), PyTorch's
  ``quantize_dynamic``. The item table is not a Linear layer: it stays float.
* :func:`compress_items`: the item table (input lookup and tied output) stored in ``fp16``,
  in ``int8`` with one scale per row (:class:`Int8Embedding`), or by product quantization
  in a few bytes per item (:class:`PQEmbedding`); for a SASRec-size model on a 12k-item
  catalogue the table is most of the bytes. :func:`finetune_codebooks` then trains the
  centroids (codes fixed) with the rest of the model, which recovers most of what PQ loses.
* :func:`distill`: a smaller student trained to match a teacher's softmax over all items
  (Hinton et al., 2015), through the course's training loop (:class:`Distillation`).
* :func:`export_onnx` and :class:`OnnxScorer`: the scoring function as an ONNX graph run by
  ONNX Runtime; the scorer follows the harness's interface, so it is evaluated as any model.
* :func:`time_calls` / :func:`latency_summary`: per-call wall time and its percentiles;
  :func:`model_size_mb`: the bytes of a saved state dict.

Letters: B batch, T window, H hidden, V = n_items + 1, N positions with a label.
"""

from __future__ import annotations

import copy
import io
import logging
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from helpers.ids import IGNORE, PAD
from helpers.losses import next_item_loss
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
    ``subspaces`` bytes instead of ``4 H``; the codebooks add ``256 H`` floats. Row PAD is zero.
    ``item_weights`` (V,), e.g. training counts, make k-means fit frequent items more closely:
    they are the ones most often recommended and most often the target.
    """

    def __init__(self, weight: Tensor, subspaces: int = 8, centroids: int = 256, padding_idx: int | None = PAD,
                 seed: int = 0, item_weights: Tensor | None = None):
        super().__init__()
        V, H = weight.shape
        if H % subspaces or not 1 < centroids <= 256:
            raise ValueError(f"subspaces must divide hidden={H}, and 1 < centroids <= 256 (one byte)")
        pieces = weight.detach().float()[1:].reshape(V - 1, subspaces, H // subspaces)  # (V-1, m, d), PAD left out
        w = None if item_weights is None else torch.as_tensor(item_weights, dtype=torch.float32)[1:] + 1  # (V-1,)
        fits = [kmeans(pieces[:, j], min(centroids, V - 1), seed=seed + j, weights=w) for j in range(subspaces)]
        self.register_buffer("codebooks", torch.stack([c for c, _ in fits]))  # (m, k, d)
        codes = torch.stack([a for _, a in fits], dim=1).to(torch.uint8)  # (V-1, m)
        self.register_buffer("codes", torch.cat([codes.new_zeros(1, subspaces), codes]))  # (V, m)
        self.padding_idx = padding_idx
        self._dense: Tensor | None = None  # the decoded table, kept in memory only (never saved)

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._dense = None  # new codes: decode again

    def _decode(self) -> Tensor:
        m = self.codes.shape[1]
        rows = self.codebooks[torch.arange(m, device=self.codes.device), self.codes.long()]  # (V, m, d)
        rows = rows.reshape(len(self.codes), -1)  # (V, H)
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
                       progress: bool = False) -> TrainResult:
    """Train the PQ codebooks of ``model.item_emb`` (a :class:`PQEmbedding`) with the codes
    fixed, and every other weight unless ``only_codebooks``, through the course's loop (early
    stopping on validation, the best epoch kept): quantising after training moves each item to
    its nearest centroids, and a few epochs let the model and the centroids adapt to that, as
    RecJPQ trains them jointly. The file keeps its size: codes and codebooks keep their shapes."""
    table = model.item_emb
    if not isinstance(table, PQEmbedding):
        raise TypeError(f"model.item_emb is a {type(table).__name__}; compress it with "
                        "compress_items(model, 'pq') first")
    codebooks = nn.Parameter(table.codebooks.detach().clone())
    del table.codebooks  # a buffer becomes a parameter under the same state-dict name
    table.codebooks = codebooks
    if only_codebooks:
        for p in model.parameters():
            p.requires_grad_(p is codebooks)
    result = train(model, split, config, progress=progress)
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
class Distillation(nn.Module):
    """Student + frozen teacher for :func:`helpers.train.train`: ``forward(input_ids, labels)``
    returns the student's distillation loss; ``score`` and ``max_len`` are the student's.

    loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(labels).
    The cross-entropy covers every labelled position (chunked, as in training); the KL term
    at most ``max_positions`` of them per batch (a random subset), since each costs the
    teacher's and the student's (V,) softmax.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, temperature: float = 2.0, alpha: float = 0.5,
                 max_positions: int = 1024):
        super().__init__()
        self.student = student
        object.__setattr__(self, "teacher", teacher.eval())  # not a submodule: never trained nor saved
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.temperature, self.alpha, self.max_positions = temperature, alpha, max_positions

    @property
    def max_len(self) -> int:
        return self.student.max_len

    def score(self, input_ids: Tensor) -> Tensor:
        return self.student.score(input_ids)

    def forward(self, input_ids: Tensor, labels: Tensor) -> tuple[None, Tensor]:
        h = self.student.hidden(input_ids)  # (B, T, H)
        ce = next_item_loss(h, labels, self.student.item_emb.weight, "ce")
        keep = (labels != IGNORE).nonzero(as_tuple=True)  # N labelled positions
        if len(keep[0]) > self.max_positions:
            pick = torch.randperm(len(keep[0]), device=labels.device)[: self.max_positions]
            keep = (keep[0][pick], keep[1][pick])
        s = self.student.logits(h[keep])[:, PAD + 1:].float()  # (N, V - 1): column j is item j + 1
        self.teacher.to(input_ids.device)
        with torch.no_grad():
            t = self.teacher.logits(self.teacher.hidden(input_ids)[keep])[:, PAD + 1:].float()  # (N, V - 1)
        tau = self.temperature
        kd = F.kl_div(F.log_softmax(s / tau, 1), F.log_softmax(t / tau, 1), log_target=True,
                      reduction="batchmean") * tau ** 2
        return None, self.alpha * kd + (1 - self.alpha) * ce


def distill(teacher: nn.Module, student: nn.Module, split: Split, config: TrainConfig, *,
            temperature: float = 2.0, alpha: float = 0.5, max_positions: int = 1024,
            progress: bool = False) -> TrainResult:
    """Train ``student`` on ``split.train`` to match ``teacher`` (see :class:`Distillation`);
    early stopping on validation as any model. The student ends with its best weights."""
    wrapper = Distillation(student, teacher, temperature, alpha, max_positions)
    result = train(wrapper, split, config, progress=progress)
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
