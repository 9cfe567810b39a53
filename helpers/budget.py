"""What a run needs before it runs: GPU memory per batch, and minutes per notebook.

**Memory.** A training step of a Transformer over item ids holds its weights, their
gradients and AdamW's two moments (16 bytes a parameter), the activations autograd keeps
per layer, and the (N, V) logits of the full softmax with their log-softmax and gradient.
Per layer we count 34 N H + 5 nh N T bytes at 16 bits (Korthikanti et al., "Reducing
Activation Recomputation in Large Transformer Models", 2022, section 4.1: their s b h (34
+ 5 a s / h) with N = s b tokens), twice that at 32 bits; the T^2 term is the attention
matrix of the math path (CUDA's fused kernels need less, so this is an upper bound). A
full-ranking evaluation batch holds one layer's activations at a time plus three (B, V)
float tensors (the model's scores, the harness's copy and its work buffer).
:func:`largest_batch` halves a batch until it fits a budget and refuses, with what to
change, when one row does not fit; :func:`device_budget` is the budget of the card found.

**Time.** :func:`training_flops` counts the FLOPs of an epoch (3x a forward pass: 2 per
weight per token, the attention and the softmax over V), :func:`measure_flops` times a few
real training steps of SASRec at the profile's shape on the device (once per device, then
read from a file), and :func:`estimate_minutes` adds up :data:`PLANS`, the trainings each
notebook runs, from an empty model cache. It is an order of magnitude for a host to plan
with, not a promise: a recorded run (``helpers/reference_times.json``) replaces it.

Letters: B rows, T window, H hidden, L layers, nh heads, V = n_items + 1, N tokens of a batch.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import torch

GiB = 2**30
MEMORY_SHARE = 0.9  # of the free memory a run may plan to use (the allocator fragments the rest)
# Upper bounds of each course data set before 5-core: (users, interactions, items).
DATA_SIZES = {"ml-100k": (943, 100_000, 1_682), "ml-1m": (6_040, 1_000_209, 3_706),
              "beauty": (22_363, 198_502, 12_101), "ml-latest-small": (610, 100_836, 9_742)}
OVERHEAD = 1.5  # data preparation, test evaluation, plots and Python around the counted FLOPs


class MemoryBudgetError(RuntimeError):
    """A batch that cannot fit the memory of the device (raised instead of a raw CUDA OOM)."""


@dataclass(frozen=True)
class Shape:
    """What memory and FLOPs depend on: one sequence model on one catalogue."""

    n_items: int  # V - 1
    max_len: int  # T
    hidden: int  # H
    n_layers: int  # L
    n_heads: int  # nh

    @classmethod
    def of(cls, config, n_items: int | None = None) -> Shape:
        """From a model config with ``max_len``, ``hidden``, ``n_layers``, ``n_heads`` (SASRec,
        BERT4Rec) or a run profile; ``n_items`` from the config unless given."""
        return cls(n_items if n_items is not None else config.n_items, config.max_len, config.hidden,
                   getattr(config, "n_layers", 1), getattr(config, "n_heads", 1))

    @property
    def params(self) -> int:
        """Weights: item and position tables, L blocks of 12 H^2 + 13 H, a final LayerNorm."""
        H = self.hidden
        return (self.n_items + 1 + self.max_len) * H + self.n_layers * (12 * H * H + 13 * H) + 2 * H


# ---------------------------------------------------------------- memory
def train_bytes(shape: Shape, tokens: int, amp: bool = True) -> int:
    """Peak bytes of one training step over a batch of ``tokens`` labelled positions (N)."""
    a = 2 if amp else 4  # bytes of an activation
    H, T, V = shape.hidden, shape.max_len, shape.n_items + 1
    state = 16 * shape.params  # fp32 weights, gradients, AdamW m and v
    layers = shape.n_layers * (a / 2) * (34 * tokens * H + 5 * shape.n_heads * tokens * T)
    logits = tokens * V * (2 * a + 12)  # h @ E^T, its fp32 copy, log-softmax, fp32 and autocast gradients
    return int(state + layers + logits)


def eval_bytes(shape: Shape, users: int) -> int:
    """Peak bytes of scoring ``users`` histories against every item (fp32, no gradients)."""
    H, T, V = shape.hidden, shape.max_len, shape.n_items + 1
    layer = 4 * users * (8 * T * H + 2 * shape.n_heads * T * T)  # one block's inputs, MLP and attention
    return int(4 * shape.params + layer + 3 * 4 * users * V)


def device_budget(device: torch.device) -> int | None:
    """Bytes a run may plan to use on ``device``: :data:`MEMORY_SHARE` of the free CUDA memory
    (what this process already caches counts as free); None on a CPU (no check there)."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return int(MEMORY_SHARE * (free + cached))


def largest_batch(need, start: int, budget: int | None, what: str) -> int:
    """The largest of ``start``, ``start // 2``, ... , 1 whose ``need(batch)`` bytes fit ``budget``.

    ``budget`` None means no limit (``start``). If one row does not fit, a
    :class:`MemoryBudgetError` names ``what``, the bytes needed and the budget.
    """
    batch = start
    while budget is not None and need(batch) > budget:
        if batch == 1:
            raise MemoryBudgetError(
                f"{what} needs {need(1) / GiB:.1f} GiB for a single row but {budget / GiB:.1f} GiB is "
                "free on this GPU: choose a shorter window (max_len) or a smaller width (hidden), free the "
                "memory other notebooks hold (Runtime > Restart session), or run %env COURSE_PROFILE=cpu")
        batch //= 2
    return batch


def check_training(shape: Shape, tokens: int, budget: int | None, amp: bool = True) -> None:
    """Refuse, before the first step, a training batch of ``tokens`` positions that cannot fit.

    A smaller batch would fit, but it changes what is learned, so it is the learner's
    choice (the error says which size fits); evaluation batches are cut silently instead,
    since they change nothing but speed.
    """
    need = train_bytes(shape, tokens, amp)
    if budget is not None and need > budget:
        fits = largest_batch(lambda n: train_bytes(shape, n, amp), tokens, budget, "training")
        raise MemoryBudgetError(
            f"a training batch of {tokens:,} positions over {shape.n_items:,} items (window {shape.max_len}, "
            f"width {shape.hidden}) needs about {need / GiB:.1f} GiB, but {budget / GiB:.1f} GiB is free on "
            f"this GPU; about {fits:,} positions would fit: pass a smaller batch_size (a change that "
            "alters the results), a shorter max_len, or run on a GPU with more memory")


def out_of_memory(error: BaseException, what: str) -> MemoryBudgetError:
    """A clear error to raise from a CUDA out-of-memory error in ``what``."""
    return MemoryBudgetError(f"the GPU ran out of memory in {what} although the estimate fit: close other "
                             "notebooks (Runtime > Restart session frees Colab's GPU), lower the batch size, "
                             f"or run %env COURSE_PROFILE=cpu. ({str(error).splitlines()[0]})")


# ---------------------------------------------------------------- time
def forward_flops(shape: Shape, tokens: int, width: int, targets: int) -> float:
    """FLOPs of a forward pass: 2 per block weight per token, attention over ``width`` items,
    the softmax over every item for ``targets`` positions."""
    H, L = shape.hidden, shape.n_layers
    return 2.0 * tokens * L * 12 * H * H + 4.0 * tokens * L * width * H + 2.0 * targets * H * (shape.n_items + 1)


def training_flops(shape: Shape, users: int, interactions: int, epochs: int) -> float:
    """FLOPs of ``epochs`` epochs of a causal model (3x the forward pass), each validated on
    every user (one window of at most T items each)."""
    width = min(shape.max_len, max(1, interactions // max(users, 1)))
    train = 3 * forward_flops(shape, interactions, width, interactions)
    valid = forward_flops(shape, users * width, width, users)
    return epochs * (train + valid)


def finetune_flops(params: float, steps: int, batch: int, tokens: int) -> float:
    """FLOPs of fine-tuning a BERT of ``params`` non-embedding weights (6 per weight per token)."""
    return 6.0 * params * steps * batch * tokens


MINILM_PARAMS = 10.6e6  # all-MiniLM-L6-v2 without its 11.7M-weight embedding table


def measure_flops(profile, device: torch.device, rows: int | None = None, repeats: int = 3) -> float:
    """FLOP/s of SASRec training steps at the profile's window and width on ``device``, with
    the mixed precision training would use. Measured once per device and shape, then read
    from ``<download cache>/throughput.json``."""
    from helpers.datasets import cache_dir

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()}"
    key = f"{name}|torch {torch.__version__}|T{profile.max_len} H{profile.hidden} L{profile.n_layers}"
    path = cache_dir() / "throughput.json"
    known = json.loads(path.read_text()) if path.is_file() else {}
    if key in known:
        return float(known[key])
    rate = _time_steps(profile, device, rows or (64 if device.type == "cuda" else 4), repeats)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**known, key: rate}, indent=1))
    return rate


def _time_steps(profile, device: torch.device, rows: int, repeats: int) -> float:
    """FLOP/s of ``repeats`` timed training steps of SASRec (after one untimed warm-up step)."""
    from helpers.sasrec import SASRec, SASRecConfig
    from helpers.train import amp_dtype

    shape = Shape(2000, profile.max_len, profile.hidden, profile.n_layers, profile.n_heads)
    model = SASRec(SASRecConfig(shape.n_items, shape.max_len, shape.hidden, shape.n_layers, shape.n_heads)).to(device)
    optimizer = torch.optim.AdamW(model.parameters())
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1, shape.n_items + 1, (rows, shape.max_len), generator=generator).to(device)
    dtype = amp_dtype(None, device)
    seconds = 0.0
    for step in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            _, loss = model(ids[:, :-1], ids[:, 1:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds += (time.perf_counter() - start) if step else 0.0
    tokens = rows * (shape.max_len - 1)
    return repeats * 3 * forward_flops(shape, tokens, shape.max_len, tokens) / seconds


@dataclass(frozen=True)
class Training:
    """One kind of training a notebook runs: ``count`` models of SASRec's size on ``dataset``
    for the profile's ``epochs`` field (``"finetune_steps"``: a BERT fine-tuning instead),
    ``count`` times the profile's ``times`` field when given (a number, or a tuple's length)."""

    dataset: str  # a data set, "datasets" (each of the profile's) or a profile field naming one
    epochs: str = "epochs"
    count: float = 1.0
    times: str | None = None


# The trainings each notebook runs from an empty model cache (counted from the notebooks: GRU4Rec,
# BERT4Rec and item2vec are counted as SASRecs, a bigram as a fifth of one). "datasets" stands for
# each data set of the profile. A new notebook adds its line (tests/test_budget.py checks).
PLANS: dict[str, tuple[Training, ...]] = {
    "01_data_cleaning": (),
    "02_softmax_formulation": (Training("datasets", count=0.2),),
    "03_embeddings_and_encoders": (Training("ml-100k", count=6), Training("beauty", count=2)),
    "04_bert4rec": (Training("datasets", count=2), Training("ml-100k", count=2)),
    "05_pretrained_bert": (Training("ml-latest-small", count=3), Training("ml-latest-small", "cold_epochs", 3),
                           Training("ml-latest-small", "finetune_steps", 4)),
    "06_sequence_gan": (Training("ml-100k", count=3), Training("beauty", count=3)),
    "07_evaluation_and_comparison": (Training("ml-100k", count=7), Training("beauty", count=7),
                                     Training("seed_dataset", count=2, times="n_seeds")),
    "08_from_notebook_to_service": (Training("ml-100k"), Training("beauty", count=3)),
    "09_online_and_private": (Training("ml-100k", "online_epochs", 2, times="online_periods"),
                              Training("ml-100k", "online_finetune_epochs", 2, times="online_periods"),
                              Training("ml-100k", "mia_epochs", 2), Training("ml-100k", "dp_epochs", 1, "dp_epsilons")),
}


def notebook_flops(notebook: str, profile) -> float | None:
    """FLOPs of the trainings of ``notebook`` (:data:`PLANS`) under ``profile``; None without a plan."""
    if notebook not in PLANS:
        return None
    total = 0.0
    for t in PLANS[notebook]:
        names = profile.datasets if t.dataset == "datasets" else [getattr(profile, t.dataset, t.dataset)]
        times = 1 if t.times is None else getattr(profile, t.times)
        count = t.count * (len(times) if isinstance(times, tuple) else times)
        for name in names:
            users, interactions, items = DATA_SIZES[name]
            if profile.max_users is not None and profile.max_users < users:
                interactions, users = interactions * profile.max_users // users, profile.max_users
            if t.epochs == "finetune_steps":
                total += count * finetune_flops(MINILM_PARAMS, profile.finetune_steps,
                                                  profile.finetune_batch_size, profile.text_max_tokens)
                continue
            epochs = getattr(profile, t.epochs)
            epochs = profile.epochs if epochs is None else epochs
            total += count * training_flops(Shape.of(profile, items), users, interactions, epochs)
    return total


def estimate_minutes(notebook: str, profile, flops_per_second: float) -> float | None:
    """Minutes ``notebook`` should take under ``profile`` at ``flops_per_second`` (see the module
    docstring); None for a notebook without a plan."""
    flops = notebook_flops(notebook, profile)
    return None if flops is None else OVERHEAD * flops / flops_per_second / 60
