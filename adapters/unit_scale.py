"""Unit conversion on a connection: ``value`` out = ``value`` in x ``scale``.

mosaik passes values between simulators unchanged; a scenario that connects an
external simulator's MW output to the grid's kW input
(``unit = "MW->kW"``, ``scenarios/external_config.py``) gets one ``Scale`` entity
in between. Time-based with the case's step, so at tick ``t`` it steps after its
source and before its target (same-time data flow, no delay). ``None`` (no
value) passes through as ``None``.
"""

from __future__ import annotations

import math

import mosaik_api_v3

META = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {"Scale": {"public": True, "params": ["scale", "label"], "attrs": ["value"]}},
}


class UnitScaleSimulator(mosaik_api_v3.Simulator):
    """One ``Scale`` entity per converted connection."""

    def __init__(self) -> None:
        super().__init__(META)
        self.scales: dict[str, float] = {}
        self.values: dict[str, float | None] = {}
        self.step_ticks = 1

    def init(self, sid, time_resolution=1.0, step_s=1):
        self.step_ticks = max(1, int(round(step_s / time_resolution)))
        return self.meta

    def create(self, num, model, scale, label=""):
        if not isinstance(scale, (int, float)) or not math.isfinite(scale):
            raise ValueError(f"scale must be a finite number, got {scale!r}")
        out = []
        for _ in range(num):
            eid = f"Scale-{len(self.scales)}" + (f"-{label.replace('.', '_')}" if label else "")
            self.scales[eid] = float(scale)
            self.values[eid] = None
            out.append({"eid": eid, "type": model})
        return out

    def step(self, time, inputs, max_advance):
        for eid, attrs in inputs.items():
            vals = list(attrs.get("value", {}).values())
            if vals:
                total = None if any(v is None for v in vals) else math.fsum(float(v) for v in vals)
                self.values[eid] = None if total is None else total * self.scales[eid]
        return time + self.step_ticks

    def get_data(self, outputs):
        return {eid: {"value": self.values[eid]} for eid in outputs}
