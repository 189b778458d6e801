"""Hugging Face GPT-2 folders ↔ gptlab models, without `transformers` at run time.

A Hugging Face GPT-2 folder is `config.json` plus `model.safetensors` (or the sharded
`model.safetensors.index.json`, or the older `pytorch_model.bin`, read with
`torch.load(weights_only=True)`). This module reads and writes those files directly; the
tests use `transformers.GPT2LMHeadModel` as the oracle.

Config mapping (GPT-2 name → gptlab `ModelConfig` field):
`vocab_size` → vocab_size, `n_positions` → block_size, `n_layer`, `n_head`, `n_embd` → same,
`resid_pdrop` → dropout, `activation_function` "gelu_new"/"gelu_pytorch_tanh" (GPT-2's tanh
approximation) → "gelu" and "gelu" (exact, erf) → "gelu_exact", `tie_word_embeddings` →
tie_weights; GPT-2 always has learned positions and biases everywhere. The weight mapping
is in `gptlab.interop.layout`.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import torch

from gptlab.errors import GptlabError
from gptlab.files import atomic_write, read_json, safe_torch_load, write_json
from gptlab.interop import layout

logger = logging.getLogger(__name__)

# Names that may be given instead of a folder: looked up in the Hugging Face cache, offline.
GPT2_NAMES: tuple[str, ...] = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")
GPT2_VOCAB_SIZE = 50257
GPT2_EOT_ID = 50256
LAYER_NORM_EPS = 1e-5

# HF activation_function ↔ gptlab activation (the names differ: see the module docstring).
_ACTIVATIONS_IN = {"gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "gelu": "gelu_exact"}
_ACTIVATIONS_OUT = {"gelu": "gelu_new", "gelu_exact": "gelu"}

# gptlab fields GPT-2 fixes, with the value it needs (export refuses anything else).
_GPT2_FIXED: dict[str, Any] = {
    "pos_encoding": "learned",
    "bias": True,
    "qkv_bias": True,
    "tie_weights": True,
    "norm": "layernorm",
    "qk_norm": False,
}
# gptlab fields that do not change what the weights compute, or that GPT-2 takes as is.
_FREE_FIELDS = {"vocab_size", "block_size", "n_layer", "n_head", "n_embd", "dropout", "attention"}

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


# ----------------------------------------------------------------------------- config


def model_fields_from_hf_config(hf_config: dict[str, Any], source: str) -> dict[str, Any]:
    """Map a parsed GPT-2 `config.json` (read from `source`) to gptlab `ModelConfig` fields.

    Raises:
        GptlabError: when the file is not GPT-2 (model_type) or uses settings gptlab's GPT
            cannot compute exactly; the message lists every such setting.
    """
    model_type = hf_config.get("model_type")
    if model_type != "gpt2":
        raise GptlabError(
            f"{source} has model_type {model_type!r}; gptlab imports only GPT-2 checkpoints "
            "(model_type 'gpt2')"
        )
    fields: dict[str, Any] = layout.size_fields(hf_config, source, block_size_key="n_positions")
    bad = _settings_gptlab_cannot_compute(hf_config, fields["n_embd"], fields["n_head"])
    if bad:
        raise GptlabError(
            f"{source} uses GPT-2 settings gptlab cannot reproduce exactly: {', '.join(bad)}"
        )
    fields.update(
        dropout=float(hf_config.get("resid_pdrop", 0.0)),
        bias=True,
        qkv_bias=True,
        activation=_ACTIVATIONS_IN[hf_config.get("activation_function", "gelu_new")],
        pos_encoding="learned",
        tie_weights=bool(hf_config.get("tie_word_embeddings", True)),
    )
    return fields


def _settings_gptlab_cannot_compute(
    hf_config: dict[str, Any], n_embd: int, n_head: int
) -> list[str]:
    """`name=value` of each GPT-2 setting whose value gptlab's GPT does not implement."""
    get = hf_config.get
    activation = get("activation_function", "gelu_new")
    epsilon = float(get("layer_norm_epsilon", LAYER_NORM_EPS))
    checks = {
        "activation_function": (activation in _ACTIVATIONS_IN, activation),
        "n_inner": (get("n_inner") in (None, 4 * n_embd), get("n_inner")),
        "layer_norm_epsilon": (
            math.isclose(epsilon, LAYER_NORM_EPS, rel_tol=1e-6), get("layer_norm_epsilon"),
        ),
        "scale_attn_weights": (get("scale_attn_weights", True) is True,
                               get("scale_attn_weights")),
        "scale_attn_by_inverse_layer_idx": (not get("scale_attn_by_inverse_layer_idx", False),
                                            get("scale_attn_by_inverse_layer_idx")),
        "add_cross_attention": (not get("add_cross_attention", False),
                                get("add_cross_attention")),
        "n_embd % n_head": (n_head > 0 and n_embd % n_head == 0, f"{n_embd} % {n_head}"),
    }
    return [f"{name}={value!r}" for name, (ok, value) in checks.items() if not ok]


def hf_config_from_model_fields(fields: dict[str, Any], *, gpt2_tokenizer: bool) -> dict[str, Any]:
    """Map `ModelConfig.to_dict()` to a GPT-2 `config.json` for `GPT2LMHeadModel`.

    With `gpt2_tokenizer` (the model's tokenizer is GPT-2's), bos/eos are 50256.

    Raises:
        GptlabError: listing every field GPT-2 cannot express, with its value and the value
            GPT-2 needs.
    """
    bad = [
        f"{name}={fields.get(name)!r} (GPT-2 needs {need!r})"
        for name, need in _GPT2_FIXED.items()
        if fields.get(name, need) != need
    ]
    activation = fields.get("activation")
    if activation not in _ACTIVATIONS_OUT:
        bad.append(f"activation={activation!r} (GPT-2 needs 'gelu' or 'gelu_exact')")
    unknown = sorted(set(fields) - set(_GPT2_FIXED) - _FREE_FIELDS - {"activation"})
    if unknown:
        logger.warning("export: ignoring model fields GPT-2 has no setting for: %s", unknown)
    if bad:
        raise GptlabError(
            "this model cannot be exported as GPT-2; incompatible fields: " + "; ".join(bad)
        )
    dropout = float(fields.get("dropout", 0.0))
    config: dict[str, Any] = {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": int(fields["vocab_size"]),
        "n_positions": int(fields["block_size"]),
        "n_ctx": int(fields["block_size"]),
        "n_embd": int(fields["n_embd"]),
        "n_layer": int(fields["n_layer"]),
        "n_head": int(fields["n_head"]),
        "n_inner": None,
        "activation_function": _ACTIVATIONS_OUT[activation],
        "resid_pdrop": dropout,
        "embd_pdrop": dropout,
        "attn_pdrop": dropout,
        "layer_norm_epsilon": LAYER_NORM_EPS,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True,
        "use_cache": True,
        "torch_dtype": "float32",
    }
    if gpt2_tokenizer and config["vocab_size"] > GPT2_EOT_ID:
        config["bos_token_id"] = config["eos_token_id"] = GPT2_EOT_ID
    return config


# ----------------------------------------------------------------------------- files


def hf_cache_roots() -> list[Path]:
    """Where the Hugging Face hub cache may be, in the order huggingface_hub looks."""
    if os.environ.get("HF_HUB_CACHE"):
        return [Path(os.environ["HF_HUB_CACHE"]).expanduser()]
    if os.environ.get("HF_HOME"):
        return [Path(os.environ["HF_HOME"]).expanduser() / "hub"]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    return [cache / "huggingface" / "hub"]


def resolve_hf_source(source: str | Path) -> Path:
    """A local GPT-2 folder, or a name such as `gpt2` found in the Hugging Face cache.

    Never touches the network. A name is looked up as `models--<name>` and
    `models--openai-community--<name>` under the cache root; the snapshot `refs/main` points
    to is preferred, else the newest complete one. A name not in the cache is a GptlabError
    that says how to download it.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    name = str(source)
    short = name.removeprefix("openai-community/")
    if short not in GPT2_NAMES:
        raise GptlabError(
            f"{name!r} is not a folder, nor one of the GPT-2 names {', '.join(GPT2_NAMES)}; "
            "pass a folder holding config.json and model.safetensors"
        )
    looked = []
    for root in hf_cache_roots():
        for repo in (short, f"openai-community/{short}"):
            repo_dir = root / ("models--" + repo.replace("/", "--"))
            looked.append(str(repo_dir))
            snapshot = _complete_snapshot(repo_dir)
            if snapshot is not None:
                logger.info("found %s in the Hugging Face cache: %s", name, snapshot)
                return snapshot
    raise GptlabError(
        f"{name} is not in the Hugging Face cache (looked in {', '.join(looked)}); download it "
        f"once with `hf download openai-community/{short} config.json model.safetensors` "
        "(pip install huggingface_hub) or pass a local folder"
    )


def _complete_snapshot(repo_dir: Path) -> Path | None:
    snapshots = repo_dir / "snapshots"
    if not snapshots.is_dir():
        return None
    candidates = []
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        candidates.append(snapshots / ref.read_text().strip())
    others = sorted(snapshots.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
    candidates += [p for p in others if p not in candidates]
    for snapshot in candidates:
        has_weights = any((snapshot / f).exists() for f in WEIGHT_FILES)
        if (snapshot / "config.json").is_file() and has_weights:
            return snapshot
    return None


def read_hf_dir(hf_dir: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read a GPT-2 folder: (gptlab ModelConfig fields, gptlab-layout float32 state dict).

    The state dict is checked key by key and shape by shape against the config; a tied
    `lm_head.weight` present in the file must equal `wte` and is dropped. Missing, corrupt
    or unfitting files, and pickles that need code, raise GptlabError.
    """
    config_path = hf_dir / "config.json"
    if not config_path.is_file():
        raise GptlabError(f"{hf_dir} has no config.json: not a Hugging Face model folder")
    hf_config = read_json(config_path)
    if not isinstance(hf_config, dict):
        raise GptlabError(f"{config_path} is not a JSON object")
    fields = model_fields_from_hf_config(hf_config, str(config_path))
    hf_state, weights_path = _read_hf_weights(hf_dir)
    state = {k: v.to(torch.float32) for k, v in layout.hf_to_gptlab(hf_state).items()}
    if fields["tie_weights"] and "lm_head.weight" in state:
        head = state.pop("lm_head.weight")
        wte = state.get("transformer.wte.weight")
        if wte is None or head.shape != wte.shape or not torch.equal(head, wte):
            raise GptlabError(
                f"{weights_path} has an lm_head.weight that differs from wte while "
                "config.json says tie_word_embeddings; set it to false in config.json"
            )
    shapes = layout.expected_shapes(
        vocab_size=fields["vocab_size"], block_size=fields["block_size"],
        n_layer=fields["n_layer"], n_embd=fields["n_embd"], tie_weights=fields["tie_weights"],
    )
    layout.check_state_dict(state, shapes, str(weights_path))
    return fields, state


def _read_hf_weights(hf_dir: Path) -> tuple[dict[str, torch.Tensor], Path]:
    for name in WEIGHT_FILES:
        path = hf_dir / name
        if not path.is_file():
            continue
        if name == "model.safetensors.index.json":
            return _read_sharded(path), path
        if name.endswith(".safetensors"):
            return read_safetensors(path), path
        return read_torch_weights(path), path
    raise GptlabError(
        f"{hf_dir} has no weights file (looked for {', '.join(WEIGHT_FILES)}); download "
        "model.safetensors next to config.json"
    )


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file on CPU; a truncated or corrupt file is a GptlabError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise GptlabError(
            f"cannot read {path}: truncated or corrupt safetensors file ({exc}); download it again"
        ) from None


def read_torch_weights(path: Path) -> dict[str, torch.Tensor]:
    """Load a PyTorch state dict with `weights_only=True`: no pickled code ever runs."""
    state = safe_torch_load(
        path, corrupt_fix="download it again",
        refused_fix="Convert it to model.safetensors in an environment you trust",
    )
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise GptlabError(f"{path} is not a state dict (a mapping of names to tensors)")
    return state


def _read_sharded(index_path: Path) -> dict[str, torch.Tensor]:
    index = read_json(index_path)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict):
        raise GptlabError(f"{index_path} is not a safetensors index (no 'weight_map')")
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = index_path.parent / shard
        if not shard_path.is_file():
            raise GptlabError(f"{index_path} names {shard}, which is missing; download it")
        state.update(read_safetensors(shard_path))
    return state


def write_hf_dir(
    out_dir: Path, hf_config: dict[str, Any], hf_state: dict[str, torch.Tensor]
) -> None:
    """Write config.json + model.safetensors into the (new, empty) folder `out_dir`."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "config.json", hf_config)
    atomic_write(
        out_dir / "model.safetensors",
        lambda tmp: save_file(hf_state, str(tmp), metadata={"format": "pt"}),
    )
