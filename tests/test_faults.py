"""Fault injection through the whole runner: each fault of docs/reliability.md.

Run alone with ``pytest -m faults``. Every fault must end with a typed error that
names the component, the step and the reason, the completed steps readable, and
(for a run that started) a ``FAILED`` marker plus ``summary.json`` with the error.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from scenarios import runner
from scenarios.config import parse_scenario
from scenarios.runner import RunFailed, RunInterrupted, run_case
from simulators.recorder.model import is_complete, is_failed, read_table
from tests.support.faults import children, signal_child_after
from tests.support.runs import wait_for_recorded_steps
from tests.support.scenario_raw import load_raw

pytestmark = pytest.mark.faults

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "scenarios" / "default.toml"


def case_of(raw: dict):
    return parse_scenario(raw, DEFAULT).cases[0]


def default_raw(end_hour: int = 22, **overrides) -> dict:
    return load_raw(DEFAULT, **{"scenario.end": dt.datetime(2024, 1, 17, end_hour, 0), **overrides})


def failure_record(out: Path, status: str = "failed") -> dict:
    """Fault 7: the ``FAILED`` marker and ``summary.json`` of a run that could not
    finish; their error agrees with the steps on disk. Returns the summary."""
    assert is_failed(out) and not is_complete(out)
    error = json.loads((out / "FAILED").read_text())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == status and summary["error"] == error
    assert {"component", "call", "step", "time_s", "timestamp", "reason", "completed_steps"} <= set(error)
    try:
        on_disk = read_table(out, "Grid")["time_s"].nunique()
    except FileNotFoundError:
        on_disk = 0
    assert error["completed_steps"] == on_disk
    if on_disk:
        assert summary["recorded_steps"] == on_disk and "min_voltage_pu" in summary
    return summary


def cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "run_cosim.py"), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


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
    error = failure_record(tmp_path)["error"]  # fault 7
    assert error["component"] == f"{which.capitalize()}-0" and error["step"] >= 3
    assert info.value.component == error["component"] and info.value.step == error["step"]


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


def test_in_process_simulator_error_leaves_a_failure_record(tmp_path, monkeypatch):
    """Fault 7: an in-process simulator raising in its third step (t = 1800 s)."""
    monkeypatch.setitem(runner.SIMULATORS, "pv", ("PV", "tests.support.crashing_pv", "CrashingPV"))
    monkeypatch.chdir(ROOT)
    with pytest.raises(RunFailed) as info:
        run_case(case_of(default_raw(end_hour=19)), tmp_path, plots=False)
    summary = failure_record(tmp_path)
    error = summary["error"]
    assert (error["component"], error["call"], error["step"], error["time_s"]) == ("PV-0", "step", 2, 1800)
    assert error["timestamp"] == "2024-01-17T16:30:00"
    assert error["reason"] == "RuntimeError: injected failure in the PV simulator"
    assert error["completed_steps"] == 2 and summary["n_evs"] == 98
    text = str(info.value)
    assert "PV-0" in text and "step 2" in text and "injected failure" in text and "FAILED" in text


def test_set_up_error_leaves_a_failure_record(tmp_path, monkeypatch):
    """Fault 7: an error while the world is built (no step yet) names the simulator."""
    from simulators.scheduler.mosaik_api import SchedulerSimulator

    def broken(self, *args, **kwargs):
        raise ValueError("injected set-up failure")

    monkeypatch.setattr(SchedulerSimulator, "create", broken)
    monkeypatch.chdir(ROOT)
    with pytest.raises(RunFailed, match="injected set-up failure"):
        run_case(case_of(default_raw(end_hour=17)), tmp_path, plots=False)
    error = failure_record(tmp_path)["error"]
    assert (error["component"], error["call"], error["step"]) == ("Scheduler-0", "create", None)
    assert error["reason"] == "ValueError: injected set-up failure"
    assert error["completed_steps"] == 0


def test_a_new_run_clears_an_earlier_failure_record(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    (tmp_path / "FAILED").write_text("{}")
    run_case(case_of(default_raw(end_hour=16, **{"scenario.end": dt.datetime(2024, 1, 17, 16, 30)})),
             tmp_path, plots=False)
    assert is_complete(tmp_path) and not is_failed(tmp_path)
    assert "status" not in json.loads((tmp_path / "summary.json").read_text())


def test_cli_failure_is_one_paragraph_exit_1(tmp_path):
    """Fault 7 at the command line: a ``cmd`` grid child killed mid-run."""
    out = tmp_path / "o"
    proc = cli("--out", str(out), "--no-plots", "--set", "scenario.step_s=60",
               "--set", 'simulators.grid={starter = "cmd"}')
    try:
        wait_for_recorded_steps(out, 3, poll_s=0.05)
        killed = children("simulators.grid.mosaik_api", parent=proc.pid)
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert killed, "the fault was not injected"
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    failed = [line for line in err.splitlines() if line.startswith("run failed:")]
    assert len(failed) == 1, err
    assert "Grid-0" in failed[0] and "SIGKILL" in failed[0] and "at step" in failed[0]
    assert failure_record(out)["error"]["component"] == "Grid-0"


def test_ctrl_c_leaves_a_failure_record_and_exits_130(tmp_path):
    """Fault 7: SIGINT after a few recorded steps (mosaik catches KeyboardInterrupt)."""
    out = tmp_path / "o"
    proc = cli("--out", str(out), "--no-plots", "--set", "scenario.step_s=60")
    try:
        wait_for_recorded_steps(out, 5)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    lines = [line for line in err.splitlines() if line.startswith("interrupted:")]
    assert len(lines) == 1 and "at step" in lines[0] and "FAILED marker" in lines[0], err
    summary = failure_record(out, status="interrupted")
    assert summary["error"]["component"] == "interrupt" and summary["recorded_steps"] >= 5
    assert read_table(out, "EV")["time_s"].nunique() >= 5


def test_ctrl_c_with_parallel_cases(tmp_path):
    """Fault 7 with ``--jobs 2``: SIGINT to the parent stops both running cases; each
    leaves its record, no worker traceback."""
    scenario = tmp_path / "two.toml"
    text = DEFAULT.read_text().replace("step_s = 900", "step_s = 60")
    scenario.write_text(text + '\n[[cases]]\nname = "a"\n\n[[cases]]\nname = "b"\n')
    out = tmp_path / "o"
    proc = cli(str(scenario), "--out", str(out), "--no-plots", "--jobs", "2")
    try:
        wait_for_recorded_steps(out / "a", 3)
        wait_for_recorded_steps(out / "b", 3)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=240)  # two cases stopping on a loaded machine
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    for name in ("a", "b"):
        failure_record(out / name, status="interrupted")


@pytest.mark.parametrize(("starter", "fault"), [("python", "nan"), ("cmd", "raise"), ("cmd", "hang")])
def test_external_simulator_fault_leaves_a_failure_record(tmp_path, monkeypatch, starter, fault):
    """Fault 7 for an external simulator (examples/home_battery) that sends NaN,
    raises in its own process or stops answering at t = 1800 s."""
    from tests.test_external import EXAMPLE, faulty, raw_of
    from tests.test_external import case_of as external_case

    monkeypatch.chdir(ROOT)
    raw = faulty(raw_of(EXAMPLE), starter, fault)
    raw["simulators"]["battery"]["step_timeout_s"] = 2.0
    with pytest.raises(RunFailed):
        run_case(external_case(raw), tmp_path, plots=False)
    error = failure_record(tmp_path)["error"]
    assert (error["component"], error["step"], error["time_s"]) == ("battery-0", 2, 1800)
    assert "external simulator 'battery'" in error["reason"] or "battery-0" in error["reason"]
    assert error["completed_steps"] == 2


def test_scheduler_set_up_without_a_converging_forecast_power_flow(tmp_path, monkeypatch):
    """Fault 3: base load x 10 around the morning peak: the forecast power flow at the
    peak does not converge (it failed the scheduler's ``create`` with a bare
    ``LoadflowNotConverged``). Now the scheduler linearises at the flat-start point,
    the run completes and the summary counts the non-converged steps."""
    monkeypatch.chdir(ROOT)
    raw = default_raw(**{"scenario.start": dt.datetime(2024, 1, 18, 7, 0),
                         "scenario.end": dt.datetime(2024, 1, 18, 8, 0), "baseload.scale": 10.0,
                         "scheduler.strategy": "smart"})
    raw["fleet"].update(counts={"R1": 2}, arrival_fixed_h=0.0)
    result = run_case(case_of(raw), tmp_path, plots=False)
    assert is_complete(tmp_path) and not is_failed(tmp_path)
    assert result.summary["recorded_steps"] == 4
    assert result.summary["pf_not_converged_steps"] == 4


def test_controller_says_which_linearisation_it_used():
    """Fault 3 at the controller: forecast point when it converges, else the flat start."""
    from adapters.networks import load_network
    from simulators.scheduler.controller import Controller, ControllerConfig
    from simulators.scheduler.problem import GridBounds, StrategyOptions

    net = load_network("cigre_lv")
    cfg = ControllerConfig("smart", "receding", 3600, 2, GridBounds(0.92, 1.08), StrategyOptions(name="smart"))
    for factor, expected in ((1.0, "forecast (step 0)"), (30.0, "no load (flat start)")):
        p = {int(r.bus): [r.p_mw * 1e3 * factor] * 2 for r in net.load.itertuples()}
        q = {int(r.bus): [r.q_mvar * 1e3 * factor] * 2 for r in net.load.itertuples()}
        controller = Controller(net, cfg, p, q)
        assert controller.linearisation.startswith(expected)
        assert np.isfinite(controller.sens.dvm_dp).all()
