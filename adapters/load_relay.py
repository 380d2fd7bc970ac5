"""Base load from a stock simulator (mosaik-csv) into the grid: one ``Load-*`` relay per load.

``baseload.reader = "mosaik-csv"`` (``docs/external_simulators.md``) serves the
base-load CSV through the stock ``mosaik_csv:CSV`` simulator. Its one entity
publishes every column of the file (``Load-R1.p_kw``, optionally
``Load-R1.q_kvar``) as it stands in the file. This adapter takes those values per
load and hands them on under the project's names and rules, exactly as
:meth:`simulators.baseload.model.BaseLoadModel.from_csv` computes them::

    p_kw   = scale * p_in                        [kW]
    q_kvar = scale * q_in                        [kvar]  (the file has a q column)
    q_kvar = p_kw * tan_phi                      [kvar]  (it has not: the load's power factor)

Its entities are named as the network's loads (``Load-R1``), so the recorder
files their ``p_kw``/``q_kvar`` under the same ``Load`` table as the built-in
base-load simulator. Time-based with the case's step: at tick ``t`` it steps
after mosaik-csv and before the grid (same-time data flow, no delay).
"""

from __future__ import annotations

import math

import mosaik_api_v3

META = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {"Load": {"public": True, "params": ["eid", "scale", "tan_phi"],
                        "attrs": ["p_in", "q_in", "p_kw", "q_kvar"]}},
}


class LoadRelaySimulator(mosaik_api_v3.Simulator):
    """``Load-<id>`` entities: ``p_kw``, ``q_kvar`` from the inputs ``p_in``, ``q_in``."""

    def __init__(self) -> None:
        super().__init__(META)
        self.params: dict[str, tuple[float, float | None]] = {}
        self.values: dict[str, dict[str, float | None]] = {}
        self.step_ticks = 1

    def init(self, sid, time_resolution=1.0, step_s=1):
        self.step_ticks = max(1, int(round(step_s / time_resolution)))
        return self.meta

    def create(self, num, model, eid, scale=1.0, tan_phi=None):
        if num != 1:
            raise ValueError(f"one relay per load (eid {eid!r}), got num = {num}")
        for name, v in (("scale", scale), ("tan_phi", tan_phi)):
            if v is not None and (not isinstance(v, (int, float)) or not math.isfinite(v)):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
        if eid in self.params:
            raise ValueError(f"duplicate load relay {eid!r}")
        self.params[eid] = (float(scale), None if tan_phi is None else float(tan_phi))
        self.values[eid] = {"p_kw": None, "q_kvar": None}
        return [{"eid": eid, "type": model}]

    def step(self, time, inputs, max_advance):
        for eid, attrs in inputs.items():
            scale, tan_phi = self.params[eid]
            p = _one(attrs.get("p_in"))
            out = self.values[eid]
            out["p_kw"] = None if p is None else scale * p
            if tan_phi is None:
                q = _one(attrs.get("q_in"))
                out["q_kvar"] = None if q is None else scale * q
            else:
                out["q_kvar"] = None if out["p_kw"] is None else out["p_kw"] * tan_phi
        return time + self.step_ticks

    def get_data(self, outputs):
        return {eid: {a: self.values[eid][a] for a in attrs} for eid, attrs in outputs.items()}


def _one(values: dict | None) -> float | None:
    """The value of a single-source input (None: none arrived)."""
    if not values:
        return None
    if len(values) != 1:
        raise ValueError(f"a load relay input takes one source, got {sorted(values)}")
    v = next(iter(values.values()))
    return None if v is None else float(v)
