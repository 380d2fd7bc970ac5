"""Milliseconds per grid step: plain ``pandapower.runpp`` versus `GridModel`.

Usage::

    python bench/grid_step.py [--steps 50] [--networks cigre_lv cigre_mv simbench:1-MV-rural--0-sw]

Every method solves the same sequence of steps: the network's own loads scaled
by a random factor in [0.5, 1.2] per load and step, plus a random extra demand
at a quarter of the buses (load convention; up to 5 kW on LV, 300 kW on MV
networks, some of it negative like PV). Columns:

``runpp``
    ``pandapower.runpp(net)`` with default options (flat/DC start) each step.
``runpp recycle``
    ``runpp(init="results", recycle=dict(trafo=False, gen=False, bus_pq=True))``.
``GridModel``
    :class:`simulators.grid.model.GridModel` (``solver="auto"``, the direct path),
    time of the whole ``step`` call (input handling and result arrays included).
``max |dvm|``
    Largest voltage difference between ``GridModel`` and plain ``runpp`` over
    all buses and steps [pu]. Mostly ``runpp``'s own error: its default
    ``tolerance_mva=1e-8`` leaves ~1e-8 pu on CIGRE LV, while `GridModel` solves
    to 1e-10 (the tests compare against ``runpp`` at 1e-12 to 1e-9 pu).

Timings are wall-clock medians on whatever else the machine is doing; rerun on
a quiet machine for absolute numbers, the ratios are more stable.

numba is not installed in the project environment, so pandapower runs with
``numba=False`` (with numba its Jacobian build is faster; the pandas result
handling that dominates ``runpp`` is not).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import numpy as np
import pandapower as pp

from adapters.networks import load_network
from simulators.grid.model import GridLimits, GridModel

DEFAULT_NETWORKS = ("cigre_lv", "cigre_mv", "simbench:1-MV-rural--0-sw")


def make_steps(model: GridModel, n_steps: int, seed: int = 0) -> list[dict]:
    """Random step inputs for `GridModel.step` (kW/kvar, load convention)."""
    rng = np.random.default_rng(seed)
    lv = float(model.net.bus["vn_kv"].median()) < 1.0
    kw = 5.0 if lv else 300.0
    own_p = model.net.load.loc[model.load_ids, "p_mw"].to_numpy() * 1e3
    own_q = model.net.load.loc[model.load_ids, "q_mvar"].to_numpy() * 1e3
    steps = []
    for _ in range(n_steps):
        factor = rng.uniform(0.5, 1.2, size=len(own_p))
        buses = rng.choice(model.bus_ids, size=max(1, len(model.bus_ids) // 4), replace=False)
        steps.append(dict(
            load_p_kw=dict(zip(model.load_ids.tolist(), (own_p * factor).tolist())),
            load_q_kvar=dict(zip(model.load_ids.tolist(), (own_q * factor).tolist())),
            bus_p_kw={int(b): float(rng.uniform(-0.3, 1.0) * kw) for b in buses},
            bus_q_kvar={int(b): float(rng.uniform(-0.1, 0.2) * kw) for b in buses},
        ))
    return steps


def time_runpp(model: GridModel, steps: list[dict],
               **kwargs) -> tuple[list[float], list[np.ndarray]]:
    """ms per step and bus voltages of runpp on a copy of the model's network."""
    net = copy.deepcopy(model.net)
    pp.runpp(net, numba=False)
    times, vms = [], []
    for step in steps:
        p_mw, q_mvar = model.load_values(**step)
        t0 = time.perf_counter()
        net.load["p_mw"] = p_mw
        net.load["q_mvar"] = q_mvar
        pp.runpp(net, numba=False, **kwargs)
        times.append((time.perf_counter() - t0) * 1e3)
        vms.append(net.res_bus["vm_pu"].loc[model.bus_ids].to_numpy())
    return times, vms


def time_model(model: GridModel, steps: list[dict]) -> tuple[list[float], list[np.ndarray]]:
    times, vms = [], []
    for step in steps:
        t0 = time.perf_counter()
        state = model.step(**step)
        times.append((time.perf_counter() - t0) * 1e3)
        if not state.pf_converged:
            raise RuntimeError(f"benchmark step did not converge: {state.message}")
        vms.append(state.vm_pu)
    return times, vms


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--networks", nargs="+", default=list(DEFAULT_NETWORKS))
    args = parser.parse_args(argv)
    limits = GridLimits(vm_min_pu=0.9, vm_max_pu=1.1)
    rows = []
    for name in args.networks:
        net = load_network(name)
        model = GridModel(net, limits)
        steps = make_steps(model, args.steps)
        t_plain, vm_plain = time_runpp(model, steps)
        t_recycle, _ = time_runpp(model, steps, init="results",
                                  recycle=dict(trafo=False, gen=False, bus_pq=True))
        model.step()  # warm start from the base case, like the others
        t_model, vm_model = time_model(model, steps)
        dvm = max(float(np.max(np.abs(a - b))) for a, b in zip(vm_model, vm_plain))
        rows.append((name, len(net.bus), model.solver, statistics.median(t_plain),
                     statistics.median(t_recycle), statistics.median(t_model),
                     statistics.mean(t_model), dvm))
    header = (f"{'network':32s} {'buses':>5s} {'solver':>6s} {'runpp':>9s} {'recycle':>9s} "
              f"{'GridModel':>9s} {'(mean)':>8s} {'speed-up':>8s} {'max |dvm|':>10s}")
    print(f"ms per grid step, median over {args.steps} steps (numba not installed)")
    print(header)
    print("-" * len(header))
    for name, n_bus, solver, plain, recycle, fast, fast_mean, dvm in rows:
        print(f"{name:32s} {n_bus:5d} {solver:>6s} {plain:9.2f} {recycle:9.2f} {fast:9.2f} "
              f"{fast_mean:8.2f} {plain / fast:7.1f}x {dvm:10.1e}")


if __name__ == "__main__":
    main()
