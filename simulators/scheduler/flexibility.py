"""Flexibility maximisation of seed 003 (Panagi et al.): day-ahead plan, linearised grid.

>>> plan = solve_flex(problem, FlexOptions())                      # doctest: +SKIP
>>> plan.p_ch_kw, plan.p_up_kw, plan.p_down_kw                      # (T, V) each

The input is a :class:`.problem.ChargingProblem` (the same description every
other strategy takes) read as follows:

- energy ``E = soc * capacity_kwh`` [kWh]; arrival energy ``soc0``, lower
  bound ``soc_min`` and upper bound ``soc_max`` (eq. (18)), departure energy
  ``soc_target`` (eq. (19): the fleet sets it to arrival energy plus next-trip
  distance times consumption plus reserve, see ``simulators.ev_fleet``);
- charger limit ``Pbar = s_max_kva * cos f_ev`` (eq. (20), the constant power
  factor of eq. (8) keeps ``|S| <= s_max_kva`` during full upward activation);
- ``efficiency`` multiplies the charged energy (eq. (17) has none: use 1.0 to
  reproduce the paper);
- one contiguous plug window per EV inside the horizon (the paper's day-ahead
  plan covers one evening-to-morning stay); the departure energy applies at the
  end of its last plugged step. An EV never plugged offers nothing.

Model (all per plugged (t, v) pair; unplugged pairs have no variable, eq. (7)):

- ``P^ch`` in ``[0, Pbar]`` (eq. (20), no discharge), energy chain eq. (17),
  ``E`` inside eq. (18), ``E_dep >= soc_target * capacity`` (eq. (19));
- minimum-energy curve (eq. (1)): ``E^min_t = max(E_arr, E_dep - eta Pbar dt
  r_t)`` with ``r_t`` the plugged steps left after instant ``t``; it ramps at
  full power from ``t^L`` to departure;
- downward flexibility ``P^down`` (scenario s = 0, "full downward activation":
  every EV charges ``P^ch - P^down``): ``P^down <= P^ch`` (eq. (21)) and
  ``E_{t-1} + eta (P^ch - P^down) dt >= E^min_t``;
- upward flexibility ``P^up`` (s = 1, "full upward": ``P^ch + P^up``):
  ``P^up <= Pbar - P^ch`` (eq. (23)) and ``E_{t-1} + eta (P^ch + P^up) dt <=
  Ebar``.

**Which reading of eqs. (21)-(24).** As printed, (22) (the *capacity* bound on
``P^flex + P^ch``) is labelled s = 0 and (24) (the *minimum-energy* bound on
``P^ch - P^flex``) s = 1. The nomenclature defines s = 0 as full *downward*
activation, and Section II says downward flexibility is limited by the
minimum-SoC curve (eq. (3)) and upward flexibility by the SoC upper bound
(eq. (2)); (21) (``<= P^ch``) and (23) (``<= Pbar - P^ch``) carry the labels that
match. So the labels of (22) and (24) are swapped: we pair (21) with (24) for
s = 0 (downward) and (23) with (22) for s = 1 (upward), which reproduces
eqs. (2)-(3) at the optimum. Read literally, the s = 0 variable would be
bounded by the capacity and by ``P^ch`` but free of the minimum-energy curve, so
a downward activation could break the user's departure energy: the opposite of
what the text asks. Eq. (2) as printed bounds upward flexibility by ``(Ebar -
E_{t-1}) / dt`` without subtracting ``P^ch``; (22) subtracts it, and we follow
(22) (otherwise an upward activation could overfill the battery). The flexibility
variables are magnitudes (>= 0); eq. (7)'s ``P^ch + P^flex`` is ``P^ch - P^down``
in scenario s = 0 (no discharge: ``P^down <= P^ch``). Eq. (8) gives the EV's
reactive power from ``P^ch`` only; with a constant power factor the activated
power ``P`` must carry ``P tan f_ev``, which we use.

Grid (eqs. (13)-(16)): for each scenario and step, the nodal EV power of that
activation drives the linearised model of :mod:`simulators.grid.sensitivity`
(voltage band, line apparent power at the from end, transformer apparent power,
the cones as inscribed polygons as in :mod:`.matrix_model`). The baseline
``P^ch`` lies between the two activations, so it is grid-feasible too (the
linear feasible set is convex). Rows that hold for every EV power between zero
and full charge are dropped before the solve; rows already violated with all
EVs idle get a non-negative slack penalised by ``FlexOptions.soft_penalty``
(then the EVs may not make them worse, and the plan reports the slack).

The LP is assembled with scipy.sparse and solved with HiGHS (highspy). The AC
variant of the same problem is :mod:`.flexibility_ac`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from . import model_data as md
from .problem import ChargingProblem

#: Activation scenarios (seed 003, set Omega^S): s = 0 full downward, s = 1 full upward.
FLEX_SCENARIOS = ("down", "up")
#: Grid models behind the strategy.
GRID_MODELS = ("linear", "ac")
#: Tie-breaks among the optima of eq. (4) (FlexOptions.tie_break).
TIE_BREAKS = ("none", "peak")
_TOL_SCREEN = 1e-9
_INF = np.inf


@dataclass(frozen=True)
class FlexOptions:
    """Options of the flexibility maximisation (seed 003, eq. (4)).

    Attributes
    ----------
    c_down, c_up : float or sequence of float
        Penalty coefficients ``C_{0,t}`` (downward) and ``C_{1,t}`` (upward) of
        eq. (4) [1/kW]: one constant or one value per step (length T). >= 0.
    scenarios : tuple of str
        Activation scenarios kept, subset of ``("down", "up")``; a scenario not
        listed gets no variables (its flexibility is zero).
    ev_power_factor : float
        Constant EV power factor ``cos f_ev`` (eq. (8)), in (0, 1], lagging
        (EV absorbs reactive power ``P tan f_ev``).
    grid_model : str
        ``"linear"`` (this module) or ``"ac"`` (:mod:`.flexibility_ac`).
    n_sides : int
        Sides of the polygon inscribed in ``P^2 + Q^2 <= S^2`` for line and
        transformer limits (multiple of 4, >= 8).
    soft_penalty : float
        Penalty per pu of voltage slack and per unit of relative loading slack
        on rows violated with every EV idle [1/kW-equivalent].
    time_limit_s : float
        Wall-clock budget of one solve [s].
    tie_break : str
        ``"none"``: the LP optimum HiGHS returns. ``"peak"``: a second LP
        (lexicographic, the LP equivalent of a small quadratic tie-break) stays
        on the optimal face of eq. (4) (:func:`solve_flex_lp`) and minimises the peak
        of the aggregate charging ``max_t sum_v P^ch``: eq. (4) has many optima
        (moving charge between steps often trades upward against downward
        flexibility one for one), and the first one HiGHS finds charges in a
        late block (seed 003 study: 50 kW at 06:30) where the paper's plan is
        spread over the night (Fig. 10, about 21 kW).
    tie_break_rel : float
        Relative objective loss the tie-break accepts [-], in [0, 0.1]: the
        optimal-face LP's result is kept when it is at most this (and at least
        1e-9) below the optimum, and the objective-row fallback LP keeps eq. (4)
        within it.
    nlp_solver : str
        NLP solver of ``grid_model = "ac"``: ``"pounce"`` (default) or ``"ripopt"``
        (:data:`.flexibility_ac.NLP_SOLVERS`).
    nlp_tol : float
        Convergence tolerance of the NLP solver [-], in [1e-12, 1e-3].
    nlp_max_iter : int
        Iteration limit of the NLP solver, in [1, 100000].
    """

    c_down: float | tuple = 1.0
    c_up: float | tuple = 1.0
    scenarios: tuple = FLEX_SCENARIOS
    ev_power_factor: float = 1.0
    grid_model: str = "linear"
    n_sides: int = 16
    soft_penalty: float = 1e5
    time_limit_s: float = 60.0
    tie_break: str = "none"
    tie_break_rel: float = 1e-6
    nlp_solver: str = "pounce"
    nlp_tol: float = 1e-8
    nlp_max_iter: int = 3000

    def problems(self, n_steps: int | None = None) -> list[str]:
        """Every problem of these options as ``"field: message"`` (empty when valid)."""
        out = []
        for name in ("c_down", "c_up"):
            c = np.atleast_1d(np.asarray(getattr(self, name), dtype=float))
            if c.ndim != 1 or not np.all(np.isfinite(c)) or np.any(c < 0):
                out.append(f"{name}: must be finite and >= 0 (a number or one value per step)")
            elif n_steps is not None and c.size not in (1, n_steps):
                out.append(f"{name}: needs 1 or {n_steps} values (one per step), got {c.size}")
        scen = tuple(self.scenarios)
        bad = [s for s in scen if s not in FLEX_SCENARIOS]
        if bad or not scen or len(set(scen)) != len(scen):
            out.append(f"scenarios: must be distinct names from {FLEX_SCENARIOS}, got {list(scen)}")
        if not (0.0 < float(self.ev_power_factor) <= 1.0):
            out.append(f"ev_power_factor: must be in (0, 1], got {self.ev_power_factor}")
        if self.grid_model not in GRID_MODELS:
            out.append(f"grid_model: must be one of {GRID_MODELS}, got {self.grid_model!r}")
        if int(self.n_sides) != self.n_sides or self.n_sides < 8 or self.n_sides % 4:
            out.append(f"n_sides: must be a multiple of 4 and >= 8, got {self.n_sides}")
        if not (0.0 < float(self.soft_penalty) <= 1e9):
            out.append(f"soft_penalty: must be in (0, 1e9], got {self.soft_penalty}")
        if not (0.0 < float(self.time_limit_s) <= 1e6):
            out.append(f"time_limit_s: must be in (0, 1e6], got {self.time_limit_s}")
        if self.tie_break not in TIE_BREAKS:
            out.append(f"tie_break: must be one of {TIE_BREAKS}, got {self.tie_break!r}")
        if not (0.0 <= float(self.tie_break_rel) <= 0.1):
            out.append(f"tie_break_rel: must be in [0, 0.1], got {self.tie_break_rel}")
        from .flexibility_ac import NLP_SOLVERS

        if self.nlp_solver not in NLP_SOLVERS:
            out.append(f"nlp_solver: must be one of {NLP_SOLVERS}, got {self.nlp_solver!r}")
        if not (1e-12 <= float(self.nlp_tol) <= 1e-3):
            out.append(f"nlp_tol: must be in [1e-12, 1e-3], got {self.nlp_tol}")
        if int(self.nlp_max_iter) != self.nlp_max_iter or not (1 <= self.nlp_max_iter <= 100000):
            out.append(f"nlp_max_iter: must be an integer in [1, 100000], got {self.nlp_max_iter}")
        return out

    def validate(self, n_steps: int | None = None) -> None:
        """Raise ``ValueError`` listing every problem (see :meth:`problems`)."""
        probs = self.problems(n_steps)
        if probs:
            raise ValueError("; ".join(probs))

    def coefficients(self, n_steps: int) -> np.ndarray:
        """``C_{s,t}`` as an array of shape (2, T): row 0 downward, row 1 upward [1/kW]."""
        out = np.empty((2, n_steps))
        for row, name in enumerate(("c_down", "c_up")):
            out[row] = np.broadcast_to(np.atleast_1d(np.asarray(getattr(self, name), dtype=float)), (n_steps,))
        return out


@dataclass(frozen=True)
class FlexPlan:
    """Day-ahead flexibility plan (seed 003).

    Attributes
    ----------
    ev_ids : ndarray, shape (V,)
    p_ch_kw : ndarray, shape (T, V)
        Scheduled charging power ``P^ch`` [kW] (>= 0, zero when unplugged).
    p_up_kw, p_down_kw : ndarray, shape (T, V)
        Upward / downward flexibility (magnitudes, >= 0) [kW]: full upward
        activation charges ``p_ch + p_up``, full downward ``p_ch - p_down``.
    e_kwh : ndarray, shape (T + 1, V)
        Stored energy of the schedule at every instant [kWh] (eq. (17)).
    e_min_kwh : ndarray, shape (T + 1, V)
        Minimum-energy curve (eq. (1)) [kWh].
    q_per_p : float
        ``tan f_ev``: reactive power per kW of charging [kvar/kW] (eq. (8)).
    objective : float
        Eq. (4), ``sum C_{s,t} P^flex`` over EVs, steps and scenarios [kW-weighted],
        evaluated on the returned plan (without slack penalty).
    status : str
        ``"optimal"`` or, with ``fallback``, the reason (``"infeasible"``,
        ``"time_limit"``, ``"not_converged"``, ``"error"``).
    termination : str
        Solver's own termination text.
    solve_s, build_s : float
        Solver and model-build wall-clock time [s].
    fallback : bool
        True when the solve failed and :func:`fallback_plan` was returned.
    grid_model : str
        ``"linear"`` or ``"ac"``.
    n_var, n_con : int
        Size of the solved model (variables, constraints).
    soft_violation_max : float
        Largest slack used on rows already violated with EVs idle [pu or fraction].
    message : str
    """

    ev_ids: np.ndarray
    p_ch_kw: np.ndarray
    p_up_kw: np.ndarray
    p_down_kw: np.ndarray
    e_kwh: np.ndarray
    e_min_kwh: np.ndarray
    q_per_p: float
    objective: float
    status: str
    termination: str = ""
    solve_s: float = 0.0
    build_s: float = 0.0
    fallback: bool = False
    grid_model: str = "linear"
    n_var: int = 0
    n_con: int = 0
    soft_violation_max: float = 0.0
    message: str = ""
    extra: dict = field(default_factory=dict)

    def activated_p_kw(self, scenario: str) -> np.ndarray:
        """EV charging power of one activation [kW], shape (T, V).

        ``"baseline"``: ``p_ch``; ``"down"``: ``p_ch - p_down``; ``"up"``:
        ``p_ch + p_up``. Reactive power is this times :attr:`q_per_p`.
        """
        if scenario == "baseline":
            return self.p_ch_kw
        if scenario == "down":
            return self.p_ch_kw - self.p_down_kw
        if scenario == "up":
            return self.p_ch_kw + self.p_up_kw
        raise ValueError(f"scenario must be 'baseline', 'down' or 'up', got {scenario!r}")


# --------------------------------------------------------------------------- EV data
@dataclass(frozen=True)
class FleetData:
    """Per-EV numbers of the flexibility model derived from a ChargingProblem.

    Attributes
    ----------
    p_max_kw, e_arr_kwh, e_lo_kwh, e_hi_kwh, e_dep_kwh, eta : ndarray, shape (V,)
    last_step : ndarray of int, shape (V,)
        Last plugged step (-1 when never plugged).
    e_min_kwh : ndarray, shape (T + 1, V)
        Minimum-energy curve at every instant (eq. (1)).
    """

    p_max_kw: np.ndarray
    e_arr_kwh: np.ndarray
    e_lo_kwh: np.ndarray
    e_hi_kwh: np.ndarray
    e_dep_kwh: np.ndarray
    eta: np.ndarray
    last_step: np.ndarray
    e_min_kwh: np.ndarray


def fleet_data(problem: ChargingProblem, ev_power_factor: float = 1.0) -> FleetData:
    """Energies, limits and the minimum-energy curve (seed 003, eqs. (1), (17)-(20)).

    Parameters
    ----------
    problem : ChargingProblem
    ev_power_factor : float
        ``cos f_ev``; the charger's active limit is ``s_max_kva * cos f_ev`` [kW].

    Returns
    -------
    FleetData

    Raises
    ------
    ValueError
        An EV has more than one plug window in the horizon.
    """
    plugged = np.asarray(problem.plugged, dtype=bool)
    n_steps, n_ev = plugged.shape
    cap = np.asarray(problem.capacity_kwh, dtype=float)
    e_arr = np.asarray(problem.soc0, dtype=float) * cap
    e_lo = np.minimum(np.asarray(problem.soc_min, dtype=float) * cap, e_arr)
    e_hi = np.maximum(np.asarray(problem.soc_max, dtype=float) * cap, e_arr)
    e_dep = np.clip(np.asarray(problem.soc_target, dtype=float) * cap, e_arr, e_hi)
    p_max = np.asarray(problem.s_max_kva, dtype=float) * float(ev_power_factor)
    eta = np.asarray(problem.efficiency, dtype=float)
    starts = np.diff(plugged.astype(np.int8), axis=0, prepend=0) == 1
    if np.any(starts.sum(axis=0) > 1):
        bad = np.flatnonzero(starts.sum(axis=0) > 1)
        raise ValueError(f"plugged: EVs {list(np.asarray(problem.ev_ids)[bad][:5])} have more than "
                         "one plug window; seed 003's day-ahead plan takes one window per EV")
    any_plug = plugged.any(axis=0)
    last = np.where(any_plug, n_steps - 1 - np.argmax(plugged[::-1], axis=0), -1)
    # plugged steps left after instant k (k = 0..T): r[k] = sum_{tau >= k} plugged[tau]
    remaining = np.zeros((n_steps + 1, n_ev))
    remaining[:-1] = np.cumsum(plugged[::-1], axis=0)[::-1]
    e_min = np.maximum(e_arr, e_dep - eta * p_max * problem.dt_h * remaining)
    e_min = np.where(any_plug, e_min, e_arr)
    return FleetData(p_max_kw=p_max, e_arr_kwh=e_arr, e_lo_kwh=e_lo, e_hi_kwh=e_hi,
                     e_dep_kwh=e_dep, eta=eta, last_step=last, e_min_kwh=e_min)


def unreachable_departures(problem: ChargingProblem, ev_power_factor: float = 1.0) -> np.ndarray:
    """Indices of EVs whose departure energy cannot be reached in their plug window.

    The minimum-energy curve at the start of the horizon lies above the arrival
    energy exactly when charging at full power over the whole window is not
    enough (eq. (1) gives ``t^L`` before arrival).
    """
    fd = fleet_data(problem, ev_power_factor)
    cap = np.asarray(problem.capacity_kwh, dtype=float)
    need = np.minimum(np.asarray(problem.soc_target, dtype=float) * cap, fd.e_hi_kwh)
    plugged_steps = np.asarray(problem.plugged, dtype=bool).sum(axis=0)
    reach = fd.e_arr_kwh + fd.eta * fd.p_max_kw * problem.dt_h * plugged_steps
    return np.flatnonzero(need > reach + 1e-9)


# --------------------------------------------------------------------------- assembly
@dataclass
class FlexLP:
    """Assembled LP ``max c'x  s.t.  row_lo <= A x <= row_hi, lb <= x <= ub``.

    Index arrays map the solution back (see :func:`build_flex_lp`).
    """

    A: sp.csc_matrix
    c: np.ndarray
    row_lo: np.ndarray
    row_hi: np.ndarray
    lb: np.ndarray
    ub: np.ndarray
    pair_t: np.ndarray
    pair_v: np.ndarray
    i_ch: np.ndarray
    i_e: np.ndarray
    i_flex: dict
    i_slack: np.ndarray
    slack_weight: np.ndarray
    fleet: FleetData
    q_per_p: float


class _Rows:
    """Triplet lists of constraint rows ``lo <= sum vals x[cols] <= hi``."""

    def __init__(self):
        self.r, self.c, self.v, self.lo, self.hi = [], [], [], [], []
        self.n = 0

    def add(self, rows, cols, vals, lo, hi):
        lo = np.asarray(lo, dtype=float)
        self.r.append(np.asarray(rows, dtype=np.int64) + self.n)
        self.c.append(np.asarray(cols, dtype=np.int64))
        self.v.append(np.broadcast_to(np.asarray(vals, dtype=float), np.shape(rows)).copy())
        self.lo.append(lo)
        self.hi.append(np.broadcast_to(np.asarray(hi, dtype=float), lo.shape).copy())
        self.n += lo.shape[0]

    def matrix(self, n_var):
        r, c, v = (np.concatenate(x) if x else np.zeros(0, dtype=int) for x in (self.r, self.c, self.v))
        a = sp.csc_matrix((v, (r, c)), shape=(self.n, n_var))
        cat = (lambda x: np.concatenate(x) if x else np.zeros(0))
        return a, cat(self.lo), cat(self.hi)


def build_flex_lp(problem: ChargingProblem, options: FlexOptions,
                  consts: dict | None = None) -> FlexLP:
    """Assemble the linearised seed 003 problem (eqs. (1), (4), (7)-(10), (13)-(24)).

    Variables per plugged pair j = (t, v): ``P^ch``, energy at the end of the step
    ``E``, and ``P^down``/``P^up`` for the scenarios kept; per scenario and
    (step, EV bus) with a plugged EV a nodal aggregate ``y`` (eq. (7)); one slack
    per grid row already violated with the EVs idle.

    Parameters
    ----------
    problem : ChargingProblem
    options : FlexOptions
    consts : dict, optional
        :func:`.model_data.grid_constants` of ``problem`` (EVs idle).

    Returns
    -------
    FlexLP
    """
    consts = md.grid_constants(problem) if consts is None else consts
    sens = problem.sens
    n_steps, n_ev = problem.n_steps, problem.n_evs
    dt = float(problem.dt_h)
    fd = fleet_data(problem, options.ev_power_factor)
    pf = float(options.ev_power_factor)
    tan = float(np.sqrt(max(1.0 - pf * pf, 0.0)) / pf)
    cst = options.coefficients(n_steps)
    t, v = md.plugged_pairs(problem.plugged)
    n_pair = t.size
    count = [0]

    def new(k):
        first = count[0]
        count[0] += int(k)
        return np.arange(first, first + int(k))

    i_ch, i_e = new(n_pair), new(n_pair)
    i_flex = {s: new(n_pair) for s in FLEX_SCENARIOS if s in options.scenarios}
    eta_j, pmax_j = fd.eta[v], fd.p_max_kw[v]
    emin_j = fd.e_min_kwh[t + 1, v]
    ehi_j, elo_j = fd.e_hi_kwh[v], fd.e_lo_kwh[v]

    rows = _Rows()
    # eq. (17): E_j - E_prev - eta dt P^ch_j = 0 (E_prev = E_arr on the first plugged step)
    first = np.ones(n_pair, dtype=bool)
    if n_pair:
        first[1:] = v[1:] != v[:-1]
    j = np.arange(n_pair)
    jp = j[~first]
    rows.add(j, i_e, 1.0, np.where(first, fd.e_arr_kwh[v], 0.0), np.where(first, fd.e_arr_kwh[v], 0.0))
    r_e = rows.n - n_pair
    rows.r.append(r_e + jp), rows.c.append(i_e[jp - 1]), rows.v.append(-np.ones(jp.size))
    rows.r.append(r_e + j), rows.c.append(i_ch), rows.v.append(-eta_j * dt)
    for s, idx in i_flex.items():
        if s == "down":
            rows.add(np.r_[j, j], np.r_[idx, i_ch], np.r_[np.ones(n_pair), -np.ones(n_pair)],
                     np.full(n_pair, -_INF), np.zeros(n_pair))                       # (21)
            rows.add(np.r_[j, j], np.r_[i_e, idx], np.r_[np.ones(n_pair), -eta_j * dt],
                     emin_j, np.full(n_pair, _INF))                                  # (24) as s=0
        else:
            rows.add(np.r_[j, j], np.r_[idx, i_ch], 1.0, np.full(n_pair, -_INF), pmax_j)   # (23)
            rows.add(np.r_[j, j], np.r_[i_e, idx], np.r_[np.ones(n_pair), eta_j * dt],
                     np.full(n_pair, -_INF), ehi_j)                                  # (22) as s=1

    # nodal aggregates y[s, t, b] (eqs. (7), (9)); one per (step, EV column) with a plugged EV
    col_j = np.asarray(problem.ev_col, dtype=int)[v]
    n_bus = int(np.shape(sens.bus_ids)[0])
    key = t * n_bus + col_j
    ukey, inv = np.unique(key, return_inverse=True)
    agg_t, agg_b = ukey // n_bus, ukey % n_bus
    agg_max = np.bincount(inv, weights=pmax_j, minlength=ukey.size)
    slack_cols, slack_w = [], []
    i_agg = {}
    for s in i_flex:
        idx = new(ukey.size)
        i_agg[s] = idx
        k = np.arange(ukey.size)
        sign = -1.0 if s == "down" else 1.0
        rows.add(np.r_[k, inv, inv], np.r_[idx, i_ch, i_flex[s]],
                 np.r_[np.ones(ukey.size), -np.ones(n_pair), -sign * np.ones(n_pair)],
                 np.zeros(ukey.size), np.zeros(ukey.size))
    if not i_flex:
        raise ValueError("options.scenarios is empty")

    grid_specs = _grid_row_specs(problem, options, consts, tan)
    has_agg = np.bincount(agg_t, minlength=n_steps) > 0
    for s, idx in i_agg.items():
        for coef, const, lo, hi, unit in grid_specs:
            # coef: (R, n_bus) per step-independent row r; const: (T, R); rows per (t, r)
            sub = coef[:, agg_b]                          # (R, K)
            # screening over the box 0 <= y <= agg_max, grouped per step
            pos = np.maximum(sub, 0.0) * agg_max
            neg = np.minimum(sub, 0.0) * agg_max
            hi_box = np.zeros((n_steps, coef.shape[0]))
            lo_box = np.zeros((n_steps, coef.shape[0]))
            for arr, part in ((hi_box, pos), (lo_box, neg)):
                tmp = np.zeros((coef.shape[0], n_steps))
                np.add.at(tmp.T, agg_t, part.T)
                arr += tmp.T
            vmax = const + hi_box
            vmin = const + lo_box
            need = (vmax > hi + _TOL_SCREEN) | (vmin < lo - _TOL_SCREEN)
            need &= has_agg[:, None]          # no plugged EV at that step: nothing to decide
            viol_idle = (const > hi + _TOL_SCREEN) | (const < lo - _TOL_SCREEN)
            tt, rr = np.nonzero(need)
            if tt.size == 0:
                continue
            # triplets: row (tt, rr) x aggregates k with agg_t[k] == tt
            order = np.argsort(agg_t, kind="stable")
            starts = np.searchsorted(agg_t[order], np.arange(n_steps + 1))
            cnt = starts[tt + 1] - starts[tt]
            row_of = np.repeat(np.arange(tt.size), cnt)
            offs = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)
            kk = order[np.repeat(starts[tt], cnt) + offs]
            vals = sub[np.repeat(rr, cnt), kk]
            lo_r = np.broadcast_to(lo, const.shape)[tt, rr] - const[tt, rr]
            hi_r = np.broadcast_to(hi, const.shape)[tt, rr] - const[tt, rr]
            soft = viol_idle[tt, rr]
            n_soft = int(soft.sum())
            scale = 1.0 / np.maximum(np.abs(sub).max(axis=1, initial=0.0)[rr], 1e-12)
            rows_idx = np.arange(tt.size)
            extra_r, extra_c, extra_v = [], [], []
            if n_soft:
                sidx = new(n_soft)
                slack_cols.append(sidx)
                slack_w.append(np.full(n_soft, options.soft_penalty / unit))
                sr = rows_idx[soft]
                # slack widens the violated side: lo - sl <= a y (low side), a y - sl <= hi
                low_side = (const[tt, rr] < np.broadcast_to(lo, const.shape)[tt, rr])[soft]
                extra_r, extra_c = sr, sidx
                extra_v = np.where(low_side, 1.0, -1.0)  # times the row scale: slack in pu / fraction
            rows.add(np.r_[row_of, extra_r], np.r_[idx[kk], extra_c],
                     np.r_[vals * scale[row_of], np.asarray(extra_v) * scale[extra_r] if n_soft else []],
                     lo_r * scale, hi_r * scale)
    n_var = count[0]
    A, row_lo, row_hi = rows.matrix(n_var)
    lb = np.zeros(n_var)
    ub = np.full(n_var, _INF)
    ub[i_ch] = pmax_j
    lb[i_e], ub[i_e] = elo_j, ehi_j
    last = t == fd.last_step[v]
    lb[i_e[last]] = np.maximum(elo_j[last], fd.e_dep_kwh[v[last]])
    for idx in i_flex.values():
        ub[idx] = pmax_j
    for idx in i_agg.values():
        ub[idx] = agg_max
    c = np.zeros(n_var)
    for s, idx in i_flex.items():
        c[idx] = cst[0 if s == "down" else 1, t]
    i_slack = np.concatenate(slack_cols) if slack_cols else np.zeros(0, dtype=int)
    w_slack = np.concatenate(slack_w) if slack_w else np.zeros(0)
    c[i_slack] = -w_slack
    return FlexLP(A=A, c=c, row_lo=row_lo, row_hi=row_hi, lb=lb, ub=ub, pair_t=t, pair_v=v,
                  i_ch=i_ch, i_e=i_e, i_flex=i_flex, i_slack=i_slack, slack_weight=w_slack,
                  fleet=fd, q_per_p=tan)


def _grid_row_specs(problem: ChargingProblem, options: FlexOptions, consts: dict, tan: float):
    """Linear grid rows ``lo <= const_t + coef @ y <= hi`` (eqs. (13), (15), (16)).

    ``y`` is the nodal EV active power (reactive ``tan f_ev`` times it).

    Returns
    -------
    list of (coef (R, n), const (T, R), lo, hi, unit)
        ``unit`` normalises the slack penalty (pu for voltage, rating for flows).
    """
    s = problem.sens
    lim = problem.limits
    specs = []
    coef_v = np.asarray(s.dvm_dp) + tan * np.asarray(s.dvm_dq)
    specs.append((coef_v, consts["vm"], lim.vm_min_pu, lim.vm_max_pu, 1.0))
    cos_th, sin_th, fac = md.polygon(options.n_sides)
    s_line, use = md.line_s_max_kva(problem)
    if np.any(use):
        a_p = np.asarray(s.dpl_dp)[use] + tan * np.asarray(s.dpl_dq)[use]
        a_q = np.asarray(s.dql_dp)[use] + tan * np.asarray(s.dql_dq)[use]
        pl, ql = consts["pl"][:, use], consts["ql"][:, use]
        smax = s_line[use] * fac
        coef = (cos_th[:, None, None] * a_p[None] + sin_th[:, None, None] * a_q[None]).reshape(-1, a_p.shape[1])
        const = (cos_th[None, :, None] * pl[:, None, :] + sin_th[None, :, None] * ql[:, None, :]).reshape(pl.shape[0], -1)
        hi = np.tile(smax, cos_th.size)
        specs.append((coef / hi[:, None], const / hi, -_INF, 1.0, 1.0))
    if np.any(~use):
        coef = np.asarray(s.di_dp)[~use] + tan * np.asarray(s.di_dq)[~use]
        imax = np.asarray(s.i_max_ka)[~use] * lim.line_loading_max
        specs.append((coef / imax[:, None], consts["i"][:, ~use] / imax, -_INF, 1.0, 1.0))
    st = md.trafo_s_max_kva(problem)
    if st.size:
        a_p = np.asarray(s.dpt_dp) + tan * np.asarray(s.dpt_dq)
        a_q = np.asarray(s.dqt_dp) + tan * np.asarray(s.dqt_dq)
        pt, qt = consts["pt"], consts["qt"]
        coef = (cos_th[:, None, None] * a_p[None] + sin_th[:, None, None] * a_q[None]).reshape(-1, a_p.shape[1])
        const = (cos_th[None, :, None] * pt[:, None, :] + sin_th[None, :, None] * qt[:, None, :]).reshape(pt.shape[0], -1)
        hi = np.tile(st * fac, cos_th.size)
        specs.append((coef / hi[:, None], const / hi, -_INF, 1.0, 1.0))
    return specs


# --------------------------------------------------------------------------- solve
def solve_flex(problem: ChargingProblem, options: FlexOptions | None = None, *,
               validate: bool = True, consts: dict | None = None, ac_grid=None) -> FlexPlan:
    """Maximise the fleet's up/down flexibility (seed 003, eq. (4)) on the linear grid.

    ``options.grid_model == "ac"`` hands over to :func:`.flexibility_ac.solve_flex_ac`.

    Parameters
    ----------
    problem : ChargingProblem
    options : FlexOptions, optional
    validate : bool
        Validate problem and options first.
    consts : dict, optional
        Precomputed :func:`.model_data.grid_constants`.
    ac_grid : .flexibility_ac.ACGrid, optional
        The network for ``grid_model = "ac"`` (required there, ignored otherwise).

    Returns
    -------
    FlexPlan
        On solver failure or infeasibility: :func:`fallback_plan` with
        ``fallback=True`` and the reason in ``status``/``message``.

    Raises
    ------
    ValueError
        Invalid problem or options (never for solver failures).
    """
    options = FlexOptions() if options is None else options
    if validate:
        problem.validate()
        options.validate(problem.n_steps)
    if options.grid_model == "ac":
        from .flexibility_ac import solve_flex_ac

        return solve_flex_ac(problem, options, ac_grid)
    t0 = time.perf_counter()
    lp = build_flex_lp(problem, options, consts)
    build_s = time.perf_counter() - t0
    x, status, term, solve_s = solve_flex_lp(lp, options)
    n_var, n_con = lp.A.shape[1], lp.A.shape[0]
    if x is None:
        plan = fallback_plan(problem, options, reason=status, message=term)
        return _replace(plan, build_s=build_s, solve_s=solve_s, n_var=n_var, n_con=n_con)
    return extract_plan(problem, options, lp, x, status="optimal", termination=term,
                        build_s=build_s, solve_s=solve_s)


def solve_flex_lp(lp: FlexLP, options: FlexOptions):
    """Solve the assembled LP, with the peak tie-break when ``options.tie_break == "peak"``.

    Stage 1 maximises eq. (4). Stage 2 (tie-break) minimises the aggregate peak
    ``z >= sum_v P^ch_t`` over the *optimal face* of stage 1 (:func:`_face_lp`):
    exact (complementary slackness), and smaller than stage 1 since the face fixes
    columns and rows. If that LP fails, or its eq. (4) value is more than
    ``tie_break_rel`` (at least 1e-9) below the optimum, the objective-row LP
    :func:`_peak_lp` is solved instead; if that fails too, stage 1's optimum is kept.

    Returns
    -------
    (x or None, status, termination text, solver seconds)
    """
    x, status, term, solve_s, duals = _solve_highs(lp, options.time_limit_s, duals=True)
    if x is None or options.tie_break != "peak" or not lp.i_ch.size:
        return x, status, term, solve_s
    n = lp.A.shape[1]
    opt = float(lp.c @ x)
    floor = opt - max(float(options.tie_break_rel), 1e-9) * max(abs(opt), 1.0)
    x2, _, term2, s2 = _solve_highs(_face_lp(lp, x, *duals), options.time_limit_s)
    solve_s += s2
    if x2 is not None and float(lp.c @ x2[:n]) >= floor:
        return x2[:n], status, f"{term}; peak tie-break on the optimal face: {term2}", solve_s
    x3, _, term3, s3 = _solve_highs(_peak_lp(lp, x, options.tie_break_rel), options.time_limit_s)
    solve_s += s3
    if x3 is not None:
        return x3[:n], status, f"{term}; peak tie-break (objective row): {term3}", solve_s
    return x, status, f"{term}; peak tie-break failed ({term2}; {term3}), first optimum kept", solve_s


def _peak_rows(lp: FlexLP) -> sp.csr_matrix:
    """``sum_v P^ch_t - z`` for every step with a plugged EV, columns ``x`` then ``z``."""
    n = lp.A.shape[1]
    steps, r = np.unique(lp.pair_t, return_inverse=True)
    m = steps.size
    return sp.csr_matrix((np.r_[np.ones(lp.i_ch.size), -np.ones(m)],
                          (np.r_[r, np.arange(m)], np.r_[lp.i_ch, np.full(m, n)])), shape=(m, n + 1))


def _face_lp(lp: FlexLP, x: np.ndarray, col_dual: np.ndarray, row_dual: np.ndarray,
             tol: float = 1e-9) -> FlexLP:
    """Minimise the aggregate peak over the optimal face of ``max c'x`` (tie-break, stage 2).

    By complementary slackness, ``x'`` is optimal for stage 1 exactly when it is
    feasible, every column with a nonzero reduced cost sits at its bound and every
    row with a nonzero dual at its bound (for the one dual optimum HiGHS returns).
    So fixing those columns and rows at the bound where ``x`` has them describes
    the optimal face without the dense objective row of :func:`_peak_lp` (which
    made that LP 10-20x slower than stage 1: seed 003 day 1.0 s vs 0.12 s,
    SimBench 5x EVs 7.2 s vs 0.47 s). ``|dual| <= tol`` counts as zero.
    """
    n = lp.A.shape[1]
    lb, ub = lp.lb.copy(), lp.ub.copy()
    fix = np.abs(col_dual) > tol
    at = np.where(np.abs(x - lb) <= np.abs(x - ub), lb, ub)
    lb[fix] = ub[fix] = np.where(np.isfinite(at), at, x)[fix]
    lo, hi = lp.row_lo.copy(), lp.row_hi.copy()
    ax = lp.A @ x
    fixr = np.abs(row_dual) > tol
    atr = np.where(np.abs(ax - lo) <= np.abs(ax - hi), lo, hi)
    lo[fixr] = hi[fixr] = np.where(np.isfinite(atr), atr, ax)[fixr]
    peak = _peak_rows(lp)
    a = sp.vstack([sp.hstack([lp.A, sp.csr_matrix((lp.A.shape[0], 1))]), peak]).tocsc()
    c = np.zeros(n + 1)
    c[n] = -1.0
    return _replace(lp, A=a, c=c, lb=np.append(lb, 0.0), ub=np.append(ub, _INF),
                    row_lo=np.concatenate([lo, np.full(peak.shape[0], -_INF)]),
                    row_hi=np.concatenate([hi, np.zeros(peak.shape[0])]))


def _peak_lp(lp: FlexLP, x: np.ndarray, rel: float) -> FlexLP:
    """Second stage of ``tie_break = "peak"``: maximise ``-z`` with ``sum_v P^ch_t <= z``
    for every step and ``c'x >= (1 - rel) c'x*`` (the first stage's optimum ``x``)."""
    n = lp.A.shape[1]
    opt = float(lp.c @ x)
    peak = _peak_rows(lp)
    obj = sp.csr_matrix(np.append(lp.c, 0.0)[None, :])
    a = sp.vstack([sp.hstack([lp.A, sp.csr_matrix((lp.A.shape[0], 1))]), peak, obj]).tocsc()
    c = np.zeros(n + 1)
    c[n] = -1.0
    lo_obj = opt - rel * abs(opt)
    return _replace(lp, A=a, c=c, lb=np.append(lp.lb, 0.0), ub=np.append(lp.ub, _INF),
                    row_lo=np.concatenate([lp.row_lo, np.full(peak.shape[0], -_INF), [lo_obj]]),
                    row_hi=np.concatenate([lp.row_hi, np.zeros(peak.shape[0]), [_INF]]))


def _solve_highs(lp: FlexLP, time_limit_s: float, duals: bool = False):
    """Solve ``lp`` with HiGHS; returns (x or None, status, termination text, seconds),
    with ``duals``: plus (column reduced costs, row duals) (None when not optimal)."""
    import highspy

    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", float(time_limit_s))
    h.setOptionValue("random_seed", 0)
    # no "threads" option: HiGHS keeps one global thread pool per process, and a
    # changed thread count after another solve makes run() fail
    model = highspy.HighsLp()
    a = lp.A.tocsc()
    model.num_col_, model.num_row_ = a.shape[1], a.shape[0]
    model.col_cost_ = lp.c
    model.col_lower_, model.col_upper_ = lp.lb, lp.ub
    model.row_lower_, model.row_upper_ = lp.row_lo, lp.row_hi
    model.sense_ = highspy.ObjSense.kMaximize
    model.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    model.a_matrix_.start_ = a.indptr
    model.a_matrix_.index_ = a.indices
    model.a_matrix_.value_ = a.data
    t0 = time.perf_counter()
    h.passModel(model)
    h.run()
    solve_s = time.perf_counter() - t0
    st = h.getModelStatus()
    text = h.modelStatusToString(st)
    if st == highspy.HighsModelStatus.kModelEmpty:   # no plugged EV: nothing to decide
        out = np.zeros(a.shape[1]), "optimal", text, solve_s
        return out + ((np.zeros(a.shape[1]), np.zeros(a.shape[0])),) if duals else out
    if st == highspy.HighsModelStatus.kOptimal:
        sol = h.getSolution()
        out = np.asarray(sol.col_value), "optimal", text, solve_s
        return out + ((np.asarray(sol.col_dual), np.asarray(sol.row_dual)),) if duals else out
    if st == highspy.HighsModelStatus.kInfeasible:
        reason = "infeasible"
    elif st == highspy.HighsModelStatus.kTimeLimit:
        reason = "time_limit"
    else:
        reason = "error"
    return (None, reason, text, solve_s) + ((None,) if duals else ())


def extract_plan(problem, options, lp: FlexLP, x, *, status, termination, build_s, solve_s,
                 grid_model="linear") -> FlexPlan:
    """Map a solution vector back to a :class:`FlexPlan` (clipped to exact bounds)."""
    n_steps, n_ev = problem.n_steps, problem.n_evs
    fd = lp.fleet
    t, v = lp.pair_t, lp.pair_v
    p_ch = np.zeros((n_steps, n_ev))
    p_ch[t, v] = np.clip(x[lp.i_ch], 0.0, fd.p_max_kw[v])
    flex = {}
    for s in FLEX_SCENARIOS:
        arr = np.zeros((n_steps, n_ev))
        if s in lp.i_flex:
            arr[t, v] = np.maximum(x[lp.i_flex[s]], 0.0)
        flex[s] = arr
    flex["down"] = np.minimum(flex["down"], p_ch)
    flex["up"] = np.minimum(flex["up"], np.maximum(fd.p_max_kw - p_ch, 0.0))
    e = energy_trajectory(problem, p_ch, fd)
    slack = float(np.max(x[lp.i_slack], initial=0.0))
    plan = FlexPlan(ev_ids=np.asarray(problem.ev_ids), p_ch_kw=p_ch, p_up_kw=flex["up"],
                    p_down_kw=flex["down"], e_kwh=e, e_min_kwh=fd.e_min_kwh, q_per_p=lp.q_per_p,
                    objective=flex_objective(options, flex["down"], flex["up"]), status=status,
                    termination=termination, solve_s=solve_s, build_s=build_s,
                    grid_model=grid_model, n_var=lp.A.shape[1], n_con=lp.A.shape[0],
                    soft_violation_max=slack,
                    message="" if slack <= 1e-6 else
                    f"grid rows violated with EVs idle relaxed (largest slack {slack:.4g})")
    return plan


def energy_trajectory(problem: ChargingProblem, p_ch_kw: np.ndarray, fd: FleetData | None = None) -> np.ndarray:
    """Stored energy at every instant for a charging schedule (eq. (17)) [kWh], (T+1, V)."""
    fd = fleet_data(problem) if fd is None else fd
    e = np.empty((p_ch_kw.shape[0] + 1, p_ch_kw.shape[1]))
    e[0] = fd.e_arr_kwh
    e[1:] = fd.e_arr_kwh + np.cumsum(fd.eta * p_ch_kw * problem.dt_h, axis=0)
    return e


def flex_objective(options: FlexOptions, p_down_kw: np.ndarray, p_up_kw: np.ndarray) -> float:
    """Eq. (4): ``sum_{ev, t} C_{0,t} P^down + C_{1,t} P^up`` for the kept scenarios."""
    c = options.coefficients(p_down_kw.shape[0])
    total = 0.0
    if "down" in options.scenarios:
        total += float(c[0] @ p_down_kw.sum(axis=1))
    if "up" in options.scenarios:
        total += float(c[1] @ p_up_kw.sum(axis=1))
    return total


def fallback_plan(problem: ChargingProblem, options: FlexOptions, *, reason: str,
                  message: str = "", grid_model: str | None = None) -> FlexPlan:
    """Safe plan when the optimisation fails: no flexibility, departure energy met evenly.

    Each EV charges at the constant power that brings it from arrival to its
    departure energy over its whole plug window (``(E_dep - E_arr) / (eta dt
    n_plugged)``, at most ``Pbar``): the lowest constant power that keeps the
    user's need, so it is the plan that loads the grid least evenly; it offers
    zero flexibility (``p_up = p_down = 0``), since no activation has been
    checked against the grid.
    """
    fd = fleet_data(problem, options.ev_power_factor)
    plugged = np.asarray(problem.plugged, dtype=bool)
    n_plug = plugged.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        p_const = np.where(n_plug > 0, (fd.e_dep_kwh - fd.e_arr_kwh) / (fd.eta * problem.dt_h * n_plug), 0.0)
    p_ch = np.where(plugged, np.clip(p_const, 0.0, fd.p_max_kw), 0.0)
    zero = np.zeros_like(p_ch)
    tan = float(np.sqrt(max(1.0 - options.ev_power_factor ** 2, 0.0)) / options.ev_power_factor)
    return FlexPlan(ev_ids=np.asarray(problem.ev_ids), p_ch_kw=p_ch, p_up_kw=zero, p_down_kw=zero.copy(),
                    e_kwh=energy_trajectory(problem, p_ch, fd), e_min_kwh=fd.e_min_kwh, q_per_p=tan,
                    objective=0.0, status=reason, termination=message, fallback=True,
                    grid_model=grid_model or options.grid_model,
                    message=f"flexibility optimisation failed ({reason}: {message}); fallback: "
                            "constant charging to the departure energy, no flexibility offered")


def _replace(plan: FlexPlan, **kw) -> FlexPlan:
    import dataclasses

    return dataclasses.replace(plan, **kw)
