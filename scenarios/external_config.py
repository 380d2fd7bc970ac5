"""Scenario tables ``[simulators.<name>]`` for external (user) mosaik simulators.

Any name under ``[simulators]`` that is not a built-in simulator adds a mosaik
simulator of the user's own (``docs/external_simulators.md``)::

    [simulators.battery]
    python = "examples.home_battery.battery:HomeBatterySimulator"  # or cmd / connect
    init = { step_s = 900 }
    create = [ { model = "Battery", n = 3, params = { capacity_kwh = 10.0 } } ]
    connections = [
      { source = "BaseLoad.Load-R11", from = "p_kw", target = "Battery-0", to = "p_load_kw" },
      { source = "Battery-0", from = "p_kw", target = "Grid.Bus-R11", to = "p_kw" },
    ]

Entity references are ``"<simulator>.<entity id>"``: ``Grid`` (the grid
simulator's ``Bus-*``, ``Load-*``, ``Sgen-*``, ``Storage-*``, ``Line-*``,
``Trafo-*``, :mod:`simulators.grid.naming`), ``BaseLoad`` (its ``Load-*``,
named as the network's loads), ``PV`` (``PV-<k>``), or another external
simulator's table name; a bare entity id is an entity of this table's simulator.
Every connection has this simulator on at least one side.

Everything that can be checked without starting anything is checked here, with
every problem listed under its field name; what only the running simulator knows
(its entity ids, its META) is checked by :mod:`scenarios.external` after
``create`` and before the first step.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.remote_watchdog import DEFAULT_START_TIMEOUT_S, DEFAULT_STEP_TIMEOUT_S, parse_addr

#: unit name -> (quantity, factor to the project's unit: kW for P, kvar for Q)
UNITS = {"W": ("p", 1e-3), "kW": ("p", 1.0), "MW": ("p", 1e3),
         "var": ("q", 1e-3), "kvar": ("q", 1.0), "MVar": ("q", 1e3)}

#: Built-in mosaik simulator names an external connection may name (with the
#: entity kinds whose ids the config can check against the network).
BUILTIN_ENDS = ("Grid", "BaseLoad", "PV", "DER")

STARTER_KEYS = ("python", "cmd", "connect")
TABLE_KEYS = (*STARTER_KEYS, "init", "create", "connections", "record", "cwd", "start_timeout_s",
              "step_timeout_s", "replaces", "results")
#: what an external simulator may replace: ``replaces = "recorder"`` (a collector)
REPLACEABLE = ("recorder",)
#: collector output formats the project can read back into its tables (scenarios/collected.py)
RESULT_FORMATS = ("mosaik-csv-writer",)
CREATE_KEYS = ("model", "n", "params")
CONNECTION_KEYS = ("source", "from", "target", "to", "scale", "unit", "time_shifted", "initial")


@dataclass(frozen=True)
class ExternalCreate:
    """One ``create`` entry: ``n`` entities of ``model`` with ``params``."""

    model: str
    n: int = 1
    params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ExternalConnection:
    """One ``connections`` entry: ``source.from`` -> ``target.to``, value times ``scale``."""

    source: tuple[str, str]  # (simulator name, entity id)
    from_attr: str
    target: tuple[str, str]
    to_attr: str
    scale: float = 1.0
    time_shifted: bool = False  # one step late (needed for a loop back into this simulator)
    initial: float | None = None  # value at t = 0 of a time-shifted connection


@dataclass(frozen=True)
class ExternalSimulator:
    """A user's mosaik simulator from ``[simulators.<name>]`` (exactly one starter)."""

    name: str
    starter: str  # "python", "cmd" or "connect"
    target: str  # "module:Class", a command line, or "host:port"
    cwd: str  # working directory of a cmd child (default: the scenario's folder)
    init: dict = field(default_factory=dict)
    create: tuple[ExternalCreate, ...] = ()
    connections: tuple[ExternalConnection, ...] = ()
    record: tuple[str, ...] | None = None  # attributes recorded (None: every non-input attr)
    start_timeout_s: float = DEFAULT_START_TIMEOUT_S
    step_timeout_s: float = DEFAULT_STEP_TIMEOUT_S
    # "recorder": this simulator's first created entity gets every connection the built-in
    # recorder would get, and the built-in recorder is not started
    replaces: str = ""
    # how the project reads the collector's output back: {"format": ..., "file": ...}
    # (file relative to the case's output folder); empty: summary figures not available
    results: dict = field(default_factory=dict)


def unit_scale(text: str) -> float:
    """Factor of ``"MW->kW"`` (value in the first unit times it gives the second).

    Raises ValueError for unknown units or a P/Q mix (``kW->kvar``).
    """
    if not isinstance(text, str) or text.count("->") != 1:
        raise ValueError(f"must be 'FROM->TO' with units {', '.join(UNITS)}, got {text!r}")
    a, b = (part.strip() for part in text.split("->"))
    for u in (a, b):
        if u not in UNITS:
            raise ValueError(f"unknown unit {u!r} in {text!r} (known: {', '.join(UNITS)})")
    if UNITS[a][0] != UNITS[b][0]:
        raise ValueError(f"{text!r} converts between active (W) and reactive (var) power")
    return UNITS[a][1] / UNITS[b][1]


def _ref(value: Any, name: str, own: str, problems: list[str]) -> tuple[str, str] | None:
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{name}: must be an entity reference '<simulator>.<entity id>' "
                        f"(or an entity id of {own!r}), got {value!r}")
        return None
    text = value.strip()
    head, dot, tail = text.partition(".")
    if dot and tail:
        return head, tail
    return own, text


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def find_module(module: str, folder: str | Path) -> str | None:
    """Where ``module`` is found: ``"sys.path"``, ``"folder"`` (the table's ``cwd``,
    by default the scenario's folder: a simulator file next to its scenario), or None."""
    import sys

    def found() -> bool:
        try:
            return importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a missing parent package
            return False

    if found():
        return "sys.path"
    sys.path.insert(0, str(folder))
    try:
        return "folder" if found() else None
    finally:
        sys.path.remove(str(folder))


def _python_problem(target: str, folder: Path) -> str | None:
    module, colon, cls = target.partition(":")
    if not colon or not module or not cls:
        return f"must be 'module:Class', got {target!r}"
    if find_module(module, folder) is None:
        return (f"module {module!r} is not importable: not on sys.path and not in {str(folder)!r} "
                "(the table's cwd); install its package or put the file next to the scenario")
    return None


def parse_external(name: str, raw: Any, base_dir: Path, problems: list[str],
                   external_names: set[str]) -> ExternalSimulator | None:
    """Validate one ``[simulators.<name>]`` table of an external simulator."""
    prefix = f"simulators.{name}"
    before = len(problems)
    if not isinstance(raw, dict):
        problems.append(f"{prefix}: must be a table")
        return None
    for key in raw:
        if key not in TABLE_KEYS:
            problems.append(f"{prefix}.{key}: unknown field (allowed: {', '.join(TABLE_KEYS)})")
    cwd = raw.get("cwd", ".")
    if not isinstance(cwd, str) or not (base_dir / cwd).is_dir():
        problems.append(f"{prefix}.cwd: must name an existing folder (relative to the scenario file), got {cwd!r}")
        cwd = "."
    given = [k for k in STARTER_KEYS if k in raw]
    starter = target = ""
    if len(given) != 1:
        problems.append(f"{prefix}: give exactly one of python = \"module:Class\", cmd = \"...\" or "
                        f"connect = \"host:port\", got {given or 'none'}")
    else:
        starter, target = given[0], raw[given[0]]
        if not isinstance(target, str) or not target.strip():
            problems.append(f"{prefix}.{starter}: must be a non-empty string, got {target!r}")
        elif starter == "python":
            if p := _python_problem(target, base_dir / cwd):
                problems.append(f"{prefix}.python: {p}")
        elif starter == "connect":
            if target.strip().isdigit():  # a bare port: this machine (loopback)
                target = f"127.0.0.1:{target.strip()}"
            try:
                parse_addr(target)
            except ValueError as exc:
                problems.append(f"{prefix}.connect: {exc}")
        elif "%(addr)s" not in target:
            problems.append(f"{prefix}.cmd: must contain %(addr)s (where mosaik's address goes), got {target!r}")
    timeouts = {}
    for key, default in (("start_timeout_s", DEFAULT_START_TIMEOUT_S), ("step_timeout_s", DEFAULT_STEP_TIMEOUT_S)):
        v = raw.get(key, default)
        if not _number(v) or not 0 < v <= 86400:
            problems.append(f"{prefix}.{key}: must be a number in (0, 86400] [s], got {v!r}")
            v = default
        timeouts[key] = float(v)
    init = raw.get("init", {})
    if not isinstance(init, dict):
        problems.append(f"{prefix}.init: must be a table of init() parameters, got {init!r}")
        init = {}
    creates = []
    craw = raw.get("create", [])
    if not isinstance(craw, list) or not craw:
        problems.append(f"{prefix}.create: must be a non-empty array of {{model = ..., n = ..., params = {{...}}}}")
        craw = []
    for i, c in enumerate(craw):
        cn = f"{prefix}.create[{i}]"
        if not isinstance(c, dict):
            problems.append(f"{cn}: must be a table")
            continue
        for key in c:
            if key not in CREATE_KEYS:
                problems.append(f"{cn}.{key}: unknown field (allowed: {', '.join(CREATE_KEYS)})")
        model, n, params = c.get("model"), c.get("n", 1), c.get("params", {})
        ok = True
        if not isinstance(model, str) or not model:
            problems.append(f"{cn}.model: required, the model name in the simulator's META, got {model!r}")
            ok = False
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 100000:
            problems.append(f"{cn}.n: must be an integer in [1, 100000], got {n!r}")
            ok = False
        if not isinstance(params, dict):
            problems.append(f"{cn}.params: must be a table of create() parameters, got {params!r}")
            ok = False
        if ok:
            creates.append(ExternalCreate(model, n, dict(params)))
    conns = []
    lraw = raw.get("connections", [])
    if not isinstance(lraw, list):
        problems.append(f"{prefix}.connections: must be an array of tables")
        lraw = []
    for i, c in enumerate(lraw):
        cn = f"{prefix}.connections[{i}]"
        if not isinstance(c, dict):
            problems.append(f"{cn}: must be a table")
            continue
        for key in c:
            if key not in CONNECTION_KEYS:
                problems.append(f"{cn}.{key}: unknown field (allowed: {', '.join(CONNECTION_KEYS)})")
        src = _ref(c.get("source"), f"{cn}.source", name, problems)
        dst = _ref(c.get("target"), f"{cn}.target", name, problems)
        a_from = c.get("from")
        a_to = c.get("to", a_from)
        for key, v in (("from", a_from), ("to", a_to)):
            if not isinstance(v, str) or not v:
                problems.append(f"{cn}.{key}: must be an attribute name, got {v!r}")
        scale = 1.0
        if "scale" in c and "unit" in c:
            problems.append(f"{cn}: give scale or unit, not both")
        elif "scale" in c:
            if not _number(c["scale"]):
                problems.append(f"{cn}.scale: must be a finite number, got {c['scale']!r}")
            else:
                scale = float(c["scale"])
        elif "unit" in c:
            try:
                scale = unit_scale(c["unit"])
            except ValueError as exc:
                problems.append(f"{cn}.unit: {exc}")
        shifted = c.get("time_shifted", False)
        initial = c.get("initial")
        if not isinstance(shifted, bool):
            problems.append(f"{cn}.time_shifted: must be true or false, got {shifted!r}")
        elif shifted and not _number(initial):
            problems.append(f"{cn}.initial: a time-shifted connection needs a number (its value at t = 0), "
                            f"got {initial!r}")
        for key, ref in (("source", src), ("target", dst)):
            if ref and ref[0] not in BUILTIN_ENDS and ref[0] not in external_names:
                problems.append(f"{cn}.{key}: unknown simulator {ref[0]!r} in {c.get(key)!r} (allowed: "
                                f"{', '.join(BUILTIN_ENDS + tuple(sorted(external_names)))})")
        if src and dst and name not in (src[0], dst[0]):
            problems.append(f"{cn}: source or target must be an entity of {name!r}")
        if src and dst and isinstance(a_from, str) and isinstance(a_to, str) and a_from and a_to:
            conns.append(ExternalConnection(src, a_from, dst, a_to, scale, bool(shifted),
                                            float(initial) if _number(initial) else None))
    record = raw.get("record")
    if record is not None and (not isinstance(record, list) or not all(isinstance(a, str) for a in record)):
        problems.append(f"{prefix}.record: must be an array of attribute names, got {record!r}")
        record = None
    replaces = raw.get("replaces", "")
    if replaces not in ("", *REPLACEABLE):
        problems.append(f"{prefix}.replaces: must be one of {', '.join(REPLACEABLE)} (the built-in it "
                        f"takes the place of), got {replaces!r}")
    results = raw.get("results", {})
    if results and not replaces:
        problems.append(f"{prefix}.results: only for a collector (replaces = \"recorder\")")
    elif results:
        if not isinstance(results, dict) or set(results) - {"format", "file"} \
                or results.get("format") not in RESULT_FORMATS or not isinstance(results.get("file"), str) \
                or not results.get("file"):
            problems.append(f"{prefix}.results: must be {{ format = one of {', '.join(RESULT_FORMATS)}, "
                            f"file = \"<its output file, relative to the case's output folder>\" }}, "
                            f"got {results!r}")
    if replaces and conns:
        problems.append(f"{prefix}.connections: a collector (replaces = \"recorder\") gets the recorder's "
                        "connections; give none of its own")
    if len(problems) > before:
        return None
    return ExternalSimulator(name, starter, target.strip(), str((base_dir / cwd).resolve()), dict(init),
                             tuple(creates), tuple(conns), None if record is None else tuple(record),
                             replaces=replaces, results=dict(results), **timeouts)


def pv_unit_eids(pv, grid, net) -> set[str] | None:
    """Entity ids the PV simulator will give the scenario's ``[[pv.units]]``
    (``PV-<bus index>-<k>``, :mod:`simulators.pv.mosaik_api`), or None where units
    are also sampled or derived from the network's sgens (not known by name here)."""
    from scenarios.buses import resolve_bus
    from simulators.pv.mosaik_api import _bus_tag

    from scenarios.config import resolve_der

    if pv is None or grid is None or pv.sampling != "units" or resolve_der(grid, net) == "pv":
        return None
    eids: set[str] = set()
    per_bus: dict[str, int] = {}
    for u in pv.units:
        try:
            tag = _bus_tag(resolve_bus(net, u.bus))
        except (KeyError, ValueError):
            return None  # the bus check names that unit
        k = per_bus.get(tag, 0)
        per_bus[tag] = k + 1
        eids.add(f"PV-{tag}-{k}")
    return eids


def check_grid_ends(ext: ExternalSimulator, net, problems: list[str],
                    pv_eids: set[str] | None = None) -> None:
    """Grid, BaseLoad and (where known, ``pv_eids``) PV entity ids and attributes of
    ``ext``'s connections, against the network the grid simulator will build (the
    same naming rule)."""
    from simulators.grid.mosaik_api import ENTITY_SPECS
    from simulators.grid.naming import element_eids

    grid: dict[str, str] = {}
    for kind, element in (("Bus", "bus"), ("Load", "load"), ("Sgen", "sgen"), ("Storage", "storage"),
                          ("Line", "line"), ("Trafo", "trafo")):
        grid.update({eid: kind for eid in element_eids(net, element).values()})
    loads = set(element_eids(net, "load").values())
    for i, c in enumerate(ext.connections):
        cn = f"simulators.{ext.name}.connections[{i}]"
        for side, (sim, eid), attr, key in (("source", c.source, c.from_attr, "from"),
                                            ("target", c.target, c.to_attr, "to")):
            if sim == "Grid":
                kind = grid.get(eid)
                if kind is None:
                    examples = ", ".join(list(grid)[:6])
                    problems.append(f"{cn}.{side}: the grid has no entity {eid!r} (e.g. {examples}, ...)")
                    continue
                allowed = ENTITY_SPECS[kind][2] if side == "target" else ENTITY_SPECS[kind][3]
                if attr not in allowed:
                    what = "inputs" if side == "target" else "outputs"
                    problems.append(f"{cn}.{key}: {eid} has no {'input' if side == 'target' else 'output'} "
                                    f"{attr!r} ({what}: {', '.join(allowed) or 'none'})")
            elif sim == "BaseLoad":
                if side == "target":
                    problems.append(f"{cn}.target: the base load takes no inputs (connect to Grid.{eid})")
                elif eid not in loads:
                    problems.append(f"{cn}.source: the base load has no entity {eid!r} "
                                    f"(e.g. {', '.join(sorted(loads)[:6])}, ...)")
                elif attr not in ("p_kw", "q_kvar"):
                    problems.append(f"{cn}.from: {eid} outputs p_kw and q_kvar, not {attr!r}")
            elif sim in ("PV", "DER") and side == "target":
                problems.append(f"{cn}.target: the {sim} simulator takes no inputs")
            elif sim == "PV" and pv_eids is not None and eid not in pv_eids:
                problems.append(f"{cn}.source: the PV simulator will have no entity {eid!r} "
                                f"(pv.units give: {', '.join(sorted(pv_eids)) or 'none'}; "
                                "a unit is named PV-<bus index>-<k>)")
