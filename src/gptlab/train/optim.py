"""The learning-rate schedule and AdamW with weight decay on weight matrices only."""

from __future__ import annotations

import math

import torch

from gptlab.train.config import TrainConfig


def get_lr(it: int, config: TrainConfig) -> float:
    """Learning rate for optimizer step `it` (0-based: the update that produces step it + 1).

    Linear warmup from learning_rate / warmup_iters to learning_rate over `warmup_iters`
    steps, then a half cosine down to `min_lr` at `lr_decay_iters`, then `min_lr` (the
    schedule of nanoGPT's train.py, after Loshchilov & Hutter 2017, "SGDR"). With
    `decay_lr=False` the rate is constant, as in the lecture seeds.
    """
    if not config.decay_lr:
        return config.learning_rate
    if it < config.warmup_iters:
        return config.learning_rate * (it + 1) / config.warmup_iters
    decay_iters = config.decay_iters
    if it >= decay_iters:
        return config.min_lr
    progress = (it - config.warmup_iters) / max(1, decay_iters - config.warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * progress))  # 1 -> 0
    return config.min_lr + coeff * (config.learning_rate - config.min_lr)


def param_groups(model: torch.nn.Module, config: TrainConfig) -> list[dict]:
    """Split parameters into a weight-decayed group and a non-decayed one.

    Weight matrices (2-D and up) of linear layers decay; biases and norm gains (1-D) never
    do; embedding tables decay only with `decay_embeddings=True` (nanoGPT decays them).
    Tied weights appear once (`named_parameters` removes duplicates).
    """
    embedding_params = {
        id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding)
        for p in m.parameters(recurse=False)
    }
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_matrix = p.dim() >= 2
        if is_matrix and (config.decay_embeddings or id(p) not in embedding_params):
            decay.append(p)
        else:
            no_decay.append(p)
    return [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def configure_optimizer(
    model: torch.nn.Module, config: TrainConfig, device_type: str = "cpu"
) -> torch.optim.AdamW:
    """AdamW over `param_groups(model, config)`; the fused kernel on CUDA and CPU (on CPU
    it cuts the optimizer from ~3 ms to ~1 ms of a 20 ms lecture-small step; see
    docs/benchmarks.md "Model")."""
    extra = {"fused": True} if device_type in ("cuda", "cpu") else {}
    return torch.optim.AdamW(
        param_groups(model, config),
        lr=config.learning_rate,
        betas=(config.beta1, config.beta2),
        **extra,
    )
