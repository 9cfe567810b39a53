"""BERT4Rec: a bidirectional masked model over item ids (Sun et al., 2019), with Hugging Face BERT.

The network is the stock ``transformers.BertForMaskedLM``; this module only adds what item
ids need: a config factory (:func:`bert_config`), cloze training batches
(:class:`ClozeBatches`) and next-item inference (:meth:`BERT4Rec.score`).

Ids follow :mod:`helpers.ids`: ``PAD = 0``, items ``1..n_items``, ``MASK = n_items + 1``, so
BERT's vocabulary has ``n_items + 2`` rows. Inputs are left-padded, the attention mask is
``input_ids != PAD`` (no query ever reads a PAD key), and positions count back from the most
recent column (the last column is always position ``max_len - 1``), so a batch may drop the
PAD columns no row uses and a history reads the same however much padding precedes it.

Training (cloze): in each window of ``max_len`` items, every item is replaced by ``MASK``
with probability ``mask_prob`` (at least one per window) and the model predicts the
originals. All chosen positions become ``MASK``: BERT's 80/10/10 rule (10% random item, 10%
unchanged) is left out, as in the BERT4Rec paper and RecBole, because inference only ever
shows the model ``MASK``. With probability ``last_item_prob`` a window masks only its last
item instead, a sample shaped exactly like inference.

Inference: drop the oldest item so that the ``max_len - 1`` most recent items plus a
trailing ``MASK`` fit the window, and read the scores at the ``MASK`` position.

Letters: B batch, T time (<= max_len), H hidden, N masked positions, W training windows,
V = n_items + 1 (PAD column included; BERT's logits have V + 1 columns, MASK last).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from helpers.batches import bucketed_batches
from helpers.ids import IGNORE, PAD, mask_id, vocab_size
from helpers.losses import full_cross_entropy
from helpers.profile import Profile
from helpers.sequences import pad_left

if TYPE_CHECKING:  # transformers is imported when a BERT4Rec is built: 2 s that SASRec users never pay
    from transformers import BertConfig, BertForMaskedLM


@dataclass
class BERT4RecConfig:
    n_items: int  # catalogue size: items are 1..n_items, 0 is PAD, n_items + 1 is MASK
    max_len: int = 50  # window in training; at inference max_len - 1 items + MASK
    hidden: int = 64  # H: item embedding and model width
    n_layers: int = 2  # Transformer blocks
    n_heads: int = 2  # attention heads; must divide hidden
    dropout: float = 0.2  # BERT's hidden and attention-probability dropout
    intermediate: int | None = None  # feed-forward width; None = 4 * hidden
    mask_prob: float = 0.2  # chance that a training item is masked (the paper: .2 ML, .6 Beauty)
    last_item_prob: float = 0.1  # chance that a window masks only its last item
    init_range: float = 0.02  # std of BERT's normal weight initialisation

    def __post_init__(self):
        if self.hidden % self.n_heads:
            raise ValueError(f"hidden={self.hidden} is not divisible by n_heads={self.n_heads}")
        if self.max_len < 2:
            raise ValueError(f"max_len={self.max_len}: inference needs room for an item and MASK")
        if not 0 < self.mask_prob <= 1 or not 0 <= self.last_item_prob <= 1:
            raise ValueError(f"mask_prob={self.mask_prob} must be in (0, 1], "
                             f"last_item_prob={self.last_item_prob} in [0, 1]")

    @classmethod
    def from_profile(cls, n_items: int, profile: Profile, **overrides) -> BERT4RecConfig:
        """The profile's sizes (max_len, hidden, n_layers, n_heads, dropout), then ``overrides``."""
        return cls(**{"n_items": n_items, "max_len": profile.max_len, "hidden": profile.hidden,
                      "n_layers": profile.n_layers, "n_heads": profile.n_heads,
                      "dropout": profile.dropout, **overrides})


def bert_config(config: BERT4RecConfig) -> BertConfig:
    """The Hugging Face config for item ids: vocabulary PAD + items + MASK, one token type."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size(config.n_items, with_mask=True),
        hidden_size=config.hidden,
        num_hidden_layers=config.n_layers,
        num_attention_heads=config.n_heads,
        intermediate_size=config.intermediate or 4 * config.hidden,
        hidden_act="gelu",
        hidden_dropout_prob=config.dropout,
        attention_probs_dropout_prob=config.dropout,
        max_position_embeddings=config.max_len,
        type_vocab_size=1,
        initializer_range=config.init_range,
        pad_token_id=PAD,
        tie_word_embeddings=True,
    )


# ---------------------------------------------------------------- the loss
def mlm_loss(mlm: BertForMaskedLM, h: Tensor, labels: Tensor) -> tuple[Tensor | None, Tensor]:
    """BERT's masked-LM head on states ``h`` (N, H) -> ``(logits (N, V + 1) or None, loss)``.

    Every column counts, as in ``BertForMaskedLM``. On a CPU the decoder and the loss run
    fused (:class:`helpers.losses.ChunkedCrossEntropy`, about 2x faster than autograd's
    version, whose log-softmax backward dominated a BERT4Rec step) and no logits are
    returned; elsewhere ``F.cross_entropy`` on the head's logits.
    """
    head = mlm.cls.predictions
    z = head.transform(h)  # (N, H): dense, GELU, LayerNorm
    if h.device.type == "cpu":
        return None, full_cross_entropy(z, head.decoder.weight, labels, bias=head.decoder.bias, masked=None)
    logits = head.decoder(z)  # (N, V + 1)
    return logits, F.cross_entropy(logits.float(), labels)


# ---------------------------------------------------------------- cloze batches
def item_windows(sequences: Sequence[np.ndarray], max_len: int) -> Tensor:
    """(W, max_len) left-padded windows cut from the most recent end of each sequence.

    Every item lands in exactly one window; the oldest window of a sequence is the short one.

    >>> item_windows([np.array([1, 2, 3, 4, 5])], 3).tolist()
    [[3, 4, 5], [0, 1, 2]]
    """
    windows = [s[max(0, end - max_len):end] for s in sequences
               for end in range(len(s), 0, -max_len)]
    return pad_left(windows, max_len)


def mask_items(items: Tensor, n_items: int, mask_prob: float, generator: torch.Generator,
               last_item_prob: float = 0.0) -> tuple[Tensor, Tensor]:
    """Cloze masking of left-padded (B, T) ``items`` -> ``(input_ids, labels)``, both (B, T).

    The draws, in order: ``u = torch.rand(B, T)``; a real (non-PAD) position is masked where
    ``u < mask_prob``; a row with no mask gets its real position of smallest ``u``; then
    ``torch.rand(B) < last_item_prob`` picks rows that mask only their last column. Masked
    positions hold ``MASK`` in ``input_ids`` and the item in ``labels``; every other label is
    ``IGNORE``. PAD is never masked; a row of PAD only stays unmasked.
    """
    real = items != PAD  # (B, T)
    u = torch.rand(items.shape, generator=generator)  # (B, T)
    masked = (u < mask_prob) & real
    first = u.masked_fill(~real, 2.0).argmin(dim=1, keepdim=True)  # (B, 1): smallest u, real
    none = ~masked.any(dim=1, keepdim=True) & real.any(dim=1, keepdim=True)  # (B, 1)
    masked |= torch.zeros_like(masked).scatter_(1, first, True) & none
    if last_item_prob > 0:
        only_last = torch.rand(len(items), generator=generator) < last_item_prob  # (B,)
        only_last &= real[:, -1]
        masked[only_last] = False
        masked[only_last, -1] = True
    input_ids = items.masked_fill(masked, mask_id(n_items))
    labels = items.masked_fill(~masked, IGNORE)
    return input_ids, labels


class ClozeBatches:
    """Shuffled windows, masked afresh every epoch, each batch trimmed to its longest window.

    A :class:`helpers.train.Batches`: the windows are built once (one tensor); each epoch
    draws the masks for all of them at once (:func:`mask_items`), then batches them with
    :func:`helpers.batches.bucketed_batches` (shuffled, sorted by length within chunks of
    ``bucket`` batches) so each batch drops the PAD columns that no row uses.
    """

    def __init__(self, sequences: Sequence[np.ndarray], n_items: int, max_len: int, batch_size: int,
                 mask_prob: float = 0.2, last_item_prob: float = 0.0, bucket: int = 50):
        self.items = item_windows(sequences, max_len)  # (W, T)
        self.lengths = (self.items != PAD).sum(1)  # (W,)
        self.n_items, self.batch_size, self.bucket = n_items, batch_size, bucket
        self.mask_prob, self.last_item_prob = mask_prob, last_item_prob

    def __len__(self) -> int:
        return math.ceil(len(self.items) / self.batch_size)

    def epoch(self, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
        input_ids, labels = mask_items(self.items, self.n_items, self.mask_prob, generator,
                                       self.last_item_prob)  # (W, T) each
        for rows in bucketed_batches(self.lengths, generator, self.batch_size, self.bucket):
            width = int(self.lengths[rows].max())
            yield input_ids[rows, -width:], labels[rows, -width:]  # (B, width) each


def cloze_batches(config: BERT4RecConfig):
    """A ``make_batches`` for :func:`helpers.train.train` with this model's masking."""
    def make(sequences: Sequence[np.ndarray], train_config) -> ClozeBatches:
        return ClozeBatches(sequences, config.n_items, config.max_len, train_config.batch_size,
                            config.mask_prob, config.last_item_prob)
    return make


# ---------------------------------------------------------------- the model
class BERT4Rec(nn.Module):
    """The stock ``BertForMaskedLM`` over item ids, with the course's forward and score."""

    def __init__(self, config: BERT4RecConfig):
        from transformers import BertForMaskedLM

        super().__init__()
        self.config = config
        self.mlm = BertForMaskedLM(bert_config(config))
        self.mask_token = mask_id(config.n_items)

    @property
    def max_len(self) -> int:
        return self.config.max_len

    def bert_inputs(self, input_ids: Tensor) -> dict[str, Tensor]:
        """Keyword arguments for ``self.mlm`` or ``self.mlm.bert``: ids, attention mask, positions."""
        T = input_ids.shape[1]
        if T > self.max_len:
            raise ValueError(f"input has {T} columns, the model reads at most {self.max_len}")
        positions = torch.arange(self.max_len - T, self.max_len, device=input_ids.device)  # (T,)
        return {"input_ids": input_ids, "attention_mask": (input_ids != PAD).long(),
                "position_ids": positions.expand_as(input_ids)}

    def hidden(self, input_ids: Tensor) -> Tensor:
        """(B, T) ids -> (B, T, H): BERT's last layer, every position reading both directions."""
        return self.mlm.bert(**self.bert_inputs(input_ids)).last_hidden_state

    def forward(self, input_ids: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Without labels: ``(logits (B, T, V + 1), None)``, BERT's own output.

        With labels (B, T): ``(logits, loss)``, computed at the N positions whose label is
        not ``IGNORE`` only (the others carry no loss); ``logits`` is (N, V + 1), or None on a
        CPU where the fused loss never builds them (see :func:`mlm_loss`). The loss equals
        ``BertForMaskedLM``'s on the same batch: mean cross-entropy over the whole
        vocabulary, PAD and MASK columns included (they are never targets, so training pushes
        them down; :meth:`score` removes them anyway).
        """
        h = self.hidden(input_ids)  # (B, T, H)
        if labels is None:
            return self.mlm.cls(h), None
        keep = labels != IGNORE
        return mlm_loss(self.mlm, h[keep], labels[keep])

    @torch.no_grad()
    def score(self, input_ids: Tensor) -> Tensor:
        """(B, T) left-padded histories -> (B, V) next-item scores; PAD column -inf, no MASK.

        Appends ``MASK`` after the ``max_len - 1`` most recent items and reads its logits.
        Columns that only PAD fills in every row are dropped first (exact, see module doc).
        """
        history = input_ids[:, -(self.max_len - 1):]  # (B, <= max_len - 1)
        mask = torch.full((len(history), 1), self.mask_token, dtype=history.dtype, device=history.device)
        x = torch.cat([history, mask], dim=1)  # (B, T)
        first_real = int((x != PAD).int().argmax(dim=1).min())
        h = self.hidden(x[:, first_real:])[:, -1]  # (B, H): the MASK position
        logits = self.mlm.cls(h)[:, : self.config.n_items + 1].float()  # (B, V): MASK dropped
        logits[:, PAD] = float("-inf")
        return logits
