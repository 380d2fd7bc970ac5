"""A home battery as a mosaik simulator (mosaik_api_v3) for self-consumption.

This is the kind of simulator a user brings: it imports nothing from the
project, runs in mosaik's process (``python = "module:Class"``) or as its own
process (``python battery.py HOST:PORT``, mosaik's ``cmd`` starter, or on
another machine with ``connect``). See ``docs/external_simulators.md``.

Model ``Battery`` (one entity per home), time-based with step ``step_s``:

- input ``p_load_kw``: the home's demand without the battery [kW], load
  convention (PV feeding in is negative); several sources are summed (a load and
  a PV unit at the same bus).
- rule (self-consumption): the battery power is ``p_kw = -p_load_kw`` (cover the
  demand, store the surplus), clipped to ``[-p_discharge_max_kw,
  p_charge_max_kw]`` and to what the stored energy allows this step.
- energy balance over one step of ``dt = step_s / 3600`` h, one-way efficiency
  ``eta``::

      charging    (p_kw > 0):  e_kwh(t + dt) = e_kwh(t) + eta * p_kw * dt
      discharging (p_kw < 0):  e_kwh(t + dt) = e_kwh(t) + p_kw * dt / eta

  with ``soc_min * capacity_kwh <= e_kwh <= soc_max * capacity_kwh``.

Outputs (a value at tick ``t`` holds for ``[t, t + step)``):
``p_kw`` (battery power, load convention: charging > 0), ``q_kvar`` (0),
``p_grid_kw`` (``p_load_kw + p_kw``: what the home draws from the grid),
``soc`` and ``e_kwh`` (state of charge [-] and stored energy [kWh] at the end
of the step, ``t + dt``) and ``e_loss_kwh`` (conversion losses so far [kWh]).
"""

from __future__ import annotations

import math

import mosaik_api_v3

META = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {
        "Battery": {
            "public": True,
            "params": ["capacity_kwh", "p_charge_max_kw", "p_discharge_max_kw", "soc_initial",
                       "soc_min", "soc_max", "efficiency"],
            "attrs": ["p_load_kw", "p_kw", "q_kvar", "p_grid_kw", "soc", "e_kwh", "e_loss_kwh"],
        },
    },
}


class Battery:
    """State and rule of one home battery (units in the module docstring)."""

    def __init__(self, capacity_kwh=10.0, p_charge_max_kw=5.0, p_discharge_max_kw=5.0,
                 soc_initial=0.5, soc_min=0.1, soc_max=0.95, efficiency=0.95):
        checks = {"capacity_kwh": capacity_kwh > 0, "p_charge_max_kw": p_charge_max_kw >= 0,
                  "p_discharge_max_kw": p_discharge_max_kw >= 0, "efficiency": 0 < efficiency <= 1,
                  "soc_min": 0 <= soc_min <= soc_max, "soc_max": soc_min <= soc_max <= 1,
                  "soc_initial": soc_min <= soc_initial <= soc_max}
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"Battery.{name} out of range ({locals()[name]!r})")
        self.capacity_kwh, self.eta = float(capacity_kwh), float(efficiency)
        self.p_ch_max, self.p_dis_max = float(p_charge_max_kw), float(p_discharge_max_kw)
        self.e_min, self.e_max = soc_min * capacity_kwh, soc_max * capacity_kwh
        self.e_kwh = soc_initial * capacity_kwh
        self.e_loss_kwh = 0.0
        self.p_load_kw = self.p_kw = 0.0

    def step(self, p_load_kw: float, dt_h: float) -> None:
        """Apply the self-consumption rule for one step of ``dt_h`` hours."""
        p = min(max(-p_load_kw, -self.p_dis_max), self.p_ch_max)
        if p > 0:  # no more than fits: eta * p * dt <= e_max - e
            p = min(p, (self.e_max - self.e_kwh) / (self.eta * dt_h))
            de = self.eta * p * dt_h
        else:  # no more than is stored: |p| * dt / eta <= e - e_min
            p = max(p, -(self.e_kwh - self.e_min) * self.eta / dt_h)
            de = p * dt_h / self.eta
        p = max(p, 0.0) if p > 0 else min(p, 0.0)  # rounding at a full/empty battery
        self.e_kwh = min(max(self.e_kwh + de, self.e_min), self.e_max)
        self.e_loss_kwh += p * dt_h - de  # energy in at the terminals minus energy stored
        self.p_load_kw, self.p_kw = p_load_kw, p + 0.0  # + 0.0: no -0.0 in the records


class HomeBatterySimulator(mosaik_api_v3.Simulator):
    """mosaik adapter of :class:`Battery` (entities ``Battery-0``, ``Battery-1``, ...)."""

    def __init__(self) -> None:
        super().__init__(META)
        self.batteries: dict[str, Battery] = {}
        self.step_ticks = 1
        self.dt_h = 0.0

    def init(self, sid, time_resolution=1.0, step_s=900):
        ticks = step_s / time_resolution
        if ticks < 1 or abs(ticks - round(ticks)) > 1e-9:
            raise ValueError(f"step_s ({step_s}) must be a whole number >= 1 of time_resolution")
        self.step_ticks = int(round(ticks))
        self.dt_h = step_s / 3600.0
        return self.meta

    def create(self, num, model, **params):
        out = []
        for _ in range(num):
            eid = f"Battery-{len(self.batteries)}"
            self.batteries[eid] = Battery(**params)
            out.append({"eid": eid, "type": model})
        return out

    def step(self, time, inputs, max_advance):
        for eid, battery in self.batteries.items():
            sources = inputs.get(eid, {}).get("p_load_kw", {})
            values = [float(v) for v in sources.values() if v is not None]
            p_load = math.fsum(values)
            if not math.isfinite(p_load):
                raise ValueError(f"{eid}.p_load_kw is not finite: {sources}")
            battery.step(p_load, self.dt_h)
        return time + self.step_ticks

    def get_data(self, outputs):
        data = {}
        for eid, attrs in outputs.items():
            b = self.batteries[eid]
            values = {"p_load_kw": b.p_load_kw, "p_kw": b.p_kw, "q_kvar": 0.0,
                      "p_grid_kw": b.p_load_kw + b.p_kw, "soc": b.e_kwh / b.capacity_kwh,
                      "e_kwh": b.e_kwh, "e_loss_kwh": b.e_loss_kwh}
            data[eid] = {a: values[a] for a in attrs}
        return data


def main() -> None:
    """``python battery.py HOST:PORT`` (mosaik ``cmd``) or ``python battery.py -r HOST:PORT`` (listen)."""
    mosaik_api_v3.start_simulation(HomeBatterySimulator(), "home battery")


if __name__ == "__main__":
    main()
