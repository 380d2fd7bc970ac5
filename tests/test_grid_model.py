"""GridModel against plain pandapower.runpp on the same network and loads."""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pandapower as pp
import pandapower.toolbox
import pytest

from adapters.networks import load_network
from simulators.grid.model import INJECTION_LOAD_NAME, GridLimits, GridModel, GridState

VM_TOL = 1e-9  # [pu]
LIMITS = GridLimits(vm_min_pu=0.9, vm_max_pu=1.1)


@pytest.fixture(scope="module")
def nets():
    return {name: load_network(name) for name in ("cigre_lv", "cigre_mv")}


@pytest.fixture(scope="module")
def models(nets):
    """One model per network, shared: tests must leave them at zero injections."""
    return {name: GridModel(net, LIMITS) for name, net in nets.items()}


def reference(net) -> pp.pandapowerNet:
    """Plain runpp, tight tolerance, on a copy of ``net``."""
    ref = copy.deepcopy(net)
    pp.runpp(ref, numba=False, tolerance_mva=1e-12)
    return ref


def assert_matches(state: GridState, ref: pp.pandapowerNet) -> None:
    assert state.pf_converged
    np.testing.assert_allclose(state.vm_pu, ref.res_bus["vm_pu"].loc[state.bus_ids], rtol=0,
                               atol=VM_TOL)
    np.testing.assert_allclose(state.va_degree, ref.res_bus["va_degree"].loc[state.bus_ids],
                               rtol=0, atol=1e-7)
    line = ref.res_line.loc[state.line_ids]
    np.testing.assert_allclose(state.line_i_ka, np.nan_to_num(line["i_ka"]), rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(state.line_loading_percent, np.nan_to_num(line["loading_percent"]),
                               rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(state.line_p_from_kw, 1e3 * np.nan_to_num(line["p_from_mw"]),
                               rtol=1e-7, atol=1e-6)
    np.testing.assert_allclose(state.line_q_from_kvar, 1e3 * np.nan_to_num(line["q_from_mvar"]),
                               rtol=1e-7, atol=1e-6)
    trafo = ref.res_trafo.loc[state.trafo_ids]
    np.testing.assert_allclose(state.trafo_loading_percent, trafo["loading_percent"], rtol=1e-7,
                               atol=1e-7)
    np.testing.assert_allclose(state.trafo_p_hv_kw, 1e3 * trafo["p_hv_mw"], rtol=1e-7, atol=1e-6)
    np.testing.assert_allclose(state.trafo_q_hv_kvar, 1e3 * trafo["q_hv_mvar"], rtol=1e-7,
                               atol=1e-6)
    assert state.vm_min_pu == pytest.approx(ref.res_bus["vm_pu"].min(), abs=VM_TOL)
    assert state.vm_max_pu == pytest.approx(ref.res_bus["vm_pu"].max(), abs=VM_TOL)


@pytest.mark.parametrize("name", ["cigre_lv", "cigre_mv"])
def test_zero_injections_equal_runpp(nets, models, name):
    model = models[name]
    assert model.solver == "direct", model.solver_note
    state = model.step()
    assert_matches(state, reference(nets[name]))
    assert state.n_bus_violations == int(((state.vm_pu < 0.9) | (state.vm_pu > 1.1)).sum())


def test_network_is_not_modified(nets, models):
    net = nets["cigre_lv"]
    assert INJECTION_LOAD_NAME not in set(net.load["name"])
    injections = models["cigre_lv"].net.load["name"] == INJECTION_LOAD_NAME
    assert injections.sum() == len(net.bus)


@pytest.mark.parametrize("name,scale_kw", [("cigre_lv", 1.0), ("cigre_mv", 100.0)])
def test_bus_injection_equals_added_load(nets, models, name, scale_kw):
    net, model = nets[name], models[name]
    buses = list(net.bus.index[[3, 7, -1]])
    p = {buses[0]: [4.0 * scale_kw, 3.0 * scale_kw],  # two sources at one bus are summed
         buses[1]: -5.0 * scale_kw,                   # generation (load convention)
         buses[2]: {"ev": 2.0 * scale_kw, "pv": -0.5 * scale_kw}}
    q = {buses[0]: 1.0 * scale_kw, buses[2]: -0.7 * scale_kw}
    state = model.step(bus_p_kw=p, bus_q_kvar=q)
    ref = copy.deepcopy(net)
    totals = {buses[0]: (7.0, 1.0), buses[1]: (-5.0, 0.0), buses[2]: (1.5, -0.7)}
    for bus, (p_kw, q_kvar) in totals.items():
        pp.create_load(ref, bus, p_mw=p_kw * scale_kw / 1e3, q_mvar=q_kvar * scale_kw / 1e3)
    assert_matches(state, reference(ref))
    assert_matches(model.step(), reference(net))  # injections hold for one step only


def test_load_override_replaces_value(nets, models):
    net, model = nets["cigre_mv"], models["cigre_mv"]
    loads = list(net.load.index[:3])
    state = model.step(load_p_kw={loads[0]: 0.0, loads[1]: 2500.0},
                       load_q_kvar={loads[1]: 300.0, loads[2]: -100.0})
    ref = copy.deepcopy(net)
    ref.load.loc[loads[0], "p_mw"] = 0.0
    ref.load.loc[loads[1], ["p_mw", "q_mvar"]] = [2.5, 0.3]
    ref.load.loc[loads[2], "q_mvar"] = -0.1
    assert_matches(state, reference(ref))


def test_non_convergence_then_recovery(nets, models):
    net, model = nets["cigre_mv"], models["cigre_mv"]
    before = model.timing.n_not_converged
    state = model.step(bus_p_kw={int(net.bus.index[-1]): 1e6})  # 1000 MW
    assert not state.pf_converged
    assert "not converged" in state.message
    assert model.timing.n_not_converged == before + 1
    for f in dataclasses.fields(state):
        value = getattr(state, f.name)
        if f.name in ("bus_ids", "line_ids", "trafo_ids"):
            continue
        if isinstance(value, np.ndarray) or isinstance(value, float) and f.name != "pf_seconds":
            pytest.fail(f"{f.name} published although not converged: {value!r}")
    assert state.vm_pu is None and state.n_bus_violations is None
    assert math.isfinite(state.pf_seconds)
    again = model.step()
    assert again.pf_converged and again.message == "warm start"
    assert_matches(again, reference(net))


def test_bus_indices_not_consecutive():
    """Reindexed buses, a dropped bus, an out-of-service bus and line, an open switch."""
    net = load_network("cigre_lv")
    new_index = {int(b): 1000 + 7 * k for k, b in enumerate(net.bus.index)}
    pandapower.toolbox.reindex_buses(net, new_index)
    last = int(net.bus.index[-1])
    pandapower.toolbox.drop_buses(net, [last])
    net.bus.loc[int(net.bus.index[-1]), "in_service"] = False
    net.line.loc[int(net.line.index[4]), "in_service"] = False
    model = GridModel(net, LIMITS)
    assert model.solver == "direct", model.solver_note
    bus = int(net.bus.index[20])
    state = model.step(bus_p_kw={bus: 10.0}, bus_q_kvar={bus: 2.0})
    ref = copy.deepcopy(net)
    pp.create_load(ref, bus, p_mw=0.010, q_mvar=0.002)
    ref = reference(ref)
    energised = ref.res_bus.index[ref.res_bus["vm_pu"].notna()]
    assert list(state.bus_ids) == list(energised)
    assert len(state.bus_ids) < len(net.bus)
    assert_matches(state, ref)
    assert np.all(np.isfinite(state.line_i_ka))  # out-of-service line: 0, not NaN
    with pytest.raises(ValueError, match="bus 0"):
        model.step(bus_p_kw={0: 1.0})


def test_runpp_solver_equals_direct(nets, models):
    net = nets["cigre_lv"]
    slow = GridModel(net, LIMITS, solver="runpp")
    assert slow.solver == "runpp"
    bus = int(net.bus.index[-2])
    a = slow.step(bus_p_kw={bus: 20.0})
    b = models["cigre_lv"].step(bus_p_kw={bus: 20.0})
    np.testing.assert_allclose(a.vm_pu, b.vm_pu, atol=VM_TOL, rtol=0)
    np.testing.assert_allclose(a.trafo_loading_percent, b.trafo_loading_percent, rtol=1e-7)
    models["cigre_lv"].step()
    failed = slow.step(bus_p_kw={bus: 1e6})  # 1 GW in an LV feeder
    assert not failed.pf_converged and failed.vm_pu is None
    assert slow.timing.n_not_converged == 1
    again = slow.step(bus_p_kw={bus: 20.0})
    assert again.pf_converged
    np.testing.assert_allclose(again.vm_pu, a.vm_pu, atol=VM_TOL, rtol=0)


def test_unsupported_feature_falls_back_to_runpp():
    net = load_network("cigre_mv")
    bus = int(net.bus.index[5])
    pp.create_svc(net, bus=bus, x_l_ohm=1.0, x_cvar_ohm=-10.0, set_vm_pu=1.0,
                  thyristor_firing_angle_degree=90.0)
    with pytest.raises(ValueError, match="svc"):
        GridModel(net, LIMITS, solver="direct")
    model = GridModel(net, LIMITS)  # "auto"
    assert model.solver == "runpp" and "svc" in model.solver_note
    state = model.step()
    assert state.pf_converged and state.vm_pu[list(state.bus_ids).index(bus)] == pytest.approx(1.0)


def test_state_arrays_are_read_only(models):
    state = models["cigre_lv"].step()
    with pytest.raises(ValueError):
        state.vm_pu[0] = 2.0


def test_voltage_dependent_loads_match_runpp():
    net = load_network("cigre_lv")
    net.load["const_z_p_percent"] = 30.0
    net.load["const_i_q_percent"] = 50.0
    model = GridModel(net, LIMITS)
    assert model.solver == "direct", model.solver_note
    state = model.step(bus_p_kw={int(net.bus.index[-1]): 5.0})
    ref = copy.deepcopy(model.net)  # same ZIP averaging per bus, injections included
    ref.load.loc[ref.load.index[-1], "p_mw"] = 0.005
    assert_matches(state, reference(ref))


def test_violation_counts():
    net = load_network("cigre_lv")
    tight = GridLimits(vm_min_pu=0.98, vm_max_pu=0.999, max_line_loading_percent=20.0,
                       max_trafo_loading_percent=50.0)
    state = GridModel(net, tight).step()
    assert state.n_bus_violations == int(((state.vm_pu < 0.98) | (state.vm_pu > 0.999)).sum()) > 0
    assert state.n_line_violations == int((state.line_loading_percent > 20.0).sum()) > 0
    assert state.n_trafo_violations == int((state.trafo_loading_percent > 50.0).sum())
    assert state.max_line_loading_percent == pytest.approx(state.line_loading_percent.max())


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_inputs_raise(models, bad):
    model = models["cigre_lv"]
    bus = int(model.bus_ids[5])
    with pytest.raises(ValueError, match=f"bus {bus}"):
        model.step(bus_p_kw={bus: bad})
    with pytest.raises(ValueError, match=f"bus {bus}"):
        model.step(bus_q_kvar={bus: [1.0, bad]})
    load = int(model.load_ids[0])
    with pytest.raises(ValueError, match=f"load {load}"):
        model.step(load_p_kw={load: bad})
    with pytest.raises(ValueError, match="not one of the network's loads"):
        model.step(load_p_kw={10_000: 1.0})


@pytest.mark.parametrize("bad", [True, "3.0", None, [1.0, "x"]])
def test_non_numeric_inputs_raise(models, bad):
    bus = int(models["cigre_lv"].bus_ids[5])
    with pytest.raises(ValueError, match=f"bus {bus}"):
        models["cigre_lv"].step(bus_p_kw={bus: bad})


def test_non_finite_network_load_raises():
    net = load_network("cigre_lv")
    net.load.loc[net.load.index[2], "q_mvar"] = math.nan
    with pytest.raises(ValueError, match="q_mvar"):
        GridModel(net, LIMITS)


@pytest.mark.parametrize("kwargs", [
    dict(vm_min_pu=1.1, vm_max_pu=0.9),
    dict(vm_min_pu=math.nan, vm_max_pu=1.1),
    dict(vm_min_pu=0.9, vm_max_pu=1.1, max_line_loading_percent=0.0),
])
def test_limits_are_checked(kwargs):
    with pytest.raises(ValueError):
        GridLimits(**kwargs)


def test_timing_is_recorded(models):
    model = models["cigre_mv"]
    n = model.timing.n_steps
    state = model.step()
    assert model.timing.n_steps == n + 1
    assert 0 < state.pf_seconds == model.timing.pf_seconds_last
    assert model.timing.pf_seconds_total >= state.pf_seconds


SIMBENCH_LV_STORAGE = "simbench:1-LV-rural1--2-sw"  # sgens (PV) and storage units


@pytest.mark.parametrize("solver", ["direct", "runpp"])
def test_sgen_and_storage_overrides_equal_runpp(solver):
    """Sgen and storage inputs (load convention) replace the network's own values."""
    net = load_network(SIMBENCH_LV_STORAGE)
    assert len(net.sgen) and len(net.storage)
    model = GridModel(net, LIMITS, solver=solver)
    assert model.solver == solver
    rng = np.random.default_rng(3)
    sgen_p = -1e3 * net.sgen["p_mw"].to_numpy() * rng.uniform(0, 1, len(net.sgen))
    sgen_q = rng.uniform(-2, 2, len(net.sgen))
    stor_p = rng.uniform(-5, 5, len(net.storage))
    state = model.step(sgen_p_kw=dict(zip(net.sgen.index, sgen_p)),
                       sgen_q_kvar=dict(zip(net.sgen.index, sgen_q)),
                       storage_p_kw=dict(zip(net.storage.index, stor_p)))
    ref = copy.deepcopy(net)
    ref.sgen["p_mw"] = -sgen_p / 1e3  # pandapower sgens: generator convention
    ref.sgen["q_mvar"] = -sgen_q / 1e3
    ref.storage["p_mw"] = stor_p / 1e3
    assert_matches(state, reference(ref))
    # a step without inputs is back at the network's own values
    assert_matches(model.step(), reference(net))
    with pytest.raises(ValueError, match="sgen"):
        model.step(sgen_p_kw={10_000: 1.0})
