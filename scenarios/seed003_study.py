"""Seed 003 study outside the co-simulation: the day-ahead flex_max plan and its AC checks.

    python -m scenarios.seed003_study scenarios/seed003_flex.toml --out out/seed003_study

Builds the scheduler's inputs exactly as a run of the scenario does (fleet,
base load, PV forecast from ``scenarios.runner``), linearises the grid at the
forecast's peak step as :class:`simulators.scheduler.controller.Controller`
does, solves :func:`simulators.scheduler.flexibility.solve_flex`, and then runs
pandapower AC power flows of the plan's baseline ``P^ch``, its full downward
activation ``P^ch - P^down`` and its full upward activation ``P^ch + P^up``
at every step (EV reactive power from the constant power factor, eq. (8)).
Every case of the scenario (``ac``: the pyomo NLP on the AC power flow;
``linear``: the LP on the sensitivities) is planned and checked the same way.
Writes ``study.json`` (per case: objective, termination, solve times, totals,
worst voltage and loading of each activation, the linear model's voltage error
against AC) and per case the figures in the style of the paper's Figs. 7-10
(``<case>/fig7_flexibility.png`` ... ``<case>/fig10_charging.png``).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import numpy as np
import pandapower as pp

from adapters.networks import load_network
from scenarios.config import flex_options, load_scenario
from scenarios.runner import baseload_model, fleet_specs, nodal_forecast
from simulators.grid.sensitivity import compute_sensitivities
from simulators.scheduler.flexibility import FlexOptions, solve_flex
from simulators.scheduler.problem import ChargingProblem, GridBounds

ACTIVATIONS = ("baseline", "down", "up")
XLABEL = "hours after midnight of the start date (24 = next midnight)"


def _nodal_matrix(fmap: dict, bus_ids, n_steps: int) -> np.ndarray:
    pos = {int(b): i for i, b in enumerate(bus_ids)}
    out = np.zeros((n_steps, len(bus_ids)))
    for bus, vals in fmap.items():
        if int(bus) in pos:
            out[:, pos[int(bus)]] += np.asarray(vals, dtype=float)[:n_steps]
    return out


def build(case):
    """(net with per-bus forecast loads, ChargingProblem, EV specs, nodal p, q [kW, kvar])."""
    meta = case.scenario
    net = copy.deepcopy(load_network(case.grid.network, case.base_dir))
    specs = fleet_specs(case, net)
    fp, fq = nodal_forecast(case, net, baseload_model(case, net))
    for table in ("load", "sgen", "storage"):       # everything is in the forecast
        if len(net[table]):
            net[table]["p_mw"] = 0.0
            net[table]["q_mvar"] = 0.0
    buses = [int(b) for b in net.bus.index]
    n_t = meta.n_steps
    p_all = _nodal_matrix(fp, buses, n_t)
    q_all = _nodal_matrix(fq, buses, n_t)
    k = int(np.argmax(p_all.sum(axis=1)))           # linearise at the peak step (as the Controller)
    extra = {c: False for c in net.load.columns if net.load[c].dtype == bool and c != "in_service"}
    inj = pp.create_loads(net, buses=buses, p_mw=p_all[k] / 1e3, q_mvar=q_all[k] / 1e3, name="forecast",
                          **extra)
    pp.runpp(net, calculate_voltage_angles=True, numba=False)
    sens = compute_sensitivities(net)
    col = {int(b): i for i, b in enumerate(sens.bus_ids)}
    dt_s = meta.step_s
    t0 = np.arange(n_t) * dt_s
    plugged = np.array([(t0 >= math.ceil(s.arrival_s / dt_s) * dt_s - 1e-9)
                        & (t0 + dt_s <= s.departure_s + 1e-9) for s in specs]).T
    g = case.grid
    problem = ChargingProblem(
        dt_h=dt_s / 3600.0, ev_ids=np.array([s.ev_id for s in specs]),
        ev_col=np.array([col[s.home_bus] for s in specs]),
        capacity_kwh=np.array([s.capacity_kwh for s in specs]),
        s_max_kva=np.array([s.charger_kva for s in specs]),
        efficiency=np.array([s.efficiency for s in specs]),
        soc0=np.array([s.soc_initial for s in specs]), soc_target=np.array([s.soc_target for s in specs]),
        soc_min=np.array([s.soc_min for s in specs]), soc_max=np.array([s.soc_max for s in specs]),
        can_discharge=np.zeros(len(specs), bool), can_reactive=np.zeros(len(specs), bool),
        plugged=plugged, net_p_kw=_nodal_matrix(fp, sens.bus_ids, n_t),
        net_q_kvar=_nodal_matrix(fq, sens.bus_ids, n_t), sens=sens,
        limits=GridBounds(g.vm_min_pu, g.vm_max_pu, g.max_line_loading_percent / 100.0,
                          g.max_trafo_loading_percent / 100.0))
    return net, np.asarray(inj), problem, specs, p_all, q_all


def ac_checks(net, inj, problem, specs, p_all, q_all, plan, q_per_p: float) -> dict:
    """AC power flow of each activation at every step: min/max voltage, transformer and line loading."""
    bus_pos = {int(b): i for i, b in enumerate(net.bus.index)}
    ev_pos = np.array([bus_pos[s.home_bus] for s in specs])
    lv = net.bus.index[net.bus.vn_kv < 1.0]
    out = {}
    for act in ACTIVATIONS:
        p_ev = plan.p_ch_kw if act == "baseline" else plan.activated_p_kw(act)
        res = {k: [] for k in ("vm_min_pu", "vm_max_pu", "trafo_loading_percent", "line_loading_percent")}
        for t in range(problem.n_steps):
            p = p_all[t].copy()
            q = q_all[t].copy()
            np.add.at(p, ev_pos, p_ev[t])
            np.add.at(q, ev_pos, p_ev[t] * q_per_p)
            net.load.loc[inj, "p_mw"] = p / 1e3
            net.load.loc[inj, "q_mvar"] = q / 1e3
            pp.runpp(net, calculate_voltage_angles=True, numba=False)
            vm = net.res_bus.vm_pu[lv]
            res["vm_min_pu"].append(float(vm.min()))
            res["vm_max_pu"].append(float(vm.max()))
            res["trafo_loading_percent"].append(float(net.res_trafo.loading_percent.max()))
            res["line_loading_percent"].append(float(net.res_line.loading_percent.max()))
        out[act] = res
    return out


def linear_vm(problem, p_ev: np.ndarray, q_per_p: float) -> np.ndarray:
    """Linearised bus voltages (T, n) of nodal demand plus EV power [pu] (load convention)."""
    s = problem.sens
    n_t, n = problem.net_p_kw.shape
    p = problem.net_p_kw.copy()
    for v, c in enumerate(problem.ev_col):
        p[:, c] += p_ev[:, v]
    q = problem.net_q_kvar.copy()
    for v, c in enumerate(problem.ev_col):
        q[:, c] += p_ev[:, v] * q_per_p
    dp = p - s.p0_kw
    dq = q - s.q0_kvar
    return s.vm0_pu + dp @ np.asarray(s.dvm_dp).T + dq @ np.asarray(s.dvm_dq).T


def plots(out: Path, hours: np.ndarray, plan, ac: dict, trafo_kva: float) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
        names.append(name)

    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.bar(hours, plan.p_up_kw.sum(axis=1), width=0.25, label="upward", color="tab:green")
    ax.bar(hours, -plan.p_down_kw.sum(axis=1), width=0.25, label="downward (postponed charging)",
           color="tab:red")
    ax.set(xlabel=XLABEL, ylabel="aggregate flexibility [kW]",
           title="Fig. 7 style: aggregate active-power flexibility")
    ax.legend()
    save(fig, "fig7_flexibility.png")
    for key, fname, ylabel, title in (
            ("vm_min_pu", "fig8_min_voltage.png", "minimum LV voltage [pu]",
             "Fig. 8 style: minimum voltage after maximum activations (AC)"),
            ("trafo_loading_percent", "fig9_trafo_loading.png", "transformer loading [%]",
             "Fig. 9 style: transformer loading after maximum activations (AC)")):
        fig, ax = plt.subplots(figsize=(8, 3.5))
        for act, c in zip(ACTIVATIONS, ("k", "tab:red", "tab:green")):
            label = {"baseline": "schedule", "down": "max downward", "up": "max upward"}[act]
            ax.plot(hours, ac[act][key], color=c, label=label, drawstyle="steps-post")
        ax.set(xlabel=XLABEL, ylabel=ylabel, title=title)
        ax.legend()
        save(fig, fname)
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.step(hours, plan.p_ch_kw.sum(axis=1), where="post", color="tab:blue")
    ax.set(xlabel=XLABEL, ylabel="aggregate charging [kW]",
           title="Fig. 10 style: scheduled aggregate EV charging power")
    save(fig, "fig10_charging.png")
    return names


def linear_errors(problem, net, plan, ac: dict, p_all_kw=None) -> dict:
    """Linear model against AC, per activation: max |vm_linear - vm_AC| over LV buses and steps [pu]."""
    lv_cols = [i for i, b in enumerate(problem.sens.bus_ids) if net.bus.vn_kv[int(b)] < 1.0]
    out = {}
    for act in ACTIVATIONS:
        vm_lin = linear_vm(problem, plan.activated_p_kw(act), plan.q_per_p)
        out[act] = float(np.max(np.abs(vm_lin[:, lv_cols].min(axis=1) - np.asarray(ac[act]["vm_min_pu"]))))
    return out


def run_case(case, path, out: Path) -> dict:
    """Plan one case of the study, check it in AC, write its figures; its summary (dict)."""
    out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    net, inj, problem, specs, p_all, q_all = build(case)
    build_s = time.perf_counter() - t
    opts = FlexOptions(**flex_options(case.scheduler))
    ac_grid = None
    if opts.grid_model == "ac":
        from simulators.scheduler.flexibility_ac import ac_grid_from_net

        ac_grid = ac_grid_from_net(net, problem.sens)     # the net linearised at (solved)
    plan = solve_flex(problem, opts, ac_grid=ac_grid)
    ac = ac_checks(net, inj, problem, specs, p_all, q_all, plan, plan.q_per_p)
    meta = case.scenario
    hours = meta.start.hour + np.arange(problem.n_steps) * problem.dt_h
    errors = linear_errors(problem, net, plan, ac)
    evening = (hours % 24 >= 18) & (hours % 24 < 21)
    up = plan.p_up_kw.sum(axis=1)
    down = plan.p_down_kw.sum(axis=1)
    pch = plan.p_ch_kw.sum(axis=1)
    k18 = int(np.argmin(np.abs(hours - 18.0)))
    lim = problem.limits
    worst = {act: max(lim.vm_min_pu - min(r["vm_min_pu"]), max(r["vm_max_pu"]) - lim.vm_max_pu,
                      max(r["trafo_loading_percent"]) / 100.0 - lim.trafo_loading_max,
                      max(r["line_loading_percent"]) / 100.0 - lim.line_loading_max, 0.0)
             for act, r in ac.items()}
    summary = {
        "case": case.name, "grid_model": plan.grid_model,
        "nlp_solver": opts.nlp_solver if plan.grid_model == "ac" else None,
        "n_evs": len(specs), "chargers_kva": sorted({s.charger_kva for s in specs}),
        "status": plan.status, "termination": plan.termination, "fallback": plan.fallback,
        "message": plan.message, "objective_kw": plan.objective,
        "input_build_s": round(build_s, 3), "model_build_s": round(plan.build_s, 3),
        "solve_s": round(plan.solve_s, 3), "n_var": plan.n_var, "n_con": plan.n_con,
        "ac_grid_points": plan.extra.get("grid_points"),
        "energy_needed_kwh": float(sum((s.soc_target - s.soc_initial) * s.capacity_kwh for s in specs)),
        "scheduled_energy_kwh": float(pch.sum() * problem.dt_h),
        "peak_charging_kw": float(pch.max()), "peak_charging_hour": float(hours[int(np.argmax(pch))]),
        "up_kw_total_steps": float(up.sum()), "down_kw_total_steps": float(down.sum()),
        "up_max_kw": float(up.max()), "up_max_hour": float(hours[int(np.argmax(up))]),
        "down_max_kw": float(down.max()), "down_max_hour": float(hours[int(np.argmax(down))]),
        "up_mean_18_21_kw": float(up[evening].mean()), "down_mean_18_21_kw": float(down[evening].mean()),
        "up_mean_12_15_kw": float(up[(hours >= 12) & (hours < 15)].mean()),
        "voltage_spread_18h_pu": float(ac["down"]["vm_min_pu"][k18] - ac["up"]["vm_min_pu"][k18]),
        "ac": {act: {"vm_min_pu": min(r["vm_min_pu"]), "vm_max_pu": max(r["vm_max_pu"]),
                     "trafo_loading_max_percent": max(r["trafo_loading_percent"]),
                     "line_loading_max_percent": max(r["line_loading_percent"]),
                     "worst_violation": worst[act]} for act, r in ac.items()},
        # the linear model's error against AC (min LV voltage per step, max over steps) [pu];
        # meaningful for grid_model "linear" (the plan's own model), reported for both
        "linear_vs_ac_vm_min_max_abs_error_pu": errors,
    }
    summary["figures"] = [f"{out.name}/{n}" for n in plots(out, hours, plan, ac, float(net.trafo.sn_mva.iloc[0] * 1e3))]
    return summary


def run(path: str | Path, out: str | Path, case_name: str | None = None) -> dict:
    """Every case of the scenario (or ``case_name``): ``study.json`` with one summary per case
    (objective, termination, solve time, AC checks of baseline / full down / full up, the
    linear model's error against AC); figures in ``out/<case>/``."""
    scenario = load_scenario(path)
    cases = [c for c in scenario.cases if case_name in (None, c.name)]
    if not cases:
        raise SystemExit(f"--case: no case {case_name!r} in {path} "
                         f"(cases: {[c.name for c in scenario.cases]})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"command": f"python -m scenarios.seed003_study {path} --out {out}"
                          + (f" --case {case_name}" if case_name else ""),
               "cases": {c.name: run_case(c, path, out / c.name) for c in cases}}
    res = summary["cases"]
    if {"ac", "linear"} <= set(res) and res["ac"]["objective_kw"]:
        summary["linear_vs_ac_objective_rel"] = (res["linear"]["objective_kw"] - res["ac"]["objective_kw"]) \
            / abs(res["ac"]["objective_kw"])
    (out / "study.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenario")
    ap.add_argument("--out", required=True)
    ap.add_argument("--case")
    a = ap.parse_args(argv)
    print(json.dumps(run(a.scenario, a.out, a.case), indent=2))


if __name__ == "__main__":
    main()
