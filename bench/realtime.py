"""Benchmark: re-plan time after a flexibility activation request (issue 12).

Run ``python bench/realtime.py`` (``--help`` for options). For each grid it builds
the scheduler's controller (smart charging, receding horizon, linearised grid of
``simulators.grid.sensitivity``), plans step 0 for a fleet that is plugged in,
then times :meth:`simulators.scheduler.realtime.RealTime.on_step` with one
request: the re-plan of :func:`simulators.scheduler.activation.replan` (QP in
PIQP: EV energy chains, charger limits, minimum-energy curves, linearised
voltage and transformer rows) plus the envelope and bookkeeping. Two requests:

- ``inside``: downward, half the offered flexibility, 18:00-19:00;
- ``beyond``: upward, twice the offered, 18:00-19:00 (a shortfall: the reason is
  found with a second solve without grid rows).

Grids: the seed 003 stand-in ``suburban_lv`` with 24 EVs (the seed 003 scale: 20 %
of its 120 customers), CIGRE LV with 24 EVs (the first version's grid) and SimBench
``1-MV-semiurb--0-sw`` with 1 000 EVs over its load buses in proportion to their
nominal load. Targets: < 1 s and < 5 s. Fleet: 11 kW chargers, 60 kWh, efficiency
0.9, SOC uniform(0.2, 0.6) at 16:00, target 0.9, departures uniform 06:00-08:00;
64 steps of 15 min from 16:00; base load the networks' nominal loads times 0.6
(constant). Each time is the fastest of ``--repeat`` runs (the machine is shared).
Both QP formulations of the re-plan are timed, alternated in one run: ``chain``
(power and energy changes as variables, linked by equality rows: the first
version) and ``energy`` (the default: power changes substituted, half the
variables); CPU time of the process is printed too, less sensitive to other
sessions' load than wall time.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from adapters.networks import load_network
from simulators.scheduler.controller import Controller, ControllerConfig
from simulators.scheduler.fleet_view import FleetView
from simulators.scheduler.problem import GridBounds, StrategyOptions
from simulators.scheduler.realtime import RealTime

STEP_S = 900
N_STEPS = 64
CASES = (("suburban_lv", 24, 0.9, 1.1), ("cigre_lv", 24, 0.92, 1.08),
         ("simbench:1-MV-semiurb--0-sw", 1000, 0.95, 1.05))


def _setup(network: str, n_evs: int, vmin: float, vmax: float, seed: int = 0):
    net = load_network(network)
    loads = net.load[net.load.in_service.astype(bool)]
    fp = {int(b): [float(p) * 600.0] * N_STEPS for b, p in loads.groupby("bus").p_mw.sum().items()}
    fq = {int(b): [float(q) * 600.0] * N_STEPS for b, q in loads.groupby("bus").q_mvar.sum().items()}
    rng = np.random.default_rng(seed)
    weight = loads.groupby("bus").p_mw.sum()
    buses = rng.choice(weight.index.to_numpy(), size=n_evs, p=(weight / weight.sum()).to_numpy())
    rows = {}
    for i, b in enumerate(buses):
        rows[f"EV-{i}"] = {
            "soc": float(rng.uniform(0.2, 0.6)), "plugged": True, "bus": int(b), "home_bus": int(b),
            "capacity_kwh": 60.0, "charger_kva": 11.0, "efficiency": 0.9, "can_discharge": False,
            "can_reactive": False, "departure_s": float(rng.uniform(14, 16) * 3600.0), "soc_target": 0.9,
            "soc_min": 0.0, "soc_max": 1.0, "autonomous": False,
        }
    cfg = ControllerConfig(strategy="smart", mode="receding", step_s=STEP_S, n_steps=N_STEPS,
                           limits=GridBounds(vmin, vmax), options=StrategyOptions(time_limit_s=60.0))
    return Controller(net, cfg, fp, fq), FleetView.from_rows(rows)


def _one(network: str, n_evs: int, vmin: float, vmax: float, kind: str, formulation: str = "energy") -> dict:
    import simulators.scheduler.realtime as realtime_mod

    ctl, fleet = _setup(network, n_evs, vmin, vmax)
    t0 = time.perf_counter()
    ctl.plan(0, fleet)
    plan_s = time.perf_counter() - t0
    rt = RealTime(ctl)
    rt.on_step(0, fleet, [], resolved=True)
    offer = rt.offer(0, fleet)
    k0, k1 = 8, 12  # 18:00-19:00
    down = min(offer["down_kw"][k0:k1])
    up = min(offer["up_kw"][k0:k1])
    req = ({"request_id": "R", "direction": "down", "p_kw": 0.5 * down} if kind == "inside"
           else {"request_id": "R", "direction": "up", "p_kw": 2.0 * max(up, 1.0)})
    req.update(start_s=k0 * STEP_S, end_s=k1 * STEP_S, offered_kw=down if kind == "inside" else up)
    orig = realtime_mod.replan
    realtime_mod.replan = lambda *a, **k: orig(*a, **k, formulation=formulation)
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        rt.on_step(0, fleet, [req], resolved=False)
        total_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    finally:
        realtime_mod.replan = orig
    rec = rt.records["R"]
    return {"plan_s": plan_s, "replan_s": total_s, "cpu_s": cpu_s, "status": rec.status, "reason": rec.reason,
            "requested_kw": float(req["p_kw"]), "accepted_kw": float(rec.accepted.min())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs per case; the fastest counts")
    ap.add_argument("--small", action="store_true", help="only the seed 003 scale")
    args = ap.parse_args()
    print("| grid | EVs | request | smart plan [s] | re-plan, chain QP [s] | re-plan [s] | re-plan CPU, chain "
          "/ energy [s] | target [s] | requested [kW] | accepted [kW] | status | reason |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for network, n, vmin, vmax in CASES[:2] if args.small else CASES:
        target = 1.0 if n <= 100 else 5.0
        for kind in ("inside", "beyond"):
            # the first QP formulation and the current one, alternated (side by side
            # under the same load); the fastest of --repeat runs of each
            runs = {"chain": [], "energy": []}
            for _ in range(max(1, args.repeat)):
                for f in runs:
                    runs[f].append(_one(network, n, vmin, vmax, kind, f))
            old = min(runs["chain"], key=lambda r: r["replan_s"])
            best = min(runs["energy"], key=lambda r: r["replan_s"])
            cpu = (min(r["cpu_s"] for r in runs["chain"]), min(r["cpu_s"] for r in runs["energy"]))
            print(f"| {network} | {n} | {kind} | {min(r['plan_s'] for r in runs['energy']):.3f} "
                  f"| {old['replan_s']:.3f} | {best['replan_s']:.3f} | {cpu[0]:.3f} / {cpu[1]:.3f} "
                  f"| {target:g} | {best['requested_kw']:.1f} | {best['accepted_kw']:.1f} | {best['status']} "
                  f"| {best['reason'] or '-'} |", flush=True)


if __name__ == "__main__":
    main()
