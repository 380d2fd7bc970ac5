"""Scenario TOML files as dicts, with ``table.key`` overrides, for tests."""

from __future__ import annotations

import tomllib
from pathlib import Path


def load_raw(path: Path, **overrides) -> dict:
    """The scenario at ``path`` as a TOML dict, ``{"table.key": value}`` overrides applied."""
    raw = tomllib.loads(Path(path).read_text())
    for dotted, value in overrides.items():
        table, key = dotted.split(".")
        raw.setdefault(table, {})[key] = value
    return raw
