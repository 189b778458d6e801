"""DDP: `torchrun --nproc_per_node=2 -m gptlab train` on CPU (gloo)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from gptlab import checkpoint as ckpt
from gptlab.train.distributed import DistInfo, micro_steps_per_rank, weights_digest

sys.path.insert(0, str(Path(__file__).parent))
from train_helpers import TINY_FLAGS, make_dataset  # noqa: E402


def test_accumulation_splits_across_ranks():
    assert micro_steps_per_rank(8, DistInfo(rank=1, world_size=4)) == 2
    assert micro_steps_per_rank(3, DistInfo()) == 3
    with pytest.raises(Exception, match="not divisible by the 2 processes"):
        micro_steps_per_rank(3, DistInfo(world_size=2))


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_two_cpu_processes_end_with_identical_weights(tmp_path, tiny_text, subprocess_env,
                                                      optimizer):
    data = make_dataset(tiny_text, tmp_path)
    run = tmp_path / "run"
    env = {**subprocess_env, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "gptlab", "train", "--data", str(data), "--out", str(run), *TINY_FLAGS,
           "--max-iters", "6", "--eval-interval", "3", "--gradient-accumulation-steps", "2",
           "--dropout", "0.1", "--optimizer", optimizer]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    digests = dict(re.findall(r"rank (\d) weights ([0-9a-f]{16})", proc.stderr))
    assert set(digests) == {"0", "1"}, proc.stderr[-3000:]
    assert digests["0"] == digests["1"]
    saved = ckpt.load_run(run, which="latest")
    assert weights_digest(saved.model) == digests["0"]  # rank 0 wrote those weights
    assert ckpt.latest_checkpoint_dir(run).name == "step-00000006"
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert sum('"kind": "train"' in line for line in lines) == 6  # one writer, no duplicates
