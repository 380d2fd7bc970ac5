"""Re-plan on an activation request and the flexibility envelope (seed 003, eqs. (1)-(3), V-C)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from simulators.scheduler.activation import GridModel, PlanEVs, energy_room, envelope, replan


def plan_of(p, p_max=10.0, e0=0.0, e_max=40.0, e_dep=20.0, eta=1.0, plugged=None):
    p = np.asarray(p, dtype=float)
    t, v = p.shape
    full = lambda x: np.full(v, float(x))  # noqa: E731
    return PlanEVs(ev_ids=np.array([f"EV-{i}" for i in range(v)]), bus=np.ones(v, int), col=np.zeros(v, int),
                   p_max_kw=full(p_max), efficiency=full(eta), e0_kwh=full(e0), e_floor_kwh=np.zeros(v),
                   e_max_kwh=full(e_max), e_dep_kwh=full(e_dep),
                   plugged=np.ones((t, v), bool) if plugged is None else plugged, p_kw=p, dt_h=1.0)


def test_envelope_by_hand():
    # one EV, 4 one-hour steps at 5 kW, 10 kW charger, E_max 40 kWh, 20 kWh at departure
    plan = plan_of([[5.0]] * 4)
    up, down = envelope(plan)
    # energy after each step 5, 10, 15, 20; min-energy curve 0, 0, 0, 10, 20 (eq. (1))
    np.testing.assert_allclose(plan.min_energy()[:, 0], [0, 0, 0, 10, 20])
    np.testing.assert_allclose(up[:, 0], [5, 5, 5, 5])                   # charger room
    np.testing.assert_allclose(down[:, 0], [5, 5, 5, 0])                 # last step: (20 - 20) / 1
    # near the SOC ceiling: E_max = 17 -> step 3 after 20 would be... plan to 16 instead
    plan2 = plan_of([[4.0]] * 4, e_max=17.0, e_dep=16.0)
    up2, _ = envelope(plan2)
    np.testing.assert_allclose(up2[:, 0], [6, 6, 5, 1])                  # (17 - 12) / 1, (17 - 16) / 1


def test_request_inside_envelope_is_served_exactly():
    plan = plan_of([[5.0, 5.0]] * 4)
    r = replan(plan, "up", 6.0, np.array([1]), np.ones(2, bool))
    assert r.ok and r.reason == ""
    assert r.p_kw[1].sum() - 10.0 == pytest.approx(6.0, abs=1e-6)
    np.testing.assert_allclose(r.p_kw[[0, 2, 3]].sum(axis=1), 10.0, atol=1e-6)  # nothing else had to move


def test_request_beyond_envelope_delivers_the_envelope():
    plan = plan_of([[5.0, 5.0]] * 4)
    up, _ = envelope(plan)
    r = replan(plan, "up", 25.0, np.array([0]), np.ones(2, bool))
    assert r.accepted_kw[0] == pytest.approx(up[0].sum(), abs=1e-5)     # 10 kW: both chargers at 10
    assert r.shortfall_kw[0] == pytest.approx(15.0, abs=1e-5)
    assert r.reason == "charger_limit"
    # downward against the minimum-energy curve: full power all the way is needed
    # to reach the departure energy, nothing can be postponed
    plan3 = plan_of([[10.0]] * 4, e_dep=40.0)
    r3 = replan(plan3, "down", 10.0, np.array([3]), np.ones(1, bool))
    assert r3.accepted_kw[3] == pytest.approx(0.0, abs=1e-5) and r3.reason == "ev_needs"


@pytest.mark.parametrize("direction", ["up", "down"])
def test_activation_shifts_later_flexibility(direction):
    # seed 003, V-C: an upward activation raises the energy of every later step,
    # so later upward flexibility shrinks and later downward grows (and the other
    # way round); here the SOC ceiling also forces the plan to charge less later
    plan = plan_of([[2.0]] * 4, e_max=10.0, e_dep=8.0)
    up0, down0 = energy_room(plan)
    r = replan(plan, direction, 4.0 if direction == "up" else 2.0, np.array([0]), np.ones(1, bool))
    assert r.reason == ""
    up1, down1 = energy_room(plan, r.p_kw)
    later = slice(0, 3)  # after steps 0..2 (after the last step both are pinned by departure)
    if direction == "up":
        assert np.all(up1[later] < up0[later] - 1e-6) and np.all(down1[later] > down0[later] + 1e-6)
        # power envelope (eq. (2)): the energy term caps upward power later on
        assert envelope(plan, r.p_kw)[0][1:].sum() < envelope(plan)[0][1:].sum() - 1.0
    else:
        assert np.all(up1[later] > up0[later] + 1e-6) and np.all(down1[later] < down0[later] - 1e-6)
    assert plan.energy(r.p_kw)[-1, 0] >= 8.0 - 1e-6


def test_grid_limit_reason():
    # one bus; voltage 0.951 pu with the baseline, band 0.95; dV/dP = -1e-3 pu/kW:
    # 1 kW more is all the grid takes
    plan = plan_of([[5.0]] * 2, e_dep=10.0)
    grid = GridModel(vm_base_pu=np.full((2, 1), 0.951), dvm_dp=np.array([[-1e-3]]), vm_min_pu=0.95, vm_max_pu=1.05)
    r = replan(plan, "up", 3.0, np.array([0]), np.ones(1, bool), grid=grid)
    assert r.accepted_kw[0] == pytest.approx(1.0, abs=1e-4)
    assert r.reason == "grid_limit"


def test_no_movable_ev_is_refused():
    plan = plan_of([[5.0]] * 2)
    r = replan(plan, "down", 3.0, np.array([0]), np.zeros(1, bool))
    assert r.reason == "no_evs" and r.shortfall_kw[0] == 3.0


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(0.0, 10.0), min_size=4, max_size=4), st.sampled_from(["up", "down"]),
       st.floats(0.0, 30.0), st.integers(0, 3))
def test_no_ev_below_its_departure_energy(p, direction, amount, step):
    base = np.array(p)[:, None] * np.ones((1, 2))
    e_dep = float(base[:, 0].sum())  # the baseline's own departure energy
    plan = plan_of(base, e_dep=e_dep, e_max=40.0)
    r = replan(plan, direction, amount, np.array([step]), np.ones(2, bool))
    assert r.ok
    e = plan.energy(r.p_kw)
    assert np.all(e[-1] >= e_dep - 1e-5)
    assert np.all(r.p_kw >= -1e-9) and np.all(r.p_kw <= 10.0 + 1e-9)
    assert r.accepted_kw[step] <= amount + 1e-5


def test_flex_max_plan_as_baseline():
    """Seed 003's flex_max plan (issue 11) drops in as the baseline: our envelope of
    its schedule reproduces its upward/downward flexibility (eqs. (2), (3)), and a
    call of its full downward flexibility in one step is served."""
    import pandapower as pp
    import pandapower.networks as pn

    from simulators.grid.sensitivity import compute_sensitivities
    from simulators.scheduler.flexibility import FlexOptions, solve_flex
    from simulators.scheduler.problem import ChargingProblem, GridBounds

    net = pn.create_cigre_network_lv()
    pp.runpp(net)
    sens = compute_sensitivities(net)
    v, n_t = 3, 6
    cap = np.array([40.0, 50.0, 60.0])
    plugged = np.ones((n_t, v), bool)
    plugged[:1, 2] = False
    problem = ChargingProblem(
        dt_h=1.0, ev_ids=np.arange(v), ev_col=np.zeros(v, int), capacity_kwh=cap, s_max_kva=np.full(v, 7.0),
        efficiency=np.ones(v), soc0=np.array([0.2, 0.3, 0.25]), soc_target=np.array([0.6, 0.7, 0.5]),
        soc_min=np.zeros(v), soc_max=np.ones(v), can_discharge=np.zeros(v, bool), can_reactive=np.zeros(v, bool),
        plugged=plugged, net_p_kw=np.zeros((n_t, len(sens.bus_ids))), net_q_kvar=np.zeros((n_t, len(sens.bus_ids))),
        sens=sens, limits=GridBounds(0.5, 1.5, 10.0, 10.0))
    fp = solve_flex(problem, FlexOptions())
    assert not fp.fallback
    plan = PlanEVs(ev_ids=np.arange(v).astype(str), bus=np.ones(v, int), col=np.zeros(v, int),
                   p_max_kw=np.full(v, 7.0), efficiency=np.ones(v), e0_kwh=problem.soc0 * cap,
                   e_floor_kwh=problem.soc0 * cap, e_max_kwh=cap, e_dep_kwh=problem.soc_target * cap,
                   plugged=plugged, p_kw=np.asarray(fp.p_ch_kw), dt_h=1.0)
    up, down = envelope(plan)
    np.testing.assert_allclose(up, fp.p_up_kw, atol=1e-5)
    np.testing.assert_allclose(down, fp.p_down_kw, atol=1e-5)
    k = int(np.argmax(down.sum(axis=1)))
    r = replan(plan, "down", float(down[k].sum()), np.array([k]), np.ones(v, bool))
    assert r.reason == "" and r.accepted_kw[k] == pytest.approx(down[k].sum(), rel=0.01)
    assert np.all(plan.energy(r.p_kw)[-1] >= problem.soc_target * cap - 1e-5)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), direction=st.sampled_from(["up", "down"]), with_grid=st.booleans())
def test_energy_formulation_is_the_chain_qp(seed, direction, with_grid):
    """``formulation="energy"`` (default, dp substituted) gives the chain QP's plan."""
    rng = np.random.default_rng(seed)
    t, v = 8, 5
    plugged = np.ones((t, v), bool)
    plugged[rng.integers(3, t, v), np.arange(v)] = False
    plugged = np.cumprod(plugged, axis=0).astype(bool)  # leaves and stays away
    p = np.where(plugged, rng.uniform(0, 10, (t, v)), 0.0)
    plan = plan_of(p, e_max=80.0, e_dep=10.0, plugged=plugged)
    plan = PlanEVs(**{**plan.__dict__, "bus": np.arange(v) % 2, "col": np.arange(v) % 2})
    grid = None
    if with_grid:
        grid = GridModel(vm_base_pu=np.full((t, 2), 0.955), dvm_dp=np.array([[-1e-3, -5e-4], [-5e-4, -2e-3]]),
                         vm_min_pu=0.95, vm_max_pu=1.05)
    steps = np.array([1, 2])
    amount = float(rng.uniform(1, 30))
    a = replan(plan, direction, amount, steps, np.ones(v, bool), grid=grid, formulation="chain")
    b = replan(plan, direction, amount, steps, np.ones(v, bool), grid=grid)
    assert a.ok and b.ok and a.reason == b.reason
    np.testing.assert_allclose(b.accepted_kw, a.accepted_kw, atol=1e-4)
    np.testing.assert_allclose(b.p_kw, a.p_kw, atol=5e-3)  # solver tolerance (the QP is strictly convex in dp)
