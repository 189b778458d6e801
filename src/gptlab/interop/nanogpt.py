"""nanoGPT checkpoints (`ckpt.pt`, optional `meta.pkl`) → gptlab model fields and weights.

nanoGPT's train.py saves `{"model": state_dict, "optimizer": ..., "model_args": {n_layer,
n_head, n_embd, block_size, bias, vocab_size, dropout}, "iter_num", "best_val_loss",
"config"}` with `torch.save`. Its module names are GPT-2's in `nn.Linear` layout, i.e.
gptlab's, so no transpose is needed; keys saved from a `torch.compile`d model carry an
`_orig_mod.` prefix, which is stripped. nanoGPT uses the exact (erf) GELU, `nn.GELU()`
(gptlab's "gelu_exact"; gptlab's "gelu" is GPT-2's tanh approximation), and
`bias` switches the biases of every Linear and LayerNorm at once.

Nothing pickled is executed: `ckpt.pt` is read with `torch.load(weights_only=True)`, and
`meta.pkl` with an unpickler that refuses every class and function, so only pickle's
built-in containers and scalars (dict, list, str, int, ...) can appear.
"""

from __future__ import annotations

import io
import logging
import pickle
from pathlib import Path
from typing import Any

import torch

from gptlab.checks import is_int
from gptlab.errors import GptlabError
from gptlab.files import safe_torch_load
from gptlab.interop import layout

logger = logging.getLogger(__name__)

COMPILE_PREFIX = "_orig_mod."
CKPT_FILE = "ckpt.pt"  # what nanoGPT's train.py saves in its out_dir
_MODEL_ARGS = ("n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_size")


def read_nanogpt_checkpoint(ckpt_path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read a nanoGPT `ckpt.pt`: (gptlab ModelConfig fields, float32 state dict).

    The state dict, without `lm_head.weight` (tied to wte), is checked against the shapes
    model_args imply. An unreadable file, objects that need pickled code, missing
    model_args or model, or weights that do not fit raise GptlabError.
    """
    ckpt = _load_checkpoint(ckpt_path)
    if not isinstance(ckpt, dict) or "model_args" not in ckpt or "model" not in ckpt:
        raise GptlabError(
            f"{ckpt_path} is not a nanoGPT checkpoint: it needs the keys 'model_args' and "
            "'model' that nanoGPT's train.py saves"
        )
    args = ckpt["model_args"]
    missing = [k for k in _MODEL_ARGS if not isinstance(args, dict) or k not in args]
    if missing:
        raise GptlabError(f"{ckpt_path}: model_args lacks {', '.join(missing)}")
    fields = {
        **layout.size_fields(args, f"{ckpt_path}: model_args"),
        "dropout": float(args.get("dropout", 0.0)),
        "bias": bool(args["bias"]),
        "qkv_bias": bool(args["bias"]),
        "activation": "gelu_exact",  # nanoGPT's nn.GELU() is the exact (erf) GELU
        "pos_encoding": "learned",
        "tie_weights": True,
    }
    state = _nanogpt_state(ckpt["model"], ckpt_path)
    shapes = layout.expected_shapes(
        vocab_size=fields["vocab_size"], block_size=fields["block_size"],
        n_layer=fields["n_layer"], n_embd=fields["n_embd"],
        bias=fields["bias"], qkv_bias=fields["qkv_bias"], tie_weights=True,
    )
    layout.check_state_dict(state, shapes, str(ckpt_path))
    logger.info(
        "nanoGPT checkpoint %s: iter_num=%s best_val_loss=%s",
        ckpt_path, ckpt.get("iter_num"), _as_float(ckpt.get("best_val_loss")),
    )
    return fields, state


def _load_checkpoint(ckpt_path: Path) -> Any:
    if ckpt_path.is_dir():
        if (ckpt_path / CKPT_FILE).is_file():
            raise GptlabError(f"{ckpt_path} is nanoGPT's out_dir: pass the checkpoint in it, "
                              f"{ckpt_path / CKPT_FILE}")
        raise GptlabError(f"{ckpt_path} is a folder without a {CKPT_FILE}: pass the "
                          f"{CKPT_FILE} that nanoGPT's train.py wrote in its out_dir")
    if not ckpt_path.is_file():
        raise GptlabError(f"{ckpt_path} does not exist; pass nanoGPT's out_dir/ckpt.pt")
    return safe_torch_load(
        ckpt_path, what="checkpoint", allowed_globals=_numpy_scalar_globals(),
        refused_fix="If you trust the file, re-save only "
        "{'model': ckpt['model'], 'model_args': ckpt['model_args']} with torch.save",
    )


def _numpy_scalar_globals() -> list[Any]:
    """numpy scalars (e.g. a best_val_loss saved as np.float64) rebuilt without running code."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        return []
    core = getattr(np, "_core", None) or np.core  # numpy 2 renamed np.core to np._core
    scalar = core.multiarray.scalar
    dtypes = [type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool")]
    return [scalar, np.dtype, *dtypes]


def _nanogpt_state(model_state: Any, ckpt_path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(model_state, dict):
        raise GptlabError(f"{ckpt_path}: 'model' is not a state dict")
    state: dict[str, torch.Tensor] = {}
    for key, tensor in model_state.items():
        if not isinstance(tensor, torch.Tensor):
            raise GptlabError(f"{ckpt_path}: model entry {key!r} is not a tensor")
        name = key.removeprefix(COMPILE_PREFIX)
        if layout.is_mask_buffer(name):  # older nanoGPT saved the causal mask as attn.bias
            continue
        state[name] = tensor.to(torch.float32)
    head = state.pop("lm_head.weight", None)
    wte = state.get("transformer.wte.weight")
    if head is not None and wte is not None and not torch.equal(head, wte):
        raise GptlabError(
            f"{ckpt_path}: lm_head.weight differs from transformer.wte.weight, but nanoGPT "
            "ties them; the checkpoint was not written by nanoGPT's model.py"
        )
    return state


def _as_float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class _RefusedPickle(pickle.UnpicklingError):
    """A pickle that asks for a class or function (i.e. could run code)."""


class _PlainDataUnpickler(pickle.Unpickler):
    """Unpickles only pickle's built-in types; any class or function lookup is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise _RefusedPickle(f"refusing to load {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise _RefusedPickle("refusing a persistent id")


def read_nanogpt_meta(meta_path: Path) -> list[str]:
    """Read nanoGPT's char-level `meta.pkl` safely: `chars` with `chars[i] == itos[i]`, so
    that id i decodes to the character it did in nanoGPT.

    A file that needs any class or function to unpickle (nothing is run), or whose
    vocab_size / itos / stoi are not a consistent vocabulary, is a GptlabError.
    """
    try:
        data = meta_path.read_bytes()
    except OSError as exc:
        raise GptlabError(f"cannot read {meta_path}: {exc.strerror or exc}") from None
    try:
        meta = _PlainDataUnpickler(io.BytesIO(data)).load()
    except _RefusedPickle as exc:
        raise GptlabError(
            f"{meta_path} is not a plain-data meta.pkl ({exc}); gptlab loads only dicts, lists, "
            "strings and numbers from it"
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError,
            AttributeError, MemoryError) as exc:
        raise GptlabError(f"cannot read {meta_path}: truncated or corrupt pickle ({exc})") from None
    if not isinstance(meta, dict) or not {"vocab_size", "itos"} <= set(meta):
        raise GptlabError(f"{meta_path} needs the keys vocab_size and itos of nanoGPT's prepare.py")
    vocab_size, itos = meta["vocab_size"], meta["itos"]
    ok = (
        is_int(vocab_size)
        and isinstance(itos, dict)
        and sorted(itos) == list(range(vocab_size))
        and all(isinstance(c, str) and c for c in itos.values())
        and len(set(itos.values())) == vocab_size
    )
    if not ok:
        raise GptlabError(
            f"{meta_path}: itos must map every id 0..vocab_size-1 to a distinct string"
        )
    chars = [itos[i] for i in range(vocab_size)]
    stoi = meta.get("stoi")
    if stoi is not None and stoi != {c: i for i, c in enumerate(chars)}:
        raise GptlabError(f"{meta_path}: stoi is not the inverse of itos")
    return chars
