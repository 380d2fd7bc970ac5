"""Fault injection through the whole runner: each fault of docs/reliability.md.

Run alone with ``pytest -m faults``. Every fault must end with a typed error that
names the component, the step and the reason, the completed steps readable, and
(for a run that started) a ``FAILED`` marker plus ``summary.json`` with the error.
"""

from __future__ import annotations

import datetime as dt
import signal
import time
from pathlib import Path

import pytest

from scenarios.config import parse_scenario
from scenarios.runner import RunFailed, run_case
from simulators.recorder.model import is_complete, read_table
from tests.support.faults import children, signal_child_after
from tests.support.scenario_raw import load_raw

pytestmark = pytest.mark.faults

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "scenarios" / "default.toml"


def case_of(raw: dict):
    return parse_scenario(raw, DEFAULT).cases[0]


def default_raw(end_hour: int = 22, **overrides) -> dict:
    return load_raw(DEFAULT, **{"scenario.end": dt.datetime(2024, 1, 17, end_hour, 0), **overrides})


@pytest.mark.parametrize(("which", "module", "sig"), [
    ("grid", "simulators.grid.mosaik_api", signal.SIGKILL),
    ("fleet", "simulators.ev_fleet.mosaik_api", signal.SIGSTOP),
])
def test_remote_child_that_dies_or_hangs_fails_the_run(tmp_path, monkeypatch, which, module, sig):
    """Fault 1: kill -9 (or stop) of a ``cmd`` child mid-run hung in epoll for ever."""
    monkeypatch.chdir(ROOT)
    raw = default_raw(end_hour=23)
    raw["simulators"] = {which: {"starter": "cmd", "step_timeout_s": 2.0}}
    killer = signal_child_after(tmp_path, module, sig, steps=3)
    t0 = time.monotonic()
    with pytest.raises(RunFailed, match=rf"{which.capitalize()}-0") as info:
        run_case(case_of(raw), tmp_path, plots=False)
    assert killer.signalled, "the fault was not injected"
    assert time.monotonic() - t0 < 90
    assert ("SIGKILL" if sig == signal.SIGKILL else "no reply within 2 s") in str(info.value)
    assert not children(module)
    assert not is_complete(tmp_path)
    assert read_table(tmp_path, "Grid")["time_s"].nunique() >= 3  # completed steps readable


def test_non_converged_power_flow_is_a_recorded_step(tmp_path, monkeypatch):
    """Fault 2: 1 500 EVs on one bus crashed the recorder (``records = None``).

    They plug in at 16:15: step 0 converges, steps 1 and 2 cannot (about 5 MW on a
    400 kVA feeder end). The run finishes; the failed steps are recorded with
    ``pf_converged = False`` and no bus values (null, not the previous step's), and
    the summary counts them."""
    monkeypatch.chdir(ROOT)
    raw = default_raw(**{"scenario.end": dt.datetime(2024, 1, 17, 16, 45),
                         "grid.monitor_buses": "R"})
    raw["fleet"].update(counts={"R18": 1500}, arrival="fixed", arrival_fixed_h=16.25)
    raw["pv"] = {}
    result = run_case(case_of(raw), tmp_path, plots=False)
    assert is_complete(tmp_path)
    grid = read_table(tmp_path, "Grid").sort_values("time_s")
    assert grid["pf_converged"].tolist() == [True, False, False]
    assert grid["vm_min_pu"].isna().tolist() == [False, True, True]
    assert result.summary["pf_not_converged_steps"] == 2
    assert result.summary["recorded_steps"] == 3
    bus = read_table(tmp_path, "Bus")
    assert sorted(bus["time_s"].unique()) == [0]  # no bus rows for the failed steps
    # the voltage figures come from the converged step only
    assert result.summary["min_voltage_pu"] == pytest.approx(grid["vm_min_pu"].iloc[0], abs=1e-3)
    ev = read_table(tmp_path, "EV")
    assert sorted(ev["time_s"].unique()) == [0, 900, 1800]  # the fleet went on
