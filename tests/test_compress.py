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


def _rounding_bound(weight: torch.Tensor, dtype: str) -> torch.Tensor:
    """The largest error storing ``weight`` may make: fp16 rounds to 11 significant bits
    (relative error <= 2^-11); int8 to the nearest step s = max |row| / 127 (<= s / 2), and the
    step itself is stored in fp16 (<= 127 s 2^-11 more at the largest code)."""
    if dtype == "fp16":
        return weight.abs() * 2.0 ** -11 + 1e-7
    step = weight.abs().amax(dim=1, keepdim=True) / 127
    return step * (0.5 + 127 * 2.0 ** -11) + 1e-7


@pytest.mark.parametrize("dtype, atol, ratio", [("fp16", 1e-2, 0.55), ("int8", 5e-2, 0.3)])
def test_compressed_item_tables(model, window, dtype, atol, ratio):
    small = compress.compress_items(model, dtype)
    assert _close(small.score(window), model.score(window), atol)
    weight = model.item_emb.weight.detach()
    assert ((small.item_emb.weight - weight).abs() <= _rounding_bound(weight, dtype)).all()
    assert torch.equal(small.item_emb(torch.arange(len(weight))), small.item_emb.weight)  # lookup = table
    assert isinstance(model.item_emb, torch.nn.Embedding)  # the original is untouched
    table = torch.nn.Embedding(2000, 32)  # big enough that the file format's overhead is small
    shrunk = compress.compress_items(_holder(table), dtype)
    assert compress.model_size_mb(shrunk) < ratio * compress.model_size_mb(table)


def _holder(table: torch.nn.Module) -> torch.nn.Module:
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


def _toy_split(n_users: int = 40):
    rng = np.random.default_rng(0)
    train = [rng.permutation(N_ITEMS)[:12] + 1 for _ in range(n_users)]  # no repeats
    valid = EvalSet(np.arange(n_users), [s[:-1] for s in train], np.array([s[-1] for s in train]))
    return Split(N_ITEMS, train, np.arange(n_users), valid, valid, "test")


def _kl_to_teacher(student, model, split, tau=1.0):
    """Mean KL(teacher_T || student_T) over every labelled training position, all items."""
    from helpers.batches import causal_windows

    x, y = causal_windows(split.train, 8)
    keep = y != -100
    with torch.no_grad():
        s = student.logits(student.hidden(x)[keep])[:, 1:]
        t = model.logits(model.hidden(x)[keep])[:, 1:]
    return float(torch.nn.functional.kl_div(torch.log_softmax(s / tau, 1), torch.log_softmax(t / tau, 1),
                                             log_target=True, reduction="batchmean"))


def test_teacher_targets_are_the_teachers_top_k_at_every_training_target(model):
    from helpers.batches import causal_windows

    split = _toy_split()
    targets = compress.teacher_targets(model, split.train, max_len=8, k=5, temperatures=(1.0, 2.0))
    x, y = causal_windows(split.train, 8)
    keep = y != -100
    assert torch.equal(targets.positions != -100, keep)
    assert torch.equal(targets.positions[keep], torch.arange(int(keep.sum())))  # row-major order
    assert torch.equal(targets.targets, y[keep])
    with torch.no_grad():
        z = model.logits(model.hidden(x)[keep])  # (N, V), PAD column -inf
    top = z.topk(5, dim=1)
    assert torch.equal(targets.items.long(), top.indices) and torch.allclose(targets.logits, top.values)
    assert (targets.items != 0).all()  # PAD is never a teacher's answer
    share = torch.exp(torch.logsumexp(top.values / 2, 1) - torch.logsumexp(z / 2, 1))
    assert torch.allclose(targets.top_share[2.0], share) and (targets.top_share[1.0] > share).all()  # T flattens
    student = SASRec(SASRecConfig(N_ITEMS, max_len=6, hidden=8, n_layers=1, n_heads=1))
    with pytest.raises(ValueError, match="max_len"):
        compress.distill(targets, student, split, TrainConfig(epochs=1, batch_size=16, max_len=6))
    with pytest.raises(ValueError, match="other training sequences"):
        compress._TargetBatches(split.train[:-1], targets, 16)


def test_distillation_moves_the_student_towards_the_teacher(model):
    """alpha = 1 trains on the teacher's answers alone: the student's KL to the teacher falls,
    the teacher stays as it was, and the student ends with its best validation epoch."""
    split = _toy_split()
    targets = compress.teacher_targets(model, split.train, max_len=8, k=N_ITEMS)  # every item: the exact KL
    torch.manual_seed(0)
    student = SASRec(SASRecConfig(N_ITEMS, max_len=8, hidden=8, n_layers=1, n_heads=1, dropout=0.0))
    teacher_before = {k: v.clone() for k, v in model.state_dict().items()}
    before = _kl_to_teacher(student, model, split)
    wrapper = compress.Distillation(student, targets, temperature=1.0, alpha=1.0)
    assert [n for n, _ in wrapper.named_parameters()] == [f"student.{n}" for n, _ in student.named_parameters()]
    result = compress.distill(targets, student, split, TrainConfig(epochs=8, batch_size=16, max_len=8, lr=1e-2,
                                                                    patience=8),
                              temperature=1.0, alpha=1.0)
    assert len(result.history) == 8 and np.isfinite(result.history["loss"]).all()
    assert result.history["loss"].iloc[-1] < result.history["loss"].iloc[0]
    assert _kl_to_teacher(student, model, split) < 0.7 * before
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in teacher_before.items())


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


def test_scoring_latency_runs_on_one_thread_and_restores_the_count(model, window):
    seen = []

    class Probe:
        def score(self, ids):
            seen.append((torch.get_num_threads(), len(ids)))
            time.sleep(0.001 * len(ids))  # 1 ms per user
            return model.score(ids)

    before = torch.get_num_threads()
    torch.set_num_threads(2)  # the suite may run on one thread (conftest): make "one" a change
    try:
        out = compress.scoring_latency(Probe(), window[:1], window, repeats=10)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert {n for n, _ in seen} == {1} and {b for _, b in seen} == {1, 6}
    assert out["p50 ms (batch 1)"] >= 1 and 1 <= out["ms per user (batch 6)"] < out["p50 ms (batch 1)"] + 5
    with pytest.raises(RuntimeError), compress.threads(3):
        raise RuntimeError("the count comes back after an error too")
    assert torch.get_num_threads() == before


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
    stored = weight.half().float()  # the centroids are the pieces, stored in fp16
    assert table.codebooks.dtype == torch.float16 and torch.allclose(table.weight, stored, atol=1e-6)
    assert torch.equal(table(torch.tensor([[0, 5]]))[0, 1], table.weight[5])
    with pytest.raises(ValueError, match="divide"):
        compress.PQEmbedding(weight, subspaces=4)
    assert set(table.state_dict()) == {"codebooks", "codes", "exact_ids", "exact_q", "exact_scale"}  # never the table
    other = compress.PQEmbedding(weight.flip(0), subspaces=2, centroids=4)
    assert not torch.allclose(other.weight, stored, atol=1e-5)  # decoded from its own codes first
    other.load_state_dict(table.state_dict())
    assert torch.allclose(other.weight, stored, atol=1e-6)  # decoded again after loading


def test_pq_keeps_the_heaviest_items_rows_in_int8():
    torch.manual_seed(0)
    weight = torch.randn(300, 8)
    weight[0] = 0
    counts = torch.arange(300.0)  # item 299 is the heaviest
    plain = compress.PQEmbedding(weight, subspaces=2, centroids=4, item_weights=counts)
    mixed = compress.PQEmbedding(weight, subspaces=2, centroids=4, item_weights=counts, exact=5)
    heavy = torch.arange(295, 300)
    assert sorted(mixed.exact_ids.tolist()) == heavy.tolist()
    assert torch.allclose(mixed.weight[heavy], compress.Int8Embedding(weight).weight[heavy], atol=1e-6)
    assert torch.equal(mixed.weight[:295], plain.weight[:295])  # every other row: the same PQ
    assert (mixed.weight[heavy] - weight[heavy]).abs().max() < (plain.weight[heavy] - weight[heavy]).abs().max()
    grown = compress.model_size_mb(_holder(mixed)) - compress.model_size_mb(_holder(plain))
    assert 5 * (8 + 2 + 4) <= grown * 1e6 < 5 * (8 + 2 + 4) + 2000  # n (H + 2 + 4) bytes, plus the format's
    with pytest.raises(ValueError, match="item_weights"):
        compress.PQEmbedding(weight, subspaces=2, exact=5)


def test_pq_compressed_model_scores_close_and_is_small(model, window):
    small = compress.compress_items(model, "pq", subspaces=4, centroids=16, item_weights=torch.arange(N_ITEMS + 1))
    assert torch.isneginf(small.score(window)[:, 0]).all()
    error = (small.item_emb.weight - model.item_emb.weight).norm() / model.item_emb.weight.norm()
    assert error < 0.5  # 16 centroids for 50 items in each 4-dim piece
    big = torch.nn.Embedding(4000, 32)
    assert compress.model_size_mb(_holder(compress.PQEmbedding(big.weight, subspaces=8))) < \
        0.15 * compress.model_size_mb(big)


def test_distillation_loss_and_gradients_by_hand():
    """(1 - alpha) CE + alpha T^2 KL(q_T || student_T), q_T the teacher's softmax over its top k
    (renormalised), PAD never a candidate: value and gradients as autograd computes them."""
    torch.manual_seed(3)
    h, weight = torch.randn(7, 16, requires_grad=True), torch.randn(N_ITEMS + 1, 16, requires_grad=True)
    y = torch.randint(1, N_ITEMS + 1, (7,))
    items = torch.stack([torch.randperm(N_ITEMS)[:5] + 1 for _ in range(7)])  # (N, k), never PAD
    teacher = torch.randn(7, 5)
    for tau, alpha in ((2.0, 0.3), (1.0, 1.0), (3.0, 0.0), (1.0, 0.6)):
        z = torch.cat([torch.full((7, 1), float("-inf")), (h @ weight.T)[:, 1:]], 1)  # PAD column -inf
        q = torch.softmax(teacher / tau, 1)
        kl = (q * (q.log() - torch.log_softmax(z / tau, 1).gather(1, items))).sum(1).mean() * tau ** 2
        by_hand = alpha * kl + (1 - alpha) * torch.nn.functional.cross_entropy(z, y)
        loss = compress.distillation_loss(h, weight, y, items, teacher, tau, alpha)
        assert torch.isclose(loss, by_hand, rtol=1e-5), (tau, alpha)
        for g, g_by_hand in zip(torch.autograd.grad(loss, (h, weight)),
                                torch.autograd.grad(by_hand, (h, weight))):
            assert torch.allclose(g, g_by_hand, atol=1e-5), (tau, alpha)
    with pytest.raises(ValueError, match="alpha"):
        compress.distillation_loss(h, weight, y, items, teacher, 1.0, 1.5)


def test_a_student_equal_to_its_teacher_has_no_distillation_loss(model):
    split = _toy_split()
    targets = compress.teacher_targets(model, split.train, max_len=8, k=N_ITEMS)
    batch = next(iter(compress._TargetBatches(split.train, targets, 16).epoch(torch.Generator().manual_seed(0))))
    twin = compress.Distillation(model, targets, temperature=2.0, alpha=1.0)
    assert twin(*batch)[1].abs() < 1e-4


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
    assert len(result.history) == 2 and small.item_emb.codebooks.dtype == torch.float16  # stored again
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
    distilled = compress.compress_items(model, "pq", subspaces=4, centroids=8)
    before = distilled.item_emb.weight.clone()
    targets = compress.teacher_targets(model, split.train, max_len=8, k=10)
    result = compress.finetune_codebooks(distilled, split, TrainConfig(epochs=1, batch_size=16, max_len=8, lr=1e-2),
                                         targets=targets, temperature=1.0, alpha=0.5)
    assert len(result.history) == 1 and torch.equal(distilled.item_emb.codes, codes)
    assert not torch.allclose(distilled.item_emb.weight, before)
