"""Charge scheduling of autonomous EVs that choose their charging node (seed 001).

Mixed-integer version of the smart-charging problem (seed 001, eq. (12)): every EV
``v`` that may move gets one binary ``b[n, v]`` per candidate node ``n`` (exactly
one node per EV, eq. (9)); the bilinear nodal injection ``b[n, v] P[t, v]`` of
eq. (2) is replaced by ``z[n, v, t]`` with McCormick's inequalities (eqs. (11),
(12c)-(12e)), exact for binaries. The drive to another node costs the energy
``E*`` (pre-/post-processing of eqs. (12g)-(12i)); an EV with too little charge
to drive charges at home (its binaries are fixed).

The grid is the linearised model of :mod:`simulators.grid.sensitivity`; the grid
rows (voltage band (8i), line limits (8j), transformer rating (8k)) match the
convex strategies of :mod:`simulators.scheduler` (same polygon, same "auto" soft
limits), so with every EV forced home the problem *is* smart charging.

Objective (eq. (12a)): ``sum_{t=1..T} sum_v (SOC[t, v] - SOC*_v)^2`` (the ``t = 0``
term of (12a) is a constant and is dropped). Solution paths:

``objective="pwl"`` (default)
    Piecewise-linear epigraph of each square through breakpoints on the SOC grid an
    EV reaches at full power (``soc0 + k eta P dt / E``, refined ``pwl_refine``
    times), exact at the breakpoints, so HiGHS solves a MILP (the "linear
    mixed-integer program" of the paper). The true quadratic objective of the
    returned schedule is reported beside the model's.
    With ``polish=True`` (default) the charging nodes of the MILP are then fixed
    and the exact convex QP is solved for the powers (the smart-charging strategy
    with PIQP, or HiGHS QP): the returned schedule is optimal for the true
    objective at those nodes. Measured on seed 001 (``docs/autonomous.md``): same
    schedule as SCIP's MIQP, ten times faster.
``objective="quadratic"``
    The exact convex quadratic objective, solved as an MIQP by SCIP
    (``pyscipopt``, pyomo's ``scip_direct``); HiGHS 1.15 refuses MIQPs ("Cannot
    solve MIQP problems with HiGHS"). Without binaries (every EV at home) the QP
    goes to ``qp_solver``.
``objective="pwl_lower"``
    Tangents instead of chords at the same breakpoints: the MILP's dual bound is
    a certified lower bound on the true (quadratic) optimum; used to certify the
    gap of the polished schedule (``bench/autonomous.py``).

No mosaik, no I/O; all powers in kW with the load convention (``docs/conventions.md``).
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field

import numpy as np

from simulators.scheduler.problem import ChargingProblem, Schedule

#: Objective handling (see module docstring).
OBJECTIVES = ("pwl", "quadratic", "pwl_lower")
#: Solvers of the fixed-node convex QP (conventional case and polish step).
QP_SOLVERS = ("piqp", "highs")
#: McCormick variants: ``"paper"`` = eqs. (12c)-(12e) plus z >= 0; ``"compact"`` =
#: z <= P b, z >= 0, sum_n z = P (equivalent for binaries, fewer rows, tighter).
MCCORMICK = ("paper", "compact")

_TIGHT = 1e-9  # rows whose largest possible EV change is below this are dropped


class AutonomousSolveError(RuntimeError):
    """The MIP ended without any feasible schedule (see the message)."""


@dataclass(frozen=True)
class AutonomousOptions:
    """Options of :func:`solve_autonomous`.

    Attributes
    ----------
    objective : str
        ``"pwl"`` (HiGHS MILP), ``"quadratic"`` (SCIP MIQP) or ``"pwl_lower"``
        (tangent MILP, lower bound).
    method : str
        ``"milp"`` (branch and bound, default) or ``"lp_round"``: solve the LP
        relaxation of the ``"pwl"`` MILP, put each EV at the node with the largest
        ``b[n, v]`` and polish (QP at those nodes). A heuristic for fleets where
        the MILP finds no incumbent in time (10x seed 001); no optimality proof.
    polish : bool
        ``"pwl"`` only: fix the MILP's charging nodes and re-solve the powers
        with the exact quadratic objective (convex QP, HiGHS).
    exact_drive_energy : bool
        Polish step only: charge the outbound leg (12g)-(12h) only to the EVs that
        actually moved (the MILP charges it to every movable EV, the paper's
        conservative approximation of its footnote 2). False keeps the paper's
        bookkeeping.
    qp_solver : str
        Solver of every fixed-node convex QP (all EVs at fixed nodes, and the
        polish step): ``"piqp"`` = the smart-charging strategy
        (:func:`simulators.scheduler.strategies.solve`, ``k_weight=0``, same
        grid rows; ~0.05 s on the seed case) or ``"highs"`` (pyomo model of this
        module, HiGHS QP; seconds).
    pwl_refine : int
        Breakpoints per full-power SOC step ``eta P dt / E`` (>= 1). 1 puts the
        breakpoints exactly on the SOCs an EV reaches at full or zero power.
    mccormick : str
        ``"paper"`` or ``"compact"`` (see :data:`MCCORMICK`).
    cut_sum_z : bool
        Add the valid equality ``sum_n z[n, v, t] = P[t, v]`` to the ``"paper"``
        variant (tightens the LP relaxation; implied for binaries).
    n_sides : int
        Sides of the inscribed polygon for line and transformer apparent power
        (multiple of 4, >= 8), as in the convex strategies.
    move_penalty : float
        Cost of each EV charging away from its parking node [-] (objective
        units). Tie-break: eq. (12) alone makes moving free once ``E*`` is
        pre-paid (eq. (12g) charges it to every movable EV), so without it the
        MILP moves EVs arbitrarily when the grid does not bind. 1e-3 exceeds the
        default MIP gap tolerance on seed 001 (1e-4 x ~60) divided by the number
        of movers, and is below the value of one kWh shifted by an hour.
    soft_limits : str
        ``"auto"`` (slack only on rows violated by the base load alone),
        ``"never"`` or ``"always"``.
    soft_penalty : float
        Penalty per unit of slack (pu voltage, fraction of rating) per step [-].
        1e6, as :class:`StrategyOptions`: above the marginal value of charging
        (< 2 per kW and EV-step here) over the smallest voltage sensitivities
        (~1e-5 pu/kW at a transformer busbar), so slack is used only where no
        schedule avoids it. Same seed 001 result as 1e4, same solve time.
    mip_rel_gap : float
        Relative MIP gap at which the solver stops [-].
    time_limit_s : float
        Wall-clock limit of the solver [s].
    threads : int or None
        Solver threads (None: solver default).
    solver_options : dict
        Extra options passed to the MILP/MIQP solver (HiGHS or SCIP names), e.g.
        ``{"solver": "ipm"}`` for the LP of ``method="lp_round"``.
    """

    objective: str = "pwl"
    method: str = "milp"
    polish: bool = True
    exact_drive_energy: bool = True
    qp_solver: str = "piqp"
    pwl_refine: int = 1
    mccormick: str = "compact"
    cut_sum_z: bool = True
    n_sides: int = 16
    move_penalty: float = 1e-3
    soft_limits: str = "auto"
    soft_penalty: float = 1e6
    mip_rel_gap: float = 1e-4
    time_limit_s: float = 60.0
    threads: int | None = None
    solver_options: dict = field(default_factory=dict)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first invalid field."""
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if int(self.pwl_refine) != self.pwl_refine or self.pwl_refine < 1:
            raise ValueError(f"pwl_refine must be a positive integer, got {self.pwl_refine!r}")
        if self.method not in ("milp", "lp_round"):
            raise ValueError(f"method must be 'milp' or 'lp_round', got {self.method!r}")
        if self.method == "lp_round" and self.objective != "pwl":
            raise ValueError("method='lp_round' needs objective='pwl'")
        if self.qp_solver not in QP_SOLVERS:
            raise ValueError(f"qp_solver must be one of {QP_SOLVERS}, got {self.qp_solver!r}")
        if self.mccormick not in MCCORMICK:
            raise ValueError(f"mccormick must be one of {MCCORMICK}, got {self.mccormick!r}")
        if int(self.n_sides) != self.n_sides or self.n_sides < 8 or self.n_sides % 4:
            raise ValueError(f"n_sides must be a multiple of 4 and >= 8, got {self.n_sides}")
        if self.soft_limits not in ("auto", "never", "always"):
            raise ValueError(f"soft_limits must be 'auto', 'never' or 'always', got {self.soft_limits!r}")
        mp = float(self.move_penalty)
        if not math.isfinite(mp) or mp < 0:
            raise ValueError(f"move_penalty must be finite and >= 0, got {mp!r}")
        for name, lo in (("soft_penalty", 0.0), ("mip_rel_gap", -1e-300), ("time_limit_s", 0.0)):
            x = float(getattr(self, name))
            if not math.isfinite(x) or x <= lo:
                raise ValueError(f"{name} must be finite and > {max(lo, 0.0)}, got {x!r}")
        if self.threads is not None and (int(self.threads) != self.threads or self.threads < 1):
            raise ValueError(f"threads must be None or a positive integer, got {self.threads!r}")


@dataclass(frozen=True)
class AutonomousSchedule:
    """Result of :func:`solve_autonomous`.

    Attributes
    ----------
    schedule : Schedule
        ``p_kw`` (T, V) [kW], ``q_kvar`` (T, V) = 0 [kvar], ``soc`` (T + 1, V) the
        model's trajectory [-] (row 0 is the initial SOC *after* the outbound drive,
        eq. (12g), for the EVs charged with it: every movable EV in the MILP, only
        the moved ones after a polish with ``exact_drive_energy``), ``objective`` = the true quadratic objective
        (12a) of that trajectory against the original targets ``SOC*_v``.
    charge_col : ndarray of int, shape (V,)
        Column of ``sens.bus_ids`` where each EV charges.
    charge_bus : ndarray of int, shape (V,)
        pandapower bus index where each EV charges.
    home_col : ndarray of int, shape (V,)
        Parking column (``problem.ev_col``).
    movable : ndarray of bool, shape (V,)
        EV allowed to move (``SOC0 >= E*/E``, eq. (12g)).
    moved : ndarray of bool, shape (V,)
        EV charges away from its parking node.
    soc_final : ndarray, shape (V,)
        SOC back at the parking node at the end of the horizon: ``soc[T]`` minus
        ``E*/E`` for moved EVs (eq. (12i)) [-].
    soc_target_model : ndarray, shape (V,)
        Targets used in the model (raised by eq. (12h) for movable EVs) [-].
    e_star_kwh : float
        Drive energy of one leg ``E*`` [kWh].
    model_objective : float
        Model objective of the returned schedule: SOC term against
        ``soc_target_model`` (PWL epigraph if unpolished ``"pwl"``/``"pwl_lower"``,
        exact square otherwise) + soft-limit penalty on the violation *added* by
        EVs beyond the base load's (rows charging cannot relieve keep their
        base-load violation as a floor; that constant is not counted) + move
        penalty [-].
    true_objective_model_targets : float
        Exact quadratic objective (12a) of the returned trajectory against
        ``soc_target_model``, without penalties [-].
    best_bound : float
        Dual bound of the MILP/MIQP on *its* objective (for ``"pwl"`` that is the
        chord model, not the exact one; ``"pwl_lower"``'s bound is a lower bound on
        the exact optimum); for ``method="lp_round"`` the LP relaxation value; NaN
        for fixed-node QPs [-].
    mip_gap : float
        Relative gap of the MILP/MIQP at its end
        ``(incumbent - bound) / max(|incumbent|, 1e-9)`` [-]; NaN for ``lp_round``,
        0 for fixed-node QPs.
    solver : str
        Solver(s) used.
    n_binaries, n_vars, n_rows : int
        Model size after fixing and row pruning (of the MILP/MIQP if any).
    extra : dict
        Diagnostics: ``uncontrollable_violations`` (grid rows violated by the base
        load that no EV can influence), ``n_grid_rows``, ``n_soft_rows``; after a
        polish also ``milp_objective``, ``milp_bound``, ``milp_gap``,
        ``milp_true_objective`` (exact objective of the unpolished MILP plan against
        the original targets), ``milp_build_s``, ``milp_solve_s``, ``qp_solve_s``.
    """

    schedule: Schedule
    charge_col: np.ndarray
    charge_bus: np.ndarray
    home_col: np.ndarray
    movable: np.ndarray
    moved: np.ndarray
    soc_final: np.ndarray
    soc_target_model: np.ndarray
    e_star_kwh: float
    model_objective: float
    true_objective_model_targets: float
    best_bound: float
    mip_gap: float
    solver: str
    n_binaries: int = 0
    n_vars: int = 0
    n_rows: int = 0
    extra: dict = field(default_factory=dict)


# --------------------------------------------------------------------- distances / E*
def candidate_distances_km(net, bus_ids) -> np.ndarray:
    """Shortest line-length distances between buses of a pandapower network.

    Parameters
    ----------
    net : pandapowerNet
        Network; lines weighted by ``length_km``, transformers and closed bus-bus
        switches by 0 (``pandapower.topology.create_nxgraph``).
    bus_ids : sequence of int
        pandapower bus indices.

    Returns
    -------
    ndarray, shape (k, k)
        Distance matrix [km] (``inf`` between disconnected buses).
    """
    import networkx as nx
    import pandapower.topology as top

    graph = top.create_nxgraph(net, calc_branch_impedances=False, include_out_of_service=False)
    ids = [int(b) for b in bus_ids]
    out = np.full((len(ids), len(ids)), np.inf)
    for i, a in enumerate(ids):
        dist = nx.single_source_dijkstra_path_length(graph, a, weight="weight")
        for j, b in enumerate(ids):
            if b in dist:
                out[i, j] = float(dist[b])
    return out


def drive_energy_kwh(net, bus_ids, kwh_per_km: float = 0.160, reference_bus=None) -> float:
    """Drive energy of one leg ``E*`` (seed 001, section III-B-c).

    ``E*`` = the longest distance among the candidate nodes times the consumption.
    Seed 001 quotes 345 m (N18-N1) x 0.160 kWh/km = 55 Wh; on pandapower's CIGRE LV
    the longest *pairwise* distance among R1, R11, R15-R18 is R15-R18 = 375 m, while
    345 m is the longest distance *from R1* (pass ``reference_bus``).

    Parameters
    ----------
    net : pandapowerNet
        Network whose line lengths give the distances.
    bus_ids : sequence of int
        Candidate charging buses (pandapower indices).
    kwh_per_km : float
        Average consumption [kWh/km].
    reference_bus : int, optional
        If given, use the longest distance from this bus to the candidates instead
        of the longest pairwise distance.

    Returns
    -------
    float
        ``E*`` [kWh].

    Raises
    ------
    ValueError
        If a candidate is unreachable or the consumption is negative.
    """
    if not math.isfinite(kwh_per_km) or kwh_per_km < 0:
        raise ValueError(f"kwh_per_km must be finite and >= 0, got {kwh_per_km!r}")
    ids = [int(b) for b in bus_ids]
    if reference_bus is not None:
        dist = candidate_distances_km(net, [int(reference_bus)] + ids)[0, 1:]
    else:
        dist = candidate_distances_km(net, ids)
    if not np.all(np.isfinite(dist)):
        raise ValueError("some candidate buses are not connected to each other")
    return float(np.max(dist, initial=0.0)) * float(kwh_per_km)


# ------------------------------------------------------------------ pre/post-processing
def preprocess(soc0, soc_target, capacity_kwh, e_star_kwh, allow_move=None):
    """Pre-processing of seed 001, eqs. (12g)-(12h).

    Parameters
    ----------
    soc0, soc_target, capacity_kwh : ndarray, shape (V,)
        Initial SOC [-], target [-], capacity [kWh].
    e_star_kwh : float
        Drive energy of one leg [kWh].
    allow_move : ndarray of bool, shape (V,), optional
        EVs that are autonomous at all (default: all).

    Returns
    -------
    movable : ndarray of bool
        ``SOC0 >= E*/E`` (and allowed): binaries free.
    soc0_model, target_model : ndarray
        ``SOC0 - E*/E`` and ``min(SOC* + E*/E, 1)`` for movable EVs, unchanged
        otherwise [-].
    """
    soc0 = np.asarray(soc0, dtype=float)
    tgt = np.asarray(soc_target, dtype=float)
    de = float(e_star_kwh) / np.asarray(capacity_kwh, dtype=float)
    movable = soc0 >= de
    if allow_move is not None:
        movable &= np.asarray(allow_move, dtype=bool)
    soc0_m = np.where(movable, soc0 - de, soc0)
    tgt_m = np.where(movable, np.minimum(tgt + de, 1.0), tgt)
    return movable, soc0_m, tgt_m


# ------------------------------------------------------------------------ grid rows
@dataclass
class _Rows:
    """Grid rows ``G @ Pev[t] <= h[t]`` over the candidate columns."""

    kind: list
    elem: list
    g: np.ndarray  # (R, C)
    h: np.ndarray  # (T, R)


def _grid_rows(problem: ChargingProblem, cand_cols: np.ndarray, n_sides: int) -> _Rows:
    """Linearised grid rows over the candidate columns (seed 001, eqs. (8i)-(8k)).

    Same rows as the convex strategies (:mod:`simulators.scheduler.model_data`):
    voltage band, inscribed ``n_sides``-gon on the from-end line apparent power
    (linearised ``|I|`` where the line voltage is unknown) and on the HV-side
    transformer apparent power. Voltage rows in pu, flow rows in fractions of the
    rating, so that slack is measured in those units.
    """
    from simulators.scheduler import model_data as md

    sens = problem.sens
    lim = problem.limits
    base = md.grid_constants(problem)
    kinds, elems, gs, hs = [], [], [], []
    c = np.asarray(cand_cols, dtype=int)
    a = np.asarray(sens.dvm_dp)[:, c]
    for i, bus in enumerate(sens.bus_ids):
        kinds += ["vm_min", "vm_max"]
        elems += [int(bus), int(bus)]
        gs += [-a[i], a[i]]
        hs += [base["vm"][:, i] - lim.vm_min_pu, lim.vm_max_pu - base["vm"][:, i]]
    cos_th, sin_th, shrink = md.polygon(n_sides)

    def poly(kind, eid, p_base, q_base, dp, dq, s_max):
        for ct, st in zip(cos_th, sin_th):
            kinds.append(kind)
            elems.append(int(eid))
            gs.append((ct * dp + st * dq) / s_max)
            hs.append(shrink - (ct * p_base + st * q_base) / s_max)

    s_line, use_cone = md.line_s_max_kva(problem)
    imax = np.asarray(sens.i_max_ka, float) * lim.line_loading_max
    for j, lid in enumerate(sens.line_ids):
        if use_cone[j]:
            poly("line", lid, base["pl"][:, j], base["ql"][:, j],
                 np.asarray(sens.dpl_dp)[j, c], np.asarray(sens.dql_dp)[j, c], s_line[j])
        elif np.isfinite(imax[j]) and imax[j] > 0:
            kinds.append("line")
            elems.append(int(lid))
            gs.append(np.asarray(sens.di_dp)[j, c] / imax[j])
            hs.append(1.0 - base["i"][:, j] / imax[j])
    s_tr = md.trafo_s_max_kva(problem)
    for j, tid in enumerate(sens.trafo_ids):
        if np.isfinite(s_tr[j]) and s_tr[j] > 0:
            poly("trafo", tid, base["pt"][:, j], base["qt"][:, j],
                 np.asarray(sens.dpt_dp)[j, c], np.asarray(sens.dqt_dp)[j, c], s_tr[j])
    g = np.array(gs, dtype=float).reshape(len(gs), len(c))
    h = np.array(hs, dtype=float).reshape(len(hs), -1).T
    return _Rows(kinds, elems, g, h)


# --------------------------------------------------------------------------- solver
def solve_autonomous(
    problem: ChargingProblem,
    candidate_cols=None,
    e_star_kwh: float = 0.0,
    options: AutonomousOptions | None = None,
    allow_move=None,
) -> AutonomousSchedule:
    """Schedule charging power and charging node of autonomous EVs (seed 001, eq. (12)).

    Parameters
    ----------
    problem : ChargingProblem
        Smart-charging problem; ``ev_col`` is each EV's parking column ``b*_nv``.
        Charging only (``can_discharge``/``can_reactive`` are ignored: seed 001
        uses unity power factor and no V2G); ``s_max_kva`` is the charger limit
        ``P_v`` of eq. (8d).
    candidate_cols : sequence of int, optional
        Columns of ``problem.sens.bus_ids`` where an autonomous EV may charge
        (parking columns are always added). Default: the parking columns of the
        EVs (``unique(problem.ev_col)``), i.e. the load buses where EVs park.
    e_star_kwh : float
        Drive energy of one leg ``E*`` [kWh] (:func:`drive_energy_kwh`); 0 with
        ``allow_move`` all False gives plain smart charging.
    options : AutonomousOptions, optional
        Solver and formulation options.
    allow_move : array_like of bool, shape (V,), optional
        EVs that are autonomous at all (default: all); the others, and those with
        ``SOC0 < E*/E`` (eq. (12g)), keep ``b = b*``.

    Returns
    -------
    AutonomousSchedule

    Raises
    ------
    ValueError
        Invalid problem or options.
    AutonomousSolveError
        The solver ended without a feasible schedule (infeasible with
        ``soft_limits="never"``, or the time limit hit before any incumbent).
    """
    import pyomo.environ as pyo

    opts = options or AutonomousOptions()
    opts.validate()
    problem.validate()
    if not math.isfinite(e_star_kwh) or e_star_kwh < 0:
        raise ValueError(f"e_star_kwh must be finite and >= 0, got {e_star_kwh!r}")
    t0_build = time.perf_counter()
    T, V = problem.n_steps, problem.n_evs
    dt = float(problem.dt_h)
    cap = np.asarray(problem.capacity_kwh, float)
    eta = np.asarray(problem.efficiency, float)
    pmax = np.asarray(problem.s_max_kva, float)
    plugged = np.asarray(problem.plugged, bool)
    home = np.asarray(problem.ev_col, int)
    n_bus = len(problem.sens.bus_ids)
    cand = sorted({int(c) for c in (candidate_cols if candidate_cols is not None else [])}
                  | set(home.tolist()))
    if cand and (min(cand) < 0 or max(cand) >= n_bus):
        raise ValueError(f"candidate_cols must be columns in [0, {n_bus - 1}]")
    cand = np.array(cand, dtype=int)
    pos = {int(c): k for k, c in enumerate(cand)}
    C = len(cand)

    movable, soc0_m, tgt_m = preprocess(problem.soc0, problem.soc_target, cap, e_star_kwh, allow_move)
    if C == 1:
        movable[:] = False
    soc_lo = np.minimum(np.asarray(problem.soc_min, float), soc0_m)
    soc_hi = np.maximum(np.asarray(problem.soc_max, float), soc0_m)
    ub = np.where(plugged, pmax[None, :], 0.0)  # (T, V) charger limit (8d) + plug window
    gain = eta * dt / cap  # SOC per kW per step, eq. (8b)

    mov = [v for v in range(V) if movable[v]]
    if not mov and opts.qp_solver == "piqp" and (opts.objective == "quadratic" or
                                                 (opts.objective == "pwl" and opts.polish)):
        return _smart_qp(problem, movable, soc0_m, tgt_m, e_star_kwh, opts, t0_build)

    rows = _grid_rows(problem, cand, opts.n_sides)
    # largest EV load per candidate column and step: prune rows that cannot bind
    pmax_col = np.zeros((T, C))
    for v in range(V):
        if movable[v]:
            pmax_col += ub[:, v : v + 1]
        else:
            pmax_col[:, pos[int(home[v])]] += ub[:, v]
    worst = np.clip(rows.g, 0, None) @ pmax_col.T  # (R, T)
    base_viol = rows.h.T < -1e-12  # (R, T) violated with EVs idle
    if opts.soft_limits == "always":
        soft = np.ones_like(base_viol)
    elif opts.soft_limits == "auto":
        soft = base_viol
    else:
        soft = np.zeros_like(base_viol)
    constant = np.max(np.abs(rows.g), axis=1, initial=0.0) < 1e-15  # rows EVs cannot move
    keep = ((worst > rows.h.T + _TIGHT) | base_viol) & ~constant[:, None]
    uncontrollable = int(np.sum(base_viol & constant[:, None]))
    row_idx = [(r, t) for r, t in zip(*np.nonzero(keep))]

    m = pyo.ConcreteModel()
    TV = [(t, v) for t in range(T) for v in range(V) if ub[t, v] > 0]
    m.p = pyo.Var(TV, bounds=lambda _, t, v: (0.0, ub[t, v]))
    m.soc = pyo.Var(range(1, T + 1), range(V), bounds=lambda _, t, v: (soc_lo[v], soc_hi[v]))

    def p_of(t, v):
        return m.p[t, v] if ub[t, v] > 0 else 0.0

    # SOC dynamics (8b); soc[t] is the SOC at the end of step t-1
    def soc_rule(_, t, v):
        prev = soc0_m[v] if t == 1 else m.soc[t - 1, v]
        return m.soc[t, v] == prev + gain[v] * p_of(t - 1, v)

    m.soc_dyn = pyo.Constraint(range(1, T + 1), range(V), rule=soc_rule)

    # location binaries (9) and McCormick products (11)/(12c)-(12e)
    NV = [(k, v) for v in mov for k in range(C)]
    m.b = pyo.Var(NV, domain=pyo.Binary if opts.method == "milp" else pyo.UnitInterval)
    m.one_node = pyo.Constraint(mov, rule=lambda _, v: sum(m.b[k, v] for k in range(C)) == 1)
    NVT = [(k, v, t) for (k, v) in NV for t in range(T) if ub[t, v] > 0]
    m.z = pyo.Var(NVT, bounds=lambda _, k, v, t: (0.0, ub[t, v]))
    m.mc_ub = pyo.Constraint(NVT, rule=lambda _, k, v, t: m.z[k, v, t] <= ub[t, v] * m.b[k, v])
    if opts.mccormick == "paper":
        m.mc_p = pyo.Constraint(NVT, rule=lambda _, k, v, t: m.z[k, v, t] <= m.p[t, v])
        m.mc_lo = pyo.Constraint(
            NVT, rule=lambda _, k, v, t: m.z[k, v, t] >= m.p[t, v] - ub[t, v] * (1 - m.b[k, v])
        )
    if opts.mccormick == "compact" or opts.cut_sum_z:
        VT = [(v, t) for v in mov for t in range(T) if ub[t, v] > 0]
        m.sum_z = pyo.Constraint(
            VT, rule=lambda _, v, t: sum(m.z[k, v, t] for k in range(C)) == m.p[t, v]
        )

    # explicit nodal EV aggregates, eq. (12b) without the constant net demand
    fixed_at = [[v for v in range(V) if not movable[v] and pos[int(home[v])] == k] for k in range(C)]
    m.pev = pyo.Var(range(T), range(C), bounds=lambda _, t, k: (0.0, pmax_col[t, k]))

    def agg_rule(_, t, k):
        terms = [m.p[t, v] for v in fixed_at[k] if ub[t, v] > 0]
        terms += [m.z[k, v, t] for v in mov if ub[t, v] > 0]
        if not terms:
            return m.pev[t, k] == 0.0
        return m.pev[t, k] == sum(terms)

    m.agg = pyo.Constraint(range(T), range(C), rule=agg_rule)

    # grid rows (8i)-(8k), soft where requested
    soft_idx = [(r, t) for (r, t) in row_idx if soft[r, t]]
    # a row whose EV coefficients are all >= 0 cannot be relieved by charging (P >= 0):
    # its slack is at least the base-load violation. That floor is a bound, and the
    # penalty counts only the violation *added* by EVs, so the objective carries no
    # large constant and the relative MIP gap stays meaningful.
    floor = {(r, t): (max(0.0, -float(rows.h[t, r])) if np.all(rows.g[r] >= 0.0) else 0.0)
             for (r, t) in soft_idx}
    m.slack = pyo.Var(soft_idx, bounds=lambda _, r, t: (floor[r, t], None))
    soft_set = set(soft_idx)

    def grid_rule(_, r, t):
        expr = sum(float(rows.g[r, k]) * m.pev[t, k] for k in range(C) if rows.g[r, k] != 0.0)
        if (r, t) in soft_set:
            expr = expr - m.slack[r, t]
        if isinstance(expr, (int, float)):
            return pyo.Constraint.Feasible if expr <= rows.h[t, r] else pyo.Constraint.Infeasible
        return expr <= float(rows.h[t, r])

    m.grid = pyo.Constraint(row_idx, rule=grid_rule)
    penalty = (opts.soft_penalty * sum(m.slack[i] - floor[i] for i in soft_idx)) if soft_idx else 0.0
    if opts.move_penalty > 0 and mov:
        penalty = penalty + opts.move_penalty * sum(
            m.b[k, v] for (k, v) in NV if int(cand[k]) != int(home[v]))

    # objective (12a)
    if opts.objective == "quadratic" or (opts.objective == "pwl" and opts.polish and not mov):
        m.obj = pyo.Objective(
            expr=sum((m.soc[t, v] - tgt_m[v]) ** 2 for t in range(1, T + 1) for v in range(V)) + penalty
        )
        solver_name = "scip" if mov else "highs"
    else:
        bps = [_breakpoints(soc0_m[v], soc_hi[v], tgt_m[v], gain[v] * pmax[v],
                            int(plugged[:, v].sum()), opts.pwl_refine) for v in range(V)]
        m.e = pyo.Var(range(1, T + 1), range(V), bounds=(0.0, None))
        SEG = [(t, v, j) for t in range(1, T + 1) for v in range(V) for j in range(len(bps[v]) - 1)]

        if opts.objective == "pwl_lower":  # tangents at every breakpoint
            SEG = [(t, v, j) for t in range(1, T + 1) for v in range(V) for j in range(len(bps[v]))]

        def seg_rule(_, t, v, j):
            if opts.objective == "pwl_lower":
                a = bps[v][j]
                slope = 2.0 * (a - tgt_m[v])
            else:
                a, b = bps[v][j], bps[v][j + 1]
                slope = a + b - 2.0 * tgt_m[v]
            icpt = (a - tgt_m[v]) ** 2 - slope * a
            return m.e[t, v] >= slope * m.soc[t, v] + icpt

        m.pwl = pyo.Constraint(SEG, rule=seg_rule)
        # an EV with a single breakpoint cannot move its SOC: e = const
        single = [(t, v) for t in range(1, T + 1) for v in range(V) if len(bps[v]) < 2]
        m.pwl_single = pyo.Constraint(
            single, rule=lambda _, t, v: m.e[t, v] >= (bps[v][0] - tgt_m[v]) ** 2
        )
        m.obj = pyo.Objective(expr=sum(m.e[t, v] for t in range(1, T + 1) for v in range(V)) + penalty)
        solver_name = "highs"
    build_s = time.perf_counter() - t0_build

    res, solve_s = _run_solver(m, solver_name, opts)
    from pyomo.contrib.solver.common.results import SolutionStatus, TerminationCondition

    if res.solution_status not in (SolutionStatus.optimal, SolutionStatus.feasible):
        raise AutonomousSolveError(
            f"{solver_name} ended with {res.termination_condition.name} and no feasible schedule"
        )
    res.solution_loader.load_vars()
    status = "optimal" if res.termination_condition == TerminationCondition.convergenceCriteriaSatisfied \
        else res.termination_condition.name

    p = np.zeros((T, V))
    for (t, v) in TV:
        p[t, v] = max(0.0, float(pyo.value(m.p[t, v])))
    p = np.minimum(p, ub)
    # SOC recomputed from the powers (8b) (removes solver round-off)
    soc = np.empty((T + 1, V))
    soc[0] = soc0_m
    soc[1:] = soc0_m + np.cumsum(p * gain, axis=0)
    ccol = home.copy()
    for v in mov:
        vals = [float(pyo.value(m.b[k, v])) for k in range(C)]
        ccol[v] = int(cand[int(np.argmax(vals))])
    moved = ccol != home
    de = e_star_kwh / cap
    soc_final = soc[T] - np.where(moved, de, 0.0)
    tgt0 = np.asarray(problem.soc_target, float)
    true_obj = float(np.sum((soc[1:] - tgt0) ** 2))
    true_obj_m = float(np.sum((soc[1:] - tgt_m) ** 2))
    slack_vals = [(rows.kind[r], rows.elem[r], int(t), float(pyo.value(m.slack[r, t])))
                  for (r, t) in soft_idx]
    slack_vals = sorted([s for s in slack_vals if s[3] > 1e-6], key=lambda s: -s[3])
    inc = float(res.incumbent_objective)
    bound = float(res.objective_bound) if res.objective_bound is not None else float("nan")
    gap = (inc - bound) / max(abs(inc), 1e-9) if math.isfinite(bound) else float("nan")
    sched = Schedule(
        p_kw=p,
        q_kvar=np.zeros((T, V)),
        soc=soc,
        status=status,
        objective=true_obj,
        solve_s=solve_s,
        build_s=build_s,
        soft_violation_max=slack_vals[0][3] if slack_vals else 0.0,
        soft_violation_where=tuple(slack_vals[:50]),
        fallback=False,
        message=f"{solver_name}: {len(mov)} movable EVs, {int(moved.sum())} moved, gap {gap:.2e}",
    )
    import dataclasses

    n_rows = sum(c.body is not None for c in m.component_data_objects(pyo.Constraint, active=True))
    n_vars = sum(1 for _ in m.component_data_objects(pyo.Var))
    result = AutonomousSchedule(
        schedule=sched,
        charge_col=ccol,
        charge_bus=np.asarray(problem.sens.bus_ids)[ccol].astype(int),
        home_col=home.copy(),
        movable=movable,
        moved=moved,
        soc_final=soc_final,
        soc_target_model=tgt_m,
        e_star_kwh=float(e_star_kwh),
        model_objective=inc,
        true_objective_model_targets=true_obj_m,
        best_bound=bound,
        mip_gap=gap,
        solver=solver_name,
        n_binaries=len(NV),
        n_vars=n_vars,
        n_rows=n_rows,
        extra={"uncontrollable_violations": uncontrollable, "n_grid_rows": len(row_idx),
               "n_soft_rows": len(soft_idx)},
    )
    if opts.method == "lp_round":
        result = dataclasses.replace(result, mip_gap=float("nan"), best_bound=inc,
                                     schedule=dataclasses.replace(result.schedule, status="lp_round"))
    if not (opts.objective == "pwl" and (opts.polish or opts.method == "lp_round") and mov):
        return result
    # polish: nodes fixed, exact quadratic objective (convex QP)

    fixed = _solve_fixed(dataclasses.replace(problem, ev_col=ccol), home, movable, e_star_kwh,
                         dataclasses.replace(opts, objective="quadratic", polish=False, method="milp"),
                         charged=(ccol != home) if opts.exact_drive_energy else movable)
    extra = dict(result.extra)
    extra.update(milp_objective=inc, milp_bound=bound, milp_gap=gap,
                 milp_true_objective=true_obj, milp_build_s=build_s, milp_solve_s=solve_s,
                 qp_solve_s=fixed.schedule.solve_s)
    sched = dataclasses.replace(
        fixed.schedule, build_s=build_s + fixed.schedule.build_s, solve_s=solve_s + fixed.schedule.solve_s,
        status=result.schedule.status if fixed.schedule.status == "optimal" else fixed.schedule.status,
        message=result.schedule.message + "; powers polished with the exact QP at these nodes")
    return dataclasses.replace(
        fixed, schedule=sched, solver="highs MILP + highs QP", n_binaries=result.n_binaries,
        n_vars=result.n_vars, n_rows=result.n_rows, mip_gap=result.mip_gap, best_bound=result.best_bound,
        soc_target_model=np.where((ccol != home) if opts.exact_drive_energy else movable,
                                  tgt_m, np.asarray(problem.soc_target, float)),
        extra=extra)


def _smart_qp(problem, movable, soc0_m, tgt_m, e_star_kwh, opts, t0_build):
    """Fixed-node convex QP through the smart-charging strategy (PIQP).

    ``problem.ev_col`` are the charging nodes; SOC0/targets already pre-processed.
    Falls back to the HiGHS QP of this module if the strategy ends in its fallback.
    """
    import dataclasses

    from simulators.scheduler.problem import StrategyOptions
    from simulators.scheduler.strategies import solve as smart_solve

    sub = dataclasses.replace(problem, soc0=soc0_m, soc_target=tgt_m)
    so = StrategyOptions(name="smart", k_weight=0.0, n_sides=opts.n_sides, soft_limits=opts.soft_limits,
                         soft_penalty=opts.soft_penalty, time_limit_s=opts.time_limit_s, solver="piqp")
    sch = smart_solve(sub, so)
    if sch.fallback or sch.status != "optimal":
        return solve_autonomous(sub, [], 0.0, dataclasses.replace(opts, qp_solver="highs"),
                                allow_move=np.zeros(problem.n_evs, bool))
    col = np.asarray(problem.ev_col, int)
    soc = np.asarray(sch.soc, float)
    tgt0 = np.asarray(problem.soc_target, float)
    model_obj = float(np.sum((soc[1:] - tgt_m) ** 2)) + opts.soft_penalty * _added_violation(
        problem, col, np.asarray(sch.p_kw, float), opts)
    sched = dataclasses.replace(sch, objective=float(np.sum((soc[1:] - tgt0) ** 2)),
                                build_s=time.perf_counter() - t0_build - sch.solve_s,
                                message="fixed nodes: smart-charging QP (PIQP); " + sch.message)
    return AutonomousSchedule(
        schedule=sched, charge_col=col.copy(), charge_bus=np.asarray(problem.sens.bus_ids)[col].astype(int),
        home_col=col.copy(), movable=np.asarray(movable, bool).copy(), moved=np.zeros(col.size, bool),
        soc_final=soc[-1].copy(), soc_target_model=np.asarray(tgt_m, float), e_star_kwh=float(e_star_kwh),
        model_objective=model_obj, true_objective_model_targets=float(np.sum((soc[1:] - tgt_m) ** 2)),
        best_bound=float("nan"), mip_gap=0.0, solver="piqp (smart-charging QP)")


def _added_violation(problem, col, p_kw, opts) -> float:
    """Grid-row violation a plan adds beyond the base load's, as penalised in the MILP.

    Sum over the soft rows and steps of the slack above its floor (the base-load
    violation of rows that charging cannot relieve) [pu and fractions of rating].
    """
    cand = np.unique(np.asarray(col, int))
    rows = _grid_rows(problem, cand, opts.n_sides)
    pev = np.zeros((p_kw.shape[0], cand.size))
    for k, c in enumerate(cand):
        pev[:, k] = p_kw[:, col == c].sum(axis=1)
    viol = np.maximum(0.0, pev @ rows.g.T - rows.h)  # (T, R)
    base = rows.h < -1e-12
    if opts.soft_limits == "never":
        return 0.0
    soft = np.ones_like(base) if opts.soft_limits == "always" else base
    floor = np.where(np.all(rows.g >= 0.0, axis=1)[None, :], np.maximum(0.0, -rows.h), 0.0)
    return float(np.sum(np.where(soft, np.maximum(0.0, viol - floor), 0.0)))


def _breakpoints(lo, hi, target, step, n_plugged, refine):
    """SOC breakpoints of the PWL epigraph for one EV [-].

    The grid ``lo + k step / refine`` (``step`` = SOC gained in one full-power
    step), cut at the reachable maximum ``min(hi, lo + n_plugged step)``, plus that
    maximum and the target when inside.
    """
    top = min(hi, lo + n_plugged * step)
    if step <= 0 or top <= lo + 1e-12:
        return [float(lo)]
    k = np.arange(0, int(math.floor((top - lo) / (step / refine) + 1e-9)) + 1)
    pts = set(np.round(lo + k * step / refine, 12).tolist()) | {round(top, 12)}
    if lo < target < top:
        pts.add(round(float(target), 12))
    return sorted(float(x) for x in pts)


def _run_solver(m, name, opts):
    from pyomo.contrib.solver.common.factory import SolverFactory

    solver = SolverFactory("highs" if name == "highs" else "scip_direct")
    if not solver.available():
        raise AutonomousSolveError(
            f"solver {name} is not available" + (" (pip install pyscipopt)" if name == "scip" else "")
        )
    kw = dict(
        time_limit=float(opts.time_limit_s),
        rel_gap=float(opts.mip_rel_gap),
        load_solutions=False,
        raise_exception_on_nonoptimal_result=False,
    )
    if opts.threads is not None:
        kw["threads"] = int(opts.threads)
    if opts.solver_options:
        kw["solver_options"] = dict(opts.solver_options)
    t0 = time.perf_counter()
    res = solver.solve(m, **kw)
    return res, time.perf_counter() - t0


def enumerate_assignments(problem: ChargingProblem, candidate_cols, e_star_kwh: float,
                          options: AutonomousOptions | None = None):
    """Brute force over every location assignment (for tests and tiny cases).

    Solves one fixed-assignment problem per element of ``C^V`` (movable EVs
    only), with the same pre-/post-processing, and returns the best.

    Returns
    -------
    best : AutonomousSchedule
        The assignment with the lowest model objective.
    n_solved : int
        Number of fixed-assignment problems solved.
    """
    opts = options or AutonomousOptions()
    cap = np.asarray(problem.capacity_kwh, float)
    movable, _, _ = preprocess(problem.soc0, problem.soc_target, cap, e_star_kwh)
    cand = sorted({int(c) for c in candidate_cols} | set(np.asarray(problem.ev_col).tolist()))
    mov = np.flatnonzero(movable)
    best, n = None, 0
    import dataclasses

    for combo in itertools.product(cand, repeat=len(mov)):
        col = np.asarray(problem.ev_col, int).copy()
        col[mov] = combo
        sub = dataclasses.replace(problem, ev_col=col)
        # fixed location: no binaries; E* bookkeeping as if movable
        res = _solve_fixed(sub, problem.ev_col, movable, e_star_kwh, opts)
        n += 1
        if best is None or res.model_objective < best.model_objective - 1e-9:
            best = res
    return best, n


def _solve_fixed(sub, home_col, movable, e_star_kwh, opts, charged=None):
    """Fixed-location solve with the E* bookkeeping of the original parking nodes.

    ``charged`` (default ``movable``): EVs whose SOC0/target get the outbound-leg
    pre-processing of eqs. (12g)-(12h).
    """
    import dataclasses

    charged = movable if charged is None else charged
    cap = np.asarray(sub.capacity_kwh, float)
    de = e_star_kwh / cap
    soc0 = np.where(charged, np.asarray(sub.soc0, float) - de, sub.soc0)
    tgt = np.where(charged, np.minimum(np.asarray(sub.soc_target, float) + de, 1.0), sub.soc_target)
    sub2 = dataclasses.replace(sub, soc0=soc0, soc_target=tgt)
    res = solve_autonomous(sub2, [], 0.0, opts, allow_move=np.zeros(sub.n_evs, bool))
    moved = np.asarray(sub.ev_col) != np.asarray(home_col)
    true_obj = float(np.sum((res.schedule.soc[1:] - np.asarray(sub.soc_target, float)) ** 2))
    return dataclasses.replace(
        res, model_objective=res.model_objective + opts.move_penalty * int(moved.sum()),
        schedule=dataclasses.replace(res.schedule, objective=true_obj),
        home_col=np.asarray(home_col).copy(), movable=movable.copy(), moved=moved,
        soc_final=res.schedule.soc[-1] - np.where(moved, de, 0.0), e_star_kwh=float(e_star_kwh),
    )
