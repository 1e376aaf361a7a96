"""Reading config YAML (files, presets and --set values) safely: no anchors or aliases, bounded size.

A 475-byte "billion laughs" document (nested aliases, each expanding to nine copies of the one
before) builds a billion-element list and ends in a MemoryError minutes later. Configs never need
anchors or aliases, so the loader refuses them outright; a config file over MAX_CONFIG_BYTES is
refused before it is parsed; deep nesting and unreadable scalars are one DDPMError line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import DDPMError, shorten

MAX_CONFIG_BYTES = 1_000_000  # a config is a few KB


class _AliasError(yaml.MarkedYAMLError):
    pass


class ConfigLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses anchors (&name) and aliases (*name)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()  # type: ignore[no-untyped-call]  # types-PyYAML: unannotated
        if getattr(event, "anchor", None) is not None:
            raise _AliasError(
                problem="YAML anchors and aliases (&name, *name) are not allowed in a config",
                problem_mark=event.start_mark,
            )
        return super().compose_node(parent, index)


def _where(error: yaml.YAMLError) -> str:
    """'found ... at line 3, column 7' for a YAML error, in one line."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem:
        mark = error.problem_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return f"{error.problem}{at}"
    return str(error).splitlines()[0]


def parse_yaml(text: str, *, source: str, invalid_as_text: bool = False) -> Any:
    """The YAML document `text` (None when empty); `source` names it in errors. invalid_as_text:
    return `text` itself when it is not valid YAML (a --set value such as `a:b`)."""
    try:
        return yaml.load(text, Loader=ConfigLoader)
    except _AliasError as error:
        raise DDPMError(f"{source}: {_where(error)}") from None
    except yaml.YAMLError as error:
        if invalid_as_text:
            return text
        raise DDPMError(f"{source} is not valid YAML: {_where(error)}") from None
    except RecursionError:
        raise DDPMError(f"{source} is nested too deeply to be a config") from None
    except ValueError as error:  # a scalar YAML cannot convert, e.g. an int of 5000 digits
        reason = str(error).split(";")[0][:120]
        raise DDPMError(f"{source} has a value that cannot be read: {reason}") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A config file's mapping of sections, read at most MAX_CONFIG_BYTES deep."""
    path = Path(path)
    if not path.is_file():
        raise DDPMError(f"config file not found: {path}")
    try:
        with open(path, "rb") as f:
            blob = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as error:
        raise DDPMError(f"cannot read config file {path}: {error.strerror or error}") from None
    if len(blob) > MAX_CONFIG_BYTES:
        raise DDPMError(
            f"config file {path} is over {MAX_CONFIG_BYTES // 1_000_000} MB; a config is a few KB"
        )
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DDPMError(
            f"config file {path} is not UTF-8 text (byte {error.start}); is it a config?"
        ) from None
    data = parse_yaml(text, source=f"config file {path}") or {}
    if not isinstance(data, dict):
        raise DDPMError(f"config file {path} must hold a mapping of sections")
    return data


def parse_overrides(pairs: list[str]) -> dict[str, dict[str, Any]]:
    """['train.lr=1e-4', 'model.channel_mult=[1,2]'] -> nested dict; values are parsed as YAML,
    and a value that is not valid YAML is kept as the string it is."""
    nested: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not name:
            raise DDPMError(f"--set expects section.key=value, got {shorten(pair)}")
        source = f"--set {key.strip()[:60]}"
        value = parse_yaml(raw, source=source, invalid_as_text=True) if raw.strip() else None
        nested.setdefault(section, {})[name] = value
    return nested
