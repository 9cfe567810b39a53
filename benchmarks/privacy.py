"""Notebook 09's privacy tables: memorisation as epochs grow, DP-SGD's epsilon vs NDCG@10 and
attack AUC, and what deleting users does to a trained model.

    COURSE_PROFILE=cpu python benchmarks/privacy.py                     # ml-100k, the profile's sizes
    python benchmarks/privacy.py --profile ci --epsilons 8 --json results/privacy.json

Data: the course's leave-one-out split (``registry.load_split``); half of the users (seeded)
are members, the model trains on their training sequences only, and the other half are the
non-members. Attack: loss threshold (``privacy.attack_auc``), members' training sequences vs
non-members' sequences cut the same way. NDCG@10: members' test targets, full ranking.
DP-SGD: ``privacy.dp_train`` at the level of users, delta = 1/members, next to the same loop
without clipping and noise ("none"). Deletion: a tenth of the members ask to be forgotten;
the model is retrained without them, or fine-tuned one epoch on the others.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import pandas as pd

from helpers import privacy, registry, split, train
from helpers.course import default_device
from helpers.evaluate import evaluate
from helpers.profile import get_profile


def membership_curve(member: split.Split, others: list, profile, epochs: int) -> tuple[pd.DataFrame, object]:
    """Train SASRec on the members for ``epochs`` epochs (no early stop); attack AUC and test
    NDCG@10 after every epoch. Returns the curve and the model (best validation epoch)."""
    model = registry.build("sasrec", member, profile)
    rows = []

    def after_epoch(m, row):
        auc = privacy.attack_auc(privacy.sequence_losses(m, member.train), privacy.sequence_losses(m, others))
        ndcg = evaluate(m, member.test, member.n_items, ks=(10,)).summary()["ndcg@10"]
        rows.append({"epoch": row["epoch"], "train_loss": row["loss"], "auc": auc, "test_ndcg@10": ndcg})
        print(f"epoch {row['epoch']:3d} loss {row['loss']:.3f} auc {auc:.3f} ndcg@10 {ndcg:.4f}", file=sys.stderr)

    config = train.TrainConfig.from_profile(profile, epochs=epochs, patience=epochs + 1, max_seconds=None)
    train.train(model, member, config, progress=False, on_epoch=after_epoch)
    return pd.DataFrame(rows), model


def dp_table(member: split.Split, others: list, profile, epsilons: list[float | None], lr: float,
             epochs: int, batch_size: int) -> pd.DataFrame:
    """One row per privacy budget (None = the same loop, no clipping, no noise)."""
    rows = []
    for eps in epsilons:
        model = registry.build("sasrec", member, profile).to(default_device())
        start = time.perf_counter()
        result = privacy.dp_train(model, member.train, privacy.DPConfig(
            epochs=epochs, batch_size=batch_size, lr=lr, target_epsilon=eps))
        seconds = time.perf_counter() - start
        metrics = evaluate(model, member.test, member.n_items, ks=(10,)).summary()
        auc = privacy.attack_auc(privacy.sequence_losses(model, member.train), privacy.sequence_losses(model, others))
        rows.append({"target epsilon": "none" if eps is None else eps, "epsilon": result.epsilon,
                     "delta": result.delta, "sigma": result.noise_multiplier, "steps": result.steps,
                     "ndcg@10": metrics["ndcg@10"], "hr@10": metrics["hr@10"], "attack auc": auc,
                     "seconds": seconds})
        print(rows[-1], file=sys.stderr)
    return pd.DataFrame(rows)


def deletion(member: split.Split, others: list, model, profile, fraction: float = 0.1) -> pd.DataFrame:
    """Attack AUC of the deleted users against non-members, before and after forgetting them."""
    gone, _ = privacy.member_split(len(member.train), fraction, seed=1)
    gone_set = set(gone.tolist())
    deleted = [member.train[i] for i in gone]
    rest = split.Split(member.n_items, [s for i, s in enumerate(member.train) if i not in gone_set],
                       member.train_users[[i for i in range(len(member.train)) if i not in gone_set]],
                       member.valid, member.test, member.protocol)

    def row(name, m, seconds):
        auc = privacy.attack_auc(privacy.sequence_losses(m, deleted), privacy.sequence_losses(m, others))
        return {"model": name, "deleted users' attack auc": auc, "seconds": seconds}

    rows = [row("trained with them", model, 0.0)]
    start = time.perf_counter()
    tuned = copy.deepcopy(model)
    train.train(tuned, rest, train.TrainConfig.from_profile(profile, epochs=1), progress=False)
    rows.append(row("fine-tuned 1 epoch without them", tuned, time.perf_counter() - start))
    start = time.perf_counter()
    fresh = registry.build("sasrec", rest, profile)
    train.train(fresh, rest, train.TrainConfig.from_profile(profile, epochs=profile.mia_epochs,
                                                            patience=profile.mia_epochs + 1, max_seconds=None),
                progress=False)
    rows.append(row("retrained without them", fresh, time.perf_counter() - start))
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default=None, help="ci, cpu or gpu (default: $COURSE_PROFILE)")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--epsilons", nargs="*", type=float, default=None, help="default: the profile's")
    parser.add_argument("--dp-lr", type=float, default=None, help="DP loop learning rate (default 5 x profile's)")
    parser.add_argument("--dp-epochs", type=int, default=None, help="default: profile.dp_epochs")
    parser.add_argument("--dp-batch", type=int, default=None, help="default: profile.dp_batch_size")
    parser.add_argument("--skip", nargs="*", default=[], choices=["curve", "dp", "deletion"])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    profile = get_profile(args.profile)
    s = registry.load_split(args.dataset, profile)
    member, others = privacy.split_members(s, 0.5, seed=0)
    out: dict = {"profile": profile.name, "dataset": args.dataset, "members": len(member.train),
                 "non_members": len(others)}
    print(f"profile {profile.name}, {args.dataset}: {len(member.train)} members, {len(others)} non-members\n")
    model = None
    if "curve" not in args.skip:
        curve, model = membership_curve(member, others, profile, profile.mia_epochs)
        print("## membership inference as epochs grow (SASRec)\n\n" + curve.to_markdown(index=False, floatfmt=".4f"))
        out["curve"] = curve.to_dict("records")
    if "dp" not in args.skip:
        epsilons = [None, *(args.epsilons if args.epsilons is not None else profile.dp_epsilons)]
        table = dp_table(member, others, profile, epsilons, args.dp_lr or 5 * profile.lr,
                         args.dp_epochs or profile.dp_epochs, args.dp_batch or profile.dp_batch_size)
        print("\n## DP-SGD (user level)\n\n" + table.to_markdown(index=False, floatfmt=".4g"))
        out["dp"] = table.to_dict("records")
    if "deletion" not in args.skip and model is not None:
        table = deletion(member, others, model, profile)
        print("\n## deleting a tenth of the members\n\n" + table.to_markdown(index=False, floatfmt=".4f"))
        out["deletion"] = table.to_dict("records")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
