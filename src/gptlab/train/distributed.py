"""Multi-process training with torchrun and DistributedDataParallel.

`torchrun --nproc_per_node=N -m gptlab train ...` starts N processes with RANK, WORLD_SIZE
and LOCAL_RANK set; each joins a process group (nccl on CUDA, gloo on CPU), sees its own
batches (sampler seeded with seed + rank) and averages gradients with the others. Only
rank 0 writes files and prints.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from gptlab.errors import GptlabError


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str) -> tuple[DistInfo, str]:
    """Join the process group when launched by torchrun (RANK and WORLD_SIZE set).

    Args:
        device: the resolved device ("cpu", "cuda", "cuda:N", "mps").

    Returns:
        (DistInfo, device for this process: cuda:LOCAL_RANK on CUDA).
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistInfo(), device
    info = DistInfo(rank=int(os.environ["RANK"]), local_rank=int(os.environ.get("LOCAL_RANK", 0)),
                    world_size=int(os.environ["WORLD_SIZE"]))
    if not info.enabled:
        return info, device
    if device.startswith("cuda"):
        if torch.cuda.device_count() <= info.local_rank:
            raise GptlabError(
                f"LOCAL_RANK {info.local_rank} has no GPU ({torch.cuda.device_count()} "
                "visible): lower --nproc_per_node"
            )
        device = f"cuda:{info.local_rank}"
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device == "cpu":
        backend = "gloo"
    else:
        raise GptlabError(f"distributed training supports cpu and cuda, not {device!r}")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return info, device


def teardown(barrier: bool = False) -> None:
    """Leave the process group; with `barrier`, once every rank has got here (only after a
    run that finished everywhere: a failed rank would leave the others waiting)."""
    if dist.is_available() and dist.is_initialized():
        if barrier:
            dist.barrier()
        dist.destroy_process_group()


def micro_steps_per_rank(gradient_accumulation_steps: int, info: DistInfo) -> int:
    """Split accumulation across ranks so the global batch does not depend on N."""
    if gradient_accumulation_steps % info.world_size:
        raise GptlabError(
            f"gradient_accumulation_steps={gradient_accumulation_steps} is not divisible by "
            f"the {info.world_size} processes; use a multiple of {info.world_size}"
        )
    return gradient_accumulation_steps // info.world_size


def all_ranks_any(flag: bool, info: DistInfo, device: str) -> bool:
    """True on every rank when `flag` is true on any (e.g. a stop request from a signal)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def gather_objects(obj: object, info: DistInfo) -> list:
    """Every rank's `obj`, in rank order (just [obj] when not distributed)."""
    if not info.enabled:
        return [obj]
    out: list = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def weights_digest(model: torch.nn.Module) -> str:
    """A short SHA-256 of all parameters, to check that ranks hold identical weights."""
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
