"""mosaik adapter for :class:`simulators.scheduler.controller.Controller`.

Event-based: stepped when the fleet publishes ``fleet_state`` (once per step, see
the fleet adapter), it answers with ``setpoints`` for the same step. Connect it to
the fleet with ``weak=True`` inside a ``world.group()`` so the loop closes within
the step. The grid's ``bus_vm_pu``/``bus_va_degree`` may be connected with
``time_shifted`` (the last measurement) for re-linearisation.
"""

from __future__ import annotations

import math
from pathlib import Path

import mosaik_api_v3

from adapters.networks import load_network
from simulators.scheduler.controller import Controller, ControllerConfig
from simulators.scheduler.fleet_view import FleetView
from simulators.scheduler.problem import GridBounds, StrategyOptions
from simulators.setpoints import is_columnar

META = {
    "api_version": "3.0",
    "type": "event-based",
    "models": {
        "Scheduler": {
            "public": True,
            "params": ["network", "base_dir", "ext_grid_vm_pu", "strategy", "mode", "limits", "options",
                       "relinearise", "ac_iterations", "autonomous", "e_star_kwh", "forecast_p_kw", "forecast_q_kvar", "ev_specs", "replay",
                       "realtime", "flex", "replan_first_s", "replan_period_s"],
            "attrs": ["fleet_state", "bus_vm_pu", "bus_va_degree",
                      "setpoints", "solve_s", "status", "fallback", "soft_violation_max",
                      "objective", "n_planned", "requests", "flex_offer", "records"],
        },
    },
}


class SchedulerSimulator(mosaik_api_v3.Simulator):
    """Thin mosaik wrapper: inputs -> :meth:`Controller.plan` -> outputs."""

    def __init__(self) -> None:
        super().__init__(META)
        self.controller: Controller | None = None
        self.step_s = 0
        self.time_resolution = 1.0
        self.n_steps = 0
        self._out: dict = {}
        self._measured: dict | None = None
        self._last_time: int | None = None
        self.realtime = None
        self._requests: list = []

    def init(self, sid, time_resolution=1.0, step_size=900, n_steps=1, **sim_params):
        if time_resolution <= 0:
            raise ValueError(f"time_resolution must be > 0 s, got {time_resolution}")
        if step_size <= 0 or n_steps <= 0:
            raise ValueError(f"step_size and n_steps must be > 0, got {step_size}, {n_steps}")
        self.time_resolution = float(time_resolution)
        self.step_s = int(step_size)
        self.n_steps = int(n_steps)
        return self.meta

    def create(self, num, model, network, strategy, mode, limits, options=None, relinearise=False,
               ac_iterations=0, autonomous=None, e_star_kwh=0.0, forecast_p_kw=None, forecast_q_kvar=None, ev_specs=None, base_dir=None,
               ext_grid_vm_pu=None, replay=None, realtime=None, flex=None, replan_first_s=0, replan_period_s=86400):
        if num != 1 or self.controller is not None:
            raise ValueError("exactly one Scheduler entity per simulator")
        net = load_network(network, None if base_dir is None else Path(base_dir))
        if ext_grid_vm_pu is not None:  # the operator knows the slack voltage setpoint
            net.ext_grid["vm_pu"] = float(ext_grid_vm_pu)
        config = ControllerConfig(
            strategy=strategy, mode=mode, step_s=self.step_s, n_steps=self.n_steps,
            limits=GridBounds(**limits), options=StrategyOptions(**(options or {})),
            relinearise=bool(relinearise), ac_iterations=int(ac_iterations), e_star_kwh=float(e_star_kwh),
            autonomous=dict(autonomous or {}), flex=dict(flex or {}),
            replan_first_s=int(replan_first_s), replan_period_s=int(replan_period_s),
        )
        fp = {int(b): v for b, v in (forecast_p_kw or {}).items()}
        fq = {int(b): v for b, v in (forecast_q_kvar or {}).items()}
        self.controller = Controller(net, config, fp, fq, ev_specs, replay)
        if realtime is not None:
            from simulators.scheduler.realtime import RealTime

            groups = {g: [int(b) for b in buses] for g, buses in (realtime.get("groups") or {}).items()}
            self.realtime = RealTime(self.controller, groups, float(realtime.get("time_limit_s", 10.0)))
        return [{"eid": "Scheduler", "type": model}]

    def step(self, time, inputs, max_advance):
        data = inputs.get("Scheduler", {})
        vm = _single(data.get("bus_vm_pu"))
        va = _single(data.get("bus_va_degree"))
        if vm:
            self._measured = {"vm_pu": vm, "va_degree": va or {}}
        for reqs in (data.get("requests") or {}).values():
            self._requests.extend(reqs or [])  # kept until the step that has the fleet's state
        state = _single(data.get("fleet_state"))
        self._out = {}
        if state is None or time == self._last_time:
            return None
        self._last_time = time
        state = FleetView.from_value(state)  # checks every EV's numbers are finite
        k = int(round(time * self.time_resolution / self.step_s))
        n_solves = self.controller.n_solves
        setpoints, info = self.controller.plan(k, state, self._measured)
        extra = {}
        if self.realtime is not None:
            requests, self._requests = self._requests, []
            if self.realtime.on_step(k, state, requests, resolved=self.controller.n_solves != n_solves):
                setpoints, _ = self.controller.setpoints_now(k, state)
            extra = self._realtime_outputs(k, state, setpoints)
        self._out = {
            "setpoints": setpoints,
            "solve_s": float(info.solve_s),
            "status": info.status,
            "fallback": bool(info.fallback),
            "soft_violation_max": float(info.soft_violation_max),
            "objective": float(info.objective) if math.isfinite(info.objective) else None,
            "n_planned": len(setpoints["ev_id"]) if is_columnar(setpoints) else len(setpoints),
            **extra,
        }
        return None

    def _realtime_outputs(self, k: int, state: FleetView, setpoints: dict) -> dict:
        rt = self.realtime
        offer = rt.offer(k, state)
        p_plan = {e: float(sp[0]) for e, sp in setpoints.items()}
        bus = dict(zip(state.ids, state.col("bus").tolist()))
        names = ["Flex"] + sorted(rt.groups)
        plan_kw = [sum(p_plan.values())] + [
            sum(p for e, p in p_plan.items() if int(bus[e]) in set(rt.groups[g].tolist())) for g in names[1:]]
        first = lambda a: float(a[0]) if len(a) else 0.0  # noqa: E731
        records = {"Flex": {
            "entity": [n if n == "Flex" else f"Flex-{n}" for n in names],
            "up_kw": [first(offer["up_kw"])] + [first(offer["groups"][g]["up_kw"]) for g in names[1:]],
            "down_kw": [first(offer["down_kw"])] + [first(offer["groups"][g]["down_kw"]) for g in names[1:]],
            "plan_p_kw": plan_kw,
        }}
        changed = rt.changed_records()
        if changed:
            records.update(changed)
        return {"flex_offer": offer, "records": records}

    def get_data(self, outputs):
        if not self._out:
            return {}
        return {"Scheduler": {a: self._out[a] for a in outputs.get("Scheduler", []) if a in self._out}}


def _single(values):
    """The one value of a single-source input (or None)."""
    if not values:
        return None
    return next(iter(values.values()))


def main() -> None:
    """Start the scheduler as an external process (mosaik ``cmd``/``connect``)."""
    mosaik_api_v3.start_simulation(SchedulerSimulator(), "ev-grid-cosim scheduler")


if __name__ == "__main__":
    main()
