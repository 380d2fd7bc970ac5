"""Seed 003 fleet sampling (simulators/ev_fleet/commuters.py)."""

from __future__ import annotations

import copy
import datetime as dt

import numpy as np
import pytest
from scipy.stats import norm
from hypothesis import given, settings, strategies as st

from adapters.ev_catalogue import load_catalogue
from adapters.networks import load_network
from simulators.ev_fleet.commuters import CommuterDistributions, sample_commuter_fleet

START = dt.datetime(2024, 5, 15, 12, 0)
HORIZON = 24 * 3600.0
CAT = load_catalogue()
NET = load_network("suburban_lv")


def _fleet(seed=3, dist=CommuterDistributions(), net=NET, horizon=HORIZON):
    return sample_commuter_fleet(net, dist, CAT, START, horizon, np.random.default_rng(seed))


def test_suburban_fleet_follows_the_paper():
    f = _fleet()
    n_cust = len(NET.load)
    assert len(f.specs) == round(0.2 * n_cust) == 24
    # charger from the customer's connection (11 kW three-phase, 3.7 kW single-phase)
    for s, tp, li in zip(f.specs, f.three_phase, f.load_index):
        assert tp == bool(NET.load.three_phase[li])
        assert s.charger_kva == (11.0 if tp else 3.7)
        assert s.home_bus == NET.load.bus[li]
    # eq. (19): E_dep = reserve + distance * consumption, arrival at the reserve
    for s, m, km in zip(f.specs, f.models, f.distance_km):
        assert s.capacity_kwh == m.usable_kwh
        assert s.soc_target * s.capacity_kwh == pytest.approx(0.2 * m.usable_kwh + km * m.consumption_kwh_per_km)
        assert s.soc_initial == s.soc_min == 0.2
    assert _fleet().specs == f.specs                  # same seed, same fleet
    assert _fleet(seed=4).specs != f.specs


def test_distribution_shapes_match_fig3():
    d = CommuterDistributions()
    u = np.random.default_rng(0).random(200_000)
    arr, dep, km = d.arrival().ppf(u), d.departure().ppf(u), d.distance_ppf(u)
    # closed form of the truncated normals: (Phi(b') - Phi(a')) / (Phi(b) - Phi(a))
    phi = norm.cdf
    in_15_20 = (phi(2) - phi(-4 / 3)) / (phi(4) - phi(-8 / 3))          # 0.8895
    in_6_9 = (phi(2) - phi(-2)) / (phi(10 / 3) - phi(-10 / 3))          # 0.9553
    assert np.mean((arr >= 15) & (arr <= 20)) == pytest.approx(in_15_20, abs=0.003)
    assert np.mean((dep >= 6) & (dep <= 9)) == pytest.approx(in_6_9, abs=0.003)
    assert np.median(km) == pytest.approx(30.0, rel=0.01)        # truncation shifts it by < 0.3 %
    assert 10.9 < np.quantile(km, 0.05) < 11.5 and 77.5 < np.quantile(km, 0.95) < 80.5
    assert km.min() >= 2 and km.max() <= 150


def test_unreachable_departure_energy_is_refused():
    # 150 km every day on the 3.7 kW chargers, home for 1 h only
    d = CommuterDistributions(distance_lo_km=149.0, distance_median_km=150.0, arrival_lo_h=23.0 - 1e-6,
                              arrival_mean_h=23.0, arrival_hi_h=23.0, departure_lo_h=0.0,
                              departure_mean_h=0.0, departure_hi_h=1e-6, three_phase_share=0.0)
    with pytest.raises(ValueError, match=r"needs .* kWh but 3.7 kVA x 1.00 h"):
        _fleet(dist=d, net=_without_phase_column())
    with pytest.raises(ValueError, match="reserve_soc and soc_max"):
        CommuterDistributions(reserve_soc=1.0)


def _without_phase_column():
    net = copy.deepcopy(NET)
    net.load = net.load.drop(columns="three_phase")
    return net


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), share=st.floats(0.0, 1.0), tp=st.floats(0.0, 1.0),
       reserve=st.floats(0.0, 0.5), eff=st.floats(0.85, 1.0), hi_km=st.floats(20.0, 150.0))
def test_sampled_fleets_are_physical(seed, share, tp, reserve, eff, hi_km):
    d = CommuterDistributions(ev_share=share, three_phase_share=tp, reserve_soc=reserve,
                              efficiency=eff, distance_hi_km=hi_km)
    f = sample_commuter_fleet(_NOPHASE, d, CAT, START, HORIZON, np.random.default_rng(seed))
    assert len(f.specs) == round(share * len(_NOPHASE.load))
    assert len(set(f.load_index)) == len(f.specs)          # one EV per owner
    for s, km in zip(f.specs, f.distance_km):
        assert 2.0 <= km <= hi_km
        assert s.charger_kva in (11.0, 3.7)
        assert 0 <= s.arrival_s < s.departure_s <= HORIZON
        # stays inside the truncation bounds (arrival 13-23 h, departure 5-10 h next day)
        assert 1 * 3600 <= s.arrival_s <= 11 * 3600 and 17 * 3600 <= s.departure_s <= 22 * 3600
        need = (s.soc_target - s.soc_initial) * s.capacity_kwh
        assert need > 0
        assert need <= s.efficiency * s.charger_kva * (s.departure_s - s.arrival_s) / 3600 + 1e-9
        assert s.soc_target <= s.soc_max


_NOPHASE = _without_phase_column()


def test_scenario_fleet_and_its_errors(tmp_path):
    from scenarios.config import ScenarioError, load_scenario
    from scenarios.runner import fleet_specs

    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    case = load_scenario(root / "scenarios" / "seed003_flex.toml").cases[0]
    specs = fleet_specs(case, NET)
    assert len(specs) == 24 and {s.charger_kva for s in specs} == {11.0, 3.7}
    assert specs == fleet_specs(case, NET)
    text = (root / "scenarios" / "seed003_flex.toml").read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace("reserve_soc = 0.2", "reserve_soc = 0.95"))   # trips do not fit
    with pytest.raises(ScenarioError, match=r"fleet.sampling \(case 'linear'\): seed 003 fleet .*exceeds soc_max"):
        load_scenario(bad)
    bad.write_text(text.replace('sampling = "seed003"', 'sampling = "seed004"'))
    with pytest.raises(ScenarioError, match="fleet.sampling"):
        load_scenario(bad)
