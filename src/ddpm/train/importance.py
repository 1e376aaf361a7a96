"""Importance sampling of t for the variational bound (Nichol & Dhariwal 2021, "Improved Denoising
Diffusion Probabilistic Models", Sec. 3.3): train.t_sampling=importance.

The bound L_vlb = sum_t L_t has terms that differ by orders of magnitude across t (the first few
dominate), so a uniform draw of t gives a very noisy estimate of it. The paper draws t with

    p_t proportional to sqrt(E[L_t^2]),   sum_t p_t = 1,                          (Sec. 3.3)

where E[L_t^2] is the mean square of the last K = 10 values of L_t seen in training, and weights
each example by 1 / (T p_t), so that E_{t ~ p}[L_t / (T p_t)] = (1 / T) sum_t L_t: the estimate
stays unbiased for the objective of a uniform t. Until every t has K values, t is drawn uniformly
(with weight 1): the paper's warm-up.

Which loss, which terms (our choice, with diffusion.loss=hybrid, the only loss with an L_vlb term,
which is why the config refuses the other losses):
- the history holds the L_vlb term of each example (`ddpm.learned_variance.hybrid_loss`, bits/dim
  times T / 1000, before any weight): it is the term whose spread over t the sampler is for;
- the weight 1 / (T p_t) multiplies the whole per-example hybrid loss, L_simple (with its
  diffusion.loss_weight) and vlb_weight L_vlb alike. Then the step's loss is an unbiased estimate
  of the same objective a uniform t trains and the validation loss measures; weighting L_vlb only
  would train L_simple at the sampler's moving p_t, a different objective each step. The price,
  which the paper reports (it found importance sampling unhelpful for L_hybrid), is a noisier
  L_simple where p_t is small.

The state lives on the training device: a [T, K] ring buffer of values and a [T] count of values
ever recorded; it is updated with scatter operations, without host synchronisation. Repeated t in
one batch are all recorded, in the order of the global batch's rows, as if pushed one at a time
(of more than K repeats the last K remain). Under DDP every process records the (t, L_vlb) of the
whole global batch, gathered from all processes in rank order, so all hold the same history; it is
saved in every checkpoint (`importance.history`, `importance.count`), so a resumed run draws what
the uninterrupted one did. A step whose loss is not finite records nothing.
"""

from __future__ import annotations

import logging

import torch
import torch.distributed as dist

from ..errors import DDPMError
from ..rng import global_batch_rows

log = logging.getLogger(__name__)
HISTORY_LENGTH = 10  # Nichol & Dhariwal 2021, Sec. 3.3: the last 10 values of each L_t


UNIFORM_MIX = 0.001  # share of uniform probability mixed in (the authors' released code)


def importance_probabilities(history: torch.Tensor) -> torch.Tensor:
    """p_t = (1 - m) sqrt(mean_k L_{t,k}^2) / sum_s sqrt(mean_k L_{s,k}^2) + m / T for a history
    [T, K] -> [T] float64, m = UNIFORM_MIX (NaN everywhere when every value is 0). The uniform
    share is not in the paper's text but in the authors' code: it keeps every p_t >= m / T, so a t
    whose recorded terms are all 0 is still drawn (its history would freeze otherwise) and no
    weight 1 / (T p_t) exceeds 1 / m."""
    rms = history.double().square().mean(dim=1).sqrt()
    return (1 - UNIFORM_MIX) * rms / rms.sum() + UNIFORM_MIX / len(rms)


def inverse_cdf_timesteps(u: torch.Tensor, probabilities: torch.Tensor) -> torch.Tensor:
    """t [N] with P(t = i) = p_i for uniform draws u [N] in [0, 1): the i with
    cdf_{i-1} <= u < cdf_i, cdf the cumulative sum of p [T] scaled to end at exactly 1 (so a t of
    probability 0 is never drawn) -> long [N]."""
    cdf = probabilities.double().cumsum(0)
    cdf = cdf / cdf[-1]
    t = torch.searchsorted(cdf, u.double().contiguous(), right=True)
    return t.clamp(max=len(probabilities) - 1)


def importance_weights(p_t: torch.Tensor, num_timesteps: int) -> torch.Tensor:
    """1 / (T p_t) for the drawn t's probabilities p_t [N] -> [N]: E_{t~p}[w_t L_t] = mean_t L_t."""
    return 1.0 / (num_timesteps * p_t)


def record_losses(
    history: torch.Tensor, count: torch.Tensor, t: torch.Tensor, values: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(history [T, K], count [T]) after pushing values [N] at timesteps t [N] in row order into
    each t's ring buffer (value j of t goes to slot j mod K); of more than K repeats of a t in one
    batch only the last K are written. Pure, no host synchronisation: every write has its own
    index (the dropped repeats go to scratch slots), so the result is deterministic."""
    num_timesteps, length = history.shape
    n = t.shape[0]
    occurrences = torch.zeros_like(count).scatter_add_(0, t, torch.ones_like(t))
    sorted_t, order = torch.sort(t, stable=True)
    group_start = occurrences.cumsum(0) - occurrences
    rank = torch.empty_like(t).scatter_(
        0, order, torch.arange(n, device=t.device) - group_start[sorted_t]
    )  # rank[i]: how many earlier rows of the batch have t[i]
    kept = rank >= occurrences[t] - length
    slot = t * length + (count[t] + rank) % length
    index = torch.where(kept, slot, num_timesteps * length + torch.arange(n, device=t.device))
    flat = torch.cat([history.flatten(), history.new_zeros(n)])
    flat = flat.scatter(0, index, values.detach().to(history.dtype))
    return flat[: num_timesteps * length].view_as(history), count + occurrences


def gather_global_rows(local: torch.Tensor, world_size: int) -> torch.Tensor:
    """The global batch's rows [world_size * B] from each process's [B] (rank order, the order in
    which ddpm.rng.global_batch_rows slices them); identity for one process."""
    if world_size == 1:
        return local
    parts = [torch.empty_like(local) for _ in range(world_size)]
    dist.all_gather(parts, local.contiguous())
    return torch.cat(parts)


class ImportanceSampler:
    """The device-resident state of train.t_sampling=importance and its draw (module docstring)."""

    def __init__(
        self, num_timesteps: int, device: torch.device, *, history_length: int = HISTORY_LENGTH
    ):
        self.num_timesteps = num_timesteps
        self.history = torch.zeros(
            num_timesteps, history_length, dtype=torch.float64, device=device
        )
        self.count = torch.zeros(num_timesteps, dtype=torch.long, device=device)

    def probabilities(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(p [T] float64, ready 0-dim bool): p from the history once every t has K values and
        their sum is positive and finite (`ready`), uniform before."""
        p = importance_probabilities(self.history)
        ready = (self.count >= self.history.shape[1]).all() & p.isfinite().all()
        return torch.where(ready, p, 1.0 / self.num_timesteps), ready

    def draw(
        self, generator: torch.Generator, batch: int, *, rank: int = 0, world_size: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(t [batch], weights 1 / (T p_t) [batch]) for this process's rows of the global batch,
        from one float64 uniform draw per row of `generator`: the inverse CDF of p once the history
        is full, floor(u T) with weight 1 before."""

        def uniform(
            shape: tuple[int, ...], *, generator: torch.Generator, device: torch.device
        ) -> torch.Tensor:
            return torch.rand(shape, dtype=torch.float64, generator=generator, device=device)

        u = global_batch_rows(uniform, (batch,), generator, rank=rank, world_size=world_size)
        p, ready = self.probabilities()
        t_uniform = (u * self.num_timesteps).long().clamp(max=self.num_timesteps - 1)
        t = torch.where(ready, inverse_cdf_timesteps(u, p), t_uniform)
        weights = torch.where(ready, importance_weights(p[t], self.num_timesteps), 1.0)
        return t, weights

    def update(self, t: torch.Tensor, values: torch.Tensor, finite: torch.Tensor) -> None:
        """Record the global batch's L_vlb values [N] at t [N] (all processes pass the same rows);
        nothing when `finite` (0-dim bool) is false."""
        history, count = record_losses(self.history, self.count, t, values)
        self.history.copy_(torch.where(finite, history, self.history))
        self.count.copy_(torch.where(finite, count, self.count))

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The checkpoint entries: importance.history [T, K] and importance.count [T]."""
        return {"importance.history": self.history, "importance.count": self.count}

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore from a checkpoint's `importance.` entries (prefix removed); without them (a
        checkpoint of an earlier version) the history starts empty, with a warning."""
        if "history" not in tensors or "count" not in tensors:
            log.warning("the checkpoint has no importance-sampling history: warming up again")
            return
        if tensors["history"].shape != self.history.shape:
            raise DDPMError(
                f"the checkpoint's importance.history has shape {tuple(tensors['history'].shape)}, "
                f"expected {tuple(self.history.shape)}"
            )
        self.history.copy_(tensors["history"])
        self.count.copy_(tensors["count"])
