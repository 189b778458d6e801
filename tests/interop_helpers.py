"""Helpers for the interop tests: tiny Hugging Face GPT-2 models and nanoGPT checkpoints.

`reference_logits` is an independent, functional GPT-2 forward over a gptlab-layout state
dict (nn.Linear weights), written from the GPT-2 paper's block structure: it checks the key
mapping and the Conv1D transposes against `transformers` without going through gptlab's
model code.
"""

from __future__ import annotations

import contextlib
import pickle
from pathlib import Path

import torch
import torch.nn.functional as F

TINY = dict(n_layer=2, n_head=2, n_embd=16, block_size=32)


@contextlib.contextmanager
def one_thread():
    """Run torch on one thread: tiny models on a shared 2-core CPU go ~10x faster so."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def tiny_hf_model(
    vocab_size: int = 50257, seed: int = 0, block_size: int = TINY["block_size"], **config_kwargs
):
    """A random `GPT2LMHeadModel` (2 layers, 2 heads, 16 channels), eval mode.

    Every parameter, LayerNorms and biases included, is random so that a misplaced or
    untransposed tensor changes the logits.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=vocab_size, n_positions=block_size, n_embd=TINY["n_embd"],
        n_layer=TINY["n_layer"], n_head=TINY["n_head"],
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **config_kwargs,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn_like(param) * 0.3)
    return model.eval()


def hf_logits(model, idx: torch.Tensor) -> torch.Tensor:
    """Logits (B, T, V) of a Hugging Face causal LM."""
    with torch.no_grad():
        return model(idx).logits


def greedy_tokens(logits_fn, idx: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
    """Greedy decoding by full recompute: idx (B, T) -> (B, T + max_new_tokens).

    `logits_fn(idx)` returns logits (B, T, V) or (B, 1, V) for the last position.
    """
    for _ in range(max_new_tokens):
        with torch.no_grad():
            logits = logits_fn(idx)[:, -1, :]  # (B, V)
        idx = torch.cat([idx, logits.argmax(dim=-1, keepdim=True)], dim=1)
    return idx


def reference_logits(
    state: dict[str, torch.Tensor], n_head: int, idx: torch.Tensor, approximate: str = "tanh",
    bias: bool = True,
) -> torch.Tensor:
    """GPT-2's forward on a gptlab-layout state dict. idx (B, T) → logits (B, T, V)."""
    B, T = idx.shape
    n_layer = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("transformer.h."))

    def norm(x, name):
        C = x.shape[-1]
        return F.layer_norm(x, (C,), state[f"{name}.weight"], state.get(f"{name}.bias"), 1e-5)

    def linear(x, name):
        return F.linear(x, state[f"{name}.weight"], state.get(f"{name}.bias"))

    x = state["transformer.wte.weight"][idx] + state["transformer.wpe.weight"][:T]  # (B, T, C)
    C = x.shape[-1]
    for i in range(n_layer):
        h = f"transformer.h.{i}"
        q, k, v = linear(norm(x, f"{h}.ln_1"), f"{h}.attn.c_attn").split(C, dim=2)
        q, k, v = (t.view(B, T, n_head, C // n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hs)
        x = x + linear(y.transpose(1, 2).reshape(B, T, C), f"{h}.attn.c_proj")
        m = F.gelu(linear(norm(x, f"{h}.ln_2"), f"{h}.mlp.c_fc"), approximate=approximate)
        x = x + linear(m, f"{h}.mlp.c_proj")
    x = norm(x, "transformer.ln_f")
    head = state.get("lm_head.weight", state["transformer.wte.weight"])
    return x @ head.t()  # (B, T, V)


def nanogpt_checkpoint(
    path: Path, *, vocab_size: int = 65, bias: bool = True, compiled: bool = False,
    seed: int = 0, with_mask_buffers: bool = False,
) -> dict[str, torch.Tensor]:
    """Write a nanoGPT-format ckpt.pt (as nanoGPT's train.py saves it) and return its weights.

    The weights are random, in nanoGPT's layout: nn.Linear (out, in), lm_head tied to wte
    (saved under both names), LayerNorm/Linear biases only when `bias`.
    """
    torch.manual_seed(seed)
    C, L, T = TINY["n_embd"], TINY["n_layer"], TINY["block_size"]
    state: dict[str, torch.Tensor] = {
        "transformer.wte.weight": torch.randn(vocab_size, C) * 0.3,
        "transformer.wpe.weight": torch.randn(T, C) * 0.3,
    }
    for i in range(L):
        h = f"transformer.h.{i}"
        for name, shape in [
            ("ln_1", (C,)), ("attn.c_attn", (3 * C, C)), ("attn.c_proj", (C, C)),
            ("ln_2", (C,)), ("mlp.c_fc", (4 * C, C)), ("mlp.c_proj", (C, 4 * C)),
        ]:
            state[f"{h}.{name}.weight"] = torch.randn(shape) * 0.3 + (1.0 if "ln" in name else 0)
            if bias:
                state[f"{h}.{name}.bias"] = torch.randn(shape[0]) * 0.1
        if with_mask_buffers:
            state[f"{h}.attn.bias"] = torch.tril(torch.ones(T, T)).view(1, 1, T, T)
    state["transformer.ln_f.weight"] = torch.randn(C) * 0.3 + 1.0
    if bias:
        state["transformer.ln_f.bias"] = torch.randn(C) * 0.1
    state["lm_head.weight"] = state["transformer.wte.weight"]  # tied: one tensor, two names
    saved = {(f"_orig_mod.{k}" if compiled else k): v for k, v in state.items()}
    model_args = dict(n_layer=L, n_head=TINY["n_head"], n_embd=C, block_size=T, bias=bias,
                      vocab_size=vocab_size, dropout=0.0)
    config = dict(out_dir="out", eval_interval=250, dataset="shakespeare_char",
                  learning_rate=1e-3, compile=compiled, dtype="float32")
    torch.save(
        {"model": saved, "optimizer": {"state": {}, "param_groups": []},
         "model_args": model_args, "iter_num": 5000, "best_val_loss": torch.tensor(1.47),
         "config": config},
        path,
    )
    return {k: v for k, v in state.items() if not k.endswith(".attn.bias")}


def nanogpt_meta(path: Path, chars: list[str]) -> None:
    """Write a char-level meta.pkl exactly as nanoGPT's shakespeare_char/prepare.py does."""
    meta = {
        "vocab_size": len(chars),
        "itos": dict(enumerate(chars)),
        "stoi": {c: i for i, c in enumerate(chars)},
    }
    path.write_bytes(pickle.dumps(meta))
