"""Training on several processes with ``torch.distributed``: what the loop needs, nothing more.

Under ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``), :func:`setup` joins the process group, with NCCL on GPUs (one per process,
``LOCAL_RANK``) and gloo on CPUs. :func:`helpers.train.train` calls it, wraps the model in
``DistributedDataParallel`` (gradients averaged across processes after every backward) and
gives each process every ``world``-th batch of an epoch: process r takes batches r, r + world,
... of the same shuffled order, so one step of ``world`` processes sees the batches one process
would see in ``world`` steps, and the weights stay identical everywhere. Without ``torchrun``
(or with one process) nothing changes.

    torchrun --standalone --nproc_per_node=4 benchmarks/run.py --models sasrec   # 4 GPUs
    torchrun --standalone --nproc_per_node=2 benchmarks/run.py --models sasrec   # 2 CPU processes
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def setup() -> tuple[int, int]:
    """``(rank, world size)``; joins the process group first when ``torchrun`` asks for several."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))  # "cuda" now means this GPU
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size()


def wrap(model: nn.Module, world: int) -> nn.Module:
    """The model to call in training: ``DistributedDataParallel`` when ``world > 1``."""
    if world <= 1:
        return model
    device = next(model.parameters()).device
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def sum_all(values: list[float], world: int) -> list[float]:
    """Element-wise sum of ``values`` over all processes (unchanged with one process)."""
    if world <= 1:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return t.cpu().tolist()


def any_true(flag: bool, world: int) -> bool:
    """True when ``flag`` is true in any process: every process then takes the same branch."""
    return bool(sum_all([float(flag)], world)[0]) if world > 1 else flag
