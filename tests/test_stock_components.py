"""Built-in simulators replaced by stock mosaik components, by configuration.

- ``baseload.reader = "mosaik-csv"``: the base-load CSV served by the stock
  ``mosaik_csv:CSV`` simulator (adapters/load_relay.py) gives the grid and the
  recorder the same loads as the built-in CSV reader, step by step.
- ``grid.simulator = "mosaik-pandapower-2"`` (scenarios/default_mosaik_pandapower.toml,
  adapters/pandapower2.py): the default study's bus voltages equal the built-in
  grid's to 1e-6 pu, and the summary's violation counts are computed from them.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from adapters.networks import load_network
from adapters.profiles import write_timeseries_csv
from scenarios.config import ScenarioError, parse_scenario
from scenarios.runner import baseload_model, run_case
from simulators.recorder.model import is_complete, read_table

pytest.importorskip("mosaik_csv")
pytest.importorskip("mosaik_components.pandapower")

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "scenarios" / "default.toml"
STOCK_GRID = ROOT / "scenarios" / "default_mosaik_pandapower.toml"
END = dt.datetime(2024, 1, 17, 20, 0)  # 16 steps of 15 min
Q_FROM_FILE = ("Load-R1", "Load-I2")  # these loads get a q column, the rest their power factor


def pivot(out: Path, table: str, attr: str) -> pd.DataFrame:
    return read_table(out, table).pivot(index="time_s", columns="entity", values=attr)


def default_raw(end: dt.datetime = END) -> dict:
    raw = tomllib.loads(DEFAULT.read_text())
    raw["scenario"]["end"] = end
    return raw


def write_load_csv(path: Path) -> None:
    """The default study's SimBench loads as a base-load CSV (15-min rows, 2 h margin),
    q columns for :data:`Q_FROM_FILE` (twice their power-factor value, so it shows)."""
    case = parse_scenario(default_raw(END + dt.timedelta(hours=2)), DEFAULT).cases[0]
    model = baseload_model(case, load_network(case.grid.network, case.base_dir))
    p, q = model.window(0, case.scenario.n_steps)
    index = pd.date_range(case.scenario.start, periods=case.scenario.n_steps, freq="15min")
    frame = pd.DataFrame({f"{ld.eid}.p_kw": p[:, j] for j, ld in enumerate(model.loads)}, index=index)
    for j, ld in enumerate(model.loads):
        if ld.eid in Q_FROM_FILE:
            frame[f"{ld.eid}.q_kvar"] = 2.0 * q[:, j]
    write_timeseries_csv(path, frame, "BaseLoad")


def csv_case(tmp_path: Path, reader: str, scale: float = 1.3):
    raw = default_raw()
    raw["baseload"] = {"source": "csv", "csv_path": "loads.csv", "reader": reader, "scale": scale}
    return parse_scenario(raw, tmp_path / "scenario.toml").cases[0]


@pytest.fixture(scope="module")
def csv_runs(tmp_path_factory):
    """The default study's first four hours on a base-load CSV: built-in reader, stock mosaik-csv."""
    base = tmp_path_factory.mktemp("stock_csv")
    write_load_csv(base / "loads.csv")
    return {reader: run_case(csv_case(base, reader), base / reader, plots=False)
            for reader in ("builtin", "mosaik-csv")}


def test_mosaik_csv_loads_equal_builtin_reader(csv_runs):
    builtin, stock = (csv_runs[r].out_dir for r in ("builtin", "mosaik-csv"))
    assert is_complete(stock) and csv_runs["mosaik-csv"].summary["recorded_steps"] == 16
    for attr in ("p_kw", "q_kvar"):
        a, b = pivot(builtin, "Load", attr), pivot(stock, "Load", attr)
        assert a.shape == (16, len(load_ids())) and list(a.columns) == list(b.columns) and list(a.index) == list(b.index)
        np.testing.assert_allclose(b.to_numpy(), a.to_numpy(), rtol=1e-12, atol=1e-12)
    # and the grid saw the same loads: the same voltages
    va, vb = pivot(builtin, "Bus", "vm_pu"), pivot(stock, "Bus", "vm_pu")
    assert np.abs(vb.to_numpy() - va.to_numpy()).max() < 1e-12


def test_mosaik_csv_loads_scaled_from_file(csv_runs):
    """Independent of the built-in reader: the recorded loads are scale x the file's values."""
    out = csv_runs["mosaik-csv"].out_dir
    path = Path(csv_runs["mosaik-csv"].out_dir).parent / "loads.csv"
    frame = pd.read_csv(path, header=1, index_col=0, parse_dates=True).iloc[:16]
    p = pivot(out, "Load", "p_kw")
    for eid in ("Load-R1", "Load-R11", "Load-C20"):
        np.testing.assert_allclose(p[eid].to_numpy(), 1.3 * frame[f"{eid}.p_kw"].to_numpy(), rtol=1e-12)
    q = pivot(out, "Load", "q_kvar")
    for eid in Q_FROM_FILE:  # the file's q column (twice the power-factor value), not the power factor
        np.testing.assert_allclose(q[eid].to_numpy(), 1.3 * frame[f"{eid}.q_kvar"].to_numpy(), rtol=1e-12)
        assert np.abs(q[eid] - 0.5 * 1.3 * frame[f"{eid}.q_kvar"].to_numpy()).max() > 1e-3


def test_mosaik_csv_reader_checked_before_start(tmp_path):
    raw = default_raw()
    raw["baseload"] = {"source": "simbench", "reader": "mosaik-csv"}
    with pytest.raises(ScenarioError, match="baseload.reader: 'mosaik-csv' serves a CSV file"):
        parse_scenario(raw, tmp_path / "s.toml")
    index = pd.date_range("2024-01-17 15:00", periods=30, freq="30min")  # rows two steps apart
    write_timeseries_csv(tmp_path / "loads.csv", pd.DataFrame(
        {f"{e}.p_kw": 1.0 for e in load_ids()}, index=index), "BaseLoad")
    with pytest.raises(ScenarioError, match=r"rows exactly scenario.step_s = 900 s apart .* \[1800.0\]"):
        csv_case(tmp_path, "mosaik-csv")


def load_ids() -> list[str]:
    from simulators.grid.naming import element_eids

    return sorted(element_eids(load_network("cigre_lv", ROOT), "load").values())


# ------------------------------------------------------- mosaik-pandapower-2 ---

GRID_END = dt.datetime(2024, 1, 17, 22, 0)  # 24 steps: the EVs' evening peak, below 0.92 pu


@pytest.fixture(scope="module")
def grid_runs(tmp_path_factory):
    """The default study's first six hours on the built-in grid and on the shipped stock-grid scenario."""
    base = tmp_path_factory.mktemp("stock_grid")
    out = {}
    for name, path in (("builtin", DEFAULT), ("stock", STOCK_GRID)):
        raw = tomllib.loads(path.read_text())
        raw["scenario"]["end"] = GRID_END
        out[name] = run_case(parse_scenario(raw, path).cases[0], base / name, plots=name == "stock")
    return out


def test_shipped_scenario_is_the_default_study_on_the_stock_grid():
    a, b = tomllib.loads(DEFAULT.read_text()), tomllib.loads(STOCK_GRID.read_text())
    assert b["grid"].pop("simulator") == "mosaik-pandapower-2"
    for key in ("name", "description"):
        a["scenario"].pop(key), b["scenario"].pop(key)
    assert a == b


def test_stock_grid_voltages_equal_builtin(grid_runs):
    builtin, stock = grid_runs["builtin"].out_dir, grid_runs["stock"].out_dir
    assert is_complete(stock) and grid_runs["stock"].summary["recorded_steps"] == 24
    va, vb = pivot(builtin, "Bus", "vm_pu"), pivot(stock, "Bus", "vm_pu")
    assert va.shape == vb.shape == (24, 44) and list(va.columns) == list(vb.columns)
    diff = np.abs(vb.to_numpy() - va.to_numpy()).max()
    print(f"max |vm stock - vm builtin| = {diff:.3g} pu over {va.size} bus-steps")
    assert diff < 1e-6, diff
    assert va.to_numpy().min() < 0.92  # the study's sag is in the window compared
    for attr in ("va_degree",):
        assert np.abs(pivot(stock, "Bus", attr).to_numpy() - pivot(builtin, "Bus", attr).to_numpy()).max() < 1e-4
    la, lb = pivot(builtin, "Line", "loading_percent"), pivot(stock, "Line", "loading_percent")
    assert list(la.columns) == list(lb.columns)
    assert np.abs(lb.to_numpy() - la.to_numpy()).max() < 1e-3


def test_stock_grid_summary_from_recorded_results(grid_runs):
    a, b = grid_runs["builtin"].summary, grid_runs["stock"].summary
    for key in ("violating_bus_steps", "pf_not_converged_steps", "recorded_steps", "evs_below_target_at_departure"):
        assert b[key] == a[key], key
    for key, tol in (("min_voltage_pu", 1e-6), ("max_voltage_violation_pu", 1e-6), ("mean_soc_at_departure", 1e-9),
                     ("max_line_loading_percent", 1e-4)):  # loading: 2.5e-6 % apart (solver tolerances)
        assert abs(b[key] - a[key]) < tol, key
    assert "max_trafo_loading_percent" not in b  # the stock grid has no transformers: said, not invented
    ga, gb = (read_table(r.out_dir, "Grid").set_index("time_s") for r in (grid_runs["builtin"], grid_runs["stock"]))
    for attr in ("n_bus_violations", "n_line_violations"):
        assert gb[attr].tolist() == ga[attr].tolist(), attr
    assert gb["n_trafo_violations"].isna().all() and gb["max_trafo_loading_percent"].isna().all()
    assert {"voltage_profile.png"} <= {p.name for p in grid_runs["stock"].out_dir.glob("*.png")}


# ------------------------------------------------- another collector (mosaik-csv's CSVWriter) ---

COLLECTOR = {"python": "mosaik_csv_writer:CSVWriter",
             "init": {"start_date": "{start_date}", "output_file": "{out_dir}/collected.csv"},
             "create": [{"model": "CSVWriter"}], "replaces": "recorder"}
COLL_END = dt.datetime(2024, 1, 17, 18, 0)  # 8 steps


@pytest.fixture(scope="module")
def collector_runs(tmp_path_factory):
    """The default study's first two hours: built-in recorder; the stock CSVWriter read back; it alone."""
    base = tmp_path_factory.mktemp("collector")
    out = {}
    for name, table in (("builtin", None), ("csvwriter", dict(COLLECTOR, results={
            "format": "mosaik-csv-writer", "file": "collected.csv"})), ("unread", COLLECTOR)):
        raw = default_raw(COLL_END)
        if table:
            raw["simulators"] = {"collector": table}
        out[name] = run_case(parse_scenario(raw, DEFAULT).cases[0], base / name, plots=name == "csvwriter")
    return out


def test_collector_output_read_back_equals_recorder(collector_runs):
    a, b = collector_runs["builtin"], collector_runs["csvwriter"]
    assert (b.out_dir / "collected.csv").is_file() and is_complete(b.out_dir)
    assert b.summary["external_simulators"]["collector"]["replaces"] == "recorder"
    for key, value in a.summary.items():
        if key in ("wall_seconds", "world_run_seconds", "setup_seconds", "solve_seconds"):
            continue
        assert b.summary[key] == pytest.approx(value, rel=1e-12, abs=1e-12) if isinstance(value, float) \
            else b.summary[key] == value, key
    for table, attr in (("Bus", "vm_pu"), ("EV", "soc"), ("Load", "p_kw"), ("PV", "p_kw"), ("EVBus", "p_kw"),
                        ("Line", "loading_percent"), ("Trafo", "loading_percent"), ("Grid", "vm_min_pu")):
        pa, pb = pivot(a.out_dir, table, attr), pivot(b.out_dir, table, attr)
        assert pa.shape == pb.shape and pa.shape[0] == 8, table
        np.testing.assert_allclose(pb.to_numpy(dtype=float), pa.to_numpy(dtype=float), rtol=1e-15, err_msg=table)
    assert (b.out_dir / "voltage_profile.png").is_file()


def test_collector_not_read_back_says_what_is_missing(collector_runs):
    c = collector_runs["unread"]
    assert (c.out_dir / "collected.csv").is_file() and is_complete(c.out_dir)
    assert c.summary["recorder"].startswith("replaced by simulators.collector")
    assert "not_available" in c.summary and "min_voltage_pu" not in c.summary
    assert not list((c.out_dir / "results").glob("*.parquet"))


def test_collector_table_checked_before_start(tmp_path):
    raw = default_raw(COLL_END)
    raw["simulators"] = {"collector": dict(COLLECTOR, replaces="grid", results={"format": "hdf5", "file": "x"})}
    with pytest.raises(ScenarioError) as info:
        parse_scenario(raw, DEFAULT)
    text = "\n".join(info.value.problems)
    assert "simulators.collector.replaces: must be one of recorder" in text
    assert "simulators.collector.results: must be { format = one of mosaik-csv-writer" in text
    raw["simulators"] = {"collector": COLLECTOR, "recorder": {"starter": "cmd"},
                         "other": dict(COLLECTOR, results={"format": "mosaik-csv-writer", "file": "o.csv"})}
    with pytest.raises(ScenarioError) as info:
        parse_scenario(raw, DEFAULT)
    text = "\n".join(info.value.problems)
    assert "simulators: at most one collector may replace the recorder, got ['collector', 'other']" in text
    assert "simulators.recorder: the recorder is replaced by simulators.collector" in text


def test_stock_grid_adapter_publishes_every_builtin_grid_output():
    """Whatever the runner may connect from the project's Grid entity, the adapter has (maybe None)."""
    from adapters.pandapower2 import RESULTS_META
    from simulators.grid.mosaik_api import GRID_OUTPUTS

    assert set(GRID_OUTPUTS) <= set(RESULTS_META["models"]["Grid"]["attrs"])
