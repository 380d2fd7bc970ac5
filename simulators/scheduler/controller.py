"""The central charging controller: fleet and grid state in, setpoints out.

Pure model (no mosaik). The mosaik adapter (:mod:`.mosaik_api`) hands it, each
step, what a real operator would have: the state of the EVs that are plugged in
(:class:`~simulators.scheduler.fleet_view.FleetView` of the fleet simulator's
``fleet_state``), the last
measured grid voltages, and forecasts of the base load and PV. It returns one
setpoint per plugged EV for the current step.

Modes
-----
``day_ahead``
    One solve at the first step over the whole horizon with perfect knowledge of
    every EV (as in the papers); later steps replay the plan.
``receding``
    Every step: rebuild the problem over the remaining horizon from the EVs plugged
    in now (EVs not yet arrived are unknown), solve, apply the first step.
``day_ahead_daily``
    One plan per day, re-made at the same clock time every day
    (``ControllerConfig.replan_first_s``, then every ``replan_period_s``) and at
    the first step: the EVs plugged in then (their measured SOC) and every stay
    the forecast (``ev_specs``, with ``EVSpec.next_stays``) has arriving before
    the next re-plan, over a window that ends at the latest departure among
    them (at least the next re-plan; at most the horizon). Between re-plans the
    plan is replayed. The problem size is one day's, whatever the horizon, so a
    year costs 365 day-sized solves (``day_ahead`` would be one year-sized solve,
    ``receding`` a year-long horizon at every arrival).

EV availability
---------------
The optimiser plans power only in steps the EV is plugged in for the *whole*
step (``arrival <= t`` and ``t + dt <= departure``), so every planned setpoint is
feasible for the fleet model without clipping; an EV that arrives inside a step
starts at the next step boundary.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandapower as pp

from simulators.grid.sensitivity import Sensitivities, compute_sensitivities
from simulators.scheduler.fleet_view import FleetView
from simulators.scheduler.problem import ChargingProblem, GridBounds, Schedule, StrategyOptions

MODES = ("day_ahead", "receding", "day_ahead_daily")


@dataclass(frozen=True)
class ControllerConfig:
    """Settings of the controller.

    Attributes
    ----------
    strategy : str
        ``uncoordinated``, ``smart``, ``smart_q``, ``v2g``, ``v2g_q`` or
        ``autonomous``.
    mode : str
        ``day_ahead`` or ``receding`` (module docstring).
    step_s : int
        Step length [s].
    n_steps : int
        Steps in the horizon.
    limits : GridBounds
        Voltage band and loading limits of the linear grid model.
    options : StrategyOptions
        Solver settings for the optimising strategies.
    relinearise : bool
        Re-compute the sensitivities at the last measured operating point before
        each solve (receding mode).
    e_star_kwh : float
        Drive energy of an autonomous EV per leg [kWh] (seed 001, eq. (12g)).
    autonomous : dict
        Fields of ``AutonomousOptions`` for the autonomous strategy (e.g.
        ``move_penalty``, ``exact_drive_energy``); the solver time limit comes from
        ``options``.
    flex : dict
        Fields of :class:`.flexibility.FlexOptions` for strategy ``flex_max``
        (seed 003; ``c_down``, ``c_up``, ``scenarios``, ``ev_power_factor``); the
        solver time limit comes from ``options``.
    replan_first_s, replan_period_s : int
        Mode ``day_ahead_daily``: first re-plan after the start [s] (in
        ``[0, replan_period_s)``; 0 = at the start) and the period [s].
    ac_iterations : int
        AC corrections of each plan (not in the papers): the plan is checked with
        a full AC power flow per step, the difference between AC and linearised
        voltages is added to the linear model as a per-step, per-bus offset, and
        the problem is solved again; repeated ``ac_iterations`` times. 0 keeps the
        papers' pure linear model. A plan none of whose voltage rows is within 1e-6 pu
        of its bound, and whose AC-corrected voltages stay in the band, is already the
        corrected optimum: it is kept without solving again (and, in receding mode,
        replayed while nothing is new).
    """

    strategy: str
    mode: str
    step_s: int
    n_steps: int
    limits: GridBounds
    options: StrategyOptions = field(default_factory=StrategyOptions)
    relinearise: bool = False
    e_star_kwh: float = 0.0
    ac_iterations: int = 0
    autonomous: dict = field(default_factory=dict)
    flex: dict = field(default_factory=dict)
    replan_first_s: int = 0
    replan_period_s: int = 86400

    def validate(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.step_s <= 0 or self.n_steps <= 0:
            raise ValueError(f"step_s and n_steps must be > 0, got {self.step_s}, {self.n_steps}")
        if self.mode == "day_ahead_daily" and not (
                self.replan_period_s > 0 and self.replan_period_s % self.step_s == 0
                and 0 <= self.replan_first_s < self.replan_period_s and self.replan_first_s % self.step_s == 0):
            raise ValueError(f"replan_period_s must be a positive multiple of step_s ({self.step_s} s) and "
                             f"replan_first_s a multiple of step_s in [0, replan_period_s), got "
                             f"{self.replan_period_s}, {self.replan_first_s}")
        if not 0 <= self.ac_iterations <= 20:
            raise ValueError(f"ac_iterations must be in [0, 20], got {self.ac_iterations}")


@dataclass(frozen=True)
class PlanInfo:
    """What one planning call did (published by the scheduler simulator)."""

    status: str
    solve_s: float
    fallback: bool
    soft_violation_max: float
    objective: float
    message: str = ""


#: A voltage row whose linearised value is farther than this from its bound is not
#: binding at an interior-point solution [pu] (binding rows are within 1e-9).
_ROW_FREE_PU = 1e-6


def _still_optimal_with_offset(problem: ChargingProblem, schedule: Schedule, solved_with, offset) -> bool:
    """True when ``schedule`` (optimal for ``problem`` with voltage offset ``solved_with``,
    None = none) is also optimal with ``offset`` instead.

    Sufficient condition, exact for a convex problem: no voltage row (12g) is within
    ``_ROW_FREE_PU`` of its bound at the schedule (so their multipliers are zero and the
    schedule is optimal without any voltage row), and every voltage row holds with
    ``offset`` (so it is feasible for the corrected problem, a restriction of that
    relaxation). The offset changes nothing else.
    """
    lim = problem.limits
    pred = problem.sens.predict
    n = len(problem.sens.bus_ids)
    onehot = np.zeros((problem.n_evs, n))
    onehot[np.arange(problem.n_evs), problem.ev_col] = 1.0
    vm = pred(np.asarray(problem.net_p_kw) + schedule.p_kw @ onehot,
              np.asarray(problem.net_q_kvar) + schedule.q_kvar @ onehot).vm_pu
    if problem.vm_offset_pu is not None:
        vm = vm + np.asarray(problem.vm_offset_pu)
    now = vm + (0.0 if solved_with is None else np.asarray(solved_with))
    if now.min() < lim.vm_min_pu + _ROW_FREE_PU or now.max() > lim.vm_max_pu - _ROW_FREE_PU:
        return False
    new = vm + np.asarray(offset)
    return bool(new.min() >= lim.vm_min_pu and new.max() <= lim.vm_max_pu)


def _shifted(seed: tuple[int, dict] | None, k: int) -> dict | None:
    """Voltage-row seed of a solve from step ``k0`` as seen from step ``k >= k0``."""
    if seed is None or seed[0] > k:
        return None
    k0, rows = seed
    return {side: np.asarray(mask)[k - k0:] for side, mask in rows.items()}


def _union(a: dict | None, b: dict | None) -> dict | None:
    """Union of two voltage-row seeds of the same shape (either may be None)."""
    if a is None or b is None:
        return a if b is None else b
    return {side: np.asarray(a[side]) | np.asarray(b[side]) if np.shape(a[side]) == np.shape(b.get(side))
            else np.asarray(a[side]) for side in a}


def _full_steps(arrival_s: np.ndarray, departure_s: np.ndarray, t0_s: float, step_s: float,
                n_steps: int) -> np.ndarray:
    """(T, V) mask of steps an EV is plugged in for the whole step."""
    starts = t0_s + np.arange(n_steps)[:, None] * step_s
    return (arrival_s[None, :] <= starts + 1e-9) & (starts + step_s <= departure_s[None, :] + 1e-9)


def _stay_key(ev_id: str, departure_s: float) -> str:
    """Plan column of one stay of an EV (mode ``day_ahead_daily``)."""
    return f"{ev_id}@{float(departure_s):.0f}"


class Controller:
    """Receding-horizon / day-ahead charging controller (module docstring).

    Parameters
    ----------
    net : pandapowerNet
        The grid as the operator knows it (topology and parameters).
    config : ControllerConfig
    forecast_p_kw, forecast_q_kvar : mapping bus index -> array (n_steps,)
        Forecast nodal demand without EVs (base load minus PV) [kW], [kvar], load
        convention. Buses not listed have none.
    ev_specs : sequence of mapping, optional
        Every EV of the run (``EVSpec`` fields), for day-ahead planning with perfect
        knowledge; receding mode ignores it.
    replay : mapping ev_id -> ([p_kw per step], [q_kvar per step]), optional
        Strategy ``replay``: apply these powers (e.g. another case's recorded
        schedule with Q forced to zero, seed 000 Fig. 5).
    """

    def __init__(self, net: pp.pandapowerNet, config: ControllerConfig,
                 forecast_p_kw: Mapping[int, Sequence[float]],
                 forecast_q_kvar: Mapping[int, Sequence[float]],
                 ev_specs: Sequence[Mapping] | None = None,
                 replay: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None):
        config.validate()
        self.replay = dict(replay or {})
        self.config = config
        self.net = copy.deepcopy(net)
        self._ac_model = None
        self.ev_specs = list(ev_specs or [])
        self.sens = self._linearise_at_forecast(forecast_p_kw, forecast_q_kvar)
        cols = {int(b): i for i, b in enumerate(self.sens.bus_ids)}
        t, n = config.n_steps, len(self.sens.bus_ids)
        self.net_p_kw = np.zeros((t, n))
        self.net_q_kvar = np.zeros((t, n))
        for bus, values in forecast_p_kw.items():
            if int(bus) in cols:
                self.net_p_kw[:, cols[int(bus)]] += np.asarray(values, dtype=float)[:t]
        for bus, values in forecast_q_kvar.items():
            if int(bus) in cols:
                self.net_q_kvar[:, cols[int(bus)]] += np.asarray(values, dtype=float)[:t]
        if not (np.all(np.isfinite(self.net_p_kw)) and np.all(np.isfinite(self.net_q_kvar))):
            raise ValueError("forecast_p_kw / forecast_q_kvar must be finite")
        self._plan: Schedule | None = None
        self._plan_ids: list[str] = []
        self._plan_bus: dict[str, int] = {}
        self._plan_k0 = 0
        self._plan_cols = np.zeros(0, dtype=int)
        self.n_solves = 0
        # voltage rows near their bound in the last linear / AC-corrected solve:
        # (first step, rows) seeds of the next solve's constraint generation
        self._seed_linear: tuple[int, dict] | None = None
        self._seed_corrected: tuple[int, dict] | None = None
        # the last plan is the linear optimum and its AC check changed nothing
        self._plan_linear_ok = False
        self.n_ac_skipped = 0
        self.flex_plan = None
        self.n_fallbacks = 0

    # ------------------------------------------------------------ linearisation ---
    def _linearise_at_forecast(self, fp: Mapping, fq: Mapping) -> Sensitivities:
        """Sensitivities at the forecast operating point of highest total demand.

        The operator's net has its own loads and generators replaced by the nodal
        forecast (one load per bus) so the operating point is the forecast one.
        """
        net = self.net
        totals = np.zeros(self.config.n_steps)
        for values in fp.values():
            totals += np.asarray(values, dtype=float)[: self.config.n_steps]
        k = int(np.argmax(totals)) if totals.size else 0
        for table in ("load", "sgen", "storage"):  # all in the forecast
            if len(net[table]):
                net[table]["p_mw"] = 0.0
                net[table]["q_mvar"] = 0.0
        if self.config.ac_iterations:
            from simulators.grid.model import GridLimits, GridModel

            lim = self.config.limits
            self._ac_model = GridModel(copy.deepcopy(net), GridLimits(lim.vm_min_pu, lim.vm_max_pu))
        buses = sorted(set(map(int, fp)) | set(map(int, fq)))
        for bus in buses:
            p = float(np.asarray(fp.get(bus, np.zeros(k + 1)))[k]) if bus in fp else 0.0
            q = float(np.asarray(fq.get(bus, np.zeros(k + 1)))[k]) if bus in fq else 0.0
            pp.create_load(net, bus, p_mw=p / 1e3, q_mvar=q / 1e3, name=f"forecast {bus}")
        return self._linearise(net, k)

    def _linearise(self, net, k: int) -> Sensitivities:
        """Sensitivities at the forecast loads of ``net`` (step ``k``): the AC power flow
        (seed 000 eq. (2) linearised there); if it does not converge, also not from a
        flat start with 50 iterations, the linearisation at the network without load
        (slack voltage, transformer phase shifts: the flat-start point), with a warning.
        ``self.linearisation`` says which."""
        from pandapower.auxiliary import LoadflowNotConverged

        for kwargs in ({}, {"init": "flat", "max_iteration": 50}):
            try:
                pp.runpp(net, calculate_voltage_angles=True, numba=False, **kwargs)
                self.linearisation = f"forecast (step {k})"
                return compute_sensitivities(net)
            except LoadflowNotConverged:
                continue
        forecast = net.load["name"].astype(str).str.startswith("forecast ")
        saved = net.load.loc[forecast, ["p_mw", "q_mvar"]].copy()
        net.load.loc[forecast, ["p_mw", "q_mvar"]] = 0.0
        try:
            pp.runpp(net, calculate_voltage_angles=True, numba=False)
            sens = compute_sensitivities(net)
        finally:
            net.load.loc[forecast, ["p_mw", "q_mvar"]] = saved
        self.linearisation = "no load (flat start): the forecast power flow did not converge"
        from loguru import logger

        total_kw = float(saved["p_mw"].sum()) * 1e3
        logger.warning(f"scheduler: the power flow at the forecast peak (step {k}, {total_kw:.0f} kW "
                       "without EVs) does not converge; linearised at the network without load "
                       "(flat start) instead")
        return sens

    def relinearise(self, vm_pu: Mapping[int, float], va_degree: Mapping[int, float]) -> None:
        """New sensitivities at a measured operating point (voltages per bus)."""
        self.sens = compute_sensitivities(self.net, vm_pu=dict(vm_pu), va_degree=dict(va_degree))

    # ------------------------------------------------------------------ planning ---
    def plan(self, k: int, fleet: Mapping[str, Mapping], measured: Mapping | None = None
             ) -> tuple[dict[str, list[float]], PlanInfo]:
        """Setpoints for step ``k`` (interval ``[k dt, (k+1) dt)``).

        Parameters
        ----------
        k : int
            Step index from the start of the horizon.
        fleet : FleetView, column-wise dict or mapping ev_id -> state
            ``fleet_state`` of the EV fleet: EVs with ``soc``, ``plugged``, ``bus``,
            ``departure_s``, ``capacity_kwh``, ``charger_kva``, ``efficiency``,
            ``soc_target``, ``soc_min``, ``soc_max``, ``can_discharge``,
            ``can_reactive``, ``home_bus``.
        measured : mapping, optional
            ``{"vm_pu": {bus: vm}, "va_degree": {bus: va}}`` of the last grid step,
            used when ``relinearise`` is set.

        Returns
        -------
        setpoints : dict ev_id -> [p_kw, q_kvar] (or [p_kw, q_kvar, bus]), or the
            same column-wise (uncoordinated; :func:`simulators.setpoints.is_columnar`)
        info : PlanInfo
        """
        cfg = self.config
        plugged = FleetView.from_value(fleet).plugged()
        if cfg.strategy == "uncoordinated":
            return self._uncoordinated(k, plugged)
        if cfg.strategy == "replay":
            zero = ([0.0] * cfg.n_steps, [0.0] * cfg.n_steps)
            out = {e: [float(self.replay.get(e, zero)[0][k]), float(self.replay.get(e, zero)[1][k])]
                   for e in plugged}
            return out, PlanInfo("replay", 0.0, False, 0.0, float("nan"))
        if cfg.mode == "day_ahead_daily":
            return self._plan_daily(k, plugged)
        if cfg.mode == "day_ahead":
            if self._plan is None:
                specs = self.ev_specs or [dict(s, ev_id=e) for e, s in plugged.items()]
                self._solve(0, specs, initial=True)
            return self._replay(k, plugged)
        if measured and cfg.relinearise and measured.get("vm_pu"):
            self.relinearise({int(b): v for b, v in measured["vm_pu"].items()},
                             {int(b): v for b, v in measured["va_degree"].items()})
        elif self._plan_still_optimal(k, plugged):
            # Nothing the plan depends on changed: its tail is the optimum of the
            # shrunken problem (Bellman), so re-solving would return the same plan.
            out, info = self._replay(k, plugged, offset=self._plan_k0)
            return out, replace(info, solve_s=0.0, status="reused")
        specs = [dict(s, ev_id=e, arrival_s=k * cfg.step_s) for e, s in plugged.items()]
        self._solve(k, specs, initial=False)
        self._plan_k0 = k
        return self._replay(k, plugged, offset=k)

    def _plan_daily(self, k: int, plugged: FleetView):
        """Mode ``day_ahead_daily`` (module docstring): re-plan at the first step and
        at each re-plan time, replay the plan in between.

        Plan columns are stays, named ``"<ev_id>@<departure_s>"``: an EV plugged in
        at the re-plan can come home again before the next one.
        """
        cfg = self.config
        t_s = k * cfg.step_s
        since = t_s - cfg.replan_first_s
        solved = False
        if k == 0 or (since >= 0 and since % cfg.replan_period_s == 0):
            next_s = cfg.replan_first_s if since < 0 else t_s + cfg.replan_period_s
            next_s = max(next_s, t_s + cfg.step_s)
            specs, keys = [], set()
            for e, st in plugged.items():
                key = _stay_key(e, st["departure_s"])
                keys.add(key)
                specs.append(dict(st, ev_id=key, arrival_s=float(t_s), soc_initial=float(st["soc"]),
                                  home_bus=int(st["bus"])))
            for spec in self.ev_specs:
                stays = [(spec["arrival_s"], spec["departure_s"], spec["soc_initial"]),
                         *map(tuple, spec.get("next_stays") or ())]
                for a, d, soc in stays:
                    key = _stay_key(spec["ev_id"], d)
                    if t_s <= a < next_s and d > t_s and key not in keys:
                        keys.add(key)
                        specs.append(dict(spec, ev_id=key, arrival_s=float(a), departure_s=float(d),
                                          soc_initial=float(soc)))
            end_s = max([next_s] + [s["departure_s"] for s in specs])
            n = min(cfg.n_steps - k, max(1, int(np.ceil(end_s / cfg.step_s - 1e-9)) - k))
            self._solve(k, specs, initial=True, n_steps=n)
            self._plan_k0 = k
            solved = True
        keys = [_stay_key(e, d) for e, d in zip(plugged.ids, plugged.col("departure_s").tolist())]
        out, info = self._replay(k, plugged, offset=self._plan_k0, keys=keys)
        return out, (info if solved else replace(info, solve_s=0.0))

    def _plan_still_optimal(self, k: int, plugged: Mapping[str, Mapping], soc_tol: float = 1e-6) -> bool:
        """True when the last receding plan can be replayed at step ``k`` unchanged.

        Holds when no EV arrived since the last solve,
        each EV's SOC is the one the plan predicted, no fallback was used and the
        forecasts are perfect (they do not change between steps here); the AC
        correction (``ac_iterations``) re-solves unless the plan is the linear
        optimum that the AC check left unchanged (:meth:`_solve`): its tail is then
        the linear optimum of the tail problem (Bellman), whose AC check is the tail
        of the check that passed. The autonomous strategy always re-solves.
        """
        plan = self._plan
        if plan is None or plan.fallback or self.config.strategy == "autonomous":
            return False
        if self.config.ac_iterations and not self._plan_linear_ok:
            return False
        row = k - self._plan_k0
        # departed EVs may leave (their plan rows end with their plug window); any
        # EV the plan does not know forces a new solve
        if row <= 0 or row >= plan.p_kw.shape[0] or not set(plugged) <= set(self._plan_ids):
            return False
        index = {e: i for i, e in enumerate(self._plan_ids)}
        cols = np.array([index[e] for e in plugged], dtype=int)
        soc_now = plugged.col("soc")
        return bool(np.all(np.abs(plan.soc[row, cols] - soc_now) <= soc_tol))

    def _uncoordinated(self, k: int, plugged: FleetView):
        """Full power from plug-in until target (seed 000, eq. (13)); vectorised."""
        cfg = self.config
        dt_h = cfg.step_s / 3600.0
        t1 = (k + 1) * cfg.step_s
        need_kwh = np.maximum(0.0, (plugged.col("soc_target") - plugged.col("soc")) * plugged.col("capacity_kwh"))
        p = np.minimum(plugged.col("charger_kva"), need_kwh / (plugged.col("efficiency") * dt_h))
        p[plugged.col("departure_s") < t1 - 1e-9] = 0.0  # leaves inside the step
        out = {"ev_id": list(plugged.ids), "p_kw": p.tolist(), "q_kvar": [0.0] * p.size}
        return out, PlanInfo("closed_form", 0.0, False, 0.0, self._uncoordinated_objective(k, plugged))

    def _uncoordinated_objective(self, k: int, plugged: FleetView) -> float:
        """``J`` of seed 000 eq. (11) of the uncoordinated plan over the remaining
        horizon, for the plugged EVs: the number the optimising strategies publish
        for their own plans, so the two can be compared step by step.

        The plan is eq. (13) continued: full power each whole step until the target
        or departure; the SOC stays constant after departure.
        """
        cfg = self.config
        if not len(plugged.ids):
            return 0.0
        soc0 = plugged.col("soc").astype(float)
        target = plugged.col("soc_target")
        gain = plugged.col("efficiency") * (cfg.step_s / 3600.0) / plugged.col("capacity_kwh")  # SOC/kW, one step
        rate = plugged.col("charger_kva")
        remaining = cfg.n_steps - k
        # whole steps still charged before departure, then the SOC stays put
        charged = np.clip(np.floor(plugged.col("departure_s") / cfg.step_s + 1e-9) - k, 0, remaining)
        m = np.minimum(np.arange(1, remaining + 1)[:, None], charged[None, :])
        soc = np.minimum(np.maximum(target, soc0), soc0 + gain * rate * m)  # (T, V), never above target
        power_sum_kw = np.sum((soc[-1] - soc0) / gain)  # sum over steps and EVs of P [kW]
        return float(np.sum((soc - target) ** 2) + cfg.options.k_weight * power_sum_kw)

    def _problem(self, k: int, specs: Sequence[Mapping], initial: bool,
                 n_steps: int | None = None) -> ChargingProblem:
        cfg = self.config
        t = cfg.n_steps - k if n_steps is None else int(n_steps)
        col = {int(b): i for i, b in enumerate(self.sens.bus_ids)}
        arr = lambda key, dtype=float: np.array([s[key] for s in specs], dtype=dtype)  # noqa: E731
        soc0 = arr("soc_initial") if initial else arr("soc")
        arrival = arr("arrival_s") if initial else np.full(len(specs), k * cfg.step_s, dtype=float)
        bus_key = "home_bus" if initial else "bus"
        plugged = _full_steps(arrival, arr("departure_s"), k * cfg.step_s, cfg.step_s, t)
        return ChargingProblem(
            dt_h=cfg.step_s / 3600.0,
            ev_ids=np.array([s["ev_id"] for s in specs], dtype=object),
            ev_col=np.array([col[int(s[bus_key])] for s in specs], dtype=int),
            capacity_kwh=arr("capacity_kwh"),
            s_max_kva=arr("charger_kva"),
            efficiency=arr("efficiency"),
            soc0=np.clip(soc0, 0.0, 1.0),
            soc_target=arr("soc_target"),
            soc_min=arr("soc_min"),
            soc_max=arr("soc_max"),
            can_discharge=arr("can_discharge", bool),
            can_reactive=arr("can_reactive", bool),
            plugged=plugged,
            net_p_kw=self.net_p_kw[k:k + t],
            net_q_kvar=self.net_q_kvar[k:k + t],
            sens=self.sens,
            limits=cfg.limits,
        )

    def _solve(self, k: int, specs: Sequence[Mapping], initial: bool, n_steps: int | None = None) -> None:
        from simulators.scheduler.strategies import solve

        cfg = self.config
        self._plan_ids = [s["ev_id"] for s in specs]
        self._plan_bus = {}
        if not specs:
            self._plan = None
            self._last_info = PlanInfo("no_evs", 0.0, False, 0.0, 0.0)
            return
        problem = self._problem(k, specs, initial, n_steps)
        self._plan_linear_ok = False
        self._plan_cols = np.asarray(problem.ev_col, dtype=int)
        t0 = time.perf_counter()
        if cfg.strategy == "autonomous":
            schedule = self._solve_autonomous(problem)
        elif cfg.strategy == "flex_max":
            schedule = self._solve_flex(problem)
        else:
            options = replace(cfg.options, name=cfg.strategy)
            self._plan_linear_ok = False
            schedule = solve(problem, options, seed_rows=_shifted(self._seed_linear, k))
            self._seed_linear = (k, schedule.vm_rows) if schedule.vm_rows is not None else None
            solved_with = None  # offset the schedule is optimal for
            for i in range(cfg.ac_iterations if self._ac_model is not None else 0):
                if schedule.fallback:
                    break
                offset = self.ac_voltage_offset(problem, schedule)
                if _still_optimal_with_offset(problem, schedule, solved_with, offset):
                    # no voltage row near its bound: the schedule is optimal without the
                    # voltage rows, and it satisfies the corrected ones, so it is the
                    # optimum of the corrected problem (exact; no solve needed)
                    self.n_ac_skipped += 1
                    self._plan_linear_ok = i == 0
                    break
                solved_with = offset
                seed = _union(schedule.vm_rows, _shifted(self._seed_corrected, k))
                corrected = solve(replace(problem, vm_offset_pu=offset), options, seed_rows=seed)
                if corrected.fallback:
                    break
                schedule = corrected
                self._seed_corrected = (k, schedule.vm_rows) if schedule.vm_rows is not None else None
        wall = time.perf_counter() - t0
        self.n_solves += 1
        self.n_fallbacks += int(schedule.fallback)
        self._plan = schedule
        self._last_info = PlanInfo(schedule.status, wall, bool(schedule.fallback),
                                   float(schedule.soft_violation_max), float(schedule.objective),
                                   schedule.message)

    def ac_voltage_offset(self, problem: ChargingProblem, schedule: Schedule) -> np.ndarray:
        """AC minus linearised voltage of a plan, per step and bus, shape (T, n) [pu].

        Every step of the plan (forecast net demand plus the planned EV power at
        each EV's bus) goes through a full AC power flow; steps that do not
        converge get a zero offset.
        """
        sens = self.sens
        n = len(sens.bus_ids)
        onehot = np.zeros((problem.n_evs, n))
        onehot[np.arange(problem.n_evs), problem.ev_col] = 1.0
        p = np.asarray(problem.net_p_kw) + schedule.p_kw @ onehot
        q = np.asarray(problem.net_q_kvar) + schedule.q_kvar @ onehot
        linear = sens.predict(p, q).vm_pu
        offset = np.zeros_like(linear)
        buses = [int(b) for b in sens.bus_ids]
        for t in range(p.shape[0]):
            state = self._ac_model.step(dict(zip(buses, p[t])), dict(zip(buses, q[t])))
            if not state.pf_converged:
                continue
            pos = {int(b): i for i, b in enumerate(state.bus_ids)}
            vm = np.array([state.vm_pu[pos[b]] for b in buses])
            offset[t] = vm - linear[t]
        return offset

    def _solve_flex(self, problem: ChargingProblem) -> Schedule:
        """Seed 003's flexibility plan; the EVs are sent its charging power ``P^ch``.

        The whole plan (flexibility per EV and step) is kept in ``self.flex_plan``.
        """
        from simulators.scheduler.flexibility import FlexOptions, solve_flex

        opts = FlexOptions(**{"time_limit_s": self.config.options.time_limit_s, **self.config.flex})
        ac_grid = None
        if opts.grid_model == "ac":
            from simulators.scheduler.flexibility_ac import ac_grid_from_net

            ac_grid = ac_grid_from_net(self.net, self.sens)   # the net linearised at (solved)
        plan = solve_flex(problem, opts, ac_grid=ac_grid)
        self.flex_plan = plan
        cap = np.asarray(problem.capacity_kwh, dtype=float)
        return Schedule(p_kw=plan.p_ch_kw, q_kvar=plan.p_ch_kw * plan.q_per_p,
                        soc=np.clip(plan.e_kwh / cap, 0.0, 1.0), status=plan.status,
                        objective=plan.objective, solve_s=plan.solve_s, build_s=plan.build_s,
                        soft_violation_max=plan.soft_violation_max, fallback=plan.fallback,
                        message=plan.message)

    def _solve_autonomous(self, problem: ChargingProblem) -> Schedule:
        from simulators.scheduler.autonomous import AutonomousOptions, solve_autonomous

        opts = AutonomousOptions(**{"time_limit_s": self.config.options.time_limit_s, **self.config.autonomous})
        result = solve_autonomous(problem, e_star_kwh=self.config.e_star_kwh, options=opts)
        bus_ids = self.sens.bus_ids
        self._plan_bus = {str(e): int(bus_ids[c]) for e, c in zip(problem.ev_ids, result.charge_col)}
        return result.schedule

    # ------------------------------------------- plan access (real-time activation) ---
    def _offset(self) -> int:
        return self._plan_k0 if self.config.mode in ("receding", "day_ahead_daily") else 0

    def plan_tail(self, k: int) -> tuple[list[str], np.ndarray] | None:
        """The current plan from step ``k``: (EV ids, ``p_kw`` (n_steps - k, V)), or None."""
        plan = self._plan
        row = k - self._offset()
        if plan is None or row < 0 or row >= plan.p_kw.shape[0]:
            return None
        return list(self._plan_ids), np.asarray(plan.p_kw[row:])

    def plan_cols(self) -> np.ndarray:
        """Column of ``sens.bus_ids`` where each EV of the plan charges."""
        return self._plan_cols

    def set_plan_tail(self, k: int, ev_ids: Sequence[str], p_kw: np.ndarray, soc_gain: np.ndarray) -> None:
        """Overwrite the plan of ``ev_ids`` from step ``k`` on (a served activation).

        ``soc_gain`` = ``eta dt / E`` per EV [1/kW] (seed 000, eq. (4), charging):
        the planned SOC follows, so that a fleet that applies the new plan keeps
        replaying it instead of re-solving.
        """
        plan = self._plan
        row = k - self._offset()
        index = {e: i for i, e in enumerate(self._plan_ids)}
        cols = np.array([index[e] for e in ev_ids], dtype=int)
        p_all = np.array(plan.p_kw, dtype=float, copy=True)
        soc = np.array(plan.soc, dtype=float, copy=True)
        new = np.asarray(p_kw, dtype=float)
        p_all[row:, cols] = new
        soc[row + 1:, cols] = soc[row, cols] + np.cumsum(new * np.asarray(soc_gain, dtype=float), axis=0)
        self._plan = replace(plan, p_kw=p_all, soc=soc)

    def setpoints_now(self, k: int, fleet: Mapping[str, Mapping]):
        """Setpoints of step ``k`` from the current plan (after :meth:`set_plan_tail`)."""
        return self._replay(k, FleetView.from_value(fleet).plugged(), offset=self._offset())

    def _replay(self, k: int, plugged: Mapping[str, Mapping], offset: int = 0,
                keys: Sequence[str] | None = None):
        """Setpoints of step ``k`` from the plan; ``keys``: each plugged EV's plan
        column name when it is not the EV id (stays, mode ``day_ahead_daily``)."""
        out: dict[str, list[float]] = {}
        plan = self._plan
        row = k - offset
        index = {e: i for i, e in enumerate(self._plan_ids)}
        ids = list(plugged)
        for ev_id, key in zip(ids, ids if keys is None else keys):
            i = index.get(key)
            if plan is None or i is None or row >= plan.p_kw.shape[0]:
                out[ev_id] = [0.0, 0.0]
                continue
            sp = [float(plan.p_kw[row, i]), float(plan.q_kvar[row, i])]
            if ev_id in self._plan_bus:
                sp.append(self._plan_bus[ev_id])
            out[ev_id] = sp
        info = self._last_info
        if self.config.mode == "day_ahead" and k > 0:
            info = replace(info, solve_s=0.0)  # replaying the plan costs nothing
        return out, info
