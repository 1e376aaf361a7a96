"""Declarative ranges for config fields, checked whenever a config section is built.

A field declares its range in its type, e.g. `batch_size: PositiveInt = 128` or
`dropout: Annotated[float, Bounds(ge=0, lt=1)] = 0.1`, and the section's __post_init__ calls
`check_fields(self, "train")`. On top of the declared ranges every float must be finite and every
int must fit in int64 (tensors and torch's seeding take no more), so NaN, inf and 20-digit values
are one DDPMError naming the key, at config time, never a traceback deep inside training.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from .errors import DDPMError, shorten


@dataclass(frozen=True)
class Bounds:
    """An interval: ge/gt the lower end (inclusive/exclusive), le/lt the upper one."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def admits(self, value: float) -> bool:
        return (
            (self.ge is None or value >= self.ge)
            and (self.gt is None or value > self.gt)
            and (self.le is None or value <= self.le)
            and (self.lt is None or value < self.lt)
        )

    def describe(self) -> str:
        """'>= 1', '> 0', 'in [0, 1)', 'in (0, 0.28)'."""
        low = next(((s, v) for s, v in ((">=", self.ge), (">", self.gt)) if v is not None), None)
        high = next(((s, v) for s, v in (("<=", self.le), ("<", self.lt)) if v is not None), None)
        if low and high:
            left, right = "[" if low[0] == ">=" else "(", "]" if high[0] == "<=" else ")"
            return f"in {left}{_number(low[1])}, {_number(high[1])}{right}"
        one = low or high
        return f"{one[0]} {_number(one[1])}" if one else ""


def _number(value: float) -> str:
    if isinstance(value, int) and value == 2**63:
        return "2**63"
    return f"{value:g}" if isinstance(value, float) else str(value)


INT64 = Bounds(ge=-(2**63), lt=2**63)
PositiveInt = Annotated[int, Bounds(ge=1)]
NonNegativeInt = Annotated[int, Bounds(ge=0)]
PositiveFloat = Annotated[float, Bounds(gt=0)]
NonNegativeFloat = Annotated[float, Bounds(ge=0)]
Probability = Annotated[float, Bounds(ge=0, le=1)]
# torch.manual_seed and torch.Generator.manual_seed take at most 64 bits; negative seeds would
# alias positive ones in numpy's SeedSequence (ddpm.rng), so a seed is a non-negative int64
Seed = Annotated[int, Bounds(ge=0, lt=2**63)]


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def check_fields(section: Any, prefix: str) -> None:
    """Raise DDPMError for the first field of the dataclass `section` whose value is out of its
    declared Bounds, not one of its Literal's values, a non-finite float or an int outside int64;
    `prefix` names the section."""
    # a class is hashable, but mypy does not see type[...] as Hashable (python/mypy#11470)
    hints = _hints(type(section))  # type: ignore[arg-type]
    for f in dataclasses.fields(section):
        _check(getattr(section, f.name), hints[f.name], f"{prefix}.{f.name}")


def _check(value: Any, hint: Any, key: str) -> None:
    bounds = [m for m in getattr(hint, "__metadata__", ()) if isinstance(m, Bounds)]
    base = typing.get_args(hint)[0] if bounds else hint
    if typing.get_origin(base) is Literal:  # a config built in Python skips `coerce`'s check
        if value not in typing.get_args(base):
            raise DDPMError(
                f"{key} must be one of {list(typing.get_args(base))}, got {shorten(value)}"
            )
        return
    if typing.get_origin(base) is tuple and isinstance(value, tuple):
        for i, item in enumerate(value):
            _check(item, typing.get_args(base)[0], f"{key}[{i}]")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise DDPMError(f"{key} must be a finite number{_range(bounds)}, got {value}")
    if isinstance(value, int) and not INT64.admits(value):
        raise DDPMError(
            f"{key} must be an integer{_range(bounds) or ' in int64'}, got {shorten(value)}"
        )
    for b in bounds:
        if not b.admits(value):
            kind = "an integer" if isinstance(value, int) else "a finite number"
            raise DDPMError(f"{key} must be {kind} {b.describe()}, got {shorten(value)}")


def _range(bounds: list[Bounds]) -> str:
    return "".join(f" {b.describe()}" for b in bounds)


def coerce(value: Any, hint: Any, key: str) -> Any:
    """`value` (from YAML, JSON or --set) checked against a field's type hint, lists converted to
    tuples and ints to floats; a DDPMError naming `key` if it does not fit. Ranges: check_fields."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        if value not in args:
            raise DDPMError(f"{key} must be one of {list(args)}, got {shorten(value)}")
        return value
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(value, inner[0], key)
    if origin is tuple:
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise DDPMError(f"{key} must be a list, got {shorten(value)}")
        return tuple(coerce(v, args[0], key) for v in value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if hint is str and isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # a count of steps in a key that also takes a duration ("500", "10m")
    if hint is bool and not isinstance(value, bool):
        raise DDPMError(f"{key} must be true or false, got {shorten(value)}")
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise DDPMError(f"{key} must be an integer, got {shorten(value)}")
    if not isinstance(value, hint):
        raise DDPMError(f"{key} must be of type {hint.__name__}, got {shorten(value)}")
    return value
