"""`ModelConfig`: the one typed description of a GPT's shape, saved as JSON in run folders.

Defaults are the lecture's large model (seed 003: block 256, 6 layers, 6 heads, 384
channels) with the lecture's choices (learned positions, ReLU, biases everywhere but on
q/k/v) and no dropout; `vocab_size` has no default because it comes from the tokenizer.
GPT-2 is `bias=True, qkv_bias=True, activation="gelu", tie_weights=True`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from gptlab.errors import ConfigError

Activation = Literal["relu", "gelu", "gelu_exact"]
PosEncoding = Literal["learned", "sinusoidal", "rope"]
AttentionImpl = Literal["fused", "reference"]

ACTIVATIONS: tuple[str, ...] = ("relu", "gelu", "gelu_exact")
POS_ENCODINGS: tuple[str, ...] = ("learned", "sinusoidal", "rope")
ATTENTIONS: tuple[str, ...] = ("fused", "reference")


@dataclass
class ModelConfig:
    """Hyperparameters of a decoder-only GPT (and nothing else: no training settings).

    Attributes:
        vocab_size: number of token ids V; ids run 0..V-1.
        block_size: longest context the model reads (positions 0..block_size-1).
        n_layer: number of transformer blocks.
        n_head: attention heads per block; must divide n_embd.
        n_embd: channels C of the residual stream; head size hs = C // n_head.
        dropout: drop probability on attention weights, residual branches and embeddings.
        bias: biases on the linear layers (attention output, feed-forward, lm_head) and
            the LayerNorms.
        qkv_bias: biases on the query/key/value projection (GPT-2: yes; the lecture: no).
        activation: feed-forward non-linearity, "relu" (lecture), "gelu" (GPT-2's tanh
            approximation) or "gelu_exact" (the erf form, nanoGPT's `nn.GELU()`).
        pos_encoding: "learned" table (lecture, GPT-2), "sinusoidal" (Vaswani et al. 2017,
            seed 000; no parameters) or "rope" (rotary, Su et al. 2021; no parameters).
        tie_weights: share the token embedding matrix with lm_head (GPT-2 does).
        attention: "fused" (one q/k/v matmul + scaled_dot_product_attention) or
            "reference" (the lecture's per-head modules with an explicit tril mask). Both
            hold the same parameters under the same state-dict keys.
    """

    vocab_size: int
    block_size: int = 256
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    dropout: float = 0.0
    bias: bool = True
    qkv_bias: bool = False
    activation: Activation = "relu"
    pos_encoding: PosEncoding = "learned"
    tie_weights: bool = False
    attention: AttentionImpl = "fused"

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in ("bias", "qkv_bias", "tie_weights"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ConfigError(f"{name} must be true or false, got {value!r}")
        dropout = self.dropout
        if isinstance(dropout, bool) or not isinstance(dropout, int | float):
            raise ConfigError(f"dropout must be a number in [0, 1), got {dropout!r}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout!r}")
        self.dropout = float(dropout)
        _check_choice("activation", self.activation, ACTIVATIONS)
        _check_choice("pos_encoding", self.pos_encoding, POS_ENCODINGS)
        _check_choice("attention", self.attention, ATTENTIONS)
        if self.n_embd % self.n_head != 0:
            raise ConfigError(
                f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}: "
                "choose n_embd as a multiple of n_head"
            )
        if self.pos_encoding == "rope" and self.head_size % 2 != 0:
            raise ConfigError(
                f"pos_encoding='rope' needs an even head size, got n_embd/n_head="
                f"{self.head_size}: choose n_embd and n_head so that n_embd/n_head is even"
            )
        if self.pos_encoding == "sinusoidal" and self.n_embd % 2 != 0:
            raise ConfigError(
                f"pos_encoding='sinusoidal' needs an even n_embd, got {self.n_embd}"
            )

    @property
    def head_size(self) -> int:
        """Channels per attention head, hs = n_embd // n_head."""
        return self.n_embd // self.n_head

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (the inverse of `from_dict`)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Build a config from `to_dict()` output; unknown keys are an error, not ignored."""
        if not isinstance(d, dict):
            raise ConfigError(f"a model config must be a mapping, got {type(d).__name__}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise ConfigError(
                f"unknown model config key(s) {', '.join(map(repr, unknown))}: "
                f"valid keys are {', '.join(known)}"
            )
        if "vocab_size" not in d:
            raise ConfigError("model config lacks 'vocab_size': add the tokenizer's vocab size")
        return cls(**d)


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(
            f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}"
        )
