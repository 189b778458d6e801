"""GPT-2's weight layout, shared by the Hugging Face and nanoGPT converters.

gptlab's GPT names its modules like GPT-2 and nanoGPT (`transformer.wte`,
`transformer.h.{i}.attn.c_attn`, `lm_head`, ...), so a checkpoint maps key for key.
Two things differ between the formats:

- Hugging Face's GPT-2 stores its four projection matrices as `Conv1D` weights of shape
  (in_features, out_features); gptlab and nanoGPT use `nn.Linear`, shape (out_features,
  in_features). `CONV1D_SUFFIXES` lists them; converting is a transpose.
- Prefixes and buffers: HF files come with or without the `transformer.` prefix and may hold
  the causal-mask buffers `h.{i}.attn.bias` / `h.{i}.attn.masked_bias`; nanoGPT files saved
  from a `torch.compile`d model prefix every key with `_orig_mod.`. Neither is a weight.

Everything here works on plain `dict[str, torch.Tensor]` state dicts: no model object.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from gptlab.errors import GptlabError

# Projections stored as Conv1D (in, out) by Hugging Face and as nn.Linear (out, in) by gptlab.
CONV1D_SUFFIXES: tuple[str, ...] = (
    "attn.c_attn.weight",
    "attn.c_proj.weight",
    "mlp.c_fc.weight",
    "mlp.c_proj.weight",
)

# Causal-mask buffers some GPT-2 files carry: `h.0.attn.bias` (not `h.0.attn.c_attn.bias`).
_MASK_BUFFER = re.compile(r"^(transformer\.)?h\.\d+\.attn\.(bias|masked_bias)$")


def size_fields(
    config: Mapping[str, Any], source: str, *, block_size_key: str = "block_size"
) -> dict[str, int]:
    """{"vocab_size", "block_size", "n_layer", "n_head", "n_embd"} as ints from a parsed
    config (HF config.json, whose block_size_key is `n_positions`, or nanoGPT's model_args).

    A missing or non-numeric size is a GptlabError naming `source`.
    """
    keys = {"vocab_size": "vocab_size", "block_size": block_size_key, "n_layer": "n_layer",
            "n_head": "n_head", "n_embd": "n_embd"}
    try:
        return {field: int(config[key]) for field, key in keys.items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise GptlabError(f"{source} lacks a valid GPT-2 size field ({exc})") from None


def expected_shapes(
    *, vocab_size: int, block_size: int, n_layer: int, n_embd: int,
    bias: bool = True, qkv_bias: bool = True, tie_weights: bool = True,
) -> dict[str, tuple[int, ...]]:
    """The gptlab (nn.Linear layout) key → shape table of a GPT-2-style model, in order,
    e.g. `transformer.h.0.attn.c_attn.weight` → (3C, C).

    `bias` covers LayerNorms and every Linear but the fused qkv projection `c_attn`, which
    `qkv_bias` covers. With `tie_weights`, `lm_head.weight` is `wte` and is not listed.
    """
    C = n_embd
    shapes: dict[str, tuple[int, ...]] = {
        "transformer.wte.weight": (vocab_size, C),
        "transformer.wpe.weight": (block_size, C),
    }

    def add_linear(name: str, out_features: int, in_features: int, with_bias: bool) -> None:
        shapes[f"{name}.weight"] = (out_features, in_features)
        if with_bias:
            shapes[f"{name}.bias"] = (out_features,)

    def add_norm(name: str) -> None:
        shapes[f"{name}.weight"] = (C,)
        if bias:
            shapes[f"{name}.bias"] = (C,)

    for i in range(n_layer):
        block = f"transformer.h.{i}"
        add_norm(f"{block}.ln_1")
        add_linear(f"{block}.attn.c_attn", 3 * C, C, qkv_bias)
        add_linear(f"{block}.attn.c_proj", C, C, bias)
        add_norm(f"{block}.ln_2")
        add_linear(f"{block}.mlp.c_fc", 4 * C, C, bias)
        add_linear(f"{block}.mlp.c_proj", C, 4 * C, bias)
    add_norm("transformer.ln_f")
    if not tie_weights:
        shapes["lm_head.weight"] = (vocab_size, C)
    return shapes


def is_mask_buffer(key: str) -> bool:
    """Whether `key` is a causal-mask buffer (not a weight) found in some GPT-2 files."""
    return _MASK_BUFFER.match(key) is not None


def hf_to_gptlab(hf_state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename and transpose a Hugging Face GPT-2 state dict into gptlab's layout.

    Accepts both `GPT2LMHeadModel` keys (`transformer.h.0...`, `lm_head.weight`) and bare
    `GPT2Model` keys (`h.0...`); drops the mask buffers. Conv1D weights (in, out) become
    Linear weights (out, in), contiguous. Values are not copied otherwise, and keys this
    function does not recognise are kept (renamed) so that `check_state_dict` can report them.
    """
    out: dict[str, torch.Tensor] = {}
    for key, tensor in hf_state.items():
        if is_mask_buffer(key):
            continue
        name = key.removeprefix("transformer.")
        name = name if name == "lm_head.weight" else f"transformer.{name}"
        if name.endswith(CONV1D_SUFFIXES):
            if tensor.dim() != 2:
                raise GptlabError(
                    f"weight {key} has shape {tuple(tensor.shape)}, expected a matrix: "
                    "the file is not a GPT-2 checkpoint"
                )
            tensor = tensor.t().contiguous()  # Conv1D (in, out) -> Linear (out, in)
        if name in out:
            raise GptlabError(f"weight {key} appears twice (with and without 'transformer.')")
        out[name] = tensor
    return out


def gptlab_to_hf(
    state: Mapping[str, torch.Tensor], *, tie_weights: bool
) -> dict[str, torch.Tensor]:
    """gptlab's state dict → `GPT2LMHeadModel` keys and Conv1D layout, ready for safetensors.

    With `tie_weights`, `lm_head.weight` is left out (Hugging Face re-ties it to `wte` on
    load, and safetensors cannot store one tensor under two names). Every tensor is made
    contiguous and owns its memory.
    """
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if tie_weights and key == "lm_head.weight":
            continue
        tensor = tensor.detach()
        if key.endswith(CONV1D_SUFFIXES):
            tensor = tensor.t()  # Linear (out, in) -> Conv1D (in, out)
        out[key] = tensor.contiguous().clone()
    return out


def check_state_dict(
    state: Mapping[str, torch.Tensor], shapes: Mapping[str, tuple[int, ...]], source: str
) -> None:
    """Require `state` to hold exactly the keys of `shapes`, each with its shape; else a
    one-line GptlabError naming the first few wrong weights of each kind and `source`."""
    missing = [k for k in shapes if k not in state]
    unexpected = [k for k in state if k not in shapes]
    wrong = [
        f"{k} {tuple(state[k].shape)} != {shapes[k]}"
        for k in shapes
        if k in state and tuple(state[k].shape) != tuple(shapes[k])
    ]
    problems = []
    if missing:
        problems.append(f"missing weights {_first(missing)}")
    if unexpected:
        problems.append(f"unexpected weights {_first(unexpected)}")
    if wrong:
        problems.append(f"shape mismatch {_first(wrong)}")
    if problems:
        raise GptlabError(
            f"{source} does not match its config: {'; '.join(problems)}; "
            "the weights file is incomplete or belongs to another model"
        )


def _first(items: Iterable[str], limit: int = 3) -> str:
    items = list(items)
    shown = ", ".join(items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")
