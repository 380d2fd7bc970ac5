"""Tests of seed 003's flexibility maximisation on the linearised grid (simulators/scheduler/flexibility.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandapower as pp
import pandapower.networks as pn
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulators.grid.sensitivity import compute_sensitivities
from simulators.scheduler.flexibility import (
    FlexOptions, fleet_data, solve_flex, unreachable_departures,
)
from simulators.scheduler.problem import ChargingProblem, GridBounds

WIDE = GridBounds(0.5, 1.5, 10.0, 10.0)


@pytest.fixture(scope="module")
def lv_sens():
    """Sensitivities of CIGRE LV (residential feeder) at its nominal load."""
    net = pn.create_cigre_network_lv()
    pp.runpp(net)
    return compute_sensitivities(net)


def fleet(sens, *, cap, p_max, e0, e_dep, plugged, dt_h=1.0, cols=None, load=0.0,
          limits=WIDE, e_max=None):
    """ChargingProblem in energies: capacity, charger, arrival/departure energy [kWh, kW]."""
    cap = np.atleast_1d(np.asarray(cap, dtype=float))
    v = cap.size
    plugged = np.asarray(plugged, dtype=bool).reshape(-1, v)
    cols = np.zeros(v, dtype=int) if cols is None else np.asarray(cols, dtype=int)
    e_max = cap if e_max is None else np.atleast_1d(np.asarray(e_max, dtype=float))
    n_steps = plugged.shape[0]
    return ChargingProblem(
        dt_h=dt_h, ev_ids=np.arange(v), ev_col=cols, capacity_kwh=cap,
        s_max_kva=np.broadcast_to(np.asarray(p_max, dtype=float), (v,)).copy(),
        efficiency=np.ones(v), soc0=np.broadcast_to(np.asarray(e0) / cap, (v,)).copy(),
        soc_target=np.broadcast_to(np.asarray(e_dep) / cap, (v,)).copy(), soc_min=np.zeros(v),
        soc_max=e_max / cap, can_discharge=np.zeros(v, bool), can_reactive=np.zeros(v, bool),
        plugged=plugged, net_p_kw=np.tile(sens.p0_kw * load, (n_steps, 1)),
        net_q_kvar=np.tile(sens.q0_kvar * load, (n_steps, 1)), sens=sens, limits=limits)


def closed_form_two_steps(p_max, e0, e_hi, e_req, n=401):
    """Optimum of eq. (4) with C = 1 for one EV and two 1-h steps, by eqs. (2)-(3).

    For every schedule (a, b) on a fine grid meeting eq. (19), the flexibility of each
    step is the closed form of eqs. (2) (with E_t, as eq. (22)) and (3); the maximum
    over the grid is the optimum (the objective is piecewise linear with kinks on
    the grid when the numbers are multiples of the grid spacing).
    """
    a, b = np.meshgrid(np.linspace(0, p_max, n), np.linspace(0, p_max, n), indexing="ij")
    e1, e2 = e0 + a, e0 + a + b
    emin1 = max(e0, e_req - p_max)        # eq. (1): one full-power step left after instant 1
    emin2 = e_req
    ok = (e2 >= e_req - 1e-12) & (e2 <= e_hi + 1e-12)
    up = np.minimum(p_max - a, e_hi - e1) + np.minimum(p_max - b, e_hi - e2)
    down = np.minimum(a, e1 - emin1) + np.minimum(b, e2 - emin2)
    return float(np.max(np.where(ok, up + down, -np.inf)))


def test_one_ev_two_steps_hand_solved(lv_sens):
    """Pbar = 4 kW, E0 = 0, Ereq = 4 kWh, dt = 1 h: per step up + down <= Pbar.

    Capacity 10 kWh: both steps reach up + down = Pbar, optimum 8. Capacity 5 kWh:
    step 1 gives Pbar (charge 4 kW, down 4, up 0 ... any a), step 2 only
    Ebar - Ereq = 1 kW (the energy between the two curves), optimum 5.
    """
    for e_hi, expect in ((10.0, 8.0), (5.0, 5.0)):
        p = fleet(lv_sens, cap=e_hi, p_max=4.0, e0=0.0, e_dep=4.0, plugged=[[True], [True]])
        plan = solve_flex(p)
        assert plan.status == "optimal" and not plan.fallback
        assert plan.objective == pytest.approx(expect, abs=1e-7)
        assert plan.objective == pytest.approx(closed_form_two_steps(4.0, 0.0, e_hi, 4.0), abs=1e-7)
        np.testing.assert_allclose(fleet_data(p).e_min_kwh[:, 0], [0.0, 0.0, 4.0])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(p_max=st.sampled_from([2.0, 3.7, 4.0, 11.0]), e0=st.integers(0, 8),
       need=st.integers(0, 12), room=st.integers(0, 20))
def test_one_ev_two_steps_closed_form(lv_sens, p_max, e0, need, room):
    """LP optimum equals the closed form of eqs. (2)-(3) over all two-step schedules."""
    e_req = e0 + min(need, 2 * p_max)
    e_hi = e_req + room
    p = fleet(lv_sens, cap=max(e_hi, 1.0), p_max=p_max, e0=float(e0), e_dep=float(e_req),
              plugged=[[True], [True]], e_max=e_hi)
    plan = solve_flex(p)
    grid = closed_form_two_steps(p_max, float(e0), float(e_hi), float(e_req), n=int(4 * p_max * 10) + 1)
    assert plan.objective == pytest.approx(grid, abs=1e-6)


def random_fleet(sens, seed, n_ev, n_steps=24, load=1.0):
    rng = np.random.default_rng(seed)
    cap = rng.choice([40.0, 58.0, 77.0], n_ev)
    p_max = rng.choice([3.7, 11.0], n_ev)
    arr = rng.integers(0, n_steps // 2, n_ev)
    dep = np.minimum(arr + rng.integers(2, n_steps, n_ev), n_steps)
    t = np.arange(n_steps)[:, None]
    plugged = (t >= arr) & (t < dep)
    plugged[:, rng.random(n_ev) < 0.1] = False            # some EVs never plug in
    e0 = cap * rng.uniform(0.1, 0.6, n_ev)
    eta = rng.uniform(0.9, 1.0, n_ev)
    reach = eta * p_max * 0.5 * plugged.sum(axis=0)
    e_dep = np.minimum(e0 + rng.uniform(0, 1, n_ev) * reach, 0.95 * cap)
    cols = rng.integers(0, sens.bus_ids.size, n_ev)
    shape = 0.5 + 0.5 * np.sin(np.linspace(0, np.pi, n_steps))[:, None]
    return ChargingProblem(
        dt_h=0.5, ev_ids=np.arange(n_ev), ev_col=cols, capacity_kwh=cap, s_max_kva=p_max,
        efficiency=eta, soc0=e0 / cap, soc_target=e_dep / cap,
        soc_min=np.zeros(n_ev), soc_max=np.full(n_ev, 0.95).clip(e0 / cap, 1.0),
        can_discharge=np.zeros(n_ev, bool), can_reactive=np.zeros(n_ev, bool), plugged=plugged,
        net_p_kw=sens.p0_kw * load * shape, net_q_kvar=sens.q0_kvar * load * shape, sens=sens,
        limits=GridBounds(0.92, 1.08, 1.0, 1.0))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), n_ev=st.integers(1, 12), pf=st.sampled_from([1.0, 0.95]),
       c_up=st.sampled_from([1.0, 0.3]))
def test_random_fleets_respect_ev_limits_in_both_activations(lv_sens, seed, n_ev, pf, c_up):
    """Every plan: charger, capacity and min-energy curve hold in baseline and both activations."""
    p = random_fleet(lv_sens, seed, n_ev)
    opts = FlexOptions(ev_power_factor=pf, c_up=c_up)
    plan = solve_flex(p, opts)
    fd = fleet_data(p, pf)
    plugged = p.plugged
    eta = p.efficiency
    for scen in ("baseline", "down", "up"):
        pw = plan.activated_p_kw(scen)
        assert np.all(pw >= -1e-9) and np.all(pw <= fd.p_max_kw + 1e-7)        # no discharge, eq. (20)
        assert np.all(pw[~plugged] == 0)                                          # unplugged: nothing
        e_after = plan.e_kwh[:-1] + eta * pw * p.dt_h                             # one-step activation
        assert np.all(e_after <= fd.e_hi_kwh + 1e-6)                              # eqs. (18), (22)
        assert np.all(e_after >= plan.e_min_kwh[1:] - 1e-6) or plan.fallback       # eqs. (1), (24)
    assert np.all(plan.p_up_kw[~plugged] == 0) and np.all(plan.p_down_kw[~plugged] == 0)
    last = fd.last_step
    has = last >= 0
    assert np.all(plan.e_kwh[last[has] + 1, np.flatnonzero(has)] >= fd.e_dep_kwh[has] - 1e-6)  # eq. (19)
    if plan.fallback:
        return
    assert plan.status == "optimal"
    # both activations inside the linearised limits wherever the idle grid was
    n = p.sens.bus_ids.size
    for scen in ("down", "up"):
        pw = plan.activated_p_kw(scen)
        nodal = np.zeros((p.n_steps, n))
        np.add.at(nodal.T, p.ev_col, pw.T)
        pred = p.sens.predict(p.net_p_kw + nodal, p.net_q_kvar + nodal * plan.q_per_p)
        idle = p.sens.predict(p.net_p_kw, p.net_q_kvar)
        lo = np.minimum(p.limits.vm_min_pu, idle.vm_pu)
        hi = np.maximum(p.limits.vm_max_pu, idle.vm_pu)
        assert np.all(pred.vm_pu >= lo - 1e-6 - plan.soft_violation_max)
        assert np.all(pred.vm_pu <= hi + 1e-6 + plan.soft_violation_max)
        s_tr = np.hypot(pred.trafo_p_kw, pred.trafo_q_kvar)
        assert np.all(s_tr <= np.maximum(p.sens.st_max_kva, np.hypot(idle.trafo_p_kw, idle.trafo_q_kvar)) + 1e-6)


def test_grid_limit_binds_and_upward_exceeds_downward(lv_sens):
    """A tight transformer limit caps the full-upward activation's aggregate power."""
    p = random_fleet(lv_sens, 1, 12, load=0.2)
    loose = solve_flex(p)
    st_kva = float(lv_sens.st_max_kva[0])
    pt0 = float(np.max(p.sens.predict(p.net_p_kw, p.net_q_kvar).trafo_p_kw))
    tight = solve_flex(replace(p, limits=replace(p.limits, trafo_loading_max=(pt0 + 30.0) / st_kva)))
    assert tight.status == "optimal"
    assert tight.objective < loose.objective
    assert loose.p_up_kw.sum() > loose.p_down_kw.sum()
    nodal = np.zeros((p.n_steps, p.sens.bus_ids.size))
    np.add.at(nodal.T, p.ev_col, tight.activated_p_kw("up").T)
    pred = p.sens.predict(p.net_p_kw + nodal, p.net_q_kvar)
    assert np.max(np.hypot(pred.trafo_p_kw, pred.trafo_q_kvar)) <= pt0 + 30.0 + 1e-6


def test_time_varying_coefficients_and_one_scenario(lv_sens):
    """C_{s,t} per step moves flexibility; a scenario left out offers nothing."""
    p = fleet(lv_sens, cap=50.0, p_max=4.0, e0=0.0, e_dep=6.0, plugged=[[True]] * 4)
    only_up = solve_flex(p, FlexOptions(scenarios=("up",)))
    assert np.all(only_up.p_down_kw == 0)
    weighted = solve_flex(p, FlexOptions(c_down=[0, 0, 0, 1.0], c_up=0.0))
    # downward flexibility wanted only in the last step: the EV charges full power there
    assert weighted.p_down_kw[3, 0] == pytest.approx(4.0, abs=1e-6)


def test_options_list_every_problem():
    probs = FlexOptions(c_down=-1.0, scenarios=("down", "sideways"), ev_power_factor=1.2).problems(4)
    assert any(s.startswith("c_down") for s in probs)
    assert any(s.startswith("scenarios") for s in probs)
    assert any(s.startswith("ev_power_factor") for s in probs)
    assert FlexOptions(c_up=[1.0, 2.0]).problems(4)[0].startswith("c_up")
    with pytest.raises(ValueError, match="c_down"):
        FlexOptions(c_down=-1.0).validate()


def test_unreachable_departure_and_fallback(lv_sens):
    """Departure energy out of reach: flagged up front; the solve ends in the fallback."""
    p = fleet(lv_sens, cap=[60.0, 60.0], p_max=[11.0, 11.0], e0=[10.0, 10.0], e_dep=[20.0, 40.0],
              plugged=[[True, True], [True, True]])
    assert list(unreachable_departures(p)) == [1]
    plan = solve_flex(p)
    assert plan.fallback and plan.status == "infeasible"
    assert plan.objective == 0.0 and np.all(plan.p_up_kw == 0) and np.all(plan.p_down_kw == 0)
    np.testing.assert_allclose(plan.p_ch_kw[:, 0], [5.0, 5.0])
    np.testing.assert_allclose(plan.p_ch_kw[:, 1], [11.0, 11.0])
    assert "fallback" in plan.message


def test_peak_tie_break_spreads_charging_at_the_same_objective(lv_sens):
    """One EV, 4 x 1 h, Pbar 4 kW, 4 kWh needed, large battery. Charge c_3 in the last
    step cannot be postponed (the min-energy curve reaches E_dep at the end), so it costs
    its downward flexibility; every schedule putting the 4 kWh into steps 0-2 has up +
    down = Pbar there: objective 4 x 4 = 16, degenerate. The peak tie-break picks the
    flattest of them, 4/3 kW in steps 0-2 and nothing in step 3."""
    p = fleet(lv_sens, cap=100.0, p_max=4.0, e0=0.0, e_dep=4.0, plugged=[[True]] * 4)
    plain = solve_flex(p)
    flat = solve_flex(p, FlexOptions(tie_break="peak"))
    assert plain.objective == pytest.approx(16.0, abs=1e-6)
    assert flat.objective == pytest.approx(16.0, abs=1e-4)
    np.testing.assert_allclose(flat.p_ch_kw[:, 0], [4 / 3, 4 / 3, 4 / 3, 0.0], atol=1e-4)
    assert flat.p_ch_kw.max() <= plain.p_ch_kw.max() + 1e-9
    assert "peak tie-break" in flat.termination
    assert FlexOptions(tie_break="valley").problems() == [
        "tie_break: must be one of ('none', 'peak'), got 'valley'"]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), n_ev=st.integers(2, 12), vm_min=st.sampled_from([0.5, 0.97]))
def test_optimal_face_tie_break_equals_objective_row_lp(lv_sens, seed, n_ev, vm_min):
    """The tie-break LP on the optimal face (stage-1 columns and rows with nonzero dual
    fixed at their bound) keeps stage 1's eq. (4) optimum and reaches the lowest peak of
    the objective-row LP held at that optimum (c'x >= c'x*, all of stage 1's rows); the
    objective-row LP that may lose 1e-6 of eq. (4) is a relaxation: its peak is a lower
    bound, stage 1's own peak an upper one."""
    from simulators.scheduler.flexibility import _peak_lp, _solve_highs, build_flex_lp

    p = random_fleet(lv_sens, seed, n_ev)
    p = replace(p, limits=replace(p.limits, vm_min_pu=vm_min))
    opts = FlexOptions(tie_break="peak")
    lp = build_flex_lp(p, opts)
    x1, status, *_ = _solve_highs(lp, 60.0)
    if x1 is None:
        return
    n = lp.A.shape[1]
    exact, *_ = _solve_highs(_peak_lp(lp, x1, 0.0), 60.0)
    relaxed, *_ = _solve_highs(_peak_lp(lp, x1, 1e-6), 60.0)
    plan = solve_flex(p, opts)
    assert "optimal face" in plan.termination
    assert plan.objective == pytest.approx(flex_only(lp, x1), rel=1e-7, abs=1e-6)
    peak = plan.p_ch_kw.sum(axis=1).max()
    assert relaxed[n] - 1e-7 <= peak <= np.bincount(lp.pair_t, weights=x1[lp.i_ch]).max() + 1e-7
    assert peak == pytest.approx(exact[n], abs=1e-4)


def flex_only(lp, x):
    """Eq. (4) part of ``c'x`` (without the slack penalty)."""
    return float(sum(lp.c[idx] @ x[idx] for idx in lp.i_flex.values()))
