"""Tests of the EV population sampler and the pure fleet model."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulators.ev_fleet.model import FleetModel
from simulators.ev_fleet.population import EVSpec, FleetDistributions, sample_fleet
from simulators.scheduler.fleet_view import FleetView

START = dt.datetime(2024, 1, 15, 16, 0)
HORIZON_S = 16 * 3600.0
TOL = 1e-9


def make_spec(**kw) -> EVSpec:
    base = dict(
        ev_id="EV-0",
        home_bus=1,
        capacity_kwh=16.0,
        charger_kva=3.6,
        efficiency=0.9,
        can_discharge=False,
        can_reactive=False,
        arrival_s=0.0,
        departure_s=3600.0 * 10,
        soc_initial=0.5,
        soc_target=1.0,
    )
    base.update(kw)
    return EVSpec(**base)


def balance_residual(m: FleetModel, soc0: np.ndarray) -> np.ndarray:
    """eta E_in - E_out / eta - E_drive - dSOC E [kWh] (seed 000, eq. (4))."""
    eta = np.array([s.efficiency for s in m.specs])
    cap = np.array([s.capacity_kwh for s in m.specs])
    return (
        eta * m.e_grid_in_kwh
        - m.e_grid_out_kwh / eta
        - m.e_drive_kwh
        - (m.soc_end - soc0) * cap
    )


# ---------------------------------------------------------------- population
def test_spec_roundtrip_plain_dict():
    s = make_spec(home_bus=np.int64(3), soc_initial=np.float64(0.4))
    d = s.to_dict()
    assert type(d["home_bus"]) is int and type(d["soc_initial"]) is float
    assert EVSpec.from_dict(d) == s


@pytest.mark.parametrize(
    "field, value",
    [
        ("capacity_kwh", 0.0),
        ("capacity_kwh", math.nan),
        ("charger_kva", -1.0),
        ("efficiency", 0.0),
        ("efficiency", 1.2),
        ("soc_initial", 1.5),
        ("soc_target", -0.1),
        ("soc_min", 2.0),
        ("arrival_s", -5.0),
        ("departure_s", 0.0),
        ("home_bus", -1),
        ("home_bus", 1.5),
        ("can_discharge", "yes"),
        ("ev_id", ""),
    ],
)
def test_spec_validation_names_field(field, value):
    with pytest.raises(ValueError, match=field):
        make_spec(**{field: value})


def test_spec_validation_lists_all_problems():
    with pytest.raises(ValueError) as err:
        make_spec(capacity_kwh=-1.0, efficiency=2.0, soc_min=0.6)
    msg = str(err.value)
    assert "capacity_kwh" in msg and "efficiency" in msg and "soc_initial" in msg
    assert "(0, 1]" in msg


def test_from_dict_rejects_unknown_and_missing_keys():
    d = make_spec().to_dict()
    with pytest.raises(ValueError, match="unknown keys \\['colour'\\]"):
        EVSpec.from_dict({**d, "colour": "red"})
    d.pop("efficiency")
    with pytest.raises(ValueError, match="missing keys \\['efficiency'\\]"):
        EVSpec.from_dict(d)


def test_distributions_validation():
    with pytest.raises(ValueError, match="efficiency"):
        FleetDistributions(efficiency=0.0)
    with pytest.raises(ValueError, match="arrival_gev_scale_h"):
        FleetDistributions(arrival_gev_scale_h=-1.0)


def test_same_seed_same_fleet_bit_for_bit():
    counts = {5: 3, 1: 4, 3: 0, 2: 2}
    a = sample_fleet(counts, FleetDistributions(), START, HORIZON_S, np.random.default_rng(7))
    b = sample_fleet(
        dict(reversed(list(counts.items()))),
        FleetDistributions(),
        START,
        HORIZON_S,
        np.random.default_rng(7),
    )
    assert a == b  # dataclass equality: every float identical
    assert [s.ev_id for s in a] == [f"EV-{i}" for i in range(9)]
    assert [s.home_bus for s in a] == [1] * 4 + [2] * 2 + [5] * 3
    c = sample_fleet(counts, FleetDistributions(), START, HORIZON_S, np.random.default_rng(8))
    assert a != c


def test_distributions_look_like_seed_000():
    fleet = sample_fleet(
        {1: 4000}, FleetDistributions(), START, HORIZON_S, np.random.default_rng(0)
    )
    arr_h = 16.0 + np.array([s.arrival_s for s in fleet]) / 3600.0
    dep_h = 16.0 + np.array([s.departure_s for s in fleet]) / 3600.0 - 24.0
    soc = np.array([s.soc_initial for s in fleet])
    assert 17.5 < arr_h.mean() < 18.0  # GEV, xi = -0.06: mean 17.74 h
    assert 17.4 < np.median(arr_h) < 17.8
    assert arr_h.min() >= 16.0  # clipped to the start of the horizon
    assert 7.3 < dep_h.mean() < 7.7  # Weibull(7.67, 21.83): mean 7.48 h
    assert dep_h.max() <= 8.0  # clipped to the end of the horizon
    assert abs(soc.mean() - 0.49) < 0.004
    assert abs(soc.std() - 0.04) < 0.004
    # the bounded-tail reading: no arrival beyond 31.47 h
    assert arr_h.max() < 31.5
    assert all(s.capacity_kwh == 16.0 and s.charger_kva == 3.6 for s in fleet)
    assert all(s.efficiency == 0.9 and s.soc_target == 1.0 for s in fleet)


def test_gev_reading_scipy_sign():
    d = FleetDistributions().arrival_distribution()
    assert d.support()[1] == pytest.approx(17.3 + 0.85 / 0.06)
    assert 17.7 < d.mean() < 17.8


def test_fixed_arrival_seed_001():
    dist = FleetDistributions(arrival_fixed_h=16.0)
    fleet = sample_fleet({1: 50}, dist, START, HORIZON_S, np.random.default_rng(1))
    assert all(s.arrival_s == 0.0 for s in fleet)
    late = sample_fleet(
        {1: 5}, FleetDistributions(arrival_fixed_h=17.5), START, HORIZON_S,
        np.random.default_rng(1),
    )
    assert all(s.arrival_s == 5400.0 for s in late)


def test_horizon_edges_clip_and_redraw():
    # starting at 18:00, most arrivals are before the start -> moved to t = 0
    start = dt.datetime(2024, 1, 15, 18, 0)
    fleet = sample_fleet(
        {1: 500}, FleetDistributions(), start, 14 * 3600.0, np.random.default_rng(2)
    )
    arr = np.array([s.arrival_s for s in fleet])
    assert (arr == 0.0).mean() > 0.5
    # a 3-hour horizon: departures clipped to its end, arrivals after it redrawn
    short = sample_fleet(
        {1: 200}, FleetDistributions(), START, 3 * 3600.0, np.random.default_rng(3)
    )
    assert all(s.departure_s == 3 * 3600.0 for s in short)
    assert all(0.0 <= s.arrival_s < 3 * 3600.0 for s in short)
    with pytest.raises(ValueError, match="horizon is too short"):
        sample_fleet(
            {1: 3}, FleetDistributions(arrival_fixed_h=20.0), START, 3600.0,
            np.random.default_rng(3),
        )


def test_sample_fleet_argument_checks():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="counts_per_bus"):
        sample_fleet({1: -2}, FleetDistributions(), START, HORIZON_S, rng)
    with pytest.raises(ValueError, match="horizon_s"):
        sample_fleet({1: 2}, FleetDistributions(), START, 0.0, rng)
    with pytest.raises(ValueError, match="Generator"):
        sample_fleet({1: 2}, FleetDistributions(), START, HORIZON_S, 42)


# -------------------------------------------------------- model: properties
ev_strategy = st.builds(
    dict,
    capacity_kwh=st.floats(2.0, 100.0),
    charger_kva=st.floats(1.0, 22.0),
    efficiency=st.floats(0.5, 1.0),
    can_discharge=st.booleans(),
    can_reactive=st.booleans(),
    arrival_s=st.floats(0.0, 20000.0),
    stay_s=st.floats(1.0, 30000.0),
    soc_lim=st.tuples(st.floats(0.0, 0.4), st.floats(0.6, 1.0)),
    soc_frac=st.floats(0.0, 1.0),
    autonomous=st.booleans(),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    evs=st.lists(ev_strategy, min_size=1, max_size=4),
    step_s=st.sampled_from([60.0, 900.0, 3600.0]),
    n_steps=st.integers(1, 14),
    e_star_kwh=st.sampled_from([0.0, 0.0552, 1.5]),
    data=st.data(),
)
def test_physics_and_energy_balance(evs, step_s, n_steps, e_star_kwh, data):
    specs = []
    for i, e in enumerate(evs):
        lo, hi = e["soc_lim"]
        specs.append(
            EVSpec(
                ev_id=f"EV-{i}",
                home_bus=i % 2,
                capacity_kwh=e["capacity_kwh"],
                charger_kva=e["charger_kva"],
                efficiency=e["efficiency"],
                can_discharge=e["can_discharge"],
                can_reactive=e["can_reactive"],
                arrival_s=e["arrival_s"],
                departure_s=e["arrival_s"] + e["stay_s"],
                soc_initial=min(hi, lo + e["soc_frac"] * (hi - lo)),  # rounding may overshoot hi
                soc_target=1.0,
                soc_min=lo,
                soc_max=hi,
                autonomous=e["autonomous"],
            )
        )
    m = FleetModel(specs, step_s, e_star_kwh, charging_buses=[0, 1, 2])
    soc0 = np.array([s.soc_initial for s in specs])
    cap = np.array([s.capacity_kwh for s in specs])
    s_max = np.array([s.charger_kva for s in specs])
    power = st.floats(-30.0, 30.0, allow_nan=False)
    for k in range(n_steps):
        t = k * step_s
        m.step(t)  # the fleet's own step: state at t published
        soc_t = m.soc
        sp = {}
        for s in specs:
            if data.draw(st.booleans(), label="has setpoint"):
                p_q = (data.draw(power, label="p"), data.draw(power, label="q"))
                bus = data.draw(st.sampled_from([None, 0, 1, 2]), label="bus")
                sp[s.ev_id] = p_q if bus is None else (*p_q, bus)
        m.step(t, sp)  # same-time re-step with setpoints
        if data.draw(st.booleans(), label="repeat"):
            m.step(t, sp)  # repeating must not double count
        np.testing.assert_array_equal(m.soc, soc_t)
        p, q = m.p_kw, m.q_kvar
        plug_s = np.array(
            [
                max(0.0, min(s.departure_s, t + step_s) - max(s.arrival_s, t))
                for s in specs
            ]
        )
        frac = plug_s / step_s
        # never charge unplugged, never above the rating (average <= fraction)
        assert np.all(p[plug_s == 0] == 0) and np.all(q[plug_s == 0] == 0)
        assert np.all(np.hypot(p, q) <= s_max * frac * (1 + 1e-12) + 1e-12)
        for i, s in enumerate(specs):
            if not s.can_discharge:
                assert p[i] >= 0.0
            if not s.can_reactive:
                assert q[i] == 0.0
        # SOC limits
        lo = np.array([s.soc_min for s in specs])
        hi = np.array([s.soc_max for s in specs])
        assert np.all(m.soc_end >= lo - 1e-12) and np.all(m.soc_end <= hi + 1e-12)
        # clipping reported: setpoint - applied
        p_set = np.array([sp.get(s.ev_id, (0.0, 0.0))[0] for s in specs])
        q_set = np.array([sp.get(s.ev_id, (0.0, 0.0))[1] for s in specs])
        np.testing.assert_allclose(m.p_clipped_kw, p_set - p, atol=1e-12)
        np.testing.assert_allclose(m.q_clipped_kvar, q_set - q, atol=1e-12)
        # per-bus aggregate = sum of the EVs there
        bp, bq = m.bus_power()
        for j, b in enumerate(m.buses):
            assert bp[j] == pytest.approx(p[m.bus == b].sum(), abs=1e-9)
            assert bq[j] == pytest.approx(q[m.bus == b].sum(), abs=1e-9)
        # energy balance, seed 000 eq. (4)
        np.testing.assert_allclose(balance_residual(m, soc0), 0.0, atol=1e-9 * cap.max())
        # autonomous moves only when plugged, non-autonomous EVs stay home
        home = np.array([s.home_bus for s in specs])
        auto = np.array([s.autonomous for s in specs])
        assert np.all(m.bus[~auto | (plug_s == 0)] == home[~auto | (plug_s == 0)])
    # grid energy of the last interval equals its average power times the step
    last_in = m.e_grid_kwh
    m.step(n_steps * step_s)
    np.testing.assert_allclose(
        m.e_grid_kwh - last_in, m.p_kw * step_s / 3600.0, atol=1e-9
    )


def test_restep_is_idempotent():
    specs = [make_spec(ev_id=f"EV-{i}", soc_initial=0.2 + 0.1 * i) for i in range(3)]
    a = FleetModel(specs, 900.0)
    b = FleetModel(specs, 900.0)
    a.step(0.0, {"EV-0": (3.6, 0.0), "EV-1": (1.0, 0.0)})
    a.step(0.0, {"EV-1": (2.0, 0.0)})
    a.step(0.0)
    b.step(0.0, {"EV-0": (3.6, 0.0), "EV-1": (2.0, 0.0)})
    for attr in ("soc_end", "p_kw", "e_grid_kwh"):
        np.testing.assert_array_equal(getattr(a, attr), getattr(b, attr))
    a.step(900.0)
    b.step(900.0)
    np.testing.assert_array_equal(a.soc, b.soc)
    assert a.soc[0] == pytest.approx(0.2 + 0.9 * 3.6 * 0.25 / 16.0)


def test_setpoint_applies_to_its_interval_only():
    m = FleetModel([make_spec()], 900.0)
    m.step(0.0, {"EV-0": (3.6, 0.0)})
    m.step(900.0)
    assert m.p_kw[0] == 0.0  # no setpoint for this interval: hold 0
    assert m.soc[0] == pytest.approx(0.5 + 0.9 * 0.9 / 16.0)


def test_partial_plug_in_averages_power_and_keeps_energy():
    m = FleetModel([make_spec(arrival_s=600.0, departure_s=2000.0)], 900.0)
    m.step(0.0, {"EV-0": (3.0, 0.0)})
    assert not m.plugged[0]
    assert m.p_kw[0] == pytest.approx(3.0 * 300.0 / 900.0)
    assert m.p_clipped_kw[0] == pytest.approx(3.0 - 1.0)
    assert m.e_grid_kwh[0] == pytest.approx(3.0 * 300.0 / 3600.0)
    m.step(900.0, {"EV-0": (3.0, 0.0)})
    assert m.plugged[0]
    m.step(1800.0, {"EV-0": (3.0, 0.0)})  # departs at 2000 s
    assert m.p_kw[0] == pytest.approx(3.0 * 200.0 / 900.0)
    m.step(2700.0, {"EV-0": (3.0, 0.0)})
    assert not m.plugged[0] and m.p_kw[0] == 0.0 and m.p_clipped_kw[0] == 3.0
    assert m.e_grid_kwh[0] == pytest.approx(3.0 * 1400.0 / 3600.0)
    assert m.soc_end[0] == pytest.approx(0.5 + 0.9 * 3.0 * 1400.0 / 3600.0 / 16.0)


def test_apparent_power_keeps_p_clips_q():
    m = FleetModel([make_spec(can_reactive=True, can_discharge=True)], 900.0)
    m.step(0.0, {"EV-0": (3.0, 5.0)})
    assert m.p_kw[0] == pytest.approx(3.0)
    assert m.q_kvar[0] == pytest.approx(math.sqrt(3.6**2 - 9.0))
    m.step(0.0, {"EV-0": (-5.0, -1.0)})
    assert m.p_kw[0] == pytest.approx(-3.6) and m.q_kvar[0] == 0.0
    assert m.p_clipped_kw[0] == pytest.approx(-1.4)
    assert m.q_clipped_kvar[0] == pytest.approx(-1.0)


def test_capabilities():
    m = FleetModel([make_spec()], 900.0)
    m.step(0.0, {"EV-0": (-2.0, 1.0)})
    assert m.p_kw[0] == 0.0 and m.q_kvar[0] == 0.0
    assert m.p_clipped_kw[0] == -2.0 and m.q_clipped_kvar[0] == 1.0


def test_soc_lands_exactly_on_limits():
    m = FleetModel([make_spec(soc_initial=0.98, soc_max=0.99)], 3600.0)
    m.step(0.0, {"EV-0": (3.6, 0.0)})
    assert m.soc_end[0] == 0.99
    assert m.p_kw[0] == pytest.approx(0.01 * 16.0 / 0.9)
    m.step(3600.0, {"EV-0": (3.6, 0.0)})
    assert m.soc[0] == 0.99 and m.p_kw[0] == 0.0
    d = FleetModel(
        [make_spec(soc_initial=0.22, soc_min=0.2, can_discharge=True)], 3600.0
    )
    d.step(0.0, {"EV-0": (-3.6, 0.0)})
    assert d.soc_end[0] == 0.2
    assert d.p_kw[0] == pytest.approx(-0.02 * 16.0 * 0.9)
    np.testing.assert_allclose(balance_residual(d, np.array([0.22])), 0.0, atol=1e-12)


def test_fleet_state_only_arrived_evs():
    specs = [
        make_spec(ev_id="EV-0", arrival_s=0.0, departure_s=1000.0),
        make_spec(ev_id="EV-1", arrival_s=950.0, departure_s=5000.0, home_bus=4),
    ]
    m = FleetModel(specs, 900.0)
    m.step(0.0)
    state = FleetView.from_value(m.fleet_state())
    assert list(state) == ["EV-0"]
    assert set(state["EV-0"]) == {
        "soc", "plugged", "bus", "home_bus", "capacity_kwh", "charger_kva",
        "efficiency", "can_discharge", "can_reactive", "departure_s", "soc_target",
        "soc_min", "soc_max", "autonomous",
    }
    assert state["EV-0"]["plugged"] is True and type(state["EV-0"]["soc"]) is float
    m.step(900.0)
    assert list(FleetView.from_value(m.fleet_state())) == ["EV-0"]
    m.step(1800.0)
    state = FleetView.from_value(m.fleet_state())
    assert state["EV-0"]["plugged"] is False and state["EV-1"]["plugged"] is True
    assert state["EV-1"]["bus"] == 4


def test_setpoint_errors_name_ev_and_attribute():
    m = FleetModel([make_spec(), make_spec(ev_id="EV-1", autonomous=True)], 900.0)
    with pytest.raises(ValueError, match="p_kw of EV-0"):
        m.step(0.0, {"EV-0": (math.nan, 0.0)})
    with pytest.raises(ValueError, match="q_kvar of EV-0"):
        m.step(0.0, {"EV-0": [1.0, math.inf, 2]})
    with pytest.raises(ValueError, match="unknown EV 'EV-9'"):
        m.step(0.0, {"EV-9": (1.0, 0.0)})
    with pytest.raises(ValueError, match="bus of EV-1 is 7"):
        m.step(0.0, {"EV-1": (1.0, 0.0, 7)})
    with pytest.raises(ValueError, match="EV-0 must be"):
        m.step(0.0, {"EV-0": (1.0,)})
    m.step(900.0)
    with pytest.raises(ValueError, match="backwards"):
        m.step(0.0)


def test_model_argument_checks():
    with pytest.raises(ValueError, match="duplicate"):
        FleetModel([make_spec(), make_spec()], 900.0)
    with pytest.raises(ValueError, match="step_s"):
        FleetModel([make_spec()], 0.0)
    with pytest.raises(ValueError, match="e_star_kwh"):
        FleetModel([make_spec()], 900.0, e_star_kwh=-1.0)


def test_gap_between_steps_and_truncated_interval():
    m = FleetModel([make_spec()], 900.0)
    m.step(0.0, {"EV-0": (3.6, 0.0)})
    m.step(450.0)  # early step truncates [0, 900) to [0, 450)
    assert m.soc[0] == pytest.approx(0.5 + 0.9 * 3.6 * 0.125 / 16.0)
    m.step(450.0, {"EV-0": (3.6, 0.0)})
    m.step(3600.0)  # gap [1350, 3600) at zero power
    assert m.soc[0] == pytest.approx(0.5 + 0.9 * 3.6 * 0.375 / 16.0)
    assert m.e_grid_kwh[0] == pytest.approx(3.6 * 0.375)


# ---------------------------------------------------------------- autonomous
E_STAR = 0.345 * 0.160  # seed 001: 345 m x 0.160 kWh/km


def test_autonomous_move_and_return():
    specs = [
        make_spec(ev_id="EV-0", home_bus=3, autonomous=True, departure_s=2700.0),
        make_spec(ev_id="EV-1", home_bus=3, autonomous=False),
    ]
    m = FleetModel(specs, 900.0, e_star_kwh=E_STAR, charging_buses=[1, 3])
    m.step(0.0)
    m.step(0.0, {"EV-0": (3.6, 0.0, 1), "EV-1": (3.6, 0.0, 1)})
    assert m.bus.tolist() == [1, 3]  # non-autonomous EV ignores the bus
    bp, _ = m.bus_power()
    assert dict(zip(m.buses.tolist(), bp.tolist())) == pytest.approx({1: 3.6, 3: 3.6})
    assert m.e_drive_kwh.tolist() == [pytest.approx(E_STAR), 0.0]
    # the same-time loop repeated: still one leg
    m.step(0.0, {"EV-0": (3.6, 0.0, 1)})
    assert m.e_drive_kwh[0] == pytest.approx(E_STAR)
    m.step(900.0)
    assert FleetView.from_value(m.fleet_state())["EV-0"]["bus"] == 1
    expected = 0.5 + (0.9 * 3.6 * 0.25 - E_STAR) / 16.0
    assert m.soc[0] == pytest.approx(expected)
    # stays at bus 1 without a bus in the setpoint, departs at 2700 s
    m.step(900.0, {"EV-0": (3.6, 0.0)})
    m.step(1800.0, {"EV-0": (3.6, 0.0, 1)})
    assert m.bus[0] == 1
    m.step(2700.0)
    assert m.bus[0] == 3 and not m.plugged[0]  # drove home before leaving
    assert m.e_drive_kwh[0] == pytest.approx(2 * E_STAR)
    soc0 = np.array([0.5, 0.5])
    np.testing.assert_allclose(balance_residual(m, soc0), 0.0, atol=1e-12)
    assert m.soc[0] == pytest.approx(0.5 + (0.9 * 3.6 * 0.75 - 2 * E_STAR) / 16.0)


def test_autonomous_too_low_soc_stays_home():
    e = 1.0  # kWh per leg: needs soc >= 2/16 to leave
    specs = [
        make_spec(ev_id="EV-0", home_bus=3, autonomous=True, soc_initial=0.1),
        make_spec(ev_id="EV-1", home_bus=3, autonomous=True, soc_initial=0.13),
    ]
    m = FleetModel(specs, 900.0, e_star_kwh=e, charging_buses=[1])
    m.step(0.0, {"EV-0": (3.6, 0.0, 1), "EV-1": (0.0, 0.0, 1)})
    assert m.bus.tolist() == [3, 1]
    assert m.soc_end[0] == pytest.approx(0.1 + 0.9 * 0.9 / 16.0)
    assert m.soc_end[1] == pytest.approx(0.13 - 1.0 / 16.0)


def test_autonomous_discharge_keeps_return_energy():
    e = 1.0
    spec = make_spec(
        autonomous=True, home_bus=3, can_discharge=True, soc_initial=0.3,
        departure_s=1800.0, charger_kva=22.0,
    )
    m = FleetModel([spec], 3600.0, e_star_kwh=e, charging_buses=[1])
    m.step(0.0, {"EV-0": (-20.0, 0.0, 1)})
    # moved (-1/16), discharged down to soc_min + E*/E, drove home (-1/16)
    assert m.soc_end[0] == pytest.approx(0.0)
    assert m.bus[0] == 1 and m.e_drive_kwh[0] == pytest.approx(2.0)
    np.testing.assert_allclose(balance_residual(m, np.array([0.3])), 0.0, atol=1e-12)


def test_autonomous_arrival_inside_step_moves_at_plug_in():
    spec = make_spec(autonomous=True, home_bus=3, arrival_s=300.0)
    m = FleetModel([spec], 900.0, e_star_kwh=E_STAR, charging_buses=[1])
    m.step(0.0, {"EV-0": (3.6, 0.0, 1)})
    assert m.bus[0] == 1
    assert m.p_kw[0] == pytest.approx(3.6 * 600 / 900)
    not_yet = FleetModel([make_spec(autonomous=True, home_bus=3, arrival_s=950.0)],
                         900.0, e_star_kwh=E_STAR, charging_buses=[1])
    not_yet.step(0.0, {"EV-0": (3.6, 0.0, 1)})
    assert not_yet.bus[0] == 3 and not_yet.e_drive_kwh[0] == 0.0


# --------------------------------------------------------------- performance
def test_5000_evs_step_is_fast():
    fleet = sample_fleet(
        {b: 500 for b in range(10)}, FleetDistributions(), START, HORIZON_S,
        np.random.default_rng(5),
    )
    m = FleetModel(fleet, 900.0)
    sp = {s.ev_id: (3.6, 0.0) for s in fleet}
    times = []
    for k in range(8):
        t = (16 + k) * 900.0
        t0 = time.perf_counter()
        m.step(t)
        m.step(t, sp)
        m.bus_power()
        times.append((time.perf_counter() - t0) / 2)
    # ~2-3 ms per call measured; generous bound for a shared machine
    assert float(np.median(times)) < 0.02


def test_spec_fields_match_conventions():
    names = [f.name for f in dataclasses.fields(EVSpec)]
    assert names == [
        "ev_id", "home_bus", "capacity_kwh", "charger_kva", "efficiency",
        "can_discharge", "can_reactive", "arrival_s", "departure_s", "soc_initial",
        "soc_target", "soc_min", "soc_max", "autonomous",
        "next_stays",  # (arrival_s, departure_s, soc_initial) per later stay: units in the tuple's names
    ]


def test_column_wise_setpoints_equal_per_ev_setpoints():
    specs = [make_spec(ev_id=f"EV-{i}", soc_initial=0.2 + 0.1 * i, can_discharge=True) for i in range(4)]
    rows = {"EV-0": [3.0, 0.0], "EV-2": [-1.5, 0.0], "EV-3": [7.0, 1.0]}
    columns = {"ev_id": list(rows), "p_kw": [v[0] for v in rows.values()],
               "q_kvar": [v[1] for v in rows.values()]}
    a, b = FleetModel(specs, 900.0), FleetModel(specs, 900.0)
    for t in (0.0, 900.0, 1800.0):
        a.step(t, rows)
        b.step(t, columns)
        for attr in ("soc", "p_kw", "q_kvar", "p_clipped_kw", "q_clipped_kvar"):
            np.testing.assert_array_equal(getattr(a, attr), getattr(b, attr))
    with pytest.raises(ValueError, match="p_kw of EV-2 is not finite"):
        b.step(2700.0, dict(columns, p_kw=[1.0, float("nan"), 1.0]))
    with pytest.raises(ValueError, match="more than once"):
        FleetModel(specs, 900.0).step(0.0, {"ev_id": ["EV-0", "EV-0"], "p_kw": [1.0, 2.0]})
    with pytest.raises(ValueError, match="unknown EV"):
        FleetModel(specs, 900.0).step(0.0, {"ev_id": ["EV-9"], "p_kw": [1.0]})
