"""Click pairs, the cross-encoder wrapper and the top-K re-ranker."""

import numpy as np
import pytest
import torch
from transformers import BertConfig

from helpers import finetune, rerank, textdata
from helpers.evaluate import evaluate
from helpers.sequences import pad_left
from helpers.split import EvalSet
from helpers.text import DEFAULT_MODEL

N_ITEMS = 30
TEXTS = [""] + [f"movie number {i}" for i in range(1, N_ITEMS + 1)]


class RandomScorer:
    """A fixed random score per (history, item): a base model whose top-K we know."""

    max_len = 4

    def __init__(self, seed=0):
        self.table = torch.randn(1000, N_ITEMS + 2, generator=torch.Generator().manual_seed(seed))

    def score(self, input_ids):
        return self.table[input_ids.sum(1) % 1000]  # (B, V + 1): an extra MASK-like column


def by_item_id(input_ids, candidates):
    """A stand-in cross-encoder: prefers larger item ids."""
    return candidates.float()


def eval_set(n=40, seed=1):
    rng = np.random.default_rng(seed)
    hist = [rng.choice(np.arange(1, N_ITEMS + 1), size=rng.integers(1, 8), replace=False) for _ in range(n)]
    targets = [rng.choice(np.setdiff1d(np.arange(1, N_ITEMS + 1), h)) for h in hist]
    return EvalSet(np.arange(n), hist, np.array(targets, dtype=np.int64))


def test_click_pairs_never_sample_the_target_or_the_history():
    ev = eval_set()
    rows, cands, labels = rerank.click_pairs(ev, N_ITEMS, n_negatives=5, seed=0)
    assert len(rows) == len(ev) * 6 and labels.sum() == len(ev)
    for n, (h, t) in enumerate(zip(ev.histories, ev.targets)):
        mine, lab = cands[rows == n], labels[rows == n]
        assert mine[0] == t and lab.tolist() == [1, 0, 0, 0, 0, 0]
        neg = mine[1:]
        assert len(set(neg.tolist())) == 5 and not set(neg.tolist()) & (set(h.tolist()) | {t})
        assert neg.min() >= 1 and neg.max() <= N_ITEMS
    again = rerank.click_pairs(ev, N_ITEMS, n_negatives=5, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(again, (rows, cands, labels)))
    with pytest.raises(ValueError, match="fewer than"):
        rerank.click_pairs(ev, N_ITEMS, n_negatives=N_ITEMS)


def test_reranked_top_k_is_a_permutation_of_the_base_top_k():
    base, k = RandomScorer(), 10
    model = rerank.Reranker(base, by_item_id, N_ITEMS, k=k, max_len=8)
    ev = eval_set()
    ids = pad_left(ev.histories, 8)
    _, top, valid = model.candidates(ids)
    out = model.score(ids)
    assert out.shape == (len(ev), N_ITEMS + 1) and valid.all()
    for b, h in enumerate(ev.histories):
        row = out[b].clone()
        row[0] = float("-inf")
        row[torch.as_tensor(h)] = float("-inf")  # as the harness does
        order = row.argsort(descending=True)[: N_ITEMS - len(h)]
        assert set(order[:k].tolist()) == set(top[b].tolist())
        assert order[:k].tolist() == sorted(top[b].tolist(), reverse=True)  # the cross-encoder's order
        rest = order[k:]
        base_row = base.score(ids[b : b + 1, -base.max_len :])[0, : N_ITEMS + 1].double()
        assert torch.equal(out[b, rest], base_row[rest])  # the others keep their base scores
        assert (base_row[rest].diff() <= 0).all()  # ... and so their relative order


def test_reranker_never_drops_the_target_through_the_harness():
    base, k = RandomScorer(), 10
    model = rerank.Reranker(base, by_item_id, N_ITEMS, k=k, max_len=8)
    ev = eval_set(n=200)
    before = evaluate(base, ev, N_ITEMS, ks=(k, 1))
    after = evaluate(model, ev, N_ITEMS, ks=(k, 1))
    assert np.array_equal(before.metrics[f"hr@{k}"], after.metrics[f"hr@{k}"])
    assert not np.array_equal(before.metrics["hr@1"], after.metrics["hr@1"])  # the order did change


def test_reranker_candidates_skip_seen_items_and_pad():
    base = RandomScorer()
    model = rerank.Reranker(base, by_item_id, N_ITEMS, k=N_ITEMS - 3, max_len=6)
    ids = torch.tensor([[0, 0, 0, 4, 5, 6]])
    _, top, valid = model.candidates(ids)
    assert valid.all() and set(top[0].tolist()) == set(range(1, N_ITEMS + 1)) - {4, 5, 6}
    _, _, valid = rerank.Reranker(base, by_item_id, N_ITEMS, k=N_ITEMS).candidates(ids[:, -4:])
    assert valid.sum() == N_ITEMS - 3  # only 27 unseen items: 3 slots hold nothing
    with pytest.raises(ValueError, match="k must be"):
        rerank.Reranker(base, by_item_id, N_ITEMS, k=0)


@pytest.fixture(scope="module")
def tokenizer():
    return textdata.load_tokenizer(DEFAULT_MODEL)


def test_cross_encoder_matches_one_pair_at_a_time(tokenizer):
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    model = finetune.prepare_model(config, 1, "full").eval()
    ce = rerank.CrossEncoder(model, tokenizer, TEXTS, max_items=3, max_length=24, batch_size=4)
    ids = torch.tensor([[0, 0, 1, 2], [5, 6, 7, 8]])
    cands = torch.tensor([[3, 10, 20], [1, 2, 30]])
    got = ce(ids, cands)
    assert got.shape == (2, 3)
    for b in range(2):
        history = textdata.history_text(TEXTS, ids[b][ids[b] != 0].numpy(), 3)
        for j in range(3):
            one = tokenizer(history, TEXTS[int(cands[b, j])], truncation="only_first", max_length=24,
                            return_tensors="pt")
            with torch.no_grad():
                assert got[b, j] == pytest.approx(float(model(**one).logits[0, 0]), abs=1e-5)
    data = rerank.pair_dataset(tokenizer, TEXTS, eval_set(n=3), N_ITEMS, 2, max_items=3, max_length=24)
    assert len(data) == 9 and data["labels"] == [1, 0, 0] * 3
