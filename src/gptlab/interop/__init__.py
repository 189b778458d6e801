"""Moving models between gptlab and other tools: Hugging Face GPT-2 folders and nanoGPT checkpoints.

- `gptlab.interop.layout`: GPT-2's key names, shapes and Conv1D transposes on plain state dicts.
- `gptlab.interop.hf`: Hugging Face GPT-2 config.json + safetensors/bin, read and written
  directly (no `transformers` needed), and offline lookup of `gpt2`... in the HF cache.
- `gptlab.interop.nanogpt`: nanoGPT's ckpt.pt and meta.pkl, read without running pickled code.
- `gptlab.interop.runs`: the entry points below, between those formats and run folders.

See docs/interop.md for the full key mapping.
"""

from gptlab.interop.runs import Pretrained, export_hf, import_hf, import_nanogpt, load_pretrained

__all__ = ["Pretrained", "export_hf", "import_hf", "import_nanogpt", "load_pretrained"]
