"""A transformer block: communication (attention) then computation (feed-forward)."""

from __future__ import annotations

from torch import Tensor, nn

from gptlab.model.attention import CausalSelfAttention, MultiHeadAttention
from gptlab.model.cache import KVCache, SlotKVCache
from gptlab.model.config import ModelConfig
from gptlab.model.feedforward import MLP
from gptlab.model.norm import norm_layer
from gptlab.model.positional import RotaryEmbedding


class Block(nn.Module):
    """Pre-LayerNorm residual block: x = x + attn(ln_1(x)); x = x + mlp(ln_2(x)).

    (ln_1 and ln_2 are RMSNorms with `norm="rmsnorm"`: see `norm_layer`.)

    Normalising before each sub-layer (GPT-2, the lecture) rather than after (Vaswani et
    al.) keeps the residual stream an identity path, which trains deep stacks stably.
    """

    def __init__(self, config: ModelConfig, layer_idx: int = 0) -> None:
        super().__init__()
        self.ln_1 = norm_layer(config)
        attention = CausalSelfAttention if config.attention == "fused" else MultiHeadAttention
        self.attn = attention(config, layer_idx)
        self.ln_2 = norm_layer(config)
        self.mlp = MLP(config)

    def forward(
        self,
        x: Tensor,
        rope: RotaryEmbedding | None = None,
        kv_cache: KVCache | SlotKVCache | None = None,
    ) -> Tensor:
        """(B, T, C) → (B, T, C)."""
        x = x + self.attn(self.ln_1(x), rope, kv_cache)
        x = x + self.mlp(self.ln_2(x))
        return x
