"""Sample-quality metrics."""

from .pixel_fd import frechet_distance, gaussian_fit, pixel_fd

__all__ = ["frechet_distance", "gaussian_fit", "pixel_fd"]
