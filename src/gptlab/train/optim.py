"""The learning-rate schedule, and the optimizers: AdamW with weight decay on weight matrices
only, or Muon for the transformer blocks' matrices with AdamW for the rest."""

from __future__ import annotations

import math
from typing import Any

import torch

from gptlab.errors import ConfigError
from gptlab.runtime import native_bf16
from gptlab.train.config import TrainConfig


def get_lr(it: int, config: TrainConfig) -> float:
    """Learning rate for optimizer step `it` (0-based: the update that produces step it + 1).

    Linear warmup from learning_rate / warmup_iters to learning_rate over `warmup_iters`
    steps, then a half cosine down to `min_lr` at `lr_decay_iters`, then `min_lr` (the
    schedule of nanoGPT's train.py, after Loshchilov & Hutter 2017, "SGDR"). With
    `decay_lr=False` the rate is constant, as in the lecture seeds. `lr_schedule="wsd"`
    (warmup-stable-decay, Hu et al. 2024 "MiniCPM") holds learning_rate until
    `config.decay_start`, then falls linearly to min_lr at `lr_decay_iters`: the rate up
    to the cooldown does not depend on the run's length, so a run can be extended or cut
    before it (what `gptlab train --time` does).
    """
    if not config.decay_lr:
        return config.learning_rate
    if it < config.warmup_iters:
        return config.learning_rate * (it + 1) / config.warmup_iters
    decay_iters = config.decay_iters
    if it >= decay_iters:
        return config.min_lr
    if config.lr_schedule == "wsd":
        start = config.decay_start
        if it < start:
            return config.learning_rate
        progress = (it - start) / max(1, decay_iters - start)  # 0 -> 1
        return config.learning_rate + progress * (config.min_lr - config.learning_rate)
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
) -> torch.optim.Optimizer | MuonAdamW:
    """The optimizer `config.optimizer` names, over `param_groups(model, config)`: AdamW
    (the fused kernel on CUDA and CPU, where torch's default loops over the parameters:
    docs/benchmarks.md, "Model"), or `MuonAdamW`."""
    groups = param_groups(model, config)
    if config.optimizer == "muon":
        return MuonAdamW(model, groups, config, device_type)
    return _adamw(groups, config, device_type)


def _adamw(groups: list[dict], config: TrainConfig, device_type: str) -> torch.optim.AdamW:
    extra = {"fused": True} if device_type in ("cuda", "cpu") else {}
    return torch.optim.AdamW(
        groups, lr=config.learning_rate, betas=(config.beta1, config.beta2), **extra
    )


def muon_matrices(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters Muon trains: the weight matrices of the linear layers inside the
    transformer blocks. Embeddings, the output head (tied or not), biases and norm gains
    stay with AdamW, as Muon's authors advise.

    Muon orthogonalises each of these matrices on its own, so with `attention="reference"`
    (separate key, query and value Linears in every head) it orthogonalises per head, while a
    fused model's one c_attn matrix is orthogonalised whole; AdamW is the same for both.
    """
    blocks = getattr(getattr(model, "transformer", None), "h", None)
    if blocks is None:
        return []
    return [m.weight for m in blocks.modules()
            if isinstance(m, torch.nn.Linear) and m.weight.requires_grad]


def newton_schulz(g: torch.Tensor, coefficients: tuple[float, float, float], steps: int,
                  eps: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Muon's quintic Newton-Schulz iteration (`torch.optim.Muon`'s): a matrix with g's
    singular vectors and its singular values pushed toward 1 (none above ~1.2; very small
    ones stay small), computed in `dtype`.

    g is one matrix (m, n) or a stack of same-shaped ones (k, m, n), each orthogonalised on
    its own: a stack takes one batched matmul per product instead of k small ones.
    """
    a, b, c = coefficients
    wide = g.size(-2) <= g.size(-1)
    x = (g if wide else g.mT).to(dtype)
    x = x.unsqueeze(0) if x.dim() == 2 else x  # (k, m, n), m <= n
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)  # spectral <= Frobenius <= 1
    for _ in range(steps):
        gram = x @ x.mT  # (k, m, m)
        x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    x = x.squeeze(0) if g.dim() == 2 else x
    return x if wide else x.mT


def newton_schulz_dtype(device_type: str) -> torch.dtype:
    """bfloat16 (what torch's Muon uses) where matmuls in it run natively (CUDA; CPUs with
    AVX512-BF16 or AMX: `runtime.native_bf16`), float32 elsewhere."""
    return torch.bfloat16 if device_type == "cuda" or native_bf16(device_type) else torch.float32


class BatchedMuon(torch.optim.Muon if hasattr(torch.optim, "Muon") else torch.optim.Optimizer):
    """`torch.optim.Muon` with its Newton-Schulz iterations run once per group of
    same-shaped matrices (a transformer's layers share their shapes), in bfloat16 where the
    CPU multiplies it natively and in float32 where it does not (`newton_schulz_dtype`).

    torch's Muon orthogonalises one matrix at a time, always in bfloat16: on a CPU without
    bf16 instructions that is ~17x a float32 iteration, and on one with them a batch of the
    same-shaped matrices is ~2x faster than one by one (benchmarks/bench_optim.py). Same
    update rule, hyperparameters and state ("momentum_buffer") as torch's, so checkpoints
    move between the two.
    """

    def __init__(self, params: Any, ns_dtype: torch.dtype | None = None, **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self.ns_dtype = ns_dtype or newton_schulz_dtype("cpu")

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        if closure is not None:
            raise ValueError("BatchedMuon.step takes no closure")
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            same_shape: dict[tuple, list[torch.Tensor]] = {}
            for p in group["params"]:
                if p.grad is not None:
                    same_shape.setdefault((p.shape, p.dtype, p.device), []).append(p)
            for params in same_shape.values():
                updates = []
                for p in params:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = torch.zeros_like(p.grad)
                    buf = state["momentum_buffer"]
                    buf.lerp_(p.grad, 1 - momentum)
                    updates.append(p.grad.lerp(buf, momentum) if group["nesterov"] else buf)
                orthogonal = newton_schulz(torch.stack(updates), group["ns_coefficients"],
                                           group["ns_steps"], group["eps"], self.ns_dtype)
                ratio = _muon_lr_ratio(group["adjust_lr_fn"], params[0].shape)
                for p, update in zip(params, orthogonal, strict=True):
                    p.mul_(1 - lr * group["weight_decay"])
                    p.add_(update.to(p.dtype), alpha=-lr * ratio)


def _muon_lr_ratio(adjust_lr_fn: str | None, shape: torch.Size) -> float:
    """Muon's per-matrix step-size factor, as torch.optim.Muon defines it."""
    rows, cols = shape[0], shape[1]
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))  # the update's RMS matches AdamW's
    if adjust_lr_fn in (None, "original"):
        return math.sqrt(max(1.0, rows / cols))
    return 1.0


class MuonAdamW:
    """Muon (`torch.optim.Muon`) on `muon_matrices(model)`, AdamW on everything else.

    Muon (Jordan et al. 2024) replaces each matrix's momentum update by its nearest
    semi-orthogonal matrix (a few Newton-Schulz iterations), which trains small GPTs in
    fewer steps than AdamW (docs/benchmarks.md, Speedrun). Its step sizes are scaled per
    matrix to match AdamW's update size (`adjust_lr_fn="match_rms_adamw"`, Liu et al. 2025,
    "Muon is scalable for LLM training"), so one `learning_rate` schedule and one
    `weight_decay` serve both halves. Muon keeps its default momentum (0.95, Nesterov).
    Off CUDA the matrices go to `BatchedMuon`.

    To the trainer it is one optimizer: `param_groups` lists AdamW's groups then Muon's
    (the schedule sets every group's "lr"), and the state dict holds both.
    """

    def __init__(self, model: torch.nn.Module, groups: list[dict], config: TrainConfig,
                 device_type: str = "cpu") -> None:
        if not hasattr(torch.optim, "Muon"):
            raise ConfigError(f"optimizer=muon needs PyTorch 2.9 or later (this is "
                              f"{torch.__version__}): upgrade torch or use --optimizer adamw")
        matrices = muon_matrices(model)
        if not matrices:
            raise ConfigError("optimizer=muon needs a GPT model (weight matrices in "
                              "transformer blocks): use --optimizer adamw")
        chosen = {id(p) for p in matrices}
        rest = [{**g, "params": [p for p in g["params"] if id(p) not in chosen]}
                for g in groups]
        self.adamw = _adamw([g for g in rest if g["params"]], config, device_type)
        muon = torch.optim.Muon if device_type == "cuda" else BatchedMuon
        self.muon = muon(matrices, lr=config.learning_rate, weight_decay=config.weight_decay,
                         adjust_lr_fn="match_rms_adamw")

    @property
    def param_groups(self) -> list[dict]:
        # read afresh: load_state_dict gives each half new group dicts
        return self.adamw.param_groups + self.muon.param_groups

    @property
    def state(self) -> dict:
        return {**self.adamw.state, **self.muon.state}

    def step(self, closure: Any = None) -> None:
        if closure is not None:
            raise ValueError("MuonAdamW.step takes no closure")
        self.adamw.step()
        self.muon.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.adamw.zero_grad(set_to_none=set_to_none)
        self.muon.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"adamw": self.adamw.state_dict(), "muon": self.muon.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != {"adamw", "muon"}:
            raise ValueError("not a Muon + AdamW optimizer state (was the run trained with "
                             "--optimizer adamw?)")
        self.adamw.load_state_dict(state["adamw"])
        self.muon.load_state_dict(state["muon"])
