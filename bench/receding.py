"""Benchmark of receding-horizon smart charging (issue 17): co-simulation and growth law.

Run ``python bench/receding.py`` (``--help`` for options; the default run takes about
5 minutes on the 2-core project machine). Prints:

1. **Co-simulation**, ``scenarios/seed000_mv.toml`` with ``mode = "receding"`` as shipped
   (878 EVs, 64 steps of 15 min, ``ac_iterations = 1``): wall time of the whole run,
   time in the scheduler's solves, solves, median and largest solve, for the current
   path. ``--old`` adds, in the same process, the path before issue 17 (Clarabel as the
   shipped ``cone = "soc"`` picked, every screened voltage row in one solve, charger
   rating as the only power bound, the AC-corrected solve at every step and no reuse:
   ``--set scheduler.solver=clarabel --set scheduler.row_generation=false`` plus
   ``matrix_model.HEADROOM_CAPS = False``, ``controller._still_optimal_with_offset``
   always False, no aggregation of identical EVs) and the ratio; ``--ratio-steps N`` runs both paths on the first N
   steps only (horizon shortened to N steps), the default side-by-side ratio (N = 16). ``--cases``
   picks the cases (default ``case2_smart``; ``case3_smart_q case4_v2g case5_v2g_q``
   are the other strategies).
2. **Growth law**: one smart-charging solve of a full-horizon problem (every EV known,
   as day-ahead planning, no seed: every screened row) on CIGRE MV with seed 000's
   fleet (``bench/strategies.py``: Table I counts scaled, GEV arrivals, base load at
   0.6 x nominal, band 0.97-1.03 pu), against the number of EVs (100 / 1 000 / 5 000
   at 64 steps) and the horizon (16 / 64 / 96 steps covering the same 16 h evening,
   i.e. steps of 60 / 15 / 10 min, 1 000 EVs); solve time, peak resident memory of a
   child process that only builds and solves, and the fitted exponent ``b`` of
   ``time = a * x^b`` (least squares in log-log).

Timings on a shared machine are noisy; compare ratios measured in one run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OLD_PATH = {"scheduler.solver": "clarabel", "scheduler.row_generation": False}


# ------------------------------------------------------------------ co-simulation
def cosim_receding(case: str, steps: int | None, old: bool) -> dict:
    """One receding run of ``seed000_mv`` case ``case``; times of the scheduler's solves."""
    import scenarios.api as api
    import simulators.scheduler.controller as controller
    import simulators.scheduler.strategies as strategies
    from simulators.scheduler import matrix_model as mm

    overrides = {"scheduler.mode": "receding", **(OLD_PATH if old else {})}
    scenario = api.load("seed000_mv", overrides, steps=steps)
    solves: list[float] = []
    orig = strategies.solve

    def timed(problem, options=None, **kw):
        t0 = time.perf_counter()
        res = orig(problem, options, **kw)
        solves.append(time.perf_counter() - t0)
        return res

    strategies.solve = timed
    caps, skip, agg = mm.HEADROOM_CAPS, controller._still_optimal_with_offset, mm.aggregate_identical
    mm.HEADROOM_CAPS = not old
    if old:
        controller._still_optimal_with_offset = lambda *a: False
        mm.aggregate_identical = lambda problem: (None, None, None)
    try:
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            api.run(scenario, out, cases=[case], jobs=1)
            wall = time.perf_counter() - t0
    finally:
        strategies.solve = orig
        mm.HEADROOM_CAPS = caps
        controller._still_optimal_with_offset = skip
        mm.aggregate_identical = agg
    ts = np.asarray(solves) if solves else np.zeros(1)
    return {"wall_s": wall, "solve_s": float(ts.sum()), "n_solves": len(solves),
            "median_s": float(np.median(ts)), "max_s": float(ts.max())}


def print_cosim(rows: list[tuple[str, str, int, dict]]) -> None:
    head = f"{'case':22s} {'path':8s} {'steps':>5s} {'wall_s':>8s} {'solve_s':>8s} {'solves':>6s} {'median_s':>8s} {'max_s':>7s}"
    print(head)
    print("-" * len(head))
    for case, path, steps, r in rows:
        print(f"{case:22s} {path:8s} {steps:5d} {r['wall_s']:8.1f} {r['solve_s']:8.1f} {r['n_solves']:6d} "
              f"{r['median_s']:8.2f} {r['max_s']:7.2f}")


# --------------------------------------------------------------------- growth law
def growth_problem(n_evs: int, n_steps: int, seed: int = 0):
    """CIGRE MV, seed 000 fleet scaled to ``n_evs``, 16 h from 16:00 in ``n_steps`` steps."""
    import pandapower.networks as pn
    from scipy import stats

    from bench.strategies import CIGRE_COUNTS, _SHAPE, _SHAPE_H, peak_operating_point
    from simulators.scheduler.problem import ChargingProblem, GridBounds

    net = pn.create_cigre_network_mv(with_der=False)
    peak = 0.6
    sens, colmap, nom_p, nom_q = peak_operating_point(net, peak)
    step_h = 16.0 / n_steps
    hours = 16.0 + (np.arange(n_steps) + 0.5) * step_h
    factor = peak * np.interp(hours, _SHAPE_H, _SHAPE)[:, None]
    total = sum(CIGRE_COUNTS.values())
    counts = {b: int(round(c * n_evs / total)) for b, c in CIGRE_COUNTS.items()}
    counts[5] += n_evs - sum(counts.values())
    home = np.repeat(list(counts), list(counts.values()))
    rng = np.random.default_rng(seed)
    arr_h = stats.genextreme(c=0.06, loc=17.3, scale=0.85).rvs(n_evs, random_state=rng)
    dep_h = 24.0 + stats.weibull_min(c=21.83, scale=7.67).rvs(n_evs, random_state=rng)
    soc0 = np.clip(stats.norm(0.49, 0.04).rvs(n_evs, random_state=rng), 0.0, 1.0)
    arr = np.clip(np.ceil((arr_h - 16.0) / step_h), 0, n_steps - 1).astype(int)
    dep = np.clip(np.floor((dep_h - 16.0) / step_h), 1, n_steps).astype(int)
    dep = np.maximum(dep, arr + 1)
    t = np.arange(n_steps)[:, None]
    n = home.size
    return ChargingProblem(
        dt_h=step_h, ev_ids=np.arange(n), ev_col=np.array([colmap[int(b)] for b in home]),
        capacity_kwh=np.full(n, 16.0), s_max_kva=np.full(n, 3.6), efficiency=np.full(n, 0.9),
        soc0=soc0, soc_target=np.ones(n), soc_min=np.zeros(n), soc_max=np.ones(n),
        can_discharge=np.ones(n, bool), can_reactive=np.ones(n, bool), plugged=(t >= arr) & (t < dep),
        net_p_kw=nom_p * factor, net_q_kvar=nom_q * factor, sens=sens, limits=GridBounds(0.97, 1.03),
    )


def growth_point(n_evs: int, n_steps: int, old: bool = False) -> dict:
    """Build and solve one growth problem in this process (called in a child)."""
    import resource

    from simulators.scheduler import matrix_model as mm
    from simulators.scheduler.problem import StrategyOptions
    from simulators.scheduler.strategies import solve

    problem = growth_problem(n_evs, n_steps)
    if old:
        mm.HEADROOM_CAPS = False
        opts = StrategyOptions(name="smart", cone="soc", solver="clarabel", row_generation=False,
                               aggregate=False, time_limit_s=1800)
    else:
        opts = StrategyOptions(name="smart", cone="soc", solver="auto", time_limit_s=1800)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    s = solve(problem, opts)
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"n_evs": n_evs, "n_steps": n_steps, "pairs": int(problem.plugged.sum()), "status": s.status,
            "build_s": s.build_s, "solve_s": s.solve_s, "wall_s": wall, "objective": s.objective,
            "peak_rss_mb": rss / 1024.0, "solve_rss_mb": (rss - rss0) / 1024.0}


def run_child(n_evs: int, n_steps: int, old: bool = False) -> dict:
    """:func:`growth_point` in a fresh interpreter (clean peak-memory figure)."""
    code = (f"import json, sys; sys.path.insert(0, {str(ROOT)!r}); from bench.receding import growth_point; "
            f"print(json.dumps(growth_point({n_evs}, {n_steps}, {old})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def fit_exponent(x, y) -> float:
    """``b`` of ``y = a x^b`` by least squares on logs."""
    return float(np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)[0])


def print_growth(title: str, key: str, rows: list[dict]) -> None:
    print(f"\n{title}")
    head = (f"{'EVs':>6s} {'steps':>5s} {'EV-steps':>9s} {'status':>8s} {'build_s':>8s} {'solve_s':>8s} "
            f"{'peak_MB':>8s} {'solve_MB':>8s}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['n_evs']:6d} {r['n_steps']:5d} {r['pairs']:9d} {r['status']:>8s} {r['build_s']:8.2f} "
              f"{r['solve_s']:8.2f} {r['peak_rss_mb']:8.0f} {r['solve_rss_mb']:8.0f}")
    ok = [r for r in rows if r["status"] == "optimal"]
    if len(ok) >= 2:
        b_t = fit_exponent([r[key] for r in ok], [r["build_s"] + r["solve_s"] for r in ok])
        b_p = fit_exponent([r[key] for r in ok], [r["pairs"] for r in ok])
        print(f"fitted exponent: (build + solve) time ~ {key}^{b_t:.2f}   (EV-steps ~ {key}^{b_p:.2f})")


def plot_growth(ev_rows: list[dict], h_rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, rows, key, label in ((axes[0], ev_rows, "n_evs", "EVs (64 steps)"),
                                 (axes[1], h_rows, "n_steps", "horizon steps (1 000 EVs, same 16 h)")):
        ok = [r for r in rows if r["status"] == "optimal"]
        x = np.array([r[key] for r in ok], float)
        y = np.array([r["build_s"] + r["solve_s"] for r in ok])
        ax.loglog(x, y, "o-", label="build + solve [s]")
        if x.size >= 2:
            ax.set_title(f"slope {fit_exponent(x, y):.2f}", fontsize=9)
        ax.set_xlabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("time [s]")
    axes[0].legend(fontsize=8)
    fig.suptitle("Smart charging, one solve, CIGRE MV (bench/receding.py)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    """Command-line entry."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=["case2_smart"], help="seed000_mv cases (receding)")
    ap.add_argument("--old", action="store_true",
                    help="also run the full 64 steps on the path before issue 17 (about 7-13 min per case)")
    ap.add_argument("--ratio-steps", type=int, default=16,
                    help="side-by-side old/new ratio on the first N steps (0: skip)")
    ap.add_argument("--no-cosim", action="store_true", help="skip the co-simulation table")
    ap.add_argument("--no-growth", action="store_true", help="skip the growth table")
    ap.add_argument("--evs", default="100,1000,5000", help="EV counts of the growth table")
    ap.add_argument("--horizons", default="16,64,96", help="horizon lengths of the growth table")
    ap.add_argument("--growth-old", action="store_true", help="also the old path at 1 000 EVs, 64 steps")
    ap.add_argument("--plot", default="", help="write the log-log growth plot to this PNG")
    args = ap.parse_args(argv)

    if not args.no_cosim:
        print("Co-simulation: scenarios/seed000_mv.toml, mode = receding, ac_iterations = 1 as shipped")
        rows = []
        for case in args.cases:
            if args.ratio_steps:
                old = cosim_receding(case, args.ratio_steps, old=True)
                new = cosim_receding(case, args.ratio_steps, old=False)
                rows += [(case, "old", args.ratio_steps, old), (case, "new", args.ratio_steps, new)]
            full = cosim_receding(case, None, old=False)
            rows.append((case, "new", 64, full))
            if args.old:
                rows.append((case, "old", 64, cosim_receding(case, None, old=True)))
        print_cosim(rows)
        for case in args.cases:
            pair = {(p, s): r for c, p, s, r in rows if c == case}
            for steps in sorted({s for (_, s) in pair}):
                if ("old", steps) in pair and ("new", steps) in pair:
                    o, n = pair[("old", steps)], pair[("new", steps)]
                    print(f"{case}, {steps} steps: old / new wall {o['wall_s'] / n['wall_s']:.1f} x, "
                          f"solve {o['solve_s'] / max(n['solve_s'], 1e-9):.1f} x")

    if not args.no_growth:
        evs = [int(x) for x in args.evs.split(",") if x]
        hs = [int(x) for x in args.horizons.split(",") if x]
        ev_rows = [run_child(n, 64) for n in evs]
        h_rows = [run_child(1000, h) for h in hs]
        print_growth("Growth against EVs (smart, one full-horizon solve, 64 steps of 15 min)", "n_evs", ev_rows)
        print_growth("Growth against horizon (smart, 1 000 EVs, 16 h in T steps)", "n_steps", h_rows)
        if args.growth_old:
            o = run_child(1000, 64, old=True)
            n = next((r for r in ev_rows if r["n_evs"] == 1000), None) or run_child(1000, 64)
            print(f"\n1 000 EVs, 64 steps: old path {o['solve_s']:.2f} s ({o['status']}), new {n['solve_s']:.2f} s: "
                  f"{o['solve_s'] / max(n['solve_s'], 1e-9):.1f} x; objective difference "
                  f"{abs(o['objective'] - n['objective']) / abs(n['objective']):.1e} relative")
        if args.plot:
            plot_growth(ev_rows, h_rows, Path(args.plot))
            print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
