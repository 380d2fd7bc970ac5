"""AC power flow of one distribution grid, step by step (no mosaik here).

`GridModel` wraps a pandapower network. Each :meth:`GridModel.step` takes the
extra nodal injections of the co-simulated units (EVs, PV, ...) and optional
overrides of the network's own loads, solves the AC power flow and returns a
`GridState` with voltages, branch flows and limit violations.

Speed
-----
``pandapower.runpp`` costs about 40 ms a call on CIGRE MV, almost all of it
pandas bookkeeping (building the internal PYPOWER case, writing result tables);
with ``init="results"`` and recycling it is still 15-50 ms, and pandapower's own
Newton-Raphson (``pandapower.pypower.newtonpf``) spends most of its time building
the Jacobian with scipy.sparse algebra when numba is absent. The grid topology
and impedances do not change between co-simulation steps, only the loads do, so
this module builds pandapower's internal case (``ppci``, admittance matrices,
bus types) once, then per step

1. sums the loads' demand per internal bus (one ``bincount``) [MW, Mvar],
2. runs a Newton-Raphson whose Jacobian sparsity pattern is precomputed
   (`_Newton`: same polar formulation, ordering and stopping rule as PYPOWER's
   ``newtonpf``), warm started from the previous solution,
3. computes the branch flows from the from/to admittance matrices as PYPOWER's
   ``pfsoln`` does, and currents and loadings with ``runpp``'s formulas
   (``pandapower.results_branch``).

About 1-3 ms a step on CIGRE LV/MV and SimBench MV (``bench/grid_step.py``).
The result equals ``runpp`` on the same network and loads to the solver
tolerance (tested to 1e-9 pu). At construction the fast path is checked against
a plain ``runpp``; if they disagree or the network uses features the fast path
does not model (FACTS, DC lines, distributed slack, Q limits, TDPF), the model
falls back to ``runpp`` with recycling and says why in `GridModel.solver_note`.
Controllers in ``net.controller`` are not run (``run_control=False``) on either path.

Sign convention: load convention everywhere (consumption positive) [kW, kvar];
pandapower's MW/Mvar appear only inside this module.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Literal

import contextlib
import io

import numpy as np
import pandapower as pp
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from pandapower.auxiliary import LoadflowNotConverged
from pandapower.pd2ppc import _pd2ppc
from pandapower.pypower.bustypes import bustypes
from pandapower.pypower.idx_brch import F_BUS, T_BUS
from pandapower.pypower.idx_bus import BASE_KV, CID_P, CID_Q, CZD_P, CZD_Q, PD, QD, VA
from pandapower.pypower.idx_gen import GEN_BUS, GEN_STATUS, PG, QG, VG
from pandapower.pypower.makeYbus import makeYbus

INJECTION_LOAD_NAME = "cosim injection"
"""Name of the extra pandapower load added at every bus for the co-simulated units."""

_DRIVEN_TABLES = (("load", 1.0), ("sgen", -1.0), ("storage", 1.0))
"""Element tables whose P and Q a step may set, with the sign that turns pandapower's
value into load convention (sgens are in generator convention)."""

_SQRT3 = math.sqrt(3.0)
_KW_PER_MW = 1000.0

Solver = Literal["auto", "direct", "runpp"]

# Retry chain per step: (label, start, damped, max_iteration). "flat" = flat voltage
# magnitudes with the angles of the base case (direct path; they carry transformer
# phase shifts, e.g. SimBench's 150 degree HV/MV units, where a true flat start
# diverges) or pandapower's DC angles (runpp path). Damped = Newton-Raphson with
# step halving (direct path) or Iwamoto's multiplier, ``iwamoto_nr`` (runpp path).
_ATTEMPTS: tuple[tuple[str, str, bool, int], ...] = (
    ("warm start", "results", False, 10),
    ("flat start", "flat", False, 50),
    ("flat start damped", "flat", True, 50),
)


class _Newton:
    """Newton-Raphson power flow in polar coordinates on a fixed admittance matrix.

    The Jacobian's sparsity pattern is derived once from ``ybus``; each iteration
    only fills its values (no sparse-matrix algebra), which makes an iteration
    about 20 times cheaper than PYPOWER's ``dSbus_dV`` with scipy.sparse on small
    grids. Same equations, ordering and stopping rule as
    ``pandapower.pypower.newtonpf`` (infinity norm of the mismatch [pu] below
    ``tol``), without FACTS, distributed slack or Q limits.

    Parameters
    ----------
    ybus : scipy.sparse matrix
        Bus admittance matrix [pu].
    ref, pv, pq : numpy.ndarray of int
        Slack, PV and PQ bus rows.
    """

    def __init__(self, ybus, ref: np.ndarray, pv: np.ndarray, pq: np.ndarray) -> None:
        ybus = sp.csr_matrix(ybus)
        ybus.sum_duplicates()
        self.ybus = ybus
        n = ybus.shape[0]
        self.pv, self.pq = pv, pq
        self.pvpq = pvpq = np.r_[pv, pq]
        n_a, n_m = len(pvpq), len(pq)
        self.n_a, self.n_j = n_a, n_a + n_m
        coo = ybus.tocoo()
        # entries: every Ybus element, then one diagonal term per bus
        rows = np.r_[coo.row, np.arange(n)].astype(np.int64)
        cols = np.r_[coo.col, np.arange(n)].astype(np.int64)
        self.y_rows = coo.row.astype(np.int64)
        self.y_cols = coo.col.astype(np.int64)
        self.y_data = coo.data
        pos_a = np.full(n, -1, dtype=np.int64)
        pos_a[pvpq] = np.arange(n_a)
        pos_m = np.full(n, -1, dtype=np.int64)
        pos_m[pq] = n_a + np.arange(n_m)
        blocks = []
        for rpos, cpos in ((pos_a, pos_a), (pos_a, pos_m), (pos_m, pos_a), (pos_m, pos_m)):
            keep = np.flatnonzero((rpos[rows] >= 0) & (cpos[cols] >= 0))
            blocks.append((keep, rpos[rows[keep]], cpos[cols[keep]]))
        self.sel = [b[0] for b in blocks]
        j_rows = np.concatenate([b[1] for b in blocks])
        j_cols = np.concatenate([b[2] for b in blocks])
        keys = j_cols * self.n_j + j_rows  # CSC order: by column, then row
        ukeys, self.slot = np.unique(keys, return_inverse=True)
        self.n_nz = len(ukeys)
        self.indices = (ukeys % self.n_j).astype(np.int32)
        per_col = np.bincount(ukeys // self.n_j, minlength=self.n_j)
        self.indptr = np.r_[0, np.cumsum(per_col)].astype(np.int32)

    def _mismatch(self, v: np.ndarray, s_bus: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        i_bus = self.ybus @ v
        mis = v * np.conj(i_bus) - s_bus
        return np.r_[mis[self.pvpq].real, mis[self.pq].imag], i_bus

    def _jacobian(self, v: np.ndarray, i_bus: np.ndarray, ds_dvm_load: np.ndarray | None):
        vr, vc = v[self.y_rows], v[self.y_cols]
        yv = self.y_data * vc
        vnorm = v / np.abs(v)
        # dS/dVa and dS/dVm (PYPOWER dSbus_dV), off-diagonal parts then diagonal terms
        d_va = np.r_[-1j * vr * np.conj(yv), 1j * v * np.conj(i_bus)]
        d_vm = np.r_[vr * np.conj(self.y_data * vnorm[self.y_cols]), np.conj(i_bus) * vnorm]
        if ds_dvm_load is not None:
            d_vm[len(self.y_rows):] += ds_dvm_load
        s11, s12, s21, s22 = self.sel
        vals = np.concatenate([d_va[s11].real, d_vm[s12].real, d_va[s21].imag, d_vm[s22].imag])
        data = np.bincount(self.slot, weights=vals, minlength=self.n_nz)
        return sp.csc_matrix((data, self.indices, self.indptr), shape=(self.n_j, self.n_j))

    def solve(self, s_bus, v0: np.ndarray, tol: float, max_it: int, damped: bool = False):
        """Solve for the bus voltages.

        Parameters
        ----------
        s_bus : numpy.ndarray or callable
            Complex injections, generation minus load [pu]; a callable ``f(vm) ->
            (s_bus, d s_bus / d vm)`` for voltage-dependent loads.
        v0 : numpy.ndarray
            Start voltages [pu]; slack and PV magnitudes are kept.
        tol : float
            Stop when the largest mismatch is below this [pu].
        max_it : int
            Iteration limit.
        damped : bool
            Halve the Newton step until the mismatch norm decreases.

        Returns
        -------
        v : numpy.ndarray
            Complex bus voltages [pu] (meaningless when not converged).
        converged : bool
        iterations : int
        """
        vm, va = np.abs(v0), np.angle(v0)
        v = v0.copy()
        pvpq, pq, n_a = self.pvpq, self.pq, self.n_a

        def injections(vm_):
            if callable(s_bus):
                return s_bus(vm_)
            return s_bus, None

        s, ds = injections(vm)
        f, i_bus = self._mismatch(v, s)
        norm = np.linalg.norm(f, np.inf) if f.size else 0.0
        it = 0
        while not norm < tol and it < max_it:
            it += 1
            jac = self._jacobian(v, i_bus, None if ds is None else -ds)
            dx = spla.spsolve(jac, -f)
            if not np.all(np.isfinite(dx)):
                return v, False, it
            step = 1.0
            for _ in range(12 if damped else 1):
                va_new, vm_new = va.copy(), vm.copy()
                va_new[pvpq] += step * dx[:n_a]
                vm_new[pq] += step * dx[n_a:]
                v_new = vm_new * np.exp(1j * va_new)
                s_new, ds_new = injections(vm_new)
                f_new, i_new = self._mismatch(v_new, s_new)
                norm_new = np.linalg.norm(f_new, np.inf)
                if not damped or norm_new < norm:
                    break
                step *= 0.5
            va, vm, v, s, ds = va_new, vm_new, v_new, s_new, ds_new
            f, i_bus, norm = f_new, i_new, norm_new
            if not np.isfinite(norm):
                return v, False, it
        return v, bool(norm < tol), it


@dataclass(frozen=True)
class GridLimits:
    """Operating limits used to count violations.

    Parameters
    ----------
    vm_min_pu, vm_max_pu : float
        Voltage band [pu]; a bus outside ``[vm_min_pu, vm_max_pu]`` is a violation.
    max_line_loading_percent : float
        Line current limit [% of ``max_i_ka * df * parallel``].
    max_trafo_loading_percent : float
        Transformer limit [% of rated current, pandapower's ``trafo_loading="current"``].
    """

    vm_min_pu: float
    vm_max_pu: float
    max_line_loading_percent: float = 100.0
    max_trafo_loading_percent: float = 100.0

    def __post_init__(self) -> None:
        for name in ("vm_min_pu", "vm_max_pu", "max_line_loading_percent",
                     "max_trafo_loading_percent"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"GridLimits.{name} must be a number, got {value!r}")
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"GridLimits.{name} must be finite and > 0, got {value!r}")
        if not self.vm_min_pu < self.vm_max_pu:
            raise ValueError(
                f"GridLimits: vm_min_pu ({self.vm_min_pu}) must be below vm_max_pu "
                f"({self.vm_max_pu})")


@dataclass(frozen=True)
class GridState:
    """Result of one grid step.

    All arrays are None when the power flow did not converge (``pf_converged``
    False): no stale values, no NaN. Element order is given by ``bus_ids``,
    ``line_ids`` and ``trafo_ids`` (pandapower indices).

    Attributes
    ----------
    pf_converged : bool
        The AC power flow converged (possibly after retries).
    message : str
        How it was solved (``"warm start"``, ``"flat start"``, ...) or why it failed.
    iterations : int
        Newton-Raphson iterations of the successful attempt (0 when failed).
    pf_seconds : float
        Wall time spent in the power flow this step, retries included [s].
    bus_ids : numpy.ndarray of int
        Energised buses (in service and connected to a slack), ``net.bus`` order.
    vm_pu, va_degree : numpy.ndarray or None
        Voltage magnitude [pu] and angle [degree] at ``bus_ids``.
    line_ids : numpy.ndarray of int
        All lines, ``net.line`` order (out of service ones carry zeros).
    line_i_ka : numpy.ndarray or None
        Current magnitude, the larger of both ends [kA].
    line_loading_percent : numpy.ndarray or None
        ``line_i_ka / (max_i_ka * df * parallel)`` [%].
    line_p_from_kw, line_q_from_kvar : numpy.ndarray or None
        Flow into the line at its from bus [kW, kvar].
    trafo_ids : numpy.ndarray of int
        All two-winding transformers, ``net.trafo`` order.
    trafo_loading_percent : numpy.ndarray or None
        Loading by rated current [%] (pandapower ``trafo_loading="current"``).
    trafo_p_hv_kw, trafo_q_hv_kvar : numpy.ndarray or None
        Flow into the transformer at its HV side [kW, kvar].
    vm_min_pu, vm_max_pu : float or None
        Extremes over ``vm_pu`` [pu].
    max_line_loading_percent, max_trafo_loading_percent : float or None
        Largest loading [%] (0 when there are no such elements).
    n_bus_violations, n_line_violations, n_trafo_violations : int or None
        Number of elements outside the `GridLimits`.
    """

    pf_converged: bool
    message: str
    iterations: int
    pf_seconds: float
    bus_ids: np.ndarray
    line_ids: np.ndarray
    trafo_ids: np.ndarray
    vm_pu: np.ndarray | None = None
    va_degree: np.ndarray | None = None
    line_i_ka: np.ndarray | None = None
    line_loading_percent: np.ndarray | None = None
    line_p_from_kw: np.ndarray | None = None
    line_q_from_kvar: np.ndarray | None = None
    trafo_loading_percent: np.ndarray | None = None
    trafo_p_hv_kw: np.ndarray | None = None
    trafo_q_hv_kvar: np.ndarray | None = None
    vm_min_pu: float | None = None
    vm_max_pu: float | None = None
    max_line_loading_percent: float | None = None
    max_trafo_loading_percent: float | None = None
    n_bus_violations: int | None = None
    n_line_violations: int | None = None
    n_trafo_violations: int | None = None

    @property
    def max_trafo_p_hv_kw(self) -> float | None:
        """HV-side active power of the most loaded transformer [kW] (> 0: it feeds the
        LV side, < 0: reverse flow, e.g. midday PV); None without transformers or
        a converged power flow."""
        if self.trafo_loading_percent is None or self.trafo_p_hv_kw is None or not len(self.trafo_p_hv_kw):
            return None
        return float(self.trafo_p_hv_kw[int(np.argmax(self.trafo_loading_percent))])

    def __post_init__(self) -> None:
        for f in fields(self):  # the state is a snapshot: freeze the arrays too
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                value.flags.writeable = False


@dataclass
class GridTiming:
    """Running statistics of the power-flow time.

    Attributes
    ----------
    n_steps : int
        Steps solved (or attempted).
    n_not_converged : int
        Steps whose power flow failed after all retries.
    pf_seconds_total, pf_seconds_last, pf_seconds_max : float
        Wall time in the power flow [s]: sum, last step, worst step.
    """

    n_steps: int = 0
    n_not_converged: int = 0
    pf_seconds_total: float = 0.0
    pf_seconds_last: float = 0.0
    pf_seconds_max: float = 0.0

    @property
    def pf_seconds_mean(self) -> float:
        """Mean power-flow time per step [s] (0 before the first step)."""
        return self.pf_seconds_total / self.n_steps if self.n_steps else 0.0


@dataclass
class _Solution:
    vm_pu: np.ndarray
    va_degree: np.ndarray
    line_i_ka: np.ndarray
    line_p_from_mw: np.ndarray
    line_q_from_mvar: np.ndarray
    trafo_i_ft_ka: np.ndarray  # (k, 2): hv, lv current
    trafo_p_hv_mw: np.ndarray
    trafo_q_hv_mvar: np.ndarray
    iterations: int = 0


@dataclass
class _DirectCase:
    """pandapower's internal case, built once, with index maps back to the net."""

    base_mva: float
    newton: _Newton
    yf: sp.csr_matrix
    yt: sp.csr_matrix
    v_flat: np.ndarray
    s_gen_mva: np.ndarray
    zip_pq: np.ndarray | None  # per bus row: ci_p, cz_p, ci_q, cz_q
    pd_static_mw: np.ndarray
    qd_static_mvar: np.ndarray
    elem_row: np.ndarray  # ppci bus row of each active driven element
    elem_active: np.ndarray  # bool mask over the driven elements (GridModel.load_values order)
    elem_scaling: np.ndarray
    bus_row: np.ndarray  # ppci bus row of each energised bus (bus_ids order)
    line_br: np.ndarray  # ppci branch row per line, -1 if out of service
    trafo_br: np.ndarray
    br_from: np.ndarray
    br_to: np.ndarray
    base_kv_from: np.ndarray
    base_kv_to: np.ndarray
    v: np.ndarray = field(default=None)  # last converged voltage (ppci order) [pu]


def _finite_or_raise(values: np.ndarray, what: str, ids: Iterable) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        first = [i for i, b in zip(ids, bad) if b][:5]
        raise ValueError(f"{what} is not finite (NaN/inf) for element(s) {first}")


def _sum_value(value: float | Iterable[float]) -> float:
    """Sum one input value or a collection of contributions (numbers) [any unit].

    Raises ValueError (TypeError for non-numbers) without context; callers add it.
    """
    kind = type(value)
    if kind is float or kind is int:  # the common case, kept cheap
        return float(value)
    if isinstance(value, Mapping):
        value = value.values()
    if isinstance(value, (str, bytes, bool, np.bool_)):
        raise TypeError(f"expected a number, got {value!r}")
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    if isinstance(value, Iterable):
        return math.fsum(_sum_value(v) for v in value)
    raise TypeError(f"expected a number, got {value!r}")


def _place(values, positions: Mapping[int, int], offset: int, target: np.ndarray, kind: str,
           element: str, unknown: str, cache: dict | None = None) -> None:
    """Write summed demand [kW or kvar] into ``target`` [MW or Mvar] at the element's row.

    ``values``: a mapping element index -> value (summed by `_sum_value`), or a
    pair ``(indices, values)`` of arrays, one final value per element (each index
    once): the vectorised form of the mapping, the same floats in ``target``.
    ``cache`` keeps the rows of an index array seen before (keyed by its bytes).

    Raises ValueError naming the element on unknown ids, bad or non-finite values.
    """
    if isinstance(values, tuple):
        index, column = values
        key = (element, index.tobytes())
        rows = None if cache is None else cache.get(key)
        if rows is None:
            rows = np.array([positions.get(int(i), -1) for i in index], dtype=np.int64)
            missing = np.flatnonzero(rows < 0)
            if missing.size:
                raise ValueError(f"{kind}: {element} {int(index[missing[0]])!r} {unknown}")
            if cache is not None:
                cache[key] = rows
        bad = np.flatnonzero(~np.isfinite(column))
        if bad.size:
            raise ValueError(f"{kind} of {element} {int(index[bad[0]])!r} is not finite: "
                             f"{float(column[bad[0]])!r}")
        target[offset + rows] = column / _KW_PER_MW
        return
    for key, value in (values or {}).items():
        pos = positions.get(int(key))
        if pos is None:
            raise ValueError(f"{kind}: {element} {key!r} {unknown}")
        try:
            total = _sum_value(value)
        except TypeError as exc:
            raise ValueError(f"{kind} of {element} {key!r}: {exc}") from None
        if not math.isfinite(total):
            raise ValueError(f"{kind} of {element} {key!r} is not finite: {value!r}")
        target[offset + pos] = total / _KW_PER_MW


class GridModel:
    """AC power flow of one pandapower network with co-simulated extra loads.

    One `step` per co-simulation step: set the demand, solve, return a
    `GridState`. Failed power flows are retried (warm start; flat start with 50
    iterations; damped) and then reported as ``pf_converged=False``, counted in
    ``timing.n_not_converged``; the next step starts again from the last
    converged solution.

    Parameters
    ----------
    net : pandapower.pandapowerNet
        The network. It is deep-copied; the copy gets one extra load named
        ``"cosim injection"`` per bus (zero unless set in `step`), the network's
        own loads stay as they are.
    limits : GridLimits
        Limits used for the violation counts.
    solver : {"auto", "direct", "runpp"}
        ``"direct"``: pandapower's Newton-Raphson on the prebuilt internal case
        (fast, see module docstring); ``"runpp"``: ``pandapower.runpp`` every step
        (recycling the internal case); ``"auto"``: direct unless its check
        against ``runpp`` at construction fails.
    tolerance_mva : float
        Newton-Raphson mismatch tolerance [MVA]; pandapower's default is 1e-8,
        the tighter default here keeps results within 1e-9 pu of the exact
        solution whatever the starting point.

    Attributes
    ----------
    net : pandapower.pandapowerNet
        The model's own copy, with the injection loads (do not edit).
    limits : GridLimits
    solver : {"direct", "runpp"}
        The path in use; ``solver_note`` says why ``runpp`` was chosen under "auto".
    bus_ids : numpy.ndarray of int
        Energised buses (``GridState.bus_ids``); de-energised buses get no voltage.
    load_ids, line_ids, trafo_ids : numpy.ndarray of int
        pandapower indices of the network's own loads, lines, transformers.
    line_pos, trafo_pos : dict of int to int
        pandapower index -> position in the `GridState` arrays.
    timing : GridTiming
        Power-flow time per step [s] and the count of non-converged steps.

    Raises
    ------
    ValueError
        Non-finite load values, lines or transformers without a positive rating,
        or a base case (network loads, zero injections) that does not converge
        even after retries.

    Notes
    -----
    With voltage-dependent loads (``const_z_*``/``const_i_*`` percentages),
    pandapower averages the ZIP shares over the loads at a bus, so the zero
    "cosim injection" load at every bus changes those averages: results then
    equal ``runpp`` on ``GridModel.net`` (injections included), not on the
    original network. Constant-power networks (CIGRE, SimBench) are unaffected.
    """

    def __init__(self, net: pp.pandapowerNet, limits: GridLimits, *,
                 solver: Solver = "auto", tolerance_mva: float = 1e-10) -> None:
        if not isinstance(limits, GridLimits):
            raise TypeError(f"limits must be a GridLimits, got {type(limits).__name__}")
        if solver not in ("auto", "direct", "runpp"):
            raise ValueError(f"solver must be 'auto', 'direct' or 'runpp', got {solver!r}")
        if not (math.isfinite(tolerance_mva) and tolerance_mva > 0):
            raise ValueError(f"tolerance_mva must be finite and > 0, got {tolerance_mva!r}")
        self.limits = limits
        self.tolerance_mva = float(tolerance_mva)
        self.timing = GridTiming()
        self.net = net = copy.deepcopy(net)
        if len(net.ext_grid) == 0 and len(net.gen) == 0:
            raise ValueError("the network has no ext_grid or gen (no slack)")

        # the network's own loads, sgens and storage units [MW, Mvar] in load
        # convention (an sgen's pandapower value with its sign flipped), kept to
        # restore after overrides
        self.load_ids = net.load.index.to_numpy(dtype=np.int64)
        self.sgen_ids = net.sgen.index.to_numpy(dtype=np.int64)
        self.storage_ids = net.storage.index.to_numpy(dtype=np.int64)
        own = {table: (sign * net[table]["p_mw"].to_numpy(dtype=float),
                       sign * net[table]["q_mvar"].to_numpy(dtype=float))
               for table, sign in _DRIVEN_TABLES}
        for table, (p_own, q_own) in own.items():
            _finite_or_raise(p_own, f"{table} p_mw", net[table].index)
            _finite_or_raise(q_own, f"{table} q_mvar", net[table].index)
        self._load_pos = {int(i): k for k, i in enumerate(self.load_ids)}
        self._sgen_pos = {int(i): k for k, i in enumerate(self.sgen_ids)}
        self._storage_pos = {int(i): k for k, i in enumerate(self.storage_ids)}

        # one injection load per bus, appended after the network's loads
        all_buses = net.bus.index.to_numpy(dtype=np.int64)
        self._bus_pos = {int(b): k for k, b in enumerate(all_buses)}
        # extra bool columns of the net's loads (e.g. suburban_lv's "three_phase") get False
        # on the injection rows: left NaN, pandapower warns and casts them to True
        extra_bool = {c: False for c in net.load.columns
                      if net.load[c].dtype == bool and c not in ("in_service",)}
        inj = pp.create_loads(net, buses=all_buses, p_mw=0.0, q_mvar=0.0,
                              name=INJECTION_LOAD_NAME, **extra_bool)
        self._inj_ids = np.asarray(inj, dtype=np.int64)
        self._n_bus = len(all_buses)
        # one vector over every driven element: own loads, injections, sgens, storage
        zeros = np.zeros(self._n_bus)
        self._base_p_mw = np.concatenate([own["load"][0], zeros, own["sgen"][0], own["storage"][0]])
        self._base_q_mvar = np.concatenate([own["load"][1], zeros, own["sgen"][1], own["storage"][1]])
        n_loads = len(self.load_ids) + self._n_bus
        self._offset = {"load": 0, "bus": len(self.load_ids), "sgen": n_loads,
                        "storage": n_loads + len(self.sgen_ids)}
        self._rows_cache: dict = {}  # (element, index bytes) -> rows (`_place`)

        self.line_ids = net.line.index.to_numpy(dtype=np.int64)
        self.trafo_ids = net.trafo.index.to_numpy(dtype=np.int64)
        self.line_pos = {int(i): k for k, i in enumerate(self.line_ids)}
        self.trafo_pos = {int(i): k for k, i in enumerate(self.trafo_ids)}
        self._check_ratings()
        self._line_i_max_ka = (net.line["max_i_ka"] * net.line["df"]
                               * net.line["parallel"]).to_numpy(dtype=float)
        self._line_in_service = net.line["in_service"].to_numpy(dtype=bool)
        self._trafo_in_service = net.trafo["in_service"].to_numpy(dtype=bool)
        tr = net.trafo
        self._trafo_vn_kv = np.column_stack([tr["vn_hv_kv"].to_numpy(dtype=float),
                                             tr["vn_lv_kv"].to_numpy(dtype=float)])
        self._trafo_rating = (tr["sn_mva"] * tr["parallel"] * tr["df"]).to_numpy(dtype=float)

        # base case with plain runpp (also the reference for the direct path)
        self._runpp_kwargs = dict(numba=False, tolerance_mva=self.tolerance_mva)
        reason = self._runpp_with_retries(first_init="auto")
        if reason is not None:
            raise ValueError(f"base case power flow does not converge: {reason}")
        energised = net.res_bus["vm_pu"].notna().to_numpy()
        self.bus_ids = all_buses[energised]
        self._ref_vm = net.res_bus["vm_pu"].to_numpy()[energised]
        self._ref_va = net.res_bus["va_degree"].to_numpy()[energised]

        self.solver_note = ""
        self._case: _DirectCase | None = None
        if solver in ("auto", "direct"):
            problem = self._build_direct()
            if problem is not None:
                if solver == "direct":
                    raise ValueError(f"direct solver does not reproduce runpp: {problem}")
                self._case = None
                self.solver_note = f"fell back to runpp: {problem}"
        self.solver: Literal["direct", "runpp"] = "direct" if self._case is not None else "runpp"

    # ------------------------------------------------------------------ checks
    def _check_ratings(self) -> None:
        net = self.net
        line = net.line[net.line["in_service"]]
        rating = (line["max_i_ka"] * line["df"] * line["parallel"]).to_numpy(dtype=float)
        bad = ~(np.isfinite(rating) & (rating > 0))
        if bad.any():
            raise ValueError(f"lines without a positive finite rating (max_i_ka*df*parallel): "
                             f"{line.index[bad].tolist()[:5]}")
        trafo = net.trafo[net.trafo["in_service"]]
        rating = (trafo["sn_mva"] * trafo["df"] * trafo["parallel"]).to_numpy(dtype=float)
        bad = ~(np.isfinite(rating) & (rating > 0))
        if bad.any():
            raise ValueError(f"transformers without a positive finite rating (sn_mva*df*parallel): "
                             f"{trafo.index[bad].tolist()[:5]}")

    # ------------------------------------------------------------- direct path
    def _build_direct(self) -> str | None:
        """Build the internal case from the solved net; None when it matches runpp."""
        # the angles of the base case carry the transformers' phase shifts: the
        # "flat" start uses them with flat magnitudes (like pandapower's DC init)
        va_base = np.asarray(self.net["_ppc"]["bus"][:, VA].real, dtype=float)
        # work on a copy: _pd2ppc replaces net._ppc, which runpp's recycling needs
        net = copy.deepcopy(self.net)
        ppc, ppci = _pd2ppc(net)  # uses net._options of the runpp just done
        options = net._options
        unsupported = [k for k in ("enforce_q_lims", "distributed_slack", "tdpf",
                                   "consider_line_temperature") if options.get(k)]
        if unsupported:
            return f"pandapower options {unsupported} are not supported"
        for table in ("svc", "tcsc", "ssc", "vsc", "bus_dc"):
            if len(ppci[table]):
                return f"pandapower element type {table!r} present"
        bus = ppci["bus"].real.copy()
        gen = ppci["gen"].real
        base_mva = float(ppci["baseMVA"])
        ybus, yf, yt = makeYbus(base_mva, ppci["bus"], ppci["branch"])
        ref, pv, pq = bustypes(bus, gen)
        n_row = bus.shape[0]

        lookup = net._pd2ppc_lookups["bus"]
        # the driven elements (load_values order) and their share of the case's PD/QD
        rows_, active_, scaling_ = [], [], []
        for table, _sign in _DRIVEN_TABLES:
            tab = net[table]
            if not len(tab):
                continue
            row = lookup[tab["bus"].to_numpy(dtype=np.int64)]
            rows_.append(row)
            active_.append(np.asarray(net._is_elements[table], dtype=bool) & (row < n_row))
            scaling_.append(tab["scaling"].to_numpy(dtype=float))
        load_row = np.concatenate(rows_)
        active = np.concatenate(active_)
        scaling = np.concatenate(scaling_)
        pd_loads = np.bincount(load_row[active], weights=(self._base_p_mw * scaling)[active],
                               minlength=n_row)
        qd_loads = np.bincount(load_row[active], weights=(self._base_q_mvar * scaling)[active],
                               minlength=n_row)

        # branch rows: ppc row -> ppci row (out of service branches are dropped)
        branch_is = np.asarray(ppci["internal"]["branch_is"], dtype=bool)
        ppc_to_ppci = np.full(branch_is.shape[0], -1, dtype=np.int64)
        ppc_to_ppci[branch_is] = np.arange(int(branch_is.sum()))
        br_lookup = net._pd2ppc_lookups["branch"]

        def rows(element: str, n: int) -> np.ndarray:
            if element not in br_lookup:
                return np.full(n, -1, dtype=np.int64)
            f, t = br_lookup[element]
            return ppc_to_ppci[f:t]

        branch = ppci["branch"]
        br_from = branch[:, F_BUS].real.astype(np.int64)
        br_to = branch[:, T_BUS].real.astype(np.int64)

        if va_base.shape[0] < n_row or not np.all(np.isfinite(va_base[:n_row])):
            return "base case angles do not map onto the internal case"
        v_flat = np.exp(1j * np.deg2rad(va_base[:n_row]))
        on = np.flatnonzero(gen[:, GEN_STATUS] > 0)
        gbus = gen[on, GEN_BUS].astype(np.int64)
        v_flat[gbus] = gen[on, VG] * v_flat[gbus]
        v_flat[ref] = np.abs(v_flat[ref]) * np.exp(1j * np.deg2rad(bus[ref, VA]))
        # generator injections (PYPOWER makeSbus) [MW + j Mvar]
        s_gen_mva = np.bincount(gbus, weights=gen[on, PG], minlength=n_row) + 1j * np.bincount(
            gbus, weights=gen[on, QG], minlength=n_row)
        # voltage-dependent loads (ZIP), as pandapower's makeSbus with vm
        zip_pq = bus[:, [CID_P, CZD_P, CID_Q, CZD_Q]] if options.get("voltage_depend_loads") \
            else np.zeros((n_row, 4))
        zip_pq = np.nan_to_num(zip_pq)

        self._case = _DirectCase(
            base_mva=base_mva, newton=_Newton(ybus, ref, pv, pq), yf=sp.csr_matrix(yf),
            yt=sp.csr_matrix(yt), v_flat=v_flat, s_gen_mva=s_gen_mva,
            zip_pq=zip_pq if np.any(zip_pq) else None,
            pd_static_mw=bus[:, PD] - pd_loads, qd_static_mvar=bus[:, QD] - qd_loads,
            elem_row=load_row[active], elem_active=active, elem_scaling=scaling[active],
            bus_row=lookup[self.bus_ids], line_br=rows("line", len(net.line)),
            trafo_br=rows("trafo", len(net.trafo)), br_from=br_from, br_to=br_to,
            base_kv_from=bus[br_from, BASE_KV].real, base_kv_to=bus[br_to, BASE_KV].real,
            v=None,
        )
        # check against the plain runpp just done (zero injections, own loads)
        sol, _ = self._solve_direct(self._base_p_mw, self._base_q_mvar, attempts=_ATTEMPTS[1:])
        if sol is None:
            return "direct Newton-Raphson did not converge on the base case"
        checks = {
            "vm_pu": (sol.vm_pu, self._ref_vm),
            "va_degree": (sol.va_degree, self._ref_va),
            "line i_ka": (sol.line_i_ka, net.res_line["i_ka"].to_numpy(dtype=float)),
            "trafo p_hv_mw": (sol.trafo_p_hv_mw, net.res_trafo["p_hv_mw"].to_numpy(dtype=float)),
        }
        for what, (ours, theirs) in checks.items():
            theirs = np.nan_to_num(theirs)
            if ours.shape != theirs.shape or not np.allclose(ours, theirs, rtol=0, atol=1e-6):
                return f"{what} differs from runpp"
        return None

    def _solve_direct(self, p_mw: np.ndarray, q_mvar: np.ndarray,
                      attempts=_ATTEMPTS) -> tuple[_Solution | None, str]:
        """Newton-Raphson on the internal case; demand ``p_mw``/``q_mvar`` of every
        driven element (`load_values` order, load convention) [MW, Mvar]."""
        case = self._case
        n_row = len(case.v_flat)
        weights_p = p_mw[case.elem_active] * case.elem_scaling
        weights_q = q_mvar[case.elem_active] * case.elem_scaling
        s_load = (case.pd_static_mw + np.bincount(case.elem_row, weights_p, minlength=n_row)
                  + 1j * (case.qd_static_mvar
                          + np.bincount(case.elem_row, weights_q, minlength=n_row)))
        s_gen = case.s_gen_mva
        base = case.base_mva
        if case.zip_pq is None:
            s_bus = (s_gen - s_load) / base
        else:
            ci_p, cz_p, ci_q, cz_q = case.zip_pq.T
            p_load, q_load = s_load.real, s_load.imag

            def s_bus(vm: np.ndarray):
                sp_ = p_load * (1 - ci_p - cz_p + ci_p * vm + cz_p * vm ** 2)
                sq_ = q_load * (1 - ci_q - cz_q + ci_q * vm + cz_q * vm ** 2)
                d_sp = p_load * (ci_p + 2 * cz_p * vm)
                d_sq = q_load * (ci_q + 2 * cz_q * vm)
                return (s_gen - sp_ - 1j * sq_) / base, -(d_sp + 1j * d_sq) / base

        failures = []
        for label, start, damped, max_it in attempts:
            if start == "results":
                if case.v is None:
                    continue
                v0 = case.v
            else:
                v0 = case.v_flat
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")  # singular Jacobian etc.: judged below
                try:
                    v, success, iterations = case.newton.solve(
                        s_bus, v0, self.tolerance_mva, max_it, damped=damped)
                except (ArithmeticError, ValueError, RuntimeError, np.linalg.LinAlgError) as exc:
                    failures.append(f"{label}: {type(exc).__name__}: {exc}")
                    continue
            if not success:
                failures.append(f"{label}: no convergence in {max_it} iterations")
                continue
            if not np.all(np.isfinite(v)):
                failures.append(f"{label}: non-finite voltages")
                continue
            case.v = v
            return self._direct_results(v, iterations), label
        return None, "; ".join(failures)

    def _direct_results(self, v: np.ndarray, iterations: int) -> _Solution:
        case = self._case
        base_mva = case.base_mva
        # branch flows as in PYPOWER's pfsoln [MVA]
        s_from = v[case.br_from] * np.conj(case.yf @ v) * base_mva
        s_to = v[case.br_to] * np.conj(case.yt @ v) * base_mva
        vm = np.abs(v)
        # currents as in pandapower.results_branch._get_branch_flows [kA]
        i_from = np.abs(s_from) / (vm[case.br_from] * case.base_kv_from) / _SQRT3
        i_to = np.abs(s_to) / (vm[case.br_to] * case.base_kv_to) / _SQRT3

        def take(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
            out = np.zeros(rows.shape[0], dtype=values.dtype)
            ok = rows >= 0
            out[ok] = values[rows[ok]]
            return out

        line_i = np.maximum(take(i_from, case.line_br), take(i_to, case.line_br))
        line_s = take(s_from, case.line_br)
        trafo_s = take(s_from, case.trafo_br)
        trafo_i = np.column_stack([take(i_from, case.trafo_br), take(i_to, case.trafo_br)])
        v_bus = v[case.bus_row]
        return _Solution(
            vm_pu=np.abs(v_bus), va_degree=np.angle(v_bus, deg=True), line_i_ka=line_i,
            line_p_from_mw=line_s.real, line_q_from_mvar=line_s.imag, trafo_i_ft_ka=trafo_i,
            trafo_p_hv_mw=trafo_s.real, trafo_q_hv_mvar=trafo_s.imag, iterations=int(iterations))

    # -------------------------------------------------------------- runpp path
    def _runpp_with_retries(self, first_init: str = "results") -> str | None:
        """Run ``pandapower.runpp`` with the retry chain; None on success, else the reason."""
        failures = []
        recycle = dict(trafo=False, gen=False, bus_pq=True)
        for label, start, damped, max_it in _ATTEMPTS:
            kwargs = dict(self._runpp_kwargs, algorithm="iwamoto_nr" if damped else "nr",
                          max_iteration=max_it)
            if start == "results":
                if first_init == "results" and self.net.get("converged", False):
                    kwargs.update(init="results", recycle=recycle)
                else:  # first run, or the last one failed (its results are NaN)
                    kwargs["init"] = "auto"
                    if first_init != "results":
                        kwargs["init"] = first_init
            else:
                kwargs["init"] = "dc"  # flat magnitudes, DC angles (phase shifts)
            # pandapower's iwamoto_nr prints every multiplier to stdout: swallow it
            with warnings.catch_warnings(), np.errstate(all="ignore"), \
                    contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                try:
                    pp.runpp(self.net, **kwargs)
                    return None
                except LoadflowNotConverged as exc:
                    failures.append(f"{label}: {exc}")
                except (ArithmeticError, ValueError, RuntimeError, np.linalg.LinAlgError) as exc:
                    failures.append(f"{label}: {type(exc).__name__}: {exc}")
        return "; ".join(failures)

    def _solve_runpp(self, p_mw: np.ndarray, q_mvar: np.ndarray) -> tuple[_Solution | None, str]:
        net = self.net
        for table, sign in _DRIVEN_TABLES:  # load convention -> each table's own
            lo = self._offset[table]  # net.load: own loads and injections
            hi = lo + len(net[table])
            if hi > lo:
                net[table]["p_mw"] = sign * p_mw[lo:hi]
                net[table]["q_mvar"] = sign * q_mvar[lo:hi]
        reason = self._runpp_with_retries()
        if reason is not None:
            return None, reason
        res_bus = net.res_bus.loc[self.bus_ids].copy()
        trafo_i = np.column_stack([net.res_trafo["i_hv_ka"].to_numpy(dtype=float),
                                   net.res_trafo["i_lv_ka"].to_numpy(dtype=float)])
        iterations = int(net._ppc.get("iterations", 0)) if net.get("_ppc") else 0
        return _Solution(
            vm_pu=res_bus["vm_pu"].to_numpy(dtype=float),
            va_degree=res_bus["va_degree"].to_numpy(dtype=float),
            line_i_ka=np.nan_to_num(net.res_line["i_ka"].to_numpy(dtype=float)),
            line_p_from_mw=np.nan_to_num(net.res_line["p_from_mw"].to_numpy(dtype=float)),
            line_q_from_mvar=np.nan_to_num(net.res_line["q_from_mvar"].to_numpy(dtype=float)),
            trafo_i_ft_ka=np.nan_to_num(trafo_i),
            trafo_p_hv_mw=np.nan_to_num(net.res_trafo["p_hv_mw"].to_numpy(dtype=float)),
            trafo_q_hv_mvar=np.nan_to_num(net.res_trafo["q_hv_mvar"].to_numpy(dtype=float)),
            iterations=iterations), "runpp"

    # -------------------------------------------------------------------- step
    def load_values(
        self,
        bus_p_kw: Mapping[int, float | Iterable[float]] | None = None,
        bus_q_kvar: Mapping[int, float | Iterable[float]] | None = None,
        load_p_kw: Mapping[int, float] | None = None,
        load_q_kvar: Mapping[int, float] | None = None,
        sgen_p_kw: Mapping[int, float] | None = None,
        sgen_q_kvar: Mapping[int, float] | None = None,
        storage_p_kw: Mapping[int, float] | None = None,
        storage_q_kvar: Mapping[int, float] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Active and reactive demand of every driven element for one step.

        Order: the rows of ``net.load`` (own loads in ``net.load`` order, then the
        injection loads, one per bus in ``net.bus`` order), then ``net.sgen``, then
        ``net.storage``. Arguments as in `step`.

        Returns
        -------
        p_mw, q_mvar : numpy.ndarray
            Demand per element [MW, Mvar], load convention (a producing sgen is
            negative).
        """
        p_mw = self._base_p_mw.copy()
        q_mvar = self._base_q_mvar.copy()
        off = self._offset
        for values, target, kind in ((bus_p_kw, p_mw, "bus p_kw"), (bus_q_kvar, q_mvar, "bus q_kvar")):
            _place(values, self._bus_pos, off["bus"], target, kind, "bus", "is not in the network",
                   self._rows_cache)
        for element, pos, p_in, q_in in (("load", self._load_pos, load_p_kw, load_q_kvar),
                                         ("sgen", self._sgen_pos, sgen_p_kw, sgen_q_kvar),
                                         ("storage", self._storage_pos, storage_p_kw, storage_q_kvar)):
            for values, target, kind in ((p_in, p_mw, f"{element} p_kw"), (q_in, q_mvar, f"{element} q_kvar")):
                _place(values, pos, off[element], target, kind, element,
                       f"is not one of the network's {element}s", self._rows_cache)
        return p_mw, q_mvar

    def step(
        self,
        bus_p_kw: Mapping[int, float | Iterable[float]] | None = None,
        bus_q_kvar: Mapping[int, float | Iterable[float]] | None = None,
        load_p_kw: Mapping[int, float] | None = None,
        load_q_kvar: Mapping[int, float] | None = None,
        sgen_p_kw: Mapping[int, float] | None = None,
        sgen_q_kvar: Mapping[int, float] | None = None,
        storage_p_kw: Mapping[int, float] | None = None,
        storage_q_kvar: Mapping[int, float] | None = None,
    ) -> GridState:
        """Set this step's demand, solve the AC power flow, return the grid state.

        Inputs hold for this step only: a bus not given has no extra injection,
        a load not given has the network's own value. Demand at a de-energised
        bus (out of service or cut off from the slack) has no effect.

        Parameters
        ----------
        bus_p_kw, bus_q_kvar : mapping of int to float or iterable of float, optional
            Extra demand at pandapower bus index [kW, kvar], load convention
            (a PV unit is negative). An iterable value (or a mapping source ->
            value) is summed: several units at one bus add up.
            Every argument may also be a pair ``(indices, values)`` of numpy
            arrays (int64 pandapower indices, each once; float values, already
            summed): the same as the mapping ``dict(zip(indices, values))``,
            without a Python loop over the elements.
        load_p_kw, load_q_kvar : mapping of int to float, optional
            Replacement for the demand of the network's own load with that
            pandapower index [kW, kvar] (before the load's ``scaling``).
        sgen_p_kw, sgen_q_kvar : mapping of int to float, optional
            Replacement for the power of the network's static generator with that
            pandapower index [kW, kvar], **load convention** (producing: negative;
            ``-1000 * net.sgen.p_mw``), before the sgen's ``scaling``.
        storage_p_kw, storage_q_kvar : mapping of int to float, optional
            Replacement for the power of the network's storage unit [kW, kvar],
            load convention (charging positive, as pandapower's ``net.storage``).

        Returns
        -------
        GridState
            With ``pf_converged`` False and no result arrays when Newton-Raphson
            fails after the retries (warm start; flat start with 50 iterations;
            Iwamoto's damped Newton-Raphson).

        Raises
        ------
        ValueError
            Unknown bus/load index, or a value that is not finite.
        """
        p_mw, q_mvar = self.load_values(bus_p_kw, bus_q_kvar, load_p_kw, load_q_kvar,
                                        sgen_p_kw, sgen_q_kvar, storage_p_kw, storage_q_kvar)
        t0 = time.perf_counter()
        if self._case is not None:
            sol, message = self._solve_direct(p_mw, q_mvar)
        else:
            sol, message = self._solve_runpp(p_mw, q_mvar)
        seconds = time.perf_counter() - t0
        timing = self.timing
        timing.n_steps += 1
        timing.pf_seconds_last = seconds
        timing.pf_seconds_total += seconds
        timing.pf_seconds_max = max(timing.pf_seconds_max, seconds)
        if sol is None:
            timing.n_not_converged += 1
            return GridState(pf_converged=False, message=f"not converged: {message}",
                             iterations=0, pf_seconds=seconds, bus_ids=self.bus_ids,
                             line_ids=self.line_ids, trafo_ids=self.trafo_ids)
        return self._state(sol, message, seconds)

    def _state(self, sol: _Solution, message: str, seconds: float) -> GridState:
        lim = self.limits
        in_line = self._line_in_service
        line_loading = np.zeros(len(self.line_ids))
        np.divide(sol.line_i_ka, self._line_i_max_ka, out=line_loading, where=in_line)
        line_loading *= 100.0
        in_trafo = self._trafo_in_service
        trafo_loading = np.zeros(len(self.trafo_ids))
        if len(self.trafo_ids):
            # pandapower trafo_loading="current": max over sides of sqrt3*I*Vn / Sn
            s_side = sol.trafo_i_ft_ka * self._trafo_vn_kv * _SQRT3
            np.divide(s_side.max(axis=1), self._trafo_rating, out=trafo_loading, where=in_trafo)
            trafo_loading *= 100.0
        vm = sol.vm_pu
        for what, arr in (("vm_pu", vm), ("line loading", line_loading),
                          ("trafo loading", trafo_loading)):
            if not np.all(np.isfinite(arr)):
                raise RuntimeError(f"power flow result {what} is not finite")  # pragma: no cover
        return GridState(
            pf_converged=True, message=message, iterations=sol.iterations, pf_seconds=seconds,
            bus_ids=self.bus_ids, line_ids=self.line_ids, trafo_ids=self.trafo_ids,
            vm_pu=vm, va_degree=sol.va_degree, line_i_ka=sol.line_i_ka,
            line_loading_percent=line_loading,
            line_p_from_kw=sol.line_p_from_mw * _KW_PER_MW,
            line_q_from_kvar=sol.line_q_from_mvar * _KW_PER_MW,
            trafo_loading_percent=trafo_loading,
            trafo_p_hv_kw=sol.trafo_p_hv_mw * _KW_PER_MW,
            trafo_q_hv_kvar=sol.trafo_q_hv_mvar * _KW_PER_MW,
            vm_min_pu=float(vm.min()) if vm.size else None,
            vm_max_pu=float(vm.max()) if vm.size else None,
            max_line_loading_percent=float(line_loading.max()) if line_loading.size else 0.0,
            max_trafo_loading_percent=float(trafo_loading.max()) if trafo_loading.size else 0.0,
            n_bus_violations=int(np.count_nonzero((vm < lim.vm_min_pu) | (vm > lim.vm_max_pu))),
            n_line_violations=int(np.count_nonzero(line_loading > lim.max_line_loading_percent)),
            n_trafo_violations=int(np.count_nonzero(
                trafo_loading > lim.max_trafo_loading_percent)),
        )
