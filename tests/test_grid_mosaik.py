"""The grid simulator in tiny mosaik worlds, in process and as an external process."""

from __future__ import annotations

import copy
import math
import sys

import mosaik
import mosaik_api_v3
import numpy as np
import pandapower as pp
import pytest
from mosaik.starters import PythonStarter

from adapters.networks import load_network
from simulators.grid.mosaik_api import ENTITY_SPECS, GRID_OUTPUTS, META, GridSimulator
from simulators.grid.naming import element_eids

STEP = 900
ABSURD_KW = 1e6  # 1000 MW: no power-flow solution


class Source(mosaik_api_v3.Simulator):
    """Time-based: entity ``i`` publishes ``schedule[i][step index]`` as p_kw and q_kvar."""

    def __init__(self, schedule: list[list[float]]):
        super().__init__({"type": "time-based", "models": {
            "Src": {"public": True, "params": [], "attrs": ["p_kw", "q_kvar"]}}})
        self.schedule = schedule
        self.t = 0

    def init(self, sid, time_resolution=1.0):
        return self.meta

    def create(self, num, model):
        return [{"eid": f"Src-{i}", "type": "Src"} for i in range(num)]

    def step(self, time, inputs, max_advance):
        self.t = time
        return time + STEP

    def get_data(self, outputs):
        k = self.t // STEP
        return {eid: {attr: float(self.schedule[int(eid.split("-")[1])][k]) / (1 if attr == "p_kw"
                                                                            else 4)
                      for attr in attrs} for eid, attrs in outputs.items()}


class Sink(mosaik_api_v3.Simulator):
    """Time-based: logs every input it gets, per tick."""

    def __init__(self, log: list):
        super().__init__({"type": "time-based", "models": {
            "Sink": {"public": True, "params": [], "any_inputs": True, "attrs": []}}})
        self.log = log

    def init(self, sid, time_resolution=1.0):
        return self.meta

    def create(self, num, model):
        return [{"eid": "Sink", "type": "Sink"}]

    def step(self, time, inputs, max_advance):
        self.log.append((time, copy.deepcopy(inputs.get("Sink", {}))))
        return time + STEP

    def get_data(self, outputs):
        return {}


def test_meta_is_built_from_the_table():
    assert META["api_version"] == "3.0" and META["type"] == "time-based"
    assert set(META["models"]) == set(ENTITY_SPECS)
    assert META["models"]["Grid"]["public"] and not META["models"]["Bus"]["public"]
    assert set(META["models"]["Grid"]["attrs"]) == set(GRID_OUTPUTS) | {"injections"}
    assert {"vm_pu", "va_degree", "p_kw", "q_kvar"} == set(META["models"]["Bus"]["attrs"])
    assert META["models"]["Bus"]["input_combination"]["p_kw"].startswith("sum")
    assert {"loading_percent", "p_hv_kw", "q_hv_kvar"} == set(META["models"]["Trafo"]["attrs"])


@pytest.mark.parametrize("kwargs", [dict(time_resolution=0.0, step_s=900),
                                    dict(time_resolution=60.0, step_s=90),
                                    dict(time_resolution=1.0, step_s=math.nan)])
def test_init_checks_the_clock(kwargs):
    with pytest.raises(ValueError):
        GridSimulator().init("Grid-0", **kwargs)


def test_entities_inputs_and_outputs():
    sim = GridSimulator()
    sim.init("Grid-0", time_resolution=1.0, step_s=300)
    (grid,) = sim.create(1, "Grid", network="cigre_lv", vm_min_pu=0.92, vm_max_pu=1.08)
    net = load_network("cigre_lv")
    expected = [eid for element in ("bus", "load", "line", "trafo")
                for eid in element_eids(net, element).values()]
    assert grid["eid"] == "Grid" and [c["eid"] for c in grid["children"]] == expected
    with pytest.raises(ValueError, match="one Grid"):
        sim.create(1, "Grid", network="cigre_lv", vm_min_pu=0.92, vm_max_pu=1.08)
    bus_eids = element_eids(net, "bus")
    bus = int(net.bus.index[-1])
    assert sim.step(0, {bus_eids[bus]: {"p_kw": {"a.x": 3.0, "b.y": 2.0}}}, 10_000) == 300
    with pytest.raises(ValueError, match=f"{bus_eids[bus]}.p_kw from a.x"):
        sim.step(300, {bus_eids[bus]: {"p_kw": {"a.x": math.nan}}}, 10_000)
    with pytest.raises(ValueError, match="not an input"):
        sim.step(300, {"Grid": {"p_kw": {"a.x": 1.0}}}, 10_000)
    sim.step(300, {bus_eids[bus]: {"p_kw": {"a.x": 3.0, "b.y": 2.0}}}, 10_000)
    line = element_eids(net, "line")[int(net.line.index[0])]
    trafo = element_eids(net, "trafo")[int(net.trafo.index[0])]
    data = sim.get_data({"Grid": list(GRID_OUTPUTS), bus_eids[bus]: ["vm_pu", "va_degree"],
                         line: ["i_ka", "loading_percent"],
                         trafo: ["loading_percent", "p_hv_kw", "q_hv_kvar"]})
    ref = copy.deepcopy(net)
    pp.create_load(ref, bus, p_mw=0.005)
    pp.runpp(ref, numba=False, tolerance_mva=1e-12)
    assert data[bus_eids[bus]]["vm_pu"] == pytest.approx(ref.res_bus.vm_pu[bus], abs=1e-9)
    assert data["Grid"]["bus_vm_pu"][str(bus)] == data[bus_eids[bus]]["vm_pu"]
    assert data["Grid"]["vm_min_pu"] == pytest.approx(ref.res_bus.vm_pu.min(), abs=1e-9)
    assert data[trafo]["p_hv_kw"] == pytest.approx(1e3 * ref.res_trafo.p_hv_mw.iloc[0], rel=1e-7)
    for values in data.values():
        for attr, value in values.items():
            assert type(value) in (float, int, bool, dict), (attr, type(value))
            if isinstance(value, float):
                assert math.isfinite(value)
    assert type(data["Grid"]["n_bus_violations"]) is int
    assert type(data["Grid"]["pf_converged"]) is bool
    with pytest.raises(ValueError, match="not an output"):
        sim.get_data({bus_eids[bus]: ["p_kw"]})


SIMBENCH_LV = "simbench:1-LV-rural2--0-sw"  # 99 loads, 8 sgens


def _grid_state(inputs: dict, network: str = SIMBENCH_LV):
    sim = GridSimulator()
    sim.init("Grid-0", time_resolution=1.0, step_s=STEP)
    sim.create(1, "Grid", network=network, vm_min_pu=0.97, vm_max_pu=1.03)
    sim.step(0, inputs, 10_000)
    return sim.state


def test_injections_tables_equal_per_child_inputs_bit_for_bit():
    """``Grid.injections`` rows mean what the same values on the children mean: the
    same power flow to the last bit, with per-child inputs and tables mixed."""
    net = load_network(SIMBENCH_LV)
    loads, buses, sgens = (element_eids(net, e) for e in ("load", "bus", "sgen"))
    load_ids, sgen_ids = list(loads)[:3], list(sgens)[:2]
    bus_a, bus_b = (int(b) for b in net.bus.index[-2:])
    p_load, q_load = [310.25, -0.0, 0.1 + 0.2], [77.5, 12.0, -0.0]
    p_sgen, q_sgen = [-120.0, -0.0], [0.0, -3.5]
    per_child = {loads[i]: {"p_kw": {"BL.BL": p}, "q_kvar": {"BL.BL": q}}
                 for i, p, q in zip(load_ids, p_load, q_load)}
    per_child.update({sgens[i]: {"p_kw": {"D.D": p}, "q_kvar": {"D.D": q}}
                      for i, p, q in zip(sgen_ids, p_sgen, q_sgen)})
    per_child[buses[bus_a]] = {"p_kw": {"F.F": 11.0, "PV.1": -4.25}, "q_kvar": {"F.F": 0.0, "PV.1": -0.0}}
    per_child[buses[bus_b]] = {"p_kw": {"F.F": 22.0}, "q_kvar": {"F.F": -0.0}}
    ref = _grid_state(per_child)
    table = {"entity": [loads[i] for i in load_ids] + [sgens[i] for i in sgen_ids],
             "p_kw": np.array(p_load + p_sgen), "q_kvar": np.array(q_load + q_sgen)}
    fleet = {"bus": [bus_a, bus_b], "p_kw": [11.0, 22.0], "q_kvar": [0.0, -0.0]}
    pv = {buses[bus_a]: {"p_kw": {"PV.1": -4.25}, "q_kvar": {"PV.1": -0.0}}}
    for inputs in ({"Grid": {"injections": {"BL.BL": table, "F.F": fleet}}, **pv},  # mixed
                   {"Grid": {"injections": {"BL.BL": table, "F.F": fleet,
                                            "PV.1": {"bus": [bus_a], "p_kw": [-4.25], "q_kvar": [-0.0]}}}}):
        state = _grid_state(inputs)
        for attr in ("vm_pu", "va_degree", "line_i_ka", "trafo_p_hv_kw", "trafo_q_hv_kvar"):
            assert getattr(state, attr).tobytes() == getattr(ref, attr).tobytes(), attr


@pytest.mark.parametrize("table, match", [
    ({"entity": ["nope"], "p_kw": [1.0], "q_kvar": [0.0]}, "'nope' is not a Load, Sgen"),
    ({"bus": [0], "p_kw": [math.nan], "q_kvar": [0.0]}, r"p_kw of bus 0: value is not finite"),
    ({"bus": [0, 1], "p_kw": [1.0], "q_kvar": [0.0, 0.0]}, "1 values for 2 rows"),
    ({"bus": [10_000], "p_kw": [1.0], "q_kvar": [0.0]}, "10000 is not in the network"),
    ({"p_kw": [1.0], "q_kvar": [0.0]}, "'entity' or 'bus'"),
    ({"bus": [0], "p_kw": [1.0]}, "no 'q_kvar' column"),
])
def test_injections_bad_tables_name_the_source_and_row(table, match):
    with pytest.raises(ValueError, match=match):
        _grid_state({"Grid": {"injections": {"Src-0.X": table}}}, "cigre_mv")


def test_tiny_world_sums_sources_and_overrides_loads():
    net = load_network("cigre_mv")
    bus = int(net.bus.index[-1])
    load = int(net.load.index[0])
    bus_eid = element_eids(net, "bus")[bus]
    load_eid = element_eids(net, "load")[load]
    # Src-0 and Src-1 feed one bus (summed), Src-2 replaces a network load
    schedule = [[100.0, 200.0, ABSURD_KW, 50.0], [-40.0, 0.0, 0.0, 25.0],
                [0.0, 1000.0, 1000.0, 3000.0]]
    log: list = []
    config = {"Grid": PythonStarter(GridSimulator), "Src": PythonStarter(Source, args=(schedule,)),
              "Sink": PythonStarter(Sink, kwargs={"log": log})}
    with mosaik.World(config, skip_greetings=True) as world:
        grid_sim = world.start("Grid", step_s=STEP, start_date="2024-01-01T16:00:00")
        grid = grid_sim.Grid(network="cigre_mv", vm_min_pu=0.97, vm_max_pu=1.03)
        children = {e.eid: e for e in grid.children}
        srcs = world.start("Src").Src.create(3)
        sink = world.start("Sink").Sink()
        world.connect(srcs[0], children[bus_eid], "p_kw", "q_kvar")
        world.connect(srcs[1], children[bus_eid], "p_kw", "q_kvar")
        world.connect(srcs[2], children[load_eid], "p_kw", "q_kvar")
        world.connect(grid, sink, "pf_converged", "pf_seconds", "vm_min_pu", "n_bus_violations",
                      "bus_vm_pu")
        world.connect(children[bus_eid], sink, "vm_pu")
        world.run(until=4 * STEP)
    assert [t for t, _ in log] == [0, STEP, 2 * STEP, 3 * STEP]
    for k, (t, inputs) in enumerate(log):
        pf = next(iter(inputs["pf_converged"].values()))
        if k == 2:  # 1000 MW: not converged, no voltages published
            assert pf is False
            for attr in ("vm_min_pu", "n_bus_violations", "bus_vm_pu", "vm_pu"):
                assert list(inputs[attr].values()) == [None], attr  # no stale values, no NaN
            continue
        assert pf is True
        ref = copy.deepcopy(net)
        p_kw = schedule[0][k] + schedule[1][k]
        pp.create_load(ref, bus, p_mw=p_kw / 1e3, q_mvar=p_kw / 4 / 1e3)
        ref.load.loc[load, ["p_mw", "q_mvar"]] = [schedule[2][k] / 1e3, schedule[2][k] / 4 / 1e3]
        pp.runpp(ref, numba=False, tolerance_mva=1e-12)
        vm = next(iter(inputs["vm_pu"].values()))
        assert vm == pytest.approx(ref.res_bus.vm_pu[bus], abs=1e-9)
        assert next(iter(inputs["vm_min_pu"].values())) == pytest.approx(ref.res_bus.vm_pu.min(),
                                                                          abs=1e-9)
        assert next(iter(inputs["bus_vm_pu"].values()))[str(bus)] == vm
        assert next(iter(inputs["pf_seconds"].values())) > 0


def test_external_process_via_cmd():
    log: list = []
    config = {"Grid": {"cmd": f"{sys.executable} -m simulators.grid.mosaik_api %(addr)s"},
              "Sink": PythonStarter(Sink, kwargs={"log": log})}
    # mosaik's 10 s start timeout is shorter than the grid's import on a loaded machine
    with mosaik.World(config, mosaik_config={"start_timeout": 120}, skip_greetings=True) as world:
        grid = world.start("Grid", step_s=STEP).Grid(network="cigre_lv", vm_min_pu=0.92,
                                                     vm_max_pu=1.08)
        sink = world.start("Sink").Sink()
        world.connect(grid, sink, "pf_converged", "vm_min_pu")
        world.run(until=2 * STEP)
    assert len(log) == 2
    for _, inputs in log:
        assert next(iter(inputs["pf_converged"].values())) is True
        assert 0.9 < next(iter(inputs["vm_min_pu"].values())) < 1.0
