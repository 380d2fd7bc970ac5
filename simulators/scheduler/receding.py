"""Receding-horizon support: re-solve the shrinking problem from step k.

At step ``k`` the scheduler knows the current SOC of every EV and the plug windows
of the EVs that have arrived so far; it re-solves problem (12) of seed 000 over
steps ``k .. T-1`` and applies the first step.

What made it fast (measured, ``bench/strategies.py``, see ``docs/strategies.md``;
interior-point solvers cannot warm-start usefully, so a re-solve is a fresh solve):

- event-triggered exact reuse: when nothing is new since the last solve, the tail
  of the last optimal plan is returned without solving (see
  :class:`RecedingHorizon`); with unknown arrivals on CIGRE MV, 25 of 64 steps solve;

- only EVs plugged at some step ``>= k`` enter the sub-problem (departed and
  not-yet-arrived EVs are dropped before anything is built; results are scattered
  back to the full fleet);
- variables exist only for plugged (step, EV) pairs (:mod:`.matrix_model`), so the
  problem shrinks with the horizon and with departures;
- the constant part of the linear grid model is computed once for the whole
  horizon and sliced (:func:`.model_data.grid_constants`);
- validation runs once, not every step;
- grid rows that cannot bind for the EVs still present are screened out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from . import model_data as md
from .problem import ChargingProblem, Schedule, StrategyOptions
from .strategies import solve


class RecedingHorizon:
    """Re-solve ``problem`` from any step with updated SOC and plug windows.

    Parameters
    ----------
    problem : ChargingProblem
        Full-horizon problem (its ``plugged`` and ``soc0`` are the defaults for
        :meth:`solve_from`).
    options : StrategyOptions
    reuse : bool
        Event-triggered re-planning: when nothing is new since the last solve
        (same known plug windows for the remaining steps, SOC within ``soc_tol``
        of the planned SOC, no new forecast), return the tail of the last optimal
        plan instead of solving. This is exact, not a heuristic: the objective
        (eqs. (8), (11)) and every constraint are sums/rows per step, so the tail
        of an optimal plan is optimal for the tail problem from the planned state
        (principle of optimality). With move blocking (``options.fine_steps``)
        a plan is reused only for its first ``fine_steps`` steps.
    soc_tol : float
        SOC deviation [-] that counts as new information.

    Raises
    ------
    ValueError
        If ``problem`` or ``options`` is invalid.
    """

    def __init__(self, problem: ChargingProblem, options: StrategyOptions, reuse: bool = True,
                 soc_tol: float = 1e-6):
        problem.validate()
        options.validate()
        self.problem = problem
        self.options = options
        self.reuse = bool(reuse)
        self.soc_tol = float(soc_tol)
        self._consts = md.grid_constants(problem)
        self._last = None  # (k, plugged (T-k, V), Schedule) of the last optimal solve
        self._seed = None  # (k, voltage rows near their bound) of the last solve
        self.n_solves = 0
        self.n_reused = 0

    def solve_from(self, k: int, soc_now=None, plugged=None, net_p_kw=None,
                   net_q_kvar=None) -> Schedule:
        """Solve steps ``k .. T-1``.

        Parameters
        ----------
        k : int
            First step, ``0 <= k < T``.
        soc_now : array_like, shape (V,), optional
            SOC of every EV at the start of step ``k`` [-] (default ``soc0``).
        plugged : array_like of bool, shape (T - k, V), optional
            Plug windows known at step ``k`` (default: the problem's rows ``k:``).
        net_p_kw, net_q_kvar : array_like, shape (T - k, n), optional
            Updated forecast of nodal net demand [kW], [kvar]. When given, the
            constant grid terms are recomputed for this step.

        Returns
        -------
        Schedule
            Arrays of shape (T - k, V) for the whole fleet (zero for the EVs left
            out); ``soc`` (T - k + 1, V).

        Raises
        ------
        ValueError
            On a step outside the horizon or badly shaped inputs.
        """
        pr = self.problem
        n_steps, n_ev = pr.n_steps, pr.n_evs
        if not 0 <= int(k) < n_steps:
            raise ValueError(f"k must be in [0, {n_steps - 1}], got {k}")
        k = int(k)
        t0 = time.perf_counter()
        soc = np.asarray(pr.soc0 if soc_now is None else soc_now, dtype=float)
        if soc.shape != (n_ev,) or not np.all(np.isfinite(soc)):
            raise ValueError(f"soc_now must be finite with shape ({n_ev},)")
        soc = np.clip(soc, 0.0, 1.0)
        plug = np.asarray(pr.plugged[k:] if plugged is None else plugged, dtype=bool)
        if plug.shape != (n_steps - k, n_ev):
            raise ValueError(f"plugged must have shape ({n_steps - k}, {n_ev}), got {plug.shape}")
        new_forecast = net_p_kw is not None or net_q_kvar is not None
        if self.reuse and not new_forecast and self._last is not None:
            k0, plug0, plan = self._last
            # with move blocking only the plan's fine steps are reused: a blocked
            # plan's tail is feasible but not optimal, so re-solve before it applies
            fine = self.options.fine_steps
            in_fine = fine is None or k - k0 < fine
            if in_fine and k >= k0 and np.array_equal(plug0[k - k0:], plug) and np.allclose(
                    plan.soc[k - k0], soc, rtol=0.0, atol=self.soc_tol):
                self.n_reused += 1
                p_tail, soc_tail = plan.p_kw[k - k0:], plan.soc[k - k0:]
                dev = soc_tail[1:] - np.asarray(pr.soc_target, dtype=float)
                obj = float(np.sum(dev * dev) + self.options.k_weight * np.sum(np.abs(p_tail)))
                return replace(plan, p_kw=p_tail, q_kvar=plan.q_kvar[k - k0:], soc=soc_tail,
                               objective=obj, solve_s=0.0, build_s=time.perf_counter() - t0,
                               message=f"tail of the plan of step {k0} (no new information)")
        active = np.flatnonzero(plug.any(axis=0))
        if not new_forecast:
            netp, netq = pr.net_p_kw[k:], pr.net_q_kvar[k:]
            consts = {key: val[k:] for key, val in self._consts.items()}
        else:
            netp = pr.net_p_kw[k:] if net_p_kw is None else np.asarray(net_p_kw, dtype=float)
            netq = pr.net_q_kvar[k:] if net_q_kvar is None else np.asarray(net_q_kvar, dtype=float)
            consts = None
        sub = replace(
            pr,
            ev_ids=np.asarray(pr.ev_ids)[active],
            ev_col=np.asarray(pr.ev_col)[active],
            capacity_kwh=np.asarray(pr.capacity_kwh)[active],
            s_max_kva=np.asarray(pr.s_max_kva)[active],
            efficiency=np.asarray(pr.efficiency)[active],
            soc0=soc[active],
            soc_target=np.asarray(pr.soc_target)[active],
            soc_min=np.asarray(pr.soc_min)[active],
            soc_max=np.asarray(pr.soc_max)[active],
            can_discharge=np.asarray(pr.can_discharge)[active],
            can_reactive=np.asarray(pr.can_reactive)[active],
            plugged=plug[:, active],
            net_p_kw=netp,
            net_q_kvar=netq,
        )
        if consts is None:
            sub.validate()
        prep_s = time.perf_counter() - t0
        if active.size == 0:
            zeros = np.zeros((n_steps - k, n_ev))
            return Schedule(p_kw=zeros, q_kvar=zeros.copy(), soc=np.tile(soc, (n_steps - k + 1, 1)),
                            status="optimal", objective=0.0, build_s=prep_s, message="no plugged EV")
        seed = None
        if self._seed is not None:
            k0, rows = self._seed
            seed = {side: np.asarray(mask)[k - k0:] for side, mask in rows.items()}
        res = solve(sub, self.options, validate=False, consts=consts, seed_rows=seed)
        self._seed = (k, res.vm_rows) if res.vm_rows is not None else None
        self.n_solves += 1
        p = np.zeros((n_steps - k, n_ev))
        q = np.zeros((n_steps - k, n_ev))
        p[:, active] = res.p_kw
        q[:, active] = res.q_kvar
        soc_all = np.tile(soc, (n_steps - k + 1, 1))
        soc_all[:, active] = res.soc
        out = replace(res, p_kw=p, q_kvar=q, soc=soc_all, build_s=res.build_s + prep_s)
        self._last = None if (res.fallback or new_forecast) else (k, plug.copy(), out)
        return out


@dataclass(frozen=True)
class RecedingRun:
    """Outcome of :func:`run_receding`.

    Attributes
    ----------
    p_kw, q_kvar : ndarray, shape (T, V)
        Applied first-step setpoints [kW], [kvar].
    soc : ndarray, shape (T + 1, V)
        Realised SOC [-].
    step_s : ndarray, shape (T,)
        Wall-clock time of each re-solve (build + solve) [s].
    n_fallback : int
        Steps that ended in the fallback.
    soft_violation_max : float
        Largest slack over all steps.
    n_solves : int
        Steps that ran the solver (the others reused the last plan).
    """

    p_kw: np.ndarray
    q_kvar: np.ndarray
    soc: np.ndarray
    step_s: np.ndarray
    n_fallback: int
    soft_violation_max: float
    n_solves: int


def run_receding(problem: ChargingProblem, options: StrategyOptions,
                 arrival_known: bool = True, reuse: bool = True) -> RecedingRun:
    """Closed-loop receding-horizon run with perfect forecasts (benchmark helper).

    Every step ``k`` re-plans from the realised SOC and applies step ``k``. With
    ``arrival_known=False`` an EV's plug window is revealed only when it is plugged
    in (future arrivals are unknown to the planner). ``reuse`` as in
    :class:`RecedingHorizon` (False: solve at every step).

    Returns
    -------
    RecedingRun
    """
    rh = RecedingHorizon(problem, options, reuse=reuse)
    n_steps, n_ev = problem.n_steps, problem.n_evs
    plugged = np.asarray(problem.plugged, dtype=bool)
    seen = np.zeros(n_ev, dtype=bool)
    soc = np.empty((n_steps + 1, n_ev))
    soc[0] = problem.soc0
    p = np.zeros((n_steps, n_ev))
    q = np.zeros((n_steps, n_ev))
    step_s = np.zeros(n_steps)
    n_fb = 0
    soft = 0.0
    a, b = md.soc_gains(problem)
    for k in range(n_steps):
        seen |= plugged[k]
        known = plugged[k:] if arrival_known else plugged[k:] & seen
        t0 = time.perf_counter()
        res = rh.solve_from(k, soc[k], plugged=known)
        step_s[k] = time.perf_counter() - t0
        n_fb += int(res.fallback)
        soft = max(soft, res.soft_violation_max)
        p[k], q[k] = res.p_kw[0], res.q_kvar[0]
        soc[k + 1] = soc[k] + a * np.maximum(p[k], 0) - b * np.maximum(-p[k], 0)
    return RecedingRun(p_kw=p, q_kvar=q, soc=soc, step_s=step_s, n_fallback=n_fb, soft_violation_max=soft,
                      n_solves=rh.n_solves)
