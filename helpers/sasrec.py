"""SASRec: a causal Transformer over item ids (Kang and McAuley, 2018), nanoGPT-style.

Read bottom-up: ``CausalSelfAttention -> MLP -> Block -> SASRecConfig -> SASRec``. The block's
attention layer is swappable: ``SASRecConfig.attention`` names an entry of :data:`ATTENTIONS`
(``"linear"``: :mod:`helpers.linear_attention`).

Letters: B batch, T time (<= max_len), H hidden, nh heads, hs = H / nh, V = n_items + 1.
Inputs are left-padded with ``PAD``: the most recent item is the last column. Positions
count back from that column (the last column is always position ``max_len - 1``), so a
history reads the same however much padding sits in front of it, and attention never
looks at a PAD key.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from helpers.ids import PAD
from helpers.losses import check_loss, next_item_loss
from helpers.profile import Profile


def attention_mask(input_ids: Tensor) -> Tensor:
    """(B, 1, T, T) boolean, True = may attend: earlier-or-same real items, plus itself.

    The diagonal is always allowed so that a PAD query has one key and no NaN; its output
    is never used (PAD positions carry no label and are never the last column).
    """
    T = input_ids.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=input_ids.device).tril()  # (T, T)
    real_key = (input_ids != PAD)[:, None, None, :]  # (B, 1, 1, T)
    eye = torch.eye(T, dtype=torch.bool, device=input_ids.device)
    return causal & (real_key | eye)  # (B, 1, T, T)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: SASRecConfig):
        super().__init__()
        self.n_heads, self.dropout = config.n_heads, config.dropout
        self.qkv = nn.Linear(config.hidden, 3 * config.hidden)
        self.proj = nn.Linear(config.hidden, config.hidden)
        self.resid_drop = nn.Dropout(config.dropout)

    def _heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        B, T, H = x.shape
        q, k, v = self.qkv(x).split(H, dim=2)  # (B, T, H) each
        return tuple(t.view(B, T, self.n_heads, H // self.n_heads).transpose(1, 2)  # (B, nh, T, hs)
                     for t in (q, k, v))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        B, T, H = x.shape
        q, k, v = self._heads(x)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                           dropout_p=self.dropout if self.training else 0.0)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, H)  # (B, T, H): heads side by side
        return self.resid_drop(self.proj(y))

    def weights(self, x: Tensor, mask: Tensor) -> Tensor:
        """The attention probabilities, written out: (B, nh, T, T), rows sum to 1."""
        q, k, _ = self._heads(x)
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, nh, T, T)
        return scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)


def _linear_attention(config: SASRecConfig) -> nn.Module:
    from helpers.linear_attention import CausalLinearAttention  # imported here: that module imports this one

    return CausalLinearAttention(config)


# SASRecConfig.attention -> the block's attention layer, built from the config; each has the
# interface of CausalSelfAttention: forward(x (B, T, H), mask (B, 1, T, T)) and weights(x, mask)
ATTENTIONS: dict[str, Callable[[SASRecConfig], nn.Module]] = {
    "softmax": CausalSelfAttention,
    "linear": _linear_attention,
}


class MLP(nn.Module):
    def __init__(self, config: SASRecConfig):
        super().__init__()
        self.fc = nn.Linear(config.hidden, 4 * config.hidden)
        self.proj = nn.Linear(4 * config.hidden, config.hidden)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))  # (B, T, H)


class Block(nn.Module):
    """Pre-LayerNorm Transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: SASRecConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.hidden)
        self.attn = ATTENTIONS[getattr(config, "attention", "softmax")](config)  # MBSASRecConfig has none
        self.ln_2 = nn.LayerNorm(config.hidden)
        self.mlp = MLP(config)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.mlp(self.ln_2(x))


@dataclass
class SASRecConfig:
    n_items: int  # catalogue size: items are 1..n_items, 0 is PAD
    max_len: int = 50  # longest history the model reads (learned positions)
    hidden: int = 64  # H: item embedding and model width
    n_layers: int = 2  # Transformer blocks
    n_heads: int = 2  # attention heads; must divide hidden
    dropout: float = 0.2  # on embeddings, attention weights and residual branches
    loss: str = "ce"  # "ce" full softmax, "sampled" softmax, or "bce" (one negative)
    n_negatives: int = 3000  # shared negatives per batch for loss="sampled"
    attention: str = "softmax"  # the blocks' attention layer: a name in ATTENTIONS

    def __post_init__(self):
        if self.hidden % self.n_heads:
            raise ValueError(f"hidden={self.hidden} is not divisible by n_heads={self.n_heads}")
        if self.attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {sorted(ATTENTIONS)}, got {self.attention!r}")
        check_loss(self.loss)

    @classmethod
    def from_profile(cls, n_items: int, profile: Profile, **overrides) -> SASRecConfig:
        """The profile's sizes (max_len, hidden, n_layers, n_heads, dropout), then ``overrides``."""
        return cls(**{"n_items": n_items, "max_len": profile.max_len, "hidden": profile.hidden,
                      "n_layers": profile.n_layers, "n_heads": profile.n_heads,
                      "dropout": profile.dropout, **overrides})


class SASRec(nn.Module):
    """Causal self-attention over item ids; item embeddings tied between input and output."""

    def __init__(self, config: SASRecConfig):
        super().__init__()
        self.config = config
        self.item_emb = nn.Embedding(config.n_items + 1, config.hidden, padding_idx=PAD)
        self.pos_emb = nn.Embedding(config.max_len, config.hidden)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(config.hidden)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear):
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            nn.init.zeros_(module.weight[module.padding_idx])

    @property
    def max_len(self) -> int:
        return self.config.max_len

    def _embed(self, input_ids: Tensor) -> Tensor:
        T = input_ids.shape[1]
        if T > self.max_len:
            raise ValueError(f"input has {T} columns, the model reads at most {self.max_len}")
        pos = torch.arange(self.max_len - T, self.max_len, device=input_ids.device)  # (T,)
        items = self.item_emb(input_ids) * math.sqrt(self.config.hidden)  # as SASRec: learns faster
        return self.drop(items + self.pos_emb(pos))  # (B, T, H)

    def hidden(self, input_ids: Tensor) -> Tensor:
        """(B, T) item ids -> (B, T, H) states; position t has read items 0..t."""
        x, mask = self._embed(input_ids), attention_mask(input_ids)
        for block in self.blocks:
            x = block(x, mask)
        return self.ln_f(x)

    def logits(self, h: Tensor) -> Tensor:
        """(..., H) states -> (..., V) scores against every item; the PAD column is -inf."""
        logits = h @ self.item_emb.weight.T
        logits[..., PAD] = float("-inf")
        return logits

    def forward(self, input_ids: Tensor, labels: Tensor | None = None) -> tuple[Tensor | None, Tensor | None]:
        """Without labels: ``(logits (B, T, V), None)``. With labels (B, T): ``(None, loss)``;
        the loss is computed only where ``labels != IGNORE`` (see ``next_item_loss``)."""
        h = self.hidden(input_ids)
        if labels is None:
            return self.logits(h), None
        loss = next_item_loss(h, labels, self.item_emb.weight, self.config.loss, self.config.n_negatives)
        return None, loss

    @torch.no_grad()
    def score(self, input_ids: Tensor) -> Tensor:
        """(B, T) left-padded histories -> (B, V) next-item scores, from the last column."""
        return self.logits(self.hidden(input_ids[:, -self.max_len:])[:, -1]).float()

    @torch.no_grad()
    def attention_maps(self, input_ids: Tensor) -> Tensor:
        """(B, n_layers, nh, T, T) attention probabilities, for plots."""
        x, mask = self._embed(input_ids), attention_mask(input_ids)
        maps = []
        for block in self.blocks:
            maps.append(block.attn.weights(block.ln_1(x), mask))
            x = block(x, mask)
        return torch.stack(maps, dim=1)
