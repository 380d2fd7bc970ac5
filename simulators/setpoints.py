"""The ``setpoints`` a scheduler sends the fleet, in either of its two forms.

Per EV, ``{ev_id: [p_kw, q_kvar]}`` or ``{ev_id: [p_kw, q_kvar, bus]}``; or
column-wise, ``{"ev_id": [...], "p_kw": [...], "q_kvar": [...](, "bus": [...])}``,
which costs per column instead of per EV (a scheduler with thousands of EVs). Power
in load convention [kW], [kvar]; ``bus`` is a pandapower bus index (autonomous EVs;
``None``: stay).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def is_columnar(setpoints: Mapping[str, Any]) -> bool:
    """True for column-wise setpoints ``{"ev_id": [...], "p_kw": [...], "q_kvar": [...]
    (, "bus": [...])}``; otherwise they are ``ev_id -> [p_kw, q_kvar(, bus)]``."""
    return "ev_id" in setpoints and "p_kw" in setpoints


def setpoint_rows(setpoints: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Setpoints in either form as ``ev_id -> [p_kw, q_kvar(, bus)]``."""
    if not is_columnar(setpoints):
        return dict(setpoints)
    ids = list(setpoints["ev_id"])
    p = list(setpoints["p_kw"])
    q = list(setpoints["q_kvar"]) if setpoints.get("q_kvar") is not None else [0.0] * len(ids)
    if len(p) != len(ids) or len(q) != len(ids):
        raise ValueError("column-wise setpoints: p_kw and q_kvar need one value per ev_id")
    if setpoints.get("bus") is None:
        return {e: [pj, qj] for e, pj, qj in zip(ids, p, q)}
    return {e: [pj, qj, b] for e, pj, qj, b in zip(ids, p, q, setpoints["bus"])}
