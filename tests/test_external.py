"""External simulators plugged in by configuration (``[simulators.<name>]``).

Real mosaik worlds of the home-battery example (``examples/home_battery``) over
the first two hours of the default study: started in mosaik's process and by
``cmd``, its power at the grid, unit conversion, faults, and the scenario checks.
"""

from __future__ import annotations

import copy
import json
import datetime as dt
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scenarios.config import ScenarioError, parse_scenario
from scenarios.runner import RunFailed, run_case
from simulators.recorder.model import is_complete, read_table
from tests.support.faults import children

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "home_battery" / "scenario.toml"
EXAMPLE_CMD = ROOT / "examples" / "home_battery" / "scenario_cmd.toml"
END = dt.datetime(2024, 1, 17, 18, 0)  # 8 steps of 15 min
BATTERY_BUS = {"Battery-0": ("Load-R15", "PV-16-0", "Bus-R15"), "Battery-1": ("Load-R16", "PV-17-0", "Bus-R16"),
               "Battery-2": ("Load-R17", "PV-18-0", "Bus-R17")}


def raw_of(path: Path, end: dt.datetime = END) -> dict:
    raw = tomllib.loads(path.read_text())
    raw["scenario"]["end"] = end
    return raw


def case_of(raw: dict, path: Path = EXAMPLE):
    return parse_scenario(raw, path).cases[0]


def pivot(out: Path, table: str, attr: str) -> pd.DataFrame:
    return read_table(out, table).pivot(index="time_s", columns="entity", values=attr)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The example with the battery in-process (with plots), and the same study without it."""
    base = tmp_path_factory.mktemp("external")
    with_battery = run_case(case_of(raw_of(EXAMPLE)), base / "battery", plots=True)
    raw = raw_of(EXAMPLE)
    del raw["simulators"]
    without = run_case(case_of(raw), base / "none", plots=False)
    return with_battery, without


def test_example_records_battery_and_writes_summary_and_plots(runs):
    result, _ = runs
    out = result.out_dir
    assert is_complete(out)
    assert result.summary["recorded_steps"] == 8
    assert result.summary["external_simulators"]["battery"]["tables"] == ["Battery"]
    assert {"voltage_profile.png", "feeder_power.png"} <= {p.name for p in out.glob("*.png")}
    bat = read_table(out, "Battery")
    assert sorted(bat.entity.unique()) == ["Battery-0", "Battery-1", "Battery-2"]
    assert bat.groupby("entity").time_s.nunique().eq(8).all()
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["external_simulators"][0]["target"] == "battery:HomeBatterySimulator"


def test_battery_follows_its_home_demand_with_energy_balance(runs):
    """Independent numbers: the recorded load and PV of each home, the battery's
    rule and limits (examples/home_battery/battery.py), energy bookkeeping by hand."""
    out = runs[0].out_dir
    load, pv = pivot(out, "Load", "p_kw"), pivot(out, "PV", "p_kw")
    p, e = pivot(out, "Battery", "p_kw"), pivot(out, "Battery", "e_kwh")
    dt_h, eta, cap = 0.25, 0.95, 10.0
    for eid, (load_id, pv_id, _) in BATTERY_BUS.items():
        demand = load[load_id] + pv[pv_id]
        stored = 0.9 * cap
        for t in p.index:
            want = float(np.clip(-demand[t], -5.0, 5.0))
            room = (stored - 0.1 * cap) * eta / dt_h if want < 0 else (0.95 * cap - stored) / (eta * dt_h)
            want = max(want, -room) if want < 0 else min(want, room)
            assert p.at[t, eid] == pytest.approx(want, abs=1e-9), (eid, t)
            stored += want * dt_h / eta if want < 0 else want * dt_h * eta
            assert e.at[t, eid] == pytest.approx(stored, abs=1e-9)
    assert (p < -1.0).any().all()  # every battery did discharge in the evening


def test_battery_power_shows_up_at_the_grid(runs):
    """The recorded voltages equal an independent pandapower power flow of the
    network with the recorded loads, PV, EV and battery powers at their buses;
    without the batteries the R feeder's transformer carries their power more
    (plus the feeder's extra losses: 10-25 % at this loading) and R15 sags."""
    import pandapower as pp

    from adapters.networks import load_network

    out = runs[0].out_dir
    load, load_q = pivot(out, "Load", "p_kw"), pivot(out, "Load", "q_kvar")
    extra = [("PV", lambda e: {"PV-12-0": 12, "PV-16-0": 16, "PV-17-0": 17, "PV-18-0": 18}[e]),
             ("EVBus", lambda e: int(e.split("-")[1])),
             ("Battery", lambda e: {"Battery-0": 16, "Battery-1": 17, "Battery-2": 18}[e])]
    vm = pivot(out, "Bus", "vm_pu")
    for t in (0, 1800):
        net = load_network("cigre_lv", None)
        names = {f"Load-{n.split(' ', 1)[1]}": i for i, n in net.load["name"].items()}
        for eid, i in names.items():
            net.load.at[i, "p_mw"] = load.at[t, eid] / 1e3
            net.load.at[i, "q_mvar"] = load_q.at[t, eid] / 1e3
        for table, bus_of in extra:
            rows = read_table(out, table)
            for _, r in rows[rows.time_s == t].iterrows():
                q = r["q_kvar"] if "q_kvar" in r else 0.0
                pp.create_load(net, bus_of(r["entity"]), p_mw=r["p_kw"] / 1e3, q_mvar=q / 1e3)
        pp.runpp(net, tolerance_mva=1e-10, numba=False)
        for bus, name in net.bus["name"].items():
            eid = "Bus-" + name.split(" ", 1)[1]
            assert vm.at[t, eid] == pytest.approx(net.res_bus.at[bus, "vm_pu"], abs=1e-6), (t, eid)

    with_b, without = runs[0].out_dir, runs[1].out_dir
    p_bat = pivot(with_b, "Battery", "p_kw").sum(axis=1)
    trafo = "Trafo-R0-R1"
    d_trafo = pivot(with_b, "Trafo", "p_hv_kw")[trafo] - pivot(without, "Trafo", "p_hv_kw")[trafo]
    active = p_bat.abs() > 1.0
    assert active.sum() >= 4
    ratio = d_trafo[active] / p_bat[active]
    assert ((ratio > 1.0) & (ratio < 1.25)).all(), ratio
    d_vm = pivot(with_b, "Bus", "vm_pu")["Bus-R15"] - pivot(without, "Bus", "vm_pu")["Bus-R15"]
    r15 = pivot(with_b, "Battery", "p_kw")["Battery-0"] < -1.0
    assert r15.sum() >= 4 and (d_vm[r15] > 1e-3).all(), d_vm


def test_battery_started_by_cmd_gives_the_same_results(runs, tmp_path):
    result = run_case(case_of(raw_of(EXAMPLE_CMD), EXAMPLE_CMD), tmp_path, plots=False)
    assert result.summary["external_simulators"]["battery"]["starter"] == "cmd"
    for table in ("Battery", "Bus", "Trafo"):
        a = read_table(runs[0].out_dir, table).drop(columns="timestamp")
        b = read_table(tmp_path, table).drop(columns="timestamp")
        pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_unit_conversion_on_a_connection(tmp_path):
    """``unit = "kW->MW"`` on the battery's demand input: it sees the load / 1000."""
    raw = raw_of(EXAMPLE, end=dt.datetime(2024, 1, 17, 17, 0))
    conns = raw["simulators"]["battery"]["connections"]
    conns[0]["unit"] = "kW->MW"
    conns[1]["scale"] = 1e-3
    raw["simulators"]["battery"]["record"] = ["p_load_kw", "p_kw"]  # inputs are not recorded unless listed
    result = run_case(case_of(raw), tmp_path, plots=False)
    got = pivot(tmp_path, "Battery", "p_load_kw")["Battery-0"]
    want = (pivot(tmp_path, "Load", "p_kw")["Load-R15"] + pivot(tmp_path, "PV", "p_kw")["PV-16-0"]) / 1000.0
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=1e-12, atol=1e-15)
    assert set(read_table(tmp_path, "Battery").columns) == {"time_s", "timestamp", "entity", "p_load_kw", "p_kw"}
    assert any("x 0.001" in c for c in result.summary["external_simulators"]["battery"]["connections"])


def faulty(raw: dict, starter: str, fault: str) -> dict:
    b = raw["simulators"]["battery"]
    b.pop("python", None)
    b.pop("cmd", None)
    b["init"] = {"step_s": 900, "fault": fault, "fault_at_s": 1800}
    if starter == "python":
        b["python"] = "tests.support.faulty_battery:FaultyBattery"
    else:
        b["cmd"] = "%(python)s -m tests.support.faulty_battery --log-level warning %(addr)s"
        b["cwd"] = "../.."
    return raw


@pytest.mark.parametrize(("starter", "fault", "says"), [
    ("python", "nan", "sent a non-finite value for Battery-0.p_kw"),
    ("python", "raise", "RuntimeError: injected failure in the battery"),
    ("cmd", "nan", "sent a non-finite value for Battery-0.p_kw"),
    ("cmd", "raise", "injected failure in the battery (in its own process)"),
    ("cmd", "hang", "no reply within 2 s"),
    ("cmd", "exit", "exited with status 3"),
])
def test_faulty_external_fails_the_run_naming_it_and_the_step(tmp_path, monkeypatch, starter, fault, says):
    monkeypatch.chdir(ROOT)
    raw = faulty(raw_of(EXAMPLE), starter, fault)
    raw["simulators"]["battery"]["step_timeout_s"] = 2.0
    with pytest.raises(RunFailed) as info:
        run_case(case_of(raw), tmp_path, plots=False)
    text = str(info.value)
    assert "external simulator 'battery'" in text and "at step t = 1800 s" in text and says in text, text
    assert not is_complete(tmp_path)
    assert sorted(read_table(tmp_path, "Grid").time_s.unique()) == [0, 900]  # completed steps kept
    assert sorted(read_table(tmp_path, "Battery").time_s.unique()) == [0, 900]
    assert not children("tests.support.faulty_battery")  # a hung child was killed


def test_cli_exits_non_zero_on_nan(tmp_path):
    raw = faulty(raw_of(EXAMPLE), "python", "nan")
    scenario = tmp_path / "nan.toml"
    scenario.write_text(_toml(raw))
    proc = subprocess.run([sys.executable, str(ROOT / "run_cosim.py"), str(scenario), "--out", str(tmp_path / "o"),
                           "--no-plots"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 1, proc.stderr
    assert "external simulator 'battery'" in proc.stdout + proc.stderr
    assert "t = 1800 s" in proc.stdout + proc.stderr


def _toml(raw: dict) -> str:
    """A scenario dict as TOML (tomli_w is not a dependency: the few types used here)."""
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, dt.datetime):
            return v.isoformat()
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f'"{k}" = {value(x)}' for k, x in v.items()) + "}"
        raise TypeError(v)

    lines = []
    for table, body in raw.items():
        if table == "simulators":
            for name, t in body.items():
                lines.append(f"[simulators.{name}]")
                lines += [f"{k} = {value(v)}" for k, v in t.items()]
            continue
        lines.append(f"[{table}]")
        lines += [f'"{k}" = {value(v)}' for k, v in body.items()]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------- scenario checks ---


def problems_of(mutate) -> list[str]:
    raw = raw_of(EXAMPLE)
    mutate(raw["simulators"]["battery"])
    with pytest.raises(ScenarioError) as info:
        parse_scenario(raw, EXAMPLE)
    return info.value.problems


@pytest.mark.parametrize(("mutate", "field", "words"), [
    (lambda b: b.update(cmd="x %(addr)s"), "simulators.battery", "exactly one of python"),
    (lambda b: b.pop("python"), "simulators.battery", "exactly one of python"),
    (lambda b: b.update(python="examples.home_battery.nope:X"), "simulators.battery.python", "not importable"),
    (lambda b: b.update(python="no_such_package.mod:X"), "simulators.battery.python", "not importable"),
    (lambda b: b.update(python="examples.home_battery.battery"), "simulators.battery.python", "module:Class"),
    (lambda b: (b.pop("python"), b.update(cmd="python battery.py")), "simulators.battery.cmd", "%(addr)s"),
    (lambda b: (b.pop("python"), b.update(connect="localhost:0")), "simulators.battery.connect", "[1, 65535]"),
    (lambda b: b.update(create=[]), "simulators.battery.create", "non-empty"),
    (lambda b: b["create"][0].update(n=0), "simulators.battery.create[0].n", "[1, 100000]"),
    (lambda b: b["connections"][2].update(unit="MW->kvar"), "simulators.battery.connections[2].unit",
     "active (W) and reactive"),
    (lambda b: b["connections"][2].update(unit="GW->kW"), "simulators.battery.connections[2].unit", "unknown unit"),
    (lambda b: b["connections"][2].update(unit="MW->kW", scale=2.0), "simulators.battery.connections[2]",
     "not both"),
    (lambda b: b["connections"][2].update(target="Grid.Bus-R99"), "simulators.battery.connections[2].target",
     "no entity 'Bus-R99'"),
    (lambda b: b["connections"][2].update(to="vm_pu"), "simulators.battery.connections[2].to", "no input 'vm_pu'"),
    (lambda b: b["connections"][0].update(source="BaseLoad.Load-R99"), "simulators.battery.connections[0].source",
     "no entity 'Load-R99'"),
    (lambda b: b["connections"][2].update(target="Nowhere.Bus-R15"), "simulators.battery.connections[2].target",
     "unknown simulator 'Nowhere'"),
    (lambda b: b["connections"][0].update(target="Grid.Bus-R15"), "simulators.battery.connections[0]",
     "must be an entity of 'battery'"),
    (lambda b: b["connections"][2].update(time_shifted=True), "simulators.battery.connections[2].initial",
     "needs a number"),
    (lambda b: b.update(colour="red"), "simulators.battery.colour", "unknown field"),
])
def test_bad_external_tables_are_refused_naming_the_field(mutate, field, words):
    problems = problems_of(mutate)
    assert any(p.startswith(field) and words in p for p in problems), problems


def test_line_is_a_source_not_a_target():
    """Lines publish loading but take no input; the message lists what they publish."""
    from simulators.grid.naming import element_eids
    from adapters.networks import load_network

    line = next(iter(element_eids(load_network("cigre_lv", ROOT), "line").values()))
    problems = problems_of(lambda b: b["connections"][2].update(target=f"Grid.{line}"))
    assert any("has no input 'p_kw' (inputs: none)" in p for p in problems), problems
    raw = raw_of(EXAMPLE)
    raw["simulators"]["battery"]["connections"].append(
        {"source": f"Grid.{line}", "from": "loading_percent", "target": "Battery-0", "to": "p_load_kw",
         "time_shifted": True, "initial": 0.0})
    parse_scenario(copy.deepcopy(raw), EXAMPLE)  # accepted


def test_time_shifted_scaled_connection_from_a_grid_line(tmp_path):
    """A loop (battery -> grid -> battery) closed by a time-shifted connection: the
    battery sees the line's loading of the step before, x 0.01, and ``initial`` at t = 0."""
    raw = raw_of(EXAMPLE, end=dt.datetime(2024, 1, 17, 17, 0))
    b = raw["simulators"]["battery"]
    b["record"] = ["p_load_kw", "p_kw"]
    b["connections"].append({"source": "Grid.Line-R1-R2", "from": "loading_percent", "target": "Battery-0",
                             "to": "p_load_kw", "time_shifted": True, "initial": 0.0, "scale": 0.01})
    run_case(case_of(raw), tmp_path, plots=False)
    seen = pivot(tmp_path, "Battery", "p_load_kw")["Battery-0"]
    home = pivot(tmp_path, "Load", "p_kw")["Load-R15"] + pivot(tmp_path, "PV", "p_kw")["PV-16-0"]
    line = pivot(tmp_path, "Line", "loading_percent")["Line-R1-R2"]
    want = home + (line.shift(1).fillna(0.0) * 0.01)
    np.testing.assert_allclose(seen.to_numpy(), want.to_numpy(), rtol=1e-12, atol=1e-12)
    assert (line.iloc[:-1] > 1.0).all()  # the shifted term is not negligible


def test_pv_source_must_be_a_unit_the_pv_simulator_will_create():
    """A PV unit moved to another bus renames its entity: the connection naming the old
    name is refused before start (found by the scenario fuzz: it failed at set-up)."""
    raw = raw_of(EXAMPLE)
    raw["pv"]["units"][1]["bus"] = 1  # R15 (bus 16) -> bus index 1: PV-16-0 is no more
    with pytest.raises(ScenarioError) as info:
        parse_scenario(raw, EXAMPLE)
    assert any(p.startswith("simulators.battery.connections[") and "no entity 'PV-16-0'" in p
               and "PV-1-0" in p for p in info.value.problems), info.value.problems
    parse_scenario(raw_of(EXAMPLE), EXAMPLE)  # the shipped example names its units right
