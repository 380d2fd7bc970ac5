"""Shared mosaik stepping of simulators whose model precomputes P and Q per step.

The base-load and PV simulators both hold a model with ``step_values(step) ->
(p_kw, q_kvar)`` arrays (one column per unit) and publish, per entity, the sum over
that entity's columns (one unit, or a parent summing its children). A parent also
publishes ``records``: its units' values as one table (:mod:`simulators.records`),
and, where the unit ids are the grid's child ids (``grid_eids``: base load, DER),
``injections``: the same table for the grid's ``Grid.injections`` input (one value
a step instead of two per unit).
"""

from __future__ import annotations

import math
from typing import Any

import mosaik_api_v3
import numpy as np
from mosaik_api_v3.datetime import Converter

from simulators.records import as_lists, column


class PQProfileSimulator(mosaik_api_v3.Simulator):
    """Time-based stepping and ``get_data`` for precomputed P/Q models.

    Subclasses set ``self.model``, ``self.sid``, ``self.step_ticks`` and implement
    :meth:`entity_columns`; :meth:`prepare` is called before each step.
    """

    kind = "profile"
    records_table = "Unit"
    """Table name of the units in ``records``."""
    grid_eids = False
    """Whether the unit ids are the grid simulator's child ids (``injections`` output)."""

    def __init__(self, meta: dict) -> None:
        super().__init__(meta)
        self.model = None
        self.sid: str | None = None
        self.step_ticks = 1
        self._values: tuple[np.ndarray, np.ndarray] | None = None

    def set_clock(self, sid: str, time_resolution: float, start_date: str, step_s: float,
                  horizon_s: float | None, numpy_columns: bool = False) -> None:
        """Check and keep the clock (``init``'s common part).

        Parameters
        ----------
        time_resolution : float
            Seconds per mosaik tick [s], > 0.
        start_date : str
            ISO 8601 time of tick 0.
        step_s : float
            Step length [s]; a positive whole number of ticks.
        horizon_s : float or None
            Horizon to precompute [s] (None: one step; models extend on demand).
        numpy_columns : bool, default False
            Publish column-wise outputs (``records``, ``fleet_state``) as numpy
            arrays (only if every consumer runs in mosaik's process;
            :mod:`simulators.records`).
        """
        if not time_resolution > 0:
            raise ValueError(f"time_resolution must be > 0 s, got {time_resolution}")
        ticks = step_s / time_resolution
        if not (step_s > 0 and abs(ticks - round(ticks)) < 1e-9 and round(ticks) >= 1):
            raise ValueError(
                f"step_s ({step_s} s) must be a positive whole number of time_resolution ({time_resolution} s)"
            )
        self.sid = sid
        self.numpy_columns = bool(numpy_columns)
        self.time_resolution = float(time_resolution)
        self.step_s = float(step_s)
        self.step_ticks = int(round(ticks))
        self.start = Converter(start_date, time_resolution).datetime_from_step(0)
        self.horizon_steps = 1 if horizon_s is None else max(1, int(math.ceil(horizon_s / step_s)))

    def prepare(self) -> None:
        """Hook run before every step (e.g. to build the model lazily)."""

    def entity_columns(self, eid: str) -> list[int]:
        """Model columns whose sum entity ``eid`` publishes; ValueError if unknown."""
        raise NotImplementedError

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        self.prepare()
        if self.model is None:
            raise RuntimeError(f"{self.kind} simulator {self.sid}: create entities before stepping")
        p, q = self.model.step_values(time // self.step_ticks)
        if not (np.all(np.isfinite(p)) and np.all(np.isfinite(q))):
            raise ValueError(f"{self.kind} simulator {self.sid}: non-finite output at tick {time}")
        self._values = (p, q)
        return time + self.step_ticks

    def get_data(self, outputs: dict) -> dict:
        if self._values is None:
            raise RuntimeError("get_data before the first step")
        p, q = self._values
        arrays = {"p_kw": p, "q_kvar": q}
        data: dict[str, dict[str, Any]] = {}
        for eid, attrs in outputs.items():
            cols = self.entity_columns(eid)
            row = {}
            for attr in attrs:
                if attr == "records":
                    row[attr] = self._records(cols)
                    continue
                if attr == "injections" and self.grid_eids:
                    row[attr] = self._records(cols)[self.records_table]
                    continue
                if attr not in arrays:
                    raise ValueError(f"unknown attribute {attr!r} of {eid}")
                row[attr] = float(arrays[attr][cols].sum())
            data[eid] = row
        return data

    def _records(self, cols: list[int]) -> dict[str, dict[str, Any]]:
        """The units behind ``cols`` as one ``records`` table."""
        p, q = self._values
        ids = self.model.ids
        listed = as_lists(self)
        return {self.records_table: {"entity": [ids[c] for c in cols],
                                     "p_kw": column(p[cols], listed),
                                     "q_kvar": column(q[cols], listed)}}
