"""Time-series data sets: SimBench standard load profiles and CSV files.

Everything here is I/O or bookkeeping on time axes; the physics lives in
``simulators/baseload/model.py`` and ``simulators/pv/model.py``.

SimBench load profiles
    The ``simbench`` package ships its profiles as CSV inside the package
    (``simbench/networks/1-complete_data-mixed-all-<scenario>-sw/LoadProfile.csv``,
    ";"-separated, 35136 rows = every 15 min of the leap year 2016). Its time
    labels are German wall-clock time *with* daylight saving: 27 March 2016 jumps
    from 01:45 to 03:00 and 30 October 2016 repeats 02:00-02:45, so the rows are
    consecutive 15-min intervals in absolute time. :func:`simbench_load_profiles`
    therefore returns them with a tz-aware ``Europe/Berlin`` index (the repeated
    hour resolved by order), strictly increasing. Each standard profile ``X`` (``H0-A``,
    ``G1-A``, ``L0-A``, ...) has two columns, ``X_pload`` and ``X_qload``, in per
    unit of the element's ``p_mw`` and ``q_mvar`` respectively; every ``_pload``
    column peaks at exactly 1.0. :func:`simbench_load_profiles` reads only the
    requested columns (about 0.4 s for the 50 MB file) and caches them per process.
    No network access is needed.

CSV time series (mosaik-csv compatible)
    :func:`read_timeseries_csv` reads the format of the stock ``mosaik-csv``
    component (``mosaik_csv:CSV``, version 2.0.1)::

        BaseLoad
        Date,Load-R1.p_kw,Load-R1.q_kvar,Load-R11.p_kw
        2016-05-15 00:00:00,12.1,3.9,0.9
        2016-05-15 00:15:00,11.8,3.8,0.95

    - line 1 (optional): the model name, a single field without delimiter;
    - header: the time column first (any name, ``Date`` by convention), then one
      column per attribute;
    - time stamps: ISO 8601 (``YYYY-MM-DD HH:mm:ss``), strictly increasing; the
      value of a row holds from its time stamp until the next row (the last row
      holds for the same width as the row before it);
    - values: finite numbers.

Resampling
    :func:`resample_to_steps` turns such piecewise-constant series into the values
    of simulation steps ``[t, t + step)``: the exact mean over each step
    (``method="mean"``), or linear interpolation between the interval mid-points
    evaluated at the step mid-point (``method="interpolate"``; smoother when the
    step is shorter than the data resolution). ``method="auto"`` takes the mean
    when the step is at least the data resolution and interpolates otherwise.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

SIMBENCH_PROFILE_YEAR = 2016
SIMBENCH_PROFILE_RESOLUTION_S = 900
SIMBENCH_PROFILE_TZ = "Europe/Berlin"
RESAMPLE_METHODS = ("auto", "mean", "interpolate")


class ProfileDataError(ValueError):
    """A data file or profile name is unusable; the message names file, column, row."""


# ---------------------------------------------------------------------------
# SimBench
# ---------------------------------------------------------------------------


def simbench_load_profile_path(scenario: int = 0) -> Path:
    """Path of SimBench's ``LoadProfile.csv`` for scenario 0 (today), 1 or 2 (future).

    The standard household/commercial profiles (``H0-*``, ``G*-*``, ``L*-*``) are
    the same in all three scenarios.
    """
    if scenario not in (0, 1, 2):
        raise ProfileDataError(f"SimBench scenario must be 0, 1 or 2, got {scenario!r}")
    import simbench

    return Path(simbench.sb_dir) / "networks" / f"1-complete_data-mixed-all-{scenario}-sw" / "LoadProfile.csv"


@functools.lru_cache(maxsize=4)
def simbench_load_profile_names(scenario: int = 0) -> tuple[str, ...]:
    """Names of all SimBench load profiles that have a ``_pload`` column (``"H0-A"``, ...)."""
    header = pd.read_csv(simbench_load_profile_path(scenario), sep=";", nrows=0).columns
    return tuple(sorted(c[: -len("_pload")] for c in header if c.endswith("_pload")))


@functools.lru_cache(maxsize=16)
def _simbench_columns(columns: tuple[str, ...], scenario: int) -> pd.DataFrame:
    path = simbench_load_profile_path(scenario)
    frame = pd.read_csv(path, sep=";", usecols=["time", *columns])
    frame.index = simbench_time_index(frame.pop("time"))
    return frame[list(columns)].astype(float)


def simbench_load_profiles(names: Iterable[str], scenario: int = 0) -> pd.DataFrame:
    """SimBench standard load profiles, offline from the ``simbench`` package.

    Parameters
    ----------
    names : iterable of str
        Profile names such as ``"H0-A"`` (household), ``"G1-A"`` (commercial,
        weekdays), ``"G3-A"`` (commercial, continuous), ``"L0-A"`` (agriculture).
    scenario : int, default 0
        SimBench scenario (0, 1, 2).

    Returns
    -------
    pandas.DataFrame
        Index: ``DatetimeIndex`` in ``Europe/Berlin`` (tz-aware, strictly
        increasing), 2016-01-01 00:00 CET to 2016-12-31 23:45 CET at 15-min
        resolution (35136 rows).
        Columns ``<name>_pload`` and ``<name>_qload`` for every name, in per unit
        of the load's nominal ``p_mw`` and ``q_mvar`` [-]. A copy: callers may
        modify it.

    Raises
    ------
    ProfileDataError
        If a name is not a SimBench load profile (the message lists the valid ones).
    """
    names = tuple(dict.fromkeys(names))
    available = simbench_load_profile_names(scenario)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ProfileDataError(
            f"unknown SimBench load profile(s) {unknown}: available are {', '.join(available)}"
        )
    columns = tuple(f"{n}_{pq}load" for n in names for pq in ("p", "q"))
    return _simbench_columns(columns, scenario).copy()


SIMBENCH_PROFILE_TABLES = {"load": ("load",), "sgen": ("powerplants", "renewables"),
                           "storage": ("storage",)}
"""Tables of ``net.profiles`` holding each element type's relative profiles (sgens
take both power-plant and renewable profiles, as ``simbench.get_absolute_values``)."""


def simbench_time_index(labels: pd.Series) -> pd.DatetimeIndex:
    """SimBench time labels (``"01.01.2016 00:15"``, German wall clock with daylight
    saving) as a strictly increasing ``Europe/Berlin`` index (repeated hour by order)."""
    index = pd.DatetimeIndex(pd.to_datetime(labels, format="%d.%m.%Y %H:%M"))
    return index.tz_localize(SIMBENCH_PROFILE_TZ, ambiguous="infer")


def simbench_net_profiles(net, element: str) -> pd.DataFrame:
    """The relative profiles SimBench attached to a network for one element type.

    These are SimBench's own data as ``simbench.get_simbench_net`` loads them into
    ``net.profiles`` (the tables ``simbench.get_absolute_values`` multiplies with
    the elements' ``p_mw``/``q_mvar``).

    Parameters
    ----------
    net : pandapower.pandapowerNet
        A SimBench network (``adapters.networks.load_network("simbench:<code>")``).
    element : {"load", "sgen", "storage"}

    Returns
    -------
    pandas.DataFrame
        Index ``Europe/Berlin`` (see :func:`simbench_time_index`), 35136 rows at
        15 min; one column per profile (loads: ``<name>_pload``, ``<name>_qload``)
        [per unit of the element's nominal power, -].

    Raises
    ------
    ProfileDataError
        If the network carries no SimBench profiles for ``element``.
    """
    if element not in SIMBENCH_PROFILE_TABLES:
        raise ProfileDataError(f"element must be one of {sorted(SIMBENCH_PROFILE_TABLES)}, got {element!r}")
    profiles = net.get("profiles") if hasattr(net, "get") else None
    frames = [profiles[t] for t in SIMBENCH_PROFILE_TABLES[element]
              if isinstance(profiles, dict) and t in profiles and len(profiles[t])]
    if not frames:
        raise ProfileDataError(f"the network has no SimBench {element} profiles (net.profiles)")
    index = simbench_time_index(frames[0]["time"])
    out = pd.concat([f.drop(columns="time").set_axis(index, axis=0) for f in frames], axis=1)
    return out.loc[:, ~out.columns.duplicated()].astype(float)


# ---------------------------------------------------------------------------
# CSV
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TimeSeriesTable:
    """A CSV time series: model name from the first line and the data.

    Attributes
    ----------
    model_name : str
        Model name of line 1, or ``"Data"`` (mosaik-csv's default) when absent.
    frame : pandas.DataFrame
        Float values, naive or tz-aware ``DatetimeIndex`` (as written in the file).
    """

    model_name: str
    frame: pd.DataFrame


def read_timeseries_csv(
    path: str | os.PathLike,
    *,
    delimiter: str = ",",
    required_columns: Sequence[str] = (),
) -> TimeSeriesTable:
    """Read a mosaik-csv compatible time-series file (format in the module docstring).

    Parameters
    ----------
    path : path-like
        The CSV file.
    delimiter : str, default ","
        Field separator (mosaik-csv's ``delimiter`` parameter).
    required_columns : sequence of str
        Columns that must be present (all missing ones are reported at once).

    Returns
    -------
    TimeSeriesTable

    Raises
    ------
    ProfileDataError
        With the file name and the offending line, column or time stamp: missing
        file, no data rows, unparsable or non-increasing time stamps, duplicate or
        missing columns, non-numeric or non-finite values.
    """
    path = Path(path)
    if not path.is_file():
        raise ProfileDataError(f"{path}: file does not exist")
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh, delimiter=delimiter)
            numbered = [(reader.line_num, r) for r in reader if any(cell.strip() for cell in r)]
    except UnicodeDecodeError as exc:
        raise ProfileDataError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                               f"{exc.start}); a CSV time-series file is expected") from None
    except csv.Error as exc:
        raise ProfileDataError(f"{path}: not a CSV file ({exc})") from None
    except OSError as exc:
        raise ProfileDataError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    line_of = [n for n, _ in numbered]
    rows = [r for _, r in numbered]
    if not rows:
        raise ProfileDataError(f"{path}: file is empty")
    model_name = "Data"
    header_idx = 0
    if len(rows[0]) == 1:
        model_name = rows[0][0].strip()
        header_idx = 1
    if len(rows) <= header_idx:
        raise ProfileDataError(f"{path}: no header line after the model name {model_name!r}")
    header = [h.split("#", 1)[0].strip() for h in rows[header_idx]]
    if len(header) < 2:
        raise ProfileDataError(
            f"{path}: header line {line_of[header_idx]} must hold a time column and at least one "
            f"value column separated by {delimiter!r}, got {rows[header_idx]!r}"
        )
    columns = header[1:]
    empty = [i + 2 for i, c in enumerate(columns) if not c]
    if empty:
        raise ProfileDataError(f"{path}: header line {line_of[header_idx]}: empty column name(s) at field(s) {empty}")
    dupes = sorted({c for c in columns if columns.count(c) > 1})
    if dupes:
        raise ProfileDataError(f"{path}: duplicate column(s) {dupes}")
    missing = [c for c in required_columns if c not in columns]
    if missing:
        raise ProfileDataError(f"{path}: missing column(s) {missing}; the file has {columns}")
    data = rows[header_idx + 1:]
    if not data:
        raise ProfileDataError(f"{path}: no data rows")
    times = []
    values = np.empty((len(data), len(columns)))
    for r, row in enumerate(data):
        line = line_of[header_idx + 1 + r]
        if len(row) != len(header):
            raise ProfileDataError(
                f"{path}: line {line} has {len(row)} fields, the header has {len(header)}"
            )
        try:
            times.append(pd.Timestamp(row[0].strip()))
        except ValueError as exc:
            raise ProfileDataError(
                f"{path}: line {line}: cannot parse time stamp {row[0]!r} (use ISO 8601, "
                f"e.g. 2016-05-15 00:15:00)"
            ) from exc
        for c, cell in enumerate(row[1:]):
            try:
                v = float(cell)
            except ValueError:
                raise ProfileDataError(
                    f"{path}: line {line}, column {columns[c]!r}: not a number: {cell!r}"
                ) from None
            if not math.isfinite(v):
                raise ProfileDataError(f"{path}: line {line}, column {columns[c]!r}: not finite: {cell!r}")
            values[r, c] = v
    try:
        index = pd.DatetimeIndex(times)
    except (ValueError, TypeError) as exc:
        raise ProfileDataError(f"{path}: time stamps mix time zones or formats: {exc}") from exc
    steps = np.diff(index.asi8)
    bad = np.flatnonzero(steps <= 0)
    if bad.size:
        r = int(bad[0]) + 1
        raise ProfileDataError(
            f"{path}: line {line_of[header_idx + 1 + r]}: time stamp {data[r][0]!r} "
            f"is not after the previous one {data[r - 1][0]!r}"
        )
    return TimeSeriesTable(model_name, pd.DataFrame(values, index=index, columns=columns))


def write_timeseries_csv(
    path: str | os.PathLike, frame: pd.DataFrame, model_name: str = "Data", *, delimiter: str = ","
) -> None:
    """Write ``frame`` in the mosaik-csv format read by :func:`read_timeseries_csv`.

    Parameters
    ----------
    path : path-like
        Output file (overwritten).
    frame : pandas.DataFrame
        ``DatetimeIndex`` and numeric columns (the attribute names).
    model_name : str, default "Data"
        Written as line 1; mosaik-csv uses it as its model name.
    """
    if not isinstance(frame.index, pd.DatetimeIndex):
        raise ProfileDataError("frame must have a DatetimeIndex")
    if delimiter in model_name:
        raise ProfileDataError(f"model name {model_name!r} must not contain the delimiter {delimiter!r}")
    with Path(path).open("w", newline="") as fh:
        writer = csv.writer(fh, delimiter=delimiter)
        writer.writerow([model_name])
        writer.writerow(["Date", *map(str, frame.columns)])
        for t, row in zip(frame.index, frame.to_numpy(dtype=float)):
            writer.writerow([t.strftime("%Y-%m-%d %H:%M:%S"), *(repr(float(v)) for v in row)])


# ---------------------------------------------------------------------------
# Time axes
# ---------------------------------------------------------------------------


def map_to_profile_year(
    start: dt.datetime, year: int = SIMBENCH_PROFILE_YEAR, *, align_weekday: bool = False
) -> dt.datetime:
    """Map a scenario start onto a profile year by month, day and time of day.

    Parameters
    ----------
    start : datetime.datetime
        Scenario start. A tz-aware value is taken by its local wall-clock time
        (profiles are in local time).
    year : int, default 2016
        The profile's year (SimBench: 2016, a leap year, so 29 February exists).
    align_weekday : bool, default False
        If True, shift the result by -3..+3 days to the nearest day of ``year`` with
        the same weekday as ``start`` (commercial profiles differ by weekday).

    Returns
    -------
    datetime.datetime
        Naive datetime in ``year``.
    """
    naive = start.replace(tzinfo=None)
    try:
        mapped = naive.replace(year=year)
    except ValueError:  # 29 February into a non-leap profile year
        mapped = naive.replace(year=year, day=28)
    if align_weekday:
        shift = (naive.weekday() - mapped.weekday()) % 7
        if shift > 3:
            shift -= 7
        mapped = mapped + dt.timedelta(days=shift)
        if mapped.year != year:  # keep inside the profile year
            mapped = mapped - dt.timedelta(days=7) if mapped.year > year else mapped + dt.timedelta(days=7)
    return mapped


def resample_to_steps(
    frame: pd.DataFrame,
    start: dt.datetime | pd.Timestamp,
    step_s: float,
    n_steps: int,
    *,
    method: str = "auto",
    cyclic: bool = False,
) -> np.ndarray:
    """Values of a piecewise-constant series over the steps ``[start + k step, ...)``.

    Parameters
    ----------
    frame : pandas.DataFrame
        ``DatetimeIndex`` strictly increasing; each row holds from its time stamp to
        the next (the last row for the width of the one before, or 1 h for a single
        row).
    start : datetime
        Start of step 0, comparable with the index (both naive or both tz-aware).
    step_s : float
        Step length [s], > 0.
    n_steps : int
        Number of steps, >= 0.
    method : {"auto", "mean", "interpolate"}
        See the module docstring.
    cyclic : bool, default False
        Repeat the series periodically (period = span of the data including the
        last row's width); needed for a horizon leaving the profile year.

    Returns
    -------
    numpy.ndarray
        Shape ``(n_steps, n_columns)``, same units as the frame.

    Raises
    ------
    ProfileDataError
        If the steps leave the data range (and ``cyclic`` is False).
    """
    if method not in RESAMPLE_METHODS:
        raise ProfileDataError(f"method must be one of {RESAMPLE_METHODS}, got {method!r}")
    if not step_s > 0:
        raise ProfileDataError(f"step_s must be > 0, got {step_s}")
    if n_steps < 0:
        raise ProfileDataError(f"n_steps must be >= 0, got {n_steps}")
    if len(frame) == 0:
        raise ProfileDataError("the time series has no rows")
    index = pd.DatetimeIndex(frame.index)
    if not (index.is_monotonic_increasing and index.is_unique):
        raise ProfileDataError("the time stamps must increase strictly")
    values = frame.to_numpy(dtype=float)
    t0 = index[0]
    knots = (index - t0).total_seconds().to_numpy()
    widths = np.diff(knots)
    last = widths[-1] if widths.size else 3600.0
    widths = np.append(widths, last)
    bounds = np.append(knots, knots[-1] + last)
    period = bounds[-1]
    try:
        offset = (pd.Timestamp(start) - t0).total_seconds()
    except TypeError as exc:
        raise ProfileDataError(f"start {start} and the data's time stamps must both be naive or both tz-aware") from exc
    edges = offset + step_s * np.arange(n_steps + 1, dtype=float)
    if n_steps == 0:
        return np.empty((0, values.shape[1]))
    if not cyclic:
        lo, hi = edges[0], edges[-1]
        if lo < -1e-6 or hi > period + 1e-6:
            end = pd.Timestamp(start) + pd.Timedelta(seconds=step_s * n_steps)
            raise ProfileDataError(
                f"steps from {pd.Timestamp(start)} to {end} leave the data range "
                f"{t0} to {t0 + pd.Timedelta(seconds=period)}"
            )
    resolution = float(np.median(widths))
    if method == "auto":
        method = "mean" if step_s >= resolution - 1e-9 else "interpolate"
    if method == "mean":
        energy = np.vstack([np.zeros((1, values.shape[1])), np.cumsum(values * widths[:, None], axis=0)])

        def cumulative(t: np.ndarray) -> np.ndarray:
            k = np.floor(t / period) if cyclic else np.zeros_like(t)
            r = np.clip(t - k * period, 0.0, period)
            i = np.clip(np.searchsorted(bounds, r, side="right") - 1, 0, len(knots) - 1)
            return k[:, None] * energy[-1] + energy[i] + values[i] * (r - bounds[i])[:, None]

        e = cumulative(edges)
        return (e[1:] - e[:-1]) / step_s
    mids = knots + widths / 2
    t = (edges[:-1] + edges[1:]) / 2
    if cyclic:
        t = np.mod(t, period)
        mids = np.concatenate([[mids[-1] - period], mids, [mids[0] + period]])
        values = np.vstack([values[-1:], values, values[:1]])
    out = np.empty((n_steps, values.shape[1]))
    for c in range(values.shape[1]):
        out[:, c] = np.interp(t, mids, values[:, c])
    return out


def month_average_profiles(rel: pd.DataFrame, month: int) -> pd.DataFrame:
    """Every day of ``rel`` replaced by the average day of one month (seed 003, IV-B).

    Seed 003 drives its houses with "the average load profile for May". For each
    column, the values of all days of ``month`` (1-12) are averaged per local
    clock time (hour, minute) of the index; the result has ``rel``'s index and
    columns and, on every day of the year, that average day, so any start date
    and the cyclic resampling of :func:`resample_to_steps` read the same day.
    The 15-min slots a daylight-saving change skips or repeats take the average
    of the days that have them.

    Raises
    ------
    ProfileDataError
        If ``month`` is not an int in 1..12 or no row of ``rel`` is in that month.
    """
    if isinstance(month, bool) or not isinstance(month, int) or not 1 <= month <= 12:
        raise ProfileDataError(f"month must be an int in 1..12, got {month!r}")
    idx = pd.DatetimeIndex(rel.index)
    sel = idx.month == month
    if not sel.any():
        raise ProfileDataError(f"no profile rows in month {month}")
    slot = idx.hour * 60 + idx.minute
    day = rel[sel].groupby(slot[sel]).mean()
    return pd.DataFrame(day.reindex(slot).to_numpy(), index=rel.index, columns=rel.columns)
