"""Seed 001 end to end: conventional vs autonomous EVs through the co-simulation.

Runs ``scenarios/seed001_lv.toml`` unchanged (98 EVs, 16:00-08:00, 1-h steps; both cases
take about 10-15 s together) and checks the paper's qualitative result on the AC grid
simulator's numbers (docs/results_seed001.md, measured 2026-11-22: Metric 3 6 h vs 4 h,
Metric 1 19.39 vs 18.43, every autonomous EV charging at R1).
"""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import numpy as np
import pandapower.topology as top
import pytest

from adapters.networks import load_network
from scenarios.config import parse_scenario
from scenarios.runner import run_case
from simulators.grid.naming import element_eids
from simulators.recorder.model import pivot, read_table
from tests.support.scenario_raw import load_raw

ROOT = Path(__file__).resolve().parents[1]
SEED001 = ROOT / "scenarios" / "seed001_lv.toml"

# AC tolerance on the band: the plans are linear-model plans corrected once against AC
# (``ac_iterations = 1``); measured worst case 0.91995 pu (conventional, seeds 1-3).
VM_TOL_PU = 5e-4
# AC transformer loading over the 100 % limit: linearisation of the transformer's
# apparent power (measured 100.7 % conventional, 98.4 % autonomous).
TRAFO_TOL_PERCENT = 1.5


def seed001_raw(**overrides) -> dict:
    """The seed 001 scenario as a TOML dict, ``table.key`` overrides applied."""
    return load_raw(SEED001, **overrides)


def residential_vm(out_dir: Path):
    """AC voltage magnitudes of the residential feeder's LV buses, steps x buses [pu]."""
    vm = pivot(out_dir, "Bus", "vm_pu")
    cols = [c for c in vm.columns if str(c).startswith("Bus-R") and str(c) != "Bus-R0"]
    return vm[cols]


def charging_distance_m(out_dir: Path) -> float:
    """Mean line-length distance from the transformer's LV busbar (R1) to the bus where
    each EV charges [m]."""
    net = load_network("cigre_lv")
    graph = top.create_nxgraph(net, calc_branch_impedances=False)
    r1 = int(net.bus.index[net.bus.name == "Bus R1"][0])
    dist = nx.single_source_dijkstra_path_length(graph, r1, weight="weight")
    ev = read_table(out_dir, "EV")
    bus = ev[ev["p_kw"] > 1e-6].groupby("entity")["bus"].first()
    index = {eid: i for i, eid in element_eids(net, "bus").items()}  # EV.bus is the entity name
    return 1000.0 * float(np.mean([dist[index[b]] for b in bus]))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    scenario = parse_scenario(seed001_raw(), SEED001)
    out = tmp_path_factory.mktemp("seed001")
    return {case.name: run_case(case, out / case.name, plots=False) for case in scenario.cases}


def test_both_cases_finish_with_the_paper_fleet(study):
    assert set(study) == {"conventional", "autonomous"}
    for result in study.values():
        assert result.summary["n_evs"] == 98
        assert result.summary["recorded_steps"] == 16
        assert result.summary["pf_not_converged_steps"] == 0


def test_autonomous_evs_reach_the_target_sooner(study):
    conv = study["conventional"].summary["hours_until_all_at_target"]
    auto = study["autonomous"].summary["hours_until_all_at_target"]
    assert conv is not None and auto is not None
    # measured 6 h vs 4 h (paper: 7 h vs 4 h)
    assert auto + 2.0 <= conv


def test_autonomous_evs_have_lower_metric1(study):
    # measured 19.39 vs 18.43 (paper: 373 vs 300, another scale)
    assert study["autonomous"].summary["soc_deviation_sq_sum"] < study["conventional"].summary["soc_deviation_sq_sum"]


def test_autonomous_evs_pay_the_return_drive(study):
    # Metric 2: moved EVs end 60 Wh (0.375 %) below target; conventional EVs reach it
    assert study["autonomous"].summary["soc_shortfall_sum"] > study["conventional"].summary["soc_shortfall_sum"]


def test_autonomous_evs_charge_nearer_the_transformer(study):
    parked = charging_distance_m(study["conventional"].out_dir)
    moved = charging_distance_m(study["autonomous"].out_dir)
    assert parked == pytest.approx(125.8, abs=1.0)  # Table I's parking nodes
    assert moved < parked


@pytest.mark.parametrize("case", ["conventional", "autonomous"])
def test_both_cases_inside_the_band_in_ac(study, case):
    vm = residential_vm(study[case].out_dir)
    assert vm.to_numpy().min() >= 0.92 - VM_TOL_PU
    assert vm.to_numpy().max() <= 1.08 + VM_TOL_PU
    assert study[case].summary["max_trafo_loading_percent"] <= 100.0 + TRAFO_TOL_PERCENT


def test_voltage_binds_only_for_conventional_evs(study):
    """The mechanism: conventional EVs at R15-R18 are voltage-bound in the evening;
    autonomous EVs leave the voltage band slack (the transformer binds instead)."""
    conv = residential_vm(study["conventional"].out_dir).min(axis=1)
    auto = residential_vm(study["autonomous"].out_dir).min(axis=1)
    assert (conv < 0.92 + 1e-3).sum() >= 3
    assert auto.min() > 0.925


def test_base_load_alone_inside_the_band(tmp_path):
    raw = seed001_raw(**{"fleet.counts": {}})
    raw["cases"] = [{"name": "base", "scheduler": {"strategy": "uncoordinated"}}]
    result = run_case(parse_scenario(raw, SEED001).cases[0], tmp_path, plots=False)
    vm = residential_vm(result.out_dir).to_numpy()
    assert vm.min() > 0.92 + 0.01  # measured 0.936 pu
    assert result.summary["max_trafo_loading_percent"] < 100.0
