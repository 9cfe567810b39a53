import dataclasses

import numpy as np
import pytest

from helpers.ids import PAD
from helpers.sequences import pad_left
from helpers.split import leave_one_out
from helpers.synthetic import SyntheticConfig, SyntheticModel, generate

SMALL = SyntheticConfig(n_users=300, n_items=40, n_genres=4, n_types=5, min_len=3, mean_len=8, max_len=15)


def reference_oracle(model: SyntheticModel, history: np.ndarray) -> np.ndarray:
    """The generative story written out naively, one type and one step at a time."""
    p, m = model.type_items, model.transition
    post, preds = model.type_prior.copy(), []
    for c in range(len(p)):
        def step(prefix):
            unseen = np.ones(model.n_items + 1)
            unseen[[PAD, *prefix]] = 0
            w = model.markov_weight if len(prefix) else 0.0
            q = (w * m[prefix[-1] if len(prefix) else PAD] + (1 - w) * p[c]) * unseen
            return q / q.sum()
        for s, item in enumerate(history):
            post[c] *= step(list(history[:s]))[item]
        preds.append(step(list(history)))
    post /= post.sum()
    return post @ np.array(preds)


def tiny_model(taste, genre, popularity, successors, markov_weight) -> SyntheticModel:
    successors = np.array(successors).reshape(len(genre), -1)
    probs = (successors != PAD) / np.maximum((successors != PAD).sum(1, keepdims=True), 1)
    return SyntheticModel(np.array(genre), np.array(popularity), np.array(taste),
                          np.full(len(taste), 1 / len(taste)), successors, probs,
                          markov_weight, np.array([-1]), max_len=5)


def test_same_seed_same_data_other_seed_other_data():
    a, ma = generate(SMALL)
    b, mb = generate(SMALL)
    c, _ = generate(dataclasses.replace(SMALL, seed=1))
    assert a.equals(b) and np.array_equal(ma.type_items, mb.type_items)
    assert np.array_equal(ma.successors, mb.successors)
    assert not a.equals(c)


def test_shapes_ranges_and_no_repeats():
    df, model = generate(SMALL)
    assert list(df.columns) == ["user_id", "item_id", "timestamp"]
    lengths = df.groupby("user_id").size()
    assert lengths.index.tolist() == list(range(1, SMALL.n_users + 1))
    assert lengths.between(SMALL.min_len, SMALL.max_len).all() and model.max_len == lengths.max()
    assert df["item_id"].between(1, SMALL.n_items).all()
    assert not df.duplicated(["user_id", "item_id"]).any()
    assert df["user_id"].is_monotonic_increasing
    assert (df.groupby("user_id")["timestamp"].diff().dropna() > 0).all()
    v = SMALL.n_items + 1
    assert model.type_items.shape == (SMALL.n_types, v) and model.transition.shape == (v, v)
    assert np.allclose(model.type_items.sum(1), 1) and (model.type_items[:, PAD] == 0).all()
    assert np.allclose(model.transition[1:].sum(1), 1) and not model.transition[PAD].any()
    assert not np.diag(model.transition).any()  # no item follows itself
    assert ((model.transition > 0).sum(1)[1:] == SMALL.n_successors).all()


def test_bad_config_is_refused():
    with pytest.raises(ValueError):
        generate(dataclasses.replace(SMALL, max_len=SMALL.n_items + 1))
    with pytest.raises(ValueError):
        generate(dataclasses.replace(SMALL, markov_weight=1.5))


def test_oracle_by_hand_markov_and_no_repeats():
    # one type, one genre, popularity .5/.3/.2; item 1 always moves to 2; w = .5.
    # after [1]: item 2 gets .5 * 1 + .5 * .3 = .65, item 3 gets .5 * .2 = .1, item 1 is seen.
    model = tiny_model([[1.0]], [-1, 0, 0, 0], [0, .5, .3, .2], [0, 2, 3, 1], 0.5)
    assert model.oracle_scores([np.array([1])])[0] == pytest.approx([0, 0, .65 / .75, .1 / .75])
    assert model.oracle_scores([np.array([], dtype=np.int64)])[0] == pytest.approx([0, .5, .3, .2])


def test_oracle_by_hand_posterior_over_types():
    # no Markov step; type 1 likes genre 0 (.8), type 2 genre 1 (.9); p_1 = (.48, .32, .2),
    # p_2 = (.06, .04, .9). Seeing item 1 gives posterior (.48, .06) / .54 = (8/9, 1/9).
    model = tiny_model([[.8, .2], [.1, .9]], [-1, 0, 0, 1], [0, .6, .4, 1.0], [0, 0, 0, 0], 0.0)
    out = model.oracle_scores([np.array([1])])[0]
    assert out[3] == pytest.approx(8 / 9 * .2 / .52 + 1 / 9 * .9 / .94)
    assert out[2] == pytest.approx(8 / 9 * .32 / .52 + 1 / 9 * .04 / .94)
    assert out[0] == out[1] == 0


def test_oracle_matches_the_naive_reference():
    df, model = generate(SMALL)
    histories = [g.to_numpy() for _, g in df.groupby("user_id")["item_id"]][:25]
    histories[0] = histories[0][:0]  # an empty history too
    out = model.oracle_scores(histories)
    expected = np.stack([reference_oracle(model, h) for h in histories])
    np.testing.assert_allclose(out, expected, atol=1e-12)


def test_oracle_scores_are_a_distribution_and_a_scorer():
    df, model = generate(SMALL)
    split = leave_one_out(df, model.n_items)
    out = model.oracle_scores(split.test.histories)
    assert out.shape == (len(split.test), SMALL.n_items + 1)
    assert (out >= 0).all() and np.allclose(out.sum(1), 1) and (out[:, PAD] == 0).all()
    for row, h in zip(out, split.test.histories):
        assert not row[h].any()  # seen items are never next: no repeats
    scores = model.score(pad_left(split.test.histories, model.max_len))
    np.testing.assert_allclose(scores.numpy(), out, rtol=1e-5, atol=1e-7)
    known = model.oracle_scores(split.test.histories, users=split.test.users)
    assert np.allclose(known.sum(1), 1) and not np.allclose(known, out)


def test_generator_and_oracle_agree():
    # 60,000 users of 3 items: the third item after the most common opening pair,
    # counted, against the oracle's distribution (total variation distance).
    cfg = SyntheticConfig(n_users=60_000, n_items=10, n_genres=3, n_types=4, min_len=3, max_len=3, seed=1)
    df, model = generate(cfg)
    seqs = df["item_id"].to_numpy().reshape(-1, 3)
    opening, counts = np.unique(seqs[:, :2], axis=0, return_counts=True)
    top = opening[counts.argmax()]
    third = seqs[(seqs[:, :2] == top).all(1), 2]
    empirical = np.bincount(third, minlength=cfg.n_items + 1) / len(third)
    assert len(third) > 3000
    assert 0.5 * np.abs(empirical - model.oracle_scores([top])[0]).sum() < 0.025
    first = np.bincount(seqs[:, 0], minlength=cfg.n_items + 1) / len(seqs)
    assert 0.5 * np.abs(first - model.oracle_scores([top[:0]])[0]).sum() < 0.01


def hit_rate(scores: np.ndarray, histories, targets, k: int = 10) -> float:
    scores = scores.astype(float).copy()
    scores[:, PAD] = -np.inf
    for row, h in zip(scores, histories):
        row[h] = -np.inf
    target = scores[np.arange(len(scores)), targets]
    return float(((scores > target[:, None]).sum(1) < k).mean())


def test_oracle_beats_popularity_on_held_out_targets():
    df, model = generate(dataclasses.replace(SMALL, n_users=1000, n_items=100, seed=3))
    split = leave_one_out(df, model.n_items)
    popularity = np.bincount(np.concatenate(split.train), minlength=model.n_items + 1)
    pop_scores = np.tile(popularity, (len(split.test), 1))
    oracle = hit_rate(model.oracle_scores(split.test.histories), split.test.histories, split.test.targets)
    pop = hit_rate(pop_scores, split.test.histories, split.test.targets)
    assert oracle > pop + 0.2
