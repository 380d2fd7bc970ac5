"""mosaik adapter for :mod:`simulators.grid.model` (time-based AC power flow).

One ``Grid`` entity per simulator instance, with children named by
:func:`simulators.grid.naming.element_eids` (``docs/conventions.md``)::

    grid_sim = world.start("Grid", step_s=900)
    grid = grid_sim.Grid(network="cigre_mv", vm_min_pu=0.97, vm_max_pu=1.03)
    buses = {e.eid: e for e in grid.children if e.type == "Bus"}   # Bus-1, ...
    world.connect(ev_bus, buses["Bus-1"], "p_kw", "q_kvar")

Inputs (load convention, [kW, kvar]; a value at tick ``t`` holds for ``[t, t + step)``)

- ``Bus-*``: ``p_kw``, ``q_kvar``: extra demand at the bus. Values from several
  sources are **summed** (EVs, PV, ... at one bus add up). A bus without input
  in a step has no extra demand.
- ``Load-*``: ``p_kw``, ``q_kvar``: **replace** the network load's own value for
  that step (several sources are summed first). A load without input keeps the
  network's value.
- ``Sgen-*`` (static generators: PV, wind, ... of the network) and ``Storage-*``:
  ``p_kw``, ``q_kvar`` in **load convention** (a producing sgen is negative),
  replacing the element's own value like ``Load-*``. An sgen or storage unit
  without input stays at its static value from the network file (the runner
  drives every one of them, or switches them off, and says so in the summary).

Outputs (built-in ``float``/``int``/``bool``, never NaN; ``None`` = no valid value)

- ``Grid``: ``pf_converged``, ``pf_seconds`` (wall time of this step's power
  flow [s]), ``vm_min_pu``, ``vm_max_pu``, ``n_bus_violations``,
  ``n_line_violations``, ``n_trafo_violations``, ``max_line_loading_percent``,
  ``max_trafo_loading_percent``, ``max_trafo_p_hv_kw`` (HV-side P of the most
  loaded transformer [kW], < 0 in reverse flow), ``bus_vm_pu`` and ``bus_va_degree`` (dicts
  ``str(pandapower bus index) -> value`` over the energised buses: JSON object
  keys are strings).
- ``Bus-*``: ``vm_pu``, ``va_degree`` (``None`` for de-energised buses).
- ``Line-*``: ``i_ka``, ``loading_percent``.
- ``Trafo-*``: ``loading_percent``, ``p_hv_kw``, ``q_hv_kvar``.

- ``Grid``: ``injections``: many elements' ``p_kw`` and ``q_kvar`` in one value
  per source and step, a table ``{"entity": [child eid, ...], "p_kw": [...],
  "q_kvar": [...]}`` (``Load-*``, ``Sgen-*``, ``Storage-*``, ``Bus-*`` children)
  or ``{"bus": [pandapower bus index, ...], "p_kw": [...], "q_kvar": [...]}``
  (extra demand at the bus); columns are lists or numpy arrays. Each row means
  what the same value connected to that child means, and adds to that child's
  other inputs (the sum is ``math.fsum`` over every contribution, whichever way it
  came). mosaik routes one value per connected attribute at ~10-30 us each: the
  base load's 99 loads of a SimBench LV grid were 198 values a step, now one
  (the runner connects in-process base load, DER and fleet this way).

When the power flow does not converge (after the model's retries) every result
attribute is ``None``: consumers see ``pf_converged = False`` and no stale or NaN
values. (Leaving the attributes out of ``get_data`` instead makes mosaik 3.6
substitute ``None`` anyway, with a ``UserWarning`` that says it will become an
error; outputs of time-based simulators must be persistent, so explicit
``None`` is the forward-compatible form of "no value".)

Run out of process (mosaik ``cmd`` starter)::

    python -m simulators.grid.mosaik_api %(addr)s
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import mosaik_api_v3
import numpy as np
from mosaik_api_v3.datetime import Converter

from adapters.networks import load_network
from simulators.grid.model import GridLimits, GridModel, GridState
from simulators.grid.naming import element_eids
from simulators.records import as_lists, column

GRID_PARAMS = (
    "network", "vm_min_pu", "vm_max_pu", "max_line_loading_percent",
    "max_trafo_loading_percent", "ext_grid_vm_pu", "base_dir", "solver", "study_case",
)
GRID_OUTPUTS = (
    "pf_converged", "pf_seconds", "vm_min_pu", "vm_max_pu", "n_bus_violations",
    "n_line_violations", "n_trafo_violations", "max_line_loading_percent",
    "max_trafo_loading_percent", "max_trafo_p_hv_kw", "bus_vm_pu", "bus_va_degree", "records",
)

# The one table META is built from: model -> (public, params, inputs, outputs,
# how several sources of one input combine).
ENTITY_SPECS: dict[str, tuple[bool, tuple[str, ...], tuple[str, ...], tuple[str, ...], str]] = {
    "Grid": (True, GRID_PARAMS, ("injections",), GRID_OUTPUTS,
             "tables: each source's elements add to that element's other inputs (summed)"),
    "Bus": (False, (), ("p_kw", "q_kvar"), ("vm_pu", "va_degree"),
            "sum: extra demand at the bus, summed over all sources"),
    "Load": (False, (), ("p_kw", "q_kvar"), (),
             "sum, then replace: the summed inputs replace the network load's own value"),
    "Sgen": (False, (), ("p_kw", "q_kvar"), (),
             "sum, then replace: the summed inputs (load convention) replace the sgen's own value"),
    "Storage": (False, (), ("p_kw", "q_kvar"), (),
                "sum, then replace: the summed inputs replace the storage unit's own value"),
    "Line": (False, (), (), ("i_ka", "loading_percent"), ""),
    "Trafo": (False, (), (), ("loading_percent", "p_hv_kw", "q_hv_kvar"), ""),
}

META = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {
        model: {
            "public": public,
            "params": list(params),
            "attrs": list(inputs) + list(outputs),
            "any_inputs": False,
            **({"input_combination": {a: combination for a in inputs}} if inputs else {}),
        }
        for model, (public, params, inputs, outputs, combination) in ENTITY_SPECS.items()
    },
}

GRID_EID = "Grid"
_ELEMENTS = (("Bus", "bus"), ("Load", "load"), ("Sgen", "sgen"), ("Storage", "storage"),
             ("Line", "line"), ("Trafo", "trafo"))


def _number(value: Any, where: str) -> float:
    """One input value as a finite float; raise ValueError naming ``where``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: expected a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{where}: value is not finite ({value!r})")
    return value


#: (element kind, attribute) of every input, in `GridModel.step`'s argument order
_INPUT_KEYS = tuple((kind, attr) for kind in ("Bus", "Load", "Sgen", "Storage") for attr in ("p_kw", "q_kvar"))


def _combine(singles: dict[int, list[float]], tables: list[tuple[np.ndarray, np.ndarray]] | None):
    """One input of `GridModel.step`: index -> ``fsum`` of every contribution.

    Without table rows: a dict, as always. With them: ``(indices, values)`` arrays;
    when every element has one contribution, ``values + 0.0`` (bit for bit
    ``fsum`` of one value), else ``fsum`` per element.
    """
    if not tables:
        return {index: math.fsum(values) for index, values in singles.items()}
    index = np.concatenate([t[0] for t in tables])
    values = np.concatenate([t[1] for t in tables])
    if not singles and len(np.unique(index)) == len(index):
        return index, values + 0.0
    parts: dict[int, list[float]] = {i: list(v) for i, v in singles.items()}
    for i, v in zip(index.tolist(), values.tolist()):
        parts.setdefault(i, []).append(v)
    keys = list(parts)
    return (np.array(keys, dtype=np.int64),
            np.array([math.fsum(parts[k]) for k in keys], dtype=float))


class GridSimulator(mosaik_api_v3.Simulator):
    """Time-based grid simulator; see the module docstring."""

    def __init__(self) -> None:
        super().__init__(META)
        self._record_index: tuple = ()
        self.sid: str | None = None
        self.step_ticks: int | None = None
        self.converter: Converter | None = None
        self.model: GridModel | None = None
        self.state: GridState | None = None
        self._entities: dict[str, tuple[str, int]] = {}  # eid -> (model, pandapower index)
        self._bus_pos: dict[int, int] = {}
        self._table_groups: dict[tuple, tuple] = {}  # injections' entity ids -> `_groups`

    def init(self, sid: str, time_resolution: float = 1.0, *, step_s: float,
             start_date: str | None = None, numpy_columns: bool = False) -> dict:
        """Set the clock.

        Parameters
        ----------
        sid : str
            Simulator id.
        time_resolution : float
            Seconds per mosaik tick [s].
        step_s : float
            Step length [s]; a whole positive number of ``time_resolution``.
        start_date : str, optional
            ISO 8601 time of tick 0 (kept for converting ticks to datetimes).
        numpy_columns : bool, default False
            Publish column-wise outputs (``records``, ``fleet_state``) as numpy
            arrays (only if every consumer runs in mosaik's process;
            :mod:`simulators.records`).
        """
        if isinstance(time_resolution, bool) or not isinstance(time_resolution, (int, float)) \
                or not (math.isfinite(time_resolution) and time_resolution > 0):
            raise ValueError(
                f"time_resolution must be a finite number > 0 [s], got {time_resolution!r}")
        if isinstance(step_s, bool) or not isinstance(step_s, (int, float)) \
                or not (math.isfinite(step_s) and step_s > 0):
            raise ValueError(f"step_s must be a finite number > 0 [s], got {step_s!r}")
        ticks = step_s / time_resolution
        if abs(ticks - round(ticks)) > 1e-9 or round(ticks) < 1:
            raise ValueError(f"step_s ({step_s} s) must be a positive whole number of "
                             f"time_resolution ({time_resolution} s)")
        self.sid = sid
        self.numpy_columns = bool(numpy_columns)
        self.step_ticks = int(round(ticks))
        self.converter = None if start_date is None else Converter(start_date, time_resolution)
        return self.meta

    def create(self, num: int, model: str, *, network: str, vm_min_pu: float, vm_max_pu: float,
               max_line_loading_percent: float = 100.0,
               max_trafo_loading_percent: float = 100.0,
               ext_grid_vm_pu: float | None = None, base_dir: str | None = None,
               solver: str = "auto", study_case: str | None = None) -> list[dict]:
        """Create the one ``Grid`` entity and its children.

        Parameters
        ----------
        network : str
            Network name for :func:`adapters.networks.load_network`.
        vm_min_pu, vm_max_pu : float
            Voltage band for the violation count [pu].
        max_line_loading_percent, max_trafo_loading_percent : float
            Loading limits [%].
        ext_grid_vm_pu : float, optional
            Overrides the slack voltage of every ext_grid [pu] (CIGRE MV ships 1.03);
            None leaves the network as is.
        base_dir : str, optional
            Directory that relative JSON network paths are resolved against.
        solver : {"auto", "direct", "runpp"}
            See `GridModel`.
        study_case : str, optional
            SimBench study case (``"hL"``, ...) applied to the network's static
            values (:func:`adapters.networks.load_network`).
        """
        if model != "Grid":
            raise ValueError(f"unknown or non-public model {model!r}; create 'Grid'")
        if num != 1 or self.model is not None:
            raise ValueError("one Grid per simulator instance: start another simulator for "
                             "another network")
        net = load_network(network, None if base_dir is None else Path(base_dir), study_case=study_case)
        if ext_grid_vm_pu is not None:
            value = _number(ext_grid_vm_pu, "Grid.ext_grid_vm_pu")
            if not 0.5 < value < 1.5:
                raise ValueError(f"Grid.ext_grid_vm_pu must be within (0.5, 1.5), got {value}")
            net.ext_grid["vm_pu"] = value
        limits = GridLimits(vm_min_pu=vm_min_pu, vm_max_pu=vm_max_pu,
                            max_line_loading_percent=max_line_loading_percent,
                            max_trafo_loading_percent=max_trafo_loading_percent)
        children = []
        self._entities = {GRID_EID: ("Grid", -1)}
        for kind, element in _ELEMENTS:  # ids from the network as loaded (no injections yet)
            for index, eid in element_eids(net, element).items():
                self._entities[eid] = (kind, index)
                children.append({"eid": eid, "type": kind})
        self.model = GridModel(net, limits, solver=solver)
        self._bus_pos = {int(b): k for k, b in enumerate(self.model.bus_ids)}
        self._record_index = self._index_records()
        return [{"eid": GRID_EID, "type": "Grid", "children": children}]

    def _index_records(self) -> tuple:
        """Entity ids and result-array positions of every Bus, Line and Trafo."""
        members: dict[str, list[tuple[str, int]]] = {"Bus": [], "Line": [], "Trafo": []}
        for eid, (kind, index) in self._entities.items():
            if kind in members:
                members[kind].append((eid, index))
        model = self.model
        bus_pos = np.array([self._bus_pos.get(i, -1) for _, i in members["Bus"]], dtype=np.int64)
        line_pos = np.array([int(model.line_pos[i]) for _, i in members["Line"]], dtype=np.int64)
        trafo_pos = np.array([int(model.trafo_pos[i]) for _, i in members["Trafo"]], dtype=np.int64)
        ids = {kind: [eid for eid, _ in m] for kind, m in members.items()}
        return ids["Bus"], bus_pos, ids["Line"], line_pos, ids["Trafo"], trafo_pos

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        """Collect the inputs, solve the power flow, return the next tick.

        Every element's value is ``math.fsum`` of its contributions (per-child
        inputs and ``Grid.injections`` rows). An element with one contribution
        ``x`` gets ``x + 0.0`` (= ``fsum([x])``: ``-0.0`` becomes ``0.0``).
        """
        singles: dict[tuple[str, str], dict[int, list[float]]] = {key: {} for key in _INPUT_KEYS}
        tables: dict[tuple[str, str], list[tuple[np.ndarray, np.ndarray]]] = {}
        for eid, attrs in inputs.items():
            kind, index = self._entity(eid)
            for attr, sources in attrs.items():
                if kind == "Grid":
                    if attr != "injections":
                        raise ValueError(f"{eid}.{attr} is not an input")
                    for src, table in sources.items():
                        self._add_table(table, src, tables)
                    continue
                target = singles.get((kind, attr))
                if target is None:
                    raise ValueError(f"{eid}.{attr} is not an input")
                target.setdefault(index, []).extend(_number(v, f"{eid}.{attr} from {src}")
                                                    for src, v in sources.items())
        args = {key: _combine(singles[key], tables.get(key)) for key in _INPUT_KEYS}
        self.state = self.model.step(*(args[key] for key in _INPUT_KEYS))
        return time + self.step_ticks

    def _add_table(self, table: Any, src: str, tables: dict) -> None:
        """Split one ``injections`` table of ``src`` by element kind into ``tables``."""
        where = f"{GRID_EID}.injections from {src}"
        if table is None:
            return
        if not isinstance(table, dict) or ("entity" in table) == ("bus" in table):
            raise ValueError(f"{where}: expected a table with 'entity' or 'bus' and 'p_kw', "
                             f"'q_kvar' columns, got {type(table).__name__}")
        if "bus" in table:
            try:
                buses = np.asarray(table["bus"], dtype=np.int64).reshape(-1)
            except (TypeError, ValueError):
                raise ValueError(f"{where}: 'bus' must be pandapower bus indices") from None
            groups = (("Bus", buses, slice(None)),)
            n, names = len(buses), None
        else:
            names = table["entity"]
            key = tuple(names)
            groups = self._table_groups.get(key)
            if groups is None:
                groups = self._table_groups[key] = self._groups(key, where)
            n = len(key)
        for attr in ("p_kw", "q_kvar"):
            if attr not in table:
                raise ValueError(f"{where}: no {attr!r} column")
            try:
                values = np.asarray(table[attr], dtype=float).reshape(-1)
            except (TypeError, ValueError):
                raise ValueError(f"{where}.{attr}: expected numbers") from None
            if len(values) != n:
                raise ValueError(f"{where}.{attr}: {len(values)} values for {n} rows")
            bad = np.flatnonzero(~np.isfinite(values))
            if bad.size:
                row = names[bad[0]] if names is not None else f"bus {int(buses[bad[0]])}"
                raise ValueError(f"{where}.{attr} of {row}: value is not finite ({values[bad[0]]!r})")
            for kind, index, rows in groups:
                tables.setdefault((kind, attr), []).append((index, values[rows]))

    def _groups(self, names: tuple, where: str) -> tuple:
        """``(kind, pandapower indices, table rows)`` per element kind of ``names``."""
        by_kind: dict[str, tuple[list[int], list[int]]] = {}
        for row, eid in enumerate(names):
            kind, index = self._entities.get(eid, (None, None))
            if (kind, "p_kw") not in _INPUT_KEYS:
                raise ValueError(f"{where}: {eid!r} is not a Load, Sgen, Storage or Bus of this grid")
            by_kind.setdefault(kind, ([], []))[0].append(index)
            by_kind[kind][1].append(row)
        return tuple((kind, np.array(idx, dtype=np.int64), np.array(rows, dtype=np.int64))
                     for kind, (idx, rows) in by_kind.items())

    def _entity(self, eid: str) -> tuple[str, int]:
        try:
            return self._entities[eid]
        except KeyError:
            raise ValueError(f"unknown entity {eid!r}") from None

    def get_data(self, outputs: dict) -> dict:
        """Requested outputs of the last step (result attributes None if not converged)."""
        state = self.state
        data: dict[str, dict[str, Any]] = {}
        for eid, attrs in outputs.items():
            kind, index = self._entity(eid)
            allowed = ENTITY_SPECS[kind][3]
            values: dict[str, Any] = {}
            for attr in attrs:
                if attr not in allowed:
                    raise ValueError(f"{eid}.{attr} is not an output")
                values[attr] = None if state is None else self._value(state, kind, index, attr)
            data[eid] = values
        return data

    def _records(self, state: GridState) -> dict[str, dict[str, Any]]:
        """Every Bus, Line and Trafo output in one columnar value (for a recorder).

        One value per step instead of one per entity and attribute: mosaik spends
        tens of microseconds on each value it routes. A de-energised bus has NaN
        (recorded as null) for its voltage.
        """
        bus_ids, bus_pos, line_ids, line_pos, trafo_ids, trafo_pos = self._record_index
        listed = as_lists(self)
        energised = bus_pos >= 0
        safe = np.where(energised, bus_pos, 0)

        def at_bus(values: np.ndarray) -> np.ndarray:
            return np.where(energised, values[safe], np.nan)

        return {
            "Bus": {"entity": bus_ids, "vm_pu": column(at_bus(state.vm_pu), listed),
                    "va_degree": column(at_bus(state.va_degree), listed)},
            "Line": {"entity": line_ids, "i_ka": column(state.line_i_ka[line_pos], listed),
                     "loading_percent": column(state.line_loading_percent[line_pos], listed)},
            "Trafo": {"entity": trafo_ids,
                      "loading_percent": column(state.trafo_loading_percent[trafo_pos], listed),
                      "p_hv_kw": column(state.trafo_p_hv_kw[trafo_pos], listed),
                      "q_hv_kvar": column(state.trafo_q_hv_kvar[trafo_pos], listed)},
        }

    def _value(self, state: GridState, kind: str, index: int, attr: str) -> Any:
        """One output as a built-in type, or None when there is no valid value."""
        if kind == "Grid":
            if attr == "pf_converged":
                return bool(state.pf_converged)
            if attr == "pf_seconds":
                return float(state.pf_seconds)
            if not state.pf_converged:
                return None
            if attr == "records":
                return self._records(state)
            if attr in ("bus_vm_pu", "bus_va_degree"):
                arr = state.vm_pu if attr == "bus_vm_pu" else state.va_degree
                return {str(int(b)): float(v) for b, v in zip(state.bus_ids, arr)}
            value = getattr(state, attr)
            return int(value) if attr.startswith("n_") else float(value)
        if not state.pf_converged:
            return None
        model = self.model
        if kind == "Bus":
            pos = self._bus_pos.get(index)
            if pos is None:  # de-energised bus: no voltage
                return None
            return float((state.vm_pu if attr == "vm_pu" else state.va_degree)[pos])
        if kind == "Line":
            pos = int(model.line_pos[index])
            arr = state.line_i_ka if attr == "i_ka" else state.line_loading_percent
            return float(arr[pos])
        if kind == "Trafo":
            pos = int(model.trafo_pos[index])
            arr = {"loading_percent": state.trafo_loading_percent, "p_hv_kw": state.trafo_p_hv_kw,
                   "q_hv_kvar": state.trafo_q_hv_kvar}[attr]
            return float(arr[pos])
        return None  # pragma: no cover  (Load, Sgen, Storage have no outputs)


def main() -> int:
    """Start the grid simulator as an external process (mosaik ``cmd``/``connect``)."""
    return mosaik_api_v3.start_simulation(GridSimulator(), "ev-grid-cosim grid simulator")


if __name__ == "__main__":
    raise SystemExit(main())
