"""EV specifications and the sampling of EV populations.

An :class:`EVSpec` is everything the fleet model needs to know about one
vehicle; :func:`sample_fleet` draws a population of them from the
distributions of seed 000, section V-B (arrival, departure and initial SOC
from the Test-an-EV data), with an explicitly seeded
:class:`numpy.random.Generator` so that the same seed gives the same fleet bit
for bit.

Reading of the arrival distribution
-----------------------------------
Seed 000 states a "generalized extreme value inverse (shape -0.06, scale 0.85,
location 17.3)" distribution for the arrival time [h]. We read the shape in the
usual (Jenkinson, MATLAB ``gevinv``/``gevrnd``) convention, ``xi = -0.06``,
i.e. a slightly bounded (Weibull-type) upper tail; "inverse" we read as
sampling by the inverse CDF, which is what :func:`sample_fleet` does. scipy's
:data:`scipy.stats.genextreme` uses ``c = -xi``, hence ``c = +0.06`` here.
Sampled statistics of this reading: mean 17.74 h, median 17.61 h, 1 % and
99 % quantiles 15.94 h and 20.72 h, upper support bound 31.47 h (07:28 on the
next day, so no arrival after the morning departures). The other reading
(``c = -0.06``) gives a mean of 17.84 h and an unbounded upper tail (arrivals
possible after the departures). Both are "around 17 h"; the bounded one is the
physically consistent one and the one that matches the printed convention.

Departure times follow a Weibull distribution (scale 7.67 h, shape 21.83) in
hours after midnight of the day after the start date (mean 7.48 h, 1 % and 99 %
quantiles 6.21 h and 8.23 h); initial SOCs a normal distribution with mean 0.49
and standard deviation 0.04, clipped to [0, 1].
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

__all__ = ["EVSpec", "FleetDistributions", "sample_fleet"]

_MAX_RESAMPLE_ROUNDS = 100


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@dataclass(frozen=True)
class EVSpec:
    """Static description of one EV and its stay in the simulation.

    Parameters
    ----------
    ev_id : str
        Entity id, e.g. ``"EV-17"``.
    home_bus : int
        pandapower bus index of the parking (home) location.
    capacity_kwh : float
        Battery energy capacity ``E_v`` [kWh], > 0 (seed 000, eq. (4)).
    charger_kva : float
        Charger rating ``S_v`` [kVA], > 0 (seed 000, eq. (5)).
    efficiency : float
        Charging and discharging efficiency ``eta_v`` [-], in (0, 1]
        (seed 000, eq. (4)).
    can_discharge : bool
        Whether the charger can discharge the battery (V2G).
    can_reactive : bool
        Whether the charger can exchange reactive power (4-quadrant).
    arrival_s : float
        Plug-in time [s] after the simulation start, >= 0.
    departure_s : float
        Departure (unplug) time [s] after the simulation start, > arrival_s.
    soc_initial : float
        SOC at arrival [-], in [soc_min, soc_max].
    soc_target : float
        Target SOC at departure [-], in [0, 1].
    soc_min, soc_max : float
        SOC operating limits [-], 0 <= soc_min <= soc_max <= 1
        (seed 000, eq. (12c)).
    autonomous : bool
        Whether the EV can drive itself to another charging bus
        (seed 001, section III-B).

    Raises
    ------
    ValueError
        Listing every invalid field with its allowed range.
    """

    ev_id: str
    home_bus: int
    capacity_kwh: float
    charger_kva: float
    efficiency: float
    can_discharge: bool
    can_reactive: bool
    arrival_s: float
    departure_s: float
    soc_initial: float
    soc_target: float
    soc_min: float = 0.0
    soc_max: float = 1.0
    autonomous: bool = False
    # later stays of the same EV (fleet.daily_stays): (arrival_s, departure_s,
    # soc_initial) each, after the previous departure; the EV comes home with
    # soc_initial (its drive is not modelled)
    next_stays: tuple = ()

    def __post_init__(self) -> None:
        problems: list[str] = []
        problems += self._stay_problems()
        if not isinstance(self.ev_id, str) or not self.ev_id:
            problems.append(f"ev_id must be a non-empty str, got {self.ev_id!r}")
        if not _is_int(self.home_bus) or self.home_bus < 0:
            problems.append(
                f"home_bus must be a pandapower bus index (int >= 0), got "
                f"{self.home_bus!r}"
            )
        for name in ("can_discharge", "can_reactive", "autonomous"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                problems.append(f"{name} must be a bool, got {getattr(self, name)!r}")
        real_fields = (
            "capacity_kwh",
            "charger_kva",
            "efficiency",
            "arrival_s",
            "departure_s",
            "soc_initial",
            "soc_target",
            "soc_min",
            "soc_max",
        )
        finite = {}
        for name in real_fields:
            value = getattr(self, name)
            ok = _is_real(value) and math.isfinite(value)
            finite[name] = ok
            if not ok:
                problems.append(f"{name} must be a finite real number, got {value!r}")

        def check(names: tuple[str, ...], cond: bool, message: str) -> None:
            if all(finite[n] for n in names) and not cond:
                problems.append(message)

        check(
            ("capacity_kwh",),
            finite["capacity_kwh"] and self.capacity_kwh > 0,
            f"capacity_kwh must be > 0 kWh, got {self.capacity_kwh!r}",
        )
        check(
            ("charger_kva",),
            finite["charger_kva"] and self.charger_kva > 0,
            f"charger_kva must be > 0 kVA, got {self.charger_kva!r}",
        )
        check(
            ("efficiency",),
            finite["efficiency"] and 0 < self.efficiency <= 1,
            f"efficiency must be in (0, 1], got {self.efficiency!r}",
        )
        check(
            ("arrival_s",),
            finite["arrival_s"] and self.arrival_s >= 0,
            f"arrival_s must be >= 0 s, got {self.arrival_s!r}",
        )
        check(
            ("arrival_s", "departure_s"),
            finite["arrival_s"]
            and finite["departure_s"]
            and self.departure_s > self.arrival_s,
            f"departure_s must be > arrival_s ({self.arrival_s!r} s), got "
            f"{self.departure_s!r}",
        )
        for name in ("soc_min", "soc_max", "soc_target"):
            check(
                (name,),
                finite[name] and 0 <= getattr(self, name) <= 1,
                f"{name} must be in [0, 1], got {getattr(self, name)!r}",
            )
        check(
            ("soc_min", "soc_max"),
            finite["soc_min"] and finite["soc_max"] and self.soc_min <= self.soc_max,
            f"soc_min ({self.soc_min!r}) must be <= soc_max ({self.soc_max!r})",
        )
        check(
            ("soc_initial", "soc_min", "soc_max"),
            all(finite[n] for n in ("soc_initial", "soc_min", "soc_max"))
            and self.soc_min <= self.soc_initial <= self.soc_max,
            f"soc_initial must be in [soc_min, soc_max] = [{self.soc_min!r}, "
            f"{self.soc_max!r}], got {self.soc_initial!r}",
        )
        if problems:
            name = self.ev_id if isinstance(self.ev_id, str) else "?"
            raise ValueError(f"invalid EVSpec {name}: " + "; ".join(problems))
        object.__setattr__(self, "next_stays", tuple(tuple(float(v) for v in st) for st in self.next_stays))
        # normalise numpy scalars to built-in types (JSON-able, hashable)
        object.__setattr__(self, "home_bus", int(self.home_bus))
        for name in real_fields:
            object.__setattr__(self, name, float(getattr(self, name)))
        for name in ("can_discharge", "can_reactive", "autonomous"):
            object.__setattr__(self, name, bool(getattr(self, name)))

    def _stay_problems(self) -> list[str]:
        """Problems of ``next_stays``: each ``(arrival_s, departure_s, soc_initial)``
        finite, ordered after the previous stay's departure, SOC in [soc_min, soc_max]."""
        try:
            stays = [tuple(st) for st in self.next_stays]
        except TypeError:
            return [f"next_stays must be a list of (arrival_s, departure_s, soc_initial), got {self.next_stays!r}"]
        prev = self.departure_s if _is_real(self.departure_s) else -math.inf
        for j, st in enumerate(stays):
            if len(st) != 3 or not all(_is_real(v) and math.isfinite(v) for v in st):
                return [f"next_stays[{j}] must be 3 finite numbers (arrival_s, departure_s, soc_initial), got {st!r}"]
            a, d, soc = st
            if not prev < a < d:
                return [f"next_stays[{j}]: need previous departure ({prev!r} s) < arrival_s ({a!r} s) "
                        f"< departure_s ({d!r} s)"]
            if _is_real(self.soc_min) and _is_real(self.soc_max) and not self.soc_min <= soc <= self.soc_max:
                return [f"next_stays[{j}]: soc_initial must be in [soc_min, soc_max] = "
                        f"[{self.soc_min!r}, {self.soc_max!r}], got {soc!r}"]
            prev = d
        return []

    def stays(self) -> list[tuple[float, float, float]]:
        """Every stay of the EV: ``(arrival_s, departure_s, soc_initial)``, first one first."""
        return [(self.arrival_s, self.departure_s, self.soc_initial), *self.next_stays]

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-able dict of the fields (input of :meth:`from_dict`)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EVSpec:
        """Build a spec from a plain dict; unknown or missing keys raise.

        Raises
        ------
        ValueError
            On unknown or missing keys, or invalid values.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"an EV spec must be a dict, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        required = {
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING
        }
        unknown = sorted(set(data) - names)
        missing = sorted(required - set(data))
        if unknown or missing:
            raise ValueError(
                f"EV spec {data.get('ev_id', '?')!r}: unknown keys {unknown}, "
                f"missing keys {missing}"
            )
        return cls(**dict(data))


@dataclass(frozen=True)
class FleetDistributions:
    """Distributions and constants of a sampled EV population.

    Defaults are those of seed 000, section V-B (battery 16 kWh from seed 001,
    section IV-b).

    Parameters
    ----------
    arrival_gev_xi : float
        Shape ``xi`` of the generalized extreme value arrival distribution in
        the usual (Jenkinson/MATLAB) convention [-]; scipy's ``c = -xi``. See
        the module docstring for this reading.
    arrival_gev_scale_h : float
        Scale of the arrival distribution [h].
    arrival_gev_loc_h : float
        Location of the arrival distribution [h after midnight of the start
        date].
    arrival_fixed_h : float or None
        If given, every EV arrives at this time [h after midnight of the start
        date] instead (seed 001: 16.0).
    departure_weibull_scale_h : float
        Scale of the Weibull departure distribution [h after midnight of the day
        after the start date].
    departure_weibull_shape : float
        Shape of the Weibull departure distribution [-].
    soc_initial_mean, soc_initial_std : float
        Mean and standard deviation of the normal initial SOC [-]; samples are
        clipped to [soc_min, soc_max].
    capacity_kwh, charger_kva, efficiency : float
        Battery capacity [kWh], charger rating [kVA], efficiency [-].
    soc_target, soc_min, soc_max : float
        Target SOC and SOC limits [-].
    can_discharge, can_reactive, autonomous : bool
        Capabilities given to every EV.
    """

    arrival_gev_xi: float = -0.06
    arrival_gev_scale_h: float = 0.85
    arrival_gev_loc_h: float = 17.3
    arrival_fixed_h: float | None = None
    departure_weibull_scale_h: float = 7.67
    departure_weibull_shape: float = 21.83
    soc_initial_mean: float = 0.49
    soc_initial_std: float = 0.04
    capacity_kwh: float = 16.0
    charger_kva: float = 3.6
    efficiency: float = 0.9
    soc_target: float = 1.0
    soc_min: float = 0.0
    soc_max: float = 1.0
    can_discharge: bool = False
    can_reactive: bool = False
    autonomous: bool = False

    def __post_init__(self) -> None:
        problems: list[str] = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("can_discharge", "can_reactive", "autonomous"):
                if not isinstance(value, bool):
                    problems.append(f"{f.name} must be a bool, got {value!r}")
                continue
            if f.name == "arrival_fixed_h" and value is None:
                continue
            if not (_is_real(value) and math.isfinite(value)):
                problems.append(f"{f.name} must be a finite real number, got {value!r}")
        if not problems:
            positive = (
                "arrival_gev_scale_h",
                "departure_weibull_scale_h",
                "departure_weibull_shape",
                "capacity_kwh",
                "charger_kva",
            )
            for name in positive:
                if getattr(self, name) <= 0:
                    problems.append(f"{name} must be > 0, got {getattr(self, name)!r}")
            if self.soc_initial_std < 0:
                problems.append(
                    f"soc_initial_std must be >= 0, got {self.soc_initial_std!r}"
                )
            if not 0 < self.efficiency <= 1:
                problems.append(f"efficiency must be in (0, 1], got {self.efficiency!r}")
            if not 0 <= self.soc_min <= self.soc_max <= 1:
                problems.append(
                    "soc_min and soc_max must satisfy 0 <= soc_min <= soc_max <= 1, "
                    f"got {self.soc_min!r}, {self.soc_max!r}"
                )
            if not 0 <= self.soc_target <= 1:
                problems.append(f"soc_target must be in [0, 1], got {self.soc_target!r}")
            if self.arrival_fixed_h is not None and self.arrival_fixed_h < 0:
                problems.append(
                    f"arrival_fixed_h must be >= 0 h, got {self.arrival_fixed_h!r}"
                )
        if problems:
            raise ValueError("invalid FleetDistributions: " + "; ".join(problems))

    def arrival_distribution(self) -> Any:
        """Frozen scipy GEV distribution of the arrival time [h] (``c = -xi``)."""
        return stats.genextreme(
            -self.arrival_gev_xi, loc=self.arrival_gev_loc_h, scale=self.arrival_gev_scale_h
        )

    def departure_distribution(self) -> Any:
        """Frozen scipy Weibull distribution of the departure time [h after
        midnight of the next day]."""
        return stats.weibull_min(
            self.departure_weibull_shape, scale=self.departure_weibull_scale_h
        )


def sample_fleet(
    counts_per_bus: Mapping[int, int],
    dist: FleetDistributions,
    start: dt.datetime,
    horizon_s: float,
    rng: np.random.Generator,
    *,
    daily: bool = False,
) -> list[EVSpec]:
    """Sample an EV population (seed 000, section V-B).

    EVs are numbered ``EV-0`` .. ``EV-(N-1)`` in ascending bus index and, within
    a bus, in draw order, whatever the order of ``counts_per_bus``. Arrival
    times are drawn by inverse-CDF sampling of the GEV distribution (or fixed),
    departure times from the Weibull distribution, initial SOCs from the normal
    distribution clipped to [soc_min, soc_max]; all from ``rng`` only, so the
    same seed gives the same fleet bit for bit.

    Times are converted to seconds after ``start``: arrival hours count from
    midnight of ``start``'s date, departure hours from midnight of the next
    day (by elapsed time, ignoring daylight-saving shifts).

    Edges of the horizon ``[0, horizon_s]``:

    - an arrival before the start is moved to the start (the EV is already
      plugged in at ``t = 0`` with its sampled initial SOC);
    - a departure after the end is moved to the end (the EV stays plugged until
      the simulation ends);
    - an EV left without a stay (arrival at or after the end, or departure not
      after arrival) has its arrival and departure drawn again (rejection
      sampling: the population is conditioned on a non-empty stay inside the
      horizon; with seed 000's defaults and a 16:00-08:00 horizon this never
      happens). After 100 rounds a ValueError says the horizon is too short.

    Parameters
    ----------
    counts_per_bus : Mapping[int, int]
        Number of EVs per home bus (pandapower bus index), counts >= 0.
    dist : FleetDistributions
        Distributions and constants.
    start : datetime.datetime
        Wall-clock time of the simulation start.
    horizon_s : float
        Simulation length [s], > 0.
    rng : numpy.random.Generator
        Explicitly seeded generator, e.g. ``np.random.default_rng(42)``.
    daily : bool, default False
        Every EV also comes home on every later day of the horizon
        (``EVSpec.next_stays``): day ``d``'s arrival, departure (the morning of
        day ``d + 1``) and arrival SOC are fresh draws from the same
        distributions, shifted by ``d`` days; drawn after the first stays, so
        the first stays are those of ``daily=False`` bit for bit. A stay whose
        arrival is not after the previous departure is drawn again (at most 100
        times, then the EV skips that day); stays arriving at or after the end
        are dropped, a departure after the end is moved to the end.

    Returns
    -------
    list of EVSpec

    Raises
    ------
    ValueError
        On invalid counts, horizon, or when no valid stay can be drawn.
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError(
            f"rng must be a numpy.random.Generator, got {type(rng).__name__}"
        )
    if not isinstance(start, dt.datetime):
        raise ValueError(f"start must be a datetime, got {type(start).__name__}")
    if not (_is_real(horizon_s) and math.isfinite(horizon_s) and horizon_s > 0):
        raise ValueError(f"horizon_s must be a finite number > 0 s, got {horizon_s!r}")
    problems = [
        f"bus {bus!r}: count {n!r}"
        for bus, n in counts_per_bus.items()
        if not (_is_int(bus) and bus >= 0 and _is_int(n) and n >= 0)
    ]
    if problems:
        raise ValueError(
            "counts_per_bus must map bus index (int >= 0) to count (int >= 0): "
            + ", ".join(problems)
        )
    home = np.repeat(
        np.array(sorted(int(b) for b in counts_per_bus), dtype=np.int64),
        [int(counts_per_bus[b]) for b in sorted(counts_per_bus)],
    )
    n = home.size
    midnight = start.replace(hour=0, minute=0, second=0, microsecond=0)
    offset_s = (start - midnight).total_seconds()  # start after midnight [s]
    arr_dist = dist.arrival_distribution()
    dep_dist = dist.departure_distribution()

    def draw_stays(m: int) -> tuple[np.ndarray, np.ndarray]:
        if dist.arrival_fixed_h is None:
            arr_h = arr_dist.ppf(rng.random(m))
        else:
            arr_h = np.full(m, float(dist.arrival_fixed_h))
        dep_h = 24.0 + dep_dist.ppf(rng.random(m))
        arr_s = np.clip(arr_h * 3600.0 - offset_s, 0.0, float(horizon_s))
        dep_s = np.minimum(dep_h * 3600.0 - offset_s, float(horizon_s))
        return arr_s, dep_s

    arrival_s, departure_s = draw_stays(n)
    soc0 = np.clip(
        rng.normal(dist.soc_initial_mean, dist.soc_initial_std, size=n),
        dist.soc_min,
        dist.soc_max,
    )
    bad = np.flatnonzero(~(departure_s > arrival_s))
    rounds = 0
    while bad.size:
        rounds += 1
        if rounds > _MAX_RESAMPLE_ROUNDS:
            raise ValueError(
                f"{bad.size} EVs still have no stay inside the horizon "
                f"[{start.isoformat()}, +{horizon_s} s] after "
                f"{_MAX_RESAMPLE_ROUNDS} redraws: the horizon is too short for "
                "the arrival/departure distributions"
            )
        a, d = draw_stays(bad.size)
        arrival_s[bad] = a
        departure_s[bad] = d
        bad = bad[~(departure_s[bad] > arrival_s[bad])]

    later: list[list[tuple[float, float, float]]] = [[] for _ in range(n)]
    day = 1
    while daily and n and day * 86400.0 - offset_s < horizon_s:
        shift = day * 86400.0
        prev = np.array([st[-1][1] if st else departure_s[i] for i, st in enumerate(later)])
        a = np.full(n, np.inf)
        d = np.full(n, np.inf)
        todo = np.arange(n)
        for _ in range(_MAX_RESAMPLE_ROUNDS):
            if dist.arrival_fixed_h is None:
                arr_h = arr_dist.ppf(rng.random(todo.size))
            else:
                arr_h = np.full(todo.size, float(dist.arrival_fixed_h))
            dep_h = 24.0 + dep_dist.ppf(rng.random(todo.size))
            a[todo] = arr_h * 3600.0 + shift - offset_s
            d[todo] = dep_h * 3600.0 + shift - offset_s
            todo = todo[~((a[todo] > prev[todo]) & (d[todo] > a[todo]))]
            if not todo.size:
                break
        soc_day = np.clip(rng.normal(dist.soc_initial_mean, dist.soc_initial_std, size=n),
                          dist.soc_min, dist.soc_max)
        ok = (a > prev) & (d > a) & (a < horizon_s)
        ok[todo] = False
        for i in np.flatnonzero(ok).tolist():
            later[i].append((float(a[i]), float(min(d[i], horizon_s)), float(soc_day[i])))
        day += 1

    return [
        EVSpec(
            ev_id=f"EV-{i}",
            home_bus=int(home[i]),
            capacity_kwh=float(dist.capacity_kwh),
            charger_kva=float(dist.charger_kva),
            efficiency=float(dist.efficiency),
            can_discharge=dist.can_discharge,
            can_reactive=dist.can_reactive,
            arrival_s=float(arrival_s[i]),
            departure_s=float(departure_s[i]),
            soc_initial=float(soc0[i]),
            soc_target=float(dist.soc_target),
            soc_min=float(dist.soc_min),
            soc_max=float(dist.soc_max),
            autonomous=dist.autonomous,
            next_stays=tuple(later[i]),
        )
        for i in range(n)
    ]
