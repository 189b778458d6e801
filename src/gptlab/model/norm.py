"""Normalisation layers: LayerNorm (the lecture, GPT-2) or RMSNorm, one place to choose.

LayerNorm (Ba et al. 2016) subtracts each position's mean over the C channels, divides by
the standard deviation, then scales and shifts: γ·(x − μ)/σ + β. RMSNorm (Zhang &
Sennrich 2019) keeps only the division, by the root mean square: γ·x/rms(x), with
rms(x) = √(mean(x²) + ε) — one reduction fewer and no β, which trains as well in their
experiments and in LLaMA's.
"""

from __future__ import annotations

from torch import nn

from gptlab.model.config import ModelConfig

NORM_EPS = 1e-5  # PyTorch's LayerNorm default, and GPT-2's layer_norm_epsilon


def norm_layer(config: ModelConfig) -> nn.Module:
    """A fresh normalisation over n_embd channels of the kind `config.norm` names.

    LayerNorm has a bias when `config.bias` (GPT-2); RMSNorm never has one. Both start as
    the identity scale γ = 1.
    """
    if config.norm == "rmsnorm":
        return nn.RMSNorm(config.n_embd, eps=NORM_EPS)
    return nn.LayerNorm(config.n_embd, eps=NORM_EPS, bias=config.bias)
