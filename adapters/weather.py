"""Weather inputs for the PV model: clear-sky irradiance from pvlib, offline.

:func:`clear_sky_weather` wraps :meth:`pvlib.location.Location.get_clearsky`.
The default Ineichen-Perez model [1]_ needs the Linke turbidity climatology;
pvlib ships it in its package data (``pvlib/data/LinkeTurbidities.h5``, read with
``h5py``) and :func:`pvlib.clearsky.lookup_linke_turbidity` reads it from there, so
no download is needed. The ``"simplified_solis"`` [2]_ and ``"haurwitz"`` [3]_
models need no data file at all; Haurwitz gives GHI only, split into DNI and DHI
with the Erbs decomposition [4]_ (:func:`pvlib.irradiance.erbs`).

Ambient temperature and wind speed are constants of the :class:`PVSite` (a clear
day has no measured weather); they only enter the cell temperature.

References
----------
.. [1] P. Ineichen and R. Perez, "A new airmass independent formulation for the
   Linke turbidity coefficient", Solar Energy 73(3), 151-157, 2002.
.. [2] P. Ineichen, "A broadband simplified version of the Solis clear sky model",
   Solar Energy 82, 758-762, 2008.
.. [3] B. Haurwitz, "Insolation in relation to cloudiness and cloud density",
   Journal of Meteorology 2, 154-166, 1945.
.. [4] D. G. Erbs, S. A. Klein and J. A. Duffie, "Estimation of the diffuse
   radiation fraction for hourly, daily and monthly-average global radiation",
   Solar Energy 28(4), 293-302, 1982.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pvlib

CLEARSKY_MODELS = ("ineichen", "simplified_solis", "haurwitz")


class WeatherError(ValueError):
    """Invalid site or weather parameters."""


@dataclass(frozen=True)
class PVSite:
    """Where the PV units are and the (constant) weather besides irradiance.

    Attributes
    ----------
    latitude_deg : float
        Latitude [deg], north positive.
    longitude_deg : float
        Longitude [deg], east positive.
    altitude_m : float
        Altitude above sea level [m].
    timezone : str
        IANA time zone of the scenario's wall-clock times (``"Asia/Nicosia"``).
    temp_air_c : float
        Ambient air temperature [degC].
    wind_speed_m_s : float
        Wind speed at module height [m/s].
    albedo : float
        Ground reflectance [-].
    clearsky_model : str
        ``"ineichen"``, ``"simplified_solis"`` or ``"haurwitz"``.
    """

    latitude_deg: float
    longitude_deg: float
    altitude_m: float = 0.0
    timezone: str = "UTC"
    temp_air_c: float = 20.0
    wind_speed_m_s: float = 1.0
    albedo: float = 0.2
    clearsky_model: str = "ineichen"

    def __post_init__(self) -> None:
        problems = []
        if not -90.0 <= self.latitude_deg <= 90.0:
            problems.append(f"latitude_deg must be in [-90, 90], got {self.latitude_deg}")
        if not -180.0 <= self.longitude_deg <= 180.0:
            problems.append(f"longitude_deg must be in [-180, 180], got {self.longitude_deg}")
        if not 0.0 <= self.albedo <= 1.0:
            problems.append(f"albedo must be in [0, 1], got {self.albedo}")
        if self.wind_speed_m_s < 0:
            problems.append(f"wind_speed_m_s must be >= 0, got {self.wind_speed_m_s}")
        if self.clearsky_model not in CLEARSKY_MODELS:
            problems.append(f"clearsky_model must be one of {CLEARSKY_MODELS}, got {self.clearsky_model!r}")
        try:
            pd.Timestamp("2016-01-01").tz_localize(self.timezone)
        except Exception as exc:  # pytz/zoneinfo raise different types
            problems.append(f"timezone {self.timezone!r} is not a known time zone ({exc})")
        if problems:
            raise WeatherError("; ".join(problems))

    def location(self) -> pvlib.location.Location:
        """The :class:`pvlib.location.Location` of the site."""
        return pvlib.location.Location(
            self.latitude_deg, self.longitude_deg, tz=self.timezone, altitude=self.altitude_m
        )


def clear_sky_weather(site: PVSite, times: pd.DatetimeIndex) -> pd.DataFrame:
    """Clear-sky irradiance, solar position and ambient conditions at ``times``.

    Parameters
    ----------
    site : PVSite
    times : pandas.DatetimeIndex
        tz-aware instants.

    Returns
    -------
    pandas.DataFrame
        Index ``times``; columns ``ghi``, ``dni``, ``dhi`` [W/m^2],
        ``apparent_zenith``, ``zenith``, ``azimuth`` [deg] (solar position from
        :func:`pvlib.solarposition.get_solarposition`), ``dni_extra`` [W/m^2],
        ``temp_air`` [degC], ``wind_speed`` [m/s].
    """
    if times.tz is None:
        raise WeatherError("times must be tz-aware")
    loc = site.location()
    solpos = loc.get_solarposition(times, temperature=site.temp_air_c)
    cs = loc.get_clearsky(times, model=site.clearsky_model, solar_position=solpos)
    if "dni" not in cs:
        split = pvlib.irradiance.erbs(cs["ghi"], solpos["zenith"], times)
        cs = cs.assign(dni=split["dni"], dhi=split["dhi"])
    out = pd.DataFrame(index=times)
    out["ghi"] = cs["ghi"]
    out["dni"] = cs["dni"]
    out["dhi"] = cs["dhi"]
    out["apparent_zenith"] = solpos["apparent_zenith"]
    out["zenith"] = solpos["zenith"]
    out["azimuth"] = solpos["azimuth"]
    out["dni_extra"] = pvlib.irradiance.get_extra_radiation(times)
    out["temp_air"] = site.temp_air_c
    out["wind_speed"] = site.wind_speed_m_s
    return out.fillna(0.0)
