import math
from collections import Counter

import numpy as np
import pytest
import torch
from sklearn.metrics.pairwise import cosine_similarity

from helpers.baselines import ItemKNN, MarkovChain, MostPopular
from helpers.evaluate import evaluate
from helpers.ids import PAD
from helpers.sequences import pad_left
from helpers.split import EvalSet, leave_one_out
from helpers.synthetic import SyntheticConfig, generate

# Three sequences over items 1..4; item 4 never occurs.
# counts: 1 -> 3, 2 -> 3, 3 -> 2 (8 interactions); as next items only: 1 -> 1, 2 -> 2, 3 -> 2
# transitions: 1->2 twice, 2->3 twice, 3->1 once
TINY = [np.array([1, 2, 3]), np.array([1, 2]), np.array([2, 3, 1])]
N = 4


def arr(*rows):
    return [np.array(r) for r in rows]


def scorers():
    return [MostPopular(), MarkovChain(), ItemKNN(neighbours=2, max_len=3, decay=0.5)]


# ---- MostPopular -------------------------------------------------------------

def test_popularity_log_probs_by_hand():
    pop = MostPopular(smoothing=1.0).fit(TINY, N)
    expected = torch.tensor([0, 4, 4, 3, 1], dtype=torch.float64) / 12  # (count + 1) / (8 + 4)
    assert torch.allclose(pop.probabilities, expected)
    assert pop.log_probs()[PAD] == -math.inf
    assert torch.allclose(pop.log_probs()[1:], torch.log(expected[1:]))
    scores = pop.score(torch.tensor([[1, 2], [PAD, 3]]))
    assert torch.allclose(scores[:, 1:], torch.log(expected[1:]).float().expand(2, -1))
    # the softmax of the scores is the popularity distribution itself
    assert torch.allclose(torch.softmax(scores[0], 0), expected.float())


def test_popularity_counts_only_next_items_when_asked():
    pop = MostPopular(smoothing=1.0, include="targets").fit(TINY, N)
    assert torch.allclose(pop.probabilities, torch.tensor([0, 2, 3, 3, 1], dtype=torch.float64) / 9)


def test_popularity_matches_counter_and_sums_to_one():
    rng = np.random.default_rng(0)
    seqs = [rng.integers(1, 31, rng.integers(1, 9)) for _ in range(50)]
    pop = MostPopular(smoothing=0.5).fit(seqs, 30)
    counts = Counter(int(i) for s in seqs for i in s)
    expected = np.array([0] + [counts[i] + 0.5 for i in range(1, 31)])
    assert np.allclose(pop.probabilities.numpy(), expected / expected.sum())
    assert math.isclose(float(pop.probabilities.sum()), 1.0)


def test_popularity_without_smoothing_gives_unseen_items_minus_inf():
    log_p = MostPopular(smoothing=0.0).fit(TINY, N).log_probs()
    assert log_p[4] == -math.inf and math.isclose(float(log_p[1]), math.log(3 / 8))


def test_popularity_scores_are_fresh_tensors():
    pop = MostPopular().fit(TINY, N)
    first = pop.score(torch.tensor([[1], [2]]))
    first[:, 1] = 123.0  # the harness writes -inf into scores; that must not leak into the model
    assert pop.score(torch.tensor([[1]]))[0, 1] != 123.0


# ---- MarkovChain -------------------------------------------------------------

def test_markov_laplace_transition_probs_by_hand():
    mc = MarkovChain(alpha=1.0, prior=0.0).fit(TINY, N)
    probs = mc.transition_probs(torch.tensor([1, 4, PAD]))
    # from 1: counts (0, 2, 0, 0) + 1 each, over 2 + 4
    assert torch.allclose(probs[0], torch.tensor([0, 1, 3, 1, 1], dtype=probs.dtype) / 6)
    # item 4 was never a previous item (nor PAD): uniform
    assert torch.allclose(probs[1:], torch.tensor([0, 1, 1, 1, 1], dtype=probs.dtype).expand(2, -1) / 4)


def test_markov_popularity_prior_by_hand():
    mc = MarkovChain(alpha=0.0, prior=1.0).fit(TINY, N)
    pop = np.array([0, 2, 3, 3, 1]) / 9  # next-item popularity, smoothed by one
    probs = mc.transition_probs(np.array([1, 4]))
    # from 1: (C[1, j] + pop_j) / (C[1] + 1) = ((0, 2, 0, 0) + pop) / 3
    assert np.allclose(probs[0].numpy(), (np.array([0, 0, 2, 0, 0]) + pop) / 3, atol=1e-6)
    assert np.allclose(probs[1].numpy(), pop, atol=1e-6)  # unseen previous item: backs off fully
    assert torch.allclose(mc.score(torch.tensor([[4]]))[0, 1:], torch.log(probs[1, 1:]))


def test_markov_without_smoothing_is_the_count_ratio_and_backs_off_when_empty():
    mc = MarkovChain(alpha=0.0, prior=0.0).fit(TINY, N)
    probs = mc.transition_probs([2, 4])
    assert probs[0].tolist() == [0, 0, 0, 1, 0]  # 2 -> 3 every time
    assert np.allclose(probs[1].numpy(), np.array([0, 2, 3, 3, 1]) / 9, atol=1e-6)
    scores = mc.score(torch.tensor([[2]]))
    assert scores[0, 3] == 0.0 and torch.isneginf(scores[0, [0, 1, 2, 4]]).all()


def test_markov_rows_are_distributions_and_match_a_loop_count():
    rng = np.random.default_rng(1)
    seqs = [rng.integers(1, 21, rng.integers(1, 12)) for _ in range(40)]
    mc = MarkovChain(alpha=0.0, prior=0.0).fit(seqs, 20)
    pairs = Counter((int(a), int(b)) for s in seqs for a, b in zip(s[:-1], s[1:]))
    for (a, b), c in list(pairs.items())[:15]:
        total = sum(v for (x, _), v in pairs.items() if x == a)
        assert math.isclose(float(mc.transition_probs([a])[0, b]), c / total, rel_tol=1e-6)
    probs = MarkovChain(alpha=0.3, prior=2.0).fit(seqs, 20).transition_probs(np.arange(21))
    assert torch.allclose(probs.sum(1), torch.ones(21)) and (probs[:, PAD] == 0).all()


def test_markov_reads_only_the_last_item():
    mc = MarkovChain().fit(TINY, N)
    assert mc.max_len == 1
    a = mc.score(torch.tensor([[3, 2, 1], [PAD, PAD, 1], [4, 4, 1]]))
    assert torch.equal(a[0], a[1]) and torch.equal(a[0], a[2])
    assert not torch.equal(a[0], mc.score(torch.tensor([[1, 2, 3]]))[0])


# ---- ItemKNN -----------------------------------------------------------------

def test_itemknn_cosine_and_decay_by_hand():
    knn = ItemKNN(neighbours=None, window=None, max_len=5, decay=0.5).fit(arr([1, 2], [1, 2], [1, 3]), 3)
    # users holding each item: f = (3, 2, 1); both 1 and 2: 2 users; both 1 and 3: 1 user
    s12, s13 = 2 / math.sqrt(3 * 2), 1 / math.sqrt(3 * 1)
    sim = knn.similarity.toarray()
    assert np.allclose(sim, [[0, 0, 0, 0], [0, 0, s12, s13], [0, s12, 0, 0], [0, s13, 0, 0]], atol=1e-6)
    scores = knn.score(torch.tensor([[PAD, 2, 3]]))  # 3 is the most recent (weight 1), 2 weighs 0.5
    assert math.isclose(float(scores[0, 1]), 0.5 * s12 + s13, rel_tol=1e-6)
    assert scores[0, 2] == 0 and scores[0, 3] == 0


def test_itemknn_window_counts_pairs_within_w_steps():
    one = ItemKNN(neighbours=None, window=1).fit(arr([1, 2, 3]), 3).similarity.toarray()
    two = ItemKNN(neighbours=None, window=2).fit(arr([1, 2, 3]), 3).similarity.toarray()
    assert one[1, 3] == 0 and one[1, 2] == one[2, 3] == 1  # each item occurs once: cosine = count
    assert two[1, 3] == two[3, 1] == 1


def test_itemknn_matches_sklearn_cosine():
    rng = np.random.default_rng(2)
    seqs = [rng.choice(np.arange(1, 16), rng.integers(2, 7), replace=False) for _ in range(30)]
    users = np.zeros((30, 16))
    for u, s in enumerate(seqs):
        users[u, s] = 1
    expected = cosine_similarity(users.T)
    np.fill_diagonal(expected, 0)
    got = ItemKNN(neighbours=None).fit(seqs, 15).similarity.toarray()
    assert np.allclose(got, expected, atol=1e-6)


def test_itemknn_keeps_the_top_neighbours_per_item():
    seqs = arr([1, 2], [1, 2], [1, 2], [1, 3], [1, 3], [1, 4])
    sim = ItemKNN(neighbours=2).fit(seqs, 4).similarity.toarray()
    assert (sim[1] > 0).tolist() == [False, False, True, True, False]  # 2 and 3, not the weaker 4
    assert sim[4, 1] > 0  # 4's own neighbour list is untouched


def test_itemknn_recovers_an_obvious_co_occurrence():
    rng = np.random.default_rng(3)
    noise = [rng.choice(np.arange(5, 21), 3, replace=False) for _ in range(40)]
    seqs = [np.r_[1, n, 2] for n in noise[:20]] + [np.r_[3, n, 4] for n in noise[20:]]
    knn = ItemKNN().fit(seqs, 20)
    scores = knn.score(torch.tensor([[1], [3], [2]]))
    assert scores.argmax(1).tolist() == [2, 4, 1]


# ---- all scorers ---------------------------------------------------------------

@pytest.mark.parametrize("model", scorers(), ids=lambda m: type(m).__name__)
def test_scores_have_one_column_per_item_and_pad_at_minus_inf(model):
    model.fit(TINY, N)
    scores = model.score(torch.tensor([[PAD, 1, 2], [PAD, PAD, PAD], [3, 4, 1]]))
    assert scores.shape == (3, N + 1) and scores.dtype == torch.float32
    assert torch.isneginf(scores[:, PAD]).all()
    assert torch.isfinite(scores[:, 1:]).all()


@pytest.mark.parametrize("model", scorers(), ids=lambda m: type(m).__name__)
def test_padded_batch_scores_equal_row_by_row(model):
    rng = np.random.default_rng(4)
    seqs = [rng.integers(1, 13, rng.integers(2, 9)) for _ in range(30)]
    model.fit(seqs, 12)
    histories = [np.array([5]), np.array([3, 7, 7, 1, 2]), np.array([9, 4]), np.array([1, 2, 3, 4, 5, 6])]
    batch = model.score(pad_left(histories, 6))  # wider than max_len: only the last columns count
    for row, h in zip(batch, histories):
        assert torch.allclose(row, model.score(pad_left([h], len(h)))[0], atol=1e-6)


def test_markov_beats_popularity_on_a_deterministic_cycle():
    cycle = lambda start, n: (start + np.arange(n)) % 10 + 1  # 1 -> 2 -> ... -> 10 -> 1
    train = [cycle(s, 6) for s in range(10) for _ in range(3)]
    test = EvalSet(np.arange(10), [cycle(s, 4) for s in range(10)], np.array([cycle(s, 5)[-1] for s in range(10)]))
    markov = evaluate(MarkovChain().fit(train, 10), test, 10, ks=(1, 5)).summary()
    pop = evaluate(MostPopular().fit(train, 10), test, 10, ks=(1, 5)).summary()
    assert markov["hr@1"] == 1.0
    assert pop["hr@1"] == pytest.approx(1 / 6)  # 6 unseen items, all counted equally: a tie
    assert markov["ndcg@5"] > pop["ndcg@5"]


def test_markov_and_knn_beat_popularity_on_markov_synthetic_data():
    df, _ = generate(SyntheticConfig(n_users=400, n_items=60, markov_weight=0.8, seed=1))
    split = leave_one_out(df)
    ndcg = {name: evaluate(m.fit(split.train, split.n_items), split.test, split.n_items).summary()["ndcg@10"]
            for name, m in [("pop", MostPopular()), ("markov", MarkovChain()), ("knn", ItemKNN(window=1))]}
    assert ndcg["markov"] > ndcg["pop"] + 0.1 and ndcg["knn"] > ndcg["pop"]


# ---- bad input -----------------------------------------------------------------

@pytest.mark.parametrize("model", scorers(), ids=lambda m: type(m).__name__)
def test_bad_input(model):
    with pytest.raises(RuntimeError):
        model.score(torch.tensor([[1]]))
    with pytest.raises(ValueError):
        model.fit(arr([1, 5]), 4)  # item beyond n_items
    with pytest.raises(ValueError):
        model.fit(arr([0, 1]), 4)  # PAD inside a sequence
    model.fit(TINY, N)
    with pytest.raises(ValueError):
        model.score(torch.tensor([1, 2]))  # not (B, T)


@pytest.mark.parametrize("make", [
    lambda: MostPopular(smoothing=-1), lambda: MostPopular(include="valid"),
    lambda: MarkovChain(alpha=-1), lambda: MarkovChain(prior=-0.5),
    lambda: ItemKNN(neighbours=0), lambda: ItemKNN(window=0), lambda: ItemKNN(decay=0), lambda: ItemKNN(max_len=0),
])
def test_bad_hyper_parameters(make):
    with pytest.raises(ValueError):
        make()


def test_out_of_range_ids_at_scoring_time():
    with pytest.raises(ValueError):
        MarkovChain().fit(TINY, N).transition_probs([5])
    with pytest.raises(ValueError):
        ItemKNN().fit(TINY, N).score(torch.tensor([[1, 9]]))
