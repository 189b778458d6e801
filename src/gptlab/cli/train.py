"""`gptlab train`: train a GPT into a run folder (or resume one)."""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import time
import typing
from pathlib import Path
from typing import Any, Literal

from gptlab.cli.options import add_option, new_command
from gptlab.errors import ConfigError, GptlabError

DESCRIPTION = """\
Train a GPT language model into a run folder (--out DIR): config.json, tokenizer.json,
model.safetensors (latest), best.safetensors (best val loss), metrics.jsonl, state/.

Settings come from a preset (default cpu-quick), then a TOML --config file, then flags;
every model and training setting is a flag (--max-iters 50 or --max_iters=50).
With no arguments it trains cpu-quick on the built-in Shakespeare corpus (prepared on
first use). Ctrl-C (or SIGTERM) saves a checkpoint; continue with --out DIR --resume.
Several processes: torchrun --nproc_per_node=N -m gptlab train ...

examples:
  gptlab train --out runs/quick
  gptlab train --preset lecture-small --out runs/lecture-small
  gptlab train --input my.txt --tokenizer bpe --max-iters 1000 --out runs/mine
  gptlab train --out runs/quick --resume --max-iters 4000
  gptlab train --time 5m --out runs/five    # the best model this machine trains in 5 min
"""


def _setting_fields() -> list[tuple[str, Any, str, Any]]:
    """(name, type, help, built-in default) of each ModelConfig and TrainConfig field."""
    from gptlab.train.config import TrainConfig, field_types, model_config_class

    out = []
    for cls in (model_config_class(), TrainConfig):
        types = field_types(cls)
        for f in dataclasses.fields(cls):
            default = None if f.default is dataclasses.MISSING else f.default
            out.append((f.name, types[f.name], f.metadata["help"], default))
    return out


def _metavar(name: str, tp: Any) -> dict[str, Any]:
    """How a setting's flag shows its value: BOOL, {choice,...} for a Literal, else NAME."""
    if tp is bool:
        return dict(nargs="?", const="true", metavar="BOOL")
    if typing.get_origin(tp) is Literal:  # checked by parse_text, in one line
        return dict(metavar="{" + ",".join(map(str, typing.get_args(tp))) + "}")
    return dict(metavar=name.upper())


def add_parser(subparsers) -> None:
    from gptlab.train.config import DEFAULT_PRESET, PRESETS, resolve_config

    p = new_command(subparsers, "train", help="train a model (or resume a run)",
                    description=DESCRIPTION)
    add_option(p, "preset", default=None, choices=list(PRESETS),
               help=f"starting configuration (None: {DEFAULT_PRESET}); see --list-presets")
    add_option(p, "config", type=Path, default=None, metavar="FILE",
               help="TOML file of settings (flat, or [model] / [train] tables)")
    add_option(p, "out", default=None, metavar="RUN_DIR",
               help="run folder to create (None: runs/PRESET-YYYYMMDD-HHMMSS)")
    add_option(p, "resume", action="store_true",
               help="continue the run in --out from its latest checkpoint and saved settings")
    add_option(p, "list_presets", action="store_true", help="list presets and exit")
    add_option(p, "no_progress", action="store_true", help="hide the progress bar")
    _, base_model, base_train = resolve_config(DEFAULT_PRESET)
    base = {**base_model, **base_train.to_dict()}
    group = p.add_argument_group(
        "settings", f"model and training settings (values shown are {DEFAULT_PRESET}'s)")
    for name, tp, help_text, default in _setting_fields():
        shown = f" [{base.get(name, default)}]"
        add_option(group, name, default=argparse.SUPPRESS, help=help_text + shown,
                   **_metavar(name, tp))
    p.set_defaults(func=run)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    from gptlab.train.config import parse_text

    return {name: parse_text(tp, getattr(args, name), name)
            for name, tp, _, _ in _setting_fields() if hasattr(args, name)}


def run(args: argparse.Namespace) -> int:
    from gptlab.runtime import keep_freed_memory, resolve_device
    from gptlab.train import resolve_config, train
    from gptlab.train.budget import process_start_time
    from gptlab.train.config import PRESETS, pinned_settings, resolve_resume_config

    if args.list_presets:
        for preset in PRESETS.values():
            print(f"{preset.name}\n  {preset.description}\n  source: {preset.source}")
        return 0
    started = process_start_time()
    overrides = _overrides(args)
    pinned: set[str] = set()
    name = None
    if args.resume:
        if not args.out:
            raise ConfigError("--resume needs --out RUN_DIR naming the run to continue")
        run_dir = Path(args.out)
        model, config = resolve_resume_config(run_dir, overrides, args.preset, args.config)
    else:
        name, model, config = resolve_config(args.preset, args.config, overrides)
        pinned = pinned_settings(args.preset, args.config, overrides)
        run_dir = Path(args.out or f"runs/{name}-{time.strftime('%Y%m%d-%H%M%S')}")
    if resolve_device(config.device) == "cpu":
        keep_freed_memory()  # the CLI owns the process: reuse freed buffers between steps
    existed = run_dir.exists()
    fresh = not args.resume and (not existed or (run_dir.is_dir() and not any(run_dir.iterdir())))
    try:
        result = train(run_dir, model, config, resume=args.resume, progress=not args.no_progress,
                       pinned=pinned, started=started)
    except (GptlabError, KeyboardInterrupt):
        if fresh:
            _remove_unfinished_run(run_dir, keep_folder=existed)
        raise
    if result.is_main:
        _report(result, time.time() - started, name)
    return 0


def _remove_unfinished_run(run_dir: Path, keep_folder: bool) -> None:
    """Undo a new run that failed before its first checkpoint (bad data, a missing extra,
    ...), so that the same command can simply be run again once the cause is fixed."""
    from gptlab import checkpoint as ckpt

    if not run_dir.is_dir() or ckpt.latest_checkpoint_dir(run_dir) is not None or any(
        run_dir.glob("*.safetensors")
    ):
        return
    if not keep_folder:
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    for entry in run_dir.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _report(result, whole_s: float, preset: str | None) -> None:
    err = sys.stderr
    if result.step == result.start_step and result.start_step >= result.max_iters:
        print(f"{result.run_dir} is already at step {result.step} (max_iters "
              f"{result.max_iters}): nothing to train. Continue it with --resume "
              f"--max-iters N, N > {result.step}", file=err)
        return
    ev = result.last_eval
    if ev:
        extra = f", bits/byte {ev['val_bpb']:.4f}" if "val_bpb" in ev else ""
        print(f"step {result.step}: val loss {ev['val_loss']:.4f}{extra} "
              f"(best {result.best_val_loss:.4f})", file=err)
    print(f"{result.tokens:,} tokens in {result.elapsed:.1f} s; run folder: {result.run_dir}",
          file=err)
    if result.plan is not None:
        print(f"--time {result.plan.budget_s:.0f}s: the command took {whole_s:.1f} s, of "
              f"which {result.data_s:.1f} s finding or preparing the data (not counted)",
              file=err)
        print(f"to repeat this run without --time, replace --time with: --preset {preset} "
              f"{result.plan.flags()}", file=err)
    if result.stopped == "time":
        print(f"the budget ran out at step {result.step} of the {result.max_iters} planned",
              file=err)
    elif result.stopped == "early_stop":
        print(f"stopped early at step {result.step}: the val loss stopped improving "
              "(best.safetensors holds the best weights)", file=err)
    if result.interrupted:
        print(f"stopped at step {result.step} of {result.max_iters}; checkpoint saved. "
              f"Resume with: gptlab train --out {result.run_dir} --resume", file=err)
        return
    print(f"sample with: gptlab sample {result.run_dir} --prompt \"...\"", file=err)
    if result.sample:
        print(result.sample)
