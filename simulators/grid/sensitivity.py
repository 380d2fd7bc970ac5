"""Linearised grid model from sensitivity coefficients.

Sensitivities of bus voltage magnitudes, line currents and flows and substation
transformer flows with respect to the nodal active and reactive injections at every
non-slack bus, solved from the load-flow Jacobian at an operating point (the
Jacobian-based sensitivities reviewed by Christakou et al. [1]_, eq. (2) of the arXiv
version). They linearise seed 000's load-flow functions ``f_n`` (voltages, eq. (2))
and ``h_l`` (line currents, eq. (3)); the line and transformer P/Q flows let the
ampacity and the transformer rating (seed 000, eq. (12i)) be written as cones.
Method, assumptions and measured errors: ``docs/linear_model.md``.

Pure model: no mosaik, no optimisation. All powers in kW/kvar, load convention
(consumption positive), see ``docs/conventions.md``.

References
----------
.. [1] K. Christakou, J.-Y. Le Boudec, M. Paolone, D.-C. Tomozei, "Efficient
   computation of sensitivity coefficients of node voltages and line currents in
   unbalanced radial electrical distribution networks", IEEE Trans. Smart Grid
   4(2), 741-750, 2013. arXiv:1203.6798.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
import scipy.sparse.csgraph as csgraph
import scipy.sparse.linalg as spla


@dataclass(frozen=True)
class LinearPrediction:
    """First-order prediction of the grid state for given nodal injections.

    Shapes are ``(..., n_x)`` with the leading dimensions of the injections passed to
    :meth:`Sensitivities.predict`.

    Attributes
    ----------
    vm_pu : ndarray, shape (..., n)
        Voltage magnitude of each non-slack bus (``Sensitivities.bus_ids``) [pu].
    i_ka : ndarray, shape (..., m)
        Current magnitude at the from end of each line (``line_ids``) [kA].
        Linearised magnitude; see ``line_p_kw``/``line_q_kvar`` for the cone form.
    line_p_kw, line_q_kvar : ndarray, shape (..., m)
        Active/reactive flow entering each line at its from end [kW], [kvar].
    trafo_p_kw, trafo_q_kvar : ndarray, shape (..., k)
        Active/reactive flow entering each substation transformer at its HV side
        [kW], [kvar].
    """

    vm_pu: np.ndarray
    i_ka: np.ndarray
    line_p_kw: np.ndarray
    line_q_kvar: np.ndarray
    trafo_p_kw: np.ndarray
    trafo_q_kvar: np.ndarray


@dataclass(frozen=True)
class Sensitivities:
    """Sensitivity coefficients of a grid at one operating point.

    ``n`` is the number of non-slack in-service buses, ``m`` of in-service lines,
    ``k`` of in-service transformers fed from the slack side. The columns of every
    matrix are the buses of ``bus_ids`` in that order. Injections use the load
    convention (consumption positive), so ``dvm_dp`` is mostly negative.

    Attributes
    ----------
    bus_ids : ndarray of int, shape (n,)
        pandapower bus index of each row of ``vm0_pu``/``dvm_*`` and each column of
        every matrix.
    p0_kw, q0_kvar : ndarray, shape (n,)
        Nodal net demand at the operating point [kW], [kvar] (load convention).
    vm0_pu : ndarray, shape (n,)
        Voltage magnitude at the operating point [pu].
    dvm_dp, dvm_dq : ndarray, shape (n, n)
        d vm_i / d P_j [pu/kW] and d vm_i / d Q_j [pu/kvar] (seed 000, eq. (2)
        linearised).
    line_ids : ndarray of int, shape (m,)
        pandapower line index (in-service lines).
    i0_ka, i_max_ka : ndarray, shape (m,)
        Current magnitude at the from end at the operating point, and ampacity
        ``max_i_ka * df * parallel`` [kA].
    di_dp, di_dq : ndarray, shape (m, n)
        d |I_from| / d P_j [kA/kW], d |I_from| / d Q_j [kA/kvar] (seed 000,
        eq. (3) linearised). Underestimates |I| when Q changes a lot; prefer the cone
        on ``pl``/``ql`` (``docs/linear_model.md``).
    pl0_kw, ql0_kvar : ndarray, shape (m,)
        Active/reactive flow entering the line at its from end [kW], [kvar].
    dpl_dp, dpl_dq, dql_dp, dql_dq : ndarray, shape (m, n)
        Sensitivities of the from-end line flows [kW/kW], [kW/kvar], [kvar/kW],
        [kvar/kvar].
    vm_from0_pu : ndarray, shape (m,)
        From-bus voltage magnitude at the operating point [pu] (converts S to I).
    trafo_ids : ndarray of int, shape (k,)
        pandapower trafo index of the transformers fed from the slack side.
    pt0_kw, qt0_kvar : ndarray, shape (k,)
        Flow entering each transformer at its HV side [kW], [kvar].
    st_max_kva : ndarray, shape (k,)
        Rating ``sn_mva * df * parallel * 1000`` [kVA] (as pandapower's loading).
    dpt_dp, dpt_dq, dqt_dp, dqt_dq : ndarray, shape (k, n)
        Sensitivities of the HV-side transformer flows.
    """

    bus_ids: np.ndarray
    p0_kw: np.ndarray
    q0_kvar: np.ndarray
    vm0_pu: np.ndarray
    dvm_dp: np.ndarray
    dvm_dq: np.ndarray
    line_ids: np.ndarray
    i0_ka: np.ndarray
    i_max_ka: np.ndarray
    di_dp: np.ndarray
    di_dq: np.ndarray
    pl0_kw: np.ndarray
    ql0_kvar: np.ndarray
    dpl_dp: np.ndarray
    dpl_dq: np.ndarray
    dql_dp: np.ndarray
    dql_dq: np.ndarray
    vm_from0_pu: np.ndarray
    trafo_ids: np.ndarray
    pt0_kw: np.ndarray
    qt0_kvar: np.ndarray
    st_max_kva: np.ndarray
    dpt_dp: np.ndarray
    dpt_dq: np.ndarray
    dqt_dp: np.ndarray
    dqt_dq: np.ndarray

    def __post_init__(self) -> None:
        n = np.shape(self.bus_ids)[0]
        m = np.shape(self.line_ids)[0]
        k = np.shape(self.trafo_ids)[0]
        expected = {
            "p0_kw": (n,), "q0_kvar": (n,), "vm0_pu": (n,), "dvm_dp": (n, n), "dvm_dq": (n, n),
            "i0_ka": (m,), "i_max_ka": (m,), "pl0_kw": (m,), "ql0_kvar": (m,),
            "vm_from0_pu": (m,), "pt0_kw": (k,), "qt0_kvar": (k,), "st_max_kva": (k,),
        }
        for name in ("di_dp", "di_dq", "dpl_dp", "dpl_dq", "dql_dp", "dql_dq"):
            expected[name] = (m, n)
        for name in ("dpt_dp", "dpt_dq", "dqt_dp", "dqt_dq"):
            expected[name] = (k, n)
        wrong = [f"{f} {np.shape(getattr(self, f))} != {shape}"
                 for f, shape in expected.items() if np.shape(getattr(self, f)) != shape]
        if wrong:
            raise ValueError(f"Sensitivities with inconsistent shapes (n={n}, m={m}, k={k}): "
                             + "; ".join(wrong))

    def column(self, bus_id: int) -> int:
        """Column index of pandapower bus ``bus_id`` in every matrix.

        Raises
        ------
        KeyError
            If ``bus_id`` is not a non-slack in-service bus.
        """
        hits = np.flatnonzero(self.bus_ids == int(bus_id))
        if hits.size == 0:
            raise KeyError(f"bus {bus_id} is not a non-slack in-service bus of this model")
        return int(hits[0])

    def predict(self, p_kw, q_kvar) -> LinearPrediction:
        """First-order prediction for absolute nodal injections.

        Parameters
        ----------
        p_kw, q_kvar : array_like, shape (..., n)
            Absolute nodal net demand [kW], [kvar] (load convention), columns in
            ``bus_ids`` order.

        Returns
        -------
        LinearPrediction
            ``x = x0 + dx/dP (P - P0) + dx/dQ (Q - Q0)`` for every quantity.

        Raises
        ------
        ValueError
            If the last dimension of ``p_kw`` or ``q_kvar`` is not ``n``.
        """
        n = self.bus_ids.shape[0]
        p = np.asarray(p_kw, dtype=float)
        q = np.asarray(q_kvar, dtype=float)
        if p.shape[-1:] != (n,) or q.shape[-1:] != (n,):
            raise ValueError(
                f"injections must have last dimension n={n} (bus_ids order), got "
                f"p_kw {p.shape}, q_kvar {q.shape}"
            )
        dp = p - self.p0_kw
        dq = q - self.q0_kvar

        def lin(x0, dx_dp, dx_dq):
            return x0 + dp @ dx_dp.T + dq @ dx_dq.T

        return LinearPrediction(
            vm_pu=lin(self.vm0_pu, self.dvm_dp, self.dvm_dq),
            i_ka=lin(self.i0_ka, self.di_dp, self.di_dq),
            line_p_kw=lin(self.pl0_kw, self.dpl_dp, self.dpl_dq),
            line_q_kvar=lin(self.ql0_kvar, self.dql_dp, self.dql_dq),
            trafo_p_kw=lin(self.pt0_kw, self.dpt_dp, self.dpt_dq),
            trafo_q_kvar=lin(self.qt0_kvar, self.dqt_dp, self.dqt_dq),
        )


class SensitivityError(ValueError):
    """The network or operating point cannot be linearised (message names the problem)."""


class UnknownBusError(SensitivityError, KeyError):
    """A bus index that the network (or the linear model) does not have."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


# ----------------------------------------------------------------------------------
# operating point: the internal (ppci) network of pandapower plus a voltage vector
# ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _OperatingPoint:
    """pandapower's internal network (ppci) at one operating point.

    All bus indices are ppci indices (in-service, energised buses, numbered 0..nb-1);
    ``bus_lookup[pp_index]`` gives the ppci bus of a pandapower bus (-1 when the bus is
    out of service or not energised).
    """

    base_mva: float
    base_kv: np.ndarray  # (nb,) [kV]
    ybus: sp.csr_matrix
    yf: sp.csr_matrix
    f_bus: np.ndarray  # (nbr,) ppci from-bus of each ppci branch
    t_bus: np.ndarray  # (nbr,) ppci to-bus of each ppci branch
    v: np.ndarray  # (nb,) complex [pu]
    ref: np.ndarray
    pv: np.ndarray
    pq: np.ndarray
    bus_lookup: np.ndarray
    line_rows: dict  # pandapower line index -> ppci branch row
    trafo_rows: dict  # pandapower trafo index -> ppci branch row
    trafo3w_rows: np.ndarray  # ppci branch rows belonging to three-winding trafos


def _check_slack(net) -> None:
    has_ext = bool(len(net.ext_grid)) and bool(net.ext_grid.in_service.any())
    has_gen_slack = (
        bool(len(net.gen))
        and "slack" in net.gen
        and bool((net.gen.slack.astype(bool) & net.gen.in_service).any())
    )
    if not (has_ext or has_gen_slack):
        raise SensitivityError(
            "network has no slack: it needs an in-service ext_grid (or a gen with "
            "slack=True) whose voltage is held fixed"
        )


def _ppci_rows(lookups: dict, branch_is: np.ndarray, element: str) -> tuple[int, int, np.ndarray]:
    """ppc branch range of ``element`` and the ppci row of each ppc branch (-1: not in ppci)."""
    ppci_row = np.cumsum(branch_is) - 1
    ppci_row[~branch_is] = -1
    rng = lookups.get("branch", {}).get(element)
    if rng is None:
        return 0, 0, ppci_row
    return int(rng[0]), int(rng[1]), ppci_row


def _element_rows(net, lookups, branch_is, element: str) -> dict:
    """pandapower index -> ppci branch row, for in-service, energised elements."""
    f, t, ppci_row = _ppci_rows(lookups, branch_is, element)
    if t <= f:
        return {}
    table = net[element]
    rows = ppci_row[f:t]
    keep = (rows >= 0) & table.in_service.to_numpy(dtype=bool)
    return {int(i): int(r) for i, r in zip(table.index[keep], rows[keep])}


def _finish_operating_point(net, lookups, base_mva, bus, gen, branch, branch_is, ybus, yf, v):
    from pandapower.pypower.bustypes import bustypes
    from pandapower.pypower.idx_brch import F_BUS, T_BUS
    from pandapower.pypower.idx_bus import BASE_KV

    nb = bus.shape[0]
    ref, pv, pq = bustypes(bus, gen)
    if ref.size == 0:
        raise SensitivityError("network has no energised slack bus (ext_grid bus isolated?)")
    lookup = np.full(int(net.bus.index.max()) + 1, -1, dtype=np.int64)
    pp_lookup = np.asarray(lookups["bus"], dtype=np.int64)
    idx = net.bus.index.to_numpy()
    if idx.max() >= pp_lookup.size:
        raise SensitivityError(
            "net._pd2ppc_lookups does not cover every bus: the network changed after the "
            "last power flow; run pandapower.runpp(net) again or pass vm_pu and va_degree"
        )
    ppc_of = pp_lookup[idx]
    ok = (ppc_of >= 0) & (ppc_of < nb) & net.bus.in_service.to_numpy(dtype=bool)
    lookup[idx[ok]] = ppc_of[ok]
    f3, t3, ppci_row = _ppci_rows(lookups, branch_is, "trafo3w")
    rows3 = ppci_row[f3:t3]
    return _OperatingPoint(
        base_mva=float(base_mva),
        base_kv=np.real(bus[:, BASE_KV]).astype(float),
        ybus=sp.csr_matrix(ybus),
        yf=sp.csr_matrix(yf),
        f_bus=np.real(branch[:, F_BUS]).astype(np.int64),
        t_bus=np.real(branch[:, T_BUS]).astype(np.int64),
        v=np.asarray(v, dtype=complex),
        ref=np.asarray(ref, dtype=np.int64),
        pv=np.asarray(pv, dtype=np.int64),
        pq=np.asarray(pq, dtype=np.int64),
        bus_lookup=lookup,
        line_rows=_element_rows(net, lookups, branch_is, "line"),
        trafo_rows=_element_rows(net, lookups, branch_is, "trafo"),
        trafo3w_rows=rows3[rows3 >= 0],
    )


def _solved_operating_point(net) -> _OperatingPoint:
    """Operating point of the last (converged, AC) ``runpp`` on ``net``."""
    if not bool(net.get("converged", False)):
        raise SensitivityError(
            "network has no solved power flow (net.converged is False): run "
            "pandapower.runpp(net) first, or pass the measured vm_pu and va_degree"
        )
    options = net.get("_options", {}) or {}
    if not options.get("ac", True):
        raise SensitivityError("the last power flow on the network was DC (rundcpp); run runpp")
    ppc = net.get("_ppc")
    internal = None if ppc is None else ppc.get("internal")
    needed = ("Ybus", "Yf", "V", "bus", "gen", "branch", "branch_is", "baseMVA")
    if internal is None or any(internal.get(k) is None for k in needed) or np.size(
        internal["V"]
    ) != np.shape(internal["bus"])[0]:
        # e.g. a backend that does not keep pandapower's internal matrices: rebuild them
        return _measured_operating_point(
            net, net.res_bus.vm_pu.to_numpy(), net.res_bus.va_degree.to_numpy()
        )
    return _finish_operating_point(
        net, net._pd2ppc_lookups, internal["baseMVA"], internal["bus"], internal["gen"],
        internal["branch"], np.asarray(internal["branch_is"], dtype=bool),
        internal["Ybus"], internal["Yf"], internal["V"],
    )


def _bus_values(net, values, name: str) -> np.ndarray:
    """``values`` (array in ``net.bus.index`` order, or mapping bus index -> value) as
    an array aligned with ``net.bus.index`` (NaN where not given)."""
    index = net.bus.index
    if isinstance(values, pd.Series) or isinstance(values, Mapping):
        items = values.items()
        keys, vals, bad = [], [], []
        for k, x in items:
            try:  # keys may arrive as strings ("12") after a JSON round trip
                keys.append(int(k) if isinstance(k, str) else operator.index(k))
            except (TypeError, ValueError):
                bad.append(k)
                continue
            vals.append(np.nan if x is None else float(x))
        series = pd.Series(vals, index=pd.Index(keys, dtype=np.int64), dtype=float)
        unknown = bad + sorted(series.index.difference(index).tolist())
        if unknown:
            raise UnknownBusError(
                f"{name} given for unknown bus(es) {unknown[:10]} (not in net.bus)"
            )
        if series.index.has_duplicates:
            raise SensitivityError(f"{name} gives a bus more than once")
        return series.reindex(index).to_numpy(dtype=float)
    arr = np.asarray(values, dtype=float)
    if arr.shape != (len(index),):
        raise SensitivityError(
            f"{name} must be a mapping bus index -> value or an array of shape "
            f"({len(index)},) in net.bus.index order, got shape {arr.shape}"
        )
    return arr


def _measured_operating_point(net, vm_pu, va_degree) -> _OperatingPoint:
    """Operating point from given bus voltages; pandapower's ppci is built from the
    network tables (current switch states) without running a power flow."""
    from pandapower.auxiliary import _add_ppc_options
    from pandapower.pd2ppc import _pd2ppc
    from pandapower.pypower.idx_bus import PD, QD
    from pandapower.pypower.idx_gen import GEN_BUS
    from pandapower.pypower.makeYbus import makeYbus

    if vm_pu is None or va_degree is None:
        raise SensitivityError("a measured operating point needs both vm_pu and va_degree")
    vm = _bus_values(net, vm_pu, "vm_pu")
    va = _bus_values(net, va_degree, "va_degree")

    # build the ppc on a shallow copy: _pd2ppc writes _ppc, _options, lookups, ...
    work = copy.copy(net)
    last = net.get("_options", {}) or {}
    work["_pd2ppc_lookups"] = {
        "bus": np.array([], dtype=np.int64), "bus_dc": np.array([], dtype=np.int64),
        "ext_grid": np.array([], dtype=np.int64), "gen": np.array([], dtype=np.int64),
        "branch": np.array([], dtype=np.int64), "branch_dc": np.array([], dtype=np.int64),
    }
    work["_options"] = {}
    _add_ppc_options(
        work,
        calculate_voltage_angles=bool(last.get("calculate_voltage_angles", True)),
        trafo_model=last.get("trafo_model", "t"),
        check_connectivity=True,
        mode="pf",
        switch_rx_ratio=last.get("switch_rx_ratio", 2),
        enforce_p_lims=False,
        enforce_q_lims=False,
        recycle=None,
        voltage_depend_loads=False,
        trafo3w_losses=last.get("trafo3w_losses", "hv"),
        init_vm_pu="flat",
        init_va_degree="flat",
        neglect_open_switch_branches=bool(last.get("neglect_open_switch_branches", False)),
    )
    work["_options"].update({"ac": True, "algorithm": "nr", "numba": False,
                             "lightsim2grid": False, "tolerance_mva": 1e-8,
                             "max_iteration": 10, "only_v_results": False})
    _, ppci = _pd2ppc(work)
    lookups = work["_pd2ppc_lookups"]
    bus, gen, branch = ppci["bus"], ppci["gen"], ppci["branch"]
    base_mva = ppci["baseMVA"]
    branch_is = np.asarray(ppci["internal"]["branch_is"], dtype=bool)
    ybus, yf, _ = makeYbus(base_mva, bus, branch)
    nb = bus.shape[0]

    # voltages of the ppci buses from the pandapower buses (merged buses: mean)
    idx = net.bus.index.to_numpy()
    ppc_of = np.asarray(lookups["bus"], dtype=np.int64)[idx]
    energised = (ppc_of >= 0) & (ppc_of < nb) & net.bus.in_service.to_numpy(dtype=bool)
    vc = vm * np.exp(1j * np.deg2rad(va))
    bad = energised & ~(np.isfinite(vc) & (vm > 0))
    if bad.any():
        raise SensitivityError(
            f"vm_pu/va_degree missing, non-finite or vm_pu <= 0 at energised bus(es) "
            f"{idx[bad].tolist()[:10]}"
        )
    v = np.zeros(nb, dtype=complex)
    count = np.zeros(nb)
    np.add.at(v, ppc_of[energised], vc[energised])
    np.add.at(count, ppc_of[energised], 1.0)
    have = count > 0
    v[have] /= count[have]

    # auxiliary ppci buses (open line ends, trafo3w star points) carry no injection:
    # their voltage follows from Y_aa V_a + Y_ab V_b = 0 (Kron reduction)
    aux = np.flatnonzero(~have)
    if aux.size:
        gen_bus = np.real(gen[:, GEN_BUS]).astype(np.int64)
        if np.isin(aux, gen_bus).any() or np.any(np.abs(bus[aux][:, [PD, QD]]) > 0):
            raise SensitivityError(
                "the network has auxiliary buses with injections (xward, dcline, ...): a "
                "measured operating point is not supported there; run runpp on the network"
            )
        kb = np.flatnonzero(have)
        y_aa = ybus[aux][:, aux].tocsc()
        y_ab = ybus[aux][:, kb]
        v[aux] = -spla.splu(y_aa).solve(np.asarray(y_ab @ v[kb], dtype=complex))
    return _finish_operating_point(
        net, lookups, base_mva, bus, gen, branch, branch_is, ybus, yf, v
    )


# ----------------------------------------------------------------------------------
# sensitivities
# ----------------------------------------------------------------------------------

_RHS_BLOCK = 32  # right-hand sides per SuperLU solve call

_TABLE_SIGNS = (  # element, p column, q column, sign in load convention
    ("load", "p_mw", "q_mvar", 1.0),
    ("sgen", "p_mw", "q_mvar", -1.0),
    ("storage", "p_mw", "q_mvar", 1.0),
    ("ward", "ps_mw", "qs_mvar", 1.0),
    ("xward", "ps_mw", "qs_mvar", 1.0),
)


def _table_demand_kw(net, bus_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Declared net demand of the elements at each bus [kW], [kvar] (load convention).

    Only used to split the demand of an electrical node among pandapower buses merged
    by closed bus-bus switches.
    """
    pos = np.full(int(net.bus.index.max()) + 1, -1, dtype=np.int64)
    pos[bus_ids] = np.arange(bus_ids.size)
    p = np.zeros(bus_ids.size)
    q = np.zeros(bus_ids.size)
    for element, pc, qc, sign in _TABLE_SIGNS:
        table = net.get(element)
        if table is None or not len(table):
            continue
        at = pos[table.bus.to_numpy(dtype=np.int64)]
        on = table.in_service.to_numpy(dtype=bool) & (at >= 0)
        scale = table["scaling"].to_numpy(dtype=float) if "scaling" in table else 1.0
        factor = np.where(on, sign * 1000.0 * scale, 0.0)
        np.add.at(p, at[on], (factor * table[pc].to_numpy(dtype=float))[on])
        np.add.at(q, at[on], (factor * table[qc].to_numpy(dtype=float))[on])
    return p, q


def _slack_side_trafos(op: _OperatingPoint) -> list[int]:
    """Two-winding trafos whose HV bus is connected to a slack bus without crossing a
    transformer (the substation transformers)."""
    if not op.trafo_rows:
        return []
    nb = op.v.size
    trafo_rows = np.fromiter(op.trafo_rows.values(), dtype=np.int64)
    skip = np.zeros(op.f_bus.size, dtype=bool)
    skip[trafo_rows] = True
    skip[op.trafo3w_rows] = True
    graph = sp.csr_matrix(
        (np.ones(int((~skip).sum())), (op.f_bus[~skip], op.t_bus[~skip])), shape=(nb, nb)
    )
    _, labels = csgraph.connected_components(graph, directed=False)
    slack_zone = np.isin(labels, labels[op.ref])
    return [i for i, r in op.trafo_rows.items() if slack_zone[op.f_bus[r]]]


def compute_sensitivities(net, vm_pu=None, va_degree=None) -> Sensitivities:
    """Sensitivity coefficients of the grid at an operating point.

    Voltage sensitivities solve the linearised load-flow equations (the Newton-Raphson
    Jacobian at the operating point in polar form, [1]_ eq. (2) of the arXiv
    version; seed 000, eq. (2) linearised): with the
    unknowns ``x = [va(pv, pq), vm(pq)]``, ``J dx = dS_injection``, so for a unit
    demand change at bus j, ``dx = -J^-1 e_j``. J is factorised once (sparse LU) and
    solved for the P and Q columns of every non-slack bus at once. Branch current and
    flow sensitivities chain ``dV`` through the from-end branch admittance ``Yf``
    (seed 000, eq. (3) linearised): ``dI_f = Yf dV``, ``dS_f = dV_f conj(I_f) + V_f conj(dI_f)``,
    ``d|I_f| = Re(conj(I_f) dI_f) / |I_f|``.

    Parameters
    ----------
    net : pandapowerNet
        The network. Without ``vm_pu``/``va_degree`` it must hold a converged AC
        power flow (``pandapower.runpp``); its internal matrices are reused, so the
        coefficients describe the network as of that power flow (tables or switches
        changed since are not seen). The network is not modified.
    vm_pu, va_degree : array_like of shape (len(net.bus),) or mapping, optional
        Measured voltage magnitude [pu] and angle [degree] of every energised bus,
        as an array in ``net.bus.index`` order or a mapping ``bus index -> value``.
        The admittance matrix is built from the network tables (current switch
        states); no power flow is run. Angles must include transformer phase shifts
        as pandapower reports them (``calculate_voltage_angles=True``).

    Returns
    -------
    Sensitivities
        Columns are the in-service, energised, non-slack pandapower buses in index
        order. Buses merged by closed bus-bus switches share one electrical node and
        therefore identical columns and rows; buses merged with a slack bus are
        slack. ``p0_kw``/``q0_kvar`` are the nodal demands consistent with the
        operating-point voltages (``-V conj(Y V)``, shunts being part of ``Y``); a
        node's demand is split among its merged buses by their elements' declared
        powers (only the node's sum affects :meth:`Sensitivities.predict`).

    Raises
    ------
    SensitivityError
        No slack, no converged power flow (and no voltages given), missing or
        invalid voltages, or a singular Jacobian (e.g. voltage collapse).
    UnknownBusError
        Voltages given for a bus index that ``net.bus`` does not have.

    Notes
    -----
    Assumptions: balanced positive-sequence model; constant-power injections (ZIP
    voltage dependence of loads ignored); slack voltage (magnitude and angle) fixed.
    PV buses (in-service ``gen``) hold their voltage magnitude: their ``dvm`` rows
    are zero, and reactive power injected there is taken up by the generator, so
    their ``dq`` columns are zero (limits ``max_q_mvar`` are not considered).
    Transformers: only two-winding trafos whose HV bus is reached from a slack bus
    without crossing another transformer (the substation HV/MV or MV/LV
    transformers) are reported, with their HV-side flow; trafo3w are not reported.
    ``d|I|`` is set to 0 for lines that carry exactly no current (where ``|I|`` is not
    differentiable).
    """
    _check_slack(net)
    if vm_pu is None and va_degree is None:
        op = _solved_operating_point(net)
    else:
        op = _measured_operating_point(net, vm_pu, va_degree)
    return _sensitivities(net, op)


def _sensitivities(net, op: _OperatingPoint) -> Sensitivities:
    from pandapower.pypower.dSbus_dV import dSbus_dV

    nb = op.v.size
    k_kw = 1000.0 * op.base_mva  # kW per pu power
    is_ref = np.zeros(nb, dtype=bool)
    is_ref[op.ref] = True

    # --- non-slack pandapower buses and their electrical nodes (ppci buses)
    idx = net.bus.index.to_numpy()
    node_all = op.bus_lookup[idx]
    keep = node_all >= 0
    keep[keep] = ~is_ref[node_all[keep]]
    bus_ids = idx[keep].astype(np.int64)
    node = node_all[keep]
    nodes, col_of = np.unique(node, return_inverse=True)
    nu = nodes.size

    # --- Jacobian at the operating point (load-flow Jacobian, [1] eq. (2) of arXiv)
    pvpq = np.r_[op.pv, op.pq]
    npvpq, npq = pvpq.size, op.pq.size
    ds_dvm, ds_dva = dSbus_dV(op.ybus, op.v)
    ds_dvm, ds_dva = sp.csr_matrix(ds_dvm), sp.csr_matrix(ds_dva)
    jac = sp.bmat(
        [
            [ds_dva[pvpq][:, pvpq].real, ds_dvm[pvpq][:, op.pq].real],
            [ds_dva[op.pq][:, pvpq].imag, ds_dvm[op.pq][:, op.pq].imag],
        ],
        format="csc",
    )

    # --- right-hand sides: unit P and Q injection at every node (pu, gen. convention)
    pos_pvpq = np.full(nb, -1)
    pos_pvpq[pvpq] = np.arange(npvpq)
    pos_pq = np.full(nb, -1)
    pos_pq[op.pq] = np.arange(npq)
    rhs = np.zeros((npvpq + npq, 2 * nu), order="F")
    rhs[pos_pvpq[nodes], np.arange(nu)] = 1.0
    is_pq = pos_pq[nodes] >= 0  # Q at a PV node is taken up by its generator
    rhs[npvpq + pos_pq[nodes[is_pq]], nu + np.flatnonzero(is_pq)] = 1.0
    if jac.shape[0]:
        try:
            lu = spla.splu(jac)
        except RuntimeError as exc:
            raise SensitivityError(
                f"load-flow Jacobian is singular at this operating point ({exc}); "
                "voltage collapse or an island without slack?"
            ) from exc
        # all right-hand sides of the one factorisation, in blocks: a single call with
        # hundreds of columns lets OpenBLAS go multi-threaded, which on a busy machine
        # took 300 ms instead of 1 ms (SimBench 1-MV-rural, 2 shared cores)
        sol = np.empty_like(rhs)
        for k in range(0, rhs.shape[1], _RHS_BLOCK):
            sol[:, k:k + _RHS_BLOCK] = lu.solve(rhs[:, k:k + _RHS_BLOCK])
        if not np.all(np.isfinite(sol)):
            raise SensitivityError("load-flow Jacobian is singular at this operating point")
    else:
        sol = rhs
    # per kW (kvar) of demand: load convention flips the sign
    sol *= -1.0 / k_kw
    dva = np.zeros((nb, 2 * nu))
    dvm = np.zeros((nb, 2 * nu))
    dva[pvpq] = sol[:npvpq]
    dvm[op.pq] = sol[npvpq:]
    vm = np.abs(op.v)
    dv = op.v[:, None] * (dvm / vm[:, None] + 1j * dva)  # dV/dP [pu/kW], complex

    def split(mat):
        """(rows, 2 nu) node columns -> (rows, n) d/dP and d/dQ in bus_ids order."""
        return mat[:, col_of], mat[:, nu + col_of]

    dvm_dp, dvm_dq = split(dvm[node])

    # --- nodal demand at the operating point (load convention)
    s_demand_kw = -op.v * np.conj(op.ybus @ op.v) * k_kw
    p0 = s_demand_kw.real[node].copy()
    q0 = s_demand_kw.imag[node].copy()
    counts = np.bincount(col_of, minlength=nu)
    if np.any(counts > 1):
        tp, tq = _table_demand_kw(net, bus_ids)
        for c in np.flatnonzero(counts > 1):
            members = np.flatnonzero(col_of == c)
            p0[members] = tp[members]
            q0[members] = tq[members]
            p0[members[0]] += s_demand_kw.real[nodes[c]] - tp[members].sum()
            q0[members[0]] += s_demand_kw.imag[nodes[c]] - tq[members].sum()

    # --- branch quantities at the from end
    def branch_terms(rows):
        f = op.f_bus[rows]
        yf = op.yf[rows]
        i_f = yf @ op.v
        di_f = np.asarray(yf @ dv)
        s_f = op.v[f] * np.conj(i_f)
        ds_f = dv[f] * np.conj(i_f)[:, None] + op.v[f][:, None] * np.conj(di_f)
        return f, i_f, di_f, s_f, ds_f

    line_ids = np.array(sorted(op.line_rows), dtype=np.int64)
    rows = np.array([op.line_rows[i] for i in line_ids], dtype=np.int64)
    f, i_f, di_f, s_f, ds_f = branch_terms(rows)
    i_abs = np.abs(i_f)
    i_base_ka = op.base_mva / (np.sqrt(3.0) * op.base_kv[f])
    with np.errstate(divide="ignore", invalid="ignore"):
        di_abs = np.where(
            i_abs[:, None] > 1e-12, (np.conj(i_f)[:, None] * di_f).real / i_abs[:, None], 0.0
        )
    di_dp, di_dq = split(di_abs * i_base_ka[:, None])
    dpl_dp, dpl_dq = split(ds_f.real * k_kw)
    dql_dp, dql_dq = split(ds_f.imag * k_kw)
    line = net.line.loc[line_ids]
    i_max = (line.max_i_ka * line.df * line.parallel).to_numpy(dtype=float)

    trafo_ids = np.array(sorted(_slack_side_trafos(op)), dtype=np.int64)
    trows = np.array([op.trafo_rows[i] for i in trafo_ids], dtype=np.int64)
    _, _, _, st_f, dst_f = branch_terms(trows)
    dpt_dp, dpt_dq = split(dst_f.real * k_kw)
    dqt_dp, dqt_dq = split(dst_f.imag * k_kw)
    trafo = net.trafo.loc[trafo_ids]
    st_max = (1000.0 * trafo.sn_mva * trafo.df * trafo.parallel).to_numpy(dtype=float)

    return Sensitivities(
        bus_ids=bus_ids,
        p0_kw=p0,
        q0_kvar=q0,
        vm0_pu=vm[node],
        dvm_dp=dvm_dp,
        dvm_dq=dvm_dq,
        line_ids=line_ids,
        i0_ka=i_abs * i_base_ka,
        i_max_ka=i_max,
        di_dp=di_dp,
        di_dq=di_dq,
        pl0_kw=s_f.real * k_kw,
        ql0_kvar=s_f.imag * k_kw,
        dpl_dp=dpl_dp,
        dpl_dq=dpl_dq,
        dql_dp=dql_dp,
        dql_dq=dql_dq,
        vm_from0_pu=vm[f],
        trafo_ids=trafo_ids,
        pt0_kw=st_f.real * k_kw,
        qt0_kvar=st_f.imag * k_kw,
        st_max_kva=st_max,
        dpt_dp=dpt_dp,
        dpt_dq=dpt_dq,
        dqt_dp=dqt_dp,
        dqt_dq=dqt_dq,
    )
