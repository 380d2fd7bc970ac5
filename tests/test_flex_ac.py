"""AC variant of seed 003's flexibility maximisation (simulators/scheduler/flexibility_ac.py)."""

from __future__ import annotations

import copy

import numpy as np
import pandapower as pp
import pandapower.networks as pn
import pytest

from simulators.grid.sensitivity import compute_sensitivities
from simulators.scheduler.flexibility import FlexOptions, solve_flex
from simulators.scheduler.flexibility_ac import ac_grid_from_net, newton_pf
from simulators.scheduler.problem import ChargingProblem, GridBounds

WIDE = GridBounds(0.5, 1.5, 10.0, 10.0)


@pytest.fixture(scope="module")
def lv():
    """CIGRE LV at nominal load: (net after runpp, sensitivities, ACGrid)."""
    net = pn.create_cigre_network_lv()
    pp.runpp(net, calculate_voltage_angles=True, numba=False)
    sens = compute_sensitivities(net)
    return net, sens, ac_grid_from_net(net, sens)


def far_fleet(sens, limits, n_ev=4, n_steps=4, load=1.0):
    """Four 11 kW EVs at the buses with the lowest voltage, plugged all along, 1 h steps."""
    cols = np.argsort(sens.vm0_pu)[:n_ev]
    cap = np.full(n_ev, 60.0)
    return ChargingProblem(
        dt_h=1.0, ev_ids=np.arange(n_ev), ev_col=cols, capacity_kwh=cap, s_max_kva=np.full(n_ev, 11.0),
        efficiency=np.ones(n_ev), soc0=np.full(n_ev, 0.2), soc_target=np.full(n_ev, 0.3),
        soc_min=np.zeros(n_ev), soc_max=np.ones(n_ev), can_discharge=np.zeros(n_ev, bool),
        can_reactive=np.zeros(n_ev, bool), plugged=np.ones((n_steps, n_ev), bool),
        net_p_kw=np.tile(sens.p0_kw * load, (n_steps, 1)), net_q_kvar=np.tile(sens.q0_kvar * load, (n_steps, 1)),
        sens=sens, limits=limits)


def test_nlp_voltages_equal_pandapower_power_flow(lv):
    """Voltage band binding in the upward activation: the NLP's voltages of every grid
    point equal pandapower's runpp on the same nodal injections to 1e-6 pu."""
    net, sens, grid = lv
    vm_min = float(np.min(sens.vm0_pu)) - 0.02       # a few kW of EV power reach it
    p = far_fleet(sens, GridBounds(vm_min, 1.1, 10.0, 10.0))
    plan = solve_flex(p, FlexOptions(grid_model="ac"), ac_grid=grid)
    assert plan.status == "optimal" and not plan.fallback, plan.termination
    keys, v_nlp = plan.extra["grid_point_keys"], plan.extra["v_nlp"]
    assert keys, "the voltage limit should keep grid points in the NLP"
    check = copy.deepcopy(net)
    for table in ("load", "sgen"):
        check[table]["p_mw"] = 0.0
        check[table]["q_mvar"] = 0.0
    buses = [int(b) for b in sens.bus_ids]
    idx = pp.create_loads(check, buses=buses, p_mw=0.0, q_mvar=0.0)
    onehot = np.zeros((p.n_evs, len(buses)))
    onehot[np.arange(p.n_evs), p.ev_col] = 1.0
    lookup = {int(b): grid.col_bus[i] for i, b in enumerate(buses)}
    worst = 0.0
    for k, (s, t) in enumerate(keys):
        ev = plan.activated_p_kw(s)[t] @ onehot
        check.load.loc[idx, "p_mw"] = (p.net_p_kw[t] + ev) / 1e3
        check.load.loc[idx, "q_mvar"] = (p.net_q_kvar[t] + plan.q_per_p * ev) / 1e3
        pp.runpp(check, calculate_voltage_angles=True, numba=False, tolerance_mva=1e-12)
        vm_pp = check.res_bus.vm_pu[buses].to_numpy()
        vm_nlp = np.abs(v_nlp[k][[lookup[b] for b in buses]])
        worst = max(worst, float(np.max(np.abs(vm_pp - vm_nlp))))
    assert worst < 1e-6
    # and the binding activation sits on the band, not below it
    up = [k for k, (s, _) in enumerate(keys) if s == "up"]
    assert np.abs(v_nlp[up][:, grid.col_bus]).min() >= vm_min - 1e-6


def test_newton_power_flow_matches_pandapower(lv):
    net, sens, grid = lv
    from simulators.scheduler.flexibility_ac import bus_demand_pu

    v, ok = newton_pf(grid, bus_demand_pu(grid, sens.p0_kw[None], sens.q0_kvar[None]))
    assert ok.all()
    np.testing.assert_allclose(np.abs(v[0, grid.col_bus]), net.res_bus.vm_pu[sens.bus_ids], atol=1e-8)


def test_ac_and_linear_agree_on_an_unconstrained_grid(lv):
    net, sens, grid = lv
    p = far_fleet(sens, WIDE)
    lin = solve_flex(p, FlexOptions())
    ac = solve_flex(p, FlexOptions(grid_model="ac"), ac_grid=grid)
    assert lin.status == ac.status == "optimal"
    assert ac.objective == pytest.approx(lin.objective, rel=1e-6)
    assert ac.grid_model == "ac" and lin.grid_model == "linear"


def test_infeasible_nlp_falls_back_and_records_it(lv):
    """Transformer limit below its idle loading: relaxed to the idle value, so the
    departure energy (which needs charging) cannot be met: the NLP is infeasible, the
    run gets the safe fallback plan, the termination is recorded."""
    net, sens, grid = lv
    p = far_fleet(sens, GridBounds(0.5, 1.5, 10.0, 0.05))
    plan = solve_flex(p, FlexOptions(grid_model="ac", nlp_max_iter=60), ac_grid=grid)
    assert plan.fallback and plan.grid_model == "ac"
    assert plan.status in ("infeasible", "not_converged")
    assert "pounce" in plan.termination and plan.extra["nlp_termination"] == plan.termination
    assert "fallback" in plan.message
    np.testing.assert_array_equal(plan.p_up_kw, 0.0)
    e_dep = (p.soc_target * p.capacity_kwh)
    assert np.all(plan.e_kwh[-1] >= e_dep - 1e-9)


def test_iteration_limit_is_not_converged(lv):
    net, sens, grid = lv
    vm_min = float(np.min(sens.vm0_pu)) - 0.02
    p = far_fleet(sens, GridBounds(vm_min, 1.1, 10.0, 10.0))
    plan = solve_flex(p, FlexOptions(grid_model="ac", nlp_max_iter=1), ac_grid=grid)
    assert plan.fallback and plan.status == "not_converged", plan.termination


def test_ac_needs_the_network_and_valid_options(lv):
    net, sens, grid = lv
    p = far_fleet(sens, WIDE)
    with pytest.raises(ValueError, match="grid_model"):
        solve_flex(p, FlexOptions(grid_model="ac"))
    probs = FlexOptions(grid_model="dc", nlp_solver="knitro", nlp_tol=1.0).problems()
    assert any(x.startswith("grid_model:") for x in probs)
    assert any(x.startswith("nlp_solver:") for x in probs)
    assert any(x.startswith("nlp_tol:") for x in probs)



def test_loader_names_the_grid_model_and_solver_fields(tmp_path):
    from scenarios.config import ScenarioError, load_scenario

    path = tmp_path / "bad.toml"
    path.write_text('[scenario]\nname = "x"\nstart = 2024-05-15T12:00:00\nend = 2024-05-15T14:00:00\n'
                    'step_s = 900\n[grid]\nnetwork = "suburban_lv"\n[scheduler]\nstrategy = "flex_max"\n'
                    'flex_grid_model = "dc"\nflex_nlp_solver = "knitro"\n')
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    text = str(err.value)
    assert "scheduler.flex_grid_model: must be one of ('linear', 'ac'), got 'dc'" in text
    assert "scheduler.flex_nlp_solver: must be one of ('pounce', 'ripopt')" in text



def test_newton_power_flow_through_a_phase_shifting_transformer():
    """Dyn5 (150 degrees, as SimBench LV): the Newton start carries the shift (a flat
    start at the slack angle diverged)."""
    from simulators.scheduler.flexibility_ac import bus_demand_pu

    net = pp.create_empty_network()
    mv = pp.create_bus(net, 20.0)
    lv_bus = [pp.create_bus(net, 0.4) for _ in range(3)]
    pp.create_ext_grid(net, mv, vm_pu=1.02)
    pp.create_transformer(net, mv, lv_bus[0], std_type="0.4 MVA 20/0.4 kV")
    for a, b in zip(lv_bus[:-1], lv_bus[1:]):
        pp.create_line(net, a, b, 0.2, std_type="NAYY 4x150 SE")
    for b in lv_bus[1:]:
        pp.create_load(net, b, p_mw=0.05, q_mvar=0.01)
    assert float(net.trafo.shift_degree.iloc[0]) == 150.0
    pp.runpp(net, calculate_voltage_angles=True, numba=False)
    sens = compute_sensitivities(net)
    grid = ac_grid_from_net(net, sens)
    v, ok = newton_pf(grid, bus_demand_pu(grid, sens.p0_kw[None], sens.q0_kvar[None]))
    assert ok.all()
    np.testing.assert_allclose(np.abs(v[0, grid.col_bus]), net.res_bus.vm_pu[sens.bus_ids], atol=1e-8)


def test_run_summary_carries_the_plan_and_its_ac_checks(tmp_path):
    """``run_cosim.py scenarios/seed003_flex.toml`` (issue 11, "How it will be checked"):
    the case's summary has the plan's status and termination, flexibility totals, solve
    times and the AC checks of baseline / full down / full up, Figs. 7-10 in flex/, and
    the study's plan is the one the run's scheduler solved (same objective)."""
    from scenarios.overrides import prepare
    from scenarios.runner import run_case

    case = [c for c in prepare("scenarios/seed003_flex.toml", steps=40).cases if c.name == "linear"][0]
    s = run_case(case, tmp_path / "linear").summary
    assert s["flex_status"] == "optimal" and not s["flex_fallback"]
    assert "Optimal" in s["flex_termination"]
    assert s["flex_objective_kw"] > 0
    assert s["flex_objective_kw"] == pytest.approx(s["flex_objective_run_kw"], rel=1e-9)
    assert s["flex_up_kw_total_steps"] + s["flex_down_kw_total_steps"] == pytest.approx(s["flex_objective_kw"])
    assert set(s["flex_ac_vm_min_pu"]) == {"baseline", "down", "up"}
    assert s["flex_ac_vm_min_pu"]["up"] <= s["flex_ac_vm_min_pu"]["baseline"] + 1e-9
    assert s["flex_ac_worst_violation"] == 0.0
    assert s["flex_solve_s"] >= 0 and s["flex_model_build_s"] >= 0
    for name in ("fig7_flexibility", "fig8_min_voltage", "fig9_trafo_loading", "fig10_charging"):
        assert (tmp_path / "linear" / "flex" / f"{name}.png").is_file()
