"""Agent-based EV fleet model (no mosaik).

One SimPy process per EV walks through the vehicle's stay: it arrives and plugs
in at ``arrival_s``, charges while plugged, and unplugs and departs at
``departure_s``. The processes record the plug-in and unplug instants in numpy
arrays; the charging physics of a whole step is then computed for all EVs at
once, vectorised, from these recorded instants. Per-EV state (SOC, bus,
energy counters) lives in numpy arrays, so a step of 5000 EVs costs about a
millisecond.

Time and intervals
------------------
``step(t_s, setpoints)`` advances the model to ``t_s`` [s] and applies the
setpoints to the interval ``[t_s, t_s + step_s)``. Calling ``step`` again at the
same ``t_s`` recomputes that interval from the state at ``t_s`` (kept aside),
with the setpoints of the new call merged over the earlier ones: nothing is
counted twice (this is mosaik's same-time loop). A step at a later time first
commits the previous interval, truncated to the new time if that comes earlier
than ``t + step_s``; time in a gap after an interval passes with zero power.
A setpoint applies only to the interval it was sent for; a plugged EV without a
setpoint for the interval gets ``P = Q = 0`` (the scheduler always sends one;
uncoordinated charging is a scheduler strategy, not a fleet default).

Plugging inside a step
----------------------
An EV is plugged on ``[arrival_s, departure_s)``. If it arrives or departs
inside a step, its setpoint (the power while plugged) is applied only for the
plugged part ``tau`` of the step, and the reported ``p_kw``/``q_kvar`` are the
averages over the whole step, ``P * tau / step_s``; the difference to the
setpoint is reported as clipping. Energy is exact: the grid energy of the step
is ``P * tau``.

Physics guards (applied in this order)
--------------------------------------
1. no reactive power if ``can_reactive`` is false; no discharge (``P < 0``)
   if ``can_discharge`` is false;
2. charger rating, seed 000 eq. (5) and (12d), ``P^2 + Q^2 <= S^2``: *P is
   kept and Q is clipped* to ``sqrt(S^2 - P^2)``, then P is clipped to
   ``[-S, S]`` (active power serves the EV's energy need first);
3. SOC limits, seed 000 eq. (12c): P is reduced so that the SOC lands exactly on
   ``soc_max`` (or on the lower limit) at the end of the plugged time; Q is
   left as clipped in 2.

SOC follows seed 000 eq. (4)/(10): ``soc += (eta [P]+ - [P]- / eta) * tau_h / E``.

Autonomous EVs (seed 001, section III-B)
----------------------------------------
A setpoint ``(p_kw, q_kvar, bus)`` may name a charging bus. An autonomous EV
that is plugged in during the step and told to charge at a bus other than its
current one drives there at the start of its plugged time in the step
(instantaneous: legs are < 350 m at the paper's scale), spending ``E*`` [kWh,
battery side] per leg; its load then appears at that bus. Before it departs it
drives back home (at its departure instant, in the last step it is plugged),
spending ``E*`` again. A move away from home needs ``SOC >= soc_min + 2 E*/E``
(both legs; seed 001 eq. (12g) checks only the outbound leg because its plan
always charges afterwards, which a closed loop cannot promise), otherwise the EV
stays where it is. While away, the lower SOC limit is raised by ``E*/E`` so that
discharge never eats the return trip. Moving back home (or between two away
buses) costs one leg. Non-autonomous EVs ignore the bus.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import simpy

from simulators.ev_fleet.population import EVSpec
from simulators.setpoints import is_columnar

__all__ = ["FleetModel", "IntervalResult"]

_NO_BUS = -1


@dataclass(frozen=True)
class IntervalResult:
    """Outcome of one interval for all EVs (arrays of shape (V,)).

    Attributes
    ----------
    soc_end : numpy.ndarray
        SOC at the end of the interval [-].
    col_charge : numpy.ndarray
        Column (in ``FleetModel.buses``) of the bus where the EV is during the
        interval (after an autonomous move at its start).
    col_end : numpy.ndarray
        Column of the bus at the end of the interval (home after a return leg).
    p_kw, q_kvar : numpy.ndarray
        Applied power averaged over the interval [kW], [kvar], load convention.
    p_clipped_kw, q_clipped_kvar : numpy.ndarray
        Setpoint minus applied average [kW], [kvar].
    e_in_kwh, e_out_kwh : numpy.ndarray
        Grid energy drawn while charging / fed back while discharging [kWh].
    e_drive_kwh : numpy.ndarray
        Battery energy spent on autonomous drives [kWh].
    """

    soc_end: np.ndarray
    col_charge: np.ndarray
    col_end: np.ndarray
    p_kw: np.ndarray
    q_kvar: np.ndarray
    p_clipped_kw: np.ndarray
    q_clipped_kvar: np.ndarray
    e_in_kwh: np.ndarray
    e_out_kwh: np.ndarray
    e_drive_kwh: np.ndarray


def _finite_real(value: Any) -> bool:
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


class FleetModel:
    """EV fleet: SimPy agents for the stays, numpy arrays for the physics.

    Parameters
    ----------
    specs : Sequence[EVSpec]
        The EVs; ids must be unique.
    step_s : float
        Nominal step length [s], > 0.
    e_star_kwh : float, optional
        Energy an autonomous EV spends on one drive leg, ``E*`` [kWh, battery
        side] (seed 001, section III-B: 345 m x 0.160 kWh/km = 0.0552 kWh).
    charging_buses : Sequence[int], optional
        pandapower bus indices where EVs may charge (autonomous EVs choose
        among these). Default: the home buses. Home buses are always included.

    Raises
    ------
    ValueError
        On duplicate ids or invalid parameters.
    """

    def __init__(
        self,
        specs: Sequence[EVSpec],
        step_s: float,
        e_star_kwh: float = 0.0,
        *,
        charging_buses: Sequence[int] | None = None,
    ) -> None:
        if not (_finite_real(step_s) and step_s > 0):
            raise ValueError(f"step_s must be a finite number > 0 s, got {step_s!r}")
        if not (_finite_real(e_star_kwh) and e_star_kwh >= 0):
            raise ValueError(
                f"e_star_kwh must be a finite number >= 0 kWh, got {e_star_kwh!r}"
            )
        specs = list(specs)
        for s in specs:
            if not isinstance(s, EVSpec):
                raise ValueError(f"specs must be EVSpec objects, got {type(s).__name__}")
        ids = [s.ev_id for s in specs]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise ValueError(f"duplicate EV ids: {dup}")
        self.step_s = float(step_s)
        self.e_star_kwh = float(e_star_kwh)
        self.specs: tuple[EVSpec, ...] = tuple(specs)
        self.ev_ids: tuple[str, ...] = tuple(ids)
        self._index = {ev_id: i for i, ev_id in enumerate(ids)}
        self._last_setpoint_ids: list[str] | None = None  # index cache of column-wise setpoints
        self._arrived_ids: list[str] | None = None  # ids of the arrived EVs (fleet_state)
        self._last_setpoint_idx = np.zeros(0, dtype=np.int64)

        buses = {s.home_bus for s in specs}
        if charging_buses is not None:
            for b in charging_buses:
                if not (isinstance(b, numbers.Integral) and not isinstance(b, bool)):
                    raise ValueError(f"charging_buses must be ints, got {b!r}")
                buses.add(int(b))
        self.buses = np.array(sorted(buses), dtype=np.int64)
        self._bus_col = {int(b): j for j, b in enumerate(self.buses)}

        def arr(name: str, dtype: Any = float) -> np.ndarray:
            return np.array([getattr(s, name) for s in specs], dtype=dtype)

        n = len(specs)
        self._home_col = np.array(
            [self._bus_col[s.home_bus] for s in specs], dtype=np.int64
        )
        self._cap = arr("capacity_kwh")
        self._s_max = arr("charger_kva")
        self._eta = arr("efficiency")
        self._can_dis = arr("can_discharge", bool)
        self._can_q = arr("can_reactive", bool)
        self._auto = arr("autonomous", bool)
        self._arr_s = arr("arrival_s")
        self._dep_s = arr("departure_s")
        self._soc_target = arr("soc_target")
        self._soc_min = arr("soc_min")
        self._soc_max = arr("soc_max")
        self._e_frac = self.e_star_kwh / self._cap  # drive leg as SOC [-]

        # instants recorded by the SimPy processes (inf: not happened yet)
        self._plug_in_s = np.full(n, np.inf)
        self._unplug_s = np.full(n, np.inf)
        # SOC an EV comes home with at a later stay (EVSpec.next_stays), until the
        # interval that starts from it is committed (NaN: none)
        self._pending_soc = np.full(n, np.nan)
        self._next_stays = [s.next_stays for s in specs]
        self._first_in_s = np.full(n, np.inf)  # first plug-in (arrived from then on)
        for s in specs:  # one stay's end and the next start never share a step
            prev = s.departure_s
            for arrival_s, departure_s, _ in s.next_stays:
                if arrival_s - prev < self.step_s:
                    raise ValueError(f"EV {s.ev_id}: a later stay arrives at {arrival_s} s, less than one step "
                                     f"({self.step_s} s) after the departure at {prev} s")
                prev = departure_s
        self._env = simpy.Environment()
        for i in range(n):
            self._env.process(self._ev_process(i))

        # state at the start of the current interval
        self._t: float | None = None
        self._soc_start = arr("soc_initial")
        self._col_start = self._home_col.copy()
        # setpoints of the current interval
        self._sp_p = np.zeros(n)
        self._sp_q = np.zeros(n)
        self._sp_bus = np.full(n, _NO_BUS, dtype=np.int64)
        # committed cumulative energies (before the current interval)
        self._e_in_tot = np.zeros(n)
        self._e_out_tot = np.zeros(n)
        self._e_drive_tot = np.zeros(n)
        self._res = self._interval(0.0, 0.0)
        static = ("home_bus", "capacity_kwh", "charger_kva", "efficiency", "can_discharge",
                  "can_reactive", "soc_target", "soc_min", "soc_max", "autonomous")
        self._static_state = {name: np.array([getattr(s, name) for s in specs]) for name in static}

    # ------------------------------------------------------------------ SimPy
    def _ev_process(self, i: int):
        """Life cycle of EV ``i``: arrive and plug in, charge, unplug and leave;
        again for each later stay (``EVSpec.next_stays``), coming home with that
        stay's SOC."""
        env = self._env
        yield env.timeout(self._arr_s[i])
        self._plug_in_s[i] = env.now
        self._first_in_s[i] = env.now
        yield env.timeout(self._dep_s[i] - env.now)
        self._unplug_s[i] = env.now
        for arrival_s, departure_s, soc in self._next_stays[i]:
            yield env.timeout(arrival_s - env.now)
            self._plug_in_s[i] = env.now
            self._unplug_s[i] = np.inf
            self._arr_s[i] = arrival_s
            self._dep_s[i] = departure_s
            self._pending_soc[i] = soc
            yield env.timeout(departure_s - env.now)
            self._unplug_s[i] = env.now

    def _advance_env(self, until_s: float) -> None:
        """Process every SimPy event at or before ``until_s`` [s]."""
        env = self._env
        while env.peek() <= until_s:
            env.step()

    # ------------------------------------------------------------- stepping
    def step(
        self,
        t_s: float,
        setpoints: Mapping[str, Sequence[Any]] | None = None,
    ) -> None:
        """Advance to ``t_s`` and apply ``setpoints`` on ``[t_s, t_s + step_s)``.

        Parameters
        ----------
        t_s : float
            Start of the interval [s after the simulation start]; not before the
            previous call's ``t_s``. A repeated call at the same time recomputes
            the interval (same-time loop), merging the new setpoints over the
            earlier ones of that interval.
        setpoints : Mapping[str, Sequence], optional
            ev_id -> ``(p_kw, q_kvar)`` or ``(p_kw, q_kvar, bus)``: requested
            power while plugged [kW], [kvar] (load convention) and, for
            autonomous EVs, the pandapower bus to charge at (``None``: stay);
            or the same column-wise (:func:`simulators.setpoints.is_columnar`).

        Raises
        ------
        ValueError
            If time goes backwards, or a setpoint names an unknown EV or bus, or
            is not finite (the message names the EV and the attribute).
        """
        if not (_finite_real(t_s) and t_s >= 0):
            raise ValueError(f"t_s must be a finite number >= 0 s, got {t_s!r}")
        t_s = float(t_s)
        idx, p, q, bus = self._parse_setpoints(setpoints)
        if self._t is not None and t_s < self._t:
            raise ValueError(
                f"time goes backwards: step at {t_s} s after a step at {self._t} s"
            )
        if self._t is None or t_s > self._t:
            if self._t is not None:
                self._commit(t_s)
            self._t = t_s
            self._sp_p[:] = 0.0
            self._sp_q[:] = 0.0
            self._sp_bus[:] = _NO_BUS
        self._sp_p[idx] = p
        self._sp_q[idx] = q
        self._sp_bus[idx] = bus
        self._advance_env(t_s + self.step_s)
        self._res = self._interval(t_s, self.step_s)

    def _commit(self, t_new: float) -> None:
        """Make the current interval final up to ``t_new`` and move on."""
        if self._t is None:  # nothing to commit before the first step
            return
        duration = min(self.step_s, t_new - self._t)
        self._advance_env(self._t + duration)
        res = self._interval(self._t, duration)
        self._take(res)
        gap_start = self._t + duration
        if t_new > gap_start:  # time without any step: zero power
            self._sp_p[:] = 0.0
            self._sp_q[:] = 0.0
            self._sp_bus[:] = _NO_BUS
            self._t = gap_start
            self._advance_env(t_new)
            self._take(self._interval(gap_start, t_new - gap_start))

    def _take(self, res: IntervalResult) -> None:
        self._pending_soc[:] = np.nan  # res.soc_end started from it
        self._soc_start = res.soc_end
        self._col_start = res.col_end
        self._e_in_tot = self._e_in_tot + res.e_in_kwh
        self._e_out_tot = self._e_out_tot + res.e_out_kwh
        self._e_drive_tot = self._e_drive_tot + res.e_drive_kwh

    def _parse_setpoints(
        self, setpoints: Mapping[str, Sequence[Any]] | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if not setpoints:
            empty = np.zeros(0)
            return empty.astype(np.int64), empty, empty, empty.astype(np.int64)
        if not isinstance(setpoints, Mapping):
            raise ValueError(
                f"setpoints must be a dict ev_id -> [p_kw, q_kvar(, bus)], got "
                f"{type(setpoints).__name__}"
            )
        if is_columnar(setpoints):
            return self._parse_columns(setpoints)
        try:
            idx = np.fromiter(
                (self._index[k] for k in setpoints), dtype=np.int64, count=len(setpoints)
            )
        except KeyError as err:
            raise ValueError(f"setpoint for unknown EV {err.args[0]!r}") from None
        values = list(setpoints.values())
        try:
            mat = np.array(values, dtype=float)
        except (ValueError, TypeError):
            mat = None
        if mat is not None and mat.ndim == 2 and mat.shape[1] in (2, 3):
            p, q = mat[:, 0], mat[:, 1]
            if not (np.isfinite(p).all() and np.isfinite(q).all()):
                self._raise_first_bad(setpoints)
            if mat.shape[1] == 3:
                bus_f = mat[:, 2]
                bus = self._bus_columns(list(setpoints), bus_f, idx)
            else:
                bus = np.full(idx.size, _NO_BUS, dtype=np.int64)
            return idx, p, q, bus
        # slow path: mixed lengths or None buses
        n = len(values)
        p = np.empty(n)
        q = np.empty(n)
        bus = np.full(n, _NO_BUS, dtype=np.int64)
        for j, (ev_id, val) in enumerate(setpoints.items()):
            pj, qj, bj = self._parse_one(ev_id, val)
            p[j], q[j] = pj, qj
            if bj is not None and self._auto[idx[j]]:
                bus[j] = self._col_of(ev_id, bj)
        return idx, p, q, bus

    def _parse_columns(
        self, setpoints: Mapping[str, Sequence[Any]]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Column-wise setpoints (see :func:`simulators.setpoints.is_columnar`); same checks as per EV."""
        raw_ids = setpoints["ev_id"]
        # The plugged set rarely changes between steps: compare before converting.
        if not (isinstance(raw_ids, list) and raw_ids == self._last_setpoint_ids):
            ids = [str(e) for e in raw_ids]
            if ids != self._last_setpoint_ids:
                try:
                    self._last_setpoint_idx = np.array([self._index[e] for e in ids], dtype=np.int64)
                except KeyError as err:
                    raise ValueError(f"setpoint for unknown EV {err.args[0]!r}") from None
                if len(set(ids)) != len(ids):
                    raise ValueError("column-wise setpoints list an EV more than once")
                self._last_setpoint_ids = ids
        ids = self._last_setpoint_ids
        idx = self._last_setpoint_idx
        cols = []
        for name in ("p_kw", "q_kvar"):
            raw = setpoints.get(name)
            if raw is None:
                if name == "p_kw":
                    raise ValueError("column-wise setpoints need a 'p_kw' column")
                cols.append(np.zeros(len(ids)))
                continue
            try:
                col = np.asarray(raw, dtype=float)
            except (TypeError, ValueError):
                raise ValueError(f"setpoints column {name!r} is not numeric") from None
            if col.shape != (len(ids),):
                raise ValueError(f"setpoints column {name!r} has {col.size} values for {len(ids)} EVs")
            bad = np.flatnonzero(~np.isfinite(col))
            if bad.size:
                raise ValueError(f"setpoint {name} of {ids[bad[0]]} is not finite: {col[bad[0]]!r}")
            cols.append(col)
        bus = np.full(len(ids), _NO_BUS, dtype=np.int64)
        if setpoints.get("bus") is not None:
            buses = list(setpoints["bus"])
            if len(buses) != len(ids):
                raise ValueError(f"setpoints column 'bus' has {len(buses)} values for {len(ids)} EVs")
            for j in np.flatnonzero(self._auto[idx]).tolist():
                if buses[j] is not None:
                    bus[j] = self._col_of(ids[j], buses[j])
        return idx, cols[0], cols[1], bus

    def _parse_one(self, ev_id: str, val: Any) -> tuple[float, float, Any]:
        if isinstance(val, (str, bytes, Mapping)) or not hasattr(val, "__len__"):
            raise ValueError(
                f"setpoint of {ev_id} must be [p_kw, q_kvar] or "
                f"[p_kw, q_kvar, bus], got {val!r}"
            )
        if len(val) not in (2, 3):
            raise ValueError(
                f"setpoint of {ev_id} must be [p_kw, q_kvar] or [p_kw, q_kvar, bus], "
                f"got {len(val)} values"
            )
        for name, v in zip(("p_kw", "q_kvar"), val[:2]):
            if not _finite_real(v):
                raise ValueError(f"setpoint {name} of {ev_id} is not finite: {v!r}")
        b = val[2] if len(val) == 3 else None
        return float(val[0]), float(val[1]), b

    def _raise_first_bad(self, setpoints: Mapping[str, Sequence[Any]]) -> None:
        for ev_id, val in setpoints.items():
            self._parse_one(ev_id, val)

    def _col_of(self, ev_id: str, b: Any) -> int:
        if not (_finite_real(b) and float(b).is_integer()):
            raise ValueError(f"setpoint bus of {ev_id} is not a bus index: {b!r}")
        col = self._bus_col.get(int(b))
        if col is None:
            raise ValueError(
                f"setpoint bus of {ev_id} is {int(b)}, not a charging bus of this "
                f"fleet {self.buses.tolist()}"
            )
        return col

    def _bus_columns(
        self, ids: list[str], bus_f: np.ndarray, idx: np.ndarray
    ) -> np.ndarray:
        bus = np.full(idx.size, _NO_BUS, dtype=np.int64)
        for j in np.flatnonzero(self._auto[idx]):
            bus[j] = self._col_of(ids[j], float(bus_f[j]))
        return bus

    # -------------------------------------------------------------- physics
    def _interval(self, t0: float, duration: float) -> IntervalResult:
        """Vectorised physics of all EVs on ``[t0, t0 + duration)``.

        Uses the SOC and bus at ``t0`` and the current setpoints; does not
        change the model state. Implements seed 000 eq. (4), (5), (12c)-(12d)
        and seed 001 eq. (12g)-(12i) (see the module docstring).
        """
        t1 = t0 + duration
        # an EV unplugged since its last departure keeps its SOC until it comes
        # home for a later stay with that stay's SOC: take the new one already
        soc0 = np.where(np.isnan(self._pending_soc), self._soc_start, self._pending_soc)
        col0 = self._col_start
        home = self._home_col
        e_frac = self._e_frac
        # plugged time in the interval [s]
        tau_s = np.maximum(
            0.0, np.minimum(self._unplug_s, t1) - np.maximum(self._plug_in_s, t0)
        )
        active = tau_s > 0.0
        tau_h = tau_s / 3600.0

        # autonomous move at the start of the plugged time (seed 001, eq. (12g))
        want = (self._sp_bus != _NO_BUS) & active & (self._sp_bus != col0)
        to_away = self._sp_bus != home
        need = self._soc_min + np.where(to_away, 2.0, 1.0) * e_frac
        move = want & (soc0 >= need)
        soc1 = np.where(move, soc0 - e_frac, soc0)
        col_charge = np.where(move, self._sp_bus, col0)
        away = col_charge != home
        e_drive = np.where(move, self.e_star_kwh, 0.0)

        # setpoint guards: capabilities, then charger rating (keep P, clip Q)
        p = np.where(self._can_dis, self._sp_p, np.maximum(self._sp_p, 0.0))
        q = np.where(self._can_q, self._sp_q, 0.0)
        s = self._s_max
        q_lim = np.sqrt(np.maximum(s * s - p * p, 0.0))
        q = np.clip(q, -q_lim, q_lim)
        p = np.clip(p, -s, s)

        # SOC limits (seed 000, eq. (12c)); lower limit keeps the return trip
        floor = self._soc_min + np.where(away, e_frac, 0.0)
        floor = np.minimum(floor, soc1)
        ceil = np.maximum(self._soc_max, soc1)
        cap = self._cap
        eta = self._eta
        with np.errstate(divide="ignore", invalid="ignore"):
            p_up = np.where(active, (ceil - soc1) * cap / (eta * tau_h), 0.0)
            p_dn = np.where(active, (soc1 - floor) * cap * eta / tau_h, 0.0)
        hit_up = active & (p > 0.0) & (p >= p_up)
        hit_dn = active & (p < 0.0) & (-p >= p_dn)
        p = np.where(hit_up, p_up, np.where(hit_dn, -p_dn, p))
        p = np.where(active, p, 0.0)
        q = np.where(active, q, 0.0)

        # SOC dynamics, seed 000 eq. (4)/(10)
        p_pos = np.maximum(p, 0.0)
        p_neg = np.maximum(-p, 0.0)
        soc2 = soc1 + (eta * p_pos - p_neg / eta) * tau_h / cap
        soc2 = np.where(hit_up, ceil, np.where(hit_dn, floor, soc2))
        soc2 = np.minimum(np.maximum(soc2, floor), ceil)

        # return leg at the departure instant (seed 001, eq. (12i))
        back = away & (self._unplug_s > t0) & (self._unplug_s <= t1)
        soc_end = np.where(back, soc2 - e_frac, soc2)
        col_end = np.where(back, home, col_charge)
        e_drive = e_drive + np.where(back, self.e_star_kwh, 0.0)

        frac = tau_s / duration if duration > 0 else np.zeros_like(tau_s)
        p_avg = p * frac
        q_avg = q * frac
        return IntervalResult(
            soc_end=soc_end,
            col_charge=col_charge,
            col_end=col_end,
            p_kw=p_avg,
            q_kvar=q_avg,
            p_clipped_kw=self._sp_p - p_avg,
            q_clipped_kvar=self._sp_q - q_avg,
            e_in_kwh=p_pos * tau_h,
            e_out_kwh=p_neg * tau_h,
            e_drive_kwh=e_drive,
        )

    # -------------------------------------------------------------- outputs
    @property
    def time_s(self) -> float | None:
        """Start of the current interval [s] (None before the first step)."""
        return self._t

    @property
    def n_ev(self) -> int:
        """Number of EVs."""
        return len(self.ev_ids)

    def index(self, ev_id: str) -> int:
        """Row of ``ev_id`` in the per-EV arrays."""
        return self._index[ev_id]

    @property
    def plugged(self) -> np.ndarray:
        """Whether each EV is plugged in at the current time ``t`` (bool (V,))."""
        t = -np.inf if self._t is None else self._t
        return (self._plug_in_s <= t) & (t < self._unplug_s)

    @property
    def arrived(self) -> np.ndarray:
        """Whether each EV has arrived by the current time (bool (V,))."""
        t = -np.inf if self._t is None else self._t
        return self._first_in_s <= t

    @property
    def soc(self) -> np.ndarray:
        """SOC at the current time ``t`` [-] (V,)."""
        return self._soc_start.copy()

    @property
    def soc_end(self) -> np.ndarray:
        """SOC at ``t + step_s`` given the current setpoints [-] (V,)."""
        return self._res.soc_end.copy()

    @property
    def bus(self) -> np.ndarray:
        """pandapower bus where each EV is during ``[t, t + step_s)`` (V,)."""
        return self.buses[self._res.col_charge]

    @property
    def home_bus(self) -> np.ndarray:
        """Home bus of each EV (V,)."""
        return self.buses[self._home_col]

    @property
    def p_kw(self) -> np.ndarray:
        """Applied active power averaged over the interval [kW] (V,)."""
        return self._res.p_kw.copy()

    @property
    def q_kvar(self) -> np.ndarray:
        """Applied reactive power averaged over the interval [kvar] (V,)."""
        return self._res.q_kvar.copy()

    @property
    def p_clipped_kw(self) -> np.ndarray:
        """Setpoint minus applied average active power [kW] (V,)."""
        return self._res.p_clipped_kw.copy()

    @property
    def q_clipped_kvar(self) -> np.ndarray:
        """Setpoint minus applied average reactive power [kvar] (V,)."""
        return self._res.q_clipped_kvar.copy()

    @property
    def e_needed_kwh(self) -> np.ndarray:
        """Battery energy still needed to reach the target SOC at ``t`` [kWh].

        ``max(soc_target - soc, 0) * E``; the return leg ``E*`` of an
        autonomous EV away from home is not included.
        """
        return np.maximum(self._soc_target - self._soc_start, 0.0) * self._cap

    @property
    def e_grid_in_kwh(self) -> np.ndarray:
        """Grid energy drawn while charging up to ``t + step_s`` [kWh] (V,)."""
        return self._e_in_tot + self._res.e_in_kwh

    @property
    def e_grid_out_kwh(self) -> np.ndarray:
        """Grid energy fed back while discharging up to ``t + step_s`` [kWh]."""
        return self._e_out_tot + self._res.e_out_kwh

    @property
    def e_grid_kwh(self) -> np.ndarray:
        """Net grid energy drawn up to ``t + step_s`` [kWh] (V,)."""
        return self.e_grid_in_kwh - self.e_grid_out_kwh

    @property
    def e_drive_kwh(self) -> np.ndarray:
        """Battery energy spent on autonomous drives up to ``t + step_s`` [kWh]."""
        return self._e_drive_tot + self._res.e_drive_kwh

    def bus_power(self) -> tuple[np.ndarray, np.ndarray]:
        """Sum of the EVs' average P [kW] and Q [kvar] per bus in :attr:`buses`.

        Returns
        -------
        p_kw, q_kvar : numpy.ndarray
            Shape (number of buses,), load convention (seed 000, eq. (6)-(7)).
        """
        nb = self.buses.size
        col = self._res.col_charge
        return (
            np.bincount(col, weights=self._res.p_kw, minlength=nb),
            np.bincount(col, weights=self._res.q_kvar, minlength=nb),
        )

    def fleet_state(self, as_lists: bool = True) -> dict[str, Any]:
        """What an operator knows at ``t``: the EVs that have arrived, column-wise.

        EVs that have not arrived yet are absent; departed EVs stay listed with
        ``plugged = False``. ``bus`` is the bus at ``t`` (before a move ordered
        for the current interval). Read it with
        :class:`simulators.scheduler.fleet_view.FleetView`.

        Parameters
        ----------
        as_lists : bool, default True
            Columns as lists of built-in values (JSON-able); False gives numpy
            arrays (for a consumer in the same process).

        Returns
        -------
        dict
            ``"ev_id"`` -> ids, and one column each of soc, plugged, bus, home_bus,
            capacity_kwh, charger_kva, efficiency, can_discharge, can_reactive,
            departure_s, soc_target, soc_min, soc_max, autonomous.
        """
        rows = np.flatnonzero(self.arrived)
        columns = {
            "soc": self._soc_start[rows],
            "plugged": self.plugged[rows],
            "bus": self.buses[self._col_start[rows]],
            "departure_s": self._dep_s[rows],  # current stay; the next one from the step it arrives in
            **{name: col[rows] for name, col in self._static_state.items()},
        }
        if self._arrived_ids is None or len(self._arrived_ids) != rows.size:
            # arrived EVs stay arrived: the same count means the same EVs
            ids = self.ev_ids
            self._arrived_ids = [ids[i] for i in rows.tolist()]
        out: dict[str, Any] = {"ev_id": list(self._arrived_ids)}
        for name, col in columns.items():
            out[name] = col.tolist() if as_lists else col
        return out
