"""Flexibility maximisation of seed 003 with the full AC grid: a pyomo NLP.

>>> grid = ac_grid_from_net(net, problem.sens)                      # doctest: +SKIP
>>> plan = solve_flex(problem, FlexOptions(grid_model="ac"), ac_grid=grid)   # doctest: +SKIP

The EV part of the model (eqs. (1), (4), (7), (17)-(24), with the same reading of
the swapped s labels of (22)/(24) as :mod:`.flexibility`: (21) with (24) for the
downward scenario, (23) with (22) for the upward one) is taken row for row from
the linear LP (:func:`.flexibility.build_flex_lp`), so both variants optimise the
same EV problem. The grid part replaces the sensitivity rows by the AC power-flow
equations (11)-(12) in rectangular bus-injection form on pandapower's internal
bus admittance matrix ``Ybus`` (ppci, per unit on ``baseMVA``):

- for every kept grid point ``g = (s, t)`` (activation s in baseline / full down /
  full up, step t) and non-slack bus ``i``, with ``V = e + j f``::

      P_i = e_i (G e - B f)_i + f_i (G f + B e)_i = -(P^demand_i + P^ev_{s,i}) / S_base
      Q_i = f_i (G e - B f)_i - e_i (G f + B e)_i = -(Q^demand_i + Q^ev_{s,i}) / S_base

  (eqs. (9)-(12); EV reactive power is the activated power times ``tan f_ev``,
  as in the linear variant, eq. (8) at constant power factor);
- slack bus (eq. (14)): voltage fixed at the ext_grid set point (pandapower's
  ``vm_pu``, angle as in the power flow);
- voltage band (13): ``vm_min^2 <= e_i^2 + f_i^2 <= vm_max^2``;
- line current (15) at the from end: ``|Yf V|^2 <= (I_max loading_max / I_base)^2``
  (pandapower's line loading);
- transformer apparent power (16) at the HV side: ``|V_hv|^2 |Yf V|^2 <= S_max^2``.

The baseline ``P^ch`` is checked as a third power flow per step (in AC it does not
follow from the two activations, the feasible set is not convex).

Size reduction (exactness argument in ``docs/flexibility.md``): before the NLP is
built, a Newton power flow of every step with all EVs idle and with every plugged
EV at full power screens the limits. A limit that holds with a margin at both
extremes (``_VM_MARGIN_PU`` for voltages, ``_LOADING_MARGIN`` for loadings) is
dropped (LV feeders: voltages and flows are monotone in the nodal demand); a grid
point ``(s, t)`` left with no limit needs no voltage variables at all (its power
flow has a solution for any EV power and constrains nothing). A limit already
violated with all EVs idle is relaxed to its idle value (the EVs may not make it
worse), and the plan reports the largest relaxation in ``soft_violation_max``.

Warm start: the linear LP's plan (same options); its voltages are the Newton power
flows of that plan, so the starting point satisfies (11)-(12) exactly.

Solver: POUNCE (pyomo-pounce, a Rust interior-point method speaking the AMPL NL
protocol); ``FlexOptions.nlp_solver`` also accepts ``"ripopt"`` (same protocol).
IPOPT through cyipopt-wheels is not offered: pyomo drives cyipopt through
pynumero's ASL library, which no registry package ships. Why POUNCE:
``docs/flexibility.md``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from .problem import ChargingProblem

#: NLP solvers tried and supported (FlexOptions.nlp_solver).
NLP_SOLVERS = ("pounce", "ripopt")
#: Activations whose power flows the NLP carries: the schedule and both full activations.
AC_ACTIVATIONS = ("baseline", "down", "up")
#: Weight of the aggregate charging peak in the AC objective with tie_break = "peak" [1/kW].
PEAK_WEIGHT = 1e-3
_VM_MARGIN_PU = 2e-3
_LOADING_MARGIN = 0.03


@dataclass(frozen=True)
class ACGrid:
    """The network data the AC NLP needs, from pandapower's internal model (ppci).

    Attributes
    ----------
    base_mva : float
        System base [MVA]; powers in pu are ``kW / (1000 base_mva)``.
    ybus : scipy.sparse.csr_matrix, complex, shape (nb, nb)
        Bus admittance matrix [pu] (lines, transformers, shunts).
    ref : ndarray of int
        Slack buses (ppci index).
    v_ref : ndarray of complex
        Slack voltage [pu] (eq. (14): the ext_grid set point).
    col_bus : ndarray of int, shape (n,)
        ppci bus of each column of ``problem.sens`` (``sens.bus_ids``).
    line_yf : scipy.sparse.csr_matrix, shape (m, nb)
        From-end current of each line of ``sens.line_ids`` [pu].
    line_i_base_ka : ndarray, shape (m,)
        Current base at each line's from bus [kA].
    trafo_yf : scipy.sparse.csr_matrix, shape (k, nb)
        HV-side current of each transformer of ``sens.trafo_ids`` [pu].
    trafo_hv_bus : ndarray of int, shape (k,)
    vm_base_kv : ndarray, shape (nb,)
        Nominal voltage of every ppci bus [kV].
    v_op : ndarray of complex, shape (nb,)
        Voltages of the solved power flow [pu]: the Newton start (it carries the
        transformers' phase shifts, e.g. 150 degrees for Dyn5, which a flat start
        at the slack angle does not).
    """

    base_mva: float
    ybus: sp.csr_matrix
    ref: np.ndarray
    v_ref: np.ndarray
    col_bus: np.ndarray
    line_yf: sp.csr_matrix
    line_i_base_ka: np.ndarray
    trafo_yf: sp.csr_matrix
    trafo_hv_bus: np.ndarray
    vm_base_kv: np.ndarray
    v_op: np.ndarray

    @property
    def n_bus(self) -> int:
        return int(self.ybus.shape[0])

    @property
    def pq(self) -> np.ndarray:
        """Non-slack buses (ppci), where eqs. (11)-(12) are imposed."""
        return np.setdiff1d(np.arange(self.n_bus), self.ref)


def ac_grid_from_net(net, sens) -> ACGrid:
    """:class:`ACGrid` of a pandapower net with a solved AC power flow.

    Parameters
    ----------
    net : pandapowerNet
        After ``pandapower.runpp`` (the one :func:`simulators.grid.sensitivity.
        compute_sensitivities` linearised at). Loads and sgens are not part of
        ``Ybus``; the demand comes from the problem's ``net_p_kw``/``net_q_kvar``.
    sens : Sensitivities
        Gives the column order (``bus_ids``), the lines and transformers limited.
    """
    from simulators.grid.sensitivity import SensitivityError, _solved_operating_point

    try:
        op = _solved_operating_point(net)
    except SensitivityError:               # no solved power flow on this net: solve a copy
        import copy

        import pandapower as pp

        net = copy.deepcopy(net)
        pp.runpp(net, calculate_voltage_angles=True, numba=False, init="flat", max_iteration=50)
        op = _solved_operating_point(net)
    ybus = sp.csr_matrix(op.ybus)
    col_bus = op.bus_lookup[np.asarray(sens.bus_ids, dtype=np.int64)]
    if np.any(col_bus < 0):
        raise ValueError("sens.bus_ids: a bus is not in the solved network (out of service?)")
    yf = sp.csr_matrix(op.yf)
    line_rows = np.array([op.line_rows[int(i)] for i in np.asarray(sens.line_ids)], dtype=np.int64)
    trafo_rows = np.array([op.trafo_rows[int(i)] for i in np.asarray(sens.trafo_ids)], dtype=np.int64)
    nb = ybus.shape[0]
    empty = sp.csr_matrix((0, nb), dtype=complex)
    f_line = op.f_bus[line_rows] if line_rows.size else np.zeros(0, dtype=np.int64)
    return ACGrid(
        base_mva=float(op.base_mva), ybus=ybus, ref=np.asarray(op.ref, dtype=np.int64),
        v_ref=np.asarray(op.v[op.ref], dtype=complex), col_bus=np.asarray(col_bus, dtype=np.int64),
        line_yf=yf[line_rows] if line_rows.size else empty,
        line_i_base_ka=op.base_mva / (np.sqrt(3.0) * op.base_kv[f_line]),
        trafo_yf=yf[trafo_rows] if trafo_rows.size else empty,
        trafo_hv_bus=op.f_bus[trafo_rows] if trafo_rows.size else np.zeros(0, dtype=np.int64),
        vm_base_kv=np.asarray(op.base_kv, dtype=float), v_op=np.asarray(op.v, dtype=complex))


# --------------------------------------------------------------------------- power flow
def bus_demand_pu(grid: ACGrid, p_kw: np.ndarray, q_kvar: np.ndarray) -> np.ndarray:
    """Nodal demand per sens column (..., n) [kW, kvar] -> complex demand per ppci bus (..., nb) [pu]."""
    n_col = grid.col_bus.size
    agg = sp.csr_matrix((np.ones(n_col), (np.arange(n_col), grid.col_bus)), shape=(n_col, grid.n_bus))
    s = (np.asarray(p_kw, dtype=float) + 1j * np.asarray(q_kvar, dtype=float)) / (1e3 * grid.base_mva)
    flat = s.reshape(-1, n_col)
    return np.asarray(agg.T @ flat.T).T.reshape(s.shape[:-1] + (grid.n_bus,))


def newton_pf(grid: ACGrid, demand_pu: np.ndarray, v0: np.ndarray | None = None,
              tol: float = 1e-10, max_iter: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """AC power flow of eqs. (11)-(12) by Newton-Raphson (polar), many cases at once.

    Every case is one Newton iteration sequence; all cases advance together
    (dense batched Jacobians: the seed 003 and SimBench LV grids have at most a
    few hundred buses).

    Parameters
    ----------
    demand_pu : ndarray, complex, shape (G, nb)
        Nodal demand (load convention) [pu].
    v0 : ndarray, complex, shape (G, nb), optional
        Start (default: the solved operating point ``grid.v_op``).

    Returns
    -------
    v : ndarray, complex, shape (G, nb)
        Bus voltages [pu].
    converged : ndarray of bool, shape (G,)
    """
    demand_pu = np.atleast_2d(np.asarray(demand_pu, dtype=complex))
    n_case = demand_pu.shape[0]
    y = grid.ybus.toarray()
    pq = grid.pq
    npq = pq.size
    if v0 is None:
        v = np.tile(grid.v_op, (n_case, 1))
    else:
        v = np.array(v0, dtype=complex, copy=True)
    v[:, grid.ref] = grid.v_ref
    sbus = -demand_pu
    ok = np.zeros(n_case, dtype=bool)
    eye = np.eye(grid.n_bus, dtype=bool)
    # Jacobian pattern (column-major, as CSC wants it): Ybus pattern plus diagonal, 2 x 2 blocks
    yp = (abs(grid.ybus) > 0).astype(int) + sp.eye(grid.n_bus, dtype=int)
    blk = (sp.csc_matrix(yp)[pq][:, pq] > 0).astype(int)
    patt = sp.csc_matrix(sp.bmat([[blk, blk], [blk, blk]]))
    patt.sort_indices()
    pat_ptr, pat_c_idx = patt.indptr, patt.indices
    pat_c = np.repeat(np.arange(2 * npq), np.diff(pat_ptr))
    pat_r = pat_c_idx
    for _ in range(max_iter + 1):
        cur = v @ y.T
        mis = v * np.conj(cur) - sbus
        f = np.concatenate([mis[:, pq].real, mis[:, pq].imag], axis=1)
        ok = np.max(np.abs(f), axis=1, initial=0.0) < tol
        act = np.flatnonzero(~ok & np.all(np.isfinite(f), axis=1))
        if act.size == 0 or _ == max_iter:
            break
        va, vm = v[act], np.abs(v[act])
        vn = va / vm
        ca = cur[act]
        diag_i = np.where(eye[None], ca[:, :, None], 0.0)
        ds_dva = 1j * va[:, :, None] * np.conj(diag_i - y[None] * va[:, None, :])
        ds_dvm = va[:, :, None] * np.conj(y[None] * vn[:, None, :]) + np.where(
            eye[None], (np.conj(ca) * vn)[:, :, None], 0.0)
        a = ds_dva[:, pq][:, :, pq]
        m = ds_dvm[:, pq][:, :, pq]
        jac = np.concatenate([np.concatenate([a.real, m.real], axis=2),
                              np.concatenate([a.imag, m.imag], axis=2)], axis=1)
        # one sparse LU (SuperLU, single-threaded) per case on the Jacobian's
        # pattern: dense LAPACK runs multi-threaded BLAS and is 10-100x slower on
        # a loaded 2-core machine
        vals = jac[:, pat_r, pat_c]
        dx = np.empty((act.size, 2 * npq))
        for r in range(act.size):
            try:
                lu = spla.splu(sp.csc_matrix((np.ascontiguousarray(vals[r]), pat_c_idx, pat_ptr), shape=(2 * npq, 2 * npq)))
                dx[r] = lu.solve(-f[act[r]])
            except (RuntimeError, ValueError):   # singular Jacobian
                dx[r] = np.nan
        ang, mag = np.angle(va), vm
        ang[:, pq] += dx[:, :npq]
        mag[:, pq] += dx[:, npq:]
        v[act] = mag * np.exp(1j * ang)
    return v, ok


def branch_quantities(grid: ACGrid, v: np.ndarray, problem: ChargingProblem) -> dict:
    """Line loading (fraction of ``I_max``) and transformer loading (fraction of
    ``S_max``) of voltages ``v`` (G, nb); keys ``line`` (G, m), ``trafo`` (G, k)."""
    s = problem.sens
    i_line = np.abs(v @ grid.line_yf.T.toarray()) if grid.line_yf.shape[0] else np.zeros((v.shape[0], 0))
    line = i_line * grid.line_i_base_ka / np.asarray(s.i_max_ka, dtype=float)
    if grid.trafo_yf.shape[0]:
        i_tr = np.abs(v @ grid.trafo_yf.T.toarray())
        s_tr = np.abs(v[:, grid.trafo_hv_bus]) * i_tr * grid.base_mva * 1e3
        trafo = s_tr / np.asarray(s.st_max_kva, dtype=float)
    else:
        trafo = np.zeros((v.shape[0], 0))
    return {"line": line, "trafo": trafo}


# --------------------------------------------------------------------------- NLP
def _ev_nodal(problem: ChargingProblem, p_ev_kw: np.ndarray) -> np.ndarray:
    """EV power per step and sens column (T, n) [kW] from per-EV power (T, V)."""
    n = len(problem.sens.bus_ids)
    onehot = np.zeros((problem.n_evs, n))
    onehot[np.arange(problem.n_evs), np.asarray(problem.ev_col, dtype=int)] = 1.0
    return np.asarray(p_ev_kw) @ onehot


def activation_voltages(problem: ChargingProblem, grid: ACGrid, p_ev_kw: np.ndarray,
                        q_per_p: float) -> tuple[np.ndarray, np.ndarray]:
    """Newton power flow of every step with EV power ``p_ev_kw`` (T, V): (v (T, nb), converged (T,))."""
    nodal = _ev_nodal(problem, p_ev_kw)
    d = bus_demand_pu(grid, np.asarray(problem.net_p_kw) + nodal,
                      np.asarray(problem.net_q_kvar) + q_per_p * nodal)
    return newton_pf(grid, d)


@dataclass
class _Screen:
    """Limits kept per grid point after screening."""

    points: list          # [(s, t)] grid points with at least one kept limit
    vm_lo: dict           # (s, t) -> (buses, lower bound [pu]) of kept lower voltage limits
    vm_hi: dict
    line: dict            # (s, t) -> (line rows, limit [fraction of I_max])
    trafo: dict
    relaxed_max: float


def _screen(problem, grid, fd, tan, scenarios) -> _Screen:
    lim = problem.limits
    t_plug = np.flatnonzero(np.asarray(problem.plugged, bool).any(axis=1))
    idle = np.zeros((problem.n_steps, problem.n_evs))
    full = np.where(np.asarray(problem.plugged, bool), fd.p_max_kw, 0.0)
    v_idle, _ = activation_voltages(problem, grid, idle, tan)
    v_full, ok_full = activation_voltages(problem, grid, full, tan)
    b_idle = branch_quantities(grid, v_idle, problem)
    b_full = branch_quantities(grid, v_full, problem)
    buses = grid.col_bus                     # voltage limits on the sens buses (as the linear model)
    vi, vf = np.abs(v_idle[:, buses]), np.abs(v_full[:, buses])
    vi_all = np.abs(v_idle)
    relaxed = 0.0
    points, vm_lo, vm_hi, line, trafo = [], {}, {}, {}, {}
    for t in t_plug:
        lo = np.minimum(lim.vm_min_pu, vi[t])
        hi = np.maximum(lim.vm_max_pu, vi[t])
        relaxed = max(relaxed, float(np.max(lim.vm_min_pu - lo, initial=0)), float(np.max(hi - lim.vm_max_pu, initial=0)))
        need_lo = (np.minimum(vf[t], vi[t]) < lo + _VM_MARGIN_PU) | ~ok_full[t]
        need_hi = np.maximum(vf[t], vi[t]) > hi - _VM_MARGIN_PU
        l_lim = np.maximum(lim.line_loading_max, b_idle["line"][t])
        t_lim = np.maximum(lim.trafo_loading_max, b_idle["trafo"][t])
        relaxed = max(relaxed, float(np.max(l_lim - lim.line_loading_max, initial=0)),
                      float(np.max(t_lim - lim.trafo_loading_max, initial=0)))
        need_l = (np.maximum(b_full["line"][t], b_idle["line"][t]) > l_lim - _LOADING_MARGIN) | ~ok_full[t]
        need_t = (np.maximum(b_full["trafo"][t], b_idle["trafo"][t]) > t_lim - _LOADING_MARGIN) | ~ok_full[t]
        if not (need_lo.any() or need_hi.any() or need_l.any() or need_t.any()):
            continue
        for s in scenarios:
            g = (s, int(t))
            points.append(g)
            vm_lo[g] = (buses[need_lo], lo[need_lo])
            vm_hi[g] = (buses[need_hi], hi[need_hi])
            line[g] = (np.flatnonzero(need_l), l_lim[need_l])
            trafo[g] = (np.flatnonzero(need_t), t_lim[need_t])
    del vi_all
    return _Screen(points, vm_lo, vm_hi, line, trafo, relaxed)


def build_flex_nlp(problem: ChargingProblem, options, grid: ACGrid, lp=None):
    """Pyomo model of seed 003 with AC power flow (eqs. (1)-(24)); see the module docstring.

    Returns
    -------
    (model, info) : pyomo ConcreteModel and a dict with the LP (``lp``), the EV
    column count (``n_x``), the screening (``screen``) and the grid points' voltage
    variable layout (``g_index``).
    """
    import pyomo.environ as pyo

    from .flexibility import build_flex_lp

    lp = build_flex_lp(problem, options) if lp is None else lp
    n_x = int(max([lp.i_ch.max(initial=-1), lp.i_e.max(initial=-1)]
                  + [idx.max(initial=-1) for idx in lp.i_flex.values()]) + 1)
    tan = lp.q_per_p
    fd = lp.fleet
    scen = ["baseline"] + [s for s in ("down", "up") if s in lp.i_flex]
    screen = _screen(problem, grid, fd, tan, scen)

    m = pyo.ConcreteModel(name="flex_max_ac")
    m.X = pyo.RangeSet(0, n_x - 1)
    m.x = pyo.Var(m.X, dense=True)
    lb, ub = lp.lb[:n_x], lp.ub[:n_x]
    for i in range(n_x):
        m.x[i].setlb(None if not np.isfinite(lb[i]) else float(lb[i]))
        m.x[i].setub(None if not np.isfinite(ub[i]) else float(ub[i]))
    # EV rows (eqs. (17), (21)-(24)): LP rows touching EV columns only
    a = lp.A.tocsr()
    ev_row = np.asarray((abs(a[:, n_x:]) > 0).sum(axis=1)).ravel() == 0
    a_ev = a[ev_row][:, :n_x]
    lo_ev, hi_ev = lp.row_lo[ev_row], lp.row_hi[ev_row]
    m.R = pyo.RangeSet(0, a_ev.shape[0] - 1)
    x = m.x

    def ev_rule(mm, r):
        s, e = a_ev.indptr[r], a_ev.indptr[r + 1]
        body = sum(float(c) * x[int(j)] for c, j in zip(a_ev.data[s:e], a_ev.indices[s:e]))
        lo = float(lo_ev[r]) if np.isfinite(lo_ev[r]) else None
        hi = float(hi_ev[r]) if np.isfinite(hi_ev[r]) else None
        if lo is not None and hi is not None and lo == hi:
            return body == lo
        return (lo, body, hi)

    m.ev = pyo.Constraint(m.R, rule=ev_rule)
    c = lp.c[:n_x]
    nz = np.flatnonzero(c)
    obj = sum(float(c[i]) * x[int(i)] for i in nz)
    if options.tie_break == "peak" and lp.i_ch.size:
        # weighted form of the LP's lexicographic tie-break: - w z with z >= sum_v P^ch_t
        # for every step; w = PEAK_WEIGHT is far below the rate (about 1 per kW and step)
        # at which eq. (4) can buy a lower peak off its optimal face
        steps = np.unique(lp.pair_t)
        m.z = pyo.Var(bounds=(0.0, None), initialize=0.0)
        by_t = {int(tt): lp.i_ch[lp.pair_t == tt] for tt in steps}
        m.peak = pyo.Constraint(list(by_t), rule=lambda mm, tt: sum(x[int(j)] for j in by_t[tt]) <= mm.z)
        obj = obj - PEAK_WEIGHT * m.z
    m.obj = pyo.Objective(expr=obj, sense=pyo.maximize)

    # grid points: voltage variables on every bus, slack fixed (eq. (14))
    pts = screen.points
    g_index = {g: k for k, g in enumerate(pts)}
    nb = grid.n_bus
    pq = grid.pq
    m.G = pyo.RangeSet(0, max(len(pts) - 1, -1))
    m.B = pyo.RangeSet(0, nb - 1)
    m.e = pyo.Var(m.G, m.B, initialize=1.0)
    m.f = pyo.Var(m.G, m.B, initialize=0.0)
    for k in range(len(pts)):
        for r, vr in zip(grid.ref, grid.v_ref):
            m.e[k, int(r)].fix(float(vr.real))
            m.f[k, int(r)].fix(float(vr.imag))
    info = {"lp": lp, "n_x": n_x, "screen": screen, "g_index": g_index, "scenarios": scen}
    if not pts:
        return m, info
    # nodal demand of each grid point (pu) and EV column lists per (t, ppci bus)
    base_kw = 1e3 * grid.base_mva
    demand = bus_demand_pu(grid, problem.net_p_kw, problem.net_q_kvar)      # (T, nb)
    bus_j = grid.col_bus[np.asarray(problem.ev_col, dtype=int)[lp.pair_v]]
    ev_at = {}
    for j, (tj, bj) in enumerate(zip(lp.pair_t, bus_j)):
        ev_at.setdefault((int(tj), int(bj)), []).append(j)
    y = grid.ybus.tocsr()
    e, f = m.e, m.f
    i_ch = lp.i_ch
    i_fl = lp.i_flex

    def ev_power(s, t, i):
        js = ev_at.get((t, i))
        if not js:
            return 0.0
        terms = [x[int(i_ch[j])] for j in js]
        if s == "down":
            terms += [-x[int(i_fl["down"][j])] for j in js]
        elif s == "up":
            terms += [x[int(i_fl["up"][j])] for j in js]
        return sum(terms) / base_kw

    def cur(k, i):
        s0, s1 = y.indptr[i], y.indptr[i + 1]
        cols, vals = y.indices[s0:s1], y.data[s0:s1]
        gv, bv = vals.real, vals.imag
        re = sum(float(gg) * e[k, int(c)] - float(bb) * f[k, int(c)] for gg, bb, c in zip(gv, bv, cols))
        im = sum(float(gg) * f[k, int(c)] + float(bb) * e[k, int(c)] for gg, bb, c in zip(gv, bv, cols))
        return re, im

    rows = [(k, int(i)) for k in range(len(pts)) for i in pq]
    m.PQ = pyo.Set(initialize=rows, dimen=2, ordered=True)
    m.pbal = pyo.Constraint(m.PQ)
    m.qbal = pyo.Constraint(m.PQ)
    for k, i in rows:
        s, t = pts[k]
        re, im = cur(k, i)
        pev = ev_power(s, t, i)
        m.pbal[k, i] = e[k, i] * re + f[k, i] * im == -(float(demand[t, i].real) + pev)
        m.qbal[k, i] = f[k, i] * re - e[k, i] * im == -(float(demand[t, i].imag) + tan * pev)
    # voltage band (13), lines (15), transformers (16)
    vlo = [(k, int(b), float(v)) for k, g in enumerate(pts) for b, v in zip(*screen.vm_lo[g])]
    vhi = [(k, int(b), float(v)) for k, g in enumerate(pts) for b, v in zip(*screen.vm_hi[g])]
    m.vlo = pyo.Constraint(range(len(vlo)), rule=lambda mm, r: e[vlo[r][0], vlo[r][1]] ** 2
                           + f[vlo[r][0], vlo[r][1]] ** 2 >= vlo[r][2] ** 2)
    m.vhi = pyo.Constraint(range(len(vhi)), rule=lambda mm, r: e[vhi[r][0], vhi[r][1]] ** 2
                           + f[vhi[r][0], vhi[r][1]] ** 2 <= vhi[r][2] ** 2)
    s_ = problem.sens
    i_max_pu = np.asarray(s_.i_max_ka, dtype=float) / grid.line_i_base_ka if grid.line_yf.shape[0] else np.zeros(0)
    lyf = grid.line_yf.tocsr()
    lrows = [(k, int(r), float(v)) for k, g in enumerate(pts) for r, v in zip(*screen.line[g])]

    def branch_cur(k, mat, r):
        s0, s1 = mat.indptr[r], mat.indptr[r + 1]
        cols, vals = mat.indices[s0:s1], mat.data[s0:s1]
        re = sum(float(v.real) * e[k, int(c)] - float(v.imag) * f[k, int(c)] for v, c in zip(vals, cols))
        im = sum(float(v.real) * f[k, int(c)] + float(v.imag) * e[k, int(c)] for v, c in zip(vals, cols))
        return re, im

    def line_rule(mm, n):
        k, r, lim = lrows[n]
        re, im = branch_cur(k, lyf, r)
        return re ** 2 + im ** 2 <= float((lim * i_max_pu[r]) ** 2)

    m.line = pyo.Constraint(range(len(lrows)), rule=line_rule)
    tyf = grid.trafo_yf.tocsr()
    st_pu = np.asarray(s_.st_max_kva, dtype=float) / base_kw
    trows = [(k, int(r), float(v)) for k, g in enumerate(pts) for r, v in zip(*screen.trafo[g])]
    ref_v = dict(zip(grid.ref.tolist(), np.abs(grid.v_ref)))

    def trafo_rule(mm, n):
        k, r, lim = trows[n]
        re, im = branch_cur(k, tyf, r)
        hv = int(grid.trafo_hv_bus[r])
        vm2 = float(ref_v[hv]) ** 2 if hv in ref_v else e[k, hv] ** 2 + f[k, hv] ** 2
        return vm2 * (re ** 2 + im ** 2) <= float((lim * st_pu[r]) ** 2)

    m.trafo = pyo.Constraint(range(len(trows)), rule=trafo_rule)
    return m, info


def _warm_start(m, info, problem, grid, x0: np.ndarray) -> None:
    """Set the NLP's start: the LP plan ``x0`` and the Newton power flows of its activations."""
    n_x = info["n_x"]
    for i in range(n_x):
        m.x[i].set_value(float(x0[i]), skip_validation=True)
    if hasattr(m, "z"):
        lp = info["lp"]
        m.z.set_value(float(np.bincount(lp.pair_t, weights=x0[lp.i_ch]).max(initial=0.0)))
    pts = info["screen"].points
    if not pts:
        return
    lp = info["lp"]
    t, v = lp.pair_t, lp.pair_v
    p = {}
    base = np.zeros((problem.n_steps, problem.n_evs))
    base[t, v] = x0[lp.i_ch]
    p["baseline"] = base
    for s, idx in lp.i_flex.items():
        arr = base.copy()
        arr[t, v] += (-1.0 if s == "down" else 1.0) * x0[idx]
        p[s] = arr
    volt = {s: activation_voltages(problem, grid, arr, lp.q_per_p)[0] for s, arr in p.items()}
    for k, (s, tt) in enumerate(pts):
        vv = volt[s][tt]
        for b in grid.pq:
            m.e[k, int(b)].set_value(float(vv[b].real), skip_validation=True)
            m.f[k, int(b)].set_value(float(vv[b].imag), skip_validation=True)


def _solver(name: str, options):
    import pyomo.environ as pyo

    if name == "pounce":
        import pyomo_pounce  # noqa: F401  (registers the plugin)
    elif name == "ripopt":
        import pyomo_ripopt  # noqa: F401
    solver = pyo.SolverFactory(name)
    opts = {"max_iter": int(options.nlp_max_iter), "tol": float(options.nlp_tol)}
    if name == "pounce":
        opts["max_wall_time"] = float(options.time_limit_s)
    for k, v in opts.items():
        solver.options[k] = v
    return solver


def solve_flex_ac(problem: ChargingProblem, options, ac_grid: ACGrid | None = None):
    """Maximise eq. (4) subject to the AC power flow (seed 003, eqs. (1)-(24)).

    Parameters
    ----------
    problem : ChargingProblem
    options : FlexOptions
        ``grid_model = "ac"``; ``nlp_solver``, ``nlp_tol``, ``nlp_max_iter``, ``time_limit_s``.
    ac_grid : ACGrid
        From :func:`ac_grid_from_net` (required).

    Returns
    -------
    FlexPlan
        ``grid_model = "ac"``. A non-converged or infeasible NLP (or a solver
        error) never raises: :func:`.flexibility.fallback_plan` with the solver's
        termination in ``termination`` and ``extra["nlp"]``.
    """
    import pyomo.environ as pyo
    from pyomo.opt import TerminationCondition as TC

    from .flexibility import _replace, build_flex_lp, extract_plan, fallback_plan, solve_flex_lp

    if ac_grid is None:
        raise ValueError("grid_model: 'ac' needs the network (ac_grid=ac_grid_from_net(net, sens))")
    t0 = time.perf_counter()
    lp = build_flex_lp(problem, options)
    x_lp, st_lp, term_lp, lp_s = solve_flex_lp(lp, options)
    t1 = time.perf_counter()
    if x_lp is None:    # the linear EV problem itself has no solution: nothing to start from
        plan = fallback_plan(problem, options, reason=st_lp, message=f"warm-start LP: {term_lp}",
                             grid_model="ac")
        return _replace(plan, build_s=t1 - t0)
    m, info = build_flex_nlp(problem, options, ac_grid, lp=lp)
    _warm_start(m, info, problem, ac_grid, x_lp)
    build_s = time.perf_counter() - t0 - lp_s
    n_var = sum(1 for v in m.component_data_objects(pyo.Var, active=True) if not v.fixed)
    n_con = sum(1 for _ in m.component_data_objects(pyo.Constraint, active=True))
    extra = {"nlp_solver": options.nlp_solver, "warm_start_lp_s": lp_s,
             "grid_points": len(info["screen"].points), "relaxed_max": info["screen"].relaxed_max}
    t2 = time.perf_counter()
    try:
        res = _solver(options.nlp_solver, options).solve(m, tee=False, load_solutions=False)
        tc = res.solver.termination_condition
        term = f"{options.nlp_solver}: {tc}"
        good = tc in (TC.optimal, TC.locallyOptimal, TC.globallyOptimal)
        if good:
            m.solutions.load_from(res)
    except Exception as exc:   # solver crash, missing binary, NL write error: recorded, fallback
        tc, term, good = None, f"{options.nlp_solver}: {type(exc).__name__}: {exc}", False
    solve_s = time.perf_counter() - t2
    extra["nlp_termination"] = term
    if not good:
        name = str(getattr(tc, "name", tc) or "").lower()
        reason = ("error" if tc is None else "infeasible" if "infeasible" in name
                  else "time_limit" if "time" in name else "not_converged")
        plan = fallback_plan(problem, options, reason=reason, message=term, grid_model="ac")
        return _replace(plan, build_s=build_s, solve_s=solve_s, n_var=n_var, n_con=n_con, extra=extra)
    x = np.array([pyo.value(m.x[i]) for i in range(info["n_x"])])
    x_full = np.zeros(lp.A.shape[1])
    x_full[: info["n_x"]] = x
    plan = extract_plan(problem, options, lp, x_full, status="optimal", termination=term,
                        build_s=build_s, solve_s=solve_s, grid_model="ac")
    pts = info["screen"].points
    v_nlp = np.array([[complex(pyo.value(m.e[k, b]), pyo.value(m.f[k, b])) for b in range(ac_grid.n_bus)]
                      for k in range(len(pts))]) if pts else np.zeros((0, ac_grid.n_bus), complex)
    extra.update({"grid_point_keys": pts, "v_nlp": v_nlp})
    relaxed = info["screen"].relaxed_max
    return _replace(plan, n_var=n_var, n_con=n_con, soft_violation_max=relaxed, extra=extra,
                    message="" if relaxed <= 1e-6 else
                    f"AC limits violated with EVs idle relaxed to their idle value (largest {relaxed:.4g})")
