"""Build and run the mosaik world of a scenario case; summarise and plot it.

One case is one co-simulation::

    base load ──> Grid.Load-*          (replaces each network load's power)
    PV ─────────> Grid.Bus-*           (extra injection, load convention)
    ┌ group ────────────────────────┐
    │ Fleet ──fleet_state──> Scheduler│
    │   ^───setpoints (weak)───┘     │
    └───────────────────────────────┘
    Fleet.EVBus-* ──> Grid.Bus-*
    Grid ──bus_vm_pu (time-shifted one step)──> Scheduler
    every output ──> Recorder

The grid stays outside the fleet/scheduler group: a time-based simulator outside
the group steps once per step, after the same-time loop has settled, so it sees the
EV power of the setpoints computed for that very step (measured with mosaik 3.6;
tests/test_ev_mosaik.py pins it down).
"""

from __future__ import annotations

import gc
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import mosaik
import numpy as np

from adapters import mosaik_fixes, remote_watchdog
from adapters.networks import load_network
from scenarios import external
from scenarios.buses import monitored_buses, resolve_bus
from scenarios.config import Case, DSOConfig, Scenario, flex_options, resolve_der
from scenarios.failure import CallWatch, RunFailed, RunInterrupted, SigintWatch
from scenarios.progress import CaseProgress
from scenarios.summary import EVInfo, summarize
from simulators.baseload.model import (
    BaseLoadModel,
    forecast as baseload_forecast,
    load_specs_from_net,
    simbench_load_options,
    sum_per_bus,
)
from simulators.der.model import DERModel, der_specs_from_net, pv_replacements
from simulators.ev_fleet.population import EVSpec, FleetDistributions, sample_fleet
from simulators.grid.naming import element_eids
from simulators.recorder.model import consolidate, is_complete, mark_complete

SIMULATORS = {
    # scenario name -> (mosaik sim name, module, class)
    "grid": ("Grid", "simulators.grid.mosaik_api", "GridSimulator"),
    "baseload": ("BaseLoad", "simulators.baseload.mosaik_api", "BaseLoadSimulator"),
    "der": ("DER", "simulators.der.mosaik_api", "DERSimulator"),
    "pv": ("PV", "simulators.pv.mosaik_api", "PVSimulator"),
    "fleet": ("Fleet", "simulators.ev_fleet.mosaik_api", "FleetSimulator"),
    "scheduler": ("Scheduler", "simulators.scheduler.mosaik_api", "SchedulerSimulator"),
    "recorder": ("Recorder", "simulators.recorder.mosaik_api", "RecorderSimulator"),
    "dso": ("DSO", "simulators.dso.mosaik_api", "DSOSimulator"),
}

EV_ATTRS = ("soc", "plugged", "p_kw", "q_kvar", "e_needed_kwh", "p_clipped_kw", "q_clipped_kvar", "bus")
GRID_ATTRS = ("pf_converged", "pf_seconds", "vm_min_pu", "vm_max_pu", "n_bus_violations",
              "n_line_violations", "n_trafo_violations", "max_line_loading_percent",
              "max_trafo_loading_percent")
SCHED_ATTRS = ("solve_s", "status", "fallback", "soft_violation_max", "objective", "n_planned")


@dataclass(frozen=True)
class CaseResult:
    """Where a case's results went and its summary."""

    name: str
    out_dir: Path
    summary: dict


# ------------------------------------------------------------------ inputs ---


def fleet_specs(case: Case, net) -> list[EVSpec]:
    """EV specs of a case: sampled from ``fleet.counts`` plus explicit ``fleet.evs``."""
    f, meta = case.fleet, case.scenario
    counts = {resolve_bus(net, b): n for b, n in f.counts.items() if n}
    dist = FleetDistributions(
        arrival_gev_xi=f.arrival_gev_shape,
        arrival_gev_scale_h=f.arrival_gev_scale_h,
        arrival_gev_loc_h=f.arrival_gev_loc_h,
        arrival_fixed_h=f.arrival_fixed_h if f.arrival == "fixed" else None,
        departure_weibull_scale_h=f.departure_weibull_scale_h,
        departure_weibull_shape=f.departure_weibull_shape,
        soc_initial_mean=f.soc_initial_mean,
        soc_initial_std=f.soc_initial_std,
        capacity_kwh=f.battery_kwh,
        charger_kva=f.charger_kva,
        efficiency=f.efficiency,
        soc_target=f.soc_target,
        soc_min=f.soc_min,
        soc_max=f.soc_max,
        can_discharge=f.can_discharge,
        can_reactive=f.can_reactive,
        autonomous=f.autonomous,
    )
    rng = np.random.default_rng(meta.seed)
    specs = sample_fleet(counts, dist, meta.start, meta.horizon_s, rng, daily=f.daily_stays) if counts else []
    if f.sampling == "seed003":
        specs += list(seed003_fleet(case, net, first_id=len(specs)).specs)
    for i, ev in enumerate(f.evs):
        specs.append(EVSpec(
            ev_id=f"EV-{len(specs)}", home_bus=resolve_bus(net, ev.bus),
            capacity_kwh=f.battery_kwh, charger_kva=f.charger_kva, efficiency=f.efficiency,
            can_discharge=f.can_discharge, can_reactive=f.can_reactive,
            arrival_s=ev.arrival_h * 3600.0,
            departure_s=min(ev.departure_h * 3600.0, float(meta.horizon_s)),
            soc_initial=ev.soc_initial, soc_target=f.soc_target,
            soc_min=f.soc_min, soc_max=f.soc_max, autonomous=f.autonomous,
        ))
    return specs


def seed003_fleet(case: Case, net, first_id: int = 0):
    """The seed 003 commuter fleet of a case (``fleet.sampling = "seed003"``; docs/ev_catalogue.md)."""
    from adapters.ev_catalogue import DEFAULT_CATALOGUE, load_catalogue
    from simulators.ev_fleet.commuters import CommuterDistributions, sample_commuter_fleet

    f, meta = case.fleet, case.scenario
    path = Path(case.base_dir) / f.catalogue if f.catalogue else DEFAULT_CATALOGUE
    dist = CommuterDistributions(ev_share=f.ev_share, reserve_soc=f.reserve_soc,
                                 efficiency=f.efficiency, soc_max=f.soc_max)
    # its own stream (seed + 3): adding counted EVs does not change the commuters
    rng = np.random.default_rng([meta.seed, 3])
    return sample_commuter_fleet(net, dist, load_catalogue(path), meta.start, meta.horizon_s, rng,
                                 first_id=first_id)


def baseload_model(case: Case, net) -> BaseLoadModel:
    """The base-load model of a case (the scheduler's forecasts come from it)."""
    b, meta = case.baseload, case.scenario
    loads = load_specs_from_net(net, b.profiles)
    if b.source == "simbench":
        opts = simbench_load_options(net)
        if b.average_month:  # seed 003: the month's average day (adapters.profiles.month_average_profiles)
            from adapters.profiles import month_average_profiles, simbench_load_profiles
            rel = opts.get("relative")
            if rel is None:
                rel = simbench_load_profiles(sorted({ld.profile for ld in loads}))
            opts["relative"] = month_average_profiles(rel, b.average_month)
        return BaseLoadModel.from_simbench(loads, meta.start, meta.step_s, scale=b.scale,
                                           horizon_steps=meta.n_steps, **opts)
    if b.source == "csv":
        return BaseLoadModel.from_csv(case.base_dir / b.csv_path, loads, meta.start, meta.step_s,
                                      scale=b.scale, horizon_steps=meta.n_steps)
    return BaseLoadModel.constant(loads, meta.step_s, scale=b.scale, horizon_steps=meta.n_steps)


def der_modes(case: Case, net) -> tuple[str, dict[str, str]]:
    """The DER simulator's ``mode`` and per-element ``modes`` for a case (``grid.der``)."""
    der = resolve_der(case.grid, net)
    if der == "pv":  # PV sgens off here, the PV simulator takes their place
        return "profile", {s.eid: "off" for s in pv_replacements(der_specs_from_net(net))}
    return der, {}


def der_model(case: Case, net) -> DERModel | None:
    """The network's sgens and storage as the DER simulator drives them; None without any."""
    if not der_specs_from_net(net):
        return None
    mode, modes = der_modes(case, net)
    meta = case.scenario
    return DERModel.from_net(net, meta.start, meta.step_s, mode=mode, modes=modes,
                             horizon_steps=meta.n_steps)


def pv_units(case: Case, net) -> list[dict]:
    """PV unit parameters (bus as pandapower index) of a case: ``[pv.units]``, and with
    ``grid.der = "pv"`` one unit per PV sgen of the network (kWp = its rated power)."""
    units = [
        {"bus": resolve_bus(net, u.bus), "kwp": u.kwp, "s_kva": u.s_kva,
         "tilt_deg": case.pv.tilt_deg, "azimuth_deg": case.pv.azimuth_deg}
        for u in case.pv.units
    ]
    if case.pv.sampling == "seed003":  # rooftop PV on the customers, own stream (seed, 4)
        from simulators.pv.placement import PVPlacement, sample_rooftop_pv
        units += [{"bus": u["bus"], "kwp": u["kwp"], "s_kva": None, "tilt_deg": case.pv.tilt_deg,
                   "azimuth_deg": case.pv.azimuth_deg}
                  for u in sample_rooftop_pv(net, PVPlacement(share=case.pv.share),
                                             np.random.default_rng([case.scenario.seed, 4]))]
    if resolve_der(case.grid, net) == "pv":
        units += [{"bus": s.bus, "kwp": -s.p_nom_kw, "s_kva": None, "tilt_deg": case.pv.tilt_deg,
                   "azimuth_deg": case.pv.azimuth_deg}
                  for s in pv_replacements(der_specs_from_net(net)) if s.p_nom_kw < 0]
    return units


def element_drivers(case: Case, base: BaseLoadModel, der: DERModel | None, units: list[dict]) -> dict:
    """Which simulator and data drive each network element (for the summary)."""
    b = case.baseload
    load_source = {"simbench": "SimBench profile", "csv": f"CSV {b.csv_path}",
                   "nominal": "static (network value)"}[b.source]
    if case.grid.study_case:
        load_source = f"SimBench study case {case.grid.study_case}"
    out: dict[str, dict[str, list[str]]] = {"Load": {}}
    for spec in base.loads:
        key = f"SimBench profile {spec.profile}" if b.source == "simbench" and not case.grid.study_case \
            else load_source
        out["Load"].setdefault(key, []).append(spec.eid)
    if der is not None:
        out["DER"] = der.drivers()
        if case.grid.study_case:
            out["DER"] = {k.replace("static (network value)", f"SimBench study case {case.grid.study_case}"
                                    " (storage: network value)"): v for k, v in out["DER"].items()}
    if units:
        out["PV"] = {"PV simulator (pvlib, VDE-AR-N 4105)": sorted({str(u["bus"]) for u in units})}
    return out


def pv_site_params(case: Case) -> dict:
    m = case.scenario
    return {"latitude_deg": m.latitude_deg, "longitude_deg": m.longitude_deg,
            "altitude_m": m.altitude_m, "timezone": m.timezone}


def nodal_forecast(case: Case, net, base: BaseLoadModel,
                   der: DERModel | None = None) -> tuple[dict, dict]:
    """Forecast nodal demand without EVs per bus [kW], [kvar]: base load, the network's
    DER as the DER simulator drives them, and PV (each with its forecast error)."""
    from adapters.weather import PVSite
    from simulators.pv.model import PVModel, PVUnitSpec
    from simulators.pv.model import forecast as pv_forecast

    meta = case.scenario
    rng = np.random.default_rng([meta.seed, 1])
    bl = baseload_forecast(base, 0, meta.n_steps, case.baseload.forecast_error_std, rng)
    load_bus = {spec.eid: spec.bus for spec in base.loads}
    p, q = bl.per_bus([load_bus[i] for i in bl.ids])
    maps_p, maps_q = [p], [q]
    if der is not None:
        fd = baseload_forecast(der, 0, meta.n_steps, case.grid.der_forecast_error_std, rng)
        der_bus = {s.eid: s.bus for s in der.specs}
        p, q = fd.per_bus([der_bus[i] for i in fd.ids])
        maps_p.append(p)
        maps_q.append(q)
    units = pv_units(case, net)
    if units:
        site = PVSite(**pv_site_params(case))
        specs = [PVUnitSpec(eid=f"PV-{k}", **{k2: v for k2, v in u.items() if v is not None})
                 for k, u in enumerate(units)]
        model = PVModel(specs, meta.start, meta.step_s, site=site, horizon_steps=meta.n_steps)
        fc = pv_forecast(model, 0, meta.n_steps, case.pv.forecast_error_std, rng)
        pv_bus = {s.eid: s.bus for s in specs}
        p, q = fc.per_bus([pv_bus[i] for i in fc.ids])
        maps_p.append(p)
        maps_q.append(q)
    return sum_per_bus(*maps_p), sum_per_bus(*maps_q)


def e_star_kwh(case: Case, net, specs: Sequence[EVSpec]) -> float:
    """Drive energy per leg for autonomous EVs (seed 001, section III-B) [kWh]."""
    if not case.fleet.autonomous:
        return 0.0
    if case.fleet.e_star_kwh is not None:
        return case.fleet.e_star_kwh
    from simulators.scheduler.autonomous import drive_energy_kwh

    buses = sorted({s.home_bus for s in specs})
    return float(drive_energy_kwh(net, buses, case.fleet.consumption_kwh_per_km))


def replan_params(case: Case) -> dict:
    """Mode ``day_ahead_daily``: the first re-plan after the start and the period [s]
    (``scheduler.replan_at_h`` on the scenario's clock; docs/strategies.md)."""
    start = case.scenario.start
    since_midnight = (start - start.replace(hour=0, minute=0, second=0, microsecond=0)).total_seconds()
    step = case.scenario.step_s
    first = (round(case.scheduler.replan_at_h * 3600.0) - since_midnight) % 86400
    first = (-(-first // step) * step) % 86400  # on a step boundary
    return {"replan_first_s": int(first), "replan_period_s": 86400}


def forecast_ev_specs(case: Case, specs: Sequence[EVSpec]) -> list[dict]:
    """The EVs as the day-ahead scheduler knows them: seeded forecast errors.

    ``scheduler.forecast_arrival_std_h`` shifts each arrival by N(0, std) hours
    (kept in [0, departure - one step]); ``scheduler.forecast_soc_std`` adds
    N(0, std) to the initial SOC (kept in [soc_min, soc_max]). Zero: the truth.
    """
    sc, meta = case.scheduler, case.scenario
    rng = np.random.default_rng([meta.seed, 2])
    out = []
    for s in specs:
        d = s.to_dict()
        if sc.forecast_arrival_std_h:
            latest = max(0.0, d["departure_s"] - meta.step_s)
            d["arrival_s"] = float(np.clip(d["arrival_s"] + rng.normal(0.0, sc.forecast_arrival_std_h) * 3600.0,
                                           0.0, latest))
        if sc.forecast_soc_std:
            d["soc_initial"] = float(np.clip(d["soc_initial"] + rng.normal(0.0, sc.forecast_soc_std),
                                             d["soc_min"], d["soc_max"]))
        if d.get("next_stays") and (sc.forecast_arrival_std_h or sc.forecast_soc_std):
            stays = []  # later stays (fleet.daily_stays): the same errors, drawn after the first stays'
            for a, dep, soc in d["next_stays"]:
                if sc.forecast_arrival_std_h:
                    a = float(np.clip(a + rng.normal(0.0, sc.forecast_arrival_std_h) * 3600.0,
                                      0.0, max(0.0, dep - meta.step_s)))
                if sc.forecast_soc_std:
                    soc = float(np.clip(soc + rng.normal(0.0, sc.forecast_soc_std), d["soc_min"], d["soc_max"]))
                stays.append((a, dep, soc))
            d["next_stays"] = tuple(stays)
        out.append(d)
    return out


def dso_groups(case: Case, net) -> dict[str, list[int]]:
    """``dso.groups`` with bus references resolved to pandapower indices."""
    return {g: [resolve_bus(net, b) for b in buses] for g, buses in case.dso.groups.items()}


def dso_params(case: Case, net, specs: Sequence[EVSpec]) -> dict:
    """Parameters of the DSO entity (``simulators/dso``) of a case.

    The voltage policy's sensitivity ``d vm / d P_fleet`` comes from the
    linearised grid (``simulators/grid/sensitivity.py``) at the network's own
    loads, for a fleet power change spread over the group's EV buses in
    proportion to their charger ratings.
    """
    import copy

    import pandapower as pp

    from simulators.dso.model import fleet_sensitivity
    from simulators.grid.sensitivity import compute_sensitivities

    d, step_s = case.dso, case.scenario.step_s
    groups = dso_groups(case, net)
    params: dict = {"lead_s": float(d.lead_s or step_s), "allow_beyond_offer": d.allow_beyond_offer}
    if "scheduled" in d.policies:
        params["scheduled"] = [
            {"request_id": f"S-{i + 1}", "direction": r.direction, "p_kw": r.p_kw,
             "start_s": r.start_h * 3600.0, "end_s": r.end_h * 3600.0, "group": r.group,
             "buses": groups.get(r.group, []), "reason": "scheduled"}
            for i, r in enumerate(d.requests)]
    if "voltage" in d.policies:
        buses = groups.get(d.voltage_group)
        ev_kva: dict[int, float] = {}
        for s in specs:
            if buses is None or s.home_bus in buses:
                ev_kva[s.home_bus] = ev_kva.get(s.home_bus, 0.0) + s.charger_kva
        monitored = [resolve_bus(net, b) for b in d.voltage_buses]
        sens_net = copy.deepcopy(net)
        pp.runpp(sens_net, calculate_voltage_angles=True, numba=False)
        sens = compute_sensitivities(sens_net)
        sens_map = (fleet_sensitivity(sens.dvm_dp, sens.bus_ids, monitored, sorted(ev_kva),
                                      [ev_kva[b] for b in sorted(ev_kva)]) if ev_kva else {})
        params["voltage"] = {
            "buses": monitored, "vm_min_pu": d.voltage_min_pu, "vm_max_pu": d.voltage_max_pu,
            "sensitivity_pu_per_kw": {str(b): v for b, v in sens_map.items()},
            "duration_s": float(d.voltage_duration_s), "margin_pu": d.voltage_margin_pu,
            "group": d.voltage_group, "group_buses": groups.get(d.voltage_group, [])}
    if "congestion" in d.policies:
        s_ref = float(net.trafo.sn_mva.max()) * 1e3 if len(net.trafo) else 0.0
        params["congestion"] = {
            "element": d.congestion_element, "loading_max_percent": d.congestion_loading_max_percent,
            "s_ref_kva": s_ref, "duration_s": float(d.congestion_duration_s),
            "margin_percent": d.congestion_margin_percent, "group": d.congestion_group,
            "group_buses": groups.get(d.congestion_group, [])}
    return params


# ------------------------------------------------------------------- world ---


def sim_config(case: Case) -> dict:
    """mosaik sim_config from the case's ``[simulators]`` starters.

    Out-of-process simulators get the watchdog's starters
    (``adapters/remote_watchdog.py``): their own start-up and step timeouts, and a
    child that dies is noticed at once.
    """
    config = {}
    for key, (name, module, cls) in SIMULATORS.items():
        starter = case.simulators[key]
        timeouts = {"start_timeout_s": starter.start_timeout_s, "step_timeout_s": starter.step_timeout_s}
        if starter.starter == "python":
            config[name] = {"python": f"{module}:{cls}"}
        elif starter.starter == "cmd":
            # mosaik_api_v3 logs at INFO in its own process otherwise
            config[name] = remote_watchdog.WatchedCmdStarter(
                f"{sys.executable} -m {module} --log-level warning %(addr)s", **timeouts)
        else:
            host, port = remote_watchdog.parse_addr(starter.addr)
            config[name] = remote_watchdog.WatchedConnectStarter(host, port, **timeouts)
    if case.grid.simulator == "mosaik-pandapower-2":  # the stock grid and its two thin adapters
        from adapters import pandapower2 as pp2

        config[pp2.STOCK_SIM] = {"python": "mosaik_components.pandapower:Simulator"}
        config[pp2.FEED_SIM] = {"python": "adapters.pandapower2:GridFeedSimulator"}
        config[pp2.RESULTS_SIM] = {"python": "adapters.pandapower2:GridResultsSimulator"}
    if case.baseload.reader == "mosaik-csv":  # stock mosaik-csv and the project's thin relay
        config[STOCK_CSV_SIM] = {"python": "mosaik_csv:CSV"}
        config[LOAD_RELAY_SIM] = {"python": "adapters.load_relay:LoadRelaySimulator"}
    config.update(external.sim_config(case.externals))  # [simulators.<user's name>]
    return config


#: mosaik names of the stock mosaik-csv simulator and its relay (``baseload.reader = "mosaik-csv"``)
STOCK_CSV_SIM, LOAD_RELAY_SIM = "BaseLoadCSV", "LoadRelay"


def stock_csv_baseload(world, case: Case, base: BaseLoadModel, grid_children: dict, rec) -> dict:
    """The base-load CSV served by the stock ``mosaik_csv:CSV`` simulator.

    Its one entity publishes every column of the file (``Load-R1.p_kw`` [kW],
    optionally ``Load-R1.q_kvar`` [kvar]); one relay per network load
    (:mod:`adapters.load_relay`, named as the load) applies ``baseload.scale`` and,
    without a q column, the load's ``tan(phi)``, as the built-in reader does, and
    feeds the grid's ``Load-*`` and the recorder's ``Load`` table.

    Returns
    -------
    dict
        Load entity id -> relay entity (what external connections see as ``BaseLoad``).
    """
    meta, b = case.scenario, case.baseload
    csv_sim = world.start(STOCK_CSV_SIM, sim_start=meta.start.isoformat(sep=" "),
                          datafile=str(case.base_dir / b.csv_path))
    (model,) = csv_sim.meta["models"]  # the file's first line (ours: "BaseLoad")
    data = getattr(csv_sim, model).create(1)[0]
    columns = set(csv_sim.meta["models"][model]["attrs"])
    relay_sim = world.start(LOAD_RELAY_SIM, step_s=meta.step_s)
    relays = {}
    for spec in base.loads:
        has_q = f"{spec.eid}.q_kvar" in columns
        relay = relay_sim.Load(eid=spec.eid, scale=b.scale, tan_phi=None if has_q else spec.tan_phi)
        world.connect(data, relay, (f"{spec.eid}.p_kw", "p_in"),
                      *([(f"{spec.eid}.q_kvar", "q_in")] if has_q else []))
        world.connect(relay, grid_children[spec.eid], "p_kw", "q_kvar")
        world.connect(relay, rec, "p_kw", "q_kvar")
        relays[spec.eid] = relay
    return relays


def stock_pandapower_grid(world, case: Case, net, ext_grid_vm: float | None, out_dir: Path):
    """The case's grid on the stock mosaik-pandapower-2 simulator (``adapters/pandapower2.py``).

    The network goes to it as ``out_dir/stock_grid.json`` (loads, sgens, storage at
    zero power); one ``GridFeed`` entity per bus, load, sgen and storage unit,
    named as the project's grid names them, puts their power [kW] at the stock
    grid's bus [MW]; ``GridResults`` turns the stock grid's bus and line results
    into the project grid's ``Grid`` outputs.

    Returns
    -------
    (grid, children)
        The ``Grid`` results entity (what the project's ``Grid`` entity is to the
        scheduler, DSO and recorder) and entity id -> feed entity (what its
        ``Bus-*``/``Load-*``/``Sgen-*``/``Storage-*`` children are to the inputs).
    """
    from adapters import pandapower2 as pp2

    meta, g = case.scenario, case.grid
    layout = pp2.stock_net_json(net, out_dir / "stock_grid.json", ext_grid_vm)
    stock = world.start(pp2.STOCK_SIM, step_size=meta.step_s).Grid(json=str(out_dir / "stock_grid.json"))
    stock_children = {e.eid: e for e in stock.children}
    feed_sim = world.start(pp2.FEED_SIM, step_s=meta.step_s)
    children = {}
    for eid, bus, p_kw, q_kvar in layout["feeds"]:
        feed = feed_sim.Feed(eid=eid, bus=bus, p_kw=p_kw, q_kvar=q_kvar)
        world.connect(feed, stock_children[f"Bus-{bus}"], ("p_mw", "P_load[MW]"), ("q_mvar", "Q_load[MVar]"))
        children[eid] = feed
    bus_eids, line_eids = element_eids(net, "bus"), element_eids(net, "line")
    results = world.start(pp2.RESULTS_SIM, step_s=meta.step_s).Grid(
        bus_eids={str(i): e for i, e in bus_eids.items()}, line_eids={str(i): e for i, e in line_eids.items()},
        vm_min_pu=g.vm_min_pu, vm_max_pu=g.vm_max_pu, max_line_loading_percent=g.max_line_loading_percent)
    for i in bus_eids:
        world.connect(stock_children[f"Bus-{i}"], results, "Vm[pu]", "Va[deg]")
    for i in line_eids:
        world.connect(stock_children[f"Line-{i}"], results, "I[kA]", "loading[%]")
    return results, children


def world_config(case: Case) -> dict:
    """mosaik_config: mosaik bounds every ``init`` call by one world-wide start timeout."""
    return remote_watchdog.world_config(
        [s.start_timeout_s for s in case.simulators.values() if s.starter != "python"]
        + external.start_timeouts(case.externals))


class _ErrorLog:
    """Collects ERROR messages mosaik logs (an external simulator's crash is only
    logged: ``World.run`` returns normally, see STYLE.md)."""

    def __init__(self) -> None:
        from loguru import logger

        self.messages: list[str] = []
        self._logger = logger
        logger.enable("mosaik")
        self._id = logger.add(lambda m: self.messages.append(str(m).strip()), level="ERROR", format="{message}")

    def close(self) -> None:
        self._logger.remove(self._id)


def run_metadata(case: Case, net, **extra) -> dict:
    """``metadata.json`` of a case: what was run (scenario, case, seed, every
    config field), on what (``provenance``: project version, git commit, every
    package version, platform, run start time) and how to read the results
    (``start`` with its UTC offset and ``timezone`` for the ``timestamp`` column,
    ``bus_names`` for the bus entity names; ``simulators/recorder/model.py``)."""
    from scenarios.provenance import provenance
    from zoneinfo import ZoneInfo

    meta = case.scenario
    start = meta.start if meta.start.tzinfo else meta.start.replace(tzinfo=ZoneInfo(meta.timezone))
    return {
        "scenario": meta.name, "case": case.name, "seed": meta.seed,
        "start": start.isoformat(), "timezone": meta.timezone, "step_s": meta.step_s,
        "n_steps": meta.n_steps, "base_dir": str(case.base_dir),
        "config": json.loads(json.dumps(
            {k: asdict(getattr(case, k)) for k in ("scenario", "grid", "baseload", "pv", "fleet", "scheduler",
                                                   "dso")},
            default=str)),
        **extra,
        "bus_names": {str(i): eid for i, eid in element_eids(net, "bus").items()},
        "monitored_buses": monitored_buses(net, case.grid.monitor_buses),
        "provenance": provenance(),
    }


def replay_powers(case_dir: Path, zero_q: bool) -> dict[str, tuple[list[float], list[float]]]:
    """Recorded EV powers of a finished case, per EV and step (strategy ``replay``)."""
    from simulators.recorder.model import pivot

    p = pivot(case_dir, "EV", "p_kw").fillna(0.0)
    q = pivot(case_dir, "EV", "q_kvar").fillna(0.0) * (0.0 if zero_q else 1.0)
    return {str(e): (p[e].tolist(), q[e].tolist()) for e in p.columns}


def run_case(case: Case, out_dir: Path, echo: Callable[[str], None] | None = None,
             plots: bool = True, replay_dir: Path | None = None, progress: str = "off",
             check: bool = False, recorder_writer: str | None = None) -> CaseResult:
    """Run one case: build inputs, run the mosaik world, summarise, plot.

    ``progress``: ``"auto"`` (a bar on a terminal, periodic lines otherwise),
    ``"bar"``, ``"lines"`` or ``"off"`` (``scenarios/progress.py``).
    ``recorder_writer``: ``"process"`` or ``"inline"`` (``simulators/recorder``);
    default: a writer process for an in-process recorder. Sweep points write
    inline (``scenarios/sweep.py``: no child process per point).

    ``check``: do everything up to ``World.run`` (inputs, every simulator started,
    its entities created and connected), then shut the world down without a step
    (``ev-grid-cosim --check``); the summary holds ``checked`` and ``setup_seconds``.
    ``out_dir`` gets ``metadata.json`` (a scratch folder is the caller's choice).

    Raises
    ------
    RunFailed
        When the case could not finish (set-up or world failed): ``component``,
        ``step`` and ``reason`` name it; ``out_dir`` holds a ``FAILED`` marker and
        ``summary.json`` with the error and the figures of the completed steps,
        which stay readable (``scenarios/failure.py``).
    RunInterrupted
        The same after Ctrl-C (SIGINT); a ``KeyboardInterrupt``.
    """
    from scenarios import failure

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / failure_marker()).unlink(missing_ok=True)  # an earlier run's
    calls, state = CallWatch(), {"started": False}
    errors = _ErrorLog()
    sigint = SigintWatch()
    try:
        with sigint:
            return _run_case(case, out_dir, plots, replay_dir, progress, calls, state, errors, sigint, check, recorder_writer)
    except BaseException as exc:  # noqa: BLE001 - every way out leaves a record on disk
        if isinstance(exc, (SystemExit, GeneratorExit)):
            raise
        interrupted = sigint.seen or isinstance(exc, KeyboardInterrupt)
        meta = case.scenario
        completed = _completed_steps(out_dir)
        error = failure.error_record(None if isinstance(exc, _Incomplete) else exc, calls,
                                     started=state["started"], interrupted=interrupted, start=meta.start,
                                     step_s=meta.step_s, completed_steps=completed,
                                     logged=list(errors.messages))
        try:
            figures = _partial_figures(case, out_dir, state, completed)
        except Exception as fig_exc:  # noqa: BLE001 - the error record matters more
            figures = {"figures_error": failure.describe(fig_exc)}
        failure.write_record(out_dir, error, figures, interrupted)
        text = failure.message(case.name, error, out_dir, interrupted)
        if interrupted:
            raise RunInterrupted(text, step=error["step"], out_dir=str(out_dir), error=error) from exc
        raise RunFailed(text, component=error["component"], step=error["step"], time_s=error["time_s"],
                        reason=error["reason"], out_dir=str(out_dir), error=error) from exc
    finally:
        errors.close()


class _Incomplete(Exception):
    """``World.run`` returned before the last step (mosaik logged why)."""


def failure_marker() -> str:
    from simulators.recorder.model import FAILED_MARKER

    return FAILED_MARKER


def _completed_steps(out_dir: Path) -> int:
    """Grid steps on disk (each is complete: the grid steps last in a step)."""
    from simulators.recorder.model import read_table

    try:
        return int(read_table(out_dir, "Grid")["time_s"].nunique())
    except (FileNotFoundError, KeyError):
        return 0


def _partial_figures(case: Case, out_dir: Path, state: dict, completed: int) -> dict:
    """Summary figures of the steps recorded before a failure (EV figures at the
    end of the last completed step)."""
    specs = state.get("specs")
    if not completed or specs is None or "monitored_buses" not in state:
        return {"recorded_steps": completed}
    infos = [EVInfo(s.ev_id, s.capacity_kwh, s.efficiency, s.soc_target, s.arrival_s, s.departure_s)
             for s in specs]
    g = case.grid
    out = summarize(out_dir, infos, case.scenario.step_s, completed, g.vm_min_pu, g.vm_max_pu,
                    state["monitored_buses"])
    out["figures_cover_steps"] = completed
    return out


def _run_case(case: Case, out_dir: Path, plots: bool, replay_dir: Path | None, progress: str,
              calls: CallWatch, state: dict, errors: _ErrorLog, sigint: SigintWatch,
              check: bool = False, recorder_writer: str | None = None) -> CaseResult:
    """:func:`run_case` without the failure record (``state`` says how far it got)."""
    meta, grid_cfg = case.scenario, case.grid
    wall0 = time.perf_counter()
    study_case = grid_cfg.study_case or None
    net = load_network(grid_cfg.network, case.base_dir, study_case=study_case)
    specs = fleet_specs(case, net)
    state["specs"] = specs
    base = baseload_model(case, net)
    der = der_model(case, net)
    fp, fq = nodal_forecast(case, net, base, der)
    drivers = element_drivers(case, base, der, pv_units(case, net))
    # the study case sets the slack voltage; the grid and the scheduler both take it
    ext_grid_vm = grid_cfg.ext_grid_vm_pu
    if study_case and ext_grid_vm is None and len(net.ext_grid):
        ext_grid_vm = float(net.ext_grid["vm_pu"].iloc[0])
    estar = e_star_kwh(case, net, specs)
    start_iso = meta.start.isoformat()
    metadata = run_metadata(case, net, n_evs=len(specs), e_star_kwh=estar,
                            **({"external_simulators": [asdict(e) for e in case.externals]}
                               if case.externals else {}))
    state["monitored_buses"] = metadata["monitored_buses"]
    limits = {"vm_min_pu": grid_cfg.vm_min_pu, "vm_max_pu": grid_cfg.vm_max_pu,
              "line_loading_max": grid_cfg.max_line_loading_percent / 100.0,
              "trafo_loading_max": grid_cfg.max_trafo_loading_percent / 100.0}
    sc = case.scheduler
    options = {"k_weight": sc.k_weight, "cone": sc.cone, "n_sides": sc.polygon_sides,
               "soft_penalty": sc.soft_penalty, "time_limit_s": sc.time_limit_s,
               "row_generation": sc.row_generation}
    if sc.fine_steps:
        options.update(fine_steps=sc.fine_steps, block_steps=sc.block_steps)
    if sc.solver != "auto":
        options["solver"] = sc.solver
    elif sc.cone == "soc":
        options["solver"] = "auto"  # Clarabel, or PIQP when no cone is left (the same QP)
    n_steps, step_s = meta.n_steps, meta.step_s
    mosaik_fixes.install()  # see adapters/mosaik_fixes.py (step cost, remote simulators)
    remote_watchdog.install()  # remote simulators that die or hang fail the run
    with mosaik.World(sim_config(case), mosaik_config=world_config(case), time_resolution=1.0, cache=False,
                      skip_greetings=True, configure_logging=False) as world:
        calls.watch(world)  # which simulator, call and step fails (scenarios/failure.py)
        # numpy columns (records, fleet_state) only if their consumers share the process
        coll = external.collector(case)  # a collector in the recorder's place (scenarios/collected.py)
        arrays = coll is None and all(case.simulators[k].starter == "python" for k in ("recorder", "scheduler"))
        # First, so that its writer process starts while the others are set up. A
        # recorder in a process of its own writes there: mosaik ends remote
        # simulators without waiting for their finalize, so a writer process
        # under it could still be writing when the summary reads the results.
        writer = "process" if case.simulators["recorder"].starter == "python" and not check else "inline"
        writer = recorder_writer or writer
        if coll is None:
            rec = world.start("Recorder").Recorder(out_dir=str(out_dir), metadata=metadata, writer=writer)
        else:  # no earlier results left in out_dir; metadata.json as the recorder writes it
            from simulators.recorder.model import StepWriter

            StepWriter(out_dir).write_metadata(metadata)
            rec, coll_info = external.start_collector(world, case, out_dir)
        if grid_cfg.simulator == "mosaik-pandapower-2":  # the stock grid, adapters/pandapower2.py
            grid, children = stock_pandapower_grid(world, case, net, ext_grid_vm, out_dir)
        else:
            grid_sim = world.start("Grid", step_s=step_s, start_date=start_iso, numpy_columns=arrays)
            grid = grid_sim.Grid(network=grid_cfg.network, vm_min_pu=grid_cfg.vm_min_pu,
                                 vm_max_pu=grid_cfg.vm_max_pu,
                                 max_line_loading_percent=grid_cfg.max_line_loading_percent,
                                 max_trafo_loading_percent=grid_cfg.max_trafo_loading_percent,
                                 ext_grid_vm_pu=ext_grid_vm, base_dir=str(case.base_dir),
                                 study_case=study_case)
            children = {e.eid: e for e in grid.children}
        bus_eid = element_eids(net, "bus")  # the grid simulator names buses by this rule

        def batched(key: str) -> bool:
            """Whether simulator ``key`` feeds the grid through one ``Grid.injections``
            value a step instead of one connection per element (both in-process, the
            project's grid; the same sums: ``simulators/grid/mosaik_api.py``)."""
            return (grid_cfg.simulator != "mosaik-pandapower-2"
                    and all(case.simulators[k].starter == "python" for k in ("grid", key)))

        if case.baseload.reader == "mosaik-csv":  # the stock mosaik-csv serves the file
            load_ends = stock_csv_baseload(world, case, base, children, rec)
            recorded = []
        else:
            bl_sim = world.start("BaseLoad", start_date=start_iso, step_s=step_s, horizon_s=meta.horizon_s,
                                 numpy_columns=arrays)
            bl = bl_sim.BaseLoad(network=grid_cfg.network, source=case.baseload.source,
                                 csv_path=(str(case.base_dir / case.baseload.csv_path)
                                           if case.baseload.source == "csv" else None),
                                 scale=case.baseload.scale, profiles=dict(case.baseload.profiles),
                                 base_dir=str(case.base_dir), study_case=study_case)
            if batched("baseload"):
                world.connect(bl, grid, "injections")
            else:
                for load in bl.children:
                    world.connect(load, children[load.eid], "p_kw", "q_kvar")
            load_ends = {e.eid: e for e in bl.children}
            recorded = [bl]  # simulators whose records (one table per step) go to the recorder

        if der is not None:  # every sgen and storage unit of the network
            der_sim = world.start("DER", start_date=start_iso, step_s=step_s,
                                  horizon_s=meta.horizon_s, numpy_columns=arrays)
            mode, modes = der_modes(case, net)
            der_ent = der_sim.DER(network=grid_cfg.network, mode=mode, modes=modes,
                                  base_dir=str(case.base_dir), study_case=study_case)
            if batched("der"):
                world.connect(der_ent, grid, "injections")
            else:
                for unit in der_ent.children:
                    world.connect(unit, children[unit.eid], "p_kw", "q_kvar")
            recorded.append(der_ent)

        units = pv_units(case, net)
        if units:
            pv_sim = world.start("PV", start_date=start_iso, step_s=step_s, horizon_s=meta.horizon_s,
                                 numpy_columns=arrays, **pv_site_params(case))
            plant = pv_sim.PVPlant(units=[{k: v for k, v in u.items() if v is not None}
                                          for u in units])
            for pv, u in zip(plant.children, units):
                world.connect(pv, children[bus_eid[u["bus"]]], "p_kw", "q_kvar")
            recorded.append(plant)

        with world.group():
            fleet_sim = world.start("Fleet", step_size=step_s, start_date=start_iso,
                                    numpy_columns=arrays)
            charging_buses = None
            if case.fleet.autonomous:
                charging_buses = sorted({s.home_bus for s in specs})
            fleet = fleet_sim.Fleet(specs=[s.to_dict() for s in specs], e_star_kwh=estar,
                                    charging_buses=charging_buses)
            sched_sim = world.start("Scheduler", step_size=step_s, n_steps=n_steps)
            sched = sched_sim.Scheduler(
                network=grid_cfg.network, base_dir=str(case.base_dir), strategy=sc.strategy,
                ext_grid_vm_pu=ext_grid_vm,
                mode=sc.mode, limits=limits, options=options, relinearise=sc.relinearise,
                ac_iterations=sc.ac_iterations, e_star_kwh=estar,
                autonomous={"move_penalty": sc.autonomous_move_penalty,
                            "exact_drive_energy": sc.autonomous_exact_drive_energy},
                forecast_p_kw={str(b): list(map(float, v)) for b, v in fp.items()},
                forecast_q_kvar={str(b): list(map(float, v)) for b, v in fq.items()},
                ev_specs=forecast_ev_specs(case, specs) if sc.mode in ("day_ahead", "day_ahead_daily") else None,
                **replan_params(case),
                # --check: the case it replays has not run (no powers yet)
                replay=(({} if check else replay_powers(replay_dir, sc.replay_zero_q))
                        if sc.strategy == "replay" else None),
                flex=flex_options(sc) if sc.strategy == "flex_max" else None,
                realtime=({"groups": dso_groups(case, net), "time_limit_s": sc.time_limit_s}
                          if case.dso.policies else None),
            )
        world.connect(fleet, sched, "fleet_state")
        world.connect(sched, fleet, "setpoints", weak=True)
        if batched("fleet"):
            world.connect(fleet, grid, "injections")
        else:
            for evbus in (c for c in fleet.children if c.type == "EVBus"):
                bus = int(evbus.eid.split("-", 1)[1])
                world.connect(evbus, children[bus_eid[bus]], "p_kw", "q_kvar")
        world.connect(grid, sched, "bus_vm_pu", "bus_va_degree", time_shifted=step_s)

        world.connect(grid, rec, *GRID_ATTRS, "records")  # records: every Bus/Line/Trafo output
        for source in recorded:
            world.connect(source, rec, "records")  # every Load / PV output, one value per step
        world.connect(fleet, rec, "records")  # every EV and EVBus output, one value per step
        world.connect(sched, rec, *SCHED_ATTRS)
        if case.dso.policies:  # the operator calls flexibility (simulators/dso)
            dso = world.start("DSO", step_size=step_s).DSO(**dso_params(case, net, specs))
            world.connect(grid, dso, "bus_vm_pu", "max_trafo_loading_percent", "max_line_loading_percent",
                          "max_trafo_p_hv_kw")
            world.connect(sched, dso, "flex_offer")
            world.connect(dso, sched, "requests", time_shifted=step_s)
            world.connect(dso, rec, "records")
            world.connect(sched, rec, "records")
        ext_info = {}
        if case.externals:  # user simulators by configuration (scenarios/external.py)
            ends = {"Grid": children, "BaseLoad": load_ends}
            if der is not None:
                ends["DER"] = {e.eid: e for e in der_ent.children}
            if units:
                ends["PV"] = {e.eid: e for e in plant.children}
            ext_info = external.build(world, case, ends, rec, out_dir)
            if coll is not None:
                ext_info[coll.name] = coll_info
        setup_s = time.perf_counter() - wall0
        if check:  # everything World.run needs is built; the with block shuts it down
            return CaseResult(case.name, out_dir, {"checked": True, "setup_seconds": round(setup_s, 3)})
        # The networks, profiles and models built above live for the whole run;
        # frozen, the garbage collector's full passes no longer walk them at
        # every few thousand allocations (several ms each at 5 000 EVs).
        gc.freeze()
        CaseProgress(case.name, meta.start, step_s, n_steps, mode=progress).attach(world)
        calls.watch(world)  # every simulator started by now
        state["started"] = True
        try:
            world.run(until=meta.horizon_s, print_progress=False)
        finally:
            gc.unfreeze()
            mosaik_fixes.cancel_leftover_tasks(world)  # after a failure: no stray tasks
        run_s = time.perf_counter() - wall0 - setup_s
    if sigint.seen:  # mosaik caught the KeyboardInterrupt and returned
        raise KeyboardInterrupt
    if calls.first is not None:  # a remote simulator's exception: mosaik logged it and returned
        raise _Incomplete()
    if coll is not None:
        if not coll.results:  # nothing the project can read: say so instead of a summary
            if errors.messages:
                raise _Incomplete()
            return _collected_only(case, out_dir, coll, ext_info, drivers, wall0)
        from scenarios.collected import import_mosaik_csv_writer

        try:
            import_mosaik_csv_writer(out_dir / coll.results["file"], out_dir, meta.start, metadata)
        except (ValueError, SyntaxError) as exc:
            raise ValueError(f"simulators.{coll.name}.results: {exc}") from exc
    wall = time.perf_counter() - wall0
    infos = [EVInfo(s.ev_id, s.capacity_kwh, s.efficiency, s.soc_target, a, d)
             for s in specs for a, d, _ in s.stays()]  # one per stay (fleet.daily_stays)
    summary = summarize(out_dir, infos, step_s, n_steps, grid_cfg.vm_min_pu, grid_cfg.vm_max_pu,
                        metadata["monitored_buses"])
    summary.update(_seed001_metrics(out_dir, specs, step_s, n_steps, estar))
    summary["element_drivers"] = drivers
    if ext_info:
        summary["external_simulators"] = ext_info
    if case.dso.policies:
        from scenarios.summary import activation_summary

        summary.update(activation_summary(out_dir, specs))
    elif case.dso != DSOConfig() and specs:
        # a case without calls in a scenario with an operator: its owners' shortfall
        # per EV too, to compare with the cases that have calls
        from scenarios.summary import activation_summary

        summary["departure_shortfall_kwh"] = activation_summary(out_dir, specs).get("departure_shortfall_kwh", {})
    summary["wall_seconds"] = round(wall, 3)
    summary["world_run_seconds"] = round(run_s, 3)
    summary["setup_seconds"] = round(setup_s, 3)
    if errors.messages or summary.get("recorded_steps", 0) < n_steps:
        raise _Incomplete()  # the failure record says what mosaik logged
    if sc.strategy == "flex_max" and sc.mode == "day_ahead" and not case.dso.policies and plots:
        summary.update(flex_plan_summary(case, out_dir))
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if plots:
        from scenarios.plots import plot_run

        plot_run(out_dir, net=net)
    _finish(out_dir, summary)
    return CaseResult(case.name, out_dir, summary)


def flex_plan_summary(case: Case, out_dir: Path) -> dict:
    """The day-ahead flex_max plan of a case and its AC checks (seed 003, issue 11).

    ``scenarios.seed003_study.run_case`` rebuilds the scheduler's inputs as the run
    does and solves the same plan, runs the AC power flows of its baseline, full
    downward and full upward activation and writes Figs. 7-10 into ``out_dir/flex/``.
    Returns ``flex`` (that summary: status, termination, objective, build and solve
    times, flexibility totals, AC checks per activation, linear-vs-AC voltage error)
    and its headline numbers as flat ``flex_*`` keys; ``flex_objective_run_kw`` is
    the objective the run's scheduler recorded, so a reader sees both plans agree.
    """
    from scenarios.seed003_study import run_case as study_case
    from simulators.recorder.model import read_table

    flex = study_case(case, None, out_dir / "flex")
    flex["figures"] = [f"flex/{Path(f).name}" for f in flex["figures"]]
    sched = read_table(out_dir, "Scheduler")
    rec = sched["objective"].dropna() if "objective" in sched else []
    ac = flex["ac"]
    return {
        "flex": flex, "flex_status": flex["status"], "flex_termination": flex["termination"],
        "flex_fallback": flex["fallback"], "flex_objective_kw": flex["objective_kw"],
        "flex_objective_run_kw": float(rec.iloc[0]) if len(rec) else None,
        "flex_solve_s": flex["solve_s"], "flex_model_build_s": flex["model_build_s"],
        "flex_up_kw_total_steps": flex["up_kw_total_steps"],
        "flex_down_kw_total_steps": flex["down_kw_total_steps"],
        "flex_ac_vm_min_pu": {a: r["vm_min_pu"] for a, r in ac.items()},
        "flex_ac_trafo_loading_max_percent": {a: r["trafo_loading_max_percent"] for a, r in ac.items()},
        "flex_ac_worst_violation": max(r["worst_violation"] for r in ac.values()),
    }


def _collected_only(case: Case, out_dir: Path, coll, ext_info: dict, drivers: dict, wall0: float) -> CaseResult:
    """The end of a run whose recorder was replaced by a collector the project cannot read."""
    summary = {
        "recorder": f"replaced by simulators.{coll.name} ({coll.target})",
        "not_available": "summary figures and plots: the results are in the collector's own output; "
                         "give its table results = { format, file } for a format the project reads "
                         "(docs/external_simulators.md)",
        "element_drivers": drivers, "external_simulators": ext_info,
        "wall_seconds": round(time.perf_counter() - wall0, 3),
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    mark_complete(out_dir, summary)
    return CaseResult(case.name, out_dir, summary)


def _finish(out_dir: Path, summary: dict) -> None:
    consolidate(out_dir)
    mark_complete(out_dir, summary)


def _seed001_metrics(out_dir: Path, specs: Sequence[EVSpec], step_s: int, n_steps: int,
                     estar: float) -> dict:
    """Metrics 1-3 of seed 001 (eqs. (13), (14)) from the recorded SOCs, under the
    names of what they measure (``docs/metrics.md``)."""
    from scenarios.summary import soc_trajectories
    from simulators.recorder.model import read_table
    from simulators.scheduler.metrics import all_metrics

    if not specs:
        return {}
    infos = [EVInfo(s.ev_id, s.capacity_kwh, s.efficiency, s.soc_target, s.arrival_s, s.departure_s)
             for s in specs]  # trajectories per EV
    soc = soc_trajectories(read_table(out_dir, "EV"), infos, step_s, n_steps)
    target = np.array([s.soc_target for s in specs])
    m = all_metrics(soc, target, step_s / 3600.0)
    # named for what they measure; docs/metrics.md gives each definition
    return {"soc_deviation_sq_sum": float(m.metric1), "soc_shortfall_sum": float(m.metric2),
            "hours_until_all_at_target": None if m.metric3_h is None or not np.isfinite(m.metric3_h)
            else float(m.metric3_h)}


# --------------------------------------------------------------- scenarios ---


SUMMARY_COLUMNS = ("min_voltage_pu", "violating_bus_steps", "max_voltage_violation_pu", "max_line_loading_percent",
                   "max_trafo_loading_percent", "mean_soc_at_departure", "evs_below_target_at_departure",
                   "t95_hours", "v2g_discharged_kwh", "reactive_energy_kvarh", "solve_seconds",
                   "fallback_steps", "soft_limit_violation_max", "pf_not_converged_steps",
                   "soc_deviation_sq_sum", "soc_shortfall_sum", "hours_until_all_at_target",
                   "flex_status", "flex_objective_kw", "flex_solve_s", "flex_ac_worst_violation", "wall_seconds")


def format_summary(name: str, summary: dict) -> str:
    """Human-readable summary of one case."""
    lines = [f"== {name}"]
    for key in SUMMARY_COLUMNS:
        if key in summary:
            value = summary[key]
            lines.append(f"  {key:32s} {value:.4g}" if isinstance(value, float) else f"  {key:32s} {value}")
    return "\n".join(lines)


def comparison_table(results: Sequence[CaseResult], columns: Sequence[str] = SUMMARY_COLUMNS) -> str:
    """Markdown table of every case's summary."""
    cols = [c for c in columns if any(c in r.summary for r in results)]
    head = "| case | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols)
    rows = []
    for r in results:
        cells = []
        for c in cols:
            v = r.summary.get(c)
            cells.append("" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v)))
        rows.append(f"| {r.name} | " + " | ".join(cells) + " |")
    return head + "\n" + "\n".join(rows) + "\n"


def _run_case_job(args) -> CaseResult | RunFailed:
    """One case; a failure comes back as its error (an interruption is raised)."""
    case, case_dir, plots, replay_dir, progress = args
    try:
        return run_case(case, case_dir, plots=plots, replay_dir=replay_dir, progress=progress)
    except RunFailed as exc:
        return exc


def _ignore_sigint() -> None:
    """Pool worker initializer: Ctrl-C between cases is the parent's business (a
    running case watches SIGINT itself and leaves its failure record)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_case_worker(args) -> CaseResult | RunFailed:
    """Process-pool job: one case, without progress display and logs (the parent
    prints one line per case as it finishes, and the summaries)."""
    from loguru import logger

    logger.remove()
    return _run_case_job(args)


def _interrupt_pool(pool) -> None:
    """Ctrl-C in the parent: no new cases, SIGINT to the running ones (each writes
    its failure record and stops)."""
    import os
    import signal

    processes = list((getattr(pool, "_processes", None) or {}).values())  # shutdown forgets them
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        try:
            os.kill(process.pid, signal.SIGINT)
        except OSError:
            pass


def run_scenario(scenario: Scenario, out: Path, only: Sequence[str] | None = None, plots: bool = True,
                 echo: Callable[[str], None] = print, jobs: int | None = None,
                 progress: str = "off") -> list[CaseResult]:
    """Run every case of a scenario (one sub-folder each when there are several).

    Independent cases run in parallel in ``jobs`` processes (default: one per CPU
    core); ``replay`` cases run after the case they replay. ``progress`` is shown
    per case when cases run one at a time (see :func:`run_case`); in parallel,
    ``echo`` gets one line per case as it finishes.
    """
    import concurrent.futures
    import multiprocessing
    import os

    out = Path(out)
    cases = [c for c in scenario.cases if only is None or c.name in only]
    if only:
        unknown = sorted(set(only) - {c.name for c in scenario.cases})
        if unknown:
            raise RunFailed(f"unknown case(s) {unknown}; the scenario has "
                            f"{[c.name for c in scenario.cases]}")
    single = len(scenario.cases) == 1
    case_dir = {c.name: out if single else out / c.name for c in scenario.cases}
    waves = [[c for c in cases if c.scheduler.strategy != "replay"],
             [c for c in cases if c.scheduler.strategy == "replay"]]
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(cases)))
    done: dict[str, CaseResult | RunFailed] = {}
    for wave in (w for w in waves if w):
        for case in wave:
            echo(f"running {case.name} ({case.scheduler.strategy}, {case.scheduler.mode}) -> {case_dir[case.name]}")
        args = [(c, case_dir[c.name], plots,
                 case_dir[c.scheduler.replay_case] if c.scheduler.strategy == "replay" else None, progress)
                for c in wave]
        if jobs == 1 or len(wave) == 1:
            done.update({c.name: _run_case_job(a) for c, a in zip(wave, args)})
            continue
        ctx = multiprocessing.get_context("spawn")
        t0 = time.perf_counter()
        with concurrent.futures.ProcessPoolExecutor(min(jobs, len(wave)), mp_context=ctx,
                                                    initializer=_ignore_sigint) as pool:
            futures = {pool.submit(_run_case_worker, a[:-1] + ("off",)): c for c, a in zip(wave, args)}
            try:
                for future in concurrent.futures.as_completed(futures):
                    case = futures[future]
                    done[case.name] = r = future.result()
                    status = "FAILED" if isinstance(r, RunFailed) else "done"
                    echo(f"[{len(done)}/{len(cases)}] {case.name} {status} after {time.perf_counter() - t0:.1f} s")
            except KeyboardInterrupt:
                _interrupt_pool(pool)
                raise
    results, failures = [], []
    for case in cases:
        r = done[case.name]
        if isinstance(r, RunFailed):
            failures.append(r)
            if len(cases) > 1:  # a single case's failure is the caller's to report
                echo(f"FAILED: {r}")
        else:
            results.append(r)
            echo(format_summary(case.name, r.summary))
            pngs = ", ".join(p.name for p in sorted(r.out_dir.glob("*.png")))
            echo(f"  written to {r.out_dir}: summary.json, results/*.parquet{', ' + pngs if pngs else ''}")
    if len(scenario.cases) > 1 and results:
        table = comparison_table(results)
        (out / "comparison.md").write_text(table)
        echo("\n" + table)
        if plots:
            from scenarios.plots import plot_comparison

            first = cases[0]
            plot_comparison({r.name: r.out_dir for r in results}, out / "comparison.png",
                            title=first.scenario.name)
            reference = next((r.name for r in results if not next(c for c in cases if c.name == r.name).dso.policies),
                             None)
            if reference is not None and any(c.dso.policies for c in cases):
                from scenarios.realtime_plots import plot_realtime

                f = first.fleet
                ref_case = next(c for c in cases if c.name == reference)
                specs = fleet_specs(ref_case, load_network(ref_case.grid.network, ref_case.base_dir))
                evs = {s.ev_id: {"capacity_kwh": s.capacity_kwh, "charger_kva": s.charger_kva,
                                 "efficiency": s.efficiency, "soc_target": s.soc_target} for s in specs}
                # a case with calls is measured against the case without calls that
                # knows the same (forecasts, fleet, grid), else the first without calls
                plain = [c for c in cases if not c.dso.policies and c.name in {r.name for r in results}]
                same = lambda a, b: (a.baseload, a.pv, a.scheduler, a.fleet, a.grid) == (  # noqa: E731
                    b.baseload, b.pv, b.scheduler, b.fleet, b.grid)
                references = {c.name: next((p.name for p in plain if same(p, c)), reference)
                              for c in cases if c.dso.policies}
                plot_realtime({r.name: r.out_dir for r in results}, reference, first.scenario.start,
                              first.scenario.step_s, first.grid.vm_min_pu, out, f.soc_target, f.charger_kva,
                              f.efficiency, evs=evs, references=references)
    if len(failures) == 1:
        raise failures[0]
    if failures:
        first = failures[0]
        raise RunFailed(f"{len(failures)} of {len(cases)} cases failed: " + "; ".join(map(str, failures)),
                        component=first.component, step=first.step, time_s=first.time_s,
                        reason=first.reason, out_dir=str(out), error=first.error)
    return results


__all__ = ["run_case", "run_scenario", "RunFailed", "RunInterrupted", "CaseResult", "is_complete"]
