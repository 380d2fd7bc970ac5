"""Tests of the seed 000 charging strategies (simulators/scheduler, optimisation core)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandapower as pp
import pandapower.networks as pn
import pytest

from simulators.grid.sensitivity import compute_sensitivities
from simulators.scheduler import model_data as md
from simulators.scheduler.fallback import safe_fallback, uncoordinated
from simulators.scheduler.problem import ChargingProblem, GridBounds, StrategyOptions
from simulators.scheduler.receding import RecedingHorizon, run_receding
from simulators.scheduler.strategies import solve

OPT = ("smart", "smart_q", "v2g", "v2g_q")
EV_BUSES = (3, 4, 5, 6, 8, 10, 11, 14)


@pytest.fixture(scope="module")
def mv_sens():
    """Sensitivities of CIGRE MV at 0.6 x nominal load (slack 1.03 pu as shipped)."""
    net = pn.create_cigre_network_mv(with_der=False)
    net.load["p_mw"] *= 0.6
    net.load["q_mvar"] *= 0.6
    pp.runpp(net)
    return compute_sensitivities(net)


def mv_problem(sens, n_per_bus=3, n_steps=12, load=0.5, limits=GridBounds(0.97, 1.03), seed=0):
    """Small CIGRE MV problem: EVs at the seed 000 nodes, random plug windows."""
    rng = np.random.default_rng(seed)
    col = np.array([sens.column(b) for b in EV_BUSES for _ in range(n_per_bus)])
    v = col.size
    arr = rng.integers(0, n_steps // 2, v)
    dep = rng.integers(n_steps // 2, n_steps + 1, v)
    t = np.arange(n_steps)[:, None]
    shape = 0.8 + 0.4 * np.sin(np.linspace(0, np.pi, n_steps))[:, None]
    scale = load / 0.6
    return ChargingProblem(
        dt_h=0.25, ev_ids=np.arange(v), ev_col=col, capacity_kwh=np.full(v, 16.0),
        s_max_kva=np.full(v, 3.6), efficiency=np.full(v, 0.9),
        soc0=np.clip(rng.normal(0.49, 0.04, v), 0, 1), soc_target=np.ones(v),
        soc_min=np.zeros(v), soc_max=np.ones(v), can_discharge=np.ones(v, bool),
        can_reactive=np.ones(v, bool), plugged=(t >= arr) & (t < dep),
        net_p_kw=sens.p0_kw * scale * shape, net_q_kvar=sens.q0_kvar * scale * shape,
        sens=sens, limits=limits,
    )


def assert_ev_feasible(problem, s, name):
    """EV physics: charger disc, SOC bounds, zero when unplugged, strategy variables."""
    smax = problem.s_max_kva
    assert s.p_kw.shape == problem.plugged.shape
    assert np.all(np.hypot(s.p_kw, s.q_kvar) <= smax + 1e-6)
    assert np.all(s.p_kw[~problem.plugged] == 0) and np.all(s.q_kvar[~problem.plugged] == 0)
    lo, hi = md.soc_bounds(problem)
    assert np.all(s.soc >= lo - 1e-6) and np.all(s.soc <= hi + 1e-6)
    np.testing.assert_allclose(s.soc, md.soc_trajectory(problem, s.p_kw), atol=1e-12)
    if name not in ("v2g", "v2g_q"):
        assert np.all(s.p_kw >= 0)
    if name not in ("smart_q", "v2g_q"):
        assert np.all(s.q_kvar == 0)


def linear_grid(problem, s):
    """Linear-model state for the schedule's nodal injections."""
    n = problem.sens.bus_ids.size
    pn_ = np.zeros((problem.n_steps, n))
    qn_ = np.zeros((problem.n_steps, n))
    for v, c in enumerate(problem.ev_col):
        pn_[:, c] += s.p_kw[:, v]
        qn_[:, c] += s.q_kvar[:, v]
    return problem.sens.predict(problem.net_p_kw + pn_, problem.net_q_kvar + qn_)


def test_validate_names_field(mv_sens):
    p = mv_problem(mv_sens)
    with pytest.raises(ValueError, match="soc0"):
        replace(p, soc0=p.soc0 + 2).validate()
    with pytest.raises(ValueError, match="plugged"):
        replace(p, plugged=p.plugged[:, :2]).validate()
    with pytest.raises(ValueError, match="vm_min_pu"):
        GridBounds(1.1, 1.0).validate()
    with pytest.raises(ValueError, match="name"):
        StrategyOptions(name="v3g").validate()
    with pytest.raises(ValueError, match="cone"):
        StrategyOptions(cone="soc", solver="piqp").validate()


@pytest.mark.parametrize("name", OPT)
def test_matrix_equals_pyomo(mv_sens, name):
    """PIQP and Clarabel (matrix path) equal HiGHS (pyomo path), same 16-gon."""
    p = mv_problem(mv_sens)
    ref = solve(p, StrategyOptions(name=name, solver="highs"), path="pyomo")
    assert ref.status == "optimal" and not ref.fallback
    for solver in ("piqp", "clarabel"):
        s = solve(p, StrategyOptions(name=name, solver=solver))
        assert s.status == "optimal", s.message
        assert s.objective == pytest.approx(ref.objective, rel=1e-6)


def test_soft_equals_pyomo(mv_sens):
    """With slack in use (base load breaks the band) both paths agree too."""
    p = mv_problem(mv_sens, load=0.8)
    ref = solve(p, StrategyOptions(name="smart_q", solver="highs"), path="pyomo")
    s = solve(p, StrategyOptions(name="smart_q"))
    assert s.soft_violation_max > 1e-3
    assert s.soft_violation_max == pytest.approx(ref.soft_violation_max, rel=1e-5)
    assert s.objective == pytest.approx(ref.objective, rel=1e-6)


def one_ev(sens, soc_target, window=(3, 12), n_steps=16):
    plugged = np.zeros((n_steps, 1), bool)
    plugged[window[0]:window[1]] = True
    return ChargingProblem(
        dt_h=0.25, ev_ids=np.array([7]), ev_col=np.array([sens.column(5)]),
        capacity_kwh=np.array([16.0]), s_max_kva=np.array([3.6]), efficiency=np.array([0.9]),
        soc0=np.array([0.5]), soc_target=np.array([soc_target]), soc_min=np.array([0.0]),
        soc_max=np.array([1.0]), can_discharge=np.array([True]), can_reactive=np.array([True]),
        plugged=plugged, net_p_kw=np.tile(sens.p0_kw, (n_steps, 1)),
        net_q_kvar=np.tile(sens.q0_kvar, (n_steps, 1)), sens=sens,
        limits=GridBounds(0.5, 1.5, 10.0, 10.0),
    )


def test_one_ev_closed_form(mv_sens):
    """One EV, limits far away: smart charging = full power from plug-in (eq. (13))."""
    gain = 0.9 * 0.25 / 16  # SOC per kW-step, eq. (10)
    # (a) target out of reach in the window: full power at every plugged step, any k
    p = one_ev(mv_sens, 1.0, window=(3, 9))
    expect = np.where(p.plugged[:, 0], 3.6, 0.0)
    soc_end = 0.5 + 6 * 3.6 * gain
    objective = 3 * 0.25 + sum((0.5 + i * 3.6 * gain - 1) ** 2 for i in range(1, 7)) + 7 * (soc_end - 1) ** 2
    for name, solver, path in (("smart", "piqp", "matrix"), ("smart_q", "clarabel", "matrix"),
                               ("v2g_q", "piqp", "matrix"), ("v2g", "highs", "pyomo")):
        s = solve(p, StrategyOptions(name=name, solver=solver), path=path)
        np.testing.assert_allclose(s.p_kw[:, 0], expect, atol=1e-6)
        assert s.soc[-1, 0] == pytest.approx(soc_end, abs=1e-6)
        assert s.objective == pytest.approx(objective + 1e-4 * 6 * 3.6, abs=1e-6)
    # (b) reachable target, k = 0: 0.4 needs 28.44 kW-steps, 7 full steps + 3.244 kW
    p = one_ev(mv_sens, 0.9)
    expect = np.zeros(16)
    expect[3:10] = 3.6
    expect[10] = (0.4 - 7 * 3.6 * gain) / gain
    p_unc, soc_unc = uncoordinated(p)
    np.testing.assert_allclose(p_unc[:, 0], expect, atol=1e-12)
    assert soc_unc[-1, 0] == pytest.approx(0.9, abs=1e-12)
    # (V2G with k = 0 is the degenerate relaxation of eq. (9): P+ and P- together
    # burn energy for free; eq. (11) needs k > 0 there)
    for name in ("smart", "smart_q"):
        s = solve(p, StrategyOptions(name=name, k_weight=0.0))
        # the objective is flat (quadratic) at the target: the SOC is pinned to the
        # solver tolerance, the split of the last kWh over two steps only to its root
        np.testing.assert_allclose(s.soc[:, 0], soc_unc[:, 0], atol=1e-4)
        np.testing.assert_allclose(s.p_kw[:10, 0], expect[:10], atol=1e-6)
        assert s.objective == pytest.approx(md.objective_value(p, p_unc, 0.0), abs=1e-7)


@pytest.mark.parametrize("name", ("uncoordinated",) + OPT)
def test_ev_physics_and_grid_limits(mv_sens, name):
    p = mv_problem(mv_sens, n_per_bus=4, n_steps=16)
    runs = [StrategyOptions(name=name)]
    if name != "uncoordinated":
        runs.append(StrategyOptions(name=name, solver="clarabel", cone="soc"))
    for opts in runs:
        s = solve(p, opts)
        assert not s.fallback
        assert_ev_feasible(p, s, name)
        if name == "uncoordinated":
            continue
        assert s.soft_violation_max == 0.0
        g = linear_grid(p, s)
        assert g.vm_pu.min() >= p.limits.vm_min_pu - 1e-7
        assert g.vm_pu.max() <= p.limits.vm_max_pu + 1e-7
        s_line, use = md.line_s_max_kva(p)
        assert np.all(np.hypot(g.line_p_kw, g.line_q_kvar)[:, use] <= s_line[use] * (1 + 1e-7))
        assert np.all(np.hypot(g.trafo_p_kw, g.trafo_q_kvar) <= md.trafo_s_max_kva(p) * (1 + 1e-7))


def test_uncoordinated_breaks_band_smart_keeps_it(mv_sens):
    p = mv_problem(mv_sens, n_per_bus=25, n_steps=16)
    unc = solve(p, StrategyOptions(name="uncoordinated"))
    assert linear_grid(p, unc).vm_pu.min() < p.limits.vm_min_pu - 1e-3
    smart = solve(p, StrategyOptions(name="smart"))
    assert linear_grid(p, smart).vm_pu.min() >= p.limits.vm_min_pu - 1e-7
    smart_q = solve(p, StrategyOptions(name="smart_q"))
    assert smart_q.objective < smart.objective  # reactive support charges faster


def test_v2g_idle_when_not_useful(mv_sens):
    """Loose grid limits: discharging only loses energy, V2G must not use it."""
    p = replace(mv_problem(mv_sens, n_per_bus=4, n_steps=16), limits=GridBounds(0.5, 1.5, 10.0, 10.0))
    for name in ("v2g", "v2g_q"):
        s = solve(p, StrategyOptions(name=name))
        assert np.maximum(-s.p_kw, 0).sum() * p.dt_h < 1e-4


def test_infeasible_base_load_soft(mv_sens):
    p = mv_problem(mv_sens, load=1.0)
    assert md.grid_constants(p)["vm"].min() < p.limits.vm_min_pu
    for name in OPT:
        s = solve(p, StrategyOptions(name=name))
        assert s.status == "optimal" and not s.fallback
        assert s.soft_violation_max > 0.0
        kind, bus, step, amount = s.soft_violation_where[0]
        assert kind in ("vm_min", "line", "trafo") and amount == s.soft_violation_max
        assert_ev_feasible(p, s, name)
    hard = solve(p, StrategyOptions(name="smart", soft_limits="never"))
    assert hard.fallback and hard.status == "infeasible"
    assert_ev_feasible(p, hard, "smart")


@pytest.mark.parametrize("solver", ("piqp", "clarabel", "highs"))
def test_time_limit_gives_fallback(mv_sens, solver):
    p = mv_problem(mv_sens, n_per_bus=4, n_steps=16)
    path = "pyomo" if solver == "highs" else "matrix"
    s = solve(p, StrategyOptions(name="smart_q", solver=solver, time_limit_s=1e-6), path=path)
    assert s.fallback and s.status == "time_limit"
    assert_ev_feasible(p, s, "smart")
    g = linear_grid(p, s)
    assert g.vm_pu.min() >= p.limits.vm_min_pu - 1e-7


def test_safe_fallback_respects_limits(mv_sens):
    p = mv_problem(mv_sens, n_per_bus=25, n_steps=16)
    pw, soc = safe_fallback(p)
    s = replace(solve(p, StrategyOptions(name="uncoordinated")), p_kw=pw, soc=soc)
    assert linear_grid(p, s).vm_pu.min() >= p.limits.vm_min_pu - 1e-7
    assert np.all(pw >= 0) and np.all(pw <= 3.6)


def test_receding_horizon(mv_sens):
    p = mv_problem(mv_sens, n_per_bus=3, n_steps=12)
    opts = StrategyOptions(name="v2g_q")
    rh = RecedingHorizon(p, opts)
    day_ahead = solve(p, opts)
    first = rh.solve_from(0)
    np.testing.assert_allclose(first.p_kw, day_ahead.p_kw, atol=1e-5)
    # from step 5 with the day-ahead SOC: the tail of the plan is optimal (reused
    # without solving), and a fresh solve finds the same objective
    tail = md.objective_value(
        replace(p, soc0=day_ahead.soc[5], plugged=p.plugged[5:], net_p_kw=p.net_p_kw[5:],
                net_q_kvar=p.net_q_kvar[5:]), day_ahead.p_kw[5:], opts.k_weight)
    later = rh.solve_from(5, soc_now=day_ahead.soc[5])
    assert later.p_kw.shape == (7, p.n_evs) and later.solve_s == 0.0 and rh.n_reused == 1
    assert later.objective == pytest.approx(tail, rel=1e-9)
    fresh = RecedingHorizon(p, opts, reuse=False).solve_from(5, soc_now=day_ahead.soc[5])
    assert fresh.objective == pytest.approx(tail, rel=1e-6)
    run = run_receding(p, opts, arrival_known=False)
    assert run.n_fallback == 0
    sched = replace(day_ahead, p_kw=run.p_kw, q_kvar=run.q_kvar, soc=run.soc)
    assert_ev_feasible(p, sched, "v2g_q")
    with pytest.raises(ValueError, match="k must be"):
        rh.solve_from(12)


@pytest.mark.parametrize("name", OPT)
def test_move_blocking(mv_sens, name):
    """Move blocking: a restriction, so feasible for the full problem and never better."""
    p = mv_problem(mv_sens, n_per_bus=4, n_steps=16)
    full = solve(p, StrategyOptions(name=name))
    same = solve(p, StrategyOptions(name=name, fine_steps=16))
    assert same.objective == pytest.approx(full.objective, rel=1e-9)
    opts = StrategyOptions(name=name, fine_steps=4, block_steps=4)
    s = solve(p, opts)
    assert s.status == "optimal" and not s.fallback
    assert_ev_feasible(p, s, name)
    g = linear_grid(p, s)
    assert g.vm_pu.min() >= p.limits.vm_min_pu - 1e-7
    assert g.vm_pu.max() <= p.limits.vm_max_pu + 1e-7
    s_line, use = md.line_s_max_kva(p)
    assert np.all(np.hypot(g.line_p_kw, g.line_q_kvar)[:, use] <= s_line[use] * (1 + 1e-7))
    # constant over each block of 4 steps after the first 4; zero in partial blocks
    for b0 in (4, 8, 12):
        blk_p, blk_q = s.p_kw[b0:b0 + 4], s.q_kvar[b0:b0 + 4]
        np.testing.assert_allclose(blk_p, np.broadcast_to(blk_p[:1], blk_p.shape), atol=1e-9)
        np.testing.assert_allclose(blk_q, np.broadcast_to(blk_q[:1], blk_q.shape), atol=1e-9)
        partial = ~p.plugged[b0:b0 + 4].all(axis=0)
        assert np.all(blk_p[:, partial] == 0) and np.all(blk_q[:, partial] == 0)
    assert s.objective >= full.objective - 1e-6


def test_move_blocking_receding(mv_sens):
    """Closed loop with move blocking: feasible, objective close to the exact loop."""
    p = mv_problem(mv_sens, n_per_bus=3, n_steps=16)
    exact = run_receding(p, StrategyOptions(name="v2g_q"), arrival_known=False)
    opts = StrategyOptions(name="v2g_q", fine_steps=2, block_steps=4)
    run = run_receding(p, opts, arrival_known=False)
    assert run.n_fallback == 0 and exact.n_fallback == 0
    sched = replace(solve(p, StrategyOptions(name="uncoordinated")), p_kw=run.p_kw, q_kvar=run.q_kvar,
                    soc=run.soc)
    assert_ev_feasible(p, sched, "v2g_q")
    assert linear_grid(p, sched).vm_pu.min() >= p.limits.vm_min_pu - 1e-7
    j_exact = md.objective_value(p, exact.p_kw, 1e-4)
    j_block = md.objective_value(p, run.p_kw, 1e-4)
    assert j_exact - 1e-6 <= j_block <= j_exact * 1.01
    with pytest.raises(ValueError, match="fine_steps"):
        StrategyOptions(fine_steps=0).validate()
    with pytest.raises(ValueError, match="fine_steps"):
        StrategyOptions(fine_steps=4, solver="highs").validate()


@pytest.mark.parametrize("name", OPT)
def test_no_aggregates_on_steps_without_rows_is_exact(mv_sens, name, monkeypatch):
    """The second build pass (no aggregates/Q on steps without grid rows) keeps the optimum."""
    from simulators.scheduler import matrix_model as mm

    p = mv_problem(mv_sens, n_per_bus=4, n_steps=16)
    monkeypatch.setattr(mm, "_SECOND_PASS_SHARE", 1.0)
    qp = mm.build(p, StrategyOptions(name=name))
    assert not qp.row_steps.all()  # the case has steps without grid rows
    pruned = solve(p, StrategyOptions(name=name))
    monkeypatch.setattr(mm, "_SECOND_PASS_SHARE", -1.0)
    full = solve(p, StrategyOptions(name=name))
    assert pruned.status == full.status == "optimal"
    assert pruned.objective == pytest.approx(full.objective, rel=1e-6)
