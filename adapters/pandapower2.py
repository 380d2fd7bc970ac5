"""The stock ``mosaik-pandapower-2`` grid in a study: the project's thin adapter.

``grid.simulator = "mosaik-pandapower-2"`` (``docs/external_simulators.md``) runs
the power flow in the stock simulator (``mosaik_components.pandapower:Simulator``,
mosaik-pandapower-2 1.1.1) instead of :mod:`simulators.grid`. It differs from the
project's grid in ways this module bridges, and in nothing else::

    base load, PV, EVs, DER ──kW──> GridFeed "Bus-R11", "Load-R1", ...  (project names, kW)
        GridFeed ──P_load[MW], Q_load[MVar]──> PandaPower Bus-<index>     (x 1e-3, summed)
    PandaPower Bus-<i> Vm[pu], Va[deg]; Line-<i> I[kA], loading[%] ──> GridResults "Grid"
        GridResults "Grid": the project grid's outputs (bus_vm_pu, violation counts, records)

- **Inputs**: the stock grid takes power only at its buses (``Bus-<index>``:
  ``P_load[MW]``, ``Q_load[MVar]``, into one extra load per bus, several sources
  summed); its ``Load``/``StaticGen`` entities have no inputs. So the network is
  handed to it (a pandapower JSON file) with every load, sgen and storage unit at
  zero power, and each of them gets a ``GridFeed`` entity named as in the project
  (:func:`simulators.grid.naming.element_eids`) that puts its power, load
  convention, at its bus: the inputs if any arrived (summed, replacing the
  element's value, as the project's grid does), else the element's own value from
  the network (``p_mw * scaling``; an sgen's sign turned, as load convention).
  ``Bus-*`` feeds add what they get (nothing: zero). ``p_mw = p_kw / 1000``.
- **Outputs**: ``GridResults``' one ``Grid`` entity gets every bus voltage and line
  current/loading of the stock grid and publishes what the project's ``Grid``
  entity publishes (:mod:`simulators.grid.mosaik_api`): ``bus_vm_pu`` and
  ``bus_va_degree`` (pandapower bus index -> value), ``vm_min_pu``, ``vm_max_pu``,
  ``n_bus_violations`` (``vm`` outside ``[vm_min_pu, vm_max_pu]``),
  ``n_line_violations`` (``loading_percent > max_line_loading_percent``),
  ``max_line_loading_percent`` and ``records`` (``Bus`` and ``Line`` tables under
  the project's entity names), all computed here from the stock grid's results.
- **Not available** from the stock grid (``None`` in the recorded ``Grid`` table,
  no ``Trafo`` table, so no ``max_trafo_loading_percent`` in the summary): it has
  no transformer entities, so no transformer loading, power or violation count
  (``max_trafo_p_hv_kw`` too: a DSO congestion policy gets no transformer values), and
  no ``pf_seconds``. ``pf_converged`` is always true: a power flow that does not
  converge raises in the stock simulator and fails the run (the project's grid
  records such a step and goes on).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import mosaik_api_v3
import numpy as np

#: mosaik simulator names (sim_config keys) of the stock grid and the two adapters
STOCK_SIM, FEED_SIM, RESULTS_SIM = "PandaPower", "GridFeed", "GridResults"
GRID_OUTPUTS = ("pf_converged", "pf_seconds", "vm_min_pu", "vm_max_pu", "n_bus_violations",
                "n_line_violations", "n_trafo_violations", "max_line_loading_percent",
                "max_trafo_loading_percent", "max_trafo_p_hv_kw", "bus_vm_pu", "bus_va_degree", "records")
_KW_PER_MW = 1000.0


def stock_net_json(net, path: Path, ext_grid_vm_pu: float | None = None) -> dict[str, list]:
    """Write ``net`` for the stock grid (loads, sgens, storage at zero power) to ``path``.

    Returns
    -------
    dict
        ``"feeds"``: one ``GridFeed`` entity per project element,
        ``[eid, pandapower bus, own p_kw, own q_kvar]`` (load convention, [kW], [kvar]),
        for every bus, load, sgen and storage unit.
    """
    import copy

    import pandapower as pp

    from simulators.grid.naming import element_eids

    stock = copy.deepcopy(net)
    feeds: list[list] = [[eid, int(i), 0.0, 0.0] for i, eid in element_eids(net, "bus").items()]
    for element, sign in (("load", 1.0), ("sgen", -1.0), ("storage", 1.0)):
        table = net[element]
        for i, eid in element_eids(net, element).items():
            row = table.loc[i]
            on = bool(row.get("in_service", True))
            scaling = float(row.get("scaling", 1.0))
            p = sign * float(row["p_mw"]) * scaling * _KW_PER_MW if on else 0.0
            q = sign * float(row["q_mvar"]) * scaling * _KW_PER_MW if on else 0.0
            feeds.append([eid, int(row["bus"]), p, q])
        if len(table):
            stock[element]["p_mw"] = 0.0
            stock[element]["q_mvar"] = 0.0
    if ext_grid_vm_pu is not None and len(stock.ext_grid):
        stock.ext_grid["vm_pu"] = float(ext_grid_vm_pu)
    pp.to_json(stock, str(path))
    return {"feeds": feeds}


# ---------------------------------------------------------------- GridFeed ---

FEED_META = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {"Feed": {"public": True, "params": ["eid", "bus", "p_kw", "q_kvar"],
                        "attrs": ["p_kw", "q_kvar", "p_mw", "q_mvar"]}},
}


class GridFeedSimulator(mosaik_api_v3.Simulator):
    """Project-named power inputs [kW, kvar] -> the stock grid's bus inputs [MW, MVar]."""

    def __init__(self) -> None:
        super().__init__(FEED_META)
        self.own: dict[str, tuple[float, float]] = {}
        self.out: dict[str, dict[str, float]] = {}
        self.step_ticks = 1

    def init(self, sid, time_resolution=1.0, step_s=1):
        self.step_ticks = max(1, int(round(step_s / time_resolution)))
        return self.meta

    def create(self, num, model, eid, bus, p_kw=0.0, q_kvar=0.0):
        if num != 1 or eid in self.own:
            raise ValueError(f"one feed per element: {eid!r} (num = {num})")
        self.own[eid] = (float(p_kw), float(q_kvar))
        self.out[eid] = {"p_mw": float(p_kw) / _KW_PER_MW, "q_mvar": float(q_kvar) / _KW_PER_MW}
        return [{"eid": eid, "type": model}]

    def step(self, time, inputs, max_advance):
        for eid, (p_own, q_own) in self.own.items():
            attrs = inputs.get(eid, {})
            out = self.out[eid]
            for attr, own, key in (("p_kw", p_own, "p_mw"), ("q_kvar", q_own, "q_mvar")):
                values = [v for v in attrs.get(attr, {}).values() if v is not None]
                if values:  # inputs replace a load's/sgen's value; a bus's extra demand is their sum
                    out[key] = math.fsum(float(v) for v in values) / _KW_PER_MW
                else:
                    out[key] = own / _KW_PER_MW
        return time + self.step_ticks

    def get_data(self, outputs):
        return {eid: {a: self.out[eid][a] for a in attrs} for eid, attrs in outputs.items()}


# ------------------------------------------------------------- GridResults ---

RESULTS_META = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {"Grid": {"public": True, "any_inputs": True,
                        "params": ["bus_eids", "line_eids", "vm_min_pu", "vm_max_pu",
                                   "max_line_loading_percent"],
                        "attrs": list(GRID_OUTPUTS)}},
}


class GridResultsSimulator(mosaik_api_v3.Simulator):
    """The stock grid's results as the project grid's ``Grid`` outputs (module docstring)."""

    def __init__(self) -> None:
        super().__init__(RESULTS_META)
        self.step_ticks = 1
        self.params: dict[str, Any] = {}
        self.values: dict[str, Any] = {a: None for a in GRID_OUTPUTS}

    def init(self, sid, time_resolution=1.0, step_s=1):
        self.step_ticks = max(1, int(round(step_s / time_resolution)))
        return self.meta

    def create(self, num, model, bus_eids, line_eids, vm_min_pu, vm_max_pu, max_line_loading_percent):
        if num != 1 or self.params:
            raise ValueError("one Grid results entity")
        # pandapower index (str keys: JSON) -> project entity id
        self.params = {"bus": {int(k): v for k, v in bus_eids.items()},
                       "line": {int(k): v for k, v in line_eids.items()},
                       "vm_min_pu": float(vm_min_pu), "vm_max_pu": float(vm_max_pu),
                       "max_line": float(max_line_loading_percent)}
        return [{"eid": "Grid", "type": model}]

    @staticmethod
    def _by_index(values: dict[str, Any]) -> dict[int, float]:
        """``{"PandaPower-0.Bus-3": v}`` -> ``{3: v}`` (None -> NaN)."""
        return {int(src.rsplit("-", 1)[1]): (math.nan if v is None else float(v)) for src, v in values.items()}

    def step(self, time, inputs, max_advance):
        attrs = inputs.get("Grid", {})
        par = self.params
        vm, va = self._by_index(attrs.get("Vm[pu]", {})), self._by_index(attrs.get("Va[deg]", {}))
        i_ka, loading = self._by_index(attrs.get("I[kA]", {})), self._by_index(attrs.get("loading[%]", {}))
        buses, lines = sorted(par["bus"]), sorted(par["line"])
        vm_arr = np.array([vm.get(b, math.nan) for b in buses])
        va_arr = np.array([va.get(b, math.nan) for b in buses])
        ld_arr = np.array([loading.get(i, math.nan) for i in lines])
        on = np.isfinite(vm_arr)  # energised buses (the project grid's bus_vm_pu covers only these)
        v = vm_arr[on]
        ld = np.nan_to_num(ld_arr, nan=0.0)
        self.values = {
            "pf_converged": True, "pf_seconds": None,
            "vm_min_pu": float(v.min()) if v.size else None, "vm_max_pu": float(v.max()) if v.size else None,
            "n_bus_violations": int(np.count_nonzero((v < par["vm_min_pu"]) | (v > par["vm_max_pu"]))),
            "n_line_violations": int(np.count_nonzero(ld > par["max_line"])),
            "n_trafo_violations": None,
            "max_line_loading_percent": float(ld.max()) if ld.size else 0.0,
            "max_trafo_loading_percent": None, "max_trafo_p_hv_kw": None,
            "bus_vm_pu": {str(b): float(x) for b, x, o in zip(buses, vm_arr, on) if o},
            "bus_va_degree": {str(b): float(x) for b, x, o in zip(buses, va_arr, on) if o},
            "records": {
                "Bus": {"entity": [par["bus"][b] for b in buses], "vm_pu": vm_arr.tolist(),
                        "va_degree": va_arr.tolist()},
                "Line": {"entity": [par["line"][i] for i in lines],
                         "i_ka": [i_ka.get(i, math.nan) for i in lines], "loading_percent": ld_arr.tolist()},
            },
        }
        return time + self.step_ticks

    def get_data(self, outputs):
        return {eid: {a: self.values[a] for a in attrs} for eid, attrs in outputs.items()}
