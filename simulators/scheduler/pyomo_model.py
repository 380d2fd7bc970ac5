"""Reference formulation of seed 000 problem (12) in pyomo, solved by HiGHS.

Readable, one pyomo component per equation of the paper; meant for checking the
fast path (:mod:`.matrix_model`) on small cases, not for full-scale runs (building
the V2G+Q model for 878 EVs x 64 steps takes tens of seconds, and HiGHS's QP solver
is far slower than PIQP there; see ``docs/strategies.md``).

HiGHS solves QPs but not second-order cones, so this path always uses the
inscribed polygon (``options.cone == "polygon"``) for eqs. (12d), (12h), (12i).
Unlike the matrix path it keeps every grid row (no screening), which makes the
comparison of the two paths also a check of the screening.

Solved through ``pyomo.contrib.solver`` (``Highs``) with ``load_solutions=False``:
termination is checked first and values are loaded only after a proven optimum.
"""

from __future__ import annotations

import time

import numpy as np
import pyomo.environ as pyo

from . import model_data as md
from .matrix_model import RawSolution
from .problem import ChargingProblem, StrategyOptions


def build(problem: ChargingProblem, options: StrategyOptions) -> pyo.ConcreteModel:
    """Pyomo model of problem (12) for strategy ``options.name``.

    Raises
    ------
    ValueError
        For ``options.cone == "soc"`` (HiGHS has no second-order cones).
    """
    if options.cone != "polygon":
        raise ValueError("the pyomo/HiGHS path supports cone='polygon' only")
    flags = md.strategy_flags(problem, options)
    sens = problem.sens
    lim = problem.limits
    consts = md.grid_constants(problem)
    a_gain, b_gain = md.soc_gains(problem)
    lo_soc, hi_soc = md.soc_bounds(problem)
    s_ev = np.asarray(problem.s_max_kva, dtype=float)
    target = np.asarray(problem.soc_target, dtype=float)
    soc0 = np.asarray(problem.soc0, dtype=float)
    col = np.asarray(problem.ev_col)
    pc, ps, pf = md.polygon(options.n_sides)
    hc, hs, _ = md.polygon(options.n_sides, half=True)
    n_steps = problem.n_steps
    n_bus = int(np.shape(sens.bus_ids)[0])
    soft_mode = options.soft_limits

    t_arr, v_arr = md.plugged_pairs(problem.plugged)
    pairs = list(zip(t_arr.tolist(), v_arr.tolist(), strict=True))
    w, n_const = md.soc_weights(problem.plugged, t_arr, v_arr)

    m = pyo.ConcreteModel(name=f"seed000_{options.name}")
    m.J = pyo.Set(initialize=pairs, dimen=2, ordered=True)
    m.JD = pyo.Set(initialize=[j for j in pairs if flags.discharge[j[1]]], dimen=2, ordered=True)
    m.JQ = pyo.Set(initialize=[j for j in pairs if flags.reactive[j[1]]], dimen=2, ordered=True)
    m.T = pyo.RangeSet(0, n_steps - 1)
    m.N = pyo.RangeSet(0, n_bus - 1)

    # decision variables (12a): P+ >= 0, P- >= 0, Q free within the charger disc
    m.pp = pyo.Var(m.J, bounds=lambda _m, t, v: (0.0, s_ev[v]))
    m.pm = pyo.Var(m.JD, bounds=lambda _m, t, v: (0.0, s_ev[v]))
    m.q = pyo.Var(m.JQ, bounds=lambda _m, t, v: (-s_ev[v], s_ev[v]))
    # SOC at the end of each plugged step, bounds (12c)
    m.soc = pyo.Var(m.J, bounds=lambda _m, t, v: (lo_soc[v], hi_soc[v]))

    # SOC model (10) / (12b)
    prev = {}
    last = {}
    for t, v in pairs:
        prev[(t, v)] = last.get(v)
        last[v] = (t, v)

    def soc_rule(_m, t, v):
        before = soc0[v] if prev[(t, v)] is None else _m.soc[prev[(t, v)]]
        dis = b_gain[v] * _m.pm[t, v] if (t, v) in _m.JD else 0.0
        return _m.soc[t, v] == before + a_gain[v] * _m.pp[t, v] - dis

    m.soc_model = pyo.Constraint(m.J, rule=soc_rule)

    # charger apparent power (12d): polygon for chargers with Q
    def charger_rule(_m, t, v, f):
        if (t, v) in _m.JD:
            cs, ss = pc, ps
            p = _m.pp[t, v] - _m.pm[t, v]
        else:
            cs, ss = hc, hs
            p = _m.pp[t, v]
        if f >= cs.size:
            return pyo.Constraint.Skip
        return cs[f] * p + ss[f] * _m.q[t, v] <= s_ev[v] * pf

    m.charger = pyo.Constraint(m.JQ, range(options.n_sides), rule=charger_rule)

    # nodal EV aggregates (6), (7), (9) and nodal injections (1)
    by_node: dict[tuple[int, int], list] = {}
    for t, v in pairs:
        by_node.setdefault((t, int(col[v])), []).append((t, v))

    def p_ev(_m, t, n):
        terms = by_node.get((t, n), [])
        return sum(_m.pp[j] - (_m.pm[j] if j in _m.JD else 0.0) for j in terms)

    def q_ev(_m, t, n):
        return sum(_m.q[j] for j in by_node.get((t, n), []) if j in _m.JQ)

    m.p_ev = pyo.Expression(m.T, m.N, rule=p_ev)
    m.q_ev = pyo.Expression(m.T, m.N, rule=q_ev)

    def lin(c0, d_dp, d_dq, t, i):
        """Linear grid model (12f): value with idle EVs + EV contribution."""
        return c0[t, i] + sum(
            float(d_dp[i, n]) * m.p_ev[t, n] + float(d_dq[i, n]) * m.q_ev[t, n]
            for n in range(n_bus)
            if (t, n) in by_node
        )

    def soft(at_base):
        return soft_mode == "always" or (soft_mode == "auto" and at_base)

    m.slack = pyo.Var(pyo.Any, dense=False, within=pyo.NonNegativeReals)
    penalty = []
    m.grid = pyo.ConstraintList()
    m.trivially_infeasible = False

    class _Rows:
        """Add grid rows; rows without any EV term are checked here instead."""

        @staticmethod
        def add(relation):
            if isinstance(relation, (bool, np.bool_)):
                m.trivially_infeasible |= not bool(relation)
                return
            m.grid.add(relation)

    rows = _Rows()

    # voltage band (12g)
    dvm_dp, dvm_dq = np.asarray(sens.dvm_dp), np.asarray(sens.dvm_dq)
    for t in range(n_steps):
        for i in range(n_bus):
            vm = lin(consts["vm"], dvm_dp, dvm_dq, t, i)
            c0 = consts["vm"][t, i]
            lo_s = hi_s = 0.0
            if soft(c0 < lim.vm_min_pu):
                lo_s = m.slack["vm_min", int(sens.bus_ids[i]), t]
                penalty.append(lo_s)
            if soft(c0 > lim.vm_max_pu):
                hi_s = m.slack["vm_max", int(sens.bus_ids[i]), t]
                penalty.append(hi_s)
            rows.add(vm + lo_s >= lim.vm_min_pu)
            rows.add(vm - hi_s <= lim.vm_max_pu)

    # lines (12h): polygon on the from-end apparent power, |I| rows where no S limit
    s_line, use_cone = md.line_s_max_kva(problem)
    for li in range(len(sens.line_ids)):
        lid = int(sens.line_ids[li])
        for t in range(n_steps):
            if use_cone[li]:
                fp = lin(consts["pl"], np.asarray(sens.dpl_dp), np.asarray(sens.dpl_dq), t, li)
                fq = lin(consts["ql"], np.asarray(sens.dql_dp), np.asarray(sens.dql_dq), t, li)
                base = max(pc * consts["pl"][t, li] + ps * consts["ql"][t, li])
                sl = 0.0
                if soft(base > s_line[li] * pf):
                    sl = m.slack["line", lid, t]
                    penalty.append(sl)
                for f in range(pc.size):
                    rows.add(pc[f] * fp + ps[f] * fq <= s_line[li] * (1 + sl) * pf)
            else:
                imax = float(sens.i_max_ka[li]) * lim.line_loading_max
                i_lin = lin(consts["i"], np.asarray(sens.di_dp), np.asarray(sens.di_dq), t, li)
                sl = 0.0
                if soft(consts["i"][t, li] > imax):
                    sl = m.slack["line", lid, t]
                    penalty.append(sl)
                rows.add(i_lin <= imax * (1 + sl))

    # substation transformers (12i)
    s_tr = md.trafo_s_max_kva(problem)
    for k in range(len(sens.trafo_ids)):
        kid = int(sens.trafo_ids[k])
        for t in range(n_steps):
            fp = lin(consts["pt"], np.asarray(sens.dpt_dp), np.asarray(sens.dpt_dq), t, k)
            fq = lin(consts["qt"], np.asarray(sens.dqt_dp), np.asarray(sens.dqt_dq), t, k)
            base = max(pc * consts["pt"][t, k] + ps * consts["qt"][t, k])
            sl = 0.0
            if soft(base > s_tr[k] * pf):
                sl = m.slack["trafo", kid, t]
                penalty.append(sl)
            for f in range(pc.size):
                rows.add(pc[f] * fp + ps[f] * fq <= s_tr[k] * (1 + sl) * pf)

    # objective (11) on the SOC after every step (8), + tiny Q regulariser + penalty
    const = float(np.sum(n_const * (soc0 - target) ** 2))
    w_of = dict(zip(pairs, w.tolist(), strict=True))
    m.obj = pyo.Objective(
        expr=const
        + sum(w_of[j] * (m.soc[j] - target[j[1]]) ** 2 for j in pairs)
        + options.k_weight * (sum(m.pp[j] for j in pairs) + sum(m.pm[j] for j in m.JD))
        + options.q_weight * sum(m.q[j] ** 2 for j in m.JQ)
        + options.soft_penalty * sum(penalty),
        sense=pyo.minimize,
    )
    return m


def solve_model(model: pyo.ConcreteModel, options: StrategyOptions) -> RawSolution:
    """Solve with HiGHS (``pyomo.contrib.solver``), time-limited, termination checked."""
    from pyomo.contrib.solver.common.results import TerminationCondition
    from pyomo.contrib.solver.solvers.highs import Highs

    if model.trivially_infeasible:
        return RawSolution(False, "infeasible", None, float("nan"), 0.0,
                           "a grid row without any EV term is violated by the base load")
    opt = Highs()
    t0 = time.perf_counter()
    res = opt.solve(
        model,
        load_solutions=False,
        raise_exception_on_nonoptimal_result=False,
        time_limit=float(options.time_limit_s),
    )
    dt = time.perf_counter() - t0
    tc = res.termination_condition
    if tc != TerminationCondition.convergenceCriteriaSatisfied:
        name = {
            TerminationCondition.maxTimeLimit: "time_limit",
            TerminationCondition.iterationLimit: "iteration_limit",
            TerminationCondition.provenInfeasible: "infeasible",
            TerminationCondition.infeasibleOrUnbounded: "infeasible",
        }.get(tc, str(tc.name))
        return RawSolution(False, name, None, float("nan"), dt, f"HiGHS ended {tc.name}")
    res.solution_loader.load_vars()
    return RawSolution(True, "optimal", None, float(pyo.value(model.obj)), dt, "HiGHS optimal")


def extract(model: pyo.ConcreteModel, problem: ChargingProblem) -> dict:
    """Loaded solution to (T, V) arrays and slack list (see :func:`.matrix_model.extract`)."""
    shape = (problem.n_steps, problem.n_evs)
    pp = np.zeros(shape)
    pm = np.zeros(shape)
    q = np.zeros(shape)
    for (t, v), var in model.pp.items():
        pp[t, v] = pyo.value(var)
    for (t, v), var in model.pm.items():
        pm[t, v] = pyo.value(var)
    for (t, v), var in model.q.items():
        q[t, v] = pyo.value(var)
    slack = [(k[0], int(k[1]), int(k[2]), float(pyo.value(var))) for k, var in model.slack.items()]
    return {"p_plus": pp, "p_minus": pm, "q": q, "slack": slack}
