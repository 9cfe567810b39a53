"""MLE-only against adversarially trained sequence generators on a real log (notebook 06's table).

    python benchmarks/gan.py                                  # ml-100k, the active profile
    python benchmarks/gan.py --profile cpu --steps 300 --json results/gan.json

A GRU4Rec generator is trained by maximum likelihood with the shared loop; a copy is trained
further against a text-CNN discriminator (``gan.adversarial_train``). Both sample as many
sequences as there are real training users (lengths drawn from the real ones), and each set
is judged with ``synth_eval.report`` against one half of the real users (fidelity, privacy,
diversity) and by train-on-synthetic-test-on-real SASRec NDCG@10 on the real test split. The
first row compares the two real halves with each other: what "indistinguishable" looks like.
Set COURSE_DATA_DIR to use a local copy of the data.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from helpers import gan, registry, synth_eval
from helpers.profile import Profile, get_profile


def run(dataset: str, p: Profile, steps: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(evaluation table, one row per generator, plus the adversarial training history)."""
    s = registry.load_split(dataset, p, seed)
    real = [t[-p.max_len:] for t in s.train if len(t)]
    start = time.perf_counter()
    mle = registry.fit("gru4rec", s, p, seed=seed, progress=False, n_layers=p.n_layers)  # as notebook 06
    mle_s = time.perf_counter() - start
    adv = copy.deepcopy(mle)
    disc = gan.Discriminator(gan.DiscriminatorConfig(s.n_items, p.max_len, p.hidden, dropout=p.dropout))
    config = gan.AdversarialConfig(steps=steps, batch_size=p.batch_size, d_pretrain_steps=max(2 * steps // 5, 1),
                                   seed=seed)
    start = time.perf_counter()
    history = gan.adversarial_train(adv, disc, s.train, s.n_items, config)
    adv_s = time.perf_counter() - start
    first = gan.first_item_probs(real, s.n_items)
    lengths = np.array([len(t) for t in real])
    half = np.random.default_rng(seed).permutation(len(real))
    a, b = [real[i] for i in half[::2]], [real[i] for i in half[1::2]]
    sets = {"real (other half of users)": (b, s.train)}
    for name, model in (("MLE", mle), ("MLE + adversarial", adv)):
        seqs = gan.to_arrays(gan.sample(model, lengths, first, generator=torch.Generator().manual_seed(seed)))
        sets[name] = (seqs[: len(b)], seqs)
    rows = {}
    for name, (compared, training) in sets.items():
        row = synth_eval.report(a, compared, s.n_items, seed=seed)
        tstr = synth_eval.train_on(training, s, lambda t: registry.fit("sasrec", t, p, seed=seed, progress=False),
                                   ks=(10,), batch_size=p.eval_batch_size)
        rows[name] = {**row, "TSTR hr@10": tstr["hr@10"], "TSTR ndcg@10": tstr["ndcg@10"]}
        print(f"{name:28s} AUC {row['two_sample_auc']:.3f} TSTR ndcg@10 {tstr['ndcg@10']:.4f}", file=sys.stderr)
    table = pd.DataFrame(rows).T
    table.attrs.update({"mle seconds": mle_s, "adversarial seconds": adv_s, "steps": steps})
    return table, history


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--profile", default=None, help="ci, cpu or gpu (default: $COURSE_PROFILE)")
    parser.add_argument("--steps", type=int, default=None, help="generator steps (default: the profile's gan_steps)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)
    p = get_profile(args.profile)
    table, history = run(args.dataset, p, args.steps or p.gan_steps or 5 * p.epochs, args.seed)
    print(f"{args.dataset}, profile {p.name}: {table.attrs['steps']} adversarial steps "
          f"({table.attrs['adversarial seconds']:.0f} s; MLE training {table.attrs['mle seconds']:.0f} s); "
          f"D(real) {history.d_real.iloc[-1]:.3f}, D(fake) {history.d_fake.iloc[-1]:.3f} at the end\n")
    print(table.T.to_markdown(floatfmt=".4f"))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"profile": p.name, "dataset": args.dataset, **table.attrs,
                                         "rows": table.to_dict("index")}, indent=2))


if __name__ == "__main__":
    main()
