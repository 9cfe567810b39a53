"""GAN pieces: valid samples, exact sequence log-probabilities, the written losses, training."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import gan
from helpers.gru4rec import GRU4Rec, GRU4RecConfig
from helpers.ids import PAD, mask_id

N_ITEMS = 20



def generator(seed=0):
    torch.manual_seed(seed)
    return GRU4Rec(GRU4RecConfig(N_ITEMS, max_len=8, hidden=8)).eval()


def real_sequences(n=40, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.permutation(N_ITEMS)[: rng.integers(2, 9)] + 1 for _ in range(n)]


def first():
    return gan.first_item_probs(real_sequences(), N_ITEMS)


def test_first_item_probs_by_hand():
    p = gan.first_item_probs([np.array([3, 1]), np.array([3]), np.array([2, 5])], 5)
    assert p.tolist() == [0, 0, 1 / 3, 2 / 3, 0, 0]


def test_smoothed_first_item_probs_and_pad_right():
    p = gan.first_item_probs([np.array([2])], 3, smoothing=1.0)
    assert p.tolist() == [0, 0.25, 0.5, 0.25]  # counts (0), 1, 2, 1
    assert gan.pad_right([np.array([4, 5]), np.array([6])]).tolist() == [[4, 5], [6, 0]]


def test_samples_have_valid_ids_lengths_and_no_repeats():
    lengths = [5, 1, 8, 3]
    s = gan.sample(generator(), lengths, first(), generator=torch.Generator().manual_seed(0))
    assert s.shape == (4, 8) and s.dtype == torch.long
    for row, n in zip(s, lengths):
        assert (row[:n] != PAD).all() and (row[n:] == PAD).all()  # PAD only after the end
        assert row.max() <= N_ITEMS and not (row == mask_id(N_ITEMS)).any()
        assert len(set(row[:n].tolist())) == n  # exclude_seen: no item twice
    assert [len(a) for a in gan.to_arrays(s)] == lengths


def test_first_items_follow_the_given_distribution():
    only_7 = np.zeros(N_ITEMS + 1)
    only_7[7] = 1.0
    s = gan.sample(generator(), [3] * 10, only_7)
    assert (s[:, 0] == 7).all()


def test_sampling_is_seeded_and_restores_training_mode():
    model = generator().train()
    a = gan.sample(model, [6] * 5, first(), generator=torch.Generator().manual_seed(1))
    b = gan.sample(model, [6] * 5, first(), generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and model.training


def test_bad_lengths_are_refused():
    with pytest.raises(ValueError):
        gan.sample(generator(), [0, 3], first())
    with pytest.raises(ValueError):
        gan.sample(generator(), [N_ITEMS + 1], first())


def test_right_to_left_by_hand():
    x = torch.tensor([[4, 5, 0, 0], [1, 2, 3, 6]])
    assert gan.right_to_left(x).tolist() == [[0, 0, 4, 5], [1, 2, 3, 6]]


def test_sequence_log_probs_equal_a_step_by_step_computation():
    model, p0 = generator(), first()
    s = gan.sample(model, [5, 2, 1, 7], p0, generator=torch.Generator().manual_seed(0), temperature=0.7)
    got = gan.sequence_log_probs(model, s, p0, temperature=0.7)
    for row, value in zip(gan.to_arrays(s), got):
        expected = math.log(p0[row[0]])
        for t in range(1, len(row)):
            logits = model(torch.tensor(row[None, :t]))[0][0, -1] / 0.7  # (V,)
            logits[PAD] = logits[torch.tensor(row[:t])] = float("-inf")
            expected += F.log_softmax(logits, -1)[row[t]].item()
        assert value.item() == pytest.approx(expected, abs=1e-4)


def test_sequence_log_probs_are_differentiable():
    model = generator()
    s = gan.sample(model, [4, 4], first())
    gan.sequence_log_probs(model, s, first()).sum().backward()
    assert model.item_emb.weight.grad.abs().sum() > 0


def discriminator(**kw):
    torch.manual_seed(0)
    return gan.Discriminator(gan.DiscriminatorConfig(N_ITEMS, **(dict(max_len=8, hidden=8, n_filters=4) | kw))).eval()


def test_discriminator_shapes_and_padding_does_not_matter():
    d = discriminator()
    x = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5]])
    logits, loss = d(x)
    assert logits.shape == (2,) and loss is None
    wider = torch.cat([torch.zeros(2, 3, dtype=torch.long), x], dim=1)  # more leading PAD
    assert torch.allclose(d(wider)[0], logits, atol=1e-6)


def test_discriminator_loss_equals_the_written_formula():
    real, fake = torch.tensor([2.0, -1.0, 0.3]), torch.tensor([0.5, -2.0])
    D = torch.sigmoid
    written = -torch.log(D(real)).mean() - torch.log(1 - D(fake)).mean()
    assert gan.discriminator_loss(real, fake).item() == pytest.approx(written.item(), rel=1e-6)
    assert gan.generator_loss(fake).item() == pytest.approx(-torch.log(D(fake)).mean().item(), rel=1e-6)
    labels = torch.tensor([1, 0])  # forward's BCE on one real and one fake
    d = discriminator()
    x = torch.tensor([[1, 2, 3], [4, 5, 6]])
    logits, loss = d(x, labels)
    by_hand = -(torch.log(D(logits[0])) + torch.log(1 - D(logits[1]))) / 2
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-5)


def test_policy_gradient_pushes_up_sequences_with_above_mean_reward():
    logits = torch.zeros(3, requires_grad=True)
    log_p = F.log_softmax(logits, 0)  # three one-step "sequences" 0, 1, 2
    gan.policy_gradient_loss(log_p, torch.tensor([1.0, 0.0, 0.0])).backward()
    assert logits.grad[0] < 0 and logits.grad[1] > 0  # a descent step raises p(0)


def test_adversarial_training_runs_and_logs_the_losses():
    model, d = generator(), discriminator()
    before = [p.clone() for p in model.parameters()]
    cfg = gan.AdversarialConfig(steps=3, batch_size=8, d_pretrain_steps=2, mle_weight=0.5)
    history = gan.adversarial_train(model, d, real_sequences(), N_ITEMS, cfg)
    assert list(history.columns) == ["step", "d_loss", "g_loss", "d_real", "d_fake", "log_prob"]
    assert len(history) == 3 and np.isfinite(history.to_numpy()).all()
    assert history.d_fake.between(0, 1).all() and (history.d_loss > 0).all()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_bad_adversarial_configs_are_refused():
    with pytest.raises(ValueError):
        gan.AdversarialConfig(d_steps=0)
    with pytest.raises(ValueError):
        gan.AdversarialConfig(temperature=0.0)


def test_a_discriminator_learns_to_separate_obvious_fakes():
    real = real_sequences(200)
    fake = [np.sort(s) for s in real_sequences(200, seed=1)]  # sorted ids: easy to spot
    d = discriminator(dropout=0.0)
    opt = torch.optim.Adam(d.parameters(), lr=1e-2)
    xr, xf = gan.real_batch(real, 8, np.arange(200)), gan.real_batch(fake, 8, np.arange(200))
    for _ in range(100):
        loss = gan.discriminator_loss(d(xr)[0], d(xf)[0])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * 2 * math.log(2)  # well below chance (2 log 2)


class NoStep(torch.nn.Module):
    """The same GRU4Rec seen through ``forward`` only, so :func:`gan.sample` re-reads prefixes."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, labels=None):
        return self.model(input_ids, labels)


def test_stepwise_sampling_draws_what_re_reading_the_prefix_draws():
    model = generator()
    kw = {"lengths": [8, 3, 6, 8], "first_probs": first()}
    a = gan.sample(model, generator=torch.Generator().manual_seed(3), **kw)
    b = gan.sample(NoStep(model), generator=torch.Generator().manual_seed(3), **kw)
    assert torch.equal(a, b)
