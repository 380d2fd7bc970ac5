"""Benchmark: seed 003's day-ahead flexibility plan (flex_max), AC NLP against linear LP.

Run ``python bench/flexibility.py`` (``--help`` for options; default run a few
minutes on a loaded 2-core machine). Rows:

- ``suburban_lv`` (the seed 003 stand-in, ``scenarios/seed003_flex.toml`` as
  shipped: 24 EVs, 96 steps of 15 min, band 0.9-1.1 pu), AC and linear;
- ``suburban_lv, vm_min 0.95``: the same day with the lower voltage limit at
  0.95 pu, so that the full upward activation meets the voltage limit in AC (with
  0.9 pu no AC limit binds and the AC NLP keeps no grid point): AC and linear;
- ``--simbench`` grid (default ``1-LV-semiurb4--0-sw``) with 5x the EVs
  (``fleet.ev_share`` 0.2 -> 1.0, the same seed 003 rules), linear only.

Columns: variables / constraints of the solved model; build time (model assembly,
for AC with the warm-start LP, its Newton power flows and the screening) and solve
time [s]; objective (eq. (4)); the worst AC violation of the plan: every step of
its baseline, full downward and full upward activation through a Newton power flow
of the same network (the NLP's own equations, ``flexibility_ac.newton_pf``, equal to
pandapower's runpp to 1e-6 pu, tests/test_flex_ac.py), the largest excess over the
voltage band [pu] and over the line / transformer loading limit [fraction] (over the
steps whose Newton power flow converged), and how many steps of the three activations
did not converge (0 expected: then the excesses cover every step);
``lin/AC``: linear objective over AC objective - 1. Targets: AC < 30 s, linear < 3 s,
linear objective within 2 % of AC. Times are single runs on a shared machine:
compare the rows of one run.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from scenarios.config import flex_options
from scenarios.overrides import prepare
from scenarios.seed003_study import build
from simulators.scheduler.flexibility import FlexOptions, solve_flex
from simulators.scheduler.flexibility_ac import (
    activation_voltages, ac_grid_from_net, branch_quantities,
)

SCENARIO = "scenarios/seed003_flex.toml"


def worst_violation(problem, grid, plan) -> tuple[float, float, int]:
    """(voltage excess [pu], loading excess [fraction], steps whose Newton power flow did
    not converge) of the plan's three activations in AC; the excesses over the converged
    steps only (``inf`` when no step converged)."""
    lim = problem.limits
    dv, dl, n_bad = 0.0, 0.0, 0
    for act in ("baseline", "down", "up"):
        v, ok = activation_voltages(problem, grid, plan.activated_p_kw(act), plan.q_per_p)
        n_bad += int((~ok).sum())
        if not ok.any():
            return float("inf"), float("inf"), n_bad
        v = v[ok]
        vm = np.abs(v[:, grid.col_bus])
        dv = max(dv, float(np.max(lim.vm_min_pu - vm)), float(np.max(vm - lim.vm_max_pu)))
        b = branch_quantities(grid, v, problem)
        dl = max(dl, float(np.max(b["line"] - lim.line_loading_max, initial=0.0)),
                 float(np.max(b["trafo"] - lim.trafo_loading_max, initial=0.0)))
    return max(dv, 0.0), max(dl, 0.0), n_bad


def inputs(overrides: dict):
    case = prepare(SCENARIO, overrides).cases[0]
    net, _, problem, specs, _, _ = build(case)
    return case, net, problem, len(specs)


def row(label, n_ev, plan, problem, grid, wall_s):
    dv, dl, n_bad = worst_violation(problem, grid, plan)
    return {"grid": label, "EVs": n_ev, "model": plan.grid_model, "status": plan.status,
            "n_var": plan.n_var, "n_con": plan.n_con, "build_s": plan.build_s, "solve_s": plan.solve_s,
            "wall_s": wall_s, "objective": plan.objective, "dv": dv, "dl": dl, "n_bad": n_bad}


def run_pair(label, overrides, vm_min=None, nlp_solver="pounce", with_ac=True):
    case, net, problem, n_ev = inputs(overrides)
    if vm_min is not None:
        problem = dataclasses.replace(problem, limits=dataclasses.replace(problem.limits, vm_min_pu=vm_min))
    grid = ac_grid_from_net(net, problem.sens)
    opts = FlexOptions(**flex_options(case.scheduler))
    rows = []
    for model in (("ac", "linear") if with_ac else ("linear",)):
        o = dataclasses.replace(opts, grid_model=model, nlp_solver=nlp_solver)
        t = time.perf_counter()
        plan = solve_flex(problem, o, ac_grid=grid if model == "ac" else None)
        rows.append(row(label, n_ev, plan, problem, grid, time.perf_counter() - t))
    if with_ac and rows[0]["objective"]:
        rows[1]["gap"] = rows[1]["objective"] / rows[0]["objective"] - 1.0
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--simbench", default="1-LV-semiurb4--0-sw", help="SimBench LV grid of the 5x-EV row")
    ap.add_argument("--nlp-solver", default="pounce", help="pounce or ripopt")
    ap.add_argument("--skip-tight", action="store_true", help="leave out the vm_min 0.95 rows")
    a = ap.parse_args()
    rows = run_pair("suburban_lv", {}, nlp_solver=a.nlp_solver)
    if not a.skip_tight:
        rows += run_pair("suburban_lv, vm_min 0.95", {}, vm_min=0.95, nlp_solver=a.nlp_solver)
    rows += run_pair(f"simbench:{a.simbench}, 5x EVs",
                     {"grid.network": f"simbench:{a.simbench}", "fleet.ev_share": 1.0}, with_ac=False)
    print("| grid | EVs | model | status | variables | constraints | build [s] | solve [s] | total [s] "
          "| objective [kW x steps] | worst AC voltage excess [pu] | worst AC loading excess "
          "| AC checks not converged [steps] | lin/AC - 1 |")
    print("|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        gap = f"{100 * r['gap']:+.2f} %" if "gap" in r else ""
        print(f"| {r['grid']} | {r['EVs']} | {r['model']} | {r['status']} | {r['n_var']} | {r['n_con']} "
              f"| {r['build_s']:.2f} | {r['solve_s']:.2f} | {r['wall_s']:.2f} | {r['objective']:.1f} "
              f"| {r['dv']:.4f} | {r['dl']:.4f} | {r['n_bad']} | {gap} |")
    print("targets: AC < 30 s, linear < 3 s, linear objective within 2 % of AC")


if __name__ == "__main__":
    main()
