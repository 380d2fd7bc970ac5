"""FleetView: the column-wise fleet state reads the same as the per-EV one."""

import datetime as dt

import numpy as np
import pytest

from simulators.ev_fleet.model import FleetModel
from simulators.ev_fleet.population import FleetDistributions, sample_fleet
from simulators.scheduler.fleet_view import FleetView


def _model(n=40, seed=3):
    specs = sample_fleet({1: n // 2, 2: n - n // 2}, FleetDistributions(), dt.datetime(2024, 1, 17, 16),
                         16 * 3600.0, np.random.default_rng(seed))
    model = FleetModel(specs, 900.0)
    model.step(4 * 3600.0)
    return model


def test_lists_arrays_and_rows_agree():
    model = _model()
    lists = FleetView.from_value(model.fleet_state(as_lists=True))
    arrays = FleetView.from_value(model.fleet_state(as_lists=False))
    rows = FleetView.from_value({e: dict(lists[e]) for e in lists})
    assert len(lists) > 0 and lists.ids == arrays.ids == rows.ids
    for ev in lists:
        assert lists[ev] == arrays[ev] == rows[ev]
        assert type(arrays[ev]["soc"]) is float and type(arrays[ev]["plugged"]) is bool
        assert type(arrays[ev]["bus"]) is int
    plugged = lists.plugged()
    assert plugged.ids == [e for e in lists.ids if lists[e]["plugged"]]
    np.testing.assert_array_equal(plugged.col("soc"), [lists[e]["soc"] for e in plugged])


def test_non_finite_state_names_the_ev():
    state = _model().fleet_state()
    state["soc"][1] = float("nan")
    with pytest.raises(ValueError, match=f"fleet_state of {state['ev_id'][1]}: soc"):
        FleetView.from_value(state)


def test_ragged_columns_are_rejected():
    state = _model().fleet_state()
    state["departure_s"] = state["departure_s"][:-1]
    with pytest.raises(ValueError, match="departure_s"):
        FleetView.from_value(state)
