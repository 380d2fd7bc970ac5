"""Entry point: solve one charging problem with one strategy (seed 000, sections III-IV).

>>> schedule = solve(problem, StrategyOptions(name="smart_q"))     # doctest: +SKIP

Build, solve, check termination, extract: nothing is read from a solve that did
not end optimal within its time limit; then the safe fallback of
:mod:`.fallback` is returned with ``fallback=True``.
"""

from __future__ import annotations

import time

import numpy as np

from . import model_data as md
from .fallback import safe_fallback, uncoordinated
from .problem import ChargingProblem, Schedule, StrategyOptions

#: Default solver of the matrix path (see docs/strategies.md for the measurements).
DEFAULT_SOLVER = "piqp"


def solve(problem: ChargingProblem, options: StrategyOptions | None = None, *,
          path: str = "matrix", validate: bool = True, consts: dict | None = None,
          seed_rows: dict | None = None) -> Schedule:
    """Schedule all EVs of ``problem`` with strategy ``options.name``.

    Parameters
    ----------
    problem : ChargingProblem
    options : StrategyOptions, optional
        Defaults to smart charging with PIQP.
    path : {"matrix", "pyomo"}
        ``"matrix"``: :mod:`.matrix_model` (PIQP/Clarabel). ``"pyomo"``:
        :mod:`.pyomo_model` (HiGHS through pyomo), the readable reference.
    validate : bool
        Run ``problem.validate()`` and ``options.validate()`` first.
    consts : dict, optional
        Precomputed :func:`.model_data.grid_constants` (receding horizon).
    seed_rows : dict, optional
        Voltage rows to start constraint generation from (``Schedule.vm_rows`` of
        an earlier solve of a similar problem, shape (T, n) per side; see
        :func:`.matrix_model.solve_generated`). Changes only the time, not the
        optimum.

    Returns
    -------
    Schedule
        ``objective`` is eq. (11) evaluated on the returned powers.

    Raises
    ------
    ValueError
        Invalid problem/options (never for solver failures: those give the
        fallback schedule).
    """
    options = StrategyOptions() if options is None else options
    if validate:
        problem.validate()
        options.validate()
    if path not in ("matrix", "pyomo"):
        raise ValueError(f"path must be 'matrix' or 'pyomo', got {path!r}")
    if options.name == "uncoordinated":
        t0 = time.perf_counter()
        p, soc = uncoordinated(problem)
        zero = np.zeros_like(p)
        return Schedule(p_kw=p, q_kvar=zero, soc=soc, status="closed_form",
                        objective=md.objective_value(problem, p, options.k_weight),
                        build_s=time.perf_counter() - t0,
                        message="uncoordinated charging, seed 000 eq. (13)")
    if path == "pyomo" and options.solver != "highs":
        raise ValueError("the pyomo path solves with solver='highs'")
    if path == "matrix" and options.solver == "highs":
        raise ValueError("the matrix path solves with 'piqp' or 'clarabel'")

    if path == "matrix":
        from . import matrix_model as mm

        t0 = time.perf_counter()
        grouped, inverse, mult = mm.aggregate_identical(problem) if options.aggregate else (None, None, None)
        agg_s = time.perf_counter() - t0
        gen = mm.solve_generated(problem if grouped is None else grouped, options, consts=consts,
                                 seed=seed_rows, ev_mult=None if grouped is None else mult)
        qp, raw, build_s = gen.qp, gen.raw, gen.build_s + agg_s
        result = mm.extract(qp, raw.x) if raw.ok else None
        if result is not None and grouped is not None:
            share = 1.0 / mult[inverse]
            result = dict(result, **{key: result[key][:, inverse] * share for key in ("p_plus", "p_minus", "q")})
        vm_rows = gen.vm_allowed
    else:
        from . import pyomo_model as pm

        t0 = time.perf_counter()
        model = pm.build(problem, options)
        build_s = time.perf_counter() - t0
        vm_rows = None
        raw = pm.solve_model(model, options)
        result = pm.extract(model, problem) if raw.ok else None

    if result is None:
        p, soc = safe_fallback(problem, consts)
        return Schedule(
            p_kw=p, q_kvar=np.zeros_like(p), soc=soc, status=raw.status,
            objective=md.objective_value(problem, p, options.k_weight),
            solve_s=raw.solve_s, build_s=build_s, fallback=True,
            message=f"{raw.message}; safe fallback (proportionally curtailed uncoordinated charging)",
        )
    return _finish(problem, options, result, raw.solve_s, build_s, raw.message, vm_rows)


def _finish(problem, options, result, solve_s, build_s, message, vm_rows=None) -> Schedule:
    """Clean solver noise (bounds, disc) and package the schedule."""
    s = np.asarray(problem.s_max_kva, dtype=float)
    plugged = np.asarray(problem.plugged, dtype=bool)
    p = np.clip(result["p_plus"], 0.0, s) - np.clip(result["p_minus"], 0.0, s)
    q = np.clip(result["q"], -s, s)
    p = np.where(plugged, p, 0.0)
    q = np.where(plugged, q, 0.0)
    mag = np.hypot(p, q)
    shrink = np.where(mag > s, s / np.maximum(mag, 1e-300), 1.0)
    p, q = p * shrink, q * shrink
    soc = md.soc_trajectory(problem, p)
    slack = sorted((x for x in result["slack"] if x[3] > 1e-6), key=lambda x: -x[3])
    return Schedule(
        p_kw=p, q_kvar=q, soc=soc, status="optimal",
        objective=md.objective_value(problem, p, options.k_weight),
        solve_s=solve_s, build_s=build_s,
        soft_violation_max=float(slack[0][3]) if slack else 0.0,
        soft_violation_where=tuple(slack[:50]),
        fallback=False, message=message, vm_rows=vm_rows,
    )
