"""Sweeps (scenarios/sweep.py): validation, penetration, Dask vs serial, worker loss, resume."""

from __future__ import annotations

import datetime as dt
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from scenarios.config import ScenarioError, parse_scenario
from scenarios.sweep import (
    POINTS_DIR,
    TIMING_KEYS,
    dask_client,
    expand,
    households,
    penetration_counts,
    run_sweep,
)

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "scenarios" / "test_sweep.toml"  # base_dir for network look-ups; never read


def tiny(**sweep) -> dict:
    """A 2-step CIGRE LV scenario with a small sweep (4 points unless overridden)."""
    return {
        "scenario": {"name": "tiny", "seed": 1, "start": dt.datetime(2024, 1, 17, 17),
                     "end": dt.datetime(2024, 1, 17, 18), "step_s": 1800},
        "grid": {"network": "cigre_lv", "monitor_buses": "R"},
        "baseload": {"source": "nominal"},
        "fleet": {"counts": {"R1": 4, "R15": 2, "R18": 2}, "arrival": "fixed", "arrival_fixed_h": 17.0},
        "sweep": sweep or {"axes": {"penetration_percent": [50, 100], "strategy": ["uncoordinated", "smart"]}},
    }


def comparable(table):
    """The merged table without the columns that measure time or how a point was obtained."""
    drop = [c for c in (*TIMING_KEYS, "resumed") if c in table]
    return table.drop(columns=drop).sort_values("point").reset_index(drop=True)


# -------------------------------------------------------------- validation ---


def test_bad_axes_are_listed_in_one_error():
    raw = tiny(axes={"penetration_percent": [0, 120], "strategy": ["smart", "smrt", "v2g"],
                     "seed": [1, -2], "network": ["cigre_lv", "no_such_grid"], "speed": [1]},
               workers=-1)
    with pytest.raises(ScenarioError) as err:
        parse_scenario(raw, SOURCE)
    problems = err.value.problems
    expected = ["sweep.axes.penetration_percent[1]", "sweep.axes.strategy[1]", "sweep.axes.strategy[2]",
                "sweep.axes.seed[1]", "sweep.axes.network[1]", "sweep.axes.speed", "sweep.workers"]
    for name in expected:
        assert sum(p.startswith(name + ":") for p in problems) == 1, (name, problems)
    assert len(problems) == len(expected), problems
    assert "needs fleet.can_discharge" in next(p for p in problems if p.startswith("sweep.axes.strategy[2]"))


def test_bad_axis_exits_2_before_anything_runs(tmp_path, capsys):
    import run_cosim

    path = tmp_path / "bad.toml"
    path.write_text('[sweep.axes]\npenetration_percent = { start = 0, stop = 100, step = -10 }\n')
    assert run_cosim.main([str(path), "--out", str(tmp_path / "out")]) == 2
    assert "sweep.axes.penetration_percent: a range needs step > 0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_points_list_and_product_expand():
    product = parse_scenario(tiny(axes={"seed": {"start": 1, "stop": 3, "step": 1},
                                        "strategy": ["uncoordinated", "smart"]}), SOURCE)
    points = expand(product)
    assert [p.id for p in points][:3] == ["uncoordinated_seed1", "uncoordinated_seed2", "uncoordinated_seed3"]
    assert len(points) == 6 and len({p.id for p in points}) == 6
    assert points[4].case.scheduler.strategy == "smart" and points[4].case.scenario.seed == 2
    listed = parse_scenario(tiny(points=[{"soc_target": 0.8, "seed": 4}, {"soc_target": 0.9, "seed": 5}]), SOURCE)
    assert [(p.case.fleet.soc_target, p.case.scenario.seed) for p in expand(listed)] == [(0.8, 4), (0.9, 5)]
    with pytest.raises(ScenarioError, match="every point must set the same axes"):
        parse_scenario(tiny(points=[{"seed": 1}, {"soc_target": 0.9}]), SOURCE)


# ------------------------------------------------------------- penetration ---


@given(st.dictionaries(st.integers(0, 40), st.integers(1, 6), min_size=1, max_size=8),
       st.integers(0, 2**32 - 1), st.floats(0, 100), st.floats(0, 100))
def test_penetration_counts_are_nested_and_exact(homes, seed, a, b):
    lo, hi = sorted((a, b))
    n = sum(homes.values())
    c_lo, c_hi = penetration_counts(homes, lo, seed), penetration_counts(homes, hi, seed)
    assert sum(c_lo.values()) == int(lo / 100 * n + 0.5)
    assert all(c_hi.get(bus, 0) >= k for bus, k in c_lo.items())  # every lower-penetration EV stays
    assert all(k <= homes[bus] for bus, k in c_hi.items())  # at most one EV per household
    assert penetration_counts(homes, 100, seed) == homes


def test_households_simbench_loads_and_cigre_reference():
    from adapters.networks import load_network

    cigre = load_network("cigre_lv")
    assert households(cigre, {"R1": 50, "R11": 3}) == {2: 50, 12: 3}
    net = load_network("simbench:1-LV-semiurb4--0-sw")
    homes = households(net, {"R1": 50})  # the CIGRE reference does not apply to a SimBench grid
    assert sum(homes.values()) == int(net.load["profile"].str.startswith("H0").sum()) == 32


# -------------------------------------------------------------- execution ---


@pytest.fixture(scope="module")
def client():
    import psutil

    with dask_client(workers=2) as c:
        addresses = [c.scheduler.address, *c.scheduler_info()["workers"]]
        assert all(a.startswith("tcp://127.0.0.1:") for a in addresses), addresses  # loopback only
        yield c
    # multiprocessing's resource tracker stays until this process exits (it holds nothing)
    def left() -> list:
        alive = []
        for p in psutil.Process().children(recursive=True):
            try:
                cmd = p.cmdline()
            except (psutil.ZombieProcess, psutil.NoSuchProcess):
                continue  # exited (a zombie only waits to be reaped by its parent)
            if "multiprocessing.resource_tracker" not in " ".join(cmd):
                alive.append(cmd)
        return alive

    deadline = time.monotonic() + 30
    while left() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left(), left()  # no worker, nanny or writer process outlives the cluster


@pytest.fixture(scope="module")
def serial_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("serial")
    scenario = parse_scenario(tiny(), SOURCE)
    return scenario, out, run_sweep(scenario, out, serial=True, echo=lambda s: None, progress=False)


def test_cluster_sweep_is_bit_identical_to_serial(serial_run, client, tmp_path):
    scenario, _, serial = serial_run
    assert serial.n_failed == 0 and len(serial.table) == 4
    cluster = run_sweep(scenario, tmp_path, client=client, echo=lambda s: None, progress=False)
    assert cluster.n_failed == 0
    a, b = comparable(serial.table), comparable(cluster.table)
    assert a.columns.tolist() == b.columns.tolist()
    assert a.equals(b)  # every summary figure, exactly
    assert (tmp_path / "sweep.parquet").is_file() and (tmp_path / "hosting_capacity.md").is_file()


def test_resume_skips_completed_points(serial_run):
    scenario, out, first = serial_run
    markers = {p: (p / "COMPLETE").stat().st_mtime_ns for p in (out / POINTS_DIR).iterdir()}
    redo = sorted(markers)[0]
    (redo / "COMPLETE").unlink()
    again = run_sweep(scenario, out, serial=True, plots=False, echo=lambda s: None, progress=False)
    assert again.n_resumed == 3 and again.n_failed == 0
    for p, mtime in markers.items():
        assert ((p / "COMPLETE").stat().st_mtime_ns == mtime) == (p != redo)
    assert comparable(again.table).equals(comparable(first.table))


def test_killed_worker_loses_no_point(client, tmp_path):
    scenario = parse_scenario(tiny(axes={"seed": [1, 2, 3, 4]}), SOURCE)
    killed: list[int] = []

    def kill_a_busy_worker() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            busy = [w for w, keys in client.processing().items() if keys]
            started = list((tmp_path / POINTS_DIR).glob("*/metadata.json"))
            if busy and started:
                pid = client.run(os.getpid, workers=busy[:1])[busy[0]]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_a_busy_worker)
    killer.start()
    result = run_sweep(scenario, tmp_path, client=client, echo=lambda s: None, progress=False)
    killer.join()
    assert killed, "no worker was killed: the sweep finished first"
    assert result.n_failed == 0 and len(result.table) == 4
    assert (result.table["status"] == "ok").all()
    assert (result.table["recorded_steps"] == 2).all()
    client.wait_for_workers(2, timeout=60)  # the nanny restarted the killed worker


def test_points_write_inline_without_a_child_process(tmp_path, monkeypatch):
    """A point spawns no recorder writer process (per-point start-up, CPU taken from
    the other workers); the same tables as with the writer process."""
    import simulators.recorder.mosaik_api as rec_api
    from scenarios.runner import run_case
    from scenarios.sweep import run_point
    from simulators.recorder.model import read_table

    case = expand(parse_scenario(tiny(), SOURCE))[0].case
    with_child = run_case(case, tmp_path / "process", plots=False, recorder_writer="process")

    def no_child(*args, **kwargs):
        raise AssertionError("a sweep point started a writer process")

    monkeypatch.setattr(rec_api, "WriterProcess", no_child)
    res = run_point(case, str(tmp_path / "inline"))
    assert res["status"] == "ok", res
    for table in ("Bus", "EV"):
        assert read_table(tmp_path / "inline", table).equals(read_table(tmp_path / "process", table))
    assert {k: v for k, v in res["summary"].items() if k not in TIMING_KEYS} == \
        {k: v for k, v in with_child.summary.items() if k not in TIMING_KEYS}
