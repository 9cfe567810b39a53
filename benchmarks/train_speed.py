"""Training speed (and, with --quality, accuracy) of the course's neural models on Beauty.

Speed: one epoch over every Beauty training target (the standard leave-one-out split; the
registry's models with the ``--profile``'s sizes, cpu: max_len 50, hidden 64, 2 layers, 2
heads) for each model x loss x option, through the real loop (``helpers.train.train``,
epochs=1). Reported: seconds per epoch (training only), sequences (windows) per second,
targets per second, and validation NDCG@10 after that epoch. Measured tables, and RecBole's
time for the same targets: benchmarks/README.md.

    python benchmarks/train_speed.py                    # the whole table
    python benchmarks/train_speed.py --rows sasrec/ce sasrec/sampled
    python benchmarks/train_speed.py --quality sasrec --loss ce --epochs 200

--quality trains with early stopping and follows the *test* NDCG@10 of the model the loop
would return at each epoch (the best on validation so far), to report when RecBole's .0466
is reached. Set COURSE_DATA_DIR to the folder holding amazon/Beauty.txt.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: idle threads sleep, not spin

import pandas as pd  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from helpers import evaluate, item2vec, registry, split  # noqa: E402
from helpers.ids import IGNORE, PAD  # noqa: E402
from helpers.profile import Profile, get_profile  # noqa: E402
from helpers.train import CausalBatches, TrainConfig, train  # noqa: E402

# model/loss[+option...], each option one step back from the default:
#   dense    = logits at every position (B, T, V), then cross-entropy with ignore_index
#   autograd = logits only at target positions (N, V), autograd's cross-entropy (no chunking)
#   nobucket = full-width windows (no length bucketing, no trimming of PAD columns)
#   bf16     = CPU autocast to bfloat16;  t1 = one thread
ROWS = ["sasrec/ce+dense+nobucket", "sasrec/ce+autograd+nobucket", "sasrec/ce+autograd", "sasrec/ce",
        "sasrec/ce+bf16", "sasrec/ce+t1", "sasrec/sampled", "sasrec/bce", "gru4rec/ce",
        "gru4rec/sampled", "gru4rec/bce", "item2vec/sgns"]


class TextbookLoss(nn.Module):
    """A causal model (SASRec, GRU4Rec) trained with a slower full-softmax loss, for the table.

    ``"dense"``: logits at every position (B, T, V), then cross-entropy with ``ignore_index``;
    ``"autograd"``: logits only where there is a target (N, V), autograd's cross-entropy.
    Scores are the wrapped model's.
    """

    def __init__(self, model: nn.Module, kind: str):
        super().__init__()
        self.model, self.kind = model, kind

    @property
    def max_len(self) -> int:
        return self.model.max_len

    def forward(self, input_ids: Tensor, labels: Tensor | None = None) -> tuple[None, Tensor]:
        hidden, items = self.model.hidden(input_ids), self.model.item_emb.weight  # (B, T, H), (V, H)
        if self.kind == "dense":
            logits = hidden @ items.T  # (B, T, V)
            logits[..., PAD] = float("-inf")
            return None, F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE)
        keep = labels != IGNORE
        logits = hidden[keep] @ items.T  # (N, V)
        logits[:, PAD] = float("-inf")
        return None, F.cross_entropy(logits.float(), labels[keep])

    def score(self, input_ids: Tensor) -> Tensor:
        return self.model.score(input_ids)


def build(name: str, loss: str, s: split.Split, profile: Profile, args):
    """``(model, make_batches)``: the registry's model with this loss, untrained."""
    if name == "item2vec":
        model = registry.build("item2vec", s, profile, seed=args.seed)
        return model, registry.MODELS["item2vec"].batches(model.config)
    return registry.build(name, s, profile, seed=args.seed, loss=loss, n_negatives=args.negatives), None


def speed_row(row: str, s: split.Split, profile: Profile, args) -> dict:
    name, rest = row.split("/")
    loss, *options = rest.split("+")
    model, make_batches = build(name, loss if name != "item2vec" else "ce", s, profile, args)
    batch_size = args.batch_size if name != "item2vec" else 4096
    if "nobucket" in options:
        make_batches = lambda seqs, c: CausalBatches(seqs, c.max_len, c.batch_size, bucket=0)  # noqa: E731
    for kind in {"dense", "autograd"} & set(options):
        model = TextbookLoss(model, kind)
    torch.set_num_threads(1 if "t1" in options else args.threads)
    config = TrainConfig(epochs=1, batch_size=batch_size, lr=args.lr, max_len=profile.max_len,
                         amp=True if "bf16" in options else None, seed=args.seed)
    try:
        result = train(model, s, config, make_batches=make_batches, progress=False)
    finally:
        torch.set_num_threads(args.threads)
    seconds = float(result.history["seconds"].iloc[0])
    n_seq = len(CausalBatches(s.train, profile.max_len, batch_size).inputs)
    n_targets = sum(len(x) - 1 for x in s.train)
    units = "pairs" if name == "item2vec" else "sequences"
    n_units = len(item2vec.skipgram_pairs(s.train, 5)[0]) if name == "item2vec" else n_seq
    return {"row": row, "batch": batch_size, "s/epoch": round(seconds, 1),
            f"{units}/s": round(n_units / seconds), "targets/s": round(n_targets / seconds),
            "valid ndcg@10 (1 epoch)": round(result.history["valid_ndcg@10"].iloc[0], 4)}


def quality(s: split.Split, profile: Profile, args) -> None:
    model, make_batches = build(args.quality, args.loss, s, profile, args)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, patience=args.patience,
                         max_len=profile.max_len, weight_decay=args.weight_decay, seed=args.seed,
                         warmup_steps=args.warmup)
    start, best = time.perf_counter(), {"valid": -1.0, "test": None}

    def follow_test(m, row):
        if row["valid_ndcg@10"] > best["valid"]:
            best["valid"] = row["valid_ndcg@10"]
            best["test"] = evaluate.evaluate(m, s.test, s.n_items, ks=(10,)).summary()
        row["test_ndcg@10 (best so far)"] = best["test"]["ndcg@10"]
        row["wall s"] = time.perf_counter() - start

    result = train(model, s, config, make_batches=make_batches, progress=args.progress, on_epoch=follow_test)
    print(result.history.round(4).to_string(index=False))
    final = evaluate.evaluate(model, s.test, s.n_items).summary()
    h = result.history
    reached = h[h["test_ndcg@10 (best so far)"] >= args.target]
    when = (f"epoch {int(reached['epoch'].iloc[0])}, {reached['wall s'].iloc[0]:.0f} s wall"
            if len(reached) else "never")
    print(f"\n{args.quality}/{args.loss}: best epoch {result.best_epoch}, test "
          + ", ".join(f"{k} {final[k]:.4f}" for k in ("hr@10", "ndcg@10", "hr@20", "ndcg@20"))
          + f"; test NDCG@10 >= {args.target} reached: {when}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", nargs="*", default=ROWS)
    p.add_argument("--quality", choices=["sasrec", "gru4rec", "item2vec"])
    p.add_argument("--loss", default="ce", choices=["ce", "sampled", "bce"])
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--target", type=float, default=0.0466)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--profile", default="cpu", help="model sizes from this profile (default cpu)")
    p.add_argument("--negatives", type=int, default=3000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--progress", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    profile = get_profile(args.profile)
    s = registry.load_split("beauty", profile, args.seed)
    print(f"Beauty leave-one-out: {len(s.train)} training sequences, "
          f"{sum(len(x) - 1 for x in s.train)} targets | torch {torch.__version__}, "
          f"{args.threads} threads | load average {os.getloadavg()[0]:.1f}")
    if args.quality:
        quality(s, profile, args)
        return
    rows = []
    for row in args.rows:
        rows.append(speed_row(row, s, profile, args))
        print(rows[-1], flush=True)
    print(pd.DataFrame(rows).to_string(index=False))
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
