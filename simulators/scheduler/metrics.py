"""Charging-performance metrics of seed 001 (section IV-B, eqs. (13)-(14)).

Pure functions on recorded SOC arrays of shape ``(T + 1, V)``: row 0 is the SOC at
the start of the horizon, row ``t`` the SOC at the end of step ``t - 1`` (the
indexing of :mod:`simulators.scheduler.problem`). Usable for any strategy or
study (optimiser output or co-simulation recordings).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Default tolerance of Metric 3: an EV counts as charged once
#: ``SOC >= SOC* - 1e-3`` (0.1 % of capacity, 16 Wh on a 16 kWh battery), which
#: absorbs solver round-off without hiding a missed step (one 3.6 kW hour is 0.2).
METRIC3_TOL = 1e-3


def _soc_target(soc, soc_target):
    soc = np.asarray(soc, dtype=float)
    if soc.ndim != 2 or soc.shape[0] < 1:
        raise ValueError(f"soc must have shape (T + 1, V), got {soc.shape}")
    tgt = np.broadcast_to(np.asarray(soc_target, dtype=float), (soc.shape[1],))
    if not (np.all(np.isfinite(soc)) and np.all(np.isfinite(tgt))):
        raise ValueError("soc and soc_target must be finite")
    return soc, tgt


def metric1(soc, soc_target) -> float:
    """Metric 1: ``sum_{t=1..T} sum_v (SOC[t, v] - SOC*_v)^2`` (seed 001, eq. (13)).

    Parameters
    ----------
    soc : array_like, shape (T + 1, V)
        SOC trajectory [-]; row 0 (initial SOC) is not summed.
    soc_target : float or array_like, shape (V,)
        Target ``SOC*_v`` [-].

    Returns
    -------
    float
        Metric 1 [-].
    """
    soc, tgt = _soc_target(soc, soc_target)
    return float(np.sum((soc[1:] - tgt) ** 2))


def metric2(soc_final, soc_target) -> float:
    """Metric 2: ``sum_v (SOC*_v - SOC[T, v])`` (seed 001, eq. (14)).

    Parameters
    ----------
    soc_final : array_like, shape (V,)
        SOC at the end of the horizon, at the parking node (after the return
        drive, eq. (12i)) [-].
    soc_target : float or array_like, shape (V,)
        Target [-].

    Returns
    -------
    float
        Sum of the SOC deficits [-] (fractions of capacity; negative if EVs end
        above target).
    """
    fin = np.asarray(soc_final, dtype=float).reshape(1, -1)
    _, tgt = _soc_target(fin, soc_target)
    return float(np.sum(tgt - fin[0]))


def metric3_hours(soc, soc_target, dt_h: float, tol: float = METRIC3_TOL) -> float:
    """Metric 3: time until every EV has reached its target (seed 001, sec. IV-B).

    The first instant ``t dt`` at which ``SOC[t, v] >= SOC*_v - tol`` for every EV
    ``v`` (checked at step boundaries).

    Parameters
    ----------
    soc : array_like, shape (T + 1, V)
        SOC trajectory [-] (at the charger: before the return drive of eq. (12i)).
    soc_target : float or array_like, shape (V,)
        Target [-].
    dt_h : float
        Step length [h].
    tol : float
        Tolerance [-] (:data:`METRIC3_TOL`).

    Returns
    -------
    float
        Hours from the start of the horizon; ``inf`` if some EV never reaches its
        target within the horizon.
    """
    soc, tgt = _soc_target(soc, soc_target)
    if not np.isfinite(dt_h) or dt_h <= 0:
        raise ValueError(f"dt_h must be finite and > 0, got {dt_h!r}")
    done = np.all(soc >= tgt - tol, axis=1)
    hits = np.flatnonzero(done)
    return float(hits[0] * dt_h) if hits.size else float("inf")


@dataclass(frozen=True)
class Metrics:
    """Metrics 1-3 of seed 001 for one run.

    Attributes
    ----------
    metric1 : float
        Eq. (13) [-].
    metric2 : float
        Eq. (14): sum of SOC deficits [-].
    metric2_mean_percent : float
        ``100 * metric2 / V``: mean deficit per EV [% of capacity].
    metric2_max_percent : float
        Largest deficit of one EV [% of capacity] (seed 001's "0.8 %" for the
        autonomous case is the per-EV drive energy, see ``docs/autonomous.md``).
    metric3_h : float
        Hours until all EVs reach their target (``inf`` if never).
    """

    metric1: float
    metric2: float
    metric2_mean_percent: float
    metric2_max_percent: float
    metric3_h: float


def all_metrics(soc, soc_target, dt_h: float, soc_final=None, tol: float = METRIC3_TOL) -> Metrics:
    """Metrics 1-3 of seed 001.

    Parameters
    ----------
    soc : array_like, shape (T + 1, V)
        SOC trajectory [-].
    soc_target : float or array_like, shape (V,)
        Target [-].
    dt_h : float
        Step length [h].
    soc_final : array_like, shape (V,), optional
        End SOC at the parking node (default ``soc[-1]``) [-].
    tol : float
        Tolerance of Metric 3 [-].

    Returns
    -------
    Metrics
    """
    soc, tgt = _soc_target(soc, soc_target)
    fin = soc[-1] if soc_final is None else np.asarray(soc_final, dtype=float)
    deficit = tgt - fin
    v = max(soc.shape[1], 1)
    m2 = metric2(fin, tgt)
    return Metrics(
        metric1=metric1(soc, tgt),
        metric2=m2,
        metric2_mean_percent=100.0 * m2 / v,
        metric2_max_percent=100.0 * float(np.max(deficit, initial=0.0)),
        metric3_h=metric3_hours(soc, tgt, dt_h, tol),
    )
