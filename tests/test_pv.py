"""PV model and simulator: VDE-AR-N 4105 cos phi(P), clear-sky energy, mosaik world."""

from __future__ import annotations

import datetime as dt
import math

import mosaik
import numpy as np
import pandas as pd
import pytest

from adapters.profiles import write_timeseries_csv
from adapters.weather import PVSite, WeatherError
from simulators.pv.model import CosPhiCharacteristic, PVModel, PVModelError, PVUnitSpec, forecast

NICOSIA = PVSite(35.17, 33.36, 150.0, "Asia/Nicosia")
BERLIN = PVSite(52.52, 13.40, 40.0, "Europe/Berlin")
MAY_DAY = dt.datetime(2024, 5, 15)

from tests.support.collector import Collector


# --- VDE-AR-N 4105 characteristic: hand-computed values ---------------------------
# cos phi = 1 up to 0.5 P_rated, then linear to 0.95 (<= 4.6 kVA) / 0.90 at P_rated.
# Q = P * sqrt(1 - cos^2) / cos:
#   4 kVA:  0.75 -> cos 0.975, Q = 3 * 0.222205 / 0.975 = 0.683706
#           1.00 -> cos 0.95,  Q = 4 * 0.312250 / 0.95  = 1.314737
#   10 kVA: 0.75 -> cos 0.95,  Q = 7.5 * 0.328684       = 2.465130
#           1.00 -> cos 0.90,  Q = 10 * 0.435890 / 0.9  = 4.843221
@pytest.mark.parametrize(
    ("s_kva", "fraction", "cos_phi", "q_kvar"),
    [
        (4.0, 0.4, 1.0, 0.0),
        (4.0, 0.5, 1.0, 0.0),
        (4.0, 0.75, 0.975, 0.683706),
        (4.0, 1.0, 0.95, 1.314737),
        (10.0, 0.4, 1.0, 0.0),
        (10.0, 0.5, 1.0, 0.0),
        (10.0, 0.75, 0.95, 2.465130),
        (10.0, 1.0, 0.90, 4.843221),
    ],
)
def test_vde4105_characteristic_hand_values(s_kva, fraction, cos_phi, q_kvar):
    char = CosPhiCharacteristic.vde_4105(s_kva)
    assert char.cos_phi(fraction) == pytest.approx(cos_phi, abs=1e-12)
    assert char.q_kvar(fraction * s_kva, s_kva) == pytest.approx(q_kvar, abs=1e-5)


def test_vde4105_size_threshold_and_custom_points():
    assert CosPhiCharacteristic.vde_4105(4.6).points[-1][1] == 0.95
    assert CosPhiCharacteristic.vde_4105(4.61).points[-1][1] == 0.90
    char = CosPhiCharacteristic([[0, 1], [0.2, 1], [1, 0.9]])  # lists as from TOML
    assert char.points == ((0.0, 1.0), (0.2, 1.0), (1.0, 0.9))
    assert char.cos_phi(0.6) == pytest.approx(0.95)
    assert char.cos_phi(1.5) == pytest.approx(0.9)  # constant beyond the last point
    with pytest.raises(PVModelError, match="increase strictly"):
        CosPhiCharacteristic(((0.0, 1.0), (0.0, 0.9)))
    with pytest.raises(PVModelError, match=r"cos phi values must be in \(0, 1\]"):
        CosPhiCharacteristic(((0.0, 1.0), (1.0, 1.2)))


def test_unit_validation_lists_every_problem():
    with pytest.raises(PVModelError) as err:
        PVModel([PVUnitSpec("PV-a", 1, kwp=-1.0, tilt_deg=95.0)], MAY_DAY, 900, site=NICOSIA)
    assert "kwp" in str(err.value) and "tilt_deg" in str(err.value)
    with pytest.raises(PVModelError, match="site is needed"):
        PVModel([PVUnitSpec("PV-a", 1, kwp=1.0)], MAY_DAY, 900)
    with pytest.raises(WeatherError, match="latitude"):
        PVSite(95.0, 0.0)


# --- clear-sky energy --------------------------------------------------------------


def _day(site: PVSite, step_s: float = 900.0) -> tuple[np.ndarray, np.ndarray]:
    model = PVModel([PVUnitSpec("PV-1-0", 1, kwp=1.0)], MAY_DAY, step_s, site=site)
    return model.window(0, int(86400 / step_s))


def _solar_noon_h(lon_deg: float, utc_offset_h: float) -> float:
    # mean solar noon corrected by the equation of time in mid-May (+3.7 min, sun fast)
    return 12.0 + utc_offset_h - lon_deg / 15.0 - 3.7 / 60.0


@pytest.mark.parametrize(
    ("site", "utc_offset_h", "e_min", "e_max"),
    [(NICOSIA, 3.0, 5.0, 8.0), (BERLIN, 2.0, 4.5, 8.0)],
)
def test_clear_may_day_energy_night_and_noon(site, utc_offset_h, e_min, e_max):
    p, q = _day(site)
    step_h = 0.25
    energy_kwh = -p[:, 0].sum() * step_h
    assert e_min < energy_kwh < e_max  # kWh/kWp on a clear May day
    assert np.all(p <= 0) and np.all(q >= 0)  # load convention, absorbing Q
    hours = np.arange(96) * step_h
    night = (hours < 3.0) | (hours >= 22.0)
    assert np.all(p[night, 0] == 0.0)
    peak_mid_h = hours[np.argmin(p[:, 0])] + step_h / 2
    assert abs(peak_mid_h - _solar_noon_h(site.longitude_deg, utc_offset_h)) <= 0.5
    assert 0.55 < -p[:, 0].min() <= 1.0  # peak per kWp after temperature and losses


@pytest.mark.parametrize("clearsky_model", ["simplified_solis", "haurwitz"])
def test_other_clear_sky_models_agree_roughly(clearsky_model):
    site = PVSite(35.17, 33.36, 150.0, "Asia/Nicosia", clearsky_model=clearsky_model)
    p_other, _ = _day(site)
    p_ref, _ = _day(NICOSIA)
    assert -p_other.sum() == pytest.approx(-p_ref.sum(), rel=0.12)
    assert np.all(p_other <= 0)


def test_reactive_power_follows_characteristic_and_clipping():
    units = [PVUnitSpec("PV-1-0", 1, kwp=4.0), PVUnitSpec("PV-1-1", 1, kwp=12.0, s_kva=6.0)]
    model = PVModel(units, MAY_DAY, 900, site=NICOSIA)
    p, q = model.window(0, 96)
    assert -p[:, 1].min() == pytest.approx(6.0)  # AC clipped at the inverter rating
    expected = CosPhiCharacteristic.vde_4105(6.0).q_kvar(-p[:, 1], 6.0)
    np.testing.assert_allclose(q[:, 1], expected)
    at_full = np.isclose(-p[:, 1], 6.0)
    np.testing.assert_allclose(q[at_full, 1], 6.0 * math.tan(math.acos(0.90)))


def test_step_means_independent_of_substeps():
    hourly = PVModel([PVUnitSpec("PV-1-0", 1, kwp=1.0)], MAY_DAY, 3600, site=NICOSIA, substep_s=60)
    fine = PVModel([PVUnitSpec("PV-1-0", 1, kwp=1.0)], MAY_DAY, 60, site=NICOSIA)
    p_h, _ = hourly.window(0, 24)
    p_f, _ = fine.window(0, 1440)
    np.testing.assert_allclose(p_h[:, 0], p_f[:, 0].reshape(24, 60).mean(axis=1), atol=1e-9)


def test_horizon_extends_on_demand():
    model = PVModel([PVUnitSpec("PV-1-0", 1, kwp=1.0)], MAY_DAY, 900, site=NICOSIA)
    assert model.n_precomputed == 96
    p2, _ = model.window(96, 96)  # second day computed lazily
    assert model.n_precomputed >= 192
    p1, _ = model.window(0, 96)
    assert -p2.sum() == pytest.approx(-p1.sum(), rel=0.02)  # next clear day is alike


def test_profile_units(tmp_path):
    idx = pd.date_range("2024-05-15", periods=24, freq="1h")
    pu = np.clip(np.sin((np.arange(24) - 6) / 12 * np.pi), 0.0, None) * 0.8
    path = tmp_path / "pv.csv"
    write_timeseries_csv(path, pd.DataFrame({"roof": pu}, index=idx), "PVProfile")
    from adapters.profiles import read_timeseries_csv

    frame = read_timeseries_csv(path).frame
    units = [PVUnitSpec("PV-3-0", 3, kwp=5.0, s_kva=3.0, profile="roof")]
    model = PVModel(units, dt.datetime(2024, 5, 15), 3600, profiles=frame, timezone="Asia/Nicosia")
    p, q = model.window(0, 24)
    np.testing.assert_allclose(-p[:, 0], np.minimum(5.0 * pu, 3.0), atol=1e-9)
    with pytest.raises(PVModelError, match="not in the profile table"):
        PVModel([PVUnitSpec("PV-3-0", 3, kwp=5.0, profile="wall")], MAY_DAY, 3600, profiles=frame)


def test_forecast_perfect_and_noisy():
    units = [PVUnitSpec(f"PV-1-{k}", 1, kwp=4.0 + k) for k in range(3)]
    model = PVModel(units, MAY_DAY, 900, site=NICOSIA)
    p, q = model.window(10, 60)
    fc = forecast(model, 10, 60)
    assert fc.ids == model.ids and fc.start_step == 10
    np.testing.assert_array_equal(fc.p_kw, p)
    np.testing.assert_array_equal(fc.q_kvar, q)
    a = forecast(model, 10, 60, error_std=0.2, rng=7)
    b = forecast(model, 10, 60, error_std=0.2, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(a.p_kw, b.p_kw)
    assert not np.allclose(a.p_kw, p)
    assert np.all(a.p_kw <= 0) and np.all(-a.p_kw <= model.p_rated_kw + 1e-12)
    np.testing.assert_allclose(a.q_kvar, model.reactive_kvar(-a.p_kw))
    with pytest.raises(ValueError, match="error_std"):
        forecast(model, 0, 4, error_std=-0.1)


# --- mosaik -----------------------------------------------------------------------


def test_mosaik_world_pv_and_plant():
    Collector.store = {}
    sim_config = {
        "PV": {"python": "simulators.pv.mosaik_api:PVSimulator"},
        "Collector": {"python": "tests.support.collector:Collector"},
    }
    with mosaik.World(sim_config, debug=False) as world:
        pv_sim = world.start("PV", start_date="2024-05-15T10:00:00", step_s=900,
                             latitude_deg=35.17, longitude_deg=33.36, altitude_m=150.0,
                             timezone="Asia/Nicosia")
        units = pv_sim.PV.create(2, bus="Bus-R11", kwp=4.16)
        plant = pv_sim.PVPlant(units=[{"bus": 5, "kwp": 10.4}, {"bus": 5, "kwp": 4.16, "tilt_deg": 20}])
        sink = world.start("Collector").Sink()
        for ent in [*units, plant, *plant.children]:
            world.connect(ent, sink, "p_kw", "q_kvar")
        world.run(until=4 * 900)
    assert [u.eid for u in units] == ["PV-R11-0", "PV-R11-1"]
    assert [c.eid for c in plant.children] == ["PV-5-0", "PV-5-1"]
    model = PVModel([PVUnitSpec("PV-5-0", 5, kwp=10.4)], dt.datetime(2024, 5, 15, 10), 900, site=NICOSIA)
    p_ref, q_ref = model.window(0, 4)
    key_p, key_q = ("PV-5-0", "p_kw"), ("PV-5-0", "q_kvar")
    got = Collector.store[key_p]
    assert sorted(got) == [0, 900, 1800, 2700]
    assert all(type(v) is float for v in got.values())
    np.testing.assert_allclose([got[t] for t in sorted(got)], p_ref[:, 0])
    np.testing.assert_allclose([Collector.store[key_q][t] for t in sorted(got)], q_ref[:, 0])
    plant_p = Collector.store[("PVPlant-0", "p_kw")]
    c0 = Collector.store[("PV-5-0", "p_kw")]
    c1 = Collector.store[("PV-5-1", "p_kw")]
    assert plant_p[0] == pytest.approx(c0[0] + c1[0])
    assert plant_p[0] < -5.0  # late morning in May: well producing


def test_simulator_rejects_bad_step_and_params():
    from simulators.pv.mosaik_api import PVSimulator

    sim = PVSimulator()
    with pytest.raises(ValueError, match="whole number"):
        sim.init("PV", time_resolution=60.0, start_date="2024-05-15T00:00:00", step_s=90,
                 latitude_deg=35.0, longitude_deg=33.0)
    sim.init("PV", time_resolution=1.0, start_date="2024-05-15T00:00:00", step_s=900,
             latitude_deg=35.0, longitude_deg=33.0)
    with pytest.raises(ValueError, match="unknown PV parameter"):
        sim.create(1, "PV", bus=1, kwp=1.0, tilt=30)
