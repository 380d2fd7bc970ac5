"""Closed-form schedules: uncoordinated charging and the safe fallback.

- :func:`uncoordinated`: seed 000, eq. (13): every EV charges at full charger power
  from plug-in until it reaches ``min(soc_target, soc_max)`` (the last step only the
  remaining energy), Q = 0, no grid constraint.
- :func:`safe_fallback`: returned when a solver fails (time limit, infeasible,
  numerical trouble). Step by step, the uncoordinated demand of the plugged EVs is
  scaled by one common factor ``alpha_t`` in [0, 1] (proportional curtailment), the
  largest for which the linearised grid model keeps every voltage, line and
  transformer row that holds with idle EVs. Where the base load alone already
  breaks a row, that row does not restrict ``alpha_t`` (EVs cannot fix it without Q/V2G and the
  fallback uses neither): the EVs keep charging rather than being shut off all
  night. Q = 0, no discharge. The SOC is propagated with the curtailed powers, so an
  EV curtailed early charges later.
"""

from __future__ import annotations

import numpy as np

from . import model_data as md
from .problem import ChargingProblem


def _demand(problem: ChargingProblem, soc: np.ndarray, plugged_t: np.ndarray) -> np.ndarray:
    """Full-power charging demand for one step, stopping at the target [kW]."""
    a, _ = md.soc_gains(problem)
    goal = np.minimum(problem.soc_target, problem.soc_max)
    need = np.maximum(goal - soc, 0.0) / a
    return np.where(plugged_t, np.minimum(problem.s_max_kva, need), 0.0)


def uncoordinated(problem: ChargingProblem) -> tuple[np.ndarray, np.ndarray]:
    """Uncoordinated charging, seed 000 eq. (13).

    Returns
    -------
    p_kw : ndarray, shape (T, V)
        Charging power [kW].
    soc : ndarray, shape (T + 1, V)
        SOC trajectory [-] (eq. (13b)).
    """
    a, _ = md.soc_gains(problem)
    n_steps, n_ev = problem.n_steps, problem.n_evs
    p = np.zeros((n_steps, n_ev))
    soc = np.empty((n_steps + 1, n_ev))
    soc[0] = problem.soc0
    plugged = np.asarray(problem.plugged, dtype=bool)
    for t in range(n_steps):
        p[t] = _demand(problem, soc[t], plugged[t])
        soc[t + 1] = soc[t] + a * p[t]
    return p, soc


def _max_alpha(problem: ChargingProblem, consts: dict, t: int, p_t: np.ndarray,
               s_line: np.ndarray, use_cone: np.ndarray, s_tr: np.ndarray) -> float:
    """Largest alpha in [0, 1] keeping the step-t rows that hold at alpha = 0."""
    sens = problem.sens
    n_bus = int(np.shape(sens.bus_ids)[0])
    pn = np.zeros(n_bus)
    np.add.at(pn, np.asarray(problem.ev_col), p_t)
    lim = problem.limits

    def lin_limit(x0, dx, lo, hi):
        with np.errstate(divide="ignore", invalid="ignore"):
            ok0 = (x0 >= lo) & (x0 <= hi)
            up = np.where(dx > 0, (hi - x0) / dx, np.inf)
            dn = np.where(dx < 0, (lo - x0) / dx, np.inf)
            cap = np.minimum(up, dn)
        cap = np.where(ok0, cap, np.inf)
        return float(np.min(cap, initial=np.inf))

    alpha = 1.0
    alpha = min(alpha, lin_limit(consts["vm"][t], np.asarray(sens.dvm_dp) @ pn, lim.vm_min_pu, lim.vm_max_pu))
    no_cone = ~use_cone
    if no_cone.any():
        imax = np.asarray(sens.i_max_ka)[no_cone] * lim.line_loading_max
        alpha = min(alpha, lin_limit(consts["i"][t][no_cone], (np.asarray(sens.di_dp) @ pn)[no_cone], -np.inf, imax))
    for p0, q0, dp, dq, smax in (
        (consts["pl"][t][use_cone], consts["ql"][t][use_cone], (np.asarray(sens.dpl_dp) @ pn)[use_cone],
         (np.asarray(sens.dql_dp) @ pn)[use_cone], s_line[use_cone]),
        (consts["pt"][t], consts["qt"][t], np.asarray(sens.dpt_dp) @ pn, np.asarray(sens.dqt_dp) @ pn, s_tr),
    ):
        # (p0 + a dp)^2 + (q0 + a dq)^2 <= s^2, rows that hold at a = 0
        qa = dp * dp + dq * dq
        qb = 2 * (p0 * dp + q0 * dq)
        qc = p0 * p0 + q0 * q0 - smax * smax
        ok0 = qc <= 0
        with np.errstate(divide="ignore", invalid="ignore"):
            root = (-qb + np.sqrt(np.maximum(qb * qb - 4 * qa * qc, 0.0))) / (2 * qa)
        root = np.where(ok0 & (qa > 0), root, np.inf)
        alpha = min(alpha, float(np.min(root, initial=np.inf)))
    return float(np.clip(alpha * (1 - 1e-9), 0.0, 1.0))


def safe_fallback(problem: ChargingProblem, consts: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Uncoordinated charging curtailed proportionally to keep the linear grid limits.

    Returns
    -------
    p_kw : ndarray, shape (T, V)
        Charging power [kW] (no discharge, Q = 0).
    soc : ndarray, shape (T + 1, V)
        SOC trajectory [-].
    """
    consts = md.grid_constants(problem) if consts is None else consts
    a, _ = md.soc_gains(problem)
    s_line, use_cone = md.line_s_max_kva(problem)
    s_tr = md.trafo_s_max_kva(problem)
    n_steps, n_ev = problem.n_steps, problem.n_evs
    p = np.zeros((n_steps, n_ev))
    soc = np.empty((n_steps + 1, n_ev))
    soc[0] = problem.soc0
    plugged = np.asarray(problem.plugged, dtype=bool)
    for t in range(n_steps):
        demand = _demand(problem, soc[t], plugged[t])
        if demand.any():
            demand = demand * _max_alpha(problem, consts, t, demand, s_line, use_cone, s_tr)
        p[t] = demand
        soc[t + 1] = soc[t] + a * demand
    return p, soc
