"""The scheduler's view of the fleet: one column per EV attribute.

The fleet simulator publishes ``fleet_state`` column-wise (``{"ev_id": [...],
"soc": [...], ...}``, :meth:`simulators.ev_fleet.model.FleetModel.fleet_state`):
one list or array per attribute instead of a dict per EV, which costs the
publisher, mosaik's wire format and the consumer per attribute, not per EV.
:class:`FleetView` wraps it. Vectorised code reads columns (:meth:`FleetView.col`);
everything else reads it as the mapping ``ev_id -> {attribute: value}`` it
always was (rows are built on first access).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

#: Columns every fleet state has, with their numpy kinds.
COLUMNS: dict[str, type] = {
    "soc": float, "plugged": bool, "bus": int, "home_bus": int, "capacity_kwh": float,
    "charger_kva": float, "efficiency": float, "can_discharge": bool, "can_reactive": bool,
    "departure_s": float, "soc_target": float, "soc_min": float, "soc_max": float,
    "autonomous": bool,
}
#: Columns that must be finite numbers.
FINITE = ("soc", "departure_s", "capacity_kwh", "charger_kva", "efficiency", "soc_target")


class FleetView(Mapping[str, Mapping[str, Any]]):
    """The arrived EVs, column-wise, readable as ``ev_id -> state dict``.

    Parameters
    ----------
    ids : list of str
        EV ids, one per row.
    columns : mapping
        attribute -> array of one value per row (see :data:`COLUMNS`); more
        attributes are kept as they are.
    """

    def __init__(self, ids: list[str], columns: Mapping[str, np.ndarray]):
        self.ids = list(ids)
        self._cols = dict(columns)
        self._index: dict[str, int] | None = None
        self._rows: dict[str, dict[str, Any]] = {}
        self._lists: dict[str, list] | None = None

    # ----------------------------------------------------------- construction ---
    @classmethod
    def from_value(cls, value: Any) -> FleetView:
        """A view of ``fleet_state`` given column-wise (``"ev_id"`` key) or as
        ``ev_id -> state dict``; ValueError naming the EV and attribute on bad data."""
        if isinstance(value, FleetView):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(f"fleet_state must be a dict, got {type(value).__name__}")
        if "ev_id" in value and not isinstance(value["ev_id"], Mapping):
            ids = [str(e) for e in value["ev_id"]]
            columns = {}
            for name, col in value.items():
                if name == "ev_id":
                    continue
                arr = np.asarray(col, dtype=COLUMNS[name]) if name in COLUMNS else np.asarray(col)
                if arr.shape != (len(ids),):
                    raise ValueError(f"fleet_state column {name!r} has {arr.size} values for {len(ids)} EVs")
                columns[name] = arr
            view = cls(ids, columns)
        else:
            view = cls.from_rows(value)
        view.check()
        return view

    @classmethod
    def from_rows(cls, rows: Mapping[str, Mapping[str, Any]]) -> FleetView:
        """A view of ``ev_id -> state dict`` (the attributes of the first EV)."""
        ids = list(rows)
        names = list(next(iter(rows.values()))) if rows else list(COLUMNS)
        columns = {}
        for name in names:
            try:
                values = [rows[e][name] for e in ids]
            except KeyError as err:
                raise ValueError(f"fleet_state of {err.args[0]!r}: missing {name!r}") from None
            columns[name] = np.asarray(values, dtype=COLUMNS.get(name)) if name in COLUMNS \
                else np.asarray(values, dtype=object)
        return cls(ids, columns)

    def check(self) -> None:
        """ValueError naming the first EV whose numeric state is not finite."""
        for name in FINITE:
            col = self._cols.get(name)
            if col is not None and col.size and not np.isfinite(col).all():
                i = int(np.flatnonzero(~np.isfinite(col))[0])
                raise ValueError(f"fleet_state of {self.ids[i]}: {name} is not finite ({col[i]!r})")

    # ---------------------------------------------------------------- columns ---
    def col(self, name: str) -> np.ndarray:
        """One attribute of every EV, in row order."""
        return self._cols[name]

    def has(self, name: str) -> bool:
        return name in self._cols

    def select(self, mask: np.ndarray) -> FleetView:
        """The EVs where ``mask`` is true (a new view)."""
        rows = np.flatnonzero(mask)
        if rows.size == len(self.ids):
            return self
        return FleetView([self.ids[i] for i in rows.tolist()],
                         {name: col[rows] for name, col in self._cols.items()})

    def plugged(self) -> FleetView:
        """The EVs plugged in now (all of them if the state has no ``plugged``)."""
        if "plugged" not in self._cols:
            return self
        return self.select(self._cols["plugged"])

    # ---------------------------------------------------------------- mapping ---
    def __getitem__(self, ev_id: str) -> dict[str, Any]:
        row = self._rows.get(ev_id)
        if row is None:
            if self._index is None:
                self._index = {e: i for i, e in enumerate(self.ids)}
            if self._lists is None:  # built-in Python values, converted once per column
                self._lists = {name: col.tolist() for name, col in self._cols.items()}
            i = self._index[ev_id]  # KeyError for unknown EVs, as a dict
            row = self._rows[ev_id] = {name: col[i] for name, col in self._lists.items()}
        return row

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, ev_id: object) -> bool:
        if self._index is None:
            self._index = {e: i for i, e in enumerate(self.ids)}
        return ev_id in self._index
