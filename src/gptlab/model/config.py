"""`ModelConfig`: the one typed description of a GPT's shape, saved as JSON in run folders.

Defaults are the lecture's large model (seed 003: block 256, 6 layers, 6 heads, 384
channels) with the lecture's choices (learned positions, ReLU, biases everywhere but on
q/k/v) and no dropout; `vocab_size` has no default because it comes from the tokenizer.
GPT-2 is `bias=True, qkv_bias=True, activation="gelu", tie_weights=True`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from gptlab.checks import is_int, is_number
from gptlab.errors import ConfigError

Activation = Literal["relu", "gelu", "gelu_exact", "relu2", "swiglu"]
Norm = Literal["layernorm", "rmsnorm"]
PosEncoding = Literal["learned", "sinusoidal", "rope"]
AttentionImpl = Literal["fused", "reference"]

ACTIVATIONS: tuple[str, ...] = get_args(Activation)
NORMS: tuple[str, ...] = get_args(Norm)
POS_ENCODINGS: tuple[str, ...] = get_args(PosEncoding)
ATTENTIONS: tuple[str, ...] = get_args(AttentionImpl)


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class ModelConfig:
    """Hyperparameters of a decoder-only GPT (and nothing else: no training settings).

    Each field's `metadata["help"]` says what it sets (`gptlab train --help` shows it).
    Beyond that:

    - dropout acts on the attention weights, the residual branches and the embeddings.
    - bias covers the attention output, feed-forward and lm_head Linears and the
      LayerNorms; qkv_bias the query/key/value projection (GPT-2: both; the lecture: no
      qkv_bias).
    - activation: "relu" (the lecture), "gelu" or "gelu_exact" (GPT-2), "relu2"
      (squared ReLU) or "swiglu" (gated, with a 2/3-wide hidden layer): see `MLP`.
    - norm: "layernorm" (the lecture, GPT-2) or "rmsnorm" (no mean, no bias: Zhang &
      Sennrich 2019), for ln_1, ln_2 and ln_f alike (see `norm_layer`).
    - qk_norm: RMS-normalise each head's queries and keys before the dot product (no
      parameters; see `attention.normed_qk`), which bounds the attention logits.
    - pos_encoding: "learned" table (the lecture, GPT-2), "sinusoidal" (Vaswani et al.
      2017, seed 000) or "rope" (rotary, Su et al. 2021); the last two have no parameters.
    - attention: "fused" or "reference" (the lecture's per-head modules); both save the
      same state-dict keys, so checkpoints move between them.
    """

    vocab_size: int = field(
        metadata={"help": "model: vocabulary size (None: the dataset tokenizer's)"}
    )
    block_size: int = _f(256, "model: context length in tokens")
    n_layer: int = _f(6, "model: transformer blocks")
    n_head: int = _f(6, "model: attention heads per block")
    n_embd: int = _f(384, "model: channels of the residual stream")
    dropout: float = _f(0.0, "model: dropout probability")
    bias: bool = _f(True, "model: biases in linear layers and LayerNorms")
    qkv_bias: bool = _f(False, "model: biases on the query/key/value projection")
    activation: Activation = _f("relu", "model: relu, gelu, gelu_exact, relu2 or swiglu")
    norm: Norm = _f("layernorm", "model: layernorm or rmsnorm")
    qk_norm: bool = _f(False, "model: RMS-normalise queries and keys per head")
    pos_encoding: PosEncoding = _f("learned", "model: learned, sinusoidal or rope")
    tie_weights: bool = _f(False, "model: share the token embedding with lm_head")
    attention: AttentionImpl = _f(
        "fused", "model: fused (scaled_dot_product_attention) or reference (per-head)"
    )

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not is_int(value) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in ("bias", "qkv_bias", "tie_weights", "qk_norm"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ConfigError(f"{name} must be true or false, got {value!r}")
        dropout = self.dropout
        if not is_number(dropout):
            raise ConfigError(f"dropout must be a number in [0, 1), got {dropout!r}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout!r}")
        self.dropout = float(dropout)
        _check_choice("activation", self.activation, ACTIVATIONS)
        _check_choice("norm", self.norm, NORMS)
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
