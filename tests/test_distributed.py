"""torchrun with 2 CPU processes (gloo) trains exactly what one process trains on the same global batches.

Each of the 2 processes takes every other batch (DistributedDataParallel averages their
gradients); one process sees each pair of batches concatenated. With equal target counts per
batch and no dropout, losses and weights after a few steps must match.
"""

import os
import subprocess
import sys
from pathlib import Path

import torch

SCRIPT = '''
import sys

import numpy as np
import pandas as pd
import torch

from helpers.sasrec import SASRec, SASRecConfig
from helpers.split import leave_one_out
from helpers.train import TrainConfig, causal_windows, train


class Fixed:
    """The same batches every epoch: each window has 5 targets, so every batch weighs alike."""

    def __init__(self, sequences, config, merge):
        x, y = causal_windows(sequences, config.max_len)  # (16, 5) each, no IGNORE
        parts = list(zip(x.split(config.batch_size), y.split(config.batch_size)))
        if merge:  # one process: batches 2k and 2k + 1 side by side
            parts = [(torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]])) for a, b in zip(parts[::2], parts[1::2])]
        self.parts = parts

    def __len__(self):
        return len(self.parts)

    def epoch(self, generator):
        yield from self.parts


def run(mode: str, out: str) -> None:
    rng = np.random.default_rng(0)
    starts = rng.integers(0, 20, 16)
    items = (starts[:, None] + np.arange(8)[None, :]) % 20 + 1
    df = pd.DataFrame({"user_id": np.repeat(np.arange(16), 8), "item_id": items.ravel(),
                       "timestamp": np.tile(np.arange(8), 16)})
    s = leave_one_out(df, 20)
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(20, max_len=5, hidden=8, n_layers=1, n_heads=2, dropout=0.0))
    config = TrainConfig(epochs=3, batch_size=2, max_len=5, lr=1e-2, patience=10, eval_batch_size=64)
    result = train(model, s, config, progress=False,
                   make_batches=lambda seqs, c: Fixed(seqs, c, merge=mode == "single"))
    if mode == "single" or torch.distributed.get_rank() == 0:
        torch.save({"loss": result.history["loss"].tolist(), "state": model.state_dict()}, out)


if __name__ == "__main__":
    run(sys.argv[1], sys.argv[2])
'''


def test_two_gloo_processes_match_one_process(tmp_path):
    script = tmp_path / "ddp_run.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, str(script), "single", str(tmp_path / "single.pt")], check=True, env=env,
                   cwd=root, timeout=120)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), "ddp", str(tmp_path / "ddp.pt")], env=env, cwd=root, timeout=120,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    single = torch.load(tmp_path / "single.pt", weights_only=True)
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)
    assert len(single["loss"]) == 3
    assert torch.allclose(torch.tensor(ddp["loss"]), torch.tensor(single["loss"]), atol=1e-5)
    for name, weight in single["state"].items():  # Adam magnifies float noise where the true gradient is 0
        assert torch.allclose(ddp["state"][name], weight, atol=1e-4), name  # (the key bias): 2e-5 seen
