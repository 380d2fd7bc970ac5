"""pandapower's own time series on a SimBench grid: the reference the co-simulation is
checked against (``tests/test_simbench_timeseries.py``, ``bench/simbench_year.py``).

What a pandapower user does with a SimBench grid (simbench's README)::

    profiles = simbench.get_absolute_values(net, profiles_instead_of_study_cases=True)
    simbench.apply_const_controllers(net, profiles)
    pandapower.timeseries.run_timeseries(net, time_steps)

Every load (P and Q), sgen, gen and storage unit follows its SimBench profile, one
power flow per 15-min row of 2016 (row 0 = 1 January 00:00 German time).
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from adapters.networks import load_network


@dataclass(frozen=True)
class TimeSeriesReference:
    """Results of ``run_timeseries`` (rows: time steps; columns: pandapower indices).

    Attributes
    ----------
    vm_pu : pandas.DataFrame
        Bus voltage magnitude [pu].
    line_loading_percent : pandas.DataFrame
        Line loading [%].
    run_s : float
        Wall time of ``run_timeseries`` alone [s].
    """

    vm_pu: pd.DataFrame
    line_loading_percent: pd.DataFrame
    run_s: float


def no_ev_scenario(network: str, start: str, n_steps: int, **grid) -> dict:
    """A scenario document (as parsed TOML) that runs ``network`` as it ships, without
    EVs, ``n_steps`` of 15 min from ``start`` (ISO, German wall clock): loads on
    their SimBench profiles, every sgen and storage unit on its own."""
    import datetime as dt

    t0 = dt.datetime.fromisoformat(start)
    return {
        "scenario": {"name": "simbench", "start": t0, "end": t0 + dt.timedelta(minutes=15 * n_steps),
                     "step_s": 900, "timezone": "Europe/Berlin"},
        "grid": {"network": network, "vm_min_pu": 0.9, "vm_max_pu": 1.1, **grid},
        "baseload": {"source": "simbench"},
        "scheduler": {"strategy": "uncoordinated"},
    }


def simbench_row(net, wall_clock: str) -> int:
    """Row of SimBench's profile year labelled ``wall_clock`` (German time, e.g.
    ``"2016-06-01 00:00"``; the labels carry daylight saving, so summer rows are
    not ``4 * hours`` from 1 January)."""
    from adapters.profiles import simbench_time_index

    index = simbench_time_index(net.profiles["load"]["time"])
    row = int(index.get_indexer([pd.Timestamp(wall_clock, tz="Europe/Berlin")])[0])
    if row < 0:
        raise ValueError(f"{wall_clock!r} is not a row of SimBench's profile year")
    return row


def run_reference(network: str, first_row: int, n_steps: int) -> TimeSeriesReference:
    """``run_timeseries`` with simbench's constant controllers over rows
    ``first_row .. first_row + n_steps - 1`` of the SimBench year.

    Parameters
    ----------
    network : str
        ``"simbench:<code>"``.
    first_row : int
        First 15-min row of SimBench's 2016 (0 = 1 January 00:00).
    n_steps : int
        Number of rows (power flows).
    """
    import pandapower.timeseries as ts
    import simbench

    net = load_network(network)
    profiles = simbench.get_absolute_values(net, profiles_instead_of_study_cases=True)
    simbench.apply_const_controllers(net, profiles)
    steps = range(first_row, first_row + n_steps)
    writer = ts.OutputWriter(net, time_steps=steps, output_path=None,
                             log_variables=[("res_bus", "vm_pu"), ("res_line", "loading_percent")])
    t0 = time.perf_counter()
    # run_timeseries logs progress and warns per step; the numbers are what counts here
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            ts.run_timeseries(net, time_steps=steps, verbose=False, numba=False,
                              tolerance_mva=1e-10)
    finally:
        logging.disable(previous)
    run_s = time.perf_counter() - t0
    out = writer.output
    vm = _by_element_index(out["res_bus.vm_pu"], net.bus.index, "bus")
    loading = _by_element_index(out["res_line.loading_percent"], net.line.index, "line")
    return TimeSeriesReference(vm.astype(float), loading.astype(float).fillna(0.0), run_s)


def _by_element_index(frame: pd.DataFrame, index: pd.Index, element: str) -> pd.DataFrame:
    """``frame`` (rows: time steps) with its columns labelled by pandapower element index.

    With only ``res_bus``/``res_line`` logged, ``run_timeseries`` reads the results in
    one batch after the run and the OutputWriter labels those columns by *position*
    (0 .. n-1, in ``net.<element>`` order), not by index; on a grid whose index has
    gaps (SimBench 1-LV-rural2: 97 buses numbered up to 288) position 96 is no bus.
    Both paths keep ``net.<element>`` order, so the index is the right label for each.
    """
    if frame.shape[1] != len(index):
        raise ValueError(f"run_timeseries logged {frame.shape[1]} {element} columns, the net has {len(index)}")
    frame = frame.reset_index(drop=True)
    frame.columns = index
    return frame


def max_differences(vm_cosim: np.ndarray, loading_cosim: np.ndarray,
                    ref: TimeSeriesReference) -> tuple[float, float]:
    """Largest |co-simulation - reference| of voltage [pu] and line loading [%].

    ``vm_cosim``/``loading_cosim`` are ``(n_steps, n)`` with the reference's columns.
    """
    vm_ref = ref.vm_pu.to_numpy()
    ok = np.isfinite(vm_ref)
    dv = float(np.max(np.abs(np.where(ok, vm_cosim - vm_ref, 0.0))))
    dl = float(np.max(np.abs(loading_cosim - ref.line_loading_percent.to_numpy())))
    return dv, dl
