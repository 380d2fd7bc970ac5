"""End-to-end: real mosaik worlds with the real simulators, small."""

from __future__ import annotations

import datetime as dt
import gc
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandapower as pp
import pytest

from adapters.networks import load_network
from scenarios import runner
from scenarios.config import parse_scenario
from scenarios.runner import RunFailed, run_case
from simulators.recorder.model import is_complete, pivot, read_table
from tests.support.runs import wait_for_recorded_steps
from tests.support.scenario_raw import load_raw

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "scenarios" / "default.toml"


def default_raw(**overrides) -> dict:
    return load_raw(DEFAULT, **overrides)


def case_of(raw: dict):
    return parse_scenario(raw, DEFAULT).cases[0]


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("default")
    return run_case(case_of(default_raw()), out)


def test_default_study_congests_the_feeder(default_run):
    s = default_run.summary
    assert is_complete(default_run.out_dir)
    for key in ("min_voltage_pu", "violating_bus_steps", "max_line_loading_percent",
                "max_trafo_loading_percent", "mean_soc_at_departure", "evs_below_target_at_departure",
                "t95_hours", "pf_not_converged_steps"):
        assert key in s
    assert s["n_evs"] == 98
    assert s["recorded_steps"] == 64
    # seed 001's feeder sags below the -8 % band when the EVs plug in at 16:00 ...
    assert s["min_voltage_pu"] < 0.92
    assert s["violating_bus_steps"] > 0
    vm_min = pivot(default_run.out_dir, "Grid", "vm_min_pu")
    assert vm_min.idxmin().iloc[0] < 3 * 3600  # ... in the evening, right after plug-in
    assert s["pf_not_converged_steps"] == 0
    for png in ("voltage_bands.png", "fleet.png"):
        assert (default_run.out_dir / png).stat().st_size > 10_000


def test_default_base_load_alone_respects_band(tmp_path):
    result = run_case(case_of(default_raw(**{"fleet.counts": {}})), tmp_path, plots=False)
    assert result.summary["violating_bus_steps"] == 0
    assert result.summary["min_voltage_pu"] > 0.92


def test_uncoordinated_evs_never_break_physics(default_run):
    ev = read_table(default_run.out_dir, "EV")
    assert (ev["p_kw"] <= 3.6 + 1e-9).all() and (ev["p_kw"] >= -1e-12).all()
    assert (ev.loc[~ev["plugged"].astype(bool), "p_kw"].abs() < 1e-12).all()
    assert (ev["soc"] <= 1 + 1e-12).all()
    # the uncoordinated plan is feasible for the EV model: nothing was clipped
    assert ev["p_clipped_kw"].abs().max() < 1e-9


def test_grid_matches_pandapower_runpp(default_run):
    """Grid voltages equal a plain pandapower power flow of the recorded injections."""
    out = default_run.out_dir
    net = load_network("cigre_lv")
    loads = read_table(out, "Load")
    pv = read_table(out, "PV")
    evbus = read_table(out, "EVBus")
    vm = pivot(out, "Bus", "vm_pu")
    from simulators.grid.naming import element_eids

    load_idx = {eid: i for i, eid in element_eids(net, "load").items()}
    bus_eid = element_eids(net, "bus")
    for t in (0, 900 * 13, 900 * 40):
        for _, row in loads[loads.time_s == t].iterrows():
            i = load_idx[row.entity]
            net.load.at[i, "p_mw"] = row.p_kw / 1e3
            net.load.at[i, "q_mvar"] = row.q_kvar / 1e3
        extra = net.load.index[net.load.name.astype(str).str.startswith("test extra")]
        net.load.drop(extra, inplace=True)
        for _, row in pv[pv.time_s == t].iterrows():
            bus = int(row.entity.split("-")[1])  # PV-<bus index>-<k>
            pp.create_load(net, bus, p_mw=row.p_kw / 1e3, q_mvar=row.q_kvar / 1e3, name="test extra pv")
        for _, row in evbus[evbus.time_s == t].iterrows():
            pp.create_load(net, int(row.entity.split("-")[1]), p_mw=row.p_kw / 1e3,
                           q_mvar=row.q_kvar / 1e3, name="test extra ev")
        pp.runpp(net, numba=False)
        ours = vm.loc[t, [bus_eid[b] for b in net.bus.index]].to_numpy(dtype=float)
        np.testing.assert_allclose(ours, net.res_bus.vm_pu.to_numpy(), atol=1e-8)


def test_same_seed_same_results(tmp_path):
    raw = default_raw(**{"scenario.end": dt.datetime(2024, 1, 17, 20, 0)})
    a = run_case(case_of(raw), tmp_path / "a", plots=False)
    b = run_case(case_of(raw), tmp_path / "b", plots=False)
    for table in ("EV", "Bus"):
        ta, tb = read_table(a.out_dir, table), read_table(b.out_dir, table)
        assert ta.equals(tb)


def test_external_simulators_in_subprocesses(tmp_path):
    raw = default_raw(**{"scenario.end": dt.datetime(2024, 1, 17, 18, 0)})
    local = run_case(case_of(raw), tmp_path / "local", plots=False)
    # fleet and base load both remote: failed with mosaik 3.6's own advance_progress
    # ("cannot progress backwards"; adapters/mosaik_fixes.py, fix 2)
    raw["simulators"] = {key: {"starter": "cmd"} for key in ("grid", "fleet", "baseload", "pv", "recorder")}
    result = run_case(case_of(raw), tmp_path / "cmd", plots=False)
    assert result.summary["recorded_steps"] == 8
    assert is_complete(tmp_path / "cmd")
    # records travel as numpy arrays in-process and as JSON lists between processes
    for table in ("EV", "EVBus", "Bus", "Line", "Trafo", "Load", "PV"):
        assert read_table(local.out_dir, table).equals(read_table(result.out_dir, table)), table


def test_external_crash_fails_the_run(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(runner.SIMULATORS, "pv", ("PV", "tests.support.crashing_pv", "CrashingPV"))
    monkeypatch.chdir(ROOT)
    raw = default_raw(**{"scenario.end": dt.datetime(2024, 1, 17, 19, 0)})
    raw["simulators"] = {"pv": {"starter": "cmd"}}
    with pytest.raises(RunFailed, match="injected failure in the PV simulator"):
        run_case(case_of(raw), tmp_path, plots=False)
    assert not is_complete(tmp_path)
    # the steps before the crash are on disk
    assert len(read_table(tmp_path, "Grid")) >= 1
    # the error is the last word: no asyncio noise about the other simulators' tasks
    gc.collect()
    assert "Task was destroyed" not in caplog.text


def test_cli_rejects_bad_scenario_before_starting(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[grid]\nnetwork = "cigre_lv"\nvm_min_pu = 2.0\n[fleet]\nbattery_kwh = -1.0\n')
    proc = subprocess.run([sys.executable, str(ROOT / "run_cosim.py"), str(bad), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert "grid.vm_min_pu" in proc.stderr and "fleet.battery_kwh" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_killed_run_keeps_completed_steps(tmp_path):
    scenario = tmp_path / "long.toml"
    text = DEFAULT.read_text().replace("step_s = 900", "step_s = 60")
    scenario.write_text(text)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, str(ROOT / "run_cosim.py"), str(scenario), "--out", str(out)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_recorded_steps(out, 20)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    grid = read_table(out, "Grid")
    ev = read_table(out, "EV")
    assert 20 <= grid["time_s"].nunique() < 960
    assert ev["time_s"].nunique() >= 20
    assert not is_complete(out)
    assert json.loads((out / "metadata.json").read_text())["seed"] == 1
