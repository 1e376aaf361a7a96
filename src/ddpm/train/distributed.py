"""Multi-process training with PyTorch's own engine: DistributedDataParallel under torchrun.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE (the standard launcher interface, read here and
nowhere else); one process per device, NCCL between GPUs, gloo on the CPU. A single process with
none of them set is world size 1 and uses no process group at all.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar, cast

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


def from_main(ctx: Distributed, value: float) -> float:
    """The main process's `value` on every process (a host sync: for log lines, not steps)."""
    if not ctx.active:
        return value
    return float(
        all_reduce_sum(
            ctx, torch.tensor(value if ctx.is_main else 0.0, dtype=torch.float64, device=ctx.device)
        ).item()
    )


def barrier(ctx: Distributed) -> None:
    if ctx.active:
        dist.barrier()


T = TypeVar("T")


def on_main(ctx: Distributed, action: Callable[[], T]) -> T | None:
    """Run `action` on the main process only (e.g. preparing the run folder); if it raises a
    DDPMError there, every process raises (the main one its own message), so none waits forever
    at the next collective."""
    error, result = None, None
    if ctx.is_main:
        try:
            result = action()
        except DDPMError as caught:
            error = caught
    if any_process(ctx, error is not None):
        raise error or DDPMError("the main process stopped (see its message)")
    return result


class StopVote:
    """Whether to stop after this step, the same answer on every process, with no device sync.

    One process alone answers its own flag at once. Under DDP each step's flags are summed by an
    asynchronous all-reduce on a CPU (gloo) side group, started after step n and read after step
    n + 1, so the vote costs no waiting and all processes stop after the same step: at most one
    step after the signal reached the first of them.
    """

    def __init__(self, ctx: Distributed) -> None:
        self.ctx = ctx
        # new_group's type includes the non-member sentinel, which only a rank left out of the
        # group gets; every rank is in this one
        self._group = (
            cast(dist.ProcessGroup, dist.new_group(backend="gloo")) if ctx.active else None
        )
        self._pending: tuple[dist.Work, torch.Tensor] | None = None

    def __call__(self, local: bool) -> bool:
        if self._group is None:
            return local
        decided = self._collect()
        flag = torch.tensor([float(local)])
        self._pending = (dist.all_reduce(flag, group=self._group, async_op=True), flag)
        return decided

    def _collect(self) -> bool:
        if self._pending is None:
            return False
        work, flag = self._pending
        work.wait()
        self._pending = None
        return bool(flag.item() > 0)

    def close(self) -> None:
        """Finish the vote in flight (every process must, before the group goes away)."""
        self._collect()
