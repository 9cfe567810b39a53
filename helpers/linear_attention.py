"""Causal linear attention (Katharopoulos et al., 2020): SASRec's attention layer without the softmax.

Softmax attention weighs key s for query t by ``exp(q_t . k_s)``; linear attention by
``phi(q_t) . phi(k_s)`` with the feature map ``phi(x) = elu(x) + 1`` (positive, so every weight
is positive and a row can be normalised). Over the keys a query may read (earlier-or-same real
items, as :func:`helpers.sasrec.attention_mask` allows),

    y_t = sum_s phi(q_t).phi(k_s) v_s / sum_s phi(q_t).phi(k_s)
        = phi(q_t) S_t / phi(q_t) . z_t,    S_t = sum_s phi(k_s) v_s^T (hs, hs),  z_t = sum_s phi(k_s) (hs,)

The second line is what makes it linear: ``S_t`` and ``z_t`` are running sums, so reading one
more item costs the same whatever the history's length (an RNN), where softmax attention
looks at every earlier key again. ``forward`` computes the first line instead, the (T, T)
weights masked like SASRec's (a PAD key weighs 0, a query always reads itself): training reads
every position, and T weights a query (T <= 200 here) cost less than the hs * hs numbers of
``S_t`` at every position. Both lines give the same numbers (a test checks it with loops).

Same parameters, names and interface as :class:`helpers.sasrec.CausalSelfAttention` (a
subclass): ``SASRecConfig(attention="linear")``, the registry's ``sasrec_linear``, swaps this
layer into every block and changes nothing else. Letters as in :mod:`helpers.sasrec`.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from helpers.sasrec import CausalSelfAttention

EPS = 1e-6  # added to each row's normaliser, as in the paper: it never divides by an underflowed 0


def feature_map(x: Tensor) -> Tensor:
    """phi(x) = elu(x) + 1 > 0, elementwise."""
    return F.elu(x) + 1


class CausalLinearAttention(CausalSelfAttention):
    """SASRec's attention layer with weights ``phi(q).phi(k)`` in place of ``softmax(q.k / sqrt(hs))``."""

    @staticmethod
    def _weights(q: Tensor, k: Tensor, mask: Tensor) -> Tensor:
        scores = feature_map(q) @ feature_map(k).transpose(-2, -1)  # (B, nh, T, T), all > 0
        scores = scores.masked_fill(~mask, 0.0)  # a key the query may not read weighs 0
        return scores / (scores.sum(dim=-1, keepdim=True) + EPS)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """(B, T, H) states, (B, 1, T, T) mask -> (B, T, H)."""
        B, T, H = x.shape
        q, k, v = self._heads(x)
        w = F.dropout(self._weights(q, k, mask), self.dropout, self.training)  # (B, nh, T, T)
        y = (w @ v).transpose(1, 2).reshape(B, T, H)  # (B, T, H): heads side by side
        return self.resid_drop(self.proj(y))

    def weights(self, x: Tensor, mask: Tensor) -> Tensor:
        """The attention weights (B, nh, T, T): rows sum to 1 (up to ``EPS``)."""
        q, k, _ = self._heads(x)
        return self._weights(q, k, mask)
