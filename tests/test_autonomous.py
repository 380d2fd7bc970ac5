"""Autonomous EVs (seed 001, eq. (12)) and Metrics 1-3 (eqs. (13)-(14))."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from simulators.grid.sensitivity import Sensitivities
from simulators.scheduler.autonomous import (
    AutonomousOptions,
    drive_energy_kwh,
    enumerate_assignments,
    preprocess,
    solve_autonomous,
)
from simulators.scheduler.metrics import all_metrics, metric1, metric2, metric3_hours
from simulators.scheduler.problem import ChargingProblem, GridBounds


# ----------------------------------------------------------------------- fixtures
def toy_sens(a=2e-4, b=6e-4):
    """Radial slack - bus 1 (near) - bus 2 (far); voltage drops a, a + b [pu/kW]."""
    dvm = -np.array([[a, a], [a, a + b]])
    z2, z1 = np.zeros((2, 2)), np.zeros((1, 2))
    return Sensitivities(
        bus_ids=np.array([1, 2]), p0_kw=np.zeros(2), q0_kvar=np.zeros(2), vm0_pu=np.ones(2),
        dvm_dp=dvm, dvm_dq=0.5 * dvm, line_ids=np.array([0, 1]), i0_ka=np.zeros(2),
        i_max_ka=np.array([1.0, 1.0]), di_dp=np.array([[1.44e-3, 1.44e-3], [0.0, 1.44e-3]]),
        di_dq=z2, pl0_kw=np.zeros(2), ql0_kvar=np.zeros(2),
        dpl_dp=np.array([[1.0, 1.0], [0.0, 1.0]]), dpl_dq=z2, dql_dp=z2,
        dql_dq=np.array([[1.0, 1.0], [0.0, 1.0]]), vm_from0_pu=np.ones(2),
        trafo_ids=np.array([0]), pt0_kw=np.zeros(1), qt0_kvar=np.zeros(1),
        st_max_kva=np.array([1e3]), dpt_dp=np.ones((1, 2)), dpt_dq=z1, dqt_dp=z1,
        dqt_dq=np.ones((1, 2)),
    )


def toy_problem(home, soc0, T=5, vmin=0.993, net=(1.0, 1.0), plugged=None):
    """Tiny case: 3.6 kW chargers, 16 kWh, eta 0.9, 1-h steps, target 1."""
    home = np.asarray(home, dtype=int)
    V = home.size
    return ChargingProblem(
        dt_h=1.0, ev_ids=np.arange(V), ev_col=home, capacity_kwh=np.full(V, 16.0),
        s_max_kva=np.full(V, 3.6), efficiency=np.full(V, 0.9), soc0=np.asarray(soc0, float),
        soc_target=np.ones(V), soc_min=np.zeros(V), soc_max=np.ones(V),
        can_discharge=np.zeros(V, bool), can_reactive=np.zeros(V, bool),
        plugged=np.ones((T, V), bool) if plugged is None else plugged,
        net_p_kw=np.tile(np.asarray(net, float), (T, 1)), net_q_kvar=np.zeros((T, 2)),
        sens=toy_sens(), limits=GridBounds(vmin, 1.05), line_vn_kv=np.full(2, 0.4),
    )


E_STAR = 0.06  # [kWh], 375 m x 0.160 kWh/km


# ------------------------------------------------------------- E* from line lengths
def test_drive_energy_from_cigre_lv_line_lengths():
    import pandapower.networks as pn

    from simulators.scheduler.autonomous import candidate_distances_km

    net = pn.create_cigre_network_lv()
    names = ["R1", "R11", "R15", "R16", "R17", "R18"]
    bus = {n[4:]: int(b) for b, n in net.bus.name.items()}
    ids = [bus[n] for n in names]
    d = candidate_distances_km(net, ids)
    assert d[0, 5] == pytest.approx(0.345)  # R1-R18: seed 001's 345 m
    # ...but the longest pairwise distance among the candidates is R15-R18
    assert d.max() == pytest.approx(0.375)
    assert d[2, 5] == pytest.approx(0.375)
    assert drive_energy_kwh(net, ids, 0.160, reference_bus=bus["R1"]) == pytest.approx(0.345 * 0.160)
    assert drive_energy_kwh(net, ids, 0.160) == pytest.approx(0.375 * 0.160)


# ----------------------------------------------------------------- pre-processing
def test_preprocess_eq_12g_12h():
    soc0 = np.array([0.002, 0.5, 0.999])
    mov, s0, tgt = preprocess(soc0, np.array([1.0, 0.8, 1.0]), np.full(3, 16.0), 0.064)
    de = 0.064 / 16
    assert mov.tolist() == [False, True, True]
    assert s0 == pytest.approx([0.002, 0.5 - de, 0.999 - de])
    assert tgt == pytest.approx([1.0, 0.8 + de, 1.0])


# --------------------------------------------------- forced home == smart charging
def test_forced_home_equals_smart_charging():
    strategies = pytest.importorskip("simulators.scheduler.strategies")
    from simulators.scheduler.problem import StrategyOptions

    pr = toy_problem(home=[1, 1, 0, 1], soc0=[0.3, 0.5, 0.45, 0.6], vmin=0.99)
    none = np.zeros(pr.n_evs, bool)
    # this module's own pyomo model (HiGHS QP), not the smart strategy it can call
    mine = solve_autonomous(pr, [0, 1], E_STAR, AutonomousOptions(objective="quadratic", qp_solver="highs",
                                                                  mip_rel_gap=1e-9), allow_move=none)
    assert mine.solver == "highs"
    smart = strategies.solve(pr, StrategyOptions(name="smart", k_weight=0.0))
    assert smart.status == "optimal" and not smart.fallback
    j_smart = float(np.sum((smart.soc[1:] - 1.0) ** 2))
    assert mine.schedule.objective == pytest.approx(j_smart, rel=1e-5, abs=1e-6)
    # grid binds: otherwise the comparison would be trivial
    assert mine.schedule.objective > float(np.sum((_unconstrained_soc(pr)[1:] - 1.0) ** 2)) + 1e-3
    assert not mine.moved.any() and (mine.charge_col == pr.ev_col).all()


def _unconstrained_soc(pr):
    gain = 0.9 / 16.0
    p = np.full((pr.n_steps, pr.n_evs), 3.6)
    soc = np.minimum(pr.soc0 + np.vstack([np.zeros(pr.n_evs), np.cumsum(p * gain, axis=0)]), 1.0)
    return soc


def test_forced_home_pwl_is_exact_at_breakpoints_and_close():
    pr = toy_problem(home=[1, 1, 1], soc0=[0.3, 0.5, 0.6])
    none = np.zeros(3, bool)
    q = solve_autonomous(pr, [0, 1], E_STAR, AutonomousOptions(objective="quadratic", qp_solver="highs",
                                                               mip_rel_gap=1e-9), allow_move=none)
    lin = solve_autonomous(pr, [0, 1], E_STAR, AutonomousOptions(objective="pwl", polish=False),
                           allow_move=none)
    # PWL over-estimates the square between breakpoints: its optimum is an upper
    # bound on the true one, and the true objective of its plan is >= the QP's
    assert lin.model_objective >= q.schedule.objective - 1e-7
    assert lin.schedule.objective >= q.schedule.objective - 1e-7
    assert lin.schedule.objective <= q.schedule.objective * 1.02


# ------------------------------------------------------------ exhaustive enumeration
@pytest.mark.parametrize("objective,mccormick", [("pwl", "compact"), ("pwl", "paper"),
                                                 ("quadratic", "compact")])
def test_tiny_case_matches_enumeration(objective, mccormick):
    if objective == "quadratic":
        pytest.importorskip("pyscipopt")  # MIQP needs SCIP
    # two nodes, three EVs parked at the far node, voltage binds
    pr = toy_problem(home=[1, 1, 1], soc0=[0.35, 0.5, 0.6], vmin=0.993)
    opts = AutonomousOptions(objective=objective, mip_rel_gap=1e-9, polish=False, mccormick=mccormick,
                             cut_sum_z=mccormick == "compact")
    res = solve_autonomous(pr, [0, 1], E_STAR, opts)
    best, n = enumerate_assignments(pr, [0, 1], E_STAR, opts)
    assert n == 2**3
    assert res.model_objective == pytest.approx(best.model_objective, rel=1e-6, abs=1e-7)
    assert res.moved.any()  # moving to the near node pays off here
    # brute force by hand too: every assignment's optimum >= the MIP's
    for combo in itertools.product([0, 1], repeat=3):
        sub = dataclasses.replace(pr, ev_col=np.array(combo))
        mov, s0, tgt = preprocess(pr.soc0, pr.soc_target, pr.capacity_kwh, E_STAR)
        sub = dataclasses.replace(sub, soc0=s0, soc_target=tgt)
        r = solve_autonomous(sub, [], 0.0, opts, allow_move=np.zeros(3, bool))
        n_moved = int(np.sum(np.array(combo) != pr.ev_col))
        assert r.model_objective + opts.move_penalty * n_moved >= res.model_objective - 1e-6


def test_polished_pwl_matches_miqp_and_tangent_bound():
    pytest.importorskip("pyscipopt")  # MIQP needs SCIP
    pr = toy_problem(home=[1, 1, 1], soc0=[0.35, 0.5, 0.6], vmin=0.993)
    miqp = solve_autonomous(pr, [0, 1], E_STAR, AutonomousOptions(objective="quadratic", mip_rel_gap=1e-9))
    pol = solve_autonomous(pr, [0, 1], E_STAR, AutonomousOptions(objective="pwl", mip_rel_gap=1e-9,
                                                                 exact_drive_energy=False))
    exact = solve_autonomous(pr, [0, 1], E_STAR, AutonomousOptions(objective="pwl", mip_rel_gap=1e-9))
    # charging the outbound leg only to the EVs that move can only help
    assert exact.schedule.objective <= pol.schedule.objective + 1e-7
    low = solve_autonomous(pr, [0, 1], E_STAR, AutonomousOptions(objective="pwl_lower", mip_rel_gap=1e-9))
    assert pol.schedule.status == "optimal" and "milp_objective" in pol.extra
    # polished schedule is the exact QP optimum at the MILP's nodes: never better
    # than the MIQP, and the tangent MILP bounds the MIQP from below
    assert pol.model_objective >= miqp.model_objective - 1e-6
    assert low.best_bound <= miqp.model_objective + 1e-6
    assert pol.model_objective <= miqp.model_objective * 1.01


@pytest.mark.parametrize("exact", [True, False])
def test_low_soc_ev_stays_home_and_energy_balance(exact):
    de = E_STAR / 16.0
    pr = toy_problem(home=[1, 1, 1], soc0=[0.5 * de, 0.5, 0.6], vmin=0.993)
    res = solve_autonomous(pr, [0, 1], E_STAR, AutonomousOptions(exact_drive_energy=exact))
    assert res.moved.any()
    assert not res.movable[0] and res.charge_col[0] == 1
    assert res.movable[1:].all()
    s = res.schedule
    # grid limits of the linear model hold
    ev = np.zeros((pr.n_steps, 2))
    np.add.at(ev.T, res.charge_col, s.p_kw.T)
    vm = pr.sens.predict(pr.net_p_kw + ev, pr.net_q_kvar).vm_pu
    assert vm.min() >= pr.limits.vm_min_pu - 1e-7
    # energy balance per EV: grid energy x eta = SOC gain + drive energy
    e_grid = s.p_kw.sum(axis=0) * pr.dt_h * 0.9
    # outbound leg (12g): every movable EV in the paper's bookkeeping, only the
    # moved ones with exact_drive_energy; return leg (12i): moved EVs
    outbound = res.moved if exact else res.movable
    drive = np.where(outbound, E_STAR, 0.0) + np.where(res.moved, E_STAR, 0.0)
    gain = (res.soc_final - pr.soc0) * 16.0
    assert e_grid == pytest.approx(gain + drive, abs=1e-7)
    assert np.all(s.p_kw >= 0) and np.all(s.p_kw <= 3.6 + 1e-9)
    assert np.all(s.soc <= 1 + 1e-9)


def test_plug_window_respected():
    plugged = np.ones((5, 2), bool)
    plugged[3:, 1] = False
    pr = toy_problem(home=[1, 1], soc0=[0.4, 0.4], plugged=plugged)
    res = solve_autonomous(pr, [0, 1], E_STAR)
    assert np.all(res.schedule.p_kw[3:, 1] == 0.0)


def test_infeasible_base_load_is_soft():
    pr = toy_problem(home=[1, 1], soc0=[0.4, 0.5], net=(1.0, 30.0), vmin=0.99)
    res = solve_autonomous(pr, [0, 1], E_STAR)
    assert res.schedule.soft_violation_max > 0
    assert res.schedule.soft_violation_where[0][0] == "vm_min"
    # only violation added by EVs is penalised: no 1e6 x base-violation constant,
    # and charging cannot add any here (every EV lowers the far-bus voltage)
    assert res.model_objective == pytest.approx(
        res.true_objective_model_targets + 1e-3 * int(res.moved.sum()), abs=1e-5)
    assert np.all(res.schedule.p_kw <= 1e-6)


def test_invalid_options_raise():
    with pytest.raises(ValueError):
        AutonomousOptions(objective="cubic").validate()
    with pytest.raises(ValueError):
        solve_autonomous(toy_problem([1], [0.5]), [0, 1], -1.0)


# ------------------------------------------------------------------------ metrics
def test_metrics_on_hand_arrays():
    soc = np.array([[0.5, 0.8], [0.7, 1.0], [0.9, 1.0], [1.0, 1.0]])
    assert metric1(soc, 1.0) == pytest.approx(0.09 + 0.01 + 0.0)
    assert metric2(soc[-1], 1.0) == pytest.approx(0.0)
    assert metric2(np.array([0.99, 0.97]), np.array([1.0, 1.0])) == pytest.approx(0.04)
    assert metric3_hours(soc, 1.0, 1.0) == 3.0
    assert metric3_hours(soc, 1.0, 0.25) == 0.75
    assert metric3_hours(soc, 0.95, 1.0) == 3.0
    assert metric3_hours(soc[:3], 1.0, 1.0) == float("inf")
    assert metric3_hours(soc - 5e-4, 1.0, 1.0) == 3.0  # within the 1e-3 tolerance
    m = all_metrics(soc, 1.0, 1.0, soc_final=np.array([0.99, 0.97]))
    assert m.metric2_mean_percent == pytest.approx(2.0)
    assert m.metric2_max_percent == pytest.approx(3.0)
    with pytest.raises(ValueError):
        metric1(np.array([1.0, 2.0]), 1.0)
