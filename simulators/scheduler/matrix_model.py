"""Fast path: seed 000 problem (12) assembled as sparse matrices, solved by PIQP/Clarabel.

The problem is the one of :mod:`.pyomo_model` (same variables, same coefficients
from :mod:`.model_data`), assembled with vectorised numpy/scipy.sparse code (no
Python loop over steps or EVs) and handed to

- PIQP (``options.solver == "piqp"``): convex QP, cones as inscribed polygons;
- Clarabel (``"clarabel"``): polygon or exact second-order cones (``cone="soc"``).

Size reductions that do not change the optimum:

- variables only for plugged (t, v) pairs (P = Q = 0 otherwise, no variable);
  ``P-`` only for V2G-capable EVs in V2G strategies, Q only for reactive-capable EVs
  in ``*_q`` strategies;
- explicit nodal aggregates ``Pn[t, b]``, ``Qn[t, b]`` (eqs. (1), (6), (7)) only for
  (step, bus) pairs with a plugged EV; grid rows reference the aggregates, not the
  EVs (keeps the matrix sparse);
- explicit line/transformer flow variables (one equality row each), so the polygon
  facets have two non-zeros each;
- row screening: a grid row that holds for every value of the aggregates inside
  their box (all chargers anywhere between full discharge and full charge) can never
  bind and is dropped.

Grid rows are scaled to unit largest coefficient (Clarabel otherwise ends
"AlmostSolved"); voltage rows are one-sided.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
import scipy.sparse as sp

from . import model_data as md
from .problem import ChargingProblem, StrategyOptions

_INF = 1e30
#: Voltage rows as equality rows defining a row variable with bounds (True) or as
#: condensed inequality rows (False); see docs/strategies.md for the measurements.
VOLTAGE_ROW_VARIABLES = True
#: Cap each charger's power by the energy room of its battery (box of row screening and
#: variable bound; exact, implied by the SOC limits). False: the charger rating only (the
#: path before issue 17; its tests compare both).
HEADROOM_CAPS = True
#: PIQP iterations of the probe run that measures the cost of one iteration.
_PIQP_PROBE_ITER = 2
#: Fewest iterations worth starting a PIQP solve for (full-scale solves need 40-45).
_PIQP_MIN_ITER = 20
_TOL_SCREEN = 1e-9
#: Second build pass (no aggregates/Q on steps without grid rows) only when at most
#: this share of the steps has grid rows (otherwise the extra build costs more).
_SECOND_PASS_SHARE = 0.75


@dataclass
class _Blocks:
    """Triplet lists of one constraint family."""

    rows: list = field(default_factory=list)
    cols: list = field(default_factory=list)
    vals: list = field(default_factory=list)
    rhs: list = field(default_factory=list)
    n: int = 0

    def add(self, rows, cols, vals, rhs):
        rows = np.asarray(rows, dtype=np.int64)
        self.rows.append(rows + self.n)
        self.cols.append(np.asarray(cols, dtype=np.int64))
        self.vals.append(np.asarray(vals, dtype=float))
        rhs = np.asarray(rhs, dtype=float)
        self.rhs.append(rhs)
        first = self.n
        self.n += rhs.shape[0]
        return first

    def matrix(self, n_var):
        if not self.rows:
            return sp.csc_matrix((0, n_var)), np.zeros(0)
        r = np.concatenate(self.rows)
        c = np.concatenate(self.cols)
        v = np.concatenate(self.vals)
        keep = v != 0.0
        mat = sp.csc_matrix((v[keep], (r[keep], c[keep])), shape=(self.n, n_var))
        return mat, np.concatenate(self.rhs)


@dataclass
class MatrixQP:
    """Assembled problem ``min 1/2 x'Px + c'x  s.t.  Ax = b, Gx <= h, lb <= x <= ub``.

    Plus, for ``cone == "soc"``, second-order cones ``||(g_i - F_i x)[1:]|| <=
    (g_i - F_i x)[0]`` stacked in ``cone_F``/``cone_g`` (3 rows each).

    Attributes hold index arrays to map the solution back; see :func:`build`.
    """

    P: sp.csc_matrix
    c: np.ndarray
    const: float
    A: sp.csc_matrix
    b: np.ndarray
    G: sp.csc_matrix
    h: np.ndarray
    lb: np.ndarray
    ub: np.ndarray
    cone_F: sp.csc_matrix | None
    cone_g: np.ndarray | None
    pair_t: np.ndarray
    pair_v: np.ndarray
    i_pp: np.ndarray
    i_pm: np.ndarray
    i_q: np.ndarray
    i_soc: np.ndarray
    slack_idx: np.ndarray
    slack_unit: np.ndarray
    slack_info: list
    n_steps: int
    n_evs: int
    row_steps: np.ndarray | None = None
    vm_screen: dict | None = None

    @property
    def n_var(self) -> int:
        """Number of variables."""
        return self.c.shape[0]


def _var_counter():
    count = [0]

    def new(k):
        first = count[0]
        count[0] += int(k)
        return np.arange(first, first + int(k))

    return new, count


def build(problem: ChargingProblem, options: StrategyOptions, consts: dict | None = None,
          vm_allowed: dict | None = None, ev_mult: np.ndarray | None = None) -> MatrixQP:
    """Assemble problem (12) of seed 000 for strategy ``options.name``.

    Two passes when row screening leaves at least a quarter of the steps without any
    grid row (``_SECOND_PASS_SHARE``): the second
    pass has no nodal aggregates and no charger ``Q`` on (blocks of) those steps.
    Exact: there, the aggregates appear in no row, and ``Q = 0`` is optimal (``Q``
    then only costs ``q_weight Q^2``, and the charger polygon is symmetric in
    ``Q`` and convex, so ``(P, 0)`` is feasible whenever ``(P, Q)`` is). Without
    the aggregates the EVs' SOC chains are not coupled at those steps, which
    shrinks the dense block of the KKT factorisation.

    Parameters
    ----------
    problem : ChargingProblem
        Validated problem.
    options : StrategyOptions
        Optimising strategy (not ``"uncoordinated"``).
    consts : dict, optional
        Precomputed :func:`.model_data.grid_constants` of ``problem`` (receding
        horizon reuses them).
    vm_allowed : dict, optional
        ``{"vm_min": mask, "vm_max": mask}``, bool (T, n): voltage rows (12g) that
        may be kept (constraint generation, :func:`solve_generated`); rows the base
        load alone breaks (soft rows) are always kept. None: every row screening
        keeps.
    ev_mult : ndarray of int, shape (V,), optional
        Each "EV" of ``problem`` stands for ``ev_mult`` identical EVs (exact
        aggregation, :func:`aggregate_identical`: its capacity and rating are
        already the group's totals): its SOC terms of eq. (8) count ``ev_mult``
        times and ``q_weight`` applies to each member's ``Q = Q_group / ev_mult``.

    Returns
    -------
    MatrixQP
        ``vm_screen`` holds, per side, the (T, n) mask of voltage rows screening
        could not drop (the rows a solution has to be checked against).
    """
    consts = md.grid_constants(problem) if consts is None else consts
    qp = _build(problem, options, consts, None, vm_allowed, ev_mult)
    if qp.row_steps is not None and qp.row_steps.sum() <= _SECOND_PASS_SHARE * qp.row_steps.size:
        try:
            qp = _build(problem, options, consts, qp.row_steps, vm_allowed, ev_mult)
        except _ScreeningMismatch:
            pass  # rounding at a screening threshold: keep the first (complete) pass
    return qp


class _ScreeningMismatch(Exception):
    """The second pass kept a grid row on a step the first pass had screened out."""


def _build(problem: ChargingProblem, options: StrategyOptions, consts: dict,
           grid_steps: np.ndarray | None, vm_allowed: dict | None = None,
           ev_mult: np.ndarray | None = None) -> MatrixQP:
    """One assembly pass of :func:`build`.

    Parameters
    ----------
    grid_steps : ndarray of bool, shape (T,), or None
        Steps on which grid rows may be kept (from the first pass); aggregates and
        charger ``Q`` only on blocks containing one. None: every step.
    """
    flags = md.strategy_flags(problem, options)
    sens = problem.sens
    n_steps, n_evs = problem.n_steps, problem.n_evs
    n_bus = int(np.shape(sens.bus_ids)[0])
    cone_soc = options.cone == "soc"
    poly_c, poly_s, poly_f = md.polygon(options.n_sides)
    half_c, half_s, _ = md.polygon(options.n_sides, half=True)
    lim = problem.limits

    # move blocking (options.fine_steps): decisions per (block, EV); identity when off
    blk = md.step_blocks(n_steps, options.fine_steps, options.block_steps)
    n_blk = int(blk[-1]) + 1
    plugged = md.blocked_plugged(problem.plugged, blk)
    t, v = md.plugged_pairs(plugged)
    n_pair = t.size
    col = np.asarray(problem.ev_col)[v]
    s_ev = np.asarray(problem.s_max_kva, dtype=float)[v]
    a_gain, b_gain = md.soc_gains(problem)
    lo_soc, hi_soc = md.soc_bounds(problem)
    is_d = flags.discharge[v]
    # decision pairs (block, EV): pairs are ordered by EV then step, so the keys are
    # non-decreasing and decision j covers the consecutive pairs with dec == j
    dkey = v * n_blk + blk[t]
    ud, dec = np.unique(dkey, return_inverse=True)
    n_dec = ud.size
    d_v, d_b = ud // n_blk, ud % n_blk
    d_n = np.bincount(dec, minlength=n_dec).astype(float)  # steps per decision
    d_col = np.asarray(problem.ev_col)[d_v]
    d_s = np.asarray(problem.s_max_kva, dtype=float)[d_v]
    d_isd = flags.discharge[d_v]
    blk_on = np.ones(n_blk, dtype=bool)
    if grid_steps is not None:
        blk_on = np.zeros(n_blk, dtype=bool)
        blk_on[blk[np.asarray(grid_steps, dtype=bool)]] = True
    d_isq = flags.reactive[d_v] & blk_on[d_b]
    is_q = d_isq[dec]
    d_on = blk_on[d_b]
    # energy headroom caps (exact: implied by eqs. (10), (12c)): a decision held for
    # d_n steps cannot move the SOC by more than the room between its bounds; an EV
    # that cannot discharge starts no lower than soc0 [kW]
    room_ch = hi_soc - np.where(flags.discharge, lo_soc, np.asarray(problem.soc0, dtype=float))
    room_dis = hi_soc - lo_soc
    d_cap_ch = np.minimum(d_s, np.maximum(room_ch[d_v], 0.0) / (a_gain[d_v] * d_n))
    d_cap_dis = np.minimum(d_s, np.maximum(room_dis[d_v], 0.0) / (b_gain[d_v] * d_n))
    if not HEADROOM_CAPS:
        d_cap_ch, d_cap_dis = d_s, d_s
    cap_ch, cap_dis = d_cap_ch[dec], d_cap_dis[dec]

    new, count = _var_counter()
    d_pp = new(n_dec)
    d_pm = np.full(n_dec, -1)
    d_pm[d_isd] = new(d_isd.sum())
    d_q = np.full(n_dec, -1)
    d_q[d_isq] = new(d_isq.sum())
    i_pp, i_pm, i_q = d_pp[dec], d_pm[dec], d_q[dec]
    i_soc = new(n_pair)

    # nodal aggregates (eqs. (1), (6), (7)), one per (block, bus)
    key_p = t * n_bus + col
    dkey_p = d_b * n_bus + d_col
    uk_p, inv_p = np.unique(dkey_p[d_on], return_inverse=True)
    i_pn = new(uk_p.size)
    idx_pn = np.full(n_blk * n_bus, -1)
    idx_pn[uk_p] = i_pn
    idx_pn = idx_pn.reshape(n_blk, n_bus)[blk]
    key_q = key_p[is_q]
    uk_q, inv_q = np.unique(dkey_p[d_isq], return_inverse=True)
    i_qn = new(uk_q.size)
    idx_qn = np.full(n_blk * n_bus, -1)
    idx_qn[uk_q] = i_qn
    idx_qn = idx_qn.reshape(n_blk, n_bus)[blk]

    # box of the aggregates, for row screening [kW], [kvar]
    pn_hi = np.zeros(n_steps * n_bus)
    np.add.at(pn_hi, key_p, cap_ch)
    pn_lo = np.zeros(n_steps * n_bus)
    np.add.at(pn_lo, key_p[is_d], -cap_dis[is_d])
    qn_hi = np.zeros(n_steps * n_bus)
    np.add.at(qn_hi, key_q, s_ev[is_q])
    pn_hi, pn_lo, qn_hi = (x.reshape(n_steps, n_bus) for x in (pn_hi, pn_lo, qn_hi))
    qn_lo = -qn_hi
    ev_buses = np.unique(col)

    def box_range(dx_dp, dx_dq):
        """Min/max over the box of the EV contribution to rows of dx (T, rows)."""
        mp = np.asarray(dx_dp)[:, ev_buses]
        mq = np.asarray(dx_dq)[:, ev_buses]
        ph, pl_, qh, ql_ = pn_hi[:, ev_buses], pn_lo[:, ev_buses], qn_hi[:, ev_buses], qn_lo[:, ev_buses]
        mpp, mpn = np.maximum(mp, 0), np.minimum(mp, 0)
        mqp, mqn = np.maximum(mq, 0), np.minimum(mq, 0)
        hi = ph @ mpp.T + pl_ @ mpn.T + qh @ mqp.T + ql_ @ mqn.T
        lo = pl_ @ mpp.T + ph @ mpn.T + ql_ @ mqp.T + qh @ mqn.T
        return lo, hi

    def agg_rows(row_t, dx_dp, dx_dq, row_i):
        """Dense (R, B) coefficient blocks of rows (row_t, row_i) on the aggregates."""
        row_steps[row_t] = True
        if grid_steps is not None and not np.all(np.asarray(grid_steps)[row_t]):
            raise _ScreeningMismatch("row screening kept a row on a step the first pass had screened out")
        cp = idx_pn[row_t][:, ev_buses]
        cq = idx_qn[row_t][:, ev_buses]
        vp = np.asarray(dx_dp)[row_i][:, ev_buses]
        vq = np.asarray(dx_dq)[row_i][:, ev_buses]
        return cp, vp, cq, vq

    row_steps = np.zeros(n_steps, dtype=bool)
    soft_mode = options.soft_limits
    eq = _Blocks()
    ineq = _Blocks()
    cone_rows = _Blocks()
    cone_g = []

    # --- SOC dynamics, eq. (10) (12b)
    same_prev = np.zeros(n_pair, dtype=bool)
    same_prev[1:] = v[1:] == v[:-1]
    r = np.arange(n_pair)
    rows = [r, r[same_prev], r, r[is_d]]
    cols = [i_soc, i_soc[np.flatnonzero(same_prev) - 1], i_pp, i_pm[is_d]]
    vals = [np.ones(n_pair), -np.ones(same_prev.sum()), -a_gain[v], b_gain[v][is_d]]
    rhs = np.where(same_prev, 0.0, np.asarray(problem.soc0, dtype=float)[v])
    eq.add(np.concatenate(rows), np.concatenate(cols), np.concatenate(vals), rhs)

    # --- nodal aggregates, eqs. (6), (7), (9)
    nk = uk_p.size
    on_d = d_isd[d_on]
    eq.add(
        np.concatenate([np.arange(nk), inv_p, inv_p[on_d]]),
        np.concatenate([i_pn, d_pp[d_on], d_pm[d_on][on_d]]),
        np.concatenate([np.ones(nk), -np.ones(inv_p.size), np.ones(on_d.sum())]),
        np.zeros(nk),
    )
    nkq = uk_q.size
    if nkq:
        eq.add(
            np.concatenate([np.arange(nkq), inv_q]),
            np.concatenate([i_qn, d_q[d_isq]]),
            np.concatenate([np.ones(nkq), -np.ones(d_isq.sum())]),
            np.zeros(nkq),
        )

    slack_specs = []  # list of (row-block builder info) resolved after counting

    def add_soft(kind, ids, steps, unit):
        """Allocate slack variables; return their indices."""
        idx = new(len(steps))
        slack_specs.append((kind, np.asarray(ids), np.asarray(steps), np.asarray(unit, dtype=float), idx))
        return idx

    # --- voltage band (12g), one-sided rows
    vm_c = consts["vm"]
    vm_screen = {}
    y_ub = []
    lo_v, hi_v = box_range(sens.dvm_dp, sens.dvm_dq)
    for side in ("vm_min", "vm_max"):
        if side == "vm_min":
            can_break = vm_c + lo_v < lim.vm_min_pu - _TOL_SCREEN
            at_base = vm_c < lim.vm_min_pu
            sign, bound = -1.0, -lim.vm_min_pu
        else:
            can_break = vm_c + hi_v > lim.vm_max_pu + _TOL_SCREEN
            at_base = vm_c > lim.vm_max_pu
            sign, bound = 1.0, lim.vm_max_pu
        soft = at_base if soft_mode == "auto" else (np.ones_like(at_base) if soft_mode == "always" else np.zeros_like(at_base))
        vm_screen[side] = can_break
        allowed = can_break if vm_allowed is None else can_break & np.asarray(vm_allowed[side], dtype=bool)
        keep = allowed | (soft & at_base)
        rt, ri = np.nonzero(keep)
        if rt.size == 0:
            continue
        cp, vp, cq, vq = agg_rows(rt, sens.dvm_dp, sens.dvm_dq, ri)
        vp = np.where(cp >= 0, vp, 0.0)
        vq = np.where(cq >= 0, vq, 0.0)
        scale = np.maximum(np.abs(vp).max(axis=1, initial=0), np.abs(vq).max(axis=1, initial=0))
        scale = np.where(scale > 0, scale, 1.0)
        rhs_r = (bound - sign * vm_c[rt, ri]) / scale
        rr = np.repeat(np.arange(rt.size)[:, None], cp.shape[1], axis=1)
        rows_l = [rr[cp >= 0], rr[cq >= 0]]
        cols_l = [cp[cp >= 0], cq[cq >= 0]]
        vals_l = [(sign * vp / scale[:, None])[cp >= 0], (sign * vq / scale[:, None])[cq >= 0]]
        sflag = soft[rt, ri]
        # explicit row variable y = (EV part of the row): an equality row plus a bound
        # keeps the dense bus-to-bus coupling out of the condensed inequality block
        if not VOLTAGE_ROW_VARIABLES:
            if sflag.any():
                sidx = add_soft(side, np.asarray(sens.bus_ids)[ri[sflag]], rt[sflag], scale[sflag])
                rows_l.append(np.flatnonzero(sflag))
                cols_l.append(sidx)
                vals_l.append(-np.ones(sflag.sum()))
            ineq.add(np.concatenate(rows_l), np.concatenate(cols_l), np.concatenate(vals_l), rhs_r)
            continue
        i_y = new(rt.size)
        rows_l.append(np.arange(rt.size))
        cols_l.append(i_y)
        vals_l.append(-np.ones(rt.size))
        eq.add(np.concatenate(rows_l), np.concatenate(cols_l), np.concatenate(vals_l), np.zeros(rt.size))
        y_ub.append((i_y[~sflag], rhs_r[~sflag]))
        if sflag.any():
            ids = np.asarray(sens.bus_ids)[ri[sflag]]
            sidx = add_soft(side, ids, rt[sflag], scale[sflag])
            m = int(sflag.sum())
            ineq.add(np.concatenate([np.arange(m), np.arange(m)]), np.concatenate([i_y[sflag], sidx]),
                     np.concatenate([np.ones(m), -np.ones(m)]), rhs_r[sflag])

    # --- lines (12h): cone/polygon on the from-end flows; |I| rows where no S limit
    s_line, use_cone = md.line_s_max_kva(problem)
    line_ids = np.asarray(sens.line_ids)
    _flow_limits(
        "line", line_ids, use_cone, s_line, consts["pl"], consts["ql"],
        (sens.dpl_dp, sens.dpl_dq, sens.dql_dp, sens.dql_dq),
        box_range, agg_rows, new, eq, ineq, cone_rows, cone_g, add_soft,
        soft_mode, cone_soc, poly_c, poly_s, poly_f,
    )
    no_cone = ~use_cone
    if no_cone.any():
        li = np.flatnonzero(no_cone)
        imax = np.asarray(sens.i_max_ka, dtype=float)[li] * lim.line_loading_max
        ic = consts["i"][:, li]
        _, hi_i = box_range(np.asarray(sens.di_dp)[li], np.asarray(sens.di_dq)[li])
        at_base = ic > imax
        soft = at_base if soft_mode == "auto" else (np.ones_like(at_base) if soft_mode == "always" else np.zeros_like(at_base))
        keep = (ic + hi_i > imax + _TOL_SCREEN) | (soft & at_base)
        rt, rl = np.nonzero(keep)
        if rt.size:
            cp, vp, cq, vq = agg_rows(rt, np.asarray(sens.di_dp)[li], np.asarray(sens.di_dq)[li], rl)
            vp = np.where(cp >= 0, vp, 0.0)
            vq = np.where(cq >= 0, vq, 0.0)
            scale = np.maximum(np.abs(vp).max(axis=1, initial=0), np.abs(vq).max(axis=1, initial=0))
            scale = np.where(scale > 0, scale, 1.0)
            rr = np.repeat(np.arange(rt.size)[:, None], cp.shape[1], axis=1)
            rows_l = [rr[cp >= 0], rr[cq >= 0]]
            cols_l = [cp[cp >= 0], cq[cq >= 0]]
            vals_l = [(vp / scale[:, None])[cp >= 0], (vq / scale[:, None])[cq >= 0]]
            sflag = soft[rt, rl]
            if sflag.any():
                sidx = add_soft("line", line_ids[li][rl[sflag]], rt[sflag], scale[sflag] / imax[rl[sflag]])
                rows_l.append(np.flatnonzero(sflag))
                cols_l.append(sidx)
                vals_l.append(-np.ones(sflag.sum()))
            ineq.add(np.concatenate(rows_l), np.concatenate(cols_l), np.concatenate(vals_l),
                     (imax[rl] - ic[rt, rl]) / scale)

    # --- substation transformers (12i)
    s_tr = md.trafo_s_max_kva(problem)
    _flow_limits(
        "trafo", np.asarray(sens.trafo_ids), np.ones(s_tr.shape[0], dtype=bool), s_tr,
        consts["pt"], consts["qt"], (sens.dpt_dp, sens.dpt_dq, sens.dqt_dp, sens.dqt_dq),
        box_range, agg_rows, new, eq, ineq, cone_rows, cone_g, add_soft,
        soft_mode, cone_soc, poly_c, poly_s, poly_f,
    )

    # --- charger apparent power (12d) for EVs with Q (others: variable bounds)
    # (per decision pair; ``is_d``/``is_q``/``s_ev``/``i_pp``... refer to decisions here)
    is_d, is_q, s_ev = d_isd, d_isq, d_s
    i_pp_f, i_pm_f, i_q_f = i_pp, i_pm, i_q
    i_pp, i_pm, i_q = d_pp, d_pm, d_q
    jq = np.flatnonzero(is_q)
    if jq.size:
        if cone_soc:
            m = jq.size
            rr = np.arange(m) * 3
            rows = [rr + 1, rr + 2]
            cols = [i_pp[jq], i_q[jq]]
            vals = [-np.ones(m), -np.ones(m)]
            jqd = is_d[jq]
            rows.append(rr[jqd] + 1)
            cols.append(i_pm[jq][jqd])
            vals.append(np.ones(jqd.sum()))
            g = np.zeros(3 * m)
            g[rr] = s_ev[jq]
            cone_rows.add(np.concatenate(rows), np.concatenate(cols), np.concatenate(vals), g)
        else:
            for j_set, cs, ss in ((jq[is_d[jq]], poly_c, poly_s), (jq[~is_d[jq]], half_c, half_s)):
                if j_set.size == 0:
                    continue
                nf = cs.size
                m = j_set.size
                rr = (np.arange(m)[:, None] * nf + np.arange(nf)[None, :])
                rows = [rr.ravel(), rr.ravel()]
                cols = [np.repeat(i_pp[j_set], nf), np.repeat(i_q[j_set], nf)]
                vals = [np.tile(cs, m), np.tile(ss, m)]
                if is_d[j_set].all() and j_set.size:
                    rows.append(rr.ravel())
                    cols.append(np.repeat(i_pm[j_set], nf))
                    vals.append(-np.tile(cs, m))
                ineq.add(np.concatenate(rows), np.concatenate(cols), np.concatenate(vals),
                         np.repeat(s_ev[j_set] * poly_f, nf))

    # --- bounds
    n_var = count[0]
    lb = np.full(n_var, -_INF)
    ub = np.full(n_var, _INF)
    lb[i_pp] = 0.0
    ub[i_pp] = d_cap_ch
    lb[i_pm[is_d]] = 0.0
    ub[i_pm[is_d]] = d_cap_dis[is_d]
    lb[i_q[is_q]] = -s_ev[is_q]
    ub[i_q[is_q]] = s_ev[is_q]
    lb[i_soc] = lo_soc[v]
    ub[i_soc] = hi_soc[v]
    for idx, bound in y_ub:
        ub[idx] = bound

    # --- objective (11): sum w (soc - soc*)^2 + k (P+ + P-) + q_weight Q^2 + penalty slack
    # (power terms once per step: weight d_n, the steps a decision covers)
    w, n_const = md.soc_weights(plugged, t, v)
    mult = np.ones(n_evs) if ev_mult is None else np.asarray(ev_mult, dtype=float)
    w = w * mult[v]
    n_const = n_const * mult
    target = np.asarray(problem.soc_target, dtype=float)
    soc0 = np.asarray(problem.soc0, dtype=float)
    pdiag = np.zeros(n_var)
    c = np.zeros(n_var)
    pdiag[i_soc] = 2.0 * w
    c[i_soc] = -2.0 * w * target[v]
    const = float(np.sum(w * target[v] ** 2) + np.sum(n_const * (soc0 - target) ** 2))
    c[i_pp] += options.k_weight * d_n
    c[i_pm[is_d]] += options.k_weight * d_n[is_d]
    pdiag[i_q[is_q]] = 2.0 * options.q_weight * d_n[is_q] / mult[d_v][is_q]
    slack_idx, slack_unit, slack_info = [], [], []
    for kind, ids, steps, unit, idx in slack_specs:
        lb[idx] = 0.0
        c[idx] = options.soft_penalty * unit
        slack_idx.append(idx)
        slack_unit.append(unit)
        slack_info.extend((kind, int(i), int(s)) for i, s in zip(ids, steps, strict=True))
    P = sp.diags(pdiag, format="csc")
    A, b = eq.matrix(n_var)
    G, h = ineq.matrix(n_var)
    if cone_soc and cone_rows.n:
        F, g = cone_rows.matrix(n_var)
    else:
        F, g = None, None
    return MatrixQP(
        P=P, c=c, const=const, A=A, b=b, G=G, h=h, lb=lb, ub=ub, cone_F=F, cone_g=g,
        pair_t=t, pair_v=v, i_pp=i_pp_f, i_pm=i_pm_f, i_q=i_q_f, i_soc=i_soc,
        slack_idx=np.concatenate(slack_idx) if slack_idx else np.zeros(0, dtype=int),
        slack_unit=np.concatenate(slack_unit) if slack_unit else np.zeros(0),
        slack_info=slack_info, n_steps=n_steps, n_evs=n_evs, row_steps=row_steps,
        vm_screen=vm_screen,
    )


def _flow_limits(kind, ids, use, s_max, pc, qc, sens4, box_range, agg_rows, new, eq, ineq,
                 cone_rows, cone_g, add_soft, soft_mode, cone_soc, poly_c, poly_s, poly_f):
    """Apparent-power limits on linearised branch flows (eqs. (12h), (12i)).

    Flow variables ``fp = pc + dP/dPn Pn + dP/dQn Qn`` (and ``fq``) per kept
    (step, branch); then the polygon ``cos fp + sin fq <= (S + sigma) cos(pi/n)``
    or the cone ``||(fp, fq)|| <= S + sigma``.
    """
    el = np.flatnonzero(use)
    if el.size == 0:
        return
    dpp, dpq, dqp, dqq = (np.asarray(x)[el] for x in sens4)
    smax = s_max[el]
    pcs, qcs = pc[:, el], qc[:, el]
    lo_p, hi_p = box_range(dpp, dpq)
    lo_q, hi_q = box_range(dqp, dqq)
    absp = np.maximum(np.abs(pcs + lo_p), np.abs(pcs + hi_p))
    absq = np.maximum(np.abs(qcs + lo_q), np.abs(qcs + hi_q))
    factor = 1.0 if cone_soc else poly_f
    can_break = np.hypot(absp, absq) > smax * factor * (1 + 1e-9)
    if cone_soc:
        base_bad = np.hypot(pcs, qcs) > smax
    else:
        base_bad = (pcs[..., None] * poly_c + qcs[..., None] * poly_s).max(axis=-1) > smax * poly_f
    soft = base_bad if soft_mode == "auto" else (np.ones_like(base_bad) if soft_mode == "always" else np.zeros_like(base_bad))
    keep = can_break | (soft & base_bad)
    rt, rl = np.nonzero(keep)
    if rt.size == 0:
        return
    nr = rt.size
    i_fp = new(nr)
    i_fq = new(nr)
    for i_f, d1, d2, c0 in ((i_fp, dpp, dpq, pcs), (i_fq, dqp, dqq, qcs)):
        cp, vp, cq, vq = agg_rows(rt, d1, d2, rl)
        rr = np.repeat(np.arange(nr)[:, None], cp.shape[1], axis=1)
        eq.add(
            np.concatenate([np.arange(nr), rr[cp >= 0], rr[cq >= 0]]),
            np.concatenate([i_f, cp[cp >= 0], cq[cq >= 0]]),
            np.concatenate([np.ones(nr), -vp[cp >= 0], -vq[cq >= 0]]),
            c0[rt, rl],
        )
    sflag = soft[rt, rl]
    sig = np.full(nr, -1)
    if sflag.any():
        sig[sflag] = add_soft(kind, ids[el][rl[sflag]], rt[sflag], 1.0 / smax[rl[sflag]])
    if cone_soc:
        rr = np.arange(nr) * 3
        rows = [rr + 1, rr + 2, rr[sflag]]
        cols = [i_fp, i_fq, sig[sflag]]
        vals = [-np.ones(nr), -np.ones(nr), -np.ones(sflag.sum())]
        g = np.zeros(3 * nr)
        g[rr] = smax[rl]
        cone_rows.add(np.concatenate(rows), np.concatenate(cols), np.concatenate(vals), g)
    else:
        nf = poly_c.size
        rr = np.arange(nr)[:, None] * nf + np.arange(nf)[None, :]
        rows = [rr.ravel(), rr.ravel(), rr[sflag].ravel()]
        cols = [np.repeat(i_fp, nf), np.repeat(i_fq, nf), np.repeat(sig[sflag], nf)]
        vals = [np.tile(poly_c, nr), np.tile(poly_s, nr), np.full(sflag.sum() * nf, -poly_f)]
        ineq.add(np.concatenate(rows), np.concatenate(cols), np.concatenate(vals),
                 np.repeat(smax[rl] * poly_f, nf))


# ----------------------------------------------------------------------------- solve
@dataclass(frozen=True)
class RawSolution:
    """Solver outcome of :func:`solve_qp`.

    Attributes
    ----------
    ok : bool
        True only for a proven optimal termination within the time limit.
    status : str
        ``"optimal"``, ``"time_limit"``, ``"infeasible"``, ``"iteration_limit"``,
        ``"numerical"`` or the solver's own status text.
    x : ndarray or None
        Primal solution (None unless ``ok``).
    objective : float
        Solver objective including the constant [-] (NaN unless ``ok``).
    solve_s : float
        Wall-clock time in the solver [s].
    message : str
    """

    ok: bool
    status: str
    x: np.ndarray | None
    objective: float
    solve_s: float
    message: str = ""


def solve_qp(qp: MatrixQP, options: StrategyOptions) -> RawSolution:
    """Solve an assembled problem with PIQP or Clarabel, checking termination.

    PIQP has no wall-clock limit: a probe run of 2 iterations measures the cost
    of one iteration (one KKT factorisation), then the iterations are capped so
    that the solve ends near ``options.time_limit_s``; a solve for which fewer than
    20 iterations fit is not started, one stopped by the cap or ending after 1.5 x
    the limit is rejected as ``"time_limit"``. The probe costs 2 extra
    iterations (about 5 %). Clarabel stops itself at ``time_limit_s``. Only
    ``Solved`` (never ``AlmostSolved``) counts. ``"auto"``: PIQP when the
    assembled problem has no second-order cone (then it is a QP, whatever
    ``options.cone`` says, and PIQP solves it 3-4 x faster than Clarabel at seed
    000 scale), Clarabel otherwise.
    """
    if options.solver == "piqp" or (options.solver == "auto" and qp.cone_F is None):
        return _solve_piqp(qp, options)
    if options.solver in ("clarabel", "auto"):
        return _solve_clarabel(qp, options)
    raise ValueError(f"matrix path solves with 'piqp' or 'clarabel', not {options.solver!r}")


def _solve_piqp(qp: MatrixQP, options: StrategyOptions) -> RawSolution:
    import piqp

    if qp.cone_F is not None:
        raise ValueError("PIQP cannot take second-order cones: use cone='polygon'")
    t0 = time.perf_counter()
    solver = piqp.SparseSolver()
    st = solver.settings
    st.verbose = False
    st.max_iter = int(options.max_iter)
    st.eps_abs = 1e-9
    st.eps_rel = 1e-10
    solver.setup(
        qp.P, qp.c,
        qp.A if qp.A.shape[0] else None, qp.b if qp.A.shape[0] else None,
        qp.G if qp.G.shape[0] else None,
        np.full(qp.G.shape[0], -np.inf) if qp.G.shape[0] else None,
        qp.h if qp.G.shape[0] else None,
        np.where(qp.lb <= -_INF, -np.inf, qp.lb), np.where(qp.ub >= _INF, np.inf, qp.ub),
    )
    # PIQP has no wall-clock limit: probe the cost of an iteration with a short
    # run, then cap the iterations so that the real run ends near time_limit_s
    # (an interior-point iteration costs about the same throughout: one KKT
    # factorisation). A solve predicted not to fit is not started.
    t_setup = time.perf_counter()
    st.max_iter = _PIQP_PROBE_ITER
    status = solver.solve()
    if status == piqp.PIQP_MAX_ITER_REACHED and options.max_iter > _PIQP_PROBE_ITER:
        t_probe = time.perf_counter() - t0
        per_iter = (time.perf_counter() - t_setup) / _PIQP_PROBE_ITER
        budget = options.time_limit_s - t_probe
        allowed = int(budget / max(per_iter, 1e-9))
        if allowed < _PIQP_MIN_ITER:
            return RawSolution(False, "time_limit", None, float("nan"), t_probe,
                               f"PIQP needs about {per_iter:.3f} s per iteration: "
                               f"{_PIQP_MIN_ITER} iterations do not fit in time_limit_s "
                               f"{options.time_limit_s}")
        st.max_iter = min(int(options.max_iter), allowed)
        status = solver.solve()
        if status == piqp.PIQP_MAX_ITER_REACHED and allowed < options.max_iter:
            dt = time.perf_counter() - t0
            return RawSolution(False, "time_limit", None, float("nan"), dt,
                               f"PIQP stopped after {allowed} iterations to keep time_limit_s "
                               f"{options.time_limit_s}")
    dt = time.perf_counter() - t0
    if status != piqp.PIQP_SOLVED:
        name = {
            piqp.PIQP_MAX_ITER_REACHED: "iteration_limit",
            piqp.PIQP_PRIMAL_INFEASIBLE: "infeasible",
            piqp.PIQP_DUAL_INFEASIBLE: "unbounded",
            piqp.PIQP_NUMERICS: "numerical",
        }.get(status, str(status))
        return RawSolution(False, name, None, float("nan"), dt, f"PIQP ended {status}")
    if dt > options.time_limit_s * 1.5:
        return RawSolution(False, "time_limit", None, float("nan"), dt,
                           f"PIQP solved in {dt:.3f} s > 1.5 x time_limit_s {options.time_limit_s}")
    x = np.array(solver.result.x)
    return RawSolution(True, "optimal", x, float(solver.result.info.primal_obj) + qp.const, dt, "PIQP solved")


def _solve_clarabel(qp: MatrixQP, options: StrategyOptions) -> RawSolution:
    import clarabel

    t0 = time.perf_counter()
    n = qp.n_var
    eye = sp.identity(n, format="csc")
    fin_lb = qp.lb > -_INF
    fin_ub = qp.ub < _INF
    blocks = [qp.A, qp.G, -eye[fin_lb], eye[fin_ub]]
    rhs = [qp.b, qp.h, -qp.lb[fin_lb], qp.ub[fin_ub]]
    cones = []
    if qp.A.shape[0]:
        cones.append(clarabel.ZeroConeT(qp.A.shape[0]))
    n_nn = qp.G.shape[0] + int(fin_lb.sum()) + int(fin_ub.sum())
    if n_nn:
        cones.append(clarabel.NonnegativeConeT(n_nn))
    if qp.cone_F is not None:
        blocks.append(qp.cone_F)
        rhs.append(qp.cone_g)
        cones.extend([clarabel.SecondOrderConeT(3)] * (qp.cone_F.shape[0] // 3))
    A = sp.vstack(blocks, format="csc")
    b = np.concatenate(rhs)
    st = clarabel.DefaultSettings()
    st.verbose = False
    st.time_limit = float(options.time_limit_s)
    st.max_iter = int(options.max_iter)
    solver = clarabel.DefaultSolver(sp.triu(qp.P, format="csc"), qp.c, A, b, cones, st)
    sol = solver.solve()
    dt = time.perf_counter() - t0
    status = str(sol.status)
    if status != "Solved":
        name = {
            "MaxTime": "time_limit", "MaxIterations": "iteration_limit",
            "PrimalInfeasible": "infeasible", "DualInfeasible": "unbounded",
            "AlmostSolved": "almost_solved",
        }.get(status, status)
        return RawSolution(False, name, None, float("nan"), dt, f"Clarabel ended {status}")
    x = np.array(sol.x)
    return RawSolution(True, "optimal", x, float(sol.obj_val) + qp.const, dt, "Clarabel solved")


#: Constraint generation: an omitted voltage row counts as violated beyond this [pu].
_GEN_TOL_PU = 1e-10
#: ... and every omitted row within this of its bound is added in the same round [pu].
_GEN_MARGIN_PU = 2e-3
#: Rounds before constraint generation gives up and keeps every screened row.
_GEN_MAX_ROUNDS = 8


@dataclass(frozen=True)
class Generated:
    """Outcome of :func:`solve_generated`.

    Attributes
    ----------
    qp : MatrixQP
        The last assembled problem.
    raw : RawSolution
        Its solve; ``solve_s`` is the sum over all rounds [s].
    build_s : float
        Assembly time over all rounds [s].
    rounds : int
        Solves done (1 without constraint generation).
    vm_allowed : dict or None
        Voltage rows within ``_GEN_MARGIN_PU`` of their bound at the solution (per
        side, bool (T, n)): the seed of the next solve. None without row generation
        or when the solve failed.
    """

    qp: MatrixQP
    raw: RawSolution
    build_s: float
    rounds: int
    vm_allowed: dict | None


def aggregate_identical(problem: ChargingProblem):
    """Group EVs that are identical for the optimiser (exact aggregation).

    EVs with the same bus, plug window, capacity, rating, efficiency, SOC (bit for
    bit), SOC target and limits and capabilities have the same optimal SOC
    trajectory: the problem is convex and symmetric under swapping them, the SOC
    terms of eq. (8) are strictly convex, so the average of an optimum and its
    swapped copy is optimal and the SOC trajectories of an optimum coincide. One
    "group EV" with ``m`` times the capacity and rating then has the same SOC
    dynamics (eq. (10)) and, with its SOC terms counted ``m`` times, the same
    objective (eq. (11)); its powers split equally among the members.

    Returns
    -------
    grouped : ChargingProblem or None
        The problem with one EV per group (None when no two EVs are identical).
    inverse : ndarray of int, shape (V,)
        Group of each EV.
    mult : ndarray of int, shape (G,)
        EVs per group.
    """
    plugged = np.asarray(problem.plugged, dtype=bool)
    cols = [np.asarray(problem.ev_col, dtype=float)]
    for name in ("capacity_kwh", "s_max_kva", "efficiency", "soc0", "soc_target", "soc_min", "soc_max",
                 "can_discharge", "can_reactive"):
        cols.append(np.asarray(getattr(problem, name), dtype=float))
    key = np.concatenate([np.stack(cols, axis=1), plugged.T.astype(float)], axis=1)
    _, first, inverse, mult = np.unique(key, axis=0, return_index=True, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    if first.size == problem.n_evs:
        return None, np.arange(problem.n_evs), np.ones(problem.n_evs, dtype=int)
    # groups in the order of their first member (keeps the EV order of the problem)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    first, mult, inverse = first[order], mult[order], rank[inverse]
    pick = {name: np.asarray(getattr(problem, name))[first] for name in (
        "ev_ids", "ev_col", "efficiency", "soc0", "soc_target", "soc_min", "soc_max", "can_discharge",
        "can_reactive")}
    grouped = replace(problem, capacity_kwh=np.asarray(problem.capacity_kwh, dtype=float)[first] * mult,
                      s_max_kva=np.asarray(problem.s_max_kva, dtype=float)[first] * mult,
                      plugged=plugged[:, first], **pick)
    return grouped, inverse, mult


def linear_vm(problem: ChargingProblem, consts: dict, p_kw: np.ndarray, q_kvar: np.ndarray) -> np.ndarray:
    """Linearised bus voltages (eq. (12f)) with the EV powers ``p_kw``/``q_kvar`` (T, V), (T, n) [pu]."""
    n_bus = int(np.shape(problem.sens.bus_ids)[0])
    col = np.asarray(problem.ev_col)
    onehot = sp.csr_matrix((np.ones(col.size), (np.arange(col.size), col)), shape=(col.size, n_bus))
    pn = np.asarray(onehot.T @ np.asarray(p_kw).T).T
    qn = np.asarray(onehot.T @ np.asarray(q_kvar).T).T
    return consts["vm"] + pn @ np.asarray(problem.sens.dvm_dp).T + qn @ np.asarray(problem.sens.dvm_dq).T


def solve_generated(problem: ChargingProblem, options: StrategyOptions, consts: dict | None = None,
                    seed: dict | None = None, ev_mult: np.ndarray | None = None) -> Generated:
    """Assemble and solve, voltage rows (12g) by constraint generation when asked.

    With ``options.row_generation`` and a ``seed`` (voltage rows of an earlier,
    similar solve: the previous receding step, or the linear solve before an AC
    correction) the first round keeps only the seed's rows (and the rows the base
    load alone breaks); after each optimal round every omitted row that screening
    kept is evaluated on the solution (linear model, eq. (12f)); if one is violated
    by more than ``_GEN_TOL_PU``, every omitted row within ``_GEN_MARGIN_PU`` of its
    bound is added and the problem solved again. Without a seed the first solve
    keeps every screened row (a cold start from no rows took 4-5 rounds at seed 000
    scale, twice the time of one full solve), and the rows within
    ``_GEN_MARGIN_PU`` of their bound at its solution are returned as the seed of
    the next solve. Exact: the last round's solution
    is optimal for a relaxation (a subset of the rows) and satisfies every row, so
    it is optimal for the full problem. Only voltage rows are generated (line and
    transformer rows are rarely kept by screening on the seed grids). After
    ``_GEN_MAX_ROUNDS`` rounds every screened row is kept. The time limit is shared
    by all rounds.

    Returns
    -------
    Generated
    """
    consts = md.grid_constants(problem) if consts is None else consts
    t_start = time.perf_counter()
    lim = problem.limits
    shape = np.shape(consts["vm"])
    if not options.row_generation or seed is None:
        qp = build(problem, options, consts, ev_mult=ev_mult)
        build_s = time.perf_counter() - t_start
        raw = solve_qp(qp, options)
        if not options.row_generation or not raw.ok:
            return Generated(qp, raw, build_s, 1, None)
        sol = extract(qp, raw.x)
        vm = linear_vm(problem, consts, sol["p_plus"] - sol["p_minus"], sol["q"])
        near = {"vm_min": qp.vm_screen["vm_min"] & (vm < lim.vm_min_pu + _GEN_MARGIN_PU),
                "vm_max": qp.vm_screen["vm_max"] & (vm > lim.vm_max_pu - _GEN_MARGIN_PU)}
        return Generated(qp, raw, build_s, 1, near)
    allowed = {side: np.zeros(shape, dtype=bool) for side in ("vm_min", "vm_max")}
    for side, mask in seed.items():
        if side in allowed and np.shape(mask) == shape:
            allowed[side] |= np.asarray(mask, dtype=bool)
    build_s = solve_s = 0.0
    rounds = 0
    while True:
        t0 = time.perf_counter()
        last = rounds + 1 >= _GEN_MAX_ROUNDS
        qp = build(problem, options, consts, None if last else allowed, ev_mult)
        build_s += time.perf_counter() - t0
        remaining = options.time_limit_s - (time.perf_counter() - t_start)
        if remaining <= 0:
            raw = RawSolution(False, "time_limit", None, float("nan"), solve_s,
                              f"constraint generation: time_limit_s {options.time_limit_s} used up "
                              f"after {rounds} rounds")
            return Generated(qp, raw, build_s, rounds, None)
        raw = solve_qp(qp, replace(options, time_limit_s=remaining))
        rounds += 1
        solve_s += raw.solve_s
        raw = replace(raw, solve_s=solve_s)
        if not raw.ok or last:
            return Generated(qp, raw, build_s, rounds, None)
        sol = extract(qp, raw.x)
        vm = linear_vm(problem, consts, sol["p_plus"] - sol["p_minus"], sol["q"])
        screen = qp.vm_screen
        omitted_min = screen["vm_min"] & ~allowed["vm_min"]
        omitted_max = screen["vm_max"] & ~allowed["vm_max"]
        broken = (np.any(omitted_min & (vm < lim.vm_min_pu - _GEN_TOL_PU))
                  or np.any(omitted_max & (vm > lim.vm_max_pu + _GEN_TOL_PU)))
        if not broken:
            near = {"vm_min": screen["vm_min"] & (vm < lim.vm_min_pu + _GEN_MARGIN_PU),
                    "vm_max": screen["vm_max"] & (vm > lim.vm_max_pu - _GEN_MARGIN_PU)}
            return Generated(qp, replace(raw, message=f"{raw.message} ({rounds} rounds of row generation)"),
                             build_s, rounds, near)
        allowed["vm_min"] |= omitted_min & (vm < lim.vm_min_pu + _GEN_MARGIN_PU)
        allowed["vm_max"] |= omitted_max & (vm > lim.vm_max_pu - _GEN_MARGIN_PU)


def extract(qp: MatrixQP, x: np.ndarray) -> dict:
    """Map a solution vector to (T, V) arrays and slack report.

    Returns
    -------
    dict
        ``p_plus``, ``p_minus``, ``q`` (T, V) [kW]/[kvar]; ``slack`` list of
        (kind, id, step, amount) with amount in pu / fraction of rating.
    """
    shape = (qp.n_steps, qp.n_evs)
    pp = np.zeros(shape)
    pm = np.zeros(shape)
    q = np.zeros(shape)
    t, v = qp.pair_t, qp.pair_v
    pp[t, v] = x[qp.i_pp]
    has = qp.i_pm >= 0
    pm[t[has], v[has]] = x[qp.i_pm[has]]
    has = qp.i_q >= 0
    q[t[has], v[has]] = x[qp.i_q[has]]
    amounts = np.maximum(x[qp.slack_idx], 0.0) * qp.slack_unit if qp.slack_idx.size else np.zeros(0)
    slack = [(k, i, s, float(a)) for (k, i, s), a in zip(qp.slack_info, amounts, strict=True)]
    return {"p_plus": pp, "p_minus": pm, "q": q, "slack": slack}
