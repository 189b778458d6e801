"""TrainConfig, the presets, and how a run's configuration is resolved.

A run's configuration has two parts: the model's (`gptlab.model.ModelConfig` fields) and the
trainer's (`TrainConfig` fields, named as nanoGPT names them). They are resolved in this
order, each step overriding the one before:

    preset (default "cpu-quick")  <  --config FILE (TOML)  <  command-line flags

A TOML file may be flat (`max_iters = 500`, `n_layer = 4`) or use `[model]` / `[train]`
tables, and may name its base preset (`preset = "lecture"`). Config files are parsed as
data, never executed.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gptlab.checks import is_int, is_number
from gptlab.errors import ConfigError
from gptlab.runtime import Dtype
from gptlab.tokenizers import TokenizerKind

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


Optimizer = Literal["adamw", "muon"]
LrSchedule = Literal["cosine", "wsd"]

# wsd's default cooldown: the last fifth of the steps after warmup (Hägele et al. 2024 find
# a 20% cooldown matches a cosine schedule of the same length)
WSD_COOLDOWN = 0.2


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """How to train: data, optimisation, evaluation, checkpoints, hardware."""

    # data
    dataset: str = _f("shakespeare", "built-in corpus to train on (prepared on first use)")
    data: str | None = _f(None, "prepared dataset folder (from `gptlab prepare`); wins "
                          "over --dataset and --input")
    input: str | None = _f(None, "a text file to prepare and train on (with --tokenizer)")
    tokenizer: TokenizerKind = _f("char", "tokenizer kind used when preparing --dataset or "
                                  "--input")
    # optimisation
    batch_size: int = _f(12, "sequences per micro-batch (per process)")
    gradient_accumulation_steps: int = _f(1, "micro-batches per optimizer step, split "
                                          "across processes under torchrun")
    max_iters: int = _f(2000, "optimizer steps to train for")
    time: str | None = _f(None, "wall-time budget, e.g. 90s, 5m or 1h: picks the model shape, "
                          "batch, steps and schedule that train best in that time on this "
                          "machine (flags you give win; not with --max-iters)")
    learning_rate: float = _f(1e-3, "peak learning rate")
    decay_lr: bool = _f(True, "linear warmup then decay to min_lr (else constant)")
    lr_schedule: LrSchedule = _f("cosine", "decay after warmup: cosine, or wsd (constant, "
                                 "then a linear cooldown from --lr-decay-start)")
    warmup_iters: int = _f(100, "steps of linear warmup")
    lr_decay_iters: int | None = _f(None, "step where the decay reaches min_lr "
                                    "(default: max_iters)")
    lr_decay_start: int | None = _f(None, "wsd: step where the cooldown begins (default: "
                                    "the last 20%% of the steps after warmup)")
    min_lr: float = _f(1e-4, "learning-rate floor of the decay")
    weight_decay: float = _f(0.1, "AdamW weight decay, applied to weight matrices only")
    decay_embeddings: bool = _f(True, "apply weight decay to the embedding tables too")
    beta1: float = _f(0.9, "AdamW beta1")
    beta2: float = _f(0.99, "AdamW beta2")
    optimizer: Optimizer = _f(
        "adamw", "adamw, or muon: Muon (torch.optim.Muon) for the transformer blocks' weight "
        "matrices with AdamW for the rest, both at learning_rate")
    grad_clip: float = _f(1.0, "clip the gradient norm to this (0: no clipping)")
    seed: int = _f(1337, "seed for weights, batches and dropout")
    init_from: str = _f("scratch", "'scratch' or a run folder whose weights to start from "
                        "(fine-tuning)")
    # evaluation, logging, checkpoints
    eval_interval: int = _f(250, "evaluate (and checkpoint) every this many steps")
    eval_iters: int = _f(20, "batches per split in each evaluation")
    early_stop: int = _f(0, "stop once this many evaluations in a row miss the best val "
                         "loss (0: never)")
    log_interval: int = _f(1, "write a train-loss line to metrics.jsonl every this many steps")
    keep_last: int = _f(2, "resumable checkpoints to keep (plus best.safetensors)")
    sample_tokens: int = _f(200, "tokens to sample at the end of training (0: none)")
    tensorboard: bool = _f(False, "also log to RUN_DIR/tensorboard (needs tensorboard)")
    # hardware
    device: str = _f("auto", "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    dtype: Dtype = _f(
        "auto", "autocast dtype: auto is bfloat16 on CUDA where supported, else float32")
    compile: bool = _f(False, "torch.compile the model")

    def __post_init__(self) -> None:
        positive = ("batch_size", "gradient_accumulation_steps", "eval_interval",
                    "eval_iters", "log_interval", "keep_last")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be at least 1")
        for name in ("max_iters", "warmup_iters", "sample_tokens", "early_stop"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 0")
        for name in ("learning_rate", "min_lr", "weight_decay", "grad_clip"):
            if not 0 <= getattr(self, name) < math.inf:  # also refuses nan
                raise ConfigError(f"{name}={getattr(self, name)} must be a finite number >= 0")
        if not 0 <= self.seed < 2**63:
            raise ConfigError(f"seed={self.seed} must be in [0, 2**63)")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be in [0, 1)")
        if self.min_lr > self.learning_rate and self.decay_lr:
            raise ConfigError(
                f"min_lr={self.min_lr} is above learning_rate={self.learning_rate}; "
                "lower --min-lr"
            )
        if self.lr_decay_start is not None:
            if self.lr_schedule != "wsd":
                raise ConfigError("lr_decay_start is the wsd schedule's: add --lr-schedule "
                                  "wsd, or drop --lr-decay-start")
            if not self.warmup_iters <= self.lr_decay_start <= self.decay_iters:
                raise ConfigError(
                    f"lr_decay_start={self.lr_decay_start} must lie between warmup_iters="
                    f"{self.warmup_iters} and the decay's end ({self.decay_iters})")
        if self.time is not None:
            from gptlab.train.budget import parse_duration

            parse_duration(self.time)
        for name, tp in field_types(TrainConfig).items():
            if typing.get_origin(tp) is Literal:
                check_choice(name, getattr(self, name), tp)

    @property
    def decay_iters(self) -> int:
        """The step where the schedule reaches min_lr."""
        return self.max_iters if self.lr_decay_iters is None else self.lr_decay_iters

    @property
    def decay_start(self) -> int:
        """wsd: the step where the linear cooldown begins (`lr_decay_start`, or the last
        `WSD_COOLDOWN` of the steps between warmup and the decay's end)."""
        if self.lr_decay_start is not None:
            return self.lr_decay_start
        span = max(0, self.decay_iters - self.warmup_iters)
        return self.decay_iters - round(WSD_COOLDOWN * span)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a dict (as saved in config.json); unknown keys are a ConfigError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown train setting {unknown[0]!r}{_suggest(unknown[0], names)}")
        return cls(**{k: coerce_type(field_types(cls)[k], v, k) for k, v in d.items()})


@dataclass(frozen=True)
class Preset:
    """A named starting configuration and where its numbers come from."""

    name: str
    source: str
    description: str
    model: dict[str, Any]
    train: dict[str, Any]


# The lecture's model. attention="fused" computes exactly the lecture's per-head attention
# (same parameters, same state-dict keys, same maths; the model tests pin the two equal),
# only faster (docs/benchmarks.md); --attention reference runs the per-head modules.
_LECTURE_MODEL = dict(activation="relu", attention="fused", pos_encoding="learned",
                      bias=True, qkv_bias=False, tie_weights=False)
# torch.optim.AdamW's defaults as the seeds use them: betas (0.9, 0.999), decay 0.01, at a
# constant learning rate without clipping; 5000 steps, each estimate over 200 batches.
_LECTURE_TRAIN = dict(max_iters=5000, eval_iters=200, decay_lr=False, warmup_iters=0,
                      weight_decay=0.01, beta1=0.9, beta2=0.999, grad_clip=0.0, seed=1337)
# nanoGPT's shakespeare-char model: exact GELU, no biases, tied embeddings, learned
# positions; cpu-quick and speedrun differ only in depth.
_NANOGPT_MODEL = dict(block_size=64, n_head=4, n_embd=128, dropout=0.0,
                      activation="gelu_exact", bias=False, qkv_bias=False, tie_weights=True,
                      pos_encoding="learned")

# --time's seed-1337 plans of docs/time-budget.md (2 AVX-512/AMX cores, bf16), frozen:
# minutes, (layers, channels, block, batch), steps, warmup, steps between evaluations, val.
_TIME_PRESETS = (
    (1, (3, 128, 64, 16), 1852, 93, 1852, "1.6167 in 58.9 s with --dtype bfloat16"),
    (5, (4, 192, 128, 8), 4544, 100, 4544, "1.4676 in 298.9 s with --dtype bfloat16"),
    (10, (4, 192, 128, 8), 9137, 100, 913, "1.4617 in 599.3 s with --dtype bfloat16"),
)


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset(
        "lecture-small",
        "seed 001 (the 'build a GPT' lecture's reference gpt.py)",
        "the lecture's exact 0.21M-parameter model: batch 16, block 32, 64 channels, 4 heads, "
        "4 layers, ReLU, learned positions, AdamW lr 1e-3 constant, 5000 steps, eval every 100 "
        "over 200 batches",
        dict(block_size=32, n_layer=4, n_head=4, n_embd=64, dropout=0.0, **_LECTURE_MODEL),
        dict(batch_size=16, learning_rate=1e-3, eval_interval=100, **_LECTURE_TRAIN),
    ),
    Preset(
        "lecture",
        "seed 003 (the lecture's larger configuration)",
        "10.8M parameters: batch 64, block 256, 384 channels, 6 heads, 6 layers, dropout 0.2, "
        "lr 3e-4 constant, 5000 steps, eval every 500 over 200 batches (GPU-sized)",
        dict(block_size=256, n_layer=6, n_head=6, n_embd=384, dropout=0.2, **_LECTURE_MODEL),
        dict(batch_size=64, learning_rate=3e-4, eval_interval=500, **_LECTURE_TRAIN),
    ),
    Preset(
        "cpu-quick",
        "nanoGPT README's CPU recipe (config/train_shakespeare_char.py, shrunk for a laptop)",
        "nanoGPT's 0.8M model, char-level Shakespeare in about 2 minutes on 2 CPU cores: batch 12, "
        "block 64, 4 layers, 4 heads, 128 channels, no dropout, lr 1e-3 warmup 100 cosine to "
        "1e-4 over 2000 steps",
        dict(_NANOGPT_MODEL, n_layer=4),
        dict(batch_size=12, max_iters=2000, learning_rate=1e-3, decay_lr=True, warmup_iters=100,
             lr_decay_iters=2000, min_lr=1e-4, weight_decay=0.1, beta1=0.9, beta2=0.99,
             grad_clip=1.0, eval_interval=250, eval_iters=20),
    ),
    Preset(
        "speedrun",
        "gptlab's own search on 2-core CPUs (docs/benchmarks.md, Training)",
        "the quickest recipe found to val loss < 1.88 on char Shakespeare, with margin: "
        "nanoGPT's model cut to 3 layers, batch 16 x block 64, Muon + AdamW at lr 1.2e-2 "
        "(warmup 30, cosine to 1.2e-3) for 500 steps, evaluation only at the start and end",
        dict(_NANOGPT_MODEL, n_layer=3),
        dict(batch_size=16, max_iters=500, optimizer="muon", learning_rate=1.2e-2, decay_lr=True,
             warmup_iters=30, lr_decay_iters=500, min_lr=1.2e-3, weight_decay=0.1, beta1=0.9,
             beta2=0.99, grad_clip=1.0, eval_interval=500, eval_iters=50),
    ),
    *(Preset(
        f"cpu-{minutes}m",
        f"gptlab train --time {minutes}m on 2 CPU cores (docs/time-budget.md)",
        f"what --time {minutes}m planned for char Tiny Shakespeare on a 2-core CPU: "
        f"{layers} layers x {embd} channels, block {block}, batch {batch}, Muon + AdamW lr "
        f"1.2e-2 (warmup {warmup}) cosine to 1.2e-4 over {steps} steps, "
        + ("one evaluation at the end" if interval >= steps else
           f"an evaluation every {interval} steps with early stopping (2)") + f": val {val}",
        dict(_NANOGPT_MODEL, n_layer=layers, n_embd=embd, n_head=embd // 32, block_size=block),
        dict(batch_size=batch, max_iters=steps, optimizer="muon", learning_rate=1.2e-2,
             decay_lr=True, warmup_iters=warmup, lr_decay_iters=steps, min_lr=1.2e-4,
             weight_decay=0.1, beta1=0.9, beta2=0.99, grad_clip=1.0, eval_interval=interval,
             eval_iters=20, early_stop=0 if interval >= steps else 2),
    ) for minutes, (layers, embd, block, batch), steps, warmup, interval, val in _TIME_PRESETS),
    Preset(
        "finetune",
        "nanoGPT's config/finetune_shakespeare.py, adapted",
        "continue training a run's weights (set --init-from RUN_DIR, e.g. imported GPT-2) on "
        "new text: small constant lr 3e-5, dropout 0.1, 200 steps of batch 8 x 4 accumulation",
        dict(dropout=0.1),
        dict(batch_size=8, gradient_accumulation_steps=4, max_iters=200, learning_rate=3e-5,
             decay_lr=False, warmup_iters=0, weight_decay=0.0, eval_interval=50, eval_iters=20,
             init_from="scratch"),
    ),
)}

DEFAULT_PRESET = "cpu-quick"
TIME_PRESET = "speedrun"  # the base of a --time run: its recipe, scaled to the budget


# ---------------------------------------------------------------------------- field typing


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """Resolved type hints of a dataclass's fields."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _suggest(name: str, names: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(names), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def parse_text(tp: Any, text: str, name: str) -> Any:
    """Parse a command-line string as a value of field type `tp` (e.g. "1e-3" -> 0.001)."""
    base, optional = _unwrap_optional(tp)
    if optional and text.lower() in ("none", "null", ""):
        return None
    try:
        if base is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if base is int:
            value = float(text) if ("e" in text.lower() or "." in text) else int(text)
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if base is float:
            return float(text)
    except ValueError:
        kind = {bool: "true or false", int: "an integer", float: "a number"}[base]
        raise ConfigError(f"--{name.replace('_', '-')}={text!r} is not {kind}") from None
    return coerce_type(tp, text, name)


def coerce_type(tp: Any, value: Any, name: str) -> Any:
    """Check a value (from TOML or JSON) against field type `tp`, converting int -> float."""
    base, optional = _unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{name} cannot be empty")
    if typing.get_origin(base) is Literal:
        check_choice(name, value, base)
        return value
    ok = {
        bool: isinstance(value, bool),
        int: is_int(value),
        float: is_number(value),
        str: isinstance(value, str),
    }.get(base, True)
    if not ok:
        raise ConfigError(f"{name}={value!r} must be of type {getattr(base, '__name__', base)}")
    return float(value) if base is float else value


def check_choice(name: str, value: Any, literal: Any) -> None:
    """Refuse a value that is not one of a `Literal` type's choices."""
    choices = typing.get_args(literal)
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not one of: {', '.join(map(str, choices))}")


# ---------------------------------------------------------------------------- resolution


def model_config_class() -> type:
    from gptlab.model import ModelConfig

    return ModelConfig


def split_settings(settings: dict[str, Any], source: str) -> tuple[dict, dict]:
    """Split flat settings into (model, train) dicts by field name; unknown names fail."""
    model_types = field_types(model_config_class())
    train_types = field_types(TrainConfig)
    model, train = {}, {}
    for key, value in settings.items():
        hints = model_types if key in model_types else train_types
        if key not in hints:
            known = list(model_types) + list(train_types)
            hint = _suggest(key, known) or " (`gptlab train --help` lists every setting)"
            raise ConfigError(f"{source}: unknown setting {key!r}{hint}")
        try:
            value = coerce_type(hints[key], value, key)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        (model if hints is model_types else train)[key] = value
    return model, train


def _config_folder_message(path: Path) -> str:
    """Why `--config FOLDER` is refused, and what the user probably meant."""
    if (path / "config.json").is_file():  # a run folder
        return (f"--config {path} is a run folder, but --config takes a TOML file of "
                f"settings: continue that run with --out {path} --resume, or start from its "
                f"weights with --init-from {path}")
    return (f"--config {path} is a folder: pass a TOML file of settings (lines such as "
            "`n_layer = 4`, flat or in [model] / [train] tables)")


def load_config_file(path: Path) -> tuple[str | None, dict[str, Any], dict[str, Any]]:
    """Read a TOML config file: (the preset it names or None, model settings, train settings)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(_config_folder_message(path))
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    preset = doc.pop("preset", None)
    if preset is not None and not isinstance(preset, str):
        raise ConfigError(f"{path}: preset must be a string, got {preset!r}")
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        if key in ("model", "train") and isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    model, train = split_settings(flat, str(path))
    return preset, model, train


def resolve_config(
    preset: str | None = None,
    config_path: Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> tuple[str, dict[str, Any], TrainConfig]:
    """Resolve preset < config file < overrides.

    Args:
        preset: preset name (None: the file's `preset`, else "cpu-quick").
        overrides: flat field -> value (already typed), e.g. from command-line flags.

    Returns:
        (preset name, model settings dict (ModelConfig fields; vocab_size is filled from
        the dataset later), TrainConfig).
    """
    file_preset, file_model, file_train = (None, {}, {})
    if config_path is not None:
        file_preset, file_model, file_train = load_config_file(config_path)
    over_model, over_train = split_settings(dict(overrides or {}), "command line")
    timed = over_train.get("time", file_train.get("time")) is not None
    name = preset or file_preset or (TIME_PRESET if timed else DEFAULT_PRESET)
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}{_suggest(name, PRESETS)}; choose one of: "
                          + ", ".join(PRESETS))
    base = PRESETS[name]
    model = {**base.model, **file_model, **over_model}
    train = TrainConfig(**{**base.train, **file_train, **over_train})
    return name, model, train


def pinned_settings(
    preset: str | None = None,
    config_path: Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> set[str]:
    """The settings a user chose, which `--time` keeps: those of the config file and the
    flags, and, for a preset named explicitly, its model and batch size (the budget then
    plans that model's steps and schedule)."""
    file_preset, file_model, file_train = (None, {}, {})
    if config_path is not None:
        file_preset, file_model, file_train = load_config_file(config_path)
    pinned = set(file_model) | set(file_train) | set(overrides or {})
    name = preset or file_preset
    if name in PRESETS:
        pinned |= set(PRESETS[name].model) | {"batch_size"}
    return pinned - {"time"}


def resolve_resume_config(
    run_dir: Path,
    overrides: dict[str, Any] | None = None,
    preset: str | None = None,
    config_path: Path | None = None,
) -> tuple[dict[str, Any], TrainConfig]:
    """The settings to resume a run with: its saved config.json < overrides.

    The policy: a resumed run keeps its saved settings, so no preset or config file; the
    model's shape is in its weights, so no model setting but dropout may change; the
    optimizer's state is in its checkpoint, so the optimizer may not change either. Each
    refusal is a ConfigError.

    Args:
        overrides: as for `resolve_config`.
        preset, config_path: what the user passed with --resume (refused if set).

    Returns:
        (model settings dict, TrainConfig).
    """
    from gptlab.checkpoint import read_run_config

    if preset or config_path:
        raise ConfigError("--resume continues with the run's saved settings: drop --preset "
                          "and --config (pass changes as flags, e.g. --max-iters)")
    saved = read_run_config(run_dir)
    over_model, over_train = split_settings(dict(overrides or {}), "command line")
    changed = sorted(k for k, v in over_model.items()
                     if k != "dropout" and saved["model"].get(k) != v)
    if changed:
        raise ConfigError(f"--{changed[0].replace('_', '-')} cannot change when resuming "
                          "(the weights have that shape): start a new run instead")
    saved_optimizer = saved.get("train", {}).get("optimizer", "adamw")
    if over_train.get("optimizer", saved_optimizer) != saved_optimizer:
        raise ConfigError(f"--optimizer cannot change when resuming (the run's optimizer "
                          f"state is {saved_optimizer}'s): start a new run, or --init-from "
                          "this run's weights")
    model = {**saved["model"], **over_model}
    return model, TrainConfig.from_dict({**saved.get("train", {}), **over_train})
