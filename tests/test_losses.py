"""Losses: full softmax (chunked, with and without bias and PAD mask), sampled softmax, BCE."""

import pytest
import torch
import torch.nn.functional as F

from helpers.ids import IGNORE, PAD
from helpers.losses import LOSSES, ChunkedCrossEntropy, check_loss, full_cross_entropy, next_item_loss


def test_ce_loss_by_hand():
    torch.manual_seed(0)
    h, items = torch.randn(2, 3, 4), torch.randn(6, 4)
    labels = torch.tensor([[IGNORE, 2, 5], [1, IGNORE, 3]])
    logits = h @ items.T
    logits[..., PAD] = float("-inf")
    want = F.cross_entropy(logits.reshape(-1, 6), labels.reshape(-1), ignore_index=IGNORE)
    assert torch.allclose(next_item_loss(h, labels, items, "ce"), want)


def test_chunked_cross_entropy_matches_autograd():
    torch.manual_seed(0)
    h, items = torch.randn(10, 4, requires_grad=True), torch.randn(7, 4, requires_grad=True)
    y = torch.tensor([1, 2, 3, 4, 5, 6, 6, 1, 2, 3])
    logits = h @ items.T
    logits[:, PAD] = float("-inf")
    want = F.cross_entropy(logits, y)
    want_grads = torch.autograd.grad(2 * want, (h, items))
    got = ChunkedCrossEntropy.apply(h, items, None, y, PAD, 3)  # 3 does not divide 10
    got_grads = torch.autograd.grad(2 * got, (h, items))
    assert torch.allclose(got, want)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(got_grads, want_grads))


def test_sampled_and_bce_losses_by_hand():
    torch.manual_seed(0)
    h, items = torch.randn(1, 3, 4), torch.randn(6, 4)
    labels = torch.tensor([[2, IGNORE, 5]])
    hk, y = h[0, [0, 2]], torch.tensor([2, 5])
    torch.manual_seed(1)
    neg = torch.randint(1, 6, (4,))
    logits = torch.cat([(hk * items[y]).sum(1, keepdim=True), hk @ items[neg].T], 1)
    logits[:, 1:][neg[None, :] == y[:, None]] = float("-inf")  # a target is not its own negative
    want = -logits.log_softmax(1)[:, 0].mean()
    torch.manual_seed(1)
    assert torch.allclose(next_item_loss(h, labels, items, "sampled", n_negatives=4), want)
    torch.manual_seed(1)
    neg = torch.randint(1, 6, (2,))
    want = -(F.logsigmoid((hk * items[y]).sum(1)).mean() + F.logsigmoid(-(hk * items[neg]).sum(1)).mean())
    torch.manual_seed(1)
    assert torch.allclose(next_item_loss(h, labels, items, "bce"), want)
    with pytest.raises(ValueError, match="loss"):
        next_item_loss(h, labels, items, "hinge")


def test_fused_loss_equals_cross_entropy_with_many_chunks():
    torch.manual_seed(0)
    h, w, b = torch.randn(10, 4, requires_grad=True), torch.randn(7, 4, requires_grad=True), torch.randn(7, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 4, 5, 6, 6, 1, 2])
    F.cross_entropy(h @ w.T + b, y).backward()
    want = [t.grad.clone() for t in (h, w, b)]
    for t in (h, w, b):
        t.grad = None
    loss = ChunkedCrossEntropy.apply(h, w, b, y, None, 3)  # chunks of 3 rows, one partial
    (2 * loss).backward()
    assert torch.allclose(loss, F.cross_entropy(h @ w.T + b, y), atol=1e-6)
    for t, g in zip((h, w, b), want):
        assert torch.allclose(t.grad, 2 * g, atol=1e-6)


def test_full_cross_entropy_with_bias_masks_pad_like_autograd():
    """The bigram's case: a biased decoder, PAD column never a candidate."""
    torch.manual_seed(0)
    h, w, b = torch.randn(5, 3), torch.randn(6, 3), torch.randn(6)
    y = torch.tensor([1, 5, 2, 2, 4])
    logits = h @ w.T + b
    logits[:, PAD] = float("-inf")
    assert torch.allclose(full_cross_entropy(h, w, y, bias=b), F.cross_entropy(logits, y), atol=1e-6)


def test_the_loss_table_names_every_loss():
    assert set(LOSSES) == {"ce", "sampled", "bce"}
    check_loss("ce")
    with pytest.raises(ValueError, match="loss must be one of"):
        check_loss("hinge")
