"""Data from a known multivariate Gaussian x0 ~ N(mu, S) over the pixels of [C, H, W] images:
its ideal denoiser, conditionals and probability-flow map are closed forms, so inpainting and
editing can be checked against exact distributions with no network."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ddpm.schedules import Schedule


@dataclass(frozen=True)
class Gaussian:
    """mu [D], cov [D, D] (float64) over images of `shape` (C, H, W), D = C H W."""

    mu: torch.Tensor
    cov: torch.Tensor
    shape: tuple[int, int, int]

    @property
    def dim(self) -> int:
        return int(self.mu.shape[0])

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n draws of x0 -> [n, C, H, W] float64."""
        L = torch.linalg.cholesky(self.cov)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return (self.mu + z @ L.T).reshape(n, *self.shape)

    def denoiser(self, schedule: Schedule):
        """The ideal denoiser E[x0 | x_t] = mu + S sqrt(ab) (ab S + (1 - ab) I)^-1 (x_t - sqrt(ab) mu),
        exact for every t, on [B, C, H, W] states (float64 inside)."""
        ab_table = schedule.alpha_bar.double()
        eye = torch.eye(self.dim, dtype=torch.float64)
        affine: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # t -> (gain^T, offset)

        def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            step = int(t[0])
            if step not in affine:
                ab = float(ab_table[step])
                gain = self.cov @ torch.linalg.inv(ab * self.cov + (1 - ab) * eye) * ab**0.5
                affine[step] = gain.T.contiguous(), self.mu - ab**0.5 * self.mu @ gain.T
            gain_t, offset = affine[step]
            x0 = torch.addmm(offset, x_t.double().reshape(x_t.shape[0], -1), gain_t)
            return x0.reshape(x_t.shape).to(x_t.dtype)

        return denoise

    def conditional(
        self, keep: torch.Tensor, known: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean [D_g] and covariance [D_g, D_g] of the generated coordinates (keep False) given
        the kept ones (keep True, flat bool [D]) equal to `known` [D]: the Schur complement
        S_gg - S_gk S_kk^-1 S_kg, mean mu_g + S_gk S_kk^-1 (known_k - mu_k)."""
        k, g = keep, ~keep
        S = self.cov
        solve = torch.linalg.solve(S[k][:, k], S[k][:, g])  # S_kk^-1 S_kg
        mean = self.mu[g] + (known[k] - self.mu[k]) @ solve
        cov = S[g][:, g] - S[g][:, k] @ solve
        return mean, cov

    def flow_map(self, ab: float) -> torch.Tensor:
        """The probability-flow ODE's map from x_t (at alpha_bar ab) to x0, exact for Gaussian
        data: x0 = mu + A (x_t - sqrt(ab) mu), A = U diag(sqrt(l / (ab l + 1 - ab))) U^T over
        S's eigenpairs (l, U) (each eigen-direction's marginal std scaled to the data's)."""
        lam, U = torch.linalg.eigh(self.cov)
        return U @ torch.diag((lam / (ab * lam + 1 - ab)).sqrt()) @ U.T


def moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean [D] and unbiased covariance [D, D] of rows x [N, D] (float64)."""
    x = x.double()
    return x.mean(0), torch.cov(x.T)


def correlated_gaussian(shape: tuple[int, int, int] = (1, 2, 2)) -> Gaussian:
    """A fixed, strongly correlated Gaussian (correlations 0.6-0.9) with unequal variances, its
    values mostly within [-1, 1] like images."""
    D = shape[0] * shape[1] * shape[2]
    idx = torch.arange(D, dtype=torch.float64)
    corr = 0.9 ** (idx[:, None] - idx[None, :]).abs()  # AR(1) correlations
    std = 0.25 + 0.1 * idx / max(D - 1, 1)
    return Gaussian(
        mu=0.1 - 0.2 * idx / max(D - 1, 1), cov=std[:, None] * corr * std[None, :], shape=shape
    )
