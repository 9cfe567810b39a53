"""Training speed (and, with --quality, accuracy) of the course's neural models on Beauty.

Speed: one epoch over every Beauty training target (leave-one-out train part, max_len 50,
hidden 64, 2 layers, 2 heads) for each model x loss x option, through the real loop
(``helpers.train.train``, epochs=1). Reported: seconds per epoch (training only),
sequences (windows) per second, targets per second, and validation NDCG@10 after that epoch.
RecBole 1.2.1 needs 193 s for the same targets on the same 2 cores.

    python benchmarks/train_speed.py                    # the whole table
    python benchmarks/train_speed.py --rows sasrec/ce sasrec/sampled
    python benchmarks/train_speed.py --quality sasrec --loss ce --epochs 200

--quality trains with early stopping and follows the *test* NDCG@10 of the model the loop
would return at each epoch (the best on validation so far), to report when RecBole's .0466
is reached. Set COURSE_DATA_DIR=/work/shared/data (or wherever Beauty.txt lives).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: idle threads sleep, not spin

import pandas as pd  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from helpers import data, evaluate, gru4rec, item2vec, sasrec, split  # noqa: E402
from helpers.ids import IGNORE, PAD  # noqa: E402
from helpers.train import CausalBatches, TrainConfig, train  # noqa: E402

# model/loss[+option...], each option one step back from the default:
#   dense    = logits at every position (B, T, V), then cross-entropy with ignore_index
#   autograd = logits only at target positions (N, V), autograd's cross-entropy (no chunking)
#   nobucket = full-width windows (no length bucketing, no trimming of PAD columns)
#   bf16     = CPU autocast to bfloat16;  t1 = one thread
ROWS = ["sasrec/ce+dense+nobucket", "sasrec/ce+autograd+nobucket", "sasrec/ce+autograd", "sasrec/ce",
        "sasrec/ce+bf16", "sasrec/ce+t1", "sasrec/sampled", "sasrec/bce", "gru4rec/ce",
        "gru4rec/sampled", "gru4rec/bce", "item2vec/sgns"]


def dense_loss(hidden, labels, items, loss="ce", n_negatives=0):
    """The naive loss: logits at every position (B, T, V), then cross-entropy with ignore."""
    logits = hidden @ items.T  # (B, T, V)
    logits[..., PAD] = float("-inf")
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE)


def autograd_loss(hidden, labels, items, loss="ce", n_negatives=0):
    """Logits only where there is a target (N, V), autograd's cross-entropy."""
    keep = labels != IGNORE
    logits = hidden[keep] @ items.T  # (N, V)
    logits[:, PAD] = float("-inf")
    return F.cross_entropy(logits.float(), labels[keep])


LOSS_OPTIONS = {"dense": dense_loss, "autograd": autograd_loss}


def build(name: str, loss: str, n_items: int, args, train_seqs):
    torch.manual_seed(args.seed)
    if name == "sasrec":
        return sasrec.SASRec(sasrec.SASRecConfig(n_items, args.max_len, args.hidden, args.layers, args.heads,
                                                 args.dropout, loss, args.negatives)), None
    if name == "gru4rec":
        return gru4rec.GRU4Rec(gru4rec.GRU4RecConfig(n_items, args.max_len, args.hidden, 1, args.dropout,
                                                     loss, args.negatives)), None
    model = item2vec.Item2Vec(item2vec.Item2VecConfig(n_items, args.hidden, max_len=args.max_len),
                              item2vec.item_counts(train_seqs, n_items))
    return model, item2vec.skipgram_batches(window=5)


def speed_row(row: str, s: split.Split, args) -> dict:
    name, rest = row.split("/")
    loss, *options = rest.split("+")
    model, make_batches = build(name, loss if name != "item2vec" else "ce", s.n_items, args, s.train)
    batch_size = args.batch_size if name != "item2vec" else 4096
    if "nobucket" in options:
        make_batches = lambda seqs, c: CausalBatches(seqs, c.max_len, c.batch_size, bucket=0)  # noqa: E731
    module = {"sasrec": sasrec, "gru4rec": gru4rec}.get(name)
    original = getattr(module, "next_item_loss", None)
    for option in set(options) & set(LOSS_OPTIONS):
        module.next_item_loss = LOSS_OPTIONS[option]
    torch.set_num_threads(1 if "t1" in options else args.threads)
    config = TrainConfig(epochs=1, batch_size=batch_size, lr=args.lr, max_len=args.max_len,
                         amp=True if "bf16" in options else None, seed=args.seed)
    try:
        result = train(model, s, config, make_batches=make_batches, progress=False)
    finally:
        if original is not None:
            module.next_item_loss = original
        torch.set_num_threads(args.threads)
    seconds = float(result.history["seconds"].iloc[0])
    n_seq = len(CausalBatches(s.train, args.max_len, batch_size).inputs)
    n_targets = sum(len(x) - 1 for x in s.train)
    units = "pairs" if name == "item2vec" else "sequences"
    n_units = len(item2vec.skipgram_pairs(s.train, 5)[0]) if name == "item2vec" else n_seq
    return {"row": row, "batch": batch_size, "s/epoch": round(seconds, 1),
            f"{units}/s": round(n_units / seconds), "targets/s": round(n_targets / seconds),
            "valid ndcg@10 (1 epoch)": round(result.history["valid_ndcg@10"].iloc[0], 4)}


def quality(s: split.Split, args) -> None:
    model, make_batches = build(args.quality, args.loss, s.n_items, args, s.train)
    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, patience=args.patience,
                         max_len=args.max_len, weight_decay=args.weight_decay, seed=args.seed,
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
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--negatives", type=int, default=3000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--progress", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    s = split.leave_one_out(data.load_interactions("beauty"))
    print(f"Beauty leave-one-out: {len(s.train)} training sequences, "
          f"{sum(len(x) - 1 for x in s.train)} targets | torch {torch.__version__}, "
          f"{args.threads} threads | load average {os.getloadavg()[0]:.1f}")
    if args.quality:
        quality(s, args)
        return
    rows = []
    for row in args.rows:
        rows.append(speed_row(row, s, args))
        print(rows[-1], flush=True)
    print(pd.DataFrame(rows).to_string(index=False))
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
