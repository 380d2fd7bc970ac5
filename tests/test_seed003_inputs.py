"""Seed 003 PV placement (simulators/pv/placement.py) and the May-average base load."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

from adapters.networks import load_network
from adapters.profiles import ProfileDataError, month_average_profiles
from simulators.pv.placement import PVPlacement, sample_rooftop_pv

NET = load_network("suburban_lv")


def test_pv_sizes_follow_the_connection_and_limits():
    units = sample_rooftop_pv(NET, PVPlacement(), np.random.default_rng(3))
    assert units == sample_rooftop_pv(NET, PVPlacement(), np.random.default_rng(3))
    for u in units:
        assert u["three_phase"] == bool(NET.load.three_phase[u["load_index"]])
        assert u["kwp"] in ((3.0, 5.0, 8.0, 10.4) if u["three_phase"] else (2.0, 3.0, 4.16))
        assert u["bus"] == NET.load.bus[u["load_index"]]
    # 120 customers, share 0.5: binomial sd 5.5
    assert abs(len(units) - 60) < 20
    big = sample_rooftop_pv(NET, PVPlacement(share=1.0), np.random.default_rng(0))
    assert len(big) == len(NET.load)
    assert max(u["kwp"] for u in big if not u["three_phase"]) <= 4.16


def test_pv_pmf_frequencies_without_phase_column():
    net = copy.deepcopy(NET)
    net.load = pd.concat([net.load] * 100, ignore_index=True).drop(columns="three_phase")
    units = sample_rooftop_pv(net, PVPlacement(share=1.0), np.random.default_rng(1))
    three = np.array([u["three_phase"] for u in units])
    assert three.mean() == pytest.approx(0.8, abs=0.02)      # 12 000 draws, sd 0.004
    kwp3 = np.array([u["kwp"] for u in units if u["three_phase"]])
    for size, p in zip((3.0, 5.0, 8.0, 10.4), (0.15, 0.35, 0.30, 0.20)):
        assert np.mean(kwp3 == size) == pytest.approx(p, abs=0.025)


def test_pv_sizes_beyond_the_dso_limits_are_refused():
    with pytest.raises(ValueError, match=r"single_phase_kwp: sizes must be in \(0, 4.16\] kWp"):
        PVPlacement(single_phase_kwp=(2.0, 5.0), single_phase_p=(0.5, 0.5))
    with pytest.raises(ValueError, match=r"three_phase_kwp: sizes must be in \(0, 10.4\]"):
        PVPlacement(three_phase_kwp=(12.0,), three_phase_p=(1.0,))
    with pytest.raises(ValueError, match="three_phase_p: must be >= 0 and sum to 1"):
        PVPlacement(three_phase_p=(0.5, 0.5, 0.5, 0.5))


def test_month_average_day():
    idx = pd.date_range("2016-04-30", "2016-06-01 23:45", freq="15min", tz="Europe/Berlin")
    # value = day of month in May, 100 elsewhere; plus the clock hour
    day = np.where(idx.month == 5, idx.day, 100).astype(float)
    rel = pd.DataFrame({"X_pload": day + idx.hour}, index=idx)
    out = month_average_profiles(rel, 5)
    assert out.index.equals(rel.index)
    # average of days 1..31 is 16, on every day of the frame, plus the hour
    assert np.allclose(out["X_pload"].to_numpy(), 16.0 + idx.hour)
    with pytest.raises(ProfileDataError, match="1..12"):
        month_average_profiles(rel, 13)
    with pytest.raises(ProfileDataError, match="no profile rows in month 8"):
        month_average_profiles(rel, 8)
