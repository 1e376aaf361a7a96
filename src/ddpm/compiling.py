"""torch.compile for a network `net(x, t, labels)`, with static shapes and an eager fallback.

Shapes are static (the fastest kernels) and a batch smaller than the largest seen so far is padded
up to it, so a sampler's last, smaller batch or new timesteps never recompile; only a batch larger
than any before compiles once more. (Dynamic batch sizes were tried: they still specialise on
batch 1 and on size ranges, and unbacked sizes break the inductor's convolution layouts.) A
compiler that fails (no C++ compiler, an unsupported backend or operator) falls back to eager
with one warning line instead of stopping the run.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch


def compile_errors() -> tuple[type[BaseException], ...]:
    """What a failing compilation raises: dynamo wraps backend failures (BackendCompilerFailed);
    the inductor raises its own errors for C++ and code-generation failures (a backward graph is
    compiled at the first backward pass, outside dynamo)."""
    import torch._dynamo.exc
    import torch._inductor.exc

    names = ("InductorError", "CppCompileError")  # InductorError is new in torch 2.7
    inductor = tuple(
        getattr(torch._inductor.exc, n) for n in names if hasattr(torch._inductor.exc, n)
    )
    return (torch._dynamo.exc.TorchDynamoException, *inductor)


def _pad_rows(tensor: torch.Tensor | None, batch: int, rows: int) -> torch.Tensor | None:
    """tensor [batch, ...] -> [rows, ...], the new rows zeros (a valid timestep and class index);
    a tensor without the batch dimension (a broadcast t [1] or []) as it is."""
    if tensor is None or rows == batch or tensor.ndim == 0 or tensor.shape[0] != batch:
        return tensor
    padding = tensor.new_zeros((rows - tensor.shape[0], *tensor.shape[1:]))
    return torch.cat([tensor, padding])


class CompiledNetwork:
    """A network compiled with torch.compile, with an eager fallback.

    Call it as the network: `compiled(x [B, C, H, W], t [B], labels [B] | None, augment=None)
    -> [B, ...]`; rows are independent in the U-Net (per-sample norms and attention), so padding
    rows changes no result. `fall_back(error)` switches to eager for good (the training step calls it when a
    compile error surfaces in the backward pass, which this object does not see). `backend` is
    torch.compile's ("inductor" by default; tests pass a failing or counting backend).
    """

    def __init__(
        self, net: Callable[..., torch.Tensor], *, backend: str | Callable[..., object] = "inductor"
    ) -> None:
        self.eager = net
        self.compiled = torch.compile(net, backend=backend, dynamic=False)
        self.failed = False
        self.rows = 0  # the largest batch compiled for

    def __call__(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        labels: torch.Tensor | None = None,
        *,
        augment: torch.Tensor | None = None,
    ) -> torch.Tensor:
        # augment [B, D] (training with data.augment_p) goes on as a keyword only when given, so
        # networks without it compile as before
        extra = {} if augment is None else {"augment": augment}
        if self.failed:
            return self.eager(x, t, labels, **extra)
        batch = x.shape[0]
        self.rows = max(self.rows, batch)
        padded = {k: _pad_rows(v, batch, self.rows) for k, v in extra.items()}
        try:
            out = self.compiled(*(_pad_rows(v, batch, self.rows) for v in (x, t, labels)), **padded)
        except compile_errors() as error:
            self.fall_back(error)
            return self.eager(x, t, labels, **extra)
        return out if batch == self.rows else out[:batch]

    def fall_back(self, error: BaseException) -> None:
        """Run eagerly from now on; print why on one line."""
        self.failed = True
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"warning: torch.compile failed, running eagerly ({reason[:200]})", file=sys.stderr)
