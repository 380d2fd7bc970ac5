"""mosaik adapter of the EV fleet model (:mod:`simulators.ev_fleet.model`).

Entities (see ``docs/conventions.md``):

- ``Fleet`` (public, one per simulator instance; eid ``"Fleet"``): input
  ``setpoints`` (trigger): dict ev_id -> ``[p_kw, q_kvar]`` or
  ``[p_kw, q_kvar, bus]``, or the same column-wise (``{"ev_id": [...], "p_kw":
  [...], "q_kvar": [...](, "bus": [...])}``). Several sources are merged; the same EV from two
  sources is an error. Output ``fleet_state`` (non-persistent): the EVs that
  have arrived, column-wise (``{"ev_id": [...], "soc": [...], ...}``, see
  :meth:`FleetModel.fleet_state`); published once per time ``t``, by the first
  step at ``t`` only, so that a scheduler fed by it and feeding ``setpoints``
  back over a ``weak`` connection runs exactly one same-time loop per step.
- ``EV-<i>`` (children): outputs ``soc`` [-] and ``plugged`` at the instant
  ``t``; ``p_kw``, ``q_kvar`` (applied, average over ``[t, t + step)``, load
  convention), ``p_clipped_kw``, ``q_clipped_kvar`` (setpoint minus applied),
  ``bus`` (bus during the step), ``e_needed_kwh`` (battery energy to the
  target at ``t``). All persistent.
- ``EVBus-<bus index>`` (children): ``p_kw``, ``q_kvar``, sums over the EVs
  charging at that bus during ``[t, t + step)`` (persistent).
- ``Fleet.injections`` (persistent): every ``EVBus``'s ``p_kw`` and ``q_kvar`` as
  one table ``{"bus": [bus index, ...], "p_kw": [...], "q_kvar": [...]}`` for the
  grid's ``Grid.injections`` input (one value a step instead of two per bus).
- ``Fleet.records`` (persistent): every output of every child in one columnar
  value, ``{"EV": {"entity": [...], "soc": [...], ...}, "EVBus": {...}}``. A
  recorder reads the whole fleet through this one attribute: connecting
  thousands of per-EV attributes costs mosaik ~30 us per value and step.
  Columns are lists, or numpy arrays when started in-process with
  ``numpy_columns=True`` (:mod:`simulators.records`).

Timing: the fleet steps itself every ``step_size`` seconds. When setpoints
arrive at the same time (from a scheduler in a same-time loop), it is stepped
again at that time and recomputes the interval from the state at ``t``
(idempotent; energy is never counted twice). The scheduler must be in the same
``world.group()`` as the fleet (mosaik 3.6 allows weak connections only inside
groups) and connected with ``weak=True``.

Run out of process with ``python -m simulators.ev_fleet.mosaik_api``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import mosaik_api_v3
import numpy as np
from mosaik_api_v3.datetime import Converter

from simulators.ev_fleet.model import FleetModel
from simulators.ev_fleet.population import EVSpec
from simulators.records import as_lists, column
from simulators.setpoints import setpoint_rows

__all__ = ["EV_ATTRS", "EVBUS_ATTRS", "FLEET_EID", "META", "FleetSimulator", "main"]

FLEET_EID = "Fleet"

EV_ATTRS = [
    "soc",
    "plugged",
    "p_kw",
    "q_kvar",
    "e_needed_kwh",
    "p_clipped_kw",
    "q_clipped_kvar",
    "bus",
]
EVBUS_ATTRS = ["p_kw", "q_kvar"]

META: dict[str, Any] = {
    "type": "hybrid",
    "api_version": "3.0",
    "models": {
        "Fleet": {
            "public": True,
            "params": ["specs", "e_star_kwh", "charging_buses"],
            "attrs": ["setpoints", "fleet_state", "records", "injections"],
            "trigger": ["setpoints"],
            "non-persistent": ["fleet_state"],
        },
        "EV": {"public": False, "params": [], "attrs": list(EV_ATTRS)},
        "EVBus": {"public": False, "params": [], "attrs": list(EVBUS_ATTRS)},
    },
}



def _finite_positive(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


class FleetSimulator(mosaik_api_v3.Simulator):
    """mosaik simulator wrapping one :class:`FleetModel`."""

    def __init__(self) -> None:
        super().__init__(META)
        self._model: FleetModel | None = None
        self._time_resolution = 1.0
        self._step_s = 0.0
        self._step_ticks = 0
        self._converter: Converter | None = None
        self._last_time: int | None = None
        self._publish_state = False
        self._ev_eids: dict[str, int] = {}
        self._bus_eids: dict[str, int] = {}
        self._buses: list[int] = []

    def init(
        self,
        sid: str,
        time_resolution: float = 1.0,
        step_size: float = 900,
        start_date: str | None = None,
        numpy_columns: bool = False,
    ) -> dict[str, Any]:
        """Check the time base.

        Parameters
        ----------
        sid : str
            Simulator id.
        time_resolution : float
            Seconds per mosaik tick [s], > 0.
        step_size : float
            Step length [s]; must be a whole number of ticks.
        start_date : str, optional
            ISO date-time of tick 0 (only checked and kept for conversions).
        numpy_columns : bool, default False
            Publish column-wise outputs (``records``, ``fleet_state``) as numpy
            arrays (only if every consumer runs in mosaik's process;
            :mod:`simulators.records`).

        Raises
        ------
        ValueError
            On a non-positive resolution or step, or a step that is not a whole
            number of ticks.
        """
        if not _finite_positive(time_resolution):
            raise ValueError(
                f"time_resolution must be a finite number > 0 s, got {time_resolution!r}"
            )
        if not _finite_positive(step_size):
            raise ValueError(f"step_size must be a finite number > 0 s, got {step_size!r}")
        ticks = step_size / time_resolution
        if abs(ticks - round(ticks)) > 1e-9 * max(1.0, ticks) or round(ticks) < 1:
            raise ValueError(
                f"step_size ({step_size} s) must be a whole number (>= 1) of "
                f"time_resolution ({time_resolution} s)"
            )
        self._time_resolution = float(time_resolution)
        self.numpy_columns = bool(numpy_columns)
        self._step_s = float(step_size)
        self._step_ticks = int(round(ticks))
        if start_date is not None:
            try:
                self._converter = Converter(start_date, self._time_resolution)
            except (TypeError, ValueError) as err:
                raise ValueError(f"start_date is not an ISO date-time: {err}") from None
        return self.meta

    def create(
        self,
        num: int,
        model: str,
        specs: list[Mapping[str, Any]] | None = None,
        e_star_kwh: float = 0.0,
        charging_buses: list[int] | None = None,
    ) -> list[dict[str, Any]]:
        """Create the one ``Fleet`` entity with its ``EV-*`` and ``EVBus-*``
        children.

        Parameters
        ----------
        num : int
            Must be 1.
        model : str
            ``"Fleet"``.
        specs : list of dict
            EV specs as plain dicts (:meth:`EVSpec.to_dict`); JSON-able.
        e_star_kwh : float
            Energy per autonomous drive leg [kWh] (seed 001, section III-B).
        charging_buses : list of int, optional
            Buses where EVs may charge besides their home buses.
        """
        if model != "Fleet":
            raise ValueError(f"unknown model {model!r}; this simulator creates 'Fleet'")
        if num != 1 or self._model is not None:
            raise ValueError("exactly one Fleet per simulator instance can be created")
        if specs is None:
            raise ValueError("Fleet needs the 'specs' parameter (list of EV spec dicts)")
        ev_specs = [s if isinstance(s, EVSpec) else EVSpec.from_dict(s) for s in specs]
        self._model = FleetModel(
            ev_specs,
            self._step_s,
            e_star_kwh,
            charging_buses=charging_buses,
        )
        self._ev_eids = {ev_id: i for i, ev_id in enumerate(self._model.ev_ids)}
        self._buses = [int(b) for b in self._model.buses.tolist()]
        self._bus_eids = {f"EVBus-{b}": j for j, b in enumerate(self._buses)}
        children = [{"eid": eid, "type": "EV", "rel": []} for eid in self._ev_eids]
        children += [{"eid": eid, "type": "EVBus", "rel": []} for eid in self._bus_eids]
        return [{"eid": FLEET_EID, "type": "Fleet", "rel": [], "children": children}]

    def step(self, time: int, inputs: dict[str, Any], max_advance: int) -> int:
        """Step the fleet to ``time`` [ticks], applying any received setpoints.

        Returns the next self-step ``time + step`` [ticks].

        Raises
        ------
        ValueError
            On malformed or non-finite setpoints (naming EV and attribute), or
            one EV receiving setpoints from two sources.
        """
        if self._model is None:
            raise RuntimeError("step before the Fleet was created")
        setpoints = self._merge_setpoints(inputs.get(FLEET_EID, {}).get("setpoints", {}))
        self._publish_state = time != self._last_time
        self._model.step(time * self._time_resolution, setpoints)
        self._last_time = time
        return time + self._step_ticks

    @staticmethod
    def _merge_setpoints(by_source: Mapping[str, Any]) -> Mapping[str, Any]:
        values = {src: v for src, v in by_source.items() if v is not None}
        for src, value in values.items():
            if not isinstance(value, Mapping):
                raise ValueError(
                    f"setpoints from {src} must be a dict ev_id -> [p_kw, q_kvar(, bus)] "
                    f"or column-wise, got {type(value).__name__}"
                )
        if len(values) == 1:  # the usual case: one scheduler, passed on as it is
            return next(iter(values.values()))
        merged: dict[str, Any] = {}
        for src in sorted(values):
            value = setpoint_rows(values[src])
            twice = merged.keys() & value.keys()
            if twice:
                raise ValueError(
                    f"setpoints for {sorted(twice)[:5]} come from more than one source"
                )
            merged.update(value)
        return merged

    def get_data(self, outputs: dict[str, list[str]]) -> dict[str, Any]:
        """Return the requested outputs as built-in Python values (``records``
        columns: see :mod:`simulators.records`)."""
        model = self._model
        if model is None:
            raise RuntimeError("get_data before the Fleet was created")
        arrays: dict[str, np.ndarray] = {}
        lists: dict[str, list[Any]] = {}

        def ev_array(attr: str) -> np.ndarray:
            if attr not in arrays:
                arr = np.asarray(getattr(model, attr))
                if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                    bad = model.ev_ids[int(np.flatnonzero(~np.isfinite(arr))[0])]
                    raise RuntimeError(f"non-finite output {attr} of {bad}")
                arrays[attr] = arr
            return arrays[attr]

        def ev_values(attr: str) -> list[Any]:
            if attr not in lists:
                lists[attr] = ev_array(attr).tolist()
            return lists[attr]

        bus_pq: tuple[list[float], list[float]] | None = None
        data: dict[str, Any] = {}
        for eid, attrs in outputs.items():
            if eid == FLEET_EID:
                row = {}
                for attr in attrs:
                    if attr not in ("fleet_state", "records", "injections"):
                        raise ValueError(f"Fleet has no output {attr!r}")
                if self._publish_state and "fleet_state" in attrs:
                    row["fleet_state"] = model.fleet_state(as_lists=as_lists(self))
                if "records" in attrs:
                    p, q = model.bus_power()
                    listed = as_lists(self)
                    row["records"] = {
                        "EV": {"entity": list(self._ev_eids),
                               **{a: column(ev_array(a), listed) for a in EV_ATTRS}},
                        "EVBus": {"entity": list(self._bus_eids), "p_kw": column(p, listed),
                                  "q_kvar": column(q, listed)},
                    }
                if "injections" in attrs:
                    p, q = model.bus_power()
                    if not (np.isfinite(p).all() and np.isfinite(q).all()):
                        raise RuntimeError("non-finite bus power output")
                    listed = as_lists(self)
                    row["injections"] = {"bus": self._buses if listed else np.array(self._buses),
                                         "p_kw": column(p, listed), "q_kvar": column(q, listed)}
                if row:
                    data[eid] = row
            elif eid in self._ev_eids:
                i = self._ev_eids[eid]
                row: dict[str, Any] = {}
                for attr in attrs:
                    if attr not in EV_ATTRS:
                        raise ValueError(f"EV has no output {attr!r}")
                    row[attr] = ev_values(attr)[i]
                data[eid] = row
            elif eid in self._bus_eids:
                if bus_pq is None:
                    p, q = model.bus_power()
                    if not (np.isfinite(p).all() and np.isfinite(q).all()):
                        raise RuntimeError("non-finite bus power output")
                    bus_pq = (p.tolist(), q.tolist())
                j = self._bus_eids[eid]
                row = {}
                for attr in attrs:
                    if attr == "p_kw":
                        row[attr] = bus_pq[0][j]
                    elif attr == "q_kvar":
                        row[attr] = bus_pq[1][j]
                    else:
                        raise ValueError(f"EVBus has no output {attr!r}")
                data[eid] = row
            else:
                raise ValueError(f"unknown entity {eid!r}")
        return data


def main() -> int:
    """Start the fleet as an external mosaik process."""
    return mosaik_api_v3.start_simulation(FleetSimulator(), "ev-grid-cosim EV fleet")


if __name__ == "__main__":
    main()
