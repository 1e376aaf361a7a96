"""argparse `type=` functions for the CLI's numbers: a count of 0, a negative batch size, a NaN
scale or a 20-digit seed is argparse's one-line error, before any run is loaded."""

from __future__ import annotations

import argparse
import math

from ..errors import shorten


def _integer(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {shorten(text)}") from None
    if not -(2**63) <= value < 2**63:
        raise argparse.ArgumentTypeError(
            f"must be an integer in [-2**63, 2**63), got {shorten(value)}"
        )
    return value


def positive_int(text: str) -> int:
    """An integer >= 1: counts, steps, batch sizes."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def int64(text: str) -> int:
    """Any integer that fits in 64 bits (a class index: the command checks its range)."""
    return _integer(text)


def seed(text: str) -> int:
    """0 <= seed < 2**63: torch's generators take 64 bits, and a negative seed would give the
    images of its absolute value (ddpm.rng)."""
    try:
        value = _integer(text)
    except argparse.ArgumentTypeError:
        value = None
    if value is None or value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 2**63), got {shorten(text)}")
    return value


def finite_float(text: str) -> float:
    """A finite number: NaN or inf would pass range checks (every comparison with NaN is false)
    and turn the images into NaN."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {shorten(text)}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value
