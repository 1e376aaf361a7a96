"""Multi-process training with PyTorch's own engine: DistributedDataParallel under torchrun.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE (the standard launcher interface, read here and
nowhere else); one process per device, NCCL between GPUs, gloo on the CPU. A single process with
none of them set is world size 1 and uses no process group at all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..devices import resolve_device
from ..errors import DDPMError


@dataclass(frozen=True)
class Distributed:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Only the main process writes files (logs, grids, checkpoints)."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def setup(device_name: str = "auto") -> Distributed:
    """Join the process group torchrun describes (if any) and pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Distributed(rank=0, world_size=1, device=resolve_device(device_name))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name)
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise DDPMError(
                f"local rank {local_rank} has no GPU ({torch.cuda.device_count()} visible)"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(rank=rank, world_size=world_size, device=device)


def teardown(ctx: Distributed) -> None:
    if ctx.active and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(ctx: Distributed, tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all processes (identity for one process); returns a new tensor."""
    tensor = tensor.clone()
    if ctx.active:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def any_process(ctx: Distributed, flag: bool) -> bool:
    """True on every process if `flag` is true on any (e.g. a stop request that reached one)."""
    if not ctx.active:
        return flag
    return bool(all_reduce_sum(ctx, torch.tensor(float(flag), device=ctx.device)).item() > 0)


def barrier(ctx: Distributed) -> None:
    if ctx.active:
        dist.barrier()
