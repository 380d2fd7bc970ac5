"""Start, create, connect and record the external simulators of a case.

The tables come from :mod:`scenarios.external_config` (validated before anything
starts). :func:`sim_config` gives their mosaik ``sim_config`` entries (``cmd`` and
``connect`` through the watchdog's starters, so a child that dies or hangs fails
the run: ``adapters/remote_watchdog.py``); :func:`build` starts each one with the
case's clock, creates its entities, makes its connections (through
:mod:`adapters.unit_scale` where a unit conversion is declared) and connects its
outputs to the recorder (one table per entity-id prefix, ``Battery-0`` ->
``Battery``).

Every request to an external simulator goes through :func:`_guard`: a value that
is not finite (NaN, inf) in its ``get_data`` reply, or an exception from it, fails
the run with an :class:`ExternalSimulatorError` naming the simulator, the call and
the step (mosaik 3.6 would pass the NaN on, and some failures only get logged).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from typing import Any

from adapters import remote_watchdog
from scenarios.external_config import ExternalSimulator, find_module

#: mosaik simulator name of the unit-conversion adapter (adapters/unit_scale.py)
SCALE_SIM = "UnitScale"


class ExternalSimulatorError(RuntimeError):
    """An external simulator failed: raised, sent a non-finite value, or its set-up is wrong.

    ``sim_id`` (mosaik id), ``method`` (the call) and ``time`` (its last step [s]) are
    None where not known (``scenarios/failure.py`` reads them).
    """

    def __init__(self, message: str, sim_id: str | None = None, method: str | None = None,
                 time: int | None = None):
        super().__init__(message)
        self.sim_id, self.method, self.time = sim_id, method, time

    def __reduce__(self):
        return (type(self), (str(self), self.sim_id, self.method, self.time))


def sim_config(externals: tuple[ExternalSimulator, ...]) -> dict:
    """mosaik ``sim_config`` entries of the external simulators (and the unit adapter)."""
    config: dict[str, Any] = {SCALE_SIM: {"python": "adapters.unit_scale:UnitScaleSimulator"}} if any(
        c.scale != 1.0 for e in externals for c in e.connections) else {}
    for ext in externals:
        timeouts = {"start_timeout_s": ext.start_timeout_s, "step_timeout_s": ext.step_timeout_s}
        if ext.starter == "python":
            module = ext.target.partition(":")[0]
            if find_module(module, ext.cwd) == "folder" and ext.cwd not in sys.path:
                sys.path.append(ext.cwd)  # a simulator file next to its scenario
            config[ext.name] = {"python": ext.target}
        elif ext.starter == "cmd":
            # %(python)s is this interpreter (mosaik's own substitution)
            config[ext.name] = remote_watchdog.WatchedCmdStarter(ext.target, cwd=ext.cwd, **timeouts)
        else:
            host, port = remote_watchdog.parse_addr(ext.target)
            config[ext.name] = remote_watchdog.WatchedConnectStarter(host, port, **timeouts)
    return config


def _first_bad(value: Any, path: str = "") -> str | None:
    """Where a non-finite number is in a reply value (nested dicts/lists), or None."""
    if isinstance(value, float):
        return path if not math.isfinite(value) else None
    if isinstance(value, Mapping):
        for k, v in value.items():
            if (bad := _first_bad(v, f"{path}[{k!r}]")) is not None:
                return bad
    elif isinstance(value, (list, tuple)):
        for k, v in enumerate(value):
            if (bad := _first_bad(v, f"{path}[{k}]")) is not None:
                return bad
    return None


def _describe(exc: BaseException) -> str:
    """``Type: message`` of an exception; a remote simulator's error without its traceback."""
    args = exc.args[0] if len(exc.args) == 1 and isinstance(exc.args[0], (tuple, list)) else exc.args
    if type(exc).__name__ == "RemoteException" and len(args) >= 2 and all(isinstance(a, str) for a in args[:2]):
        return f"{args[0]}: {args[1]} (in its own process)"
    return f"{type(exc).__name__}: {exc}"


def _guard(proxy, name: str, sid: str, start_iso: str) -> None:
    """Wrap ``proxy.send`` (the one door mosaik uses for every call) of one simulator."""
    original = proxy.send
    state = {"time": None}

    def at() -> str:
        t = state["time"]
        return "" if t is None else f" at step t = {t} s after {start_iso}"

    async def send(request):
        method = str(request[0]) if request else "?"
        if method == "step":
            state["time"] = int(request[1][0])
        try:
            reply = await original(request)
        except ExternalSimulatorError:
            raise
        except Exception as exc:  # noqa: BLE001 - re-raised with the simulator and step named
            raise ExternalSimulatorError(f"external simulator {name!r} ({sid}) failed in its '{method}' "
                                         f"call{at()}: {_describe(exc)}", sid, method, state["time"]) from exc
        if method == "get_data" and isinstance(reply, Mapping):
            for eid, attrs in reply.items():
                if not isinstance(attrs, Mapping):
                    continue
                for attr, value in attrs.items():
                    bad = _first_bad(value)
                    if bad is not None:
                        raise ExternalSimulatorError(
                            f"external simulator {name!r} ({sid}) sent a non-finite value for "
                            f"{eid}.{attr}{bad}{at()}: {value!r}", sid, method, state["time"])
        return reply

    proxy.send = send


def _proxy(world, sid: str):
    # mosaik 3.6: the async world keeps one proxy per simulator; every call goes through it
    return world._async_world._proxies[sid]


def collector(case):
    """The external simulator that replaces the recorder (``replaces = "recorder"``), or None."""
    return next((e for e in case.externals if e.replaces == "recorder"), None)


def init_params(ext, case, out_dir) -> dict:
    """``init`` of an external table with ``{out_dir}`` (the case's output folder) and
    ``{start_date}`` (``scenario.start`` as ``YYYY-MM-DD HH:MM:SS``) put into its strings."""
    start = case.scenario.start.strftime("%Y-%m-%d %H:%M:%S")
    return {k: v.replace("{out_dir}", str(out_dir)).replace("{start_date}", start) if isinstance(v, str) else v
            for k, v in ext.init.items()}


def start_collector(world, case, out_dir):
    """Start the collector that replaces the recorder and create its entities.

    Returns
    -------
    (entity, info)
        Its first created entity (it gets every connection the built-in recorder
        would get) and its entry for the summary.
    """
    ext = collector(case)
    factory = world.start(ext.name, **init_params(ext, case, out_dir))
    sid = factory._sid
    _guard(_proxy(world, sid), ext.name, sid, case.scenario.start.isoformat())
    made = []
    for c in ext.create:
        if c.model not in factory.meta["models"]:
            raise ExternalSimulatorError(f"simulators.{ext.name}.create: model {c.model!r} is not in the "
                                         f"simulator's META (models: {', '.join(factory.meta['models'])})")
        made += getattr(factory, c.model).create(c.n, **c.params)
    if not made:
        raise ExternalSimulatorError(f"simulators.{ext.name}.create: created no entity")
    return made[0], {"sim_id": sid, "starter": ext.starter, "entities": [e.eid for e in made],
                     "replaces": "recorder", "connections": [], "tables": []}


def build(world, case, entities: dict[str, dict[str, Any]], recorder, out_dir=None) -> dict:
    """Start, create, connect and record every external simulator of ``case``.

    Parameters
    ----------
    world : mosaik.World
    case : scenarios.config.Case
    entities : dict
        Built-in simulator name (``Grid``, ``BaseLoad``, ``PV``, ``DER``) -> {entity id: entity}.
    recorder : mosaik entity
        Gets every recorded attribute of every external entity.

    Returns
    -------
    dict
        Per simulator: its mosaik id, entity ids, the connections as made, and the
        recorder tables it fills (for the summary).
    """
    meta = case.scenario
    start_iso = meta.start.isoformat()
    ends = {k: dict(v) for k, v in entities.items()}
    info: dict[str, dict] = {}
    models: dict[str, dict[str, dict]] = {}  # sim -> eid -> model META
    externals = [e for e in case.externals if not e.replaces]  # a collector is started first
    for ext in externals:
        # the case's clock unless the table sets it; a simulator that does not take
        # these gets only what its table says (init parameters are its own)
        factory = world.start(ext.name, **init_params(ext, case, out_dir or "."))
        sid = factory._sid
        _guard(_proxy(world, sid), ext.name, sid, start_iso)
        created: dict[str, Any] = {}
        meta_models = factory.meta["models"]
        for c in ext.create:
            if c.model not in meta_models:
                raise ExternalSimulatorError(f"simulators.{ext.name}.create: model {c.model!r} is not in the "
                                             f"simulator's META (models: {', '.join(meta_models)})")
            try:
                made = getattr(factory, c.model).create(c.n, **c.params)
            except ExternalSimulatorError:
                raise
            except Exception as exc:  # noqa: BLE001 - a non-public model, bad params
                raise ExternalSimulatorError(f"simulators.{ext.name}.create ({c.model}): "
                                             f"{type(exc).__name__}: {exc}") from exc
            for e in made:
                created[e.eid] = e
                models.setdefault(ext.name, {})[e.eid] = meta_models[c.model]
                for child in e.children:
                    created[child.eid] = child
                    models[ext.name][child.eid] = meta_models.get(child.type, {})
        ends[ext.name] = created
        info[ext.name] = {"sim_id": sid, "starter": ext.starter, "entities": sorted(created),
                          "connections": [], "tables": []}
    scale_sim = None
    targets: dict[str, dict[str, set[str]]] = {}  # sim -> eid -> attrs fed by a connection
    for ext in externals:
        for i, c in enumerate(ext.connections):
            field = f"simulators.{ext.name}.connections[{i}]"
            src, dst = _entity(ends, c.source, f"{field}.source"), _entity(ends, c.target, f"{field}.target")
            targets.setdefault(c.target[0], {}).setdefault(c.target[1], set()).add(c.to_attr)
            options: dict[str, Any] = {}
            if c.time_shifted:
                options = {"time_shifted": meta.step_s, "initial_data": {c.from_attr: c.initial}}
            try:
                if c.scale == 1.0:
                    world.connect(src, dst, (c.from_attr, c.to_attr), **options)
                else:  # through a unit conversion (adapters/unit_scale.py)
                    if scale_sim is None:
                        scale_sim = world.start(SCALE_SIM, step_s=meta.step_s)
                        _guard(_proxy(world, scale_sim._sid), SCALE_SIM, scale_sim._sid, start_iso)
                    label = f"{c.source[0]}.{c.source[1]}.{c.from_attr}x{c.scale:g}"
                    conv = scale_sim.Scale(scale=c.scale, label=label)
                    world.connect(src, conv, (c.from_attr, "value"), **options)
                    world.connect(conv, dst, ("value", c.to_attr))
            except Exception as exc:  # mosaik's ScenarioError: unknown attribute, cycle, ...
                raise ExternalSimulatorError(f"{field}: {exc}") from exc
            info[ext.name]["connections"].append(
                f"{'.'.join(c.source)}.{c.from_attr} -> {'.'.join(c.target)}.{c.to_attr}"
                + (f" x {c.scale:g}" if c.scale != 1.0 else "") + (" (time-shifted)" if c.time_shifted else ""))
    for ext in externals:
        tables = set()
        for eid, entity in ends[ext.name].items():
            m = models[ext.name].get(eid, {})
            attrs = list(ext.record) if ext.record is not None else [
                a for a in m.get("attrs", []) if a not in targets.get(ext.name, {}).get(eid, set())]
            if not attrs:
                continue
            try:
                world.connect(entity, recorder, *attrs)
            except Exception as exc:  # noqa: BLE001
                raise ExternalSimulatorError(f"simulators.{ext.name}.record: {exc}") from exc
            tables.add(eid.split("-", 1)[0])
        info[ext.name]["tables"] = sorted(tables)
    return info


def _entity(ends: dict[str, dict[str, Any]], ref: tuple[str, str], field: str):
    sim, eid = ref
    have = ends.get(sim)
    if have is None:
        raise ExternalSimulatorError(f"{field}: simulator {sim!r} is not in this case's world "
                                     f"(running: {', '.join(sorted(ends))})")
    if eid not in have:
        raise ExternalSimulatorError(f"{field}: {sim} has no entity {eid!r} (e.g. {', '.join(list(have)[:6])}, ...)")
    return have[eid]


def start_timeouts(externals: tuple[ExternalSimulator, ...]) -> list[float]:
    """Start-up timeouts of the out-of-process external simulators [s]."""
    return [e.start_timeout_s for e in externals if e.starter != "python"]


__all__ = ["ExternalSimulatorError", "build", "collector", "sim_config", "start_collector", "start_timeouts"]
