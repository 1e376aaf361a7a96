"""Training batches from an in-memory uint8 dataset, as a pure function of (seed, step).

Epoch e visits the images in the order of a permutation drawn from a generator seeded with
(seed, e); step n takes the n-th slice of batch_size from it (dropping the last partial batch).
So the data order needs no saved state: resuming at step n gives the same batches.
"""

from __future__ import annotations

import torch

from ..errors import DDPMError
from ..pixels import from_uint8
from ..rng import global_batch_rows, step_generator


class InMemoryBatches:
    """Batches of float images in [-1, 1] (and labels) for each step, held on `device` as uint8."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | None,
        *,
        batch_size: int,
        seed: int,
        random_flip: bool,
        device: torch.device,
        rank: int = 0,
        world_size: int = 1,
    ):
        """batch_size is per process: the global batch of a step is batch_size * world_size
        images, and process `rank` takes its rank-th slice, so a run on N processes sees the same
        global batches (and noise) as one process with batch_size * N."""
        global_batch = batch_size * world_size
        if batch_size < 1:
            raise DDPMError(f"train.batch_size must be >= 1, got {batch_size}")
        if len(images) < global_batch:
            raise DDPMError(
                f"the global batch {global_batch} exceeds the dataset size {len(images)}"
            )
        self.images = images.to(device)
        self.labels = labels.to(device) if labels is not None else None
        self.batch_size, self.seed, self.random_flip = batch_size, seed, random_flip
        self.rank, self.global_batch = rank, global_batch
        self.steps_per_epoch = len(images) // global_batch
        self._epoch, self._order = -1, torch.empty(0, dtype=torch.long)

    def _order_for(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            generator = step_generator(self.seed, epoch, 0, device=self.images.device)
            self._order = torch.randperm(
                len(self.images), generator=generator, device=self.images.device
            )
            self._epoch = epoch
        return self._order

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(x0 float32 [B, C, H, W] in [-1, 1], labels [B] or None) for training step `step`."""
        epoch, position = divmod(step, self.steps_per_epoch)
        start = position * self.global_batch + self.rank * self.batch_size
        index = self._order_for(epoch)[start : start + self.batch_size]
        x0 = from_uint8(self.images[index])  # one float32 tensor, scaled in place
        if self.random_flip:
            generator = step_generator(self.seed, step, 1, device=x0.device)
            mine = global_batch_rows(
                torch.rand, (self.batch_size,), generator, rank=self.rank,
                world_size=self.global_batch // self.batch_size,
            )  # fmt: skip
            x0 = torch.where(mine[:, None, None, None] < 0.5, x0.flip(-1), x0)
        labels = self.labels[index] if self.labels is not None else None
        return x0, labels
