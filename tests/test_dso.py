"""DSO agent: policies against hand-computed numbers, and the scenario checks of ``[dso]``."""

from __future__ import annotations

import datetime as dt
import textwrap

import numpy as np
import pytest

from scenarios.config import ScenarioError, load_scenario
from simulators.dso.model import (
    ActivationRequest,
    CongestionPolicy,
    DSOModel,
    FlexOffer,
    GridMeasurement,
    VoltagePolicy,
    fleet_sensitivity,
)

STEP = 900.0


def offer(t0, up, down, groups=None):
    return FlexOffer(t0, STEP, np.asarray(up, float), np.asarray(down, float), groups or {})


def test_offer_is_the_smallest_step_of_the_interval():
    o = offer(900, [5, 4, 3, 2], [1, 2, 3, 4])
    assert o.available_kw("up", 900, 2700) == 4.0      # steps 0, 1
    assert o.available_kw("down", 1800, 4500) == 2.0   # steps 1..3
    assert o.available_kw("down", 0, 900) == 0.0       # before the offer: nothing
    assert o.available_kw("up", 2700, 9000) == 0.0     # runs past the offer


def test_voltage_policy_sizes_from_sensitivity():
    # bus 7 at 0.93 pu, threshold 0.95, margin 0.005; dV/dP = -2e-4 pu/kW
    # -> (0.95 + 0.005 - 0.93) / 2e-4 = 125 kW downward, capped by the offer of 80 kW
    pol = VoltagePolicy(buses=(7, 8), vm_min_pu=0.95, vm_max_pu=1.05,
                        sensitivity_pu_per_kw={7: -2e-4, 8: -1e-4}, duration_s=1800, margin_pu=0.005)
    dso = DSOModel(STEP, voltage=pol)
    m = GridMeasurement(0.0, {7: 0.93, 8: 0.96})
    reqs = dso.step(0.0, m, offer(900, [0, 0, 0], [90, 80, 100]))
    assert len(reqs) == 1
    r = reqs[0]
    assert (r.direction, r.start_s, r.end_s, r.reason) == ("down", 900.0, 2700.0, "voltage")
    assert r.p_kw == pytest.approx(80.0)
    assert r.offered_kw == pytest.approx(80.0)
    # beyond the offer when the scenario allows it
    dso2 = DSOModel(STEP, voltage=pol, allow_beyond_offer=True)
    assert dso2.step(0.0, m, offer(900, [0] * 3, [90, 80, 100]))[0].p_kw == pytest.approx(125.0)
    # no new request while the first is running, a new one after it
    assert dso.step(900.0, m, offer(1800, [0] * 3, [90] * 3)) == []
    assert len(dso.step(2700.0, m, offer(3600, [0] * 3, [90] * 3))) == 1


def test_voltage_policy_overvoltage_calls_upward():
    # 1.07 pu, threshold 1.05, sensitivity -1e-3 pu/kW -> 20 kW up (offer 50)
    pol = VoltagePolicy(buses=(3,), vm_min_pu=0.95, vm_max_pu=1.05, sensitivity_pu_per_kw={3: -1e-3},
                        duration_s=900)
    r = DSOModel(STEP, voltage=pol).step(0.0, GridMeasurement(0.0, {3: 1.07}), offer(900, [50], [0]))
    assert len(r) == 1 and r[0].direction == "up" and r[0].p_kw == pytest.approx(20.0)
    # inside the band: nothing
    assert DSOModel(STEP, voltage=pol).step(0.0, GridMeasurement(0.0, {3: 1.0}), offer(900, [50], [0])) == []


def test_congestion_policy():
    # trafo at 112 %, limit 100 %, margin 2 %, 400 kVA -> (112 - 100 + 2) / 100 * 400 = 56 kW
    pol = CongestionPolicy("trafo", 100.0, 400.0, 3600, margin_percent=2.0, group="f1", group_buses=(1, 2))
    dso = DSOModel(STEP, congestion=pol)
    m = GridMeasurement(0.0, {}, max_trafo_loading_percent=112.0, max_line_loading_percent=50.0)
    o = offer(900, [0] * 4, [100] * 4, {"f1": (np.zeros(4), np.full(4, 70.0))})
    (r,) = dso.step(0.0, m, o)
    assert (r.direction, r.group, r.buses, r.end_s) == ("down", "f1", (1, 2), 900.0 + 3600)
    assert r.p_kw == pytest.approx(56.0)
    # group offer caps it: 30 kW offered in the group
    o2 = offer(900, [0] * 4, [100] * 4, {"f1": (np.zeros(4), np.full(4, 30.0))})
    (r2,) = DSOModel(STEP, congestion=pol).step(0.0, m, o2)
    assert r2.p_kw == pytest.approx(30.0)


def test_congestion_in_reverse_flow_calls_upward():
    # midday PV export through the transformer: more charging relieves it
    pol = CongestionPolicy("trafo", 50.0, 315.0, 1800)
    m = GridMeasurement(0.0, {}, max_trafo_loading_percent=60.0, max_trafo_p_hv_kw=-180.0)
    (r,) = DSOModel(STEP, congestion=pol).step(0.0, m, offer(900, [100] * 2, [0] * 2))
    assert r.direction == "up" and r.p_kw == pytest.approx(10.0 / 100 * 315.0)
    # forward flow (or not measured): downward as before
    m2 = GridMeasurement(0.0, {}, max_trafo_loading_percent=60.0, max_trafo_p_hv_kw=150.0)
    (r2,) = DSOModel(STEP, congestion=pol).step(0.0, m2, offer(900, [0] * 2, [100] * 2))
    assert r2.direction == "down"


def test_scheduled_requests_issued_one_lead_ahead_and_capped():
    reqs = [ActivationRequest("S-1", "down", 40.0, 3600, 5400), ActivationRequest("S-2", "up", 10.0, 1800, 2700)]
    dso = DSOModel(STEP, scheduled=reqs)
    o = offer(900, [20] * 8, [25] * 8)
    assert dso.step(0.0, None, o) == []
    (a,) = dso.step(900.0, None, o)
    assert a.request_id == "S-2" and a.p_kw == 10.0
    assert dso.step(1800.0, None, o) == []
    (b,) = dso.step(2700.0, None, o)
    assert b.request_id == "S-1" and b.p_kw == 25.0 and b.offered_kw == 25.0  # capped at the offer
    beyond = DSOModel(STEP, scheduled=reqs, allow_beyond_offer=True)
    out = [r for t in (0.0, 900.0, 1800.0, 2700.0) for r in beyond.step(t, None, o)]
    assert [r.p_kw for r in out] == [10.0, 40.0]


def test_request_round_trip_and_validation():
    r = ActivationRequest("A-1", "up", 3.0, 0, 900, "g", (1, 2), "voltage", 4.0)
    assert ActivationRequest.from_dict(r.to_dict()) == r
    with pytest.raises(ValueError, match="p_kw"):
        ActivationRequest("A-2", "up", -1.0, 0, 900).validate()
    with pytest.raises(ValueError, match="end_s"):
        ActivationRequest("A-3", "down", 1.0, 900, 0).validate()


def test_fleet_sensitivity_weights():
    dvm = np.array([[-1.0, -0.5], [-0.5, -2.0]]) * 1e-4
    s = fleet_sensitivity(dvm, [10, 11], [11], [10, 11], weights=[1.0, 3.0])
    assert s[11] == pytest.approx((-0.5 * 1 + -2.0 * 3) / 4 * 1e-4)


def test_scenario_loader_lists_every_dso_problem(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(textwrap.dedent("""
        [scenario]
        start = 2024-05-15T16:00:00
        end = 2024-05-16T08:00:00
        [grid]
        network = "cigre_lv"
        [scheduler]
        strategy = "smart"
        [dso]
        policies = ["scheduled", "voltage"]
        voltage_buses = ["R18", "R99"]
        voltage_min_pu = 2.5
        voltage_max_pu = 0.0
        groups = { feeder = ["R1", "X7"] }
        requests = [ { direction = "down", p_kw = -5.0, start_h = 3.0, end_h = 4.0 },
                     { direction = "up", p_kw = 5.0, start_h = 3.0, end_h = 2.0, group = "nope" } ]
    """))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    text = str(info.value)
    for needle in ("requests[0].p_kw", "requests[1].end_h", "requests[1].group", "voltage_min_pu: must be in (0, 2)",
                   "voltage_max_pu: must be in (0, 2)", "R99", "X7"):
        assert needle in text, needle
    assert len(info.value.problems) == 7


def test_day_ahead_ev_forecast_errors_are_seeded_and_bounded():
    from pathlib import Path

    from scenarios.config import parse_scenario
    from scenarios.runner import fleet_specs, forecast_ev_specs
    from adapters.networks import load_network

    raw = {"scenario": {"seed": 5, "end": dt.datetime(2024, 5, 16, 8)}, "grid": {"network": "cigre_lv"},
           "fleet": {"counts": {"R18": 6}}, "scheduler": {"strategy": "smart", "mode": "day_ahead"}}
    case = parse_scenario(raw, Path("x.toml")).cases[0]
    specs = fleet_specs(case, load_network("cigre_lv"))
    exact = forecast_ev_specs(case, specs)
    assert exact == [s.to_dict() for s in specs]
    noisy_raw = dict(raw, scheduler={**raw["scheduler"], "forecast_arrival_std_h": 1.0, "forecast_soc_std": 0.1})
    noisy_case = parse_scenario(noisy_raw, Path("x.toml")).cases[0]
    a, b = forecast_ev_specs(noisy_case, specs), forecast_ev_specs(noisy_case, specs)
    assert a == b  # same seed, same errors
    assert any(x["arrival_s"] != y["arrival_s"] for x, y in zip(a, exact))
    for x in a:
        assert 0.0 <= x["arrival_s"] <= x["departure_s"] - 900
        assert x["soc_min"] <= x["soc_initial"] <= x["soc_max"]
