"""Seed 003 fleet: commuting EV owners among a grid's residential customers.

Seed 003 (Panagi et al., section IV-A) builds its fleet as follows, and so does
:func:`sample_commuter_fleet`:

- 20 % of the customers own an EV (``ev_share``; drawn without replacement
  among the loads of the net, so the count is exactly ``round(share * n)``);
- the charger follows the customer's connection: 11 kW three-phase where the
  house is three-phase, 3.7 kW single-phase otherwise (paper: 80 % of suburban
  houses are three-phase). The connection is read from ``net.load["three_phase"]``
  when the net has it (``suburban_lv``), else drawn with ``three_phase_share``;
- the model (usable capacity ``Ebar``, consumption ``eta``) from the sales PMF
  of the EV catalogue (:mod:`adapters.ev_catalogue`);
- arrival, departure and next-trip distance from the shapes of the paper's
  Fig. 3 (its survey data are not published; the parameters below are ours and
  reproduce what the figure shows: arrivals mostly 15-20 h, departures 6-9 h,
  daily distances of tens of km):

  * arrival [h after midnight of the start date]: normal, mean 17.0 h, sd
    1.5 h, truncated to [13, 23] h (88.9 % between 15 and 20 h);
  * departure [h after midnight of the next day]: normal, mean 7.5 h, sd
    0.75 h, truncated to [5, 10] h (95.5 % between 6 and 9 h);
  * next-trip distance ``kappa`` [km]: log-normal, median 30 km, log-sd 0.6,
    truncated to [2, 150] km (mean 35.4 km; 90 % between 11.2 and 78.9 km).

  All three are sampled by the inverse CDF of ``scipy.stats`` frozen
  distributions on uniforms from the one seeded ``numpy`` generator, so the same
  seed gives the same fleet bit for bit;
- energies (eq. (19)): departure energy ``E_dep = Emin + kappa * eta`` with
  ``Emin = reserve_soc * Ebar`` the reserve (the lower bound of eq. (18));
  arrival energy ``E_arr = Emin``: the stationary commuter, who left this
  morning with yesterday's ``E_dep`` and drove the same trip, arrives at the
  reserve (the paper gives no arrival SOC; this is the reading that needs the
  most charging, so it is the conservative one for the grid).

A fleet whose required departure energy cannot be charged during the stay at
the charger's power (``E_dep - E_arr > efficiency * P * (t_dep - t_arr)``) or
does not fit the battery is refused with a ValueError naming the EV, its
numbers and the field to change.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, fields

import numpy as np
from scipy import stats

from adapters.ev_catalogue import EVCatalogue, EVModel

from .population import EVSpec

__all__ = ["CommuterDistributions", "CommuterFleet", "sample_commuter_fleet"]


@dataclass(frozen=True)
class CommuterDistributions:
    """Parameters of the seed 003 fleet (defaults: the paper, and ours for Fig. 3).

    Parameters
    ----------
    ev_share : float
        Share of customers owning an EV [-], in [0, 1] (paper: 0.2).
    three_phase_share : float
        Share of three-phase customers [-] when the net does not say (paper: 0.8).
    charger_three_phase_kva, charger_single_phase_kva : float
        Charger ratings [kVA] (paper: 11 and 3.7, IEC 62196-1 modes).
    arrival_mean_h, arrival_sd_h, arrival_lo_h, arrival_hi_h : float
        Truncated normal arrival [h after midnight of the start date].
    departure_mean_h, departure_sd_h, departure_lo_h, departure_hi_h : float
        Truncated normal departure [h after midnight of the next day].
    distance_median_km, distance_log_sd, distance_lo_km, distance_hi_km : float
        Truncated log-normal next-trip distance ``kappa`` [km].
    reserve_soc : float
        Reserve ``Emin / Ebar`` [-] (eq. (18) lower bound, eq. (19)), in [0, 1).
    soc_max : float
        Upper SOC bound ``Ebar`` as a share of the usable capacity [-].
    efficiency : float
        Charging efficiency [-] in (0, 1] (eq. (17) has none: 1.0 is the paper).
    """

    ev_share: float = 0.2
    three_phase_share: float = 0.8
    charger_three_phase_kva: float = 11.0
    charger_single_phase_kva: float = 3.7
    arrival_mean_h: float = 17.0
    arrival_sd_h: float = 1.5
    arrival_lo_h: float = 13.0
    arrival_hi_h: float = 23.0
    departure_mean_h: float = 7.5
    departure_sd_h: float = 0.75
    departure_lo_h: float = 5.0
    departure_hi_h: float = 10.0
    distance_median_km: float = 30.0
    distance_log_sd: float = 0.6
    distance_lo_km: float = 2.0
    distance_hi_km: float = 150.0
    reserve_soc: float = 0.2
    soc_max: float = 1.0
    efficiency: float = 1.0

    def __post_init__(self) -> None:
        problems = []
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                problems.append(f"{f.name} must be a finite number, got {v!r}")
        if not problems:
            for name in ("ev_share", "three_phase_share"):
                if not 0 <= getattr(self, name) <= 1:
                    problems.append(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
            for name in ("charger_three_phase_kva", "charger_single_phase_kva", "arrival_sd_h",
                         "departure_sd_h", "distance_median_km", "distance_log_sd", "distance_lo_km"):
                if getattr(self, name) <= 0:
                    problems.append(f"{name} must be > 0, got {getattr(self, name)!r}")
            for lo, hi in (("arrival_lo_h", "arrival_hi_h"), ("departure_lo_h", "departure_hi_h"),
                           ("distance_lo_km", "distance_hi_km")):
                if not getattr(self, lo) < getattr(self, hi):
                    problems.append(f"{lo} ({getattr(self, lo)!r}) must be < {hi} ({getattr(self, hi)!r})")
            if not 0 <= self.reserve_soc < self.soc_max <= 1:
                problems.append(f"reserve_soc and soc_max must satisfy 0 <= reserve_soc < soc_max <= 1, "
                                f"got {self.reserve_soc!r}, {self.soc_max!r}")
            if not 0 < self.efficiency <= 1:
                problems.append(f"efficiency must be in (0, 1], got {self.efficiency!r}")
        if problems:
            raise ValueError("invalid CommuterDistributions: " + "; ".join(problems))

    def arrival(self):
        """Frozen truncated-normal arrival distribution [h after midnight of the start date]."""
        return _truncnorm(self.arrival_mean_h, self.arrival_sd_h, self.arrival_lo_h, self.arrival_hi_h)

    def departure(self):
        """Frozen truncated-normal departure distribution [h after midnight of the next day]."""
        return _truncnorm(self.departure_mean_h, self.departure_sd_h, self.departure_lo_h,
                          self.departure_hi_h)

    def distance(self):
        """Frozen log-normal distance distribution [km] (truncation applied in :meth:`distance_ppf`)."""
        return stats.lognorm(self.distance_log_sd, scale=self.distance_median_km)

    def distance_ppf(self, u: np.ndarray) -> np.ndarray:
        """Inverse CDF of the distance truncated to [distance_lo_km, distance_hi_km] [km]."""
        d = self.distance()
        lo, hi = d.cdf(self.distance_lo_km), d.cdf(self.distance_hi_km)
        return np.clip(d.ppf(lo + u * (hi - lo)), self.distance_lo_km, self.distance_hi_km)


def _truncnorm(mean: float, sd: float, lo: float, hi: float):
    return stats.truncnorm((lo - mean) / sd, (hi - mean) / sd, loc=mean, scale=sd)


@dataclass(frozen=True)
class CommuterFleet:
    """A sampled seed 003 fleet: the EV specs and, per EV, what they came from."""

    specs: tuple[EVSpec, ...]
    models: tuple[EVModel, ...]
    distance_km: tuple[float, ...]
    three_phase: tuple[bool, ...]
    load_index: tuple[int, ...]

    def departure_energy_kwh(self) -> np.ndarray:
        """Required departure energy ``E_dep`` of each EV [kWh] (eq. (19))."""
        return np.array([s.soc_target * s.capacity_kwh for s in self.specs])

    def trip_energy_kwh(self) -> np.ndarray:
        """``kappa * eta`` of each EV [kWh] (eq. (19))."""
        return np.array([d * m.consumption_kwh_per_km for d, m in zip(self.distance_km, self.models)])


def sample_commuter_fleet(net, dist: CommuterDistributions, catalogue: EVCatalogue,
                          start: dt.datetime, horizon_s: float, rng: np.random.Generator,
                          first_id: int = 0) -> CommuterFleet:
    """Sample the seed 003 fleet on the loads of a pandapower net (module docstring).

    Draw order (fixed, so a seed fixes the fleet): owners (a permutation of the
    loads), connection (only if the net has no ``three_phase`` column), model,
    arrival, departure, distance. EVs are numbered ``EV-<first_id>``... in
    ascending load index. Times are clipped to the horizon ``[0, horizon_s]``
    like :func:`.population.sample_fleet`.

    Raises
    ------
    ValueError
        If a stay is empty inside the horizon, or the departure energy of an EV
        does not fit its battery or cannot be charged in its stay.
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if not (isinstance(horizon_s, (int, float)) and math.isfinite(horizon_s) and horizon_s > 0):
        raise ValueError(f"horizon_s must be a finite number > 0 s, got {horizon_s!r}")
    loads = net.load
    n_owners = int(round(dist.ev_share * len(loads)))
    owners = np.sort(rng.permutation(len(loads))[:n_owners])
    if "three_phase" in loads.columns:
        three = loads["three_phase"].to_numpy(dtype=bool)[owners]
    else:
        three = rng.random(n_owners) < dist.three_phase_share
    models = catalogue.sample(rng, n_owners)
    midnight = start.replace(hour=0, minute=0, second=0, microsecond=0)
    offset_s = (start - midnight).total_seconds()
    arr_h = dist.arrival().ppf(rng.random(n_owners))
    dep_h = 24.0 + dist.departure().ppf(rng.random(n_owners))
    km = dist.distance_ppf(rng.random(n_owners))
    arr_s = np.clip(arr_h * 3600.0 - offset_s, 0.0, float(horizon_s))
    dep_s = np.clip(dep_h * 3600.0 - offset_s, 0.0, float(horizon_s))

    problems: list[str] = []
    specs = []
    for i in range(n_owners):
        m, ev_id = models[i], f"EV-{first_id + i}"
        kva = dist.charger_three_phase_kva if three[i] else dist.charger_single_phase_kva
        e_min = dist.reserve_soc * m.usable_kwh
        e_dep = e_min + km[i] * m.consumption_kwh_per_km          # eq. (19)
        stay_h = (dep_s[i] - arr_s[i]) / 3600.0
        if stay_h <= 0:
            problems.append(f"{ev_id}: no stay inside the horizon (arrival {arr_h[i]:.2f} h, departure "
                            f"{dep_h[i]:.2f} h after midnight of the start date)")
            continue
        if e_dep > dist.soc_max * m.usable_kwh:
            problems.append(f"{ev_id} ({m.model}): departure energy {e_dep:.1f} kWh (reserve {e_min:.1f} + "
                            f"{km[i]:.0f} km x {m.consumption_kwh_per_km} kWh/km) exceeds soc_max x capacity "
                            f"= {dist.soc_max * m.usable_kwh:.1f} kWh; lower reserve_soc or distance_hi_km")
            continue
        reach = dist.efficiency * kva * stay_h
        if e_dep - e_min > reach + 1e-9:
            problems.append(f"{ev_id} ({m.model}): departure energy needs {e_dep - e_min:.1f} kWh but "
                            f"{kva} kVA x {stay_h:.2f} h x efficiency {dist.efficiency} gives {reach:.1f} kWh; "
                            "lower distance_hi_km or widen the stay (arrival/departure)")
            continue
        specs.append(EVSpec(
            ev_id=ev_id, home_bus=int(loads.bus.iloc[owners[i]]), capacity_kwh=m.usable_kwh,
            charger_kva=kva, efficiency=dist.efficiency, can_discharge=False, can_reactive=False,
            arrival_s=float(arr_s[i]), departure_s=float(dep_s[i]),
            soc_initial=dist.reserve_soc, soc_target=e_dep / m.usable_kwh,
            soc_min=dist.reserve_soc, soc_max=dist.soc_max))
    if problems:
        raise ValueError(f"seed 003 fleet ({n_owners} EVs): " + "; ".join(problems))
    return CommuterFleet(tuple(specs), tuple(models), tuple(float(k) for k in km),
                         tuple(bool(t) for t in three), tuple(int(loads.index[o]) for o in owners))
