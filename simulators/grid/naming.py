"""Stable, readable mosaik entity ids for pandapower elements."""

from __future__ import annotations

import re

import pandapower as pp

_PREFIX = {"bus": "Bus", "load": "Load", "sgen": "Sgen", "storage": "Storage", "line": "Line", "trafo": "Trafo"}


def _short(name: str, prefix: str) -> str:
    name = name.strip()
    if name.lower().startswith(prefix.lower() + " "):
        name = name[len(prefix) + 1:]
    return re.sub(r"[^A-Za-z0-9_.\-]+", "_", name)


def element_eids(net: pp.pandapowerNet, element: str) -> dict[int, str]:
    """Map pandapower index -> entity id for one element table.

    ``Bus-R11`` when the names in the table are unique and non-empty (a leading
    ``"Bus "``, ``"Load "``, ... is dropped), otherwise ``Bus-<index>``: ids must
    be unique and stable across runs, readability comes second.
    """
    prefix = _PREFIX[element]
    table = net[element]
    names = [n if isinstance(n, str) else "" for n in table["name"]]
    shorts = [_short(n, prefix) for n in names]
    if all(shorts) and len(set(shorts)) == len(shorts):
        return {int(i): f"{prefix}-{s}" for i, s in zip(table.index, shorts)}
    return {int(i): f"{prefix}-{i}" for i in table.index}
