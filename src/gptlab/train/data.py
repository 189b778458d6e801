"""The trainer's data side: find (or prepare) the dataset a config names, and check it.

A run trains on a prepared dataset folder (`gptlab prepare`: train.bin, val.bin, meta.json,
tokenizer.json); batches come from `gptlab.data.RandomBatches`, seed 001's get_batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gptlab.errors import GptlabError
from gptlab.tokenizers import Tokenizer
from gptlab.train.config import TrainConfig
from gptlab.train.distributed import DistInfo
from gptlab.train.evaluate import text_per_token

log = logging.getLogger(__name__)


@dataclass
class TrainingData:
    """A prepared dataset folder, its meta.json and tokenizer, ready to train on; `facts` is
    the "data" section of the run's config.json (`data_facts`)."""

    dir: Path
    meta: dict[str, Any]
    tokenizer_path: Path
    tokenizer: Tokenizer
    facts: dict[str, Any]


def load_training_data(config: TrainConfig, run_dir: Path, dist: DistInfo) -> TrainingData:
    """The dataset `config` names, prepared if needed (by rank 0 while the others wait).

    Raises:
        GptlabError: not a prepared dataset, or its tokenizer and meta.json disagree.
        CorruptFileError: a file of it fails its checksum (`verify_dataset`).
    """
    from gptlab.data import load_meta
    from gptlab.data.dataset import verify_dataset
    from gptlab.tokenizers import load_tokenizer

    # Rank 0 prepares the dataset first; the others then find it ready.
    if not dist.is_main:
        torch.distributed.barrier()
    data_dir = prepared_dataset_dir(config, run_dir)
    if dist.enabled and dist.is_main:
        torch.distributed.barrier()
    meta = load_meta(data_dir)
    tokenizer_path = data_dir / meta.get("tokenizer_file", "tokenizer.json")
    tokenizer = load_tokenizer(tokenizer_path)
    if tokenizer.vocab_size != meta.get("vocab_size"):
        raise GptlabError(
            f"{tokenizer_path} has {tokenizer.vocab_size} tokens but the dataset's "
            f"meta.json says {meta.get('vocab_size')}: the folder mixes two datasets; "
            "prepare it again with --force"
        )
    verify_dataset(data_dir)  # after the checks above, which name a mix-up more precisely
    facts = data_facts(data_dir, meta, tokenizer)
    return TrainingData(data_dir, meta, tokenizer_path, tokenizer, facts)


def prepared_dataset_dir(config: TrainConfig, run_dir: Path) -> Path:
    """The prepared dataset folder for a config.

    --data is used as is; --input is prepared into RUN_DIR/data (so the run folder is
    self-contained); a built-in --dataset is prepared once into the corpus cache. Both are
    reused while their source is unchanged.
    """
    from gptlab.data import cache_dir, prepare

    if config.data:
        data_dir = Path(config.data).expanduser()
        if not (data_dir / "meta.json").is_file():
            raise GptlabError(
                f"--data {data_dir} is not a prepared dataset (no meta.json): run "
                f"`gptlab prepare --input TEXT --out {data_dir}` first"
            )
        return data_dir
    # fine-tuning encodes the new text with the tokenizer the weights were trained with
    init_tok: Path | None = Path(config.init_from) / "tokenizer.json"
    if config.init_from == "scratch" or not init_tok.is_file():
        init_tok = None
    if config.input:
        source, out = str(Path(config.input).expanduser()), Path(run_dir) / "data"
    elif init_tok is None:
        source = config.dataset
        out = cache_dir() / "datasets" / f"{config.dataset}-{config.tokenizer}"
    else:  # a built-in corpus in another run's tokenizer: not shared through the cache
        source, out = config.dataset, Path(run_dir) / "data"
    log.info("preparing %s (tokenizer: %s) in %s", source, init_tok or config.tokenizer, out)
    prepare(source, out, tokenizer=config.tokenizer, force=True, tokenizer_file=init_tok)
    return out


def data_facts(data_dir: Path, meta: dict[str, Any], tokenizer: Tokenizer) -> dict[str, Any]:
    """The "data" section of a run's config.json, with characters and bytes per val token."""
    from gptlab.data import load_split

    chars, nbytes = text_per_token(tokenizer, load_split(data_dir, "val"))
    copied = ("source", "tokenizer", "vocab_size", "train_tokens", "val_tokens", "source_sha256")
    return {"dir": str(Path(data_dir).resolve()), **{k: meta.get(k) for k in copied},
            "val_chars_per_token": chars, "val_bytes_per_token": nbytes}
