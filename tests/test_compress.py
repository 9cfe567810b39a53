"""Compressed and exported models score like the original; sizes shrink; distillation trains."""

import time

import numpy as np
import pytest
import torch

from helpers import compress
from helpers.evaluate import evaluate
from helpers.sasrec import SASRec, SASRecConfig
from helpers.split import EvalSet, Split
from helpers.train import TrainConfig

N_ITEMS = 50


@pytest.fixture(scope="module")
def model() -> SASRec:
    torch.manual_seed(0)
    return SASRec(SASRecConfig(N_ITEMS, max_len=8, hidden=16, n_layers=2, n_heads=2)).eval()


@pytest.fixture(scope="module")
def window() -> torch.Tensor:
    torch.manual_seed(1)
    ids = torch.randint(1, N_ITEMS + 1, (6, 8))
    ids[0, :5] = 0  # a short, left-padded history
    return ids


def _close(a: torch.Tensor, b: torch.Tensor, atol: float) -> bool:
    return torch.allclose(a[:, 1:], b[:, 1:], atol=atol) and torch.isneginf(a[:, 0]).all()


def test_scores_module_matches_score(model, window):
    assert torch.allclose(compress.Scores(model).score(window), model.score(window))


def test_int8_linear_layers_score_close_to_the_original(model, window):
    quantized = compress.quantize_linear(model)
    assert _close(quantized.score(window), model.score(window), atol=0.05)
    assert any("Quantized" in type(m).__name__ or "quantized" in type(m).__module__ for m in quantized.modules())
    assert isinstance(model.blocks[0].mlp.fc, torch.nn.Linear)  # the original is untouched


@pytest.mark.parametrize("dtype, atol, ratio", [("fp16", 1e-2, 0.55), ("int8", 5e-2, 0.3)])
def test_compressed_item_tables(model, window, dtype, atol, ratio):
    small = compress.compress_items(model, dtype)
    assert _close(small.score(window), model.score(window), atol)
    assert torch.allclose(small.item_emb.weight, model.item_emb.weight, atol=atol)
    assert isinstance(model.item_emb, torch.nn.Embedding)  # the original is untouched
    table = torch.nn.Embedding(2000, 32)  # big enough that the file format's overhead is small
    shrunk = compress.compress_items(_holder(table), dtype)
    assert compress.model_size_mb(shrunk) < ratio * compress.model_size_mb(table)


def _holder(table: torch.nn.Embedding) -> torch.nn.Module:
    holder = torch.nn.Module()
    holder.item_emb = table
    return holder


def test_int8_table_by_hand():
    weight = torch.tensor([[0.0, 0.0], [1.27, -0.635], [0.1, 0.2]])
    table = compress.Int8Embedding(weight)
    assert table.q[1].tolist() == [127, -64] and table.q[2].tolist() == [64, 127]
    assert torch.allclose(table(torch.tensor([1])), torch.tensor([[1.27, -0.64]]), atol=1e-3)


def test_onnx_export_scores_like_eager(model, window, tmp_path):
    path = compress.export_onnx(model, tmp_path / "model.onnx")
    scorer = compress.OnnxScorer(path, model.max_len)
    assert _close(scorer.score(window), model.score(window), atol=1e-4)
    assert _close(scorer.score(window[:1]), model.score(window[:1]), atol=1e-4)  # batch size is dynamic


def test_distillation_student_learns_from_the_teacher(model):
    rng = np.random.default_rng(0)
    train = [rng.permutation(N_ITEMS)[:12] + 1 for _ in range(40)]  # no repeats
    valid = EvalSet(np.arange(40), [s[:-1] for s in train], np.array([s[-1] for s in train]))
    split = Split(N_ITEMS, train, np.arange(40), valid, valid, "test")
    torch.manual_seed(0)
    student = SASRec(SASRecConfig(N_ITEMS, max_len=8, hidden=8, n_layers=1, n_heads=1))
    teacher_before = {k: v.clone() for k, v in model.state_dict().items()}
    wrapper = compress.Distillation(student, model, max_positions=64)
    batch = torch.tensor(np.stack([s[:8] for s in train[:4]]))
    labels = torch.tensor(np.stack([s[1:9] for s in train[:4]]))
    _, loss = wrapper(batch, labels)
    assert loss.ndim == 0 and loss > 0
    assert [n for n, _ in wrapper.named_parameters()] == [f"student.{n}" for n, _ in student.named_parameters()]
    result = compress.distill(model, student, split, TrainConfig(epochs=2, batch_size=16, max_len=8, patience=2))
    assert len(result.history) >= 1 and np.isfinite(result.history["loss"]).all()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in teacher_before.items())
    assert evaluate(student, valid, N_ITEMS).summary()["ndcg@10"] >= 0


def test_model_size_is_the_bytes_of_the_saved_weights():
    table = torch.nn.Linear(500, 1000, bias=False)  # 500,000 float32 weights: 2.0 MB
    assert compress.model_size_mb(table) == pytest.approx(2.0, abs=0.01)  # plus a small file header


def test_timing_helpers():
    calls = []
    ms = compress.time_calls(lambda: (calls.append(1), time.sleep(0.002)), repeats=20, warmup=2)
    assert ms.shape == (20,) and len(calls) == 22  # warm-up calls run but are not timed
    assert (ms >= 2.0).all() and (ms < 1000).all()  # milliseconds of each timed call
    summary = compress.latency_summary(np.arange(1, 101, dtype=float))
    assert summary["p50 ms"] == 50.5 and summary["p99 ms"] == pytest.approx(99.01)


def test_kmeans_finds_separated_clusters():
    torch.manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.cat([c + 0.1 * torch.randn(30, 2) for c in centres])  # (90, 2)
    found, assign = compress.kmeans(x, 3, seed=1)
    assert sorted(torch.bincount(assign).tolist()) == [30, 30, 30]
    assert torch.cdist(found, centres).min(dim=1).values.max() < 0.2


def test_pq_table_is_exact_when_pieces_repeat_and_small_otherwise():
    torch.manual_seed(0)
    pieces = torch.randn(4, 2, 3)  # 4 distinct values for each of 2 sub-spaces of 3 dims
    pick = torch.randint(0, 4, (300, 2))
    weight = torch.cat([pieces[pick[:, 0], 0], pieces[pick[:, 1], 1]], dim=1)  # (300, 6)
    weight[0] = 0  # PAD
    table = compress.PQEmbedding(weight, subspaces=2, centroids=4)
    assert table.codes.dtype == torch.uint8 and table.codes.shape == (300, 2)
    assert torch.allclose(table.weight, weight, atol=1e-5)
    assert torch.equal(table(torch.tensor([[0, 5]]))[0, 1], table.weight[5])
    with pytest.raises(ValueError, match="divide"):
        compress.PQEmbedding(weight, subspaces=4)
    assert set(table.state_dict()) == {"codebooks", "codes"}  # the decoded table is never saved
    other = compress.PQEmbedding(weight.flip(0), subspaces=2, centroids=4)
    assert not torch.allclose(other.weight, weight, atol=1e-5)  # decoded from its own codes first
    other.load_state_dict(table.state_dict())
    assert torch.allclose(other.weight, weight, atol=1e-5)  # decoded again after loading


def test_pq_compressed_model_scores_close_and_is_small(model, window):
    small = compress.compress_items(model, "pq", subspaces=4, centroids=16, item_weights=torch.arange(N_ITEMS + 1))
    assert torch.isneginf(small.score(window)[:, 0]).all()
    error = (small.item_emb.weight - model.item_emb.weight).norm() / model.item_emb.weight.norm()
    assert error < 0.5  # 16 centroids for 50 items in each 4-dim piece
    big = torch.nn.Embedding(4000, 32)
    assert compress.model_size_mb(_holder(compress.PQEmbedding(big.weight, subspaces=8))) < \
        0.15 * compress.model_size_mb(big)


def test_distillation_loss_by_hand(model):
    """alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE, over the labelled positions."""
    torch.manual_seed(3)
    student = SASRec(SASRecConfig(N_ITEMS, max_len=8, hidden=8, n_layers=1, n_heads=1, dropout=0.0)).eval()
    ids = torch.randint(1, N_ITEMS + 1, (3, 8))
    labels = torch.randint(1, N_ITEMS + 1, (3, 8))
    labels[0, :4] = -100  # IGNORE: unlabelled positions count in neither term
    tau = 2.0
    keep = labels != -100
    s = student.logits(student.hidden(ids)[keep])[:, 1:]  # (N, V - 1): PAD's column dropped
    with torch.no_grad():
        t = model.logits(model.hidden(ids)[keep])[:, 1:]
    p_t = torch.softmax(t / tau, 1)
    kl = (p_t * (torch.log(p_t) - torch.log_softmax(s / tau, 1))).sum(1).mean() * tau ** 2
    ce = torch.nn.functional.cross_entropy(s, labels[keep] - 1)  # column j is item j + 1
    for alpha, by_hand in ((1.0, kl), (0.0, ce), (0.3, 0.3 * kl + 0.7 * ce)):
        wrapper = compress.Distillation(student, model, temperature=tau, alpha=alpha, max_positions=10_000)
        _, loss = wrapper(ids, labels)
        assert torch.isclose(loss, by_hand, rtol=1e-4), alpha
    loss.backward()
    assert all(p.grad is None for p in model.parameters())  # the teacher is frozen: no gradient kept
    assert all(p.grad is not None for p in student.parameters() if p.requires_grad)
    twin = compress.Distillation(model, model, temperature=tau, alpha=1.0)  # a student equal to its teacher
    assert twin(ids, labels)[1].abs() < 1e-5


def test_finetuned_codebooks_learn_keep_the_codes_and_the_size(model):
    rng = np.random.default_rng(0)
    train_seqs = [rng.permutation(N_ITEMS)[:12] + 1 for _ in range(40)]
    valid = EvalSet(np.arange(40), [s[:-1] for s in train_seqs], np.array([s[-1] for s in train_seqs]))
    split = Split(N_ITEMS, train_seqs, np.arange(40), valid, valid, "test")
    small = compress.compress_items(model, "pq", subspaces=4, centroids=8)
    codes, before = small.item_emb.codes.clone(), small.item_emb.weight.clone()
    size = compress.model_size_mb(small)
    result = compress.finetune_codebooks(small, split, TrainConfig(epochs=2, batch_size=16, max_len=8, lr=1e-2,
                                                                    patience=5))
    assert len(result.history) == 2 and isinstance(small.item_emb.codebooks, torch.nn.Parameter)
    assert torch.equal(small.item_emb.codes, codes)  # the codes stay: only the centroids move
    assert not torch.allclose(small.item_emb.weight, before)  # gradients reached the codebooks
    assert torch.equal(small.item_emb.weight[0], torch.zeros(16))  # PAD stays zero
    assert compress.model_size_mb(small) == pytest.approx(size, rel=0.01)
    frozen = compress.compress_items(model, "pq", subspaces=4, centroids=8)
    others = {k: v.clone() for k, v in frozen.state_dict().items() if not k.startswith("item_emb.")}
    before = frozen.item_emb.weight.clone()
    compress.finetune_codebooks(frozen, split, TrainConfig(epochs=1, batch_size=16, max_len=8, lr=1e-2),
                                only_codebooks=True)
    assert all(torch.equal(v, frozen.state_dict()[k]) for k, v in others.items())  # the model stays as it was
    assert not torch.allclose(frozen.item_emb.weight, before)  # only the centroids moved
    with pytest.raises(TypeError, match="compress_items"):
        compress.finetune_codebooks(model, split, TrainConfig(epochs=1))
