"""Rooftop PV units: clear-sky PVWatts power and VDE-AR-N 4105 cos phi(P) control.

Pure model (no mosaik). Powers use the **load convention** of the project: a unit
producing 4 kW has ``p_kw = -4.0``; ``q_kvar > 0`` is reactive power absorbed
(underexcited operation), which is what the VDE-AR-N 4105 characteristic asks of a
generator at high output.

Active power, per unit and step
    1. Weather: clear-sky GHI/DNI/DHI and solar position at sub-step instants
       (:func:`adapters.weather.clear_sky_weather`, pvlib Ineichen by default).
    2. Plane-of-array irradiance: :func:`pvlib.irradiance.get_total_irradiance`
       (Hay-Davies sky diffuse [3]_) for the unit's tilt and azimuth; the beam part
       is reduced by the angle-of-incidence modifier :func:`pvlib.iam.physical`.
    3. Cell temperature: :func:`pvlib.temperature.sapm_cell` [4]_ with the
       unit's mounting (default ``close_mount_glass_glass``: rooftop).
    4. DC power: :func:`pvlib.pvsystem.pvwatts_dc` [2]_ per kWp times
       ``1 - losses_fraction`` (soiling, wiring, mismatch, ...; PVWatts' default
       is 14 %), times ``kwp``.
    5. AC power: :func:`pvlib.inverter.pvwatts` [2]_ with the inverter's DC input
       limit ``s_kva / eta_inv_nom``, i.e. AC output clipped at ``s_kva``.
    6. Mean over the sub-steps: the value published at step ``k`` is the mean
       power over ``[start + k step, start + (k + 1) step)`` (sub-steps of at most
       ``substep_s``, default 300 s, sampled at their mid-points).

    Or, for a unit with a ``profile``: a column of a per-unit profile table
    (AC power per kWp [kW/kWp], generation positive), step means as in
    :func:`adapters.profiles.resample_to_steps`, clipped at ``s_kva``.

Reactive power (VDE-AR-N 4105:2018-11, 5.7.2.4, cos phi(P) characteristic [1]_)
    ``cos phi = f(P / P_Emax)``: 1 up to ``P = 0.5 P_Emax``, then falling
    linearly to 0.95 (units with ``S_Amax <= 4.6 kVA``) or 0.90 (larger units) at
    ``P = P_Emax``, underexcited. ``Q = P tan(arccos(cos phi))`` [kvar], absorbed.
    Here ``P_Emax`` is the inverter rating ``s_kva`` (the AC power never exceeds
    it), and the 4.6 kVA threshold is applied to ``s_kva`` too. At full output
    the apparent power is ``s_kva / cos phi``: the standard expects the inverter's
    apparent rating to cover that; the model does not curtail P for it.
    Other characteristics: :class:`CosPhiCharacteristic` with any points.

Precomputation
    :class:`PVModel` computes the requested horizon at construction (cheap, a few
    ms per day) and extends it by whole days on demand, so the mosaik step only
    looks values up.

References
----------
.. [1] VDE-AR-N 4105:2018-11, "Generators connected to the low-voltage
   distribution network", section 5.7.2.4 (reactive power, cos phi(P)).
.. [2] A. P. Dobos, "PVWatts Version 5 Manual", NREL/TP-6A20-62641, 2014.
.. [3] J. E. Hay and J. A. Davies, "Calculation of the solar radiation incident
   on an inclined surface", Proc. First Canadian Solar Radiation Data Workshop,
   1980.
.. [4] D. L. King, W. E. Boyson and J. A. Kratochvil, "Photovoltaic Array
   Performance Model", SAND2004-3535, Sandia National Laboratories, 2004.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pvlib

from adapters.profiles import resample_to_steps
from adapters.weather import PVSite, clear_sky_weather
from simulators.baseload.model import Forecast, apply_forecast_error

VDE4105_THRESHOLD_KVA = 4.6
"""Units up to this apparent power [kVA] use cos phi 0.95 at rated power, larger 0.90."""

TEMPERATURE_MODELS = tuple(pvlib.temperature.TEMPERATURE_MODEL_PARAMETERS["sapm"])
_DAY_S = 86400.0


class PVModelError(ValueError):
    """Invalid PV unit, characteristic or time axis."""


@dataclass(frozen=True)
class CosPhiCharacteristic:
    """Piecewise-linear displacement factor over normalised active power.

    Attributes
    ----------
    points : tuple of (float, float)
        ``(P / P_rated [-], cos phi [-])`` with strictly increasing ``P / P_rated``
        >= 0 and ``0 < cos phi <= 1``; constant beyond the first and last point.
        Lists (e.g. from TOML or JSON) are converted to tuples. The reactive power
        is always absorbed (underexcited), as VDE-AR-N 4105 prescribes.

    Examples
    --------
    >>> CosPhiCharacteristic.vde_4105(10.0).points
    ((0.0, 1.0), (0.5, 1.0), (1.0, 0.9))
    """

    points: tuple[tuple[float, float], ...] = ((0.0, 1.0), (0.5, 1.0), (1.0, 0.95))

    def __post_init__(self) -> None:
        try:
            pts = tuple((float(x), float(c)) for x, c in self.points)
        except (TypeError, ValueError) as exc:
            raise PVModelError(f"characteristic points must be (p_pu, cos_phi) pairs, got {self.points!r}") from exc
        problems = []
        if len(pts) < 1:
            problems.append("needs at least one point")
        xs = [x for x, _ in pts]
        if any(b <= a for a, b in zip(xs, xs[1:])):
            problems.append(f"p_pu values must increase strictly, got {xs}")
        if any(not (math.isfinite(x) and x >= 0) for x in xs):
            problems.append(f"p_pu values must be finite and >= 0, got {xs}")
        if any(not (0 < c <= 1) for _, c in pts):
            problems.append(f"cos phi values must be in (0, 1], got {[c for _, c in pts]}")
        if problems:
            raise PVModelError("invalid cos phi(P) characteristic: " + "; ".join(problems))
        object.__setattr__(self, "points", pts)

    @classmethod
    def vde_4105(cls, s_kva: float) -> CosPhiCharacteristic:
        """The VDE-AR-N 4105:2018 default for a unit of apparent power ``s_kva`` [kVA]."""
        cos_min = 0.95 if s_kva <= VDE4105_THRESHOLD_KVA else 0.90
        return cls(((0.0, 1.0), (0.5, 1.0), (1.0, cos_min)))

    def cos_phi(self, p_pu: np.ndarray | float) -> np.ndarray:
        """Displacement factor [-] at normalised active power ``p_pu = P / P_rated`` [-]."""
        xs = np.array([x for x, _ in self.points])
        cs = np.array([c for _, c in self.points])
        return np.interp(np.abs(np.asarray(p_pu, dtype=float)), xs, cs)

    def q_kvar(self, p_gen_kw: np.ndarray | float, p_rated_kw: np.ndarray | float) -> np.ndarray:
        """Absorbed reactive power [kvar] (>= 0, load convention) for generation ``p_gen_kw`` [kW].

        ``Q = |P| tan(arccos(cos phi(|P| / P_rated)))`` (VDE-AR-N 4105:2018, 5.7.2.4).
        """
        p = np.abs(np.asarray(p_gen_kw, dtype=float))
        cos = self.cos_phi(p / np.asarray(p_rated_kw, dtype=float))
        return p * np.sqrt(1.0 - cos**2) / cos


@dataclass(frozen=True)
class PVUnitSpec:
    """One PV unit.

    Attributes
    ----------
    eid : str
        Identifier (the mosaik entity id, ``PV-<bus>-<k>``).
    bus : int or str
        Grid bus (pandapower index or bus reference); carried, not used here.
    kwp : float
        Installed DC power at STC [kWp], > 0.
    s_kva : float or None
        Inverter rating [kVA]: AC power limit, ``P_Emax`` of the characteristic and
        the VDE 4105 size class. None: equal to ``kwp``.
    tilt_deg : float
        Module tilt from horizontal [deg].
    azimuth_deg : float
        Module azimuth [deg], pvlib convention (north 0, east 90, south 180).
    characteristic : CosPhiCharacteristic or None
        None: :meth:`CosPhiCharacteristic.vde_4105` for ``s_kva``.
    profile : str or None
        Column of the per-unit profile table to use instead of clear sky.
    gamma_pdc_per_c : float
        Power temperature coefficient [1/degC].
    losses_fraction : float
        DC system losses [-] (PVWatts default 0.14).
    eta_inv_nom : float
        Nominal inverter efficiency [-].
    temperature_model : str
        Key of ``pvlib.temperature.TEMPERATURE_MODEL_PARAMETERS["sapm"]``.
    """

    eid: str
    bus: int | str
    kwp: float
    s_kva: float | None = None
    tilt_deg: float = 30.0
    azimuth_deg: float = 180.0
    characteristic: CosPhiCharacteristic | None = None
    profile: str | None = None
    gamma_pdc_per_c: float = -0.004
    losses_fraction: float = 0.14
    eta_inv_nom: float = 0.96
    temperature_model: str = "close_mount_glass_glass"

    def problems(self) -> list[str]:
        """Every problem with the parameters (empty when valid)."""
        out = []
        if not (math.isfinite(self.kwp) and self.kwp > 0):
            out.append(f"{self.eid}: kwp must be > 0, got {self.kwp}")
        if self.s_kva is not None and not (math.isfinite(self.s_kva) and self.s_kva > 0):
            out.append(f"{self.eid}: s_kva must be > 0, got {self.s_kva}")
        if not 0 <= self.tilt_deg <= 90:
            out.append(f"{self.eid}: tilt_deg must be in [0, 90], got {self.tilt_deg}")
        if not 0 <= self.azimuth_deg <= 360:
            out.append(f"{self.eid}: azimuth_deg must be in [0, 360], got {self.azimuth_deg}")
        if not 0 <= self.losses_fraction < 1:
            out.append(f"{self.eid}: losses_fraction must be in [0, 1), got {self.losses_fraction}")
        if not 0 < self.eta_inv_nom <= 1:
            out.append(f"{self.eid}: eta_inv_nom must be in (0, 1], got {self.eta_inv_nom}")
        if self.temperature_model not in TEMPERATURE_MODELS:
            out.append(f"{self.eid}: temperature_model must be one of {TEMPERATURE_MODELS}, got {self.temperature_model!r}")
        return out

    @property
    def s_rated_kva(self) -> float:
        """Inverter rating [kVA] (``s_kva``, or ``kwp`` when not given)."""
        return float(self.kwp if self.s_kva is None else self.s_kva)

    @property
    def cos_phi_characteristic(self) -> CosPhiCharacteristic:
        """The characteristic in force (explicit or VDE-AR-N 4105 default)."""
        return self.characteristic or CosPhiCharacteristic.vde_4105(self.s_rated_kva)


def clear_sky_ac_kw(site: PVSite, units: Sequence[PVUnitSpec], times: pd.DatetimeIndex) -> np.ndarray:
    """Clear-sky AC power of each unit at instants ``times`` [kW], generation positive.

    Parameters
    ----------
    site : adapters.weather.PVSite
    units : sequence of PVUnitSpec
    times : pandas.DatetimeIndex
        tz-aware instants.

    Returns
    -------
    numpy.ndarray
        Shape ``(len(times), len(units))``, in ``[0, s_rated_kva]``.
    """
    weather = clear_sky_weather(site, times)
    out = np.zeros((len(times), len(units)))
    groups: dict[tuple, list[int]] = {}
    for j, u in enumerate(units):
        key = (u.tilt_deg, u.azimuth_deg, u.gamma_pdc_per_c, u.losses_fraction, u.temperature_model)
        groups.setdefault(key, []).append(j)
    for (tilt, azimuth, gamma, losses, tmodel), cols in groups.items():
        poa = pvlib.irradiance.get_total_irradiance(
            tilt, azimuth, weather["apparent_zenith"], weather["azimuth"],
            weather["dni"], weather["ghi"], weather["dhi"],
            dni_extra=weather["dni_extra"], albedo=site.albedo, model="haydavies",
        )
        aoi = pvlib.irradiance.aoi(tilt, azimuth, weather["apparent_zenith"], weather["azimuth"])
        iam = pvlib.iam.physical(aoi)
        effective = (poa["poa_direct"] * iam + poa["poa_diffuse"]).clip(lower=0.0).to_numpy()
        params = pvlib.temperature.TEMPERATURE_MODEL_PARAMETERS["sapm"][tmodel]
        temp_cell = pvlib.temperature.sapm_cell(
            poa["poa_global"].to_numpy(), weather["temp_air"].to_numpy(), weather["wind_speed"].to_numpy(),
            params["a"], params["b"], params["deltaT"],
        )
        dc_per_kwp = pvlib.pvsystem.pvwatts_dc(effective, temp_cell, 1.0, gamma) * (1.0 - losses)
        kwp = np.array([units[j].kwp for j in cols])
        s = np.array([units[j].s_rated_kva for j in cols])
        eta = np.array([units[j].eta_inv_nom for j in cols])
        pdc = np.clip(dc_per_kwp, 0.0, None)[:, None] * kwp[None, :]
        ac = pvlib.inverter.pvwatts(pdc, s / eta, eta_inv_nom=eta)
        out[:, cols] = np.clip(np.nan_to_num(ac, nan=0.0), 0.0, s[None, :])
    return out


class PVModel:
    """A set of PV units on one clock; values precomputed per step.

    Parameters
    ----------
    units : sequence of PVUnitSpec
        The units (ids must be unique).
    start : datetime.datetime
        Start of step 0. Naive: wall-clock time in ``site.timezone``; tz-aware:
        converted.
    step_s : float
        Step length [s], > 0.
    site : adapters.weather.PVSite, optional
        Needed when any unit has no ``profile``.
    profiles : pandas.DataFrame, optional
        Per-unit profile table (``DatetimeIndex``; columns named by the units'
        ``profile``; AC power per kWp [kW/kWp], generation positive). A naive index
        is wall-clock time in the site's (or scenario's) time zone.
    horizon_steps : int, default 1
        Steps to precompute now, rounded up to whole days (more are computed on
        demand).
    substep_s : float, default 300
        Longest sub-step for the step mean of clear-sky power [s].
    timezone : str, optional
        Time zone of a naive ``start`` and of naive profile time stamps when no
        site is given (default ``site.timezone``, else ``"UTC"``).

    Raises
    ------
    PVModelError
        Listing every invalid unit parameter at once.
    """

    def __init__(
        self,
        units: Sequence[PVUnitSpec],
        start: dt.datetime,
        step_s: float,
        *,
        site: PVSite | None = None,
        profiles: pd.DataFrame | None = None,
        horizon_steps: int = 1,
        substep_s: float = 300.0,
        timezone: str | None = None,
    ) -> None:
        problems = [p for u in units for p in u.problems()]
        ids = [u.eid for u in units]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            problems.append(f"duplicate unit ids {dupes}")
        if not (math.isfinite(step_s) and step_s > 0):
            problems.append(f"step_s must be > 0, got {step_s}")
        if not substep_s > 0:
            problems.append(f"substep_s must be > 0, got {substep_s}")
        if any(u.profile is None for u in units) and site is None:
            problems.append("a site is needed for units without a profile (clear-sky power)")
        wanted = sorted({u.profile for u in units if u.profile is not None})
        if wanted:
            if profiles is None:
                problems.append(f"units use profiles {wanted} but no profile table was given")
            else:
                missing = [w for w in wanted if w not in profiles.columns]
                if missing:
                    problems.append(f"profile column(s) {missing} not in the profile table (has {list(profiles.columns)})")
        if problems:
            raise PVModelError("; ".join(problems))
        self.units = tuple(units)
        self.ids = tuple(ids)
        self.site = site
        self.step_s = float(step_s)
        self.substep_s = float(substep_s)
        self._profiles = profiles
        tz = timezone or (site.timezone if site is not None else "UTC")
        ts = pd.Timestamp(start)
        self.start = ts.tz_localize(tz) if ts.tz is None else ts.tz_convert(tz)
        self.p_rated_kw = np.array([u.s_rated_kva for u in self.units])
        self._chars = [u.cos_phi_characteristic for u in self.units]
        self._p = np.zeros((0, len(self.units)))
        self.ensure(max(int(horizon_steps), 0))

    @property
    def n_precomputed(self) -> int:
        """Number of steps computed so far."""
        return self._p.shape[0]

    def ensure(self, n_steps: int) -> None:
        """Make sure steps ``0 .. n_steps - 1`` are computed (whole days at a time)."""
        have = self._p.shape[0]
        if n_steps <= have:
            return
        per_day = max(1, int(math.ceil(_DAY_S / self.step_s)))
        n_new = max(n_steps - have, per_day)
        self._p = np.vstack([self._p, self._compute(have, n_new)])

    def _compute(self, first: int, n: int) -> np.ndarray:
        out = np.zeros((n, len(self.units)))
        sky = [j for j, u in enumerate(self.units) if u.profile is None]
        prof = [j for j, u in enumerate(self.units) if u.profile is not None]
        if sky:
            n_sub = max(1, int(math.ceil(self.step_s / self.substep_s)))
            offsets = (first + np.arange(n)[:, None]) * self.step_s + (np.arange(n_sub)[None, :] + 0.5) * (
                self.step_s / n_sub
            )
            times = self.start + pd.to_timedelta(offsets.ravel(), unit="s")
            ac = clear_sky_ac_kw(self.site, [self.units[j] for j in sky], pd.DatetimeIndex(times))
            out[:, sky] = ac.reshape(n, n_sub, len(sky)).mean(axis=1)
        if prof:
            frame = self._profiles
            t0 = self.start + pd.Timedelta(seconds=first * self.step_s)
            if frame.index.tz is None:
                t0 = t0.tz_localize(None)
            cols = [self.units[j].profile for j in prof]
            pu = resample_to_steps(frame[cols], t0, self.step_s, n)
            kwp = np.array([self.units[j].kwp for j in prof])
            out[:, prof] = np.clip(pu * kwp[None, :], 0.0, self.p_rated_kw[prof][None, :])
        return out

    def p_gen_kw(self, start_step: int, n_steps: int) -> np.ndarray:
        """Available generation [kW] (positive: generator convention), shape ``(n_steps, U)``."""
        if start_step < 0 or n_steps < 0:
            raise PVModelError(f"start_step and n_steps must be >= 0, got {start_step}, {n_steps}")
        self.ensure(start_step + n_steps)
        return self._p[start_step:start_step + n_steps].copy()

    def reactive_kvar(self, p_gen_kw: np.ndarray) -> np.ndarray:
        """Absorbed reactive power [kvar] for generation ``p_gen_kw`` [kW] of shape ``(..., U)``."""
        p_gen_kw = np.asarray(p_gen_kw, dtype=float)
        q = np.empty_like(p_gen_kw)
        for j, char in enumerate(self._chars):
            q[..., j] = char.q_kvar(p_gen_kw[..., j], self.p_rated_kw[j])
        return q

    def window(self, start_step: int, n_steps: int) -> tuple[np.ndarray, np.ndarray]:
        """``(p_kw, q_kvar)`` in load convention for steps ``start_step ...``, each ``(n_steps, U)``.

        ``p_kw <= 0`` (production); ``q_kvar >= 0`` (absorbed, VDE-AR-N 4105).
        """
        p_gen = self.p_gen_kw(start_step, n_steps)
        return -p_gen, self.reactive_kvar(p_gen)

    def step_values(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """``(p_kw, q_kvar)`` of all units at one step, each ``(U,)``."""
        p, q = self.window(step, 1)
        return p[0], q[0]


def forecast(
    model: PVModel,
    start_step: int,
    n_steps: int,
    error_std: float = 0.0,
    rng: np.random.Generator | int | None = None,
) -> Forecast:
    """PV forecast for the scheduler: ``(n_steps, U)`` matrices in load convention.

    The available generation is multiplied by ``1 + e``, ``e ~ N(0, error_std)``
    independent per step and unit, clipped to ``[0, s_rated_kva]``; the reactive
    power then follows the unit's cos phi(P) characteristic of the forecast
    power. ``error_std = 0`` gives the perfect forecast (the values the
    simulator will publish).

    Parameters
    ----------
    model : PVModel
    start_step : int
        First step of the forecast.
    n_steps : int
        Number of steps.
    error_std : float, default 0
        Standard deviation of the relative error [-].
    rng : numpy.random.Generator or int or None
        Generator or seed (``numpy.random.default_rng``).

    Returns
    -------
    simulators.baseload.model.Forecast
    """
    p_gen = model.p_gen_kw(start_step, n_steps)
    p_gen = apply_forecast_error(p_gen, error_std, rng)
    p_gen = np.clip(p_gen, 0.0, model.p_rated_kw[None, :])
    return Forecast(model.ids, start_step, -p_gen, model.reactive_kvar(p_gen))
