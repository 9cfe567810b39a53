"""BSARec: SASRec with a frequency filter beside self-attention (Shin et al., AAAI 2024).

"An Attentive Inductive Bias for Sequential Recommendation beyond the Self-Attention". Every
block's attention layer becomes ``alpha * filter(x) + (1 - alpha) * attention(x)``; the filter
splits the sequence with a Fourier transform along time into a low-pass part (the lowest
``c // 2 + 1`` frequency bins: slow, long-term taste) and the high-pass rest (quick changes),
and returns ``low + beta^2 * high`` with a learned per-channel ``beta``. Everything else
(residuals, LayerNorms, feed-forward, embeddings, losses, scoring) is SASRec's.

Read bottom-up: ``lowpass_weights -> FrequencyFilter -> BSARecAttention -> BSARecConfig -> BSARec``.
Letters as in :mod:`helpers.sasrec`; L = max_len.

**Causal, unlike the reference code.** The reference takes the FFT of the whole window, so
position t's low-pass part mixes in the items after t; trained, as here, on every position's
next item, the model would read its own targets (the registry's ``causal`` contract test
catches that). Here position t gets what the reference computes at the *last* position of
a history that ends at t: the low-pass part of its own prefix of real items, taken at its
end. For an n-item prefix that is a fixed weighted sum of the n items (the last row of the
(n, n) low-pass matrix), so the weights for every n <= L are worked out once with
``torch.fft`` (:func:`lowpass_weights`), and the filter is one lower-triangular (T, T) matrix
per row applied to x: a causal convolution whose kernel depends on how many items the
position has read. The last column (the one scored) thus gets the reference's filter over the
history's real items, wherever it was cut. PAD never enters (the reference's FFT also runs
over the left padding), so extra padding changes nothing. The FFT is circular: in the
last item's low-pass part the oldest items of the prefix count as neighbours too, as in the
reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from helpers.sasrec import SASRec, SASRecConfig


def lowpass_weights(max_len: int, c: int) -> Tensor:
    """(L, L) table W: the low-pass part at the last of n items x_1..x_n is sum_j W[n-1, j] x_{n-j}.

    Row n - 1 is the last row of the (n, n) matrix that keeps the lowest ``c // 2 + 1`` rfft
    bins (BSARec's cut-off ``c``), most recent item first; entries j >= n are 0. Each row sums
    to 1: a constant sequence is all low frequency.
    """
    table = torch.zeros(max_len, max_len, dtype=torch.float64)
    for n in range(1, max_len + 1):
        spectrum = torch.fft.rfft(torch.eye(n, dtype=torch.float64), dim=0, norm="ortho")  # (n // 2 + 1, n)
        spectrum[c // 2 + 1:] = 0  # drop the high frequencies
        lowpass = torch.fft.irfft(spectrum, n=n, dim=0, norm="ortho")  # (n, n): column s = low part of item s
        table[n - 1, :n] = lowpass[-1].flip(0)  # the last position's weights, lag 0 first
    return table.float()


class FrequencyFilter(nn.Module):
    """``low + beta^2 * high``, each position filtered over the prefix of real items it may read."""

    def __init__(self, config: BSARecConfig):
        super().__init__()
        self.sqrt_beta = nn.Parameter(torch.randn(config.hidden))  # beta = sqrt_beta^2 >= 0, as the reference
        self.drop = nn.Dropout(config.dropout)
        self.register_buffer("lowpass", lowpass_weights(config.max_len, config.c), persistent=False)

    def low(self, x: Tensor, mask: Tensor) -> Tensor:
        """(B, T, H) states, (B, 1, T, T) attention mask -> (B, T, H) low-pass parts.

        Row t of ``mask`` allows the real items up to t (left padding: the last n columns
        up to t) or, at a PAD position, t alone; so n is the row's count.
        """
        T = x.shape[1]
        allowed = mask[:, 0]  # (B, T, T)
        n = allowed.sum(dim=-1)  # (B, T) items each position reads
        steps = torch.arange(T, device=x.device)
        lag = (steps[:, None] - steps[None, :]).clamp(min=0)  # (T, T) how far key s lies behind query t
        kernel = self.lowpass[n - 1].gather(2, lag.expand(len(x), T, T))  # (B, T, T)
        return (kernel * allowed) @ x  # (B, T, H)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        low = self.low(x, mask)
        return self.drop(low + self.sqrt_beta ** 2 * (x - low))  # (B, T, H)


class BSARecAttention(nn.Module):
    """BSARec's layer in a SASRec block's attention slot: alpha * filter + (1 - alpha) * attention."""

    def __init__(self, config: BSARecConfig, attn: nn.Module):
        super().__init__()
        self.alpha = config.alpha
        self.filter = FrequencyFilter(config)
        self.attn = attn

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """(B, T, H) states, (B, 1, T, T) mask -> (B, T, H)."""
        return self.alpha * self.filter(x, mask) + (1 - self.alpha) * self.attn(x, mask)

    def weights(self, x: Tensor, mask: Tensor) -> Tensor:
        """The attention branch's weights (B, nh, T, T), for ``SASRec.attention_maps``."""
        return self.attn.weights(x, mask)


@dataclass
class BSARecConfig(SASRecConfig):
    alpha: float = 0.9  # share of the frequency branch; 1 - alpha goes to attention (reference default)
    c: int = 3  # cut-off: the lowest c // 2 + 1 Fourier bins are the low-pass part (reference default)

    def __post_init__(self):
        super().__post_init__()
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"alpha must lie in [0, 1], got {self.alpha}")
        if self.c < 1:
            raise ValueError(f"c must be at least 1, got {self.c}")


class BSARec(SASRec):
    """SASRec whose blocks mix a frequency filter into attention; ``config.attention`` picks the
    attention branch (softmax by default)."""

    def __init__(self, config: BSARecConfig):
        super().__init__(config)
        for block in self.blocks:  # wrap each block's attention, already initialised as SASRec's
            block.attn = BSARecAttention(config, block.attn)
