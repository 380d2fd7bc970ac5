"""EVs that come home every day (fleet.daily_stays) and one day-ahead plan a day
(scheduler.mode = "day_ahead_daily"): sampling, fleet physics, controller, a
three-day SimBench LV run, validation (the whole year: bench/simbench_year.py)."""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path

import numpy as np
import pytest

from adapters.networks import load_network
from scenarios.config import ScenarioError, parse_scenario
from simulators.ev_fleet.model import FleetModel
from simulators.ev_fleet.population import EVSpec, FleetDistributions, sample_fleet
from simulators.recorder.model import read_table
from simulators.scheduler.controller import Controller, ControllerConfig
from simulators.scheduler.problem import GridBounds, StrategyOptions

ROOT = Path(__file__).resolve().parents[1]
YEAR = ROOT / "scenarios" / "simbench_lv_year.toml"
H = 3600.0


def test_daily_sampling_keeps_the_first_stays_and_adds_one_a_day():
    start, horizon = dt.datetime(2016, 1, 1), 4 * 86400.0
    once = sample_fleet({3: 5}, FleetDistributions(), start, horizon, np.random.default_rng(7))
    daily = sample_fleet({3: 5}, FleetDistributions(), start, horizon, np.random.default_rng(7), daily=True)
    for a, b in zip(once, daily):
        assert (a.arrival_s, a.departure_s, a.soc_initial) == (b.arrival_s, b.departure_s, b.soc_initial)
        stays = b.stays()
        assert len(stays) == 4  # evenings of 1..4 January; the last one ends at the horizon
        for d, (arr, dep, soc) in enumerate(stays):
            assert 15 * H < arr - d * 86400 < 24 * H and dep <= horizon and 0 <= soc <= 1
        assert all(stays[j][1] < stays[j + 1][0] for j in range(3))
        assert stays[-1][1] == horizon


def test_next_stays_are_validated():
    base = dict(ev_id="EV-0", home_bus=1, capacity_kwh=40.0, charger_kva=11.0, efficiency=0.9,
                can_discharge=False, can_reactive=False, arrival_s=0.0, departure_s=10 * H,
                soc_initial=0.3, soc_target=0.9)
    with pytest.raises(ValueError, match=r"next_stays\[0\]: need previous departure"):
        EVSpec(**base, next_stays=((5 * H, 20 * H, 0.3),))
    with pytest.raises(ValueError, match=r"next_stays\[0\]: soc_initial"):
        EVSpec(**base, next_stays=((20 * H, 30 * H, 1.5),))
    spec = EVSpec(**base, next_stays=[[20 * H, 30 * H, 0.4]])  # lists (JSON) become tuples
    assert EVSpec.from_dict(spec.to_dict()) == spec


def test_fleet_comes_home_with_the_next_stays_soc_and_charges_again():
    spec = EVSpec(ev_id="EV-0", home_bus=1, capacity_kwh=40.0, charger_kva=10.0, efficiency=1.0,
                  can_discharge=False, can_reactive=False, arrival_s=0.0, departure_s=2 * H,
                  soc_initial=0.2, soc_target=1.0, next_stays=((4 * H, 6 * H, 0.5),))
    fleet = FleetModel([spec], H)
    socs, plugged, deps = [], [], []
    for k in range(7):
        fleet.step(k * H, {"EV-0": [10.0, 0.0]})
        state = fleet.fleet_state()
        socs.append(state["soc"][0])
        plugged.append(state["plugged"][0])
        deps.append(state["departure_s"][0])
    # 10 kWh an hour into 40 kWh: +0.25 per plugged hour; home at 4 h with SOC 0.5
    np.testing.assert_allclose(socs, [0.2, 0.45, 0.7, 0.7, 0.5, 0.75, 1.0])
    assert plugged == [True, True, False, False, True, True, False]
    assert deps == [2 * H] * 3 + [6 * H] * 4  # the next stay's from the step it arrives in (unplugged there)
    np.testing.assert_allclose(fleet.e_grid_in_kwh, [40.0])  # 2 h + 2 h at 10 kW


def daily_controller(n_steps: int, first_s: int) -> Controller:
    net = load_network("cigre_lv")
    load_p = {int(r.bus): [r.p_mw * 1e3 * 0.3] * n_steps for r in net.load.itertuples()}  # light: limits idle
    load_q = {int(r.bus): [r.q_mvar * 1e3 * 0.3] * n_steps for r in net.load.itertuples()}
    cfg = ControllerConfig("smart", "day_ahead_daily", 3600, n_steps, GridBounds(0.92, 1.08),
                           StrategyOptions(name="smart"), replan_first_s=first_s, replan_period_s=6 * 3600)
    return Controller(net, cfg, load_p, load_q, ev_specs=None)


def test_day_ahead_daily_replans_on_schedule_and_plans_each_stay():
    """Period 6 h, first re-plan at 2 h: solves at k = 0, 2, 8. EV-0 is plugged at the
    re-plan at 8 h and comes home again at 10 h: both stays are planned by that solve."""
    n = 14
    spec = EVSpec(ev_id="EV-0", home_bus=2, capacity_kwh=16.0, charger_kva=3.6, efficiency=0.9,
                  can_discharge=False, can_reactive=False, arrival_s=3 * H, departure_s=9 * H,
                  soc_initial=0.3, soc_target=1.0, next_stays=((10 * H, 13 * H, 0.6),))
    ctrl = daily_controller(n, 2 * 3600)
    ctrl.ev_specs = [spec.to_dict()]
    fleet = FleetModel([spec], 3600)
    solves, p = [], []
    for k in range(n):
        fleet.step(k * H)
        before = ctrl.n_solves
        setpoints, info = ctrl.plan(k, fleet.fleet_state())
        fleet.step(k * H, setpoints)
        if ctrl.n_solves > before:
            solves.append(k)
        else:
            assert info.solve_s == 0.0
        p.append(float(fleet.p_kw[0]))
    assert solves == [2, 8]  # k = 0 has no EV (the plan is empty, not a solve)
    assert any(s.startswith("EV-0@46800") for s in ctrl._plan_ids) and "EV-0@32400" in ctrl._plan_ids
    assert ctrl._plan.p_kw.shape[0] == 14 - 8  # window: to the next re-plan (after the last departure)
    # both stays charge to the target (3.6 kW x 0.9 / 16 kWh = 0.2 an hour)
    soc_out = fleet.soc[0]
    assert soc_out == pytest.approx(1.0, abs=1e-3)
    assert sum(p[3:9]) > 0 and sum(p[10:13]) > 0


def short_year(**scheduler) -> dict:
    raw = tomllib.loads(YEAR.read_text())
    raw["scenario"]["end"] = dt.datetime(2016, 1, 3)
    if scheduler:
        raw["cases"][1]["scheduler"].update(scheduler)
    return raw


def test_two_simbench_days_uncoordinated_and_one_plan_a_day(tmp_path):
    from scenarios.runner import run_case

    cases = parse_scenario(short_year(), YEAR).cases
    out = {}
    for case in cases:
        res = run_case(case, tmp_path / case.name, plots=False)
        out[case.name] = res.summary
    unc, smart = out["uncoordinated"], out["smart_day_ahead_daily"]
    assert unc["n_evs"] == smart["n_evs"] == 24 and unc["n_stays"] == smart["n_stays"] == 48
    assert smart["fallback_steps"] == 0
    # the plan flattens the evening peak that uncoordinated charging puts on the trafo
    assert smart["max_trafo_loading_percent"] < unc["max_trafo_loading_percent"]
    assert smart["ev_energy_kwh"] == pytest.approx(unc["ev_energy_kwh"], rel=0.01)
    sched = read_table(tmp_path / "smart_day_ahead_daily", "Scheduler")
    solved = sorted(sched.loc[sched["solve_s"] > 0, "time_s"].tolist())
    assert solved == [12 * 3600, 36 * 3600]  # 12:00 each day (nobody is home at midnight on 1 Jan)


def test_daily_mode_bad_input_refused_at_once():
    raw = short_year(replan_at_h=12.1)
    raw["fleet"]["sampling"] = "seed003"
    with pytest.raises(ScenarioError) as err:
        parse_scenario(raw, YEAR)
    text = str(err.value)
    assert "scheduler.replan_at_h: must be in [0, 24) h and a multiple of scenario.step_s" in text
    assert "fleet.daily_stays: applies to fleet.counts, not to sampling 'seed003'" in text
