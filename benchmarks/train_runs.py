"""One `gptlab train` in a fresh process, timed from its start to its exit, then `gptlab
eval` of its best weights over the whole val split: what the --time sweep, the targets and
the ablation each measure (benchmarks/sweep_time.py, time_targets.py, ablate_options.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class TrainRun:
    wall_s: float  # the whole `gptlab train` command
    val_loss: float  # `gptlab eval RUN`, whole split
    config: dict  # the run's config.json
    records: list[dict]  # its metrics.jsonl


def timed_train(flags: list[str], run: Path) -> TrainRun:
    """`gptlab train FLAGS --out RUN --no-progress --sample-tokens 0` with this tree's src/
    on PYTHONPATH; a failure ends the benchmark with the command's stderr."""
    cmd = [sys.executable, "-m", "gptlab", "train", *flags, "--out", str(run),
           "--no-progress", "--sample-tokens", "0"]
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "src"))
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    ev = subprocess.run([sys.executable, "-m", "gptlab", "eval", str(run), "--json"],
                        env=env, capture_output=True, text=True, check=True)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return TrainRun(round(wall, 1), round(json.loads(ev.stdout)["loss"], 4),
                    json.loads((run / "config.json").read_text()), records)
