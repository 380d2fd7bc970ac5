"""Real-time flexibility activation: envelope of a plan and the re-plan that serves a call.

Seed 003 (section V-C) leaves this as future work: an activation changes the SOC,
so it shrinks the flexibility in one direction and grows it in the other for the
rest of the day; only re-planning keeps track. This module is the pure part
(numpy/scipy + PIQP, no mosaik):

:func:`envelope`
    Upward/downward flexibility of every EV and step of a plan, seed 003
    eqs. (2)-(3) with the minimum-energy curve of eq. (1).
:func:`replan`
    Move the fleet's power over a request's interval from the baseline plan by the
    requested amount, as far as the minimum-energy curves, departure energies,
    charger limits and the linearised grid limits allow; the rest of the plan
    changes as little as possible (least squares) to stay feasible.

Plan data are :class:`PlanEVs` (the EVs plugged in now and their plan from step
``k`` on); any charging plan works as the baseline (the smart-charging receding
horizon today, the ``flex_max`` schedule of seed 003 once it is there: only
``p_kw`` of the plan is used).

Energies are battery energies [kWh]: a grid power ``p`` [kW] over a step of
``dt`` [h] adds ``eta p dt`` (seed 000, eq. (4); seed 003, eq. (17) with the
efficiency of eq. (19)).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

#: Reasons for a shortfall, in the order they are tested.
REASONS = ("no_evs", "charger_limit", "grid_limit", "ev_needs", "ev_left", "solver_failed")
#: Why a request was refused before any re-plan (recorded by ``realtime.RealTime``).
REFUSALS = ("late", "no_offer", "nothing_requested", "no_evs")
#: Cost of one kW of shortfall in one step, against 1/2 kW^2 of plan change per EV-step.
SHORTFALL_WEIGHT = 1e4
#: Shortfall below this is "delivered in full" [kW].
TOL_KW = 1e-4


@dataclass(frozen=True)
class PlanEVs:
    """The EVs a re-plan may move, and their baseline plan from step ``k``.

    Attributes
    ----------
    ev_ids : ndarray, shape (V,)
    bus : ndarray of int, shape (V,)
        Pandapower bus where each EV charges.
    col : ndarray of int, shape (V,)
        Its column in ``sens.bus_ids`` (-1 when unknown to the grid model).
    p_max_kw, efficiency : ndarray, shape (V,)
        Charger limit [kW] and efficiency [-].
    e0_kwh : ndarray, shape (V,)
        Battery energy now [kWh].
    e_floor_kwh, e_max_kwh : ndarray, shape (V,)
        SOC limits as energies [kWh] (eq. (18)).
    e_dep_kwh : ndarray, shape (V,)
        Energy the EV must have when it leaves [kWh] (eq. (19)).
    plugged : ndarray of bool, shape (T, V)
        Plugged for the whole of step ``t`` (steps ``k .. k + T - 1``).
    p_kw : ndarray, shape (T, V)
        Baseline plan [kW], load convention (charging only: >= 0).
    dt_h : float
        Step [h].
    """

    ev_ids: np.ndarray
    bus: np.ndarray
    col: np.ndarray
    p_max_kw: np.ndarray
    efficiency: np.ndarray
    e0_kwh: np.ndarray
    e_floor_kwh: np.ndarray
    e_max_kwh: np.ndarray
    e_dep_kwh: np.ndarray
    plugged: np.ndarray
    p_kw: np.ndarray
    dt_h: float

    @property
    def n_steps(self) -> int:
        return int(self.plugged.shape[0])

    def energy(self, p_kw: np.ndarray | None = None) -> np.ndarray:
        """Battery energy at the step boundaries, shape (T + 1, V) [kWh] (eq. (17))."""
        p = self.p_kw if p_kw is None else p_kw
        gain = self.efficiency * self.dt_h
        return self.e0_kwh + np.vstack([np.zeros((1, p.shape[1])), np.cumsum(p * gain, axis=0)])

    def min_energy(self) -> np.ndarray:
        """Minimum-energy curve at the step boundaries, shape (T + 1, V) [kWh].

        Seed 003, eq. (1): charging postponed as late as possible, then at full
        power, still reaches ``e_dep_kwh`` when the EV leaves:
        ``E_min(t) = max(E_floor, E_dep - eta P_max dt n(t))`` with ``n(t)`` the
        plugged steps left from ``t``.
        """
        rem = np.cumsum(self.plugged[::-1], axis=0)[::-1]  # plugged steps from t on
        rem = np.vstack([rem, np.zeros((1, rem.shape[1]))])
        curve = self.e_dep_kwh - self.efficiency * self.p_max_kw * self.dt_h * rem
        return np.maximum(self.e_floor_kwh, curve)


def envelope(plan: PlanEVs, p_kw: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Upward and downward flexibility of each EV and step [kW], shape (T, V).

    Seed 003, eqs. (2), (3), for a plan ``p`` with energies ``E`` (``E[t + 1]``
    after step ``t``)::

        up[t]   = min(P_max - p[t],  (E_max - E[t + 1]) / (eta dt))
        down[t] = min(p[t],          (E[t + 1] - E_min[t + 1]) / (eta dt))

    Each is what one step alone can give (the re-plan then moves the rest of the
    plan to keep the energies feasible); zero where the EV is not plugged in.
    """
    p = plan.p_kw if p_kw is None else p_kw
    e = plan.energy(p)[1:]
    emin = plan.min_energy()[1:]
    gain = plan.efficiency * plan.dt_h
    up = np.minimum(plan.p_max_kw - p, (plan.e_max_kwh - e) / gain)
    down = np.minimum(p, (e - emin) / gain)
    mask = plan.plugged
    return np.where(mask, np.maximum(up, 0.0), 0.0), np.where(mask, np.maximum(down, 0.0), 0.0)


def energy_room(plan: PlanEVs, p_kw: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Energy the EVs could still take / give up after each step [kWh], shape (T, V).

    ``up = E_max - E[t + 1]`` and ``down = E[t + 1] - E_min[t + 1]``: the energy
    terms of seed 003, eqs. (2), (3). They are what section V-C says an activation
    shifts: an upward activation raises every later ``E``, so later upward energy
    shrinks and later downward energy grows (the power terms of eqs. (2), (3) then
    follow wherever the energy term is the smaller one).
    """
    p = plan.p_kw if p_kw is None else p_kw
    e = plan.energy(p)[1:]
    up = np.where(plan.plugged, np.maximum(plan.e_max_kwh - e, 0.0), 0.0)
    down = np.where(plan.plugged, np.maximum(e - plan.min_energy()[1:], 0.0), 0.0)
    return up, down


@dataclass(frozen=True)
class GridModel:
    """Linearised grid around the baseline plan (``simulators.grid.sensitivity``).

    Attributes
    ----------
    vm_base_pu : ndarray, shape (T, n)
        Voltages the linear model predicts for the baseline plan [pu].
    dvm_dp : ndarray, shape (n, n)
        [pu/kW].
    vm_min_pu, vm_max_pu : float
        Band. A bus already outside it in the baseline may not move further out.
    pt_base_kw : ndarray, shape (T, k)
        Transformer HV-side active power of the baseline [kW].
    dpt_dp : ndarray, shape (k, n)
    pt_max_kw : ndarray, shape (k,)
        Active-power room of each transformer at the baseline's reactive power
        [kW] (``sqrt(S_max^2 - Q^2)``); the baseline's own flow widens it.
    """

    vm_base_pu: np.ndarray
    dvm_dp: np.ndarray
    vm_min_pu: float
    vm_max_pu: float
    pt_base_kw: np.ndarray | None = None
    dpt_dp: np.ndarray | None = None
    pt_max_kw: np.ndarray | None = None


@dataclass(frozen=True)
class Replan:
    """Outcome of :func:`replan`.

    Attributes
    ----------
    ok : bool
        False when the solver failed (``p_kw`` is then the baseline).
    p_kw : ndarray, shape (T, V)
        New plan [kW].
    accepted_kw : ndarray, shape (T,)
        Planned change in the request's direction per step [kW] (zero outside it).
    shortfall_kw : ndarray, shape (T,)
        Requested minus accepted, per step of the interval [kW].
    reason : str
        ``""`` when served in full, else one of :data:`REASONS`.
    solve_s : float
        Wall time of the re-plan [s].
    message : str
    """

    ok: bool
    p_kw: np.ndarray
    accepted_kw: np.ndarray
    shortfall_kw: np.ndarray
    reason: str
    solve_s: float
    message: str = ""


def replan(plan: PlanEVs, direction: str, p_req_kw, steps: np.ndarray, movable: np.ndarray,
           grid: GridModel | None = None, time_limit_s: float = 10.0, formulation: str = "energy") -> Replan:
    """Serve a request: change the movable EVs' total power by ``p_req_kw`` over ``steps``.

    Solves the convex QP (variables ``dp`` = change of each plugged (t, v) pair of
    a movable EV, ``s`` = shortfall per request step)::

        min  W sum_t s_t + 1/2 sum w_t dp^2
        s.t. sigma sum_v dp[t, v] + s_t = P_req,  0 <= s_t <= P_req   (t in steps)
             0 <= p + dp <= P_max                                       (eq. (20))
             E_min[t + 1] <= E[t + 1] + eta dt cumsum(dp) <= E_max      (eqs. (1), (18))
             linearised voltages and transformer power of the new plan inside the
             limits, or no further out than the baseline's        (seed 003 (13), (16))

    ``sigma = +1`` up, ``-1`` down; ``w_t = 1 + (T - 1 - t) / T`` makes a change
    cost more the earlier it is, so the energy an activation moves is given back
    (or taken) as late as the EVs allow: a rebound right after a call would undo
    its relief when the grid is still stressed. The baseline is feasible (``dp = 0``,
    ``s = P_req``), so the problem always has a solution; the last row of
    ``E_min`` is the departure energy, so no EV leaves below it.

    Parameters
    ----------
    plan : PlanEVs
    direction : str
        ``"up"`` or ``"down"``.
    p_req_kw : float or ndarray
        Requested change [kW], >= 0: one value, or one per entry of ``steps``.
    steps : ndarray of int
        Rows of ``plan`` in the request's interval.
    movable : ndarray of bool, shape (V,)
        EVs the request applies to (its bus group).
    grid : GridModel, optional
        Grid limits (None: none).
    time_limit_s : float
    formulation : str
        ``"energy"`` (default): the QP in the energy changes alone (``dp``
        substituted by the differences of ``de`` along each EV's chain, the power
        boxes as inequality rows); ``"chain"``: ``dp`` and ``de`` both variables,
        linked by equality rows (the first version). The same QP: plans agree to
        the solver's tolerance (< 5e-3 kW, tests/test_activation.py); "energy"
        has half the variables (bench/realtime.py).

    Returns
    -------
    Replan
    """
    t0 = time.perf_counter()
    n_t, n_v = plan.plugged.shape
    sigma = 1.0 if direction == "up" else -1.0
    steps_in = np.asarray(steps, dtype=int)
    inside = (steps_in >= 0) & (steps_in < n_t)
    steps = steps_in[inside]
    amounts = np.broadcast_to(np.asarray(p_req_kw, dtype=float), steps_in.shape)[inside]
    req = np.zeros(n_t)
    req[steps] = np.maximum(amounts, 0.0)
    zero = np.zeros(n_t)
    mask = plan.plugged & np.asarray(movable, dtype=bool)[None, :]
    if steps.size == 0 or req.max() < TOL_KW or not mask[steps].any():
        reason = "" if req.max() < TOL_KW and steps.size else "no_evs"
        return Replan(True, plan.p_kw.copy(), zero, req, reason, time.perf_counter() - t0,
                      "no movable EV plugged in during the request" if reason else "nothing requested")
    res = _solve(plan, sigma, req, steps, mask, grid, time_limit_s, formulation)
    if res is None:
        return Replan(False, plan.p_kw.copy(), zero, req, "solver_failed", time.perf_counter() - t0,
                      "PIQP did not solve the re-plan: the previous plan is kept")
    p_new, accepted = res
    short = np.where(req > 0, np.maximum(req - accepted, 0.0), 0.0)
    reason = ""
    if short.max(initial=0.0) > TOL_KW:
        reason = _shortfall_reason(plan, sigma, req, steps, mask, grid, accepted, time_limit_s, formulation)
    return Replan(True, p_new, accepted, short, reason, time.perf_counter() - t0, "PIQP solved")


def _shortfall_reason(plan, sigma, req, steps, mask, grid, accepted, time_limit_s, formulation="energy") -> str:
    """Why the request was not served in full (:data:`REASONS`)."""
    charger = np.where(mask, plan.p_max_kw - plan.p_kw if sigma > 0 else plan.p_kw, 0.0).sum(axis=1)
    if np.any(charger[steps] < req[steps] - TOL_KW):
        return "charger_limit"
    if grid is not None:
        free = _solve(plan, sigma, req, steps, mask, None, time_limit_s, formulation)
        if free is not None and np.sum(free[1][steps]) > np.sum(accepted[steps]) + TOL_KW:
            return "grid_limit"
    return "ev_needs"


def _solve(plan, sigma, req, steps, mask, grid, time_limit_s, formulation="energy"):
    """Assemble and solve the QP of :func:`replan`; (p_new, accepted) or None."""
    import piqp

    n_t, n_v = plan.plugged.shape
    v, t = np.nonzero(mask.T)  # pairs ordered by EV, then step
    n_pair = t.size
    gain = (plan.efficiency * plan.dt_h)[v]
    e_base = plan.energy()[1:][t, v]
    e_min = plan.min_energy()[1:][t, v]
    e_max = plan.e_max_kwh[v]
    p0 = plan.p_kw[t, v]
    n_s = steps.size
    # variables: dp (pairs) | de (pairs: energy change after the step) | s (request steps)
    i_dp = np.arange(n_pair)
    i_de = n_pair + np.arange(n_pair)
    i_s = 2 * n_pair + np.arange(n_s)
    n_var = 2 * n_pair + n_s
    rows, cols, vals, rhs = [], [], [], []

    def add(r, c, x):
        rows.append(np.asarray(r)), cols.append(np.asarray(c)), vals.append(np.asarray(x, dtype=float))

    # energy chain: de_j - de_prev(j) - eta dt dp_j = 0
    same = np.zeros(n_pair, dtype=bool)
    same[1:] = v[1:] == v[:-1]
    r = np.arange(n_pair)
    add(r, i_de, np.ones(n_pair))
    add(r[same], i_de[np.flatnonzero(same) - 1], -np.ones(same.sum()))
    add(r, i_dp, -gain)
    rhs.append(np.zeros(n_pair))
    n_eq = n_pair
    # request rows: sigma sum dp[t] + s_t = req_t
    order = np.argsort(steps, kind="stable")
    at = np.minimum(np.searchsorted(steps[order], t), n_s - 1)
    in_req = steps[order][at] == t
    rr = order[at[in_req]]
    add(n_eq + rr, i_dp[in_req], np.full(rr.size, sigma))
    add(n_eq + np.arange(n_s), i_s, np.ones(n_s))
    rhs.append(req[steps])
    n_eq += n_s
    gr = _grid_rows(plan, mask, t, v, n_var, grid)
    n_agg = 0
    if gr is not None:
        G, h_lo, h_hi, n_agg, (ar, ac, av, n_ar) = gr
        add(n_eq + ar, ac, av)
        rhs.append(np.zeros(n_ar))
        n_eq += n_ar
    n_all = n_var + n_agg
    A = sp.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_eq, n_all))
    b = np.concatenate(rhs)

    lb = np.concatenate([-p0, e_min - e_base, np.zeros(n_s)])
    ub = np.concatenate([plan.p_max_kw[v] - p0, e_max - e_base, req[steps]])
    # the baseline's own values stay feasible (rounding, SOC limits crossed by the fleet)
    lb[i_de] = np.minimum(lb[i_de], 0.0)
    ub[i_de] = np.maximum(ub[i_de], 0.0)
    lb = np.concatenate([lb, np.full(n_agg, -np.inf)])
    ub = np.concatenate([ub, np.full(n_agg, np.inf)])
    if gr is None:
        G = h_lo = h_hi = None
    w = 1.0 + (n_t - 1 - t) / n_t  # later changes cheaper (see replan)
    P = sp.diags(np.concatenate([w, np.zeros(n_pair + n_s + n_agg)]), format="csc")
    c = np.concatenate([np.zeros(2 * n_pair), np.full(n_s, SHORTFALL_WEIGHT), np.zeros(n_agg)])
    solver = piqp.SparseSolver()
    st = solver.settings
    st.verbose = False
    st.max_iter = 200
    st.eps_abs = 1e-8
    st.eps_rel = 1e-9
    has_g = G is not None and G.shape[0] > 0
    if not has_g:
        G = sp.csc_matrix((0, n_all))
        h_lo = h_hi = np.zeros(0)
    if formulation == "energy":
        # substitute dp = D de (D: eta dt differences along each EV's chain): the
        # chain rows vanish and the power boxes become rows of G; the same QP with
        # half the variables and a smaller KKT system (bench/realtime.py)
        gain_inv = 1.0 / gain
        jj = np.flatnonzero(same)
        D = sp.csc_matrix((np.concatenate([gain_inv, -gain_inv[jj]]),
                           (np.concatenate([r, jj]), np.concatenate([r, jj - 1]))), shape=(n_pair, n_pair))
        n_rest = n_s + n_agg
        T = sp.vstack([sp.hstack([D, sp.csc_matrix((n_pair, n_rest))]),
                       sp.identity(n_pair + n_rest, format="csc")], format="csc")
        keep = slice(n_pair, None)
        P2 = (T.T @ P @ T).tocsc()
        A2 = (A[keep] @ T).tocsc()
        G2 = sp.vstack([sp.hstack([D, sp.csc_matrix((n_pair, n_rest))]), G @ T], format="csc")
        h_lo2 = np.concatenate([lb[i_dp], h_lo])
        h_hi2 = np.concatenate([ub[i_dp], h_hi])
        solver.setup(P2, T.T @ c, A2, b[keep], G2, h_lo2, h_hi2, lb[n_pair:], ub[n_pair:])
    else:
        solver.setup(P, c, A, b, G if has_g else None, h_lo if has_g else None, h_hi if has_g else None, lb, ub)
    t0 = time.perf_counter()
    status = solver.solve()
    if status != piqp.PIQP_SOLVED or time.perf_counter() - t0 > 1.5 * time_limit_s:
        return None
    x = np.asarray(solver.result.x)
    if formulation == "energy":
        x = T @ x
    dp = np.zeros((n_t, n_v))
    dp[t, v] = x[i_dp]
    p_new = np.clip(plan.p_kw + dp, 0.0, plan.p_max_kw)
    accepted = np.zeros(n_t)
    accepted[steps] = sigma * dp[steps].sum(axis=1)
    return p_new, accepted


def _grid_rows(plan, mask, t, v, n_var, grid):
    """Linearised voltage and transformer rows on nodal aggregates.

    Returns ``(G, h_lo, h_hi, n_agg, agg_rows)`` for ``h_lo <= G x <= h_hi`` with
    ``n_agg`` extra variables ``dPn[t, bus]`` (columns ``n_var ..``) and the
    equality block ``agg_rows`` (``dPn - sum dp = 0``), or None. Grid rows refer
    to the aggregates, not to the EVs, so a row has one entry per EV bus instead
    of one per EV (the matrix stays sparse at thousands of EVs; SPEC's pitfall).
    Rows that no change inside the EVs' boxes can break are dropped.
    """
    if grid is None:
        return None
    col = np.asarray(plan.col)[v]
    ok = col >= 0
    n_t = plan.plugged.shape[0]
    ev_cols = np.unique(col[ok])
    if ev_cols.size == 0:
        return None
    # box of each (step, bus) change for screening: every EV anywhere in [-p0, pmax - p0]
    lo_b = np.zeros((n_t, ev_cols.size))
    hi_b = np.zeros((n_t, ev_cols.size))
    ci = np.searchsorted(ev_cols, col[ok])
    np.add.at(lo_b, (t[ok], ci), -plan.p_kw[t[ok], v[ok]])
    np.add.at(hi_b, (t[ok], ci), (plan.p_max_kw[v] - plan.p_kw[t, v])[ok])
    fams = []
    for base, sens, lower, upper in _families(grid, n_t):
        s = np.asarray(sens)[:, ev_cols]  # (rows, B)
        sp_, sn = np.maximum(s, 0), np.minimum(s, 0)
        reach_hi = base + hi_b @ sp_.T + lo_b @ sn.T
        reach_lo = base + lo_b @ sp_.T + hi_b @ sn.T
        lower = np.minimum(lower, base)  # no further out than the baseline
        upper = np.maximum(upper, base)
        rt, ri = np.nonzero((reach_lo < lower - 1e-9) | (reach_hi > upper + 1e-9))
        if rt.size:
            fams.append((rt, ri, s, lower[rt, ri] - base[rt, ri], upper[rt, ri] - base[rt, ri]))
    if not fams:
        return None
    # aggregates dPn[t, b] on the steps with rows, for the buses with an EV plugged then
    row_steps = np.unique(np.concatenate([f[0] for f in fams]))
    on = ok & np.isin(t, row_steps)
    key = t[on] * ev_cols.size + np.searchsorted(ev_cols, col[on])
    uk, inv = np.unique(key, return_inverse=True)
    n_agg = uk.size
    i_agg = n_var + np.arange(n_agg)
    pairs = np.flatnonzero(on)
    agg_rows = (np.concatenate([np.arange(n_agg), inv]), np.concatenate([i_agg, pairs]),
                np.concatenate([np.ones(n_agg), -np.ones(pairs.size)]), n_agg)
    agg_t, agg_b = uk // ev_cols.size, uk % ev_cols.size
    first = np.searchsorted(agg_t, np.arange(n_t))
    count = np.searchsorted(agg_t, np.arange(n_t), side="right") - first
    blocks, lo_all, hi_all = [], [], []
    for rt, ri, s, lo, hi in fams:
        cnt = count[rt]
        nz = cnt > 0
        rt, ri, cnt, lo, hi = rt[nz], ri[nz], cnt[nz], lo[nz], hi[nz]
        if rt.size == 0:
            continue
        row = np.repeat(np.arange(rt.size), cnt)
        within = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        aggs = np.repeat(first[rt], cnt) + within
        coef = s[np.repeat(ri, cnt), agg_b[aggs]]
        scale = np.maximum(np.maximum.reduceat(np.abs(coef), np.cumsum(cnt) - cnt), 1e-12)
        blocks.append(sp.csc_matrix((coef / scale[row], (row, i_agg[aggs])), shape=(rt.size, n_var + n_agg)))
        lo_all.append(lo / scale)
        hi_all.append(hi / scale)
    if not blocks:
        return None
    return sp.vstack(blocks, format="csc"), np.concatenate(lo_all), np.concatenate(hi_all), n_agg, agg_rows


def _families(grid, n_t):
    """(baseline value, sensitivity, lower, upper) of each row family."""
    n = grid.vm_base_pu.shape[1]
    yield grid.vm_base_pu, grid.dvm_dp, np.full((n_t, n), grid.vm_min_pu), np.full((n_t, n), grid.vm_max_pu)
    if grid.pt_base_kw is not None and grid.dpt_dp is not None and grid.pt_max_kw is not None:
        cap = np.broadcast_to(grid.pt_max_kw, grid.pt_base_kw.shape)
        yield grid.pt_base_kw, grid.dpt_dp, -cap, cap
