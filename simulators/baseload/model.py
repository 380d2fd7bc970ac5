"""Base load per network load: SimBench standard profiles or a CSV file.

Pure model (no mosaik). Load convention: consumption positive, ``p_kw`` [kW],
``q_kvar`` [kvar] (inductive positive).

SimBench profiles (``BaseLoadModel.from_simbench``)
    SimBench's relative profiles (``H0-A`` household, ``G1-A`` commercial on
    weekdays, ``G3-A`` commercial continuous, ...; 15 min, year 2016; see
    :mod:`adapters.profiles`) are per unit of the load's nominal power and peak at
    exactly 1.0 over the year. So::

        p_kw(t)   = scale * p_nom_kw * pload(t)
        q_kvar(t) = p_kw(t) * tan(phi)                   (reactive="power_factor")
        q_kvar(t) = scale * q_nom_kvar * qload(t)        (reactive="profile")

    with ``p_nom_kw = 1000 * net.load.p_mw`` and ``q_nom_kvar = 1000 *
    net.load.q_mvar`` (pandapower's ``scaling`` column is not applied; use
    ``scale``), and ``tan(phi) = q_nom / p_nom`` of the load, or
    ``tan(arccos(power_factor))`` when a power factor is given. The year's
    peak of the scaled load is therefore ``scale * p_nom_kw``; for the CIGRE
    benchmarks, whose load values are peak demands, ``scale = 1`` reproduces them
    at the profile's peak instant.

    Time alignment: the scenario start is mapped into 2016 by month, day and
    wall-clock time of day (``2024-05-15 16:00+03:00`` -> ``2016-05-15 16:00``),
    optionally shifted to the nearest 2016 day with the same weekday
    (``align_weekday``), and the horizon runs on from there, wrapping from the end
    of 2016 to its start. The mapped wall-clock time is read as German wall-clock
    time, the time base of the SimBench labels (which include daylight saving;
    see :mod:`adapters.profiles`): 16:00 in the scenario's zone meets the profile
    row labelled 16:00, summer or winter. From there the steps advance in absolute
    time. (A 2016 wall-clock time that does not exist, 27 March 02:00-02:59, is
    shifted forward; the repeated hour of 30 October takes its first, summer-time
    occurrence.) Step values are step means of the 15-min
    values, or interpolated when the step is shorter than 15 min
    (:func:`adapters.profiles.resample_to_steps`).

    Profile per load: SimBench networks carry it in ``net.load.profile``; other
    networks (pandapower's CIGRE LV/MV) get it from the load name without its
    ``"Load "`` prefix, by the longest matching prefix of ``profile_map``
    (default :data:`DEFAULT_PROFILE_MAP`: ``R`` residential -> ``H0-A``, ``C``
    commercial -> ``G1-A``, ``I`` industrial -> ``G3-A``, anything else ``"*"`` ->
    ``H0-A``). CIGRE MV's ``CI`` (commercial/industrial) loads thus get ``G1-A``
    unless the map has a ``"CI"`` entry.

CSV (``BaseLoadModel.from_csv``)
    The mosaik-csv compatible format of :func:`adapters.profiles.read_timeseries_csv`
    with columns ``<load id>.p_kw`` [kW] (required for every load) and optionally
    ``<load id>.q_kvar`` [kvar] (else from the power factor as above); time stamps
    naive (wall-clock in the scenario's zone) or tz-aware; the horizon must lie
    inside the file's time range.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from adapters.profiles import (
    SIMBENCH_PROFILE_TZ,
    SIMBENCH_PROFILE_YEAR,
    ProfileDataError,
    map_to_profile_year,
    read_timeseries_csv,
    resample_to_steps,
    simbench_load_profiles,
)

DEFAULT_PROFILE_MAP: Mapping[str, str] = {"R": "H0-A", "C": "G1-A", "I": "G3-A", "*": "H0-A"}
"""Load-name prefix -> SimBench profile; ``"*"`` is the fallback (same as the scenario default)."""

REACTIVE_MODES = ("power_factor", "profile")
_DAY_S = 86400.0


class BaseLoadError(ValueError):
    """Invalid load data or parameters; the message names the load or column."""


@dataclass(frozen=True)
class LoadSpec:
    """One network load.

    Attributes
    ----------
    eid : str
        Entity id, the grid's ``Load-*`` id.
    bus : int
        pandapower bus index.
    p_nom_kw : float
        Nominal (peak) active power [kW].
    q_nom_kvar : float
        Nominal reactive power [kvar] (its ratio to ``p_nom_kw`` is ``tan phi``).
    profile : str or None
        SimBench profile name (``"H0-A"``), None for CSV or constant sources.
    """

    eid: str
    bus: int
    p_nom_kw: float
    q_nom_kvar: float = 0.0
    profile: str | None = None

    @property
    def tan_phi(self) -> float:
        """``q_nom / p_nom`` [-] (0 for a zero nominal power)."""
        return self.q_nom_kvar / self.p_nom_kw if self.p_nom_kw else 0.0


def profile_for_name(name: str, profile_map: Mapping[str, str] = DEFAULT_PROFILE_MAP) -> str:
    """SimBench profile for a load called ``name`` by the longest matching prefix.

    A leading ``"Load "`` is dropped first (``"Load R11"`` -> ``"R11"`` -> ``"R"``).

    Raises
    ------
    BaseLoadError
        If no prefix matches and the map has no ``"*"`` fallback.
    """
    short = name.strip()
    if short.lower().startswith("load "):
        short = short[5:].strip()
    matches = [k for k in profile_map if k != "*" and short.startswith(k)]
    if matches:
        return profile_map[max(matches, key=len)]
    if "*" in profile_map:
        return profile_map["*"]
    raise BaseLoadError(f"load {name!r}: no prefix of {sorted(profile_map)} matches and no '*' fallback")


def simbench_load_options(net, reactive: str | None = None) -> dict:
    """Keyword arguments for :meth:`BaseLoadModel.from_simbench` on ``net``.

    A SimBench network brings its own relative load profiles (``net.profiles``):
    they are used, with reactive power from SimBench's ``qload`` profiles, so that
    the loads equal ``simbench.get_absolute_values`` (``reactive`` None). Other
    networks read SimBench's standard ``LoadProfile.csv`` with the loads' power
    factor.
    """
    from adapters.profiles import simbench_net_profiles

    try:
        relative = simbench_net_profiles(net, "load")
    except ProfileDataError:
        return {"reactive": reactive or "power_factor"}
    return {"relative": relative, "reactive": reactive or "profile"}


def load_specs_from_net(
    net, profile_map: Mapping[str, str] | None = None
) -> tuple[LoadSpec, ...]:
    """One :class:`LoadSpec` per row of ``net.load``, ids from the grid's naming.

    Parameters
    ----------
    net : pandapower.pandapowerNet
    profile_map : mapping, optional
        Prefix map for loads without a ``profile`` column value (default
        :data:`DEFAULT_PROFILE_MAP`). SimBench's own ``net.load.profile`` values
        are always kept; the map only fills missing ones.

    Returns
    -------
    tuple of LoadSpec
        In ``net.load`` order; ids from
        :func:`simulators.grid.naming.element_eids` (``Load-R11``).
    """
    from simulators.grid.naming import element_eids

    profile_map = DEFAULT_PROFILE_MAP if profile_map is None else profile_map
    eids = element_eids(net, "load")
    has_profile = "profile" in net.load.columns
    specs = []
    problems = []
    for idx, row in net.load.iterrows():
        prof = row["profile"] if has_profile else None
        if not (isinstance(prof, str) and prof):
            name = row["name"] if isinstance(row["name"], str) else ""
            try:
                prof = profile_for_name(name, profile_map)
            except BaseLoadError as exc:
                problems.append(str(exc))
                continue
        specs.append(
            LoadSpec(
                eid=eids[int(idx)],
                bus=int(row["bus"]),
                p_nom_kw=1000.0 * float(row["p_mw"]),
                q_nom_kvar=1000.0 * float(row["q_mvar"]),
                profile=prof,
            )
        )
    if problems:
        raise BaseLoadError("; ".join(problems))
    return tuple(specs)


@dataclass(frozen=True)
class Forecast:
    """Forecast matrices for the scheduler (base loads or PV units).

    Attributes
    ----------
    ids : tuple of str
        Unit/load ids, the columns.
    start_step : int
        Step of row 0.
    p_kw : numpy.ndarray
        ``(n_steps, U)`` active power [kW], load convention.
    q_kvar : numpy.ndarray
        ``(n_steps, U)`` reactive power [kvar], load convention.
    """

    ids: tuple[str, ...]
    start_step: int
    p_kw: np.ndarray
    q_kvar: np.ndarray

    def by_bus(self, unit_bus: Sequence[int], bus_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Sum the columns per bus: ``(n_steps, len(bus_ids))`` P [kW] and Q [kvar].

        ``unit_bus[j]`` is the bus of column ``j``; units at buses not in
        ``bus_ids`` (e.g. the slack bus) are dropped.
        """
        col = {int(b): i for i, b in enumerate(bus_ids)}
        p = np.zeros((self.p_kw.shape[0], len(bus_ids)))
        q = np.zeros_like(p)
        for j, b in enumerate(unit_bus):
            i = col.get(int(b))
            if i is not None:
                p[:, i] += self.p_kw[:, j]
                q[:, i] += self.q_kvar[:, j]
        return p, q

    def per_bus(self, unit_bus: Sequence[int]) -> tuple[dict[int, list[float]], dict[int, list[float]]]:
        """Sum the columns per bus into ``{bus: [value per step]}`` (built-in floats).

        The shape the scheduler's ``forecast_p_kw`` / ``forecast_q_kvar`` take;
        combine several sources with :func:`sum_per_bus`.
        """
        buses = sorted({int(b) for b in unit_bus})
        p, q = self.by_bus(unit_bus, buses)
        return (
            {b: [float(v) for v in p[:, i]] for i, b in enumerate(buses)},
            {b: [float(v) for v in q[:, i]] for i, b in enumerate(buses)},
        )


def sum_per_bus(*maps: Mapping[int, Sequence[float]]) -> dict[int, list[float]]:
    """Add ``{bus: [value per step]}`` maps (e.g. base load and PV), built-in floats.

    Raises
    ------
    ValueError
        If two series of one bus differ in length.
    """
    out: dict[int, np.ndarray] = {}
    for m in maps:
        for bus, values in m.items():
            v = np.asarray(values, dtype=float)
            b = int(bus)
            if b in out:
                if out[b].shape != v.shape:
                    raise ValueError(f"bus {b}: series of lengths {out[b].shape[0]} and {v.shape[0]}")
                out[b] = out[b] + v
            else:
                out[b] = v.copy()
    return {b: [float(x) for x in v] for b, v in sorted(out.items())}


def apply_forecast_error(
    values: np.ndarray, error_std: float, rng: np.random.Generator | int | None = None
) -> np.ndarray:
    """``values * (1 + e)``, ``e ~ N(0, error_std)`` i.i.d. per element; unchanged for std 0.

    Raises
    ------
    ValueError
        If ``error_std`` is negative or not finite.
    """
    if not (math.isfinite(error_std) and error_std >= 0):
        raise ValueError(f"error_std must be finite and >= 0, got {error_std}")
    values = np.asarray(values, dtype=float)
    if error_std == 0:
        return values.copy()
    gen = np.random.default_rng(rng)
    return values * (1.0 + gen.normal(0.0, error_std, size=values.shape))


_Source = Callable[[int, int], tuple[np.ndarray, np.ndarray]]


def simbench_start(start: dt.datetime, align_weekday: bool = False) -> pd.Timestamp:
    """The instant of SimBench's profile year that step 0 reads (module docstring:
    time alignment): month, day and wall-clock time mapped into 2016, as German
    wall-clock time."""
    mapped = pd.Timestamp(map_to_profile_year(start, SIMBENCH_PROFILE_YEAR, align_weekday=align_weekday))
    return mapped.tz_localize(SIMBENCH_PROFILE_TZ, ambiguous=True, nonexistent="shift_forward")


class BaseLoadModel:
    """Base load of a set of network loads on one clock; values precomputed per step.

    Use the constructors :meth:`from_simbench`, :meth:`from_csv`, :meth:`constant`.

    Parameters
    ----------
    loads : sequence of LoadSpec
    step_s : float
        Step length [s].
    source : callable
        ``source(first_step, n_steps) -> (p_kw, q_kvar)``, each ``(n_steps, L)``.
    horizon_steps : int, default 1
        Steps to compute now.
    chunk_days : bool, default True
        Extend the precomputed horizon by at least one day at a time.

    Attributes
    ----------
    loads : tuple of LoadSpec
    ids : tuple of str
    step_s : float
        Step length [s].
    """

    def __init__(
        self,
        loads: Sequence[LoadSpec],
        step_s: float,
        source: _Source,
        horizon_steps: int = 1,
        *,
        chunk_days: bool = True,
    ) -> None:
        ids = [ld.eid for ld in loads]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise BaseLoadError(f"duplicate load ids {dupes}")
        if not (math.isfinite(step_s) and step_s > 0):
            raise BaseLoadError(f"step_s must be > 0, got {step_s}")
        self.loads = tuple(loads)
        self.ids = tuple(ids)
        self.step_s = float(step_s)
        self._source = source
        self._chunk_days = chunk_days
        self._p = np.zeros((0, len(ids)))
        self._q = np.zeros((0, len(ids)))
        self.ensure(max(int(horizon_steps), 0))

    # --- constructors -------------------------------------------------------

    @staticmethod
    def _tan_phi(loads: Sequence[LoadSpec], power_factor: float | None) -> np.ndarray:
        if power_factor is None:
            return np.array([ld.tan_phi for ld in loads])
        if not 0 < power_factor <= 1:
            raise BaseLoadError(f"power_factor must be in (0, 1], got {power_factor}")
        return np.full(len(loads), math.tan(math.acos(power_factor)))

    @classmethod
    def from_simbench(
        cls,
        loads: Sequence[LoadSpec],
        start: dt.datetime,
        step_s: float,
        *,
        scale: float = 1.0,
        reactive: str = "power_factor",
        power_factor: float | None = None,
        scenario: int = 0,
        align_weekday: bool = False,
        method: str = "auto",
        horizon_steps: int = 1,
        relative: pd.DataFrame | None = None,
    ) -> BaseLoadModel:
        """Base load from SimBench profiles (see the module docstring).

        Parameters
        ----------
        loads : sequence of LoadSpec
            Each with a ``profile``.
        start : datetime.datetime
            Start of step 0 (wall-clock; tz-aware values use their local time).
        step_s : float
            Step length [s].
        scale : float, default 1
            Multiplier on every nominal power [-].
        reactive : {"power_factor", "profile"}
            Reactive power from the load's power factor or SimBench's qload profile.
        power_factor : float, optional
            Common power factor [-] instead of each load's ``q_nom / p_nom``
            (``reactive="power_factor"`` only).
        scenario : int, default 0
            SimBench scenario of the profile file.
        align_weekday : bool, default False
            See :func:`adapters.profiles.map_to_profile_year`.
        method : {"auto", "mean", "interpolate"}
            Resampling (:func:`adapters.profiles.resample_to_steps`).
        horizon_steps : int, default 1
            Steps to precompute now (at least one day).
        relative : pandas.DataFrame, optional
            The relative profiles to use (``<name>_pload``/``_qload`` columns,
            ``Europe/Berlin`` index), e.g. a SimBench network's own
            (:func:`adapters.profiles.simbench_net_profiles`); default: SimBench's
            ``LoadProfile.csv`` of ``scenario``.
        """
        problems = []
        if reactive not in REACTIVE_MODES:
            problems.append(f"reactive must be one of {REACTIVE_MODES}, got {reactive!r}")
        if not (math.isfinite(scale) and scale >= 0):
            problems.append(f"scale must be >= 0, got {scale}")
        unset = [ld.eid for ld in loads if not ld.profile]
        if unset:
            problems.append(f"loads without a SimBench profile: {unset}")
        if problems:
            raise BaseLoadError("; ".join(problems))
        names = sorted({ld.profile for ld in loads})
        if relative is None:
            try:
                rel = simbench_load_profiles(names, scenario)
            except ProfileDataError as exc:
                raise BaseLoadError(str(exc)) from exc
        else:
            missing = sorted({f"{n}_{pq}load" for n in names for pq in "pq"} - set(relative.columns))
            if missing:
                raise BaseLoadError(f"load profiles missing from the given profiles: {missing}")
            rel = relative
        mapped = simbench_start(start, align_weekday)
        p_cols = [f"{ld.profile}_pload" for ld in loads]
        q_cols = [f"{ld.profile}_qload" for ld in loads]
        p_nom = scale * np.array([ld.p_nom_kw for ld in loads])
        q_nom = scale * np.array([ld.q_nom_kvar for ld in loads])
        tan_phi = cls._tan_phi(loads, power_factor)

        def source(first: int, n: int) -> tuple[np.ndarray, np.ndarray]:
            t0 = mapped + pd.Timedelta(seconds=first * step_s)
            cols = sorted(set(p_cols) | (set(q_cols) if reactive == "profile" else set()))
            res = pd.DataFrame(resample_to_steps(rel[cols], t0, step_s, n, method=method, cyclic=True), columns=cols)
            p = res[p_cols].to_numpy() * p_nom
            q = res[q_cols].to_numpy() * q_nom if reactive == "profile" else p * tan_phi
            return p, q

        return cls(loads, step_s, source, horizon_steps)

    @classmethod
    def from_csv(
        cls,
        path: str | os.PathLike,
        loads: Sequence[LoadSpec],
        start: dt.datetime,
        step_s: float,
        *,
        scale: float = 1.0,
        power_factor: float | None = None,
        method: str = "auto",
        delimiter: str = ",",
        horizon_steps: int = 1,
    ) -> BaseLoadModel:
        """Base load from a mosaik-csv compatible file (see the module docstring).

        Parameters
        ----------
        path : path-like
            The CSV file; columns ``<load id>.p_kw`` [kW], optional ``<load id>.q_kvar`` [kvar].
        loads, start, step_s, scale, power_factor, method, horizon_steps
            As in :meth:`from_simbench`.
        delimiter : str, default ","

        Raises
        ------
        adapters.profiles.ProfileDataError
            For format problems (naming file, line and column), missing load
            columns, or a horizon outside the file's time range (when it is reached).
        """
        table = read_timeseries_csv(path, delimiter=delimiter, required_columns=[f"{ld.eid}.p_kw" for ld in loads])
        frame = table.frame
        tan_phi = cls._tan_phi(loads, power_factor)
        has_q = [f"{ld.eid}.q_kvar" in frame.columns for ld in loads]
        start_ts = pd.Timestamp(start)
        if frame.index.tz is None:
            start_ts = start_ts.tz_localize(None)
        elif start_ts.tz is None:
            raise ProfileDataError(f"{path}: time stamps are tz-aware, so the start {start} must be too")

        def source(first: int, n: int) -> tuple[np.ndarray, np.ndarray]:
            t0 = start_ts + pd.Timedelta(seconds=first * step_s)
            p = scale * resample_to_steps(frame[[f"{ld.eid}.p_kw" for ld in loads]], t0, step_s, n, method=method)
            q = p * tan_phi
            q_idx = [j for j, h in enumerate(has_q) if h]
            if q_idx:
                cols = [f"{loads[j].eid}.q_kvar" for j in q_idx]
                q[:, q_idx] = scale * resample_to_steps(frame[cols], t0, step_s, n, method=method)
            return p, q

        # a file need not reach a day beyond the start: extend only by what is asked
        return cls(loads, step_s, source, horizon_steps, chunk_days=False)

    @classmethod
    def constant(
        cls, loads: Sequence[LoadSpec], step_s: float, *, scale: float = 1.0, horizon_steps: int = 1
    ) -> BaseLoadModel:
        """Every load at ``scale`` times its nominal P and Q, all the time."""
        p_nom = scale * np.array([ld.p_nom_kw for ld in loads])
        q_nom = scale * np.array([ld.q_nom_kvar for ld in loads])

        def source(first: int, n: int) -> tuple[np.ndarray, np.ndarray]:
            return np.tile(p_nom, (n, 1)), np.tile(q_nom, (n, 1))

        return cls(loads, step_s, source, horizon_steps)

    # --- look-ups -----------------------------------------------------------

    @property
    def n_precomputed(self) -> int:
        """Number of steps computed so far."""
        return self._p.shape[0]

    def ensure(self, n_steps: int) -> None:
        """Make sure steps ``0 .. n_steps - 1`` are computed (whole days at a time for profiles)."""
        have = self._p.shape[0]
        if n_steps <= have:
            return
        n_new = n_steps - have
        if self._chunk_days:
            n_new = max(n_new, int(math.ceil(_DAY_S / self.step_s)))
        p, q = self._source(have, n_new)
        if not (np.all(np.isfinite(p)) and np.all(np.isfinite(q))):
            raise BaseLoadError(f"non-finite base load in steps {have}..{have + n_new - 1}")
        self._p = np.vstack([self._p, p])
        self._q = np.vstack([self._q, q])

    def window(self, start_step: int, n_steps: int) -> tuple[np.ndarray, np.ndarray]:
        """``(p_kw, q_kvar)`` of steps ``start_step ...``, each ``(n_steps, L)``, load convention."""
        if start_step < 0 or n_steps < 0:
            raise BaseLoadError(f"start_step and n_steps must be >= 0, got {start_step}, {n_steps}")
        self.ensure(start_step + n_steps)
        sl = slice(start_step, start_step + n_steps)
        return self._p[sl].copy(), self._q[sl].copy()

    def step_values(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """``(p_kw, q_kvar)`` of all loads at one step, each ``(L,)``."""
        p, q = self.window(step, 1)
        return p[0], q[0]


def forecast(
    model: BaseLoadModel,
    start_step: int,
    n_steps: int,
    error_std: float = 0.0,
    rng: np.random.Generator | int | None = None,
) -> Forecast:
    """Base-load forecast for the scheduler: ``(n_steps, L)`` matrices.

    P and Q of each load and step are multiplied by the same ``1 + e``,
    ``e ~ N(0, error_std)`` i.i.d. per step and load (the power factor is kept);
    ``error_std = 0`` gives the perfect forecast, identical to what the simulator
    publishes.

    Parameters
    ----------
    model : BaseLoadModel
    start_step : int
        First step.
    n_steps : int
        Number of steps.
    error_std : float, default 0
        Standard deviation of the relative error [-].
    rng : numpy.random.Generator or int or None
        Generator or seed (``numpy.random.default_rng``).
    """
    p, q = model.window(start_step, n_steps)
    factor = apply_forecast_error(np.ones_like(p), error_std, rng)
    return Forecast(model.ids, start_step, p * factor, q * factor)
