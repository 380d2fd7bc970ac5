"""Data model of the EV charge-scheduling problem (seed 000, sections II-IV).

Pure data: frozen dataclasses that describe one scheduling problem
(:class:`ChargingProblem`), the grid limits it must respect (:class:`GridBounds`),
the strategy and solver options (:class:`StrategyOptions`) and the result
(:class:`Schedule`). No optimisation happens here; see
:mod:`simulators.scheduler.strategies`.

Indexing (used everywhere in this package)
-----------------------------------------
Step ``t = 0 .. T-1`` is the interval ``[t0 + t dt, t0 + (t+1) dt)``; powers
``p_kw[t, v]``/``q_kvar[t, v]`` are constant over it. ``soc[t, v]`` is the state of
charge at the *instant* ``t0 + t dt``, so ``soc`` has ``T + 1`` rows, ``soc[0] =
soc0`` and ``soc[t + 1] = soc[t] + (eta p+ - p- / eta) dt / E`` (seed 000, eq. (10)).
The objective (seed 000, eq. (8)) sums ``(soc[t] - soc*)^2`` over ``t = 1 .. T``:
the SOC at the *end* of every interval. Eq. (8) as printed evaluates
``SOC_t(p^(t-1))`` for ``t = 1..T`` so the power of the last interval would never
count; our shift by one makes every interval's power count and is otherwise
identical.

All powers use the load convention (consumption positive), see
``docs/conventions.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Strategy names (seed 000, section VI: cases 1-5).
STRATEGIES = ("uncoordinated", "smart", "smart_q", "v2g", "v2g_q")
#: Strategies that need an optimisation solver.
OPTIMISING_STRATEGIES = ("smart", "smart_q", "v2g", "v2g_q")
#: Solvers known to :func:`simulators.scheduler.strategies.solve`.
SOLVERS = ("piqp", "clarabel", "highs", "auto")
#: Cone handling of P^2 + Q^2 <= S^2 (seed 000, eqs. (12d), (12i)).
CONES = ("polygon", "soc")


@dataclass(frozen=True)
class GridBounds:
    """Operating limits of the linearised grid model (seed 000, eqs. (12g)-(12i)).

    Attributes
    ----------
    vm_min_pu, vm_max_pu : float
        Voltage band at every non-slack bus [pu] (eq. (12g)).
    line_loading_max : float
        Allowed fraction of each line's ampacity ``Sensitivities.i_max_ka`` [-]
        (eq. (12h)); 1.0 = 100 %.
    trafo_loading_max : float
        Allowed fraction of each substation transformer's rating
        ``Sensitivities.st_max_kva`` [-] (eq. (12i)).
    """

    vm_min_pu: float
    vm_max_pu: float
    line_loading_max: float = 1.0
    trafo_loading_max: float = 1.0

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first field outside its allowed range."""
        _finite_scalar("vm_min_pu", self.vm_min_pu, 0.5, 1.5)
        _finite_scalar("vm_max_pu", self.vm_max_pu, 0.5, 1.5)
        if not self.vm_min_pu < self.vm_max_pu:
            raise ValueError(
                f"vm_min_pu ({self.vm_min_pu}) must be < vm_max_pu ({self.vm_max_pu})"
            )
        _finite_scalar("line_loading_max", self.line_loading_max, 1e-3, 10.0)
        _finite_scalar("trafo_loading_max", self.trafo_loading_max, 1e-3, 10.0)


#: Name used by ``docs/conventions.md``.
GridLimits = GridBounds


@dataclass(frozen=True)
class ChargingProblem:
    """One EV charge-scheduling problem over ``T`` steps for ``V`` EVs.

    ``n`` is the number of non-slack buses of ``sens`` (columns of
    ``net_p_kw``/``net_q_kvar`` in ``sens.bus_ids`` order).

    Attributes
    ----------
    dt_h : float
        Step length ``T_s`` [h] (seed 000, eq. (4)).
    ev_ids : ndarray, shape (V,)
        Identifier of each EV (any hashable; copied into results).
    ev_col : ndarray of int, shape (V,)
        Column of ``sens.bus_ids`` where each EV charges (the map ``b_nv`` of
        eqs. (6)-(7)).
    capacity_kwh : ndarray, shape (V,)
        Battery capacity ``E_v`` [kWh].
    s_max_kva : ndarray, shape (V,)
        Charger rating ``S_v`` [kVA] (eq. (5)).
    efficiency : ndarray, shape (V,)
        Charge/discharge efficiency ``eta_v`` in (0, 1] [-] (eq. (4)).
    soc0 : ndarray, shape (V,)
        SOC at the start of step 0 [-].
    soc_target : ndarray, shape (V,)
        Target ``SOC*_v`` [-] (eq. (8)).
    soc_min, soc_max : ndarray, shape (V,)
        SOC limits [-] (eq. (12c)). An EV that starts outside them is only kept
        from moving further out (the bound used is ``min(soc_min, soc0)`` /
        ``max(soc_max, soc0)``).
    can_discharge : ndarray of bool, shape (V,)
        V2G-capable charger (``P-`` allowed in the V2G strategies).
    can_reactive : ndarray of bool, shape (V,)
        Charger may set Q (2-quadrant in ``smart_q``, 4-quadrant in ``v2g_q``).
    plugged : ndarray of bool, shape (T, V)
        EV plugged in during step t (P = Q = 0 otherwise).
    net_p_kw, net_q_kvar : ndarray, shape (T, n)
        Forecast nodal net demand without EVs [kW], [kvar] (eq. (1), load
        convention, ``sens.bus_ids`` order).
    sens : Sensitivities
        Linearised grid model (``simulators.grid.sensitivity``), eqs. (12f)-(12i).
    limits : GridBounds
        Voltage band and loading limits.
    vm_offset_pu : ndarray, shape (T, n), optional
        Correction added to the linearised voltages of every step and bus [pu]:
        AC minus linear voltage of a previous plan (see
        ``Controller.ac_voltage_offset``); None for the papers' pure linear model.
    line_vn_kv : ndarray, shape (m,), optional
        Nominal voltage of each line's from bus [kV], used to turn the ampacity
        into an apparent-power limit. If None it is recovered from the operating
        point as ``|S0| / (sqrt(3) vm0 I0)`` (lines without current then fall back
        to the linearised ``|I|`` rows).
    """

    dt_h: float
    ev_ids: np.ndarray
    ev_col: np.ndarray
    capacity_kwh: np.ndarray
    s_max_kva: np.ndarray
    efficiency: np.ndarray
    soc0: np.ndarray
    soc_target: np.ndarray
    soc_min: np.ndarray
    soc_max: np.ndarray
    can_discharge: np.ndarray
    can_reactive: np.ndarray
    plugged: np.ndarray
    net_p_kw: np.ndarray
    net_q_kvar: np.ndarray
    sens: Any
    limits: GridBounds
    line_vn_kv: np.ndarray | None = None
    vm_offset_pu: np.ndarray | None = None

    @property
    def n_steps(self) -> int:
        """Number of steps ``T``."""
        return int(np.shape(self.plugged)[0])

    @property
    def n_evs(self) -> int:
        """Number of EVs ``V``."""
        return int(np.shape(self.ev_ids)[0])

    def validate(self) -> None:
        """Check shapes, types and ranges of every field.

        Raises
        ------
        ValueError
            Naming the first offending field and its allowed range/shape.
        """
        _finite_scalar("dt_h", self.dt_h, 1e-6, 24.0)
        ev_ids = np.asarray(self.ev_ids)
        if ev_ids.ndim != 1:
            raise ValueError(f"ev_ids must be 1-D (V,), got shape {ev_ids.shape}")
        v = ev_ids.shape[0]
        n_bus = int(np.shape(self.sens.bus_ids)[0])
        col = np.asarray(self.ev_col)
        if col.shape != (v,) or not np.issubdtype(col.dtype, np.integer):
            raise ValueError(f"ev_col must be an integer array of shape ({v},), got {col.dtype} {col.shape}")
        if v and (col.min() < 0 or col.max() >= n_bus):
            raise ValueError(f"ev_col must be in [0, {n_bus - 1}] (columns of sens.bus_ids)")
        _vec("capacity_kwh", self.capacity_kwh, v, 1e-6, 1e6, lo_open=True)
        _vec("s_max_kva", self.s_max_kva, v, 0.0, 1e6)
        _vec("efficiency", self.efficiency, v, 0.0, 1.0, lo_open=True)
        _vec("soc0", self.soc0, v, 0.0, 1.0)
        _vec("soc_target", self.soc_target, v, 0.0, 1.0)
        _vec("soc_min", self.soc_min, v, 0.0, 1.0)
        _vec("soc_max", self.soc_max, v, 0.0, 1.0)
        if np.any(np.asarray(self.soc_min) > np.asarray(self.soc_max)):
            raise ValueError("soc_min must be <= soc_max for every EV")
        for name in ("can_discharge", "can_reactive"):
            arr = np.asarray(getattr(self, name))
            if arr.shape != (v,) or arr.dtype != bool:
                raise ValueError(f"{name} must be a bool array of shape ({v},), got {arr.dtype} {arr.shape}")
        plugged = np.asarray(self.plugged)
        if plugged.ndim != 2 or plugged.shape[1] != v or plugged.dtype != bool:
            raise ValueError(f"plugged must be a bool array of shape (T, {v}), got {plugged.dtype} {plugged.shape}")
        t = plugged.shape[0]
        if t < 1:
            raise ValueError("plugged must have at least one step (T >= 1)")
        for name in ("net_p_kw", "net_q_kvar"):
            arr = np.asarray(getattr(self, name), dtype=float)
            if arr.shape != (t, n_bus):
                raise ValueError(f"{name} must have shape (T, n) = ({t}, {n_bus}), got {arr.shape}")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{name} must be finite")
        if not isinstance(self.limits, GridBounds):
            raise ValueError("limits must be a GridBounds")
        self.limits.validate()
        m = int(np.shape(self.sens.line_ids)[0])
        if self.line_vn_kv is not None:
            _vec("line_vn_kv", self.line_vn_kv, m, 0.0, 1e4, lo_open=True)
        if self.vm_offset_pu is not None:
            off = np.asarray(self.vm_offset_pu, dtype=float)
            if off.shape != (t, n_bus) or not np.all(np.isfinite(off)) or np.abs(off).max(initial=0) > 0.5:
                raise ValueError(f"vm_offset_pu must be finite, |.| <= 0.5 pu, shape (T, n) = ({t}, {n_bus})")


@dataclass(frozen=True)
class StrategyOptions:
    """Strategy and solver options.

    Attributes
    ----------
    name : str
        One of ``"uncoordinated"`` (eq. (13)), ``"smart"``, ``"smart_q"``,
        ``"v2g"``, ``"v2g_q"`` (eq. (12) with the variables of section IV).
    k_weight : float
        Weight ``k`` of the power penalty of eq. (11) [1/kW per step]. The SOC
        term is dimensionless (fractions), so a 1 kW change for one 15-min step of
        a 16 kWh / eta = 0.9 EV moves the SOC by 0.014: the default 1e-4 leaves a
        steady-state SOC error below ``k / (2 * 0.014) = 0.36 %`` even for the last
        step of the horizon (and proportionally less earlier), while still
        breaking the degeneracy between ``P+`` and ``P-``. Used in all optimising
        strategies (seed 000, section IV-B keeps J for smart charging).
    q_weight : float
        Small quadratic regulariser on charger reactive power [1/kvar^2 per step]
        making the optimal Q unique (Q has no cost in eq. (11)). Its marginal cost
        at 3.6 kvar (0.007 per kvar-step) is far below the marginal value of Q when
        a voltage row binds (about 0.1 per kvar-step on CIGRE MV), so Q is still used
        wherever it helps. HiGHS's QP solver (pyomo path) declares Hessians with
        entries below about 1e-4 "non-convex", hence not smaller than 1e-3.
    cone : str
        ``"polygon"``: inscribed regular ``n_sides``-gon (linear, conservative;
        a vertex lies on the P axis so P = S is still reachable) for the charger
        (eq. (12d)), line (12h) and transformer (12i) apparent-power limits;
        ``"soc"``: exact second-order cones (Clarabel only).
    n_sides : int
        Polygon sides (multiple of 4, >= 8).
    soft_limits : str
        ``"auto"``: grid rows violated by the base load alone (EVs idle) get a
        non-negative slack with penalty ``soft_penalty``; all others stay hard
        (then the problem is always feasible: P = Q = 0 satisfies them).
        ``"never"``: all grid rows hard (an infeasible base load ends in the
        fallback). ``"always"``: slack on every grid row.
    soft_penalty : float
        Linear penalty per unit of slack: per pu of voltage and per unit of
        relative loading, per step [-]. 1e6 per pu exceeds the marginal value of
        charging (below 1 per kW per EV-step) divided by the voltage sensitivity
        of MV/LV buses (1e-5 to 1e-3 pu/kW), so slack is used only where no
        charging schedule can avoid it.
    time_limit_s : float
        Wall-clock budget of one solve [s].
    solver : str
        ``"piqp"`` (default, polygon), ``"clarabel"`` (polygon or exact cones),
        ``"highs"`` (pyomo reference path, polygon) or ``"auto"`` (matrix path:
        PIQP when no second-order cone is left after row screening, which makes
        the problem the same QP, Clarabel otherwise; polygon or exact cones).
    max_iter : int
        Iteration cap of the interior-point solvers.
    fine_steps : int or None
        Move blocking (matrix path only, an approximation, off by default): the
        first ``fine_steps`` steps keep their own decision variables; beyond them
        each EV's ``P+``, ``P-`` and ``Q`` are held constant over blocks of
        ``block_steps`` steps, and an EV takes part in a block only if it is
        plugged for the whole block. ``None`` (default): every step free (exact).
        The blocked plan is feasible for the full problem (a restriction of its
        feasible set) and its objective can only be higher; in receding-horizon
        use only the first step is applied, and :class:`.receding.RecedingHorizon`
        re-solves before a plan's first blocked step would be applied. See
        docs/strategies.md for the measured objective change.
    block_steps : int
        Steps per block beyond ``fine_steps`` (4 = hourly blocks of 15-min steps).
    row_generation : bool
        Matrix path: voltage rows (12g) by constraint generation (exact; see
        :func:`.matrix_model.solve_generated`): solve with the rows the base load
        breaks, add the omitted rows the solution violates (and those near their
        bound), re-solve until none is violated. False: every row screening keeps,
        in one solve (the path before issue 17).
    aggregate : bool
        Matrix path: EVs identical for the optimiser (same bus, plug window,
        parameters and SOC bit for bit) are solved as one EV of the group's size
        and their powers split equally (exact; see
        :func:`.matrix_model.aggregate_identical`). In receding runs the EVs an
        optimal plan charged to the same SOC (full ones, mostly) collapse this way.
    """

    name: str = "smart"
    k_weight: float = 1e-4
    q_weight: float = 1e-3
    cone: str = "polygon"
    n_sides: int = 16
    soft_limits: str = "auto"
    soft_penalty: float = 1e6
    time_limit_s: float = 30.0
    solver: str = "piqp"
    max_iter: int = 200
    fine_steps: int | None = None
    block_steps: int = 4
    row_generation: bool = True
    aggregate: bool = True

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first field outside its allowed range."""
        if self.name not in STRATEGIES:
            raise ValueError(f"name must be one of {STRATEGIES}, got {self.name!r}")
        _finite_scalar("k_weight", self.k_weight, 0.0, 1e3)
        _finite_scalar("q_weight", self.q_weight, 0.0, 1e3)
        if self.cone not in CONES:
            raise ValueError(f"cone must be one of {CONES}, got {self.cone!r}")
        if int(self.n_sides) != self.n_sides or self.n_sides < 8 or self.n_sides % 4:
            raise ValueError(f"n_sides must be a multiple of 4 and >= 8, got {self.n_sides}")
        if self.soft_limits not in ("auto", "never", "always"):
            raise ValueError(f"soft_limits must be 'auto', 'never' or 'always', got {self.soft_limits!r}")
        _finite_scalar("soft_penalty", self.soft_penalty, 0.0, 1e9, lo_open=True)
        _finite_scalar("time_limit_s", self.time_limit_s, 0.0, 1e6, lo_open=True)
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
        if self.cone == "soc" and self.solver not in ("clarabel", "auto"):
            raise ValueError("cone='soc' (exact second-order cones) needs solver='clarabel' or 'auto'")
        if int(self.max_iter) != self.max_iter or self.max_iter < 1:
            raise ValueError(f"max_iter must be a positive integer, got {self.max_iter}")
        if self.fine_steps is not None and (int(self.fine_steps) != self.fine_steps or self.fine_steps < 1):
            raise ValueError(f"fine_steps must be None or a positive integer, got {self.fine_steps}")
        if int(self.block_steps) != self.block_steps or self.block_steps < 1:
            raise ValueError(f"block_steps must be a positive integer, got {self.block_steps}")
        if not isinstance(self.row_generation, (bool, np.bool_)):
            raise ValueError(f"row_generation must be a bool, got {self.row_generation!r}")
        if not isinstance(self.aggregate, (bool, np.bool_)):
            raise ValueError(f"aggregate must be a bool, got {self.aggregate!r}")
        if self.fine_steps is not None and self.solver == "highs":
            raise ValueError("fine_steps (move blocking) is implemented on the matrix path only, "
                             "not with solver='highs'")


@dataclass(frozen=True)
class Schedule:
    """Result of one scheduling run.

    Attributes
    ----------
    p_kw, q_kvar : ndarray, shape (T, V)
        Charger active (``P+ - P-``) and reactive power per step [kW], [kvar]
        (load convention).
    soc : ndarray, shape (T + 1, V)
        SOC at the start of each step and at the end of the horizon [-] (eq. (10)).
    status : str
        ``"optimal"``, ``"closed_form"`` (uncoordinated) or the failure reason of
        the solver when ``fallback`` is True (``"time_limit"``, ``"infeasible"``,
        ``"numerical"``, ...).
    objective : float
        ``J`` of eq. (11) evaluated on the returned schedule (same formula for
        every path and strategy, so values compare directly) [-].
    solve_s, build_s : float
        Solver and model-build wall-clock time [s].
    soft_violation_max : float
        Largest slack used in soft mode (pu for voltage, fraction of rating for
        lines/transformers); 0.0 when none.
    soft_violation_where : tuple of (kind, element id, step, amount)
        Every slack above 1e-6, largest first (at most 50); ``kind`` is
        ``"vm_min"``, ``"vm_max"``, ``"line"`` or ``"trafo"``, the id a pandapower
        index.
    fallback : bool
        True when the solver failed and the safe fallback schedule was returned.
    message : str
        Human-readable detail.
    vm_rows : dict or None
        Matrix path with ``row_generation``: voltage rows (12g) within 2 mpu of
        their bound at this schedule, per side (``"vm_min"``, ``"vm_max"``), bool
        (T, n); the seed of the next solve of a similar problem
        (``solve(..., seed_rows=...)``). None otherwise.
    """

    p_kw: np.ndarray
    q_kvar: np.ndarray
    soc: np.ndarray
    status: str
    objective: float
    solve_s: float = 0.0
    build_s: float = 0.0
    soft_violation_max: float = 0.0
    soft_violation_where: tuple = field(default_factory=tuple)
    fallback: bool = False
    message: str = ""
    vm_rows: dict | None = None


# --------------------------------------------------------------------------- helpers
def _finite_scalar(name, value, lo, hi, lo_open=False):
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    bad = not np.isfinite(x) or x > hi or (x <= lo if lo_open else x < lo)
    if bad:
        left = "(" if lo_open else "["
        raise ValueError(f"{name} must be in {left}{lo}, {hi}], got {value!r}")


def _vec(name, value, v, lo, hi, lo_open=False):
    arr = np.asarray(value, dtype=float)
    if arr.shape != (v,):
        raise ValueError(f"{name} must have shape ({v},), got {arr.shape}")
    bad = ~np.isfinite(arr) | (arr > hi) | ((arr <= lo) if lo_open else (arr < lo))
    if np.any(bad):
        left = "(" if lo_open else "["
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name} must be finite and in {left}{lo}, {hi}], got {arr[i]!r} at index {i}")
