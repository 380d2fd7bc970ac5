"""Base-load model and simulator: SimBench profiles, CSV input, forecasts, mosaik world."""

from __future__ import annotations

import datetime as dt
import math

import mosaik
import numpy as np
import pandapower as pp
import pandas as pd
import pytest

from adapters.networks import load_network
from adapters.profiles import (
    ProfileDataError,
    map_to_profile_year,
    read_timeseries_csv,
    resample_to_steps,
    simbench_load_profile_path,
    simbench_load_profiles,
    write_timeseries_csv,
)
from simulators.baseload.model import (
    BaseLoadError,
    BaseLoadModel,
    LoadSpec,
    forecast,
    load_specs_from_net,
    profile_for_name,
    sum_per_bus,
)
from simulators.grid.naming import element_eids

START = dt.datetime(2024, 5, 15, 16, 0)

from tests.support.collector import Collector


@pytest.fixture(scope="module")
def cigre_lv():
    return load_network("cigre_lv")


@pytest.fixture(scope="module")
def raw_profiles():
    """H0-A/G1-A columns read straight from SimBench's CSV, independently of the adapter."""
    frame = pd.read_csv(simbench_load_profile_path(0), sep=";",
                        usecols=["time", "H0-A_pload", "H0-A_qload", "G1-A_pload", "G3-A_pload"])
    frame.index = pd.to_datetime(frame.pop("time"), format="%d.%m.%Y %H:%M")
    return frame


def _rows(raw: pd.DataFrame, label: str, n: int, column: str) -> np.ndarray:
    """``n`` consecutive rows of ``column`` from the first row labelled ``label`` (labels are not monotonic)."""
    i = int(np.flatnonzero(raw.index == pd.Timestamp(label))[0])
    return raw[column].to_numpy()[i:i + n]


# --- profiles and mapping -----------------------------------------------------------


def test_simbench_profiles_offline_shape_and_names(raw_profiles):
    rel = simbench_load_profiles(["H0-A", "G1-A"])
    assert rel.shape == (35136, 4)  # 366 days * 96
    assert rel.index[0] == pd.Timestamp("2016-01-01 00:00", tz="Europe/Berlin")
    assert rel.index.is_monotonic_increasing and rel.index.is_unique
    # SimBench labels are German wall-clock time with daylight saving
    assert raw_profiles.index[8263:8265].strftime("%H:%M").tolist() == ["01:45", "03:00"]
    assert (rel.index[-1] - rel.index[0]).total_seconds() == 35135 * 900
    np.testing.assert_array_equal(rel["H0-A_pload"].to_numpy(), raw_profiles["H0-A_pload"].to_numpy())
    assert rel["H0-A_pload"].max() == 1.0
    with pytest.raises(ProfileDataError, match="unknown SimBench load profile.*'X9-Z'"):
        simbench_load_profiles(["X9-Z"])


def test_profile_assignment_by_name_prefix(cigre_lv):
    specs = load_specs_from_net(cigre_lv)
    by_id = {s.eid: s for s in specs}
    assert [s.eid for s in specs] == list(element_eids(cigre_lv, "load").values())
    assert by_id["Load-R11"].profile == "H0-A"
    assert by_id["Load-I2"].profile == "G3-A"
    assert by_id["Load-C12"].profile == "G1-A"
    assert by_id["Load-R1"].p_nom_kw == pytest.approx(190.0)
    assert profile_for_name("Load CI3") == "G1-A"  # longest prefix: "C"
    assert profile_for_name("Load CI3", {"C": "G1-A", "CI": "G0-A"}) == "G0-A"
    assert profile_for_name("Load X1") == "H0-A"  # "*" fallback
    with pytest.raises(BaseLoadError, match="no prefix"):
        profile_for_name("Load X1", {"R": "H0-A"})


def test_simbench_profile_column_is_used():
    net = pp.create_empty_network()
    b = pp.create_bus(net, 0.4)
    pp.create_load(net, b, p_mw=0.01, q_mvar=0.002, name="whatever")
    pp.create_load(net, b, p_mw=0.02, q_mvar=0.004, name="R7")
    net.load["profile"] = ["G1-A", None]
    specs = load_specs_from_net(net)
    assert [s.profile for s in specs] == ["G1-A", "H0-A"]


def test_scaled_peak_equals_nominal_times_profile_max(cigre_lv, raw_profiles):
    specs = load_specs_from_net(cigre_lv)
    model = BaseLoadModel.from_simbench(specs, dt.datetime(2024, 1, 1), 900, scale=0.8, horizon_steps=35136)
    p, _ = model.window(0, 35136)
    for j, spec in enumerate(specs):
        prof_max = raw_profiles[f"{spec.profile}_pload"].max()
        assert p[:, j].max() == pytest.approx(0.8 * spec.p_nom_kw * prof_max, rel=1e-12)


def test_time_alignment_and_step_means(cigre_lv, raw_profiles):
    specs = load_specs_from_net(cigre_lv)[:1]  # Load-R1, H0-A, 190 kW
    # tz-aware start: its wall-clock time is used (2024-05-15 16:00 -> 2016-05-15 16:00)
    aware = START.replace(tzinfo=dt.timezone(dt.timedelta(hours=3)))
    m15 = BaseLoadModel.from_simbench(specs, aware, 900)
    raw = _rows(raw_profiles, "2016-05-15 16:00", 16, "H0-A_pload") * 190.0
    np.testing.assert_allclose(m15.window(0, 16)[0][:, 0], raw)
    m60 = BaseLoadModel.from_simbench(specs, START, 3600)
    np.testing.assert_allclose(m60.window(0, 4)[0][:, 0], raw.reshape(4, 4).mean(axis=1))
    m5 = BaseLoadModel.from_simbench(specs, START, 300)  # interpolated between mid-points
    p5 = m5.window(0, 6)[0][:, 0]
    assert p5[1] == pytest.approx(raw[0])  # 16:05-16:10 has its mid-point at 16:07:30
    assert p5[2] == pytest.approx(raw[0] + (raw[1] - raw[0]) / 3)
    assert m5.window(0, 288)[0][:, 0].mean() == pytest.approx(m15.window(0, 96)[0][:, 0].mean(), rel=2e-3)


def test_year_wrap_and_weekday_alignment(raw_profiles):
    spec = [LoadSpec("Load-1", 1, 100.0, 20.0, "H0-A")]
    model = BaseLoadModel.from_simbench(spec, dt.datetime(2023, 12, 31, 23, 0), 900)
    p = model.window(0, 8)[0][:, 0]
    raw = raw_profiles["H0-A_pload"].to_numpy() * 100.0
    np.testing.assert_allclose(p, np.concatenate([raw[-4:], raw[:4]]))
    # 2024-05-15 is a Wednesday; 2016-05-15 a Sunday -> nearest Wednesday 2016-05-18
    assert map_to_profile_year(START, align_weekday=True) == dt.datetime(2016, 5, 18, 16, 0)
    assert map_to_profile_year(dt.datetime(2023, 2, 28)) == dt.datetime(2016, 2, 28)


def test_reactive_from_power_factor_and_profile(raw_profiles):
    spec = [LoadSpec("Load-1", 1, 100.0, 20.0, "H0-A")]
    p, q = BaseLoadModel.from_simbench(spec, START, 900).window(0, 8)
    np.testing.assert_allclose(q, p * 0.2)  # tan phi of the load's nominal values
    p, q = BaseLoadModel.from_simbench(spec, START, 900, power_factor=0.95).window(0, 8)
    np.testing.assert_allclose(q, p * math.tan(math.acos(0.95)))
    np.testing.assert_allclose(q / p, 0.328684, rtol=1e-5)  # hand value
    _, q = BaseLoadModel.from_simbench(spec, START, 900, reactive="profile").window(0, 4)
    raw_q = _rows(raw_profiles, "2016-05-15 16:00", 4, "H0-A_qload") * 20.0
    np.testing.assert_allclose(q[:, 0], raw_q)
    with pytest.raises(BaseLoadError, match="power_factor"):
        BaseLoadModel.from_simbench(spec, START, 900, power_factor=1.2)
    with pytest.raises(BaseLoadError, match="reactive"):
        BaseLoadModel.from_simbench(spec, START, 900, reactive="magic")


def test_constant_source():
    spec = [LoadSpec("Load-1", 1, 100.0, 20.0)]
    p, q = BaseLoadModel.constant(spec, 600, scale=0.5).window(3, 2)
    np.testing.assert_array_equal(p, [[50.0], [50.0]])
    np.testing.assert_array_equal(q, [[10.0], [10.0]])


# --- CSV ----------------------------------------------------------------------------

SPECS = [LoadSpec("Load-R1", 2, 190.0, 62.45), LoadSpec("Load-R11", 12, 14.25, 4.68)]


def _csv_frame(n=8, freq="15min"):
    idx = pd.date_range("2024-05-15 16:00", periods=n, freq=freq)
    return pd.DataFrame({"Load-R1.p_kw": np.linspace(50, 120, n), "Load-R1.q_kvar": np.linspace(10, 30, n),
                         "Load-R11.p_kw": np.linspace(3, 9, n)}, index=idx)


def test_csv_roundtrip_and_model(tmp_path):
    path = tmp_path / "loads.csv"
    frame = _csv_frame()
    write_timeseries_csv(path, frame, "BaseLoad")
    table = read_timeseries_csv(path)
    assert table.model_name == "BaseLoad"
    pd.testing.assert_frame_equal(table.frame, frame, check_freq=False)
    model = BaseLoadModel.from_csv(path, SPECS, START, 1800, horizon_steps=4)
    p, q = model.window(0, 4)
    np.testing.assert_allclose(p[:, 0], frame["Load-R1.p_kw"].to_numpy().reshape(4, 2).mean(axis=1))
    np.testing.assert_allclose(q[:, 0], frame["Load-R1.q_kvar"].to_numpy().reshape(4, 2).mean(axis=1))
    np.testing.assert_allclose(q[:, 1], p[:, 1] * 4.68 / 14.25)  # no q column: power factor
    with pytest.raises(ProfileDataError, match="leave the data range"):
        model.window(4, 1)


def test_csv_is_mosaik_csv_compatible(tmp_path):
    """Parse our file the way mosaik-csv 2.0.1 does (mosaik_csv.CSV.init)."""
    path = tmp_path / "loads.csv"
    frame = _csv_frame()
    write_timeseries_csv(path, frame, "BaseLoad")
    with open(path) as fh:
        first = fh.readline().strip("\n")
    assert len(first.split(",")) == 1  # -> model name line, header=1
    data = pd.read_csv(path, index_col=0, parse_dates=True, header=1)
    assert list(data.columns) == list(frame.columns)
    assert data.index[0] == pd.Timestamp("2024-05-15 16:00")
    np.testing.assert_allclose(data.to_numpy(), frame.to_numpy())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Date,Load-R1.p_kw\n2024-05-15 16:00:00,abc\n", r"line 2, column 'Load-R1.p_kw': not a number: 'abc'"),
        ("BaseLoad\nDate,Load-R1.p_kw\n2024-05-15 16:00:00,1\nyesterday,2\n", r"line 4: cannot parse time stamp"),
        ("Date,Load-R1.p_kw\n2024-05-15 16:15:00,1\n2024-05-15 16:00:00,2\n", r"line 3: time stamp .* is not after"),
        ("Date,Load-R1.p_kw\n2024-05-15 16:00:00,1,5\n", r"line 2 has 3 fields, the header has 2"),
        ("Date,Load-R1.p_kw\n2024-05-15 16:00:00,nan\n", r"line 2, column 'Load-R1.p_kw': not finite"),
        ("Date,Load-R1.p_kw,Load-R1.p_kw\n2024-05-15 16:00:00,1,2\n", r"duplicate column"),
        ("Date,Load-R1.p_kw\n", r"no data rows"),
        ("", r"file is empty"),
    ],
)
def test_csv_errors_name_line_and_column(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ProfileDataError, match=message):
        read_timeseries_csv(path)


def test_csv_missing_load_column(tmp_path):
    path = tmp_path / "loads.csv"
    write_timeseries_csv(path, _csv_frame().drop(columns="Load-R11.p_kw"), "BaseLoad")
    with pytest.raises(ProfileDataError, match=r"missing column\(s\) \['Load-R11.p_kw'\]"):
        BaseLoadModel.from_csv(path, SPECS, START, 900)
    with pytest.raises(ProfileDataError, match="does not exist"):
        read_timeseries_csv(tmp_path / "nope.csv")


def test_resample_errors():
    frame = _csv_frame()
    with pytest.raises(ProfileDataError, match="method"):
        resample_to_steps(frame, START, 900, 2, method="cubic")
    with pytest.raises(ProfileDataError, match="leave the data range"):
        resample_to_steps(frame, START - dt.timedelta(hours=1), 900, 2)
    with pytest.raises(ProfileDataError, match="increase strictly"):
        resample_to_steps(frame.iloc[::-1], START, 900, 2)


# --- forecasts ----------------------------------------------------------------------


def test_forecast_perfect_seeded_and_per_bus():
    specs = [LoadSpec("Load-1", 1, 100.0, 20.0, "H0-A"), LoadSpec("Load-2", 1, 50.0, 0.0, "G1-A"),
             LoadSpec("Load-3", 4, 10.0, 5.0, "G3-A")]
    model = BaseLoadModel.from_simbench(specs, START, 900)
    p, q = model.window(4, 60)
    fc = forecast(model, 4, 60)
    np.testing.assert_array_equal(fc.p_kw, p)
    np.testing.assert_array_equal(fc.q_kvar, q)
    a = forecast(model, 4, 60, error_std=0.1, rng=3)
    b = forecast(model, 4, 60, error_std=0.1, rng=3)
    np.testing.assert_array_equal(a.p_kw, b.p_kw)
    assert 0.05 < np.std(a.p_kw / p - 1) < 0.15
    np.testing.assert_allclose(a.q_kvar[:, 0] / a.p_kw[:, 0], 0.2)  # power factor kept
    fp, fq = fc.per_bus([s.bus for s in specs])
    assert sorted(fp) == [1, 4] and len(fp[1]) == 60 and type(fp[1][0]) is float
    np.testing.assert_allclose(fp[1], p[:, 0] + p[:, 1])
    total = sum_per_bus(fp, {4: [1.0] * 60, 7: [2.0] * 60})
    np.testing.assert_allclose(total[4], p[:, 2] + 1.0)
    assert total[7][0] == 2.0


# --- mosaik -------------------------------------------------------------------------


def test_mosaik_world_baseload(cigre_lv):
    Collector.store = {}
    sim_config = {
        "BaseLoad": {"python": "simulators.baseload.mosaik_api:BaseLoadSimulator"},
        "Collector": {"python": "tests.support.collector:Collector"},
    }
    with mosaik.World(sim_config, debug=False) as world:
        bl_sim = world.start("BaseLoad", start_date="2024-05-15T16:00:00", step_s=900)
        bl = bl_sim.BaseLoad(network="cigre_lv", source="simbench", scale=0.9)
        sink = world.start("Collector").Sink()
        for load in bl.children:
            world.connect(load, sink, "p_kw", "q_kvar")
        world.connect(bl, sink, "p_kw")
        world.run(until=3 * 900)
    assert [c.eid for c in bl.children] == list(element_eids(cigre_lv, "load").values())
    model = BaseLoadModel.from_simbench(load_specs_from_net(cigre_lv), START, 900, scale=0.9)
    p, q = model.window(0, 3)
    got = Collector.store[("Load-R1", "p_kw")]
    assert sorted(got) == [0, 900, 1800] and all(type(v) is float for v in got.values())
    np.testing.assert_allclose([got[t] for t in (0, 900, 1800)], p[:, 0])
    np.testing.assert_allclose([Collector.store[("Load-C1", "q_kvar")][t] for t in (0, 900, 1800)], q[:, 7])
    np.testing.assert_allclose(Collector.store[("BaseLoad", "p_kw")][900], p[1].sum())
