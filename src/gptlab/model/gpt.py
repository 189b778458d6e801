"""The decoder-only GPT: embeddings → blocks → final LayerNorm → lm_head.

State-dict keys follow GPT-2's checkpoint keys (transformer.wte, transformer.wpe,
transformer.h.{i}.ln_1/attn.c_attn/attn.c_proj/ln_2/mlp.c_fc/mlp.c_proj, transformer.ln_f,
lm_head), so Hugging Face GPT-2 and nanoGPT weights map key for key (either attention).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gptlab.errors import GptlabError
from gptlab.model.block import Block
from gptlab.model.cache import KVCache, SlotKVCache
from gptlab.model.config import ModelConfig
from gptlab.model.norm import norm_layer
from gptlab.model.positional import RotaryEmbedding, SinusoidalPositionalEncoding

INIT_STD = 0.02


class GPT(nn.Module):
    """A GPT language model described by a `ModelConfig`.

    Initialisation (GPT-2, Radford et al. 2019, §2.3): every Linear and Embedding weight
    is drawn from N(0, 0.02²), biases are zero, LayerNorms start at identity, and the two
    projections that write into the residual stream (attn.c_proj, mlp.c_proj) use
    std 0.02/√(2·n_layer), so the residual stream's variance does not grow with depth.
    (The lecture model keeps PyTorch's default init; the maths are otherwise the same.)
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise GptlabError(f"GPT needs a ModelConfig, got {type(config).__name__}")
        self.config = config
        C = config.n_embd
        parts: dict[str, nn.Module] = {"wte": nn.Embedding(config.vocab_size, C)}
        if config.pos_encoding == "learned":
            parts["wpe"] = nn.Embedding(config.block_size, C)
        parts["drop"] = nn.Dropout(config.dropout)
        parts["h"] = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        parts["ln_f"] = norm_layer(config)
        self.transformer = nn.ModuleDict(parts)
        self.lm_head = nn.Linear(C, config.vocab_size, bias=config.bias and not config.tie_weights)
        # parameter-free encodings live outside `transformer` as non-persistent buffers
        self.sinusoidal: SinusoidalPositionalEncoding | None = None
        self.rope: RotaryEmbedding | None = None
        if config.pos_encoding == "sinusoidal":
            self.sinusoidal = SinusoidalPositionalEncoding(config.block_size, C)
        elif config.pos_encoding == "rope":
            self.rope = RotaryEmbedding(config.head_size, config.block_size)
        self.reset_parameters()
        if config.tie_weights:
            self.lm_head.weight = self.transformer.wte.weight

    def reset_parameters(self) -> None:
        """(Re-)initialise every weight GPT-2 style (see the class docstring)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
            elif isinstance(module, nn.LayerNorm | nn.RMSNorm):
                module.reset_parameters()
        residual_std = INIT_STD / math.sqrt(2 * self.config.n_layer)
        for block in self.transformer.h:
            nn.init.normal_(block.attn.c_proj.weight, mean=0.0, std=residual_std)
            nn.init.normal_(block.mlp.c_proj.weight, mean=0.0, std=residual_std)

    @property
    def context_size(self) -> int:
        """The most tokens the model reads at once (block_size)."""
        return self.config.block_size

    def forward(
        self,
        idx: Tensor,
        targets: Tensor | None = None,
        ignore_index: int = -100,
        *,
        kv_cache: KVCache | SlotKVCache | None = None,
        last_only: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Next-token logits for every position, and the loss when targets are given.

        Args:
            idx: (B, T) token ids, T ≤ block_size.
            targets: (B, T) next-token ids; positions equal to `ignore_index` are skipped.
            kv_cache: generation only: `idx` holds the new tokens, which continue the
                cached ones (positions kv_cache.pos, ...); the cache is updated. A
                `SlotKVCache` gives each row its own positions (`SlotKVCache.begin`).
            last_only: compute logits for the last position only (generation).

        Returns:
            logits (B, T, V) ((B, 1, V) with last_only) and the mean cross-entropy over
            non-ignored targets (a scalar), or None without targets.
        """
        x = self.hidden_states(idx, kv_cache)  # (B, T, C)
        if last_only:
            x = x[:, -1:, :]  # (B, 1, C)
        logits = self.lm_head(x)  # (B, T, V)
        if targets is None:
            return logits, None
        if last_only:
            raise GptlabError("last_only=True computes no loss: pass targets=None")
        if targets.shape != idx.shape:
            raise GptlabError(
                f"targets of shape {tuple(targets.shape)} do not match idx of shape "
                f"{tuple(idx.shape)}: pass one next-token id per input token"
            )
        # flatten positions for cross_entropy: (B, T, V) -> (B·T, V), targets (B·T,)
        loss = F.cross_entropy(
            logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=ignore_index
        )
        return logits, loss

    def hidden_states(self, idx: Tensor, kv_cache: KVCache | SlotKVCache | None = None) -> Tensor:
        """(B, T) ids → the final-LayerNorm'd residual stream (B, T, C)."""
        if idx.dim() != 2:
            raise GptlabError(f"idx must be a (B, T) tensor of token ids, got {tuple(idx.shape)}")
        if isinstance(kv_cache, SlotKVCache):
            return self._slot_hidden_states(idx, kv_cache)
        B, T = idx.shape
        start = 0
        if kv_cache is None:
            if T > self.config.block_size:
                raise GptlabError(
                    f"sequence length {T} exceeds block_size={self.config.block_size}: "
                    f"crop the input to its last {self.config.block_size} tokens"
                )
        else:
            kv_cache.check_room(T)
            start = kv_cache.pos
        x = self.transformer.wte(idx)  # (B, T, C)
        x = x + self.absolute_positions(start, T, idx.device)  # (B, T, C) + (T, C)
        x = self.transformer.drop(x)
        for block in self.transformer.h:
            x = block(x, self.rope, kv_cache)
        if kv_cache is not None:
            kv_cache.advance(T)
        return self.transformer.ln_f(x)

    def _slot_hidden_states(self, idx: Tensor, kv_cache: SlotKVCache) -> Tensor:
        """hidden_states for rows at their own positions, kv_cache.positions (B, T)."""
        positions = kv_cache.positions  # (B, T)
        x = self.transformer.wte(idx)  # (B, T, C)
        if self.rope is not None:
            kv_cache.cos_sin = self.rope.cos_sin_at(positions)  # (B, T, hs/2) each
        elif self.sinusoidal is not None:
            x = x + self.sinusoidal(positions)  # (B, T, C)
        else:
            x = x + self.transformer.wpe(positions)  # (B, T, C)
        x = self.transformer.drop(x)
        for block in self.transformer.h:
            x = block(x, self.rope, kv_cache)
        return self.transformer.ln_f(x)

    def absolute_positions(self, start: int, length: int, device: torch.device) -> Tensor | float:
        """The (T, C) encodings added to the embeddings (0.0 for rope, which adds none)."""
        if self.config.pos_encoding == "rope":
            return 0.0
        if start + length > self.config.block_size:
            raise GptlabError(
                f"position {start + length - 1} is past block_size={self.config.block_size} "
                f"for pos_encoding={self.config.pos_encoding!r}: crop and recompute"
            )
        positions = torch.arange(start, start + length, device=device)  # (T,)
        if self.sinusoidal is not None:
            return self.sinusoidal(positions)
        return self.transformer.wpe(positions)

    def new_kv_cache(self, batch_size: int, rolling: bool = False) -> KVCache:
        """An empty KV cache of block_size slots per layer; `rolling=True` needs rope."""
        cfg = self.config
        if rolling and cfg.pos_encoding != "rope":
            raise GptlabError(
                f"a rolling KV cache needs pos_encoding='rope', not {cfg.pos_encoding!r}: "
                "absolute positions shift when the window slides"
            )
        weight = self.transformer.wte.weight
        return KVCache(
            cfg.n_layer, batch_size, cfg.n_head, cfg.head_size, cfg.block_size,
            rolling=rolling, dtype=weight.dtype, device=weight.device,
        )

    def new_slot_cache(self, num_slots: int, capacity: int | None = None,
                       align: int | None = None) -> SlotKVCache:
        """An empty `SlotKVCache` of `num_slots` rows × `capacity` entries per layer
        (default block_size), attending in one call over keys padded to multiples of
        `align` (None: a call per request)."""
        cfg = self.config
        weight = self.transformer.wte.weight
        return SlotKVCache(
            cfg.n_layer, num_slots, cfg.n_head, cfg.head_size, capacity or cfg.block_size,
            align=align, dtype=weight.dtype, device=weight.device,
        )

    def num_parameters(self, non_embedding: bool = False) -> int:
        """Number of parameters (shared tensors counted once).

        With `non_embedding=True`, the lookup tables are left out: the position table
        (learned only) and the token table unless it is tied to lm_head (then it is also
        a matmul weight). What remains is the N of the 6·N training-FLOPs estimate.
        """
        total = sum(p.numel() for p in self.parameters())
        if non_embedding:
            if "wpe" in self.transformer:
                total -= self.transformer.wpe.weight.numel()
            if not self.config.tie_weights:
                total -= self.transformer.wte.weight.numel()
        return total

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (forward + backward), Kaplan et al. 2020 / PaLM App. B.

        6·N for the weight matmuls plus 12·n_layer·T·C for attention scores and values
        at sequence length T (default block_size); the causal half is not discounted.
        """
        cfg = self.config
        T = cfg.block_size if seq_len is None else seq_len
        return 6.0 * self.num_parameters(non_embedding=True) + 12.0 * cfg.n_layer * T * cfg.n_embd

    def summary(self) -> str:
        """A human-readable table of the architecture and its parameter counts."""
        cfg = self.config

        def count(module: nn.Module) -> int:
            return sum(p.numel() for p in module.parameters())

        rows = [("token embedding (wte)", count(self.transformer.wte))]
        if "wpe" in self.transformer:
            rows.append(("position embedding (wpe)", count(self.transformer.wpe)))
        per_block = count(self.transformer.h[0])
        rows.append((f"{cfg.n_layer} blocks x {per_block:,}", cfg.n_layer * per_block))
        norm_name = type(self.transformer.ln_f).__name__  # LayerNorm or RMSNorm
        rows.append((f"final {norm_name} (ln_f)", count(self.transformer.ln_f)))
        head = "lm_head (tied to wte)" if cfg.tie_weights else "lm_head"
        rows.append((head, 0 if cfg.tie_weights else count(self.lm_head)))
        total = self.num_parameters()
        assert sum(n for _, n in rows) == total
        lines = [
            f"GPT: {cfg.n_layer} layers, {cfg.n_head} heads, {cfg.n_embd} channels, "
            f"block {cfg.block_size}, vocab {cfg.vocab_size}",
            f"  {cfg.pos_encoding} positions, {cfg.activation}, {cfg.norm}, "
            f"{cfg.attention} attention{', qk_norm' if cfg.qk_norm else ''}, "
            f"bias={cfg.bias}, qkv_bias={cfg.qkv_bias}, dropout={cfg.dropout}",
        ]
        width = max(len(name) for name, _ in rows) + 2
        lines += [f"  {name:<{width}}{n:>12,}" for name, n in rows]
        lines.append(f"  {'total':<{width}}{total:>12,}  ({total / 1e6:.6f} M parameters)")
        return "\n".join(lines)
