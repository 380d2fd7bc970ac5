"""Linearised grid model (simulators/grid/sensitivity.py) against full AC power flow.

The coefficients are checked against central finite differences of ``pandapower.runpp``
(an independent computation: pandapower's own Newton-Raphson and result extraction).
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import pandapower as pp
import pandapower.toolbox
import pytest

from adapters.networks import load_network
from simulators.grid.sensitivity import (
    LinearPrediction,
    Sensitivities,
    SensitivityError,
    UnknownBusError,
    compute_sensitivities,
)

TOL_PF = 1e-11  # [MVA] power-flow mismatch for finite differences
logging.getLogger("pandapower").setLevel(logging.ERROR)  # "numba cannot be imported"


def _runpp(net):
    pp.runpp(net, tolerance_mva=TOL_PF, init="results" if len(net.res_bus) else "auto")


@pytest.fixture(scope="module")
def solved():
    """name -> (solved net, Sensitivities); nets are shared: copy before changing."""
    out = {}
    for name in ("cigre_lv", "cigre_mv"):
        net = load_network(name)
        pp.runpp(net, tolerance_mva=TOL_PF)
        out[name] = (net, compute_sensitivities(net))
    return out


def _ac_state(net, sens):
    return {
        "vm": net.res_bus.vm_pu.loc[sens.bus_ids].to_numpy(),
        "i": net.res_line.i_from_ka.loc[sens.line_ids].to_numpy(),
        "pl": 1e3 * net.res_line.p_from_mw.loc[sens.line_ids].to_numpy(),
        "ql": 1e3 * net.res_line.q_from_mvar.loc[sens.line_ids].to_numpy(),
        "pt": 1e3 * net.res_trafo.p_hv_mw.loc[sens.trafo_ids].to_numpy(),
        "qt": 1e3 * net.res_trafo.q_hv_mvar.loc[sens.trafo_ids].to_numpy(),
    }


_MATRICES = {
    "vm": ("dvm_dp", "dvm_dq"),
    "i": ("di_dp", "di_dq"),
    "pl": ("dpl_dp", "dpl_dq"),
    "ql": ("dql_dp", "dql_dq"),
    "pt": ("dpt_dp", "dpt_dq"),
    "qt": ("dqt_dp", "dqt_dq"),
}


def _finite_differences(net, sens, h_kw, buses=None):
    """Central differences of the AC results w.r.t. demand at each bus [x/kW]."""
    net = copy.deepcopy(net)
    probe = pp.create_load(net, int(sens.bus_ids[0]), p_mw=0.0, q_mvar=0.0)
    cols = range(sens.bus_ids.size) if buses is None else [sens.column(b) for b in buses]
    fd = {(k, w): np.zeros((len(getattr(sens, m[0])), len(cols)))
          for k, m in _MATRICES.items() for w in "pq"}
    for c, j in enumerate(cols):
        net.load.at[probe, "bus"] = int(sens.bus_ids[j])
        for w, column in (("p", "p_mw"), ("q", "q_mvar")):
            states = []
            for sign in (1.0, -1.0):
                net.load.loc[probe, ["p_mw", "q_mvar"]] = 0.0
                net.load.at[probe, column] = sign * h_kw / 1e3
                _runpp(net)
                states.append(_ac_state(net, sens))
            for k in _MATRICES:
                fd[k, w][:, c] = (states[0][k] - states[1][k]) / (2 * h_kw)
    return fd, list(cols)


def _assert_matches(sens, fd, cols, rtol):
    for k, (mp, mq) in _MATRICES.items():
        for w, m in (("p", mp), ("q", mq)):
            exact = fd[k, w]
            if exact.size == 0:
                continue
            lin = getattr(sens, m)[:, cols]
            err = np.abs(lin - exact).max() / np.abs(exact).max()
            assert err < rtol, f"{m}: relative error {err:.2e} against finite differences"


@pytest.mark.parametrize("name, h_kw, every", [("cigre_lv", 0.05, 8), ("cigre_mv", 0.5, 4)])
def test_coefficients_match_finite_differences(solved, name, h_kw, every):
    """All rows; the columns of every 8th (LV) or 4th (MV) bus to keep the test fast.
    Steps are small: |I| of lightly loaded lines is curved enough that a 0.5 kW
    central difference is off by 3e-4 on CIGRE LV."""
    net, sens = solved[name]
    fd, cols = _finite_differences(net, sens, h_kw, buses=list(sens.bus_ids[::every]))
    _assert_matches(sens, fd, cols, rtol=1e-4)


def test_shapes_signs_and_operating_point(solved):
    for name, (net, s) in solved.items():
        n, m, k = s.bus_ids.size, s.line_ids.size, s.trafo_ids.size
        assert s.dvm_dp.shape == s.dvm_dq.shape == (n, n)
        for f in ("di_dp", "di_dq", "dpl_dp", "dpl_dq", "dql_dp", "dql_dq"):
            assert getattr(s, f).shape == (m, n)
        for f in ("dpt_dp", "dpt_dq", "dqt_dp", "dqt_dq"):
            assert getattr(s, f).shape == (k, n)
        # load convention: more demand lowers every voltage, raises the import
        assert np.all(np.diag(s.dvm_dp) < 0) and np.all(np.diag(s.dvm_dq) < 0)
        assert np.all(s.dpt_dp.sum(axis=0) > 0.99)
        # the operating point is pandapower's
        np.testing.assert_allclose(s.vm0_pu, net.res_bus.vm_pu.loc[s.bus_ids], atol=1e-12)
        np.testing.assert_allclose(s.i0_ka, net.res_line.i_from_ka.loc[s.line_ids], atol=1e-12)
        np.testing.assert_allclose(s.vm_from0_pu, net.res_line.vm_from_pu.loc[s.line_ids])
        np.testing.assert_allclose(s.pt0_kw, 1e3 * net.res_trafo.p_hv_mw.loc[s.trafo_ids])
        np.testing.assert_allclose(s.p0_kw, 1e3 * net.res_bus.p_mw.loc[s.bus_ids], atol=1e-6)
        np.testing.assert_allclose(s.q0_kvar, 1e3 * net.res_bus.q_mvar.loc[s.bus_ids], atol=1e-6)
        line = net.line.loc[s.line_ids]
        np.testing.assert_allclose(s.i_max_ka, line.max_i_ka * line.df * line.parallel)
    # CIGRE LV: three MV/LV substation trafos; CIGRE MV: two HV/MV trafos
    assert solved["cigre_lv"][1].trafo_ids.tolist() == [0, 1, 2]
    assert solved["cigre_mv"][1].trafo_ids.tolist() == [0, 1]
    # buses merged with the slack bus by bus-bus switches (CIGRE LV: 1, 20, 23) are slack
    assert not set(solved["cigre_lv"][1].bus_ids) & {0, 1, 20, 23}


def test_predict_and_column(solved):
    _, s = solved["cigre_lv"]
    at0 = s.predict(s.p0_kw, s.q0_kvar)
    assert isinstance(at0, LinearPrediction)
    np.testing.assert_allclose(at0.vm_pu, s.vm0_pu)
    np.testing.assert_allclose(at0.trafo_q_kvar, s.qt0_kvar)
    t = np.linspace(0, 1, 5)[:, None]
    dp = np.zeros(s.bus_ids.size)
    j = s.column(int(s.bus_ids[3]))
    assert j == 3
    dp[j] = 10.0
    pred = s.predict(s.p0_kw + t * dp, np.broadcast_to(s.q0_kvar, (5, s.bus_ids.size)))
    assert pred.vm_pu.shape == (5, s.bus_ids.size) and pred.i_ka.shape == (5, s.line_ids.size)
    np.testing.assert_allclose(pred.vm_pu[-1] - s.vm0_pu, 10.0 * s.dvm_dp[:, j])
    with pytest.raises(ValueError, match="last dimension"):
        s.predict(s.p0_kw[:-1], s.q0_kvar[:-1])
    with pytest.raises(KeyError, match="bus 9999"):
        s.column(9999)
    with pytest.raises(Exception):  # frozen
        s.vm0_pu = None
    fields = {f: getattr(s, f) for f in Sensitivities.__dataclass_fields__}
    with pytest.raises(ValueError, match=r"di_dq \(37, 39\) != \(37, 40\)"):
        Sensitivities(**{**fields, "di_dq": s.di_dq[:, 1:]})


@pytest.mark.parametrize("name, n_max", [("cigre_lv", 8), ("cigre_mv", 60)])
def test_prediction_error_shrinks_quadratically(solved, name, n_max):
    """First-order model: halving the injection change quarters the error (log-log
    slope 2). |I| converges to slope 2 only once the change is small against the
    operating-point current of every line, hence the small scales."""
    net, s = solved[name]
    rng = np.random.default_rng(0)
    dp = 3.6 * rng.integers(0, n_max, size=s.bus_ids.size)  # EVs at 3.6 kW
    dq = -0.5 * dp  # chargers giving reactive power
    net = copy.deepcopy(net)
    extra = [pp.create_load(net, int(b), p_mw=0.0, q_mvar=0.0) for b in s.bus_ids]
    scales = (0.2, 0.1, 0.05, 0.025)
    errs = []
    for a in scales:
        net.load.loc[extra, "p_mw"] = a * dp / 1e3
        net.load.loc[extra, "q_mvar"] = a * dq / 1e3
        _runpp(net)
        ac = _ac_state(net, s)
        lin = s.predict(s.p0_kw + a * dp, s.q0_kvar + a * dq)
        errs.append([np.abs(lin.vm_pu - ac["vm"]).max(), np.abs(lin.i_ka - ac["i"]).max(),
                     np.abs(lin.line_q_kvar - ac["ql"]).max(),
                     np.abs(lin.trafo_p_kw - ac["pt"]).max()])
    errs = np.array(errs)
    slopes = np.diff(np.log(errs), axis=0) / np.diff(np.log(scales))[:, None]
    assert np.all(slopes > 1.8) and np.all(slopes < 2.2), f"log-log slopes {slopes}"


def test_measured_operating_point_without_power_flow(solved):
    net, s = solved["cigre_lv"]
    fresh = load_network("cigre_lv")  # never solved
    assert not fresh.get("converged", False) and not len(fresh.res_bus)
    m = compute_sensitivities(
        fresh, vm_pu=net.res_bus.vm_pu.to_dict(), va_degree=net.res_bus.va_degree.to_numpy()
    )
    assert not len(fresh.res_bus)  # nothing written back
    for field in Sensitivities.__dataclass_fields__:
        np.testing.assert_allclose(getattr(m, field), getattr(s, field), rtol=1e-7, atol=1e-10,
                                   err_msg=field)
    # a different operating point gives different coefficients
    vm = net.res_bus.vm_pu.to_numpy() * 0.97
    m2 = compute_sensitivities(fresh, vm_pu=vm, va_degree=net.res_bus.va_degree.to_numpy())
    assert not np.allclose(m2.dvm_dp, s.dvm_dp, rtol=1e-3)


def _awkward_net():
    """CIGRE MV with non-consecutive bus indices, a bus merged by a bus-bus switch, an
    open bus-bus switch (isolated bus), a switched-over feeder with an out-of-service
    line, an out-of-service bus and line, a PV generator, a three-winding trafo, an
    impedance and a shunt."""
    net = load_network("cigre_mv")
    pp.toolbox.reindex_buses(net, {int(b): int(b) * 10 + 100 for b in net.bus.index})
    b5, b9 = 150, 190
    merged = pp.create_bus(net, 20.0, index=7777)
    pp.create_switch(net, b5, merged, et="b", closed=True)
    pp.create_load(net, merged, p_mw=0.2, q_mvar=0.05)
    dangling = pp.create_bus(net, 20.0, index=8888)
    pp.create_switch(net, b9, dangling, et="b", closed=False)
    pp.create_load(net, dangling, p_mw=0.1)
    oos = pp.create_bus(net, 20.0, index=9999, in_service=False)
    pp.create_line(net, b9, oos, 1.0, "NA2XS2Y 1x240 RM/25 12/20 kV", in_service=False)
    net.switch.loc[2, "closed"] = True  # S3: feeder 1 now supplied over line 13 ...
    net.line.loc[9, "in_service"] = False  # ... since line 9 (3-8) is out of service
    pp.create_gen(net, 130, p_mw=0.5, vm_pu=1.0)
    # a three-winding trafo at the substation (not reported), an impedance, a shunt
    b20 = pp.create_bus(net, 20.0, index=5555)
    b10 = pp.create_bus(net, 10.0, index=6666)
    pp.create_transformer3w(net, 100, b20, b10, "63/25/38 MVA 110/20/10 kV")
    pp.create_load(net, b20, p_mw=2.0, q_mvar=0.5)
    pp.create_load(net, b10, p_mw=1.0, q_mvar=0.3)
    pp.create_impedance(net, 230, 240, rft_pu=0.01, xft_pu=0.02, sn_mva=10.0)
    pp.create_shunt(net, 200, q_mvar=-0.4)
    return net


def test_topology_switches_out_of_service_and_pv_bus():
    net = _awkward_net()
    pp.runpp(net, tolerance_mva=TOL_PF)
    s = compute_sensitivities(net)
    assert set(s.bus_ids) == set(net.bus.index[net.res_bus.vm_pu.notna()]) - {100}
    assert 8888 not in s.bus_ids and 9999 not in s.bus_ids  # isolated, out of service
    assert 9 not in s.line_ids and net.line.index[-1] not in s.line_ids and 13 in s.line_ids
    # merged buses are one electrical node: identical columns and rows
    a, b = s.column(150), s.column(7777)
    np.testing.assert_array_equal(s.dvm_dp[:, a], s.dvm_dp[:, b])
    np.testing.assert_array_equal(s.di_dq[:, a], s.di_dq[:, b])
    assert s.vm0_pu[a] == s.vm0_pu[b]
    np.testing.assert_allclose(s.p0_kw[b], 200.0)  # split by the loads' declared power
    np.testing.assert_allclose(
        s.p0_kw[a] + s.p0_kw[b], 1e3 * net.res_bus.p_mw.loc[[150, 7777]].sum()
    )
    # the PV bus holds its voltage; Q injected there goes into the generator
    g = s.column(130)
    assert np.all(s.dvm_dp[g] == 0) and np.all(s.dvm_dq[:, g] == 0) and np.all(s.di_dq[:, g] == 0)
    assert s.trafo_ids.tolist() == [0, 1]  # the trafo3w is not reported
    fd, cols = _finite_differences(net, s, 0.2, buses=[130, 150, 6666])
    _assert_matches(s, fd, cols, rtol=1e-4)
    # measured voltages by bus index (the isolated and out-of-service buses left out)
    res = net.res_bus.dropna()
    m = compute_sensitivities(net, vm_pu=res.vm_pu.to_dict(), va_degree=res.va_degree.to_dict())
    np.testing.assert_allclose(m.dvm_dp, s.dvm_dp, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(m.di_dp, s.di_dp, rtol=1e-7, atol=1e-12)


def test_bad_input_raises_clear_errors(solved):
    fresh = load_network("cigre_mv")
    with pytest.raises(SensitivityError, match="no solved power flow.*runpp"):
        compute_sensitivities(fresh)
    no_slack = load_network("cigre_mv")
    no_slack.ext_grid.drop(no_slack.ext_grid.index, inplace=True)
    with pytest.raises(SensitivityError, match="no slack"):
        compute_sensitivities(no_slack)
    net, _ = solved["cigre_mv"]
    vm, va = net.res_bus.vm_pu.to_dict(), net.res_bus.va_degree.to_dict()
    with pytest.raises(UnknownBusError, match="unknown bus.*4242"):
        compute_sensitivities(fresh, vm_pu={**vm, 4242: 1.0}, va_degree=va)
    with pytest.raises(UnknownBusError, match="unknown bus.*'R7'"):
        compute_sensitivities(fresh, vm_pu={**vm, "R7": 1.0}, va_degree=va)
    # keys as strings (a JSON round trip through mosaik) are bus indices too
    m = compute_sensitivities(fresh, vm_pu={str(k): x for k, x in vm.items()}, va_degree=va)
    np.testing.assert_allclose(m.vm0_pu, net.res_bus.vm_pu.loc[m.bus_ids])
    with pytest.raises(SensitivityError, match=r"missing.*\[5\]"):
        compute_sensitivities(fresh, vm_pu={k: v for k, v in vm.items() if k != 5}, va_degree=va)
    with pytest.raises(SensitivityError, match="both vm_pu and va_degree"):
        compute_sensitivities(fresh, vm_pu=vm)
    with pytest.raises(SensitivityError, match="shape"):
        compute_sensitivities(fresh, vm_pu=np.ones(3), va_degree=np.zeros(3))
    with pytest.raises(SensitivityError, match="vm_pu <= 0"):
        compute_sensitivities(fresh, vm_pu={**vm, 3: 0.0}, va_degree=va)
    pp.create_xward(fresh, 4, 0.1, 0.0, 0.0, 0.0, 0.01, 0.1, 1.0)
    with pytest.raises(SensitivityError, match="xward"):  # runpp first, then it works
        compute_sensitivities(fresh, vm_pu=vm, va_degree=va)
