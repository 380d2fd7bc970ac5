"""mosaik adapter for :mod:`simulators.pv.model` (time-based).

Start it, then create units one by one (``PV``) or many at once (``PVPlant``)::

    pv_sim = world.start("PV", start_date="2024-05-15T00:00:00", step_s=900,
                         latitude_deg=35.17, longitude_deg=33.36, altitude_m=150,
                         timezone="Asia/Nicosia")
    units = pv_sim.PV.create(2, bus="Bus-R11", kwp=4.16)          # PV-R11-0, PV-R11-1
    plant = pv_sim.PVPlant(units=[{"bus": 5, "kwp": 10.4}, {"bus": 6, "kwp": 4.16}])
    # plant.children: PV-5-0, PV-6-0

Outputs (load convention, built-in floats, value at tick ``t`` = mean over
``[t, t + step)``): ``p_kw`` (<= 0) and ``q_kvar`` (>= 0, absorbed per VDE-AR-N 4105
cos phi(P)). A ``PVPlant`` publishes the sums over its units, and ``records``: its
units' values as one table ``"PV"`` (:mod:`simulators.records`). Connect each ``PV`` to
its grid ``Bus-*`` entity; the grid sums all inputs at a bus.
"""

from __future__ import annotations

import re
from typing import Any

import mosaik_api_v3

from adapters.profiles import read_timeseries_csv
from adapters.weather import PVSite
from simulators.pq_profile import PQProfileSimulator
from simulators.pv.model import CosPhiCharacteristic, PVModel, PVModelError, PVUnitSpec

UNIT_PARAMS = (
    "bus", "kwp", "s_kva", "tilt_deg", "azimuth_deg", "characteristic", "profile",
    "gamma_pdc_per_c", "losses_fraction", "eta_inv_nom", "temperature_model",
)
"""Parameters of one unit (``PV`` model params, keys of ``PVPlant``'s ``units`` dicts)."""

OUTPUTS = ("p_kw", "q_kvar")

META = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {
        "PV": {"public": True, "params": list(UNIT_PARAMS), "attrs": list(OUTPUTS)},
        "PVPlant": {"public": True, "params": ["units"], "attrs": [*OUTPUTS, "records"]},
    },
}


def _bus_tag(bus: Any) -> str:
    """Readable id part for a bus reference: ``"Bus-R11"`` / ``"Bus R11"`` -> ``"R11"``, 5 -> ``"5"``."""
    text = str(bus).strip()
    for prefix in ("Bus-", "Bus "):
        if text.startswith(prefix):
            text = text[len(prefix):]
    return re.sub(r"[^A-Za-z0-9_.\-]+", "_", text) or "bus"


class PVSimulator(PQProfileSimulator):
    """Rooftop PV units; see the module docstring."""

    kind = "PV"
    records_table = "PV"

    def __init__(self) -> None:
        super().__init__(META)
        self.sid: str | None = None
        self.model: PVModel | None = None
        self._specs: list[PVUnitSpec] = []
        self._plants: dict[str, list[int]] = {}
        self._per_bus: dict[str, int] = {}
        self._index: dict[str, int] = {}

    def init(
        self,
        sid: str,
        time_resolution: float = 1.0,
        *,
        start_date: str,
        step_s: float,
        latitude_deg: float | None = None,
        longitude_deg: float | None = None,
        altitude_m: float = 0.0,
        timezone: str = "UTC",
        temp_air_c: float = 20.0,
        wind_speed_m_s: float = 1.0,
        albedo: float = 0.2,
        clearsky_model: str = "ineichen",
        profile_file: str | None = None,
        profile_delimiter: str = ",",
        horizon_s: float | None = None,
        substep_s: float = 300.0,
        numpy_columns: bool = False,
    ) -> dict:
        """Set the clock and the site.

        Parameters
        ----------
        start_date : str
            ISO 8601 start of tick 0; naive = wall-clock time in ``timezone``.
        step_s : float
            Step length [s]; a whole number of ``time_resolution``.
        latitude_deg, longitude_deg, altitude_m, timezone, temp_air_c, wind_speed_m_s, albedo, clearsky_model
            The :class:`adapters.weather.PVSite` (needed unless every unit uses a profile).
        profile_file : str, optional
            mosaik-csv style file of per-unit AC power per kWp [kW/kWp] for units with
            a ``profile`` (:func:`adapters.profiles.read_timeseries_csv`).
        horizon_s : float, optional
            Horizon to precompute at setup [s] (default one day; extended on demand).
        substep_s : float, default 300
            Longest sub-step for step means [s].
        numpy_columns : bool, default False
            Publish column-wise outputs (``records``, ``fleet_state``) as numpy
            arrays (only if every consumer runs in mosaik's process;
            :mod:`simulators.records`).
        """
        self.set_clock(sid, time_resolution, start_date, step_s, horizon_s, numpy_columns)
        self.site = None
        if latitude_deg is not None or longitude_deg is not None:
            if latitude_deg is None or longitude_deg is None:
                raise ValueError("give both latitude_deg and longitude_deg")
            self.site = PVSite(
                latitude_deg, longitude_deg, altitude_m, timezone, temp_air_c, wind_speed_m_s, albedo, clearsky_model
            )
        self.timezone = timezone
        self.profiles = None
        if profile_file is not None:
            self.profiles = read_timeseries_csv(profile_file, delimiter=profile_delimiter).frame
        self.substep_s = float(substep_s)
        return self.meta

    def _new_unit(self, params: dict[str, Any]) -> str:
        unknown = sorted(set(params) - set(UNIT_PARAMS))
        if unknown:
            raise ValueError(f"unknown PV parameter(s) {unknown}; allowed: {list(UNIT_PARAMS)}")
        if "bus" not in params or "kwp" not in params:
            raise ValueError(f"a PV unit needs 'bus' and 'kwp', got {params}")
        tag = _bus_tag(params["bus"])
        k = self._per_bus.get(tag, 0)
        self._per_bus[tag] = k + 1
        eid = f"PV-{tag}-{k}"
        kw = dict(params)
        char = kw.pop("characteristic", None)
        if char is not None and not isinstance(char, CosPhiCharacteristic):
            char = CosPhiCharacteristic(tuple(tuple(p) for p in char))
        self._index[eid] = len(self._specs)
        self._specs.append(PVUnitSpec(eid=eid, characteristic=char, **kw))
        return eid

    def create(self, num: int, model: str, **model_params: Any) -> list[dict]:
        if self.model is not None:
            raise RuntimeError("PV units must be created before the simulation starts")
        if model == "PV":
            return [{"eid": self._new_unit(model_params), "type": "PV"} for _ in range(num)]
        if model == "PVPlant":
            units = model_params.get("units")
            if not isinstance(units, (list, tuple)) or not units:
                raise ValueError("PVPlant needs units=[{'bus': ..., 'kwp': ...}, ...]")
            out = []
            for _ in range(num):
                pid = f"PVPlant-{len(self._plants)}"
                eids = [self._new_unit(dict(u)) for u in units]
                self._plants[pid] = [self._index[e] for e in eids]
                out.append({"eid": pid, "type": "PVPlant", "children": [{"eid": e, "type": "PV"} for e in eids]})
            return out
        raise ValueError(f"unknown model {model!r}; this simulator has PV and PVPlant")

    def _build(self) -> None:
        if self.model is None:
            try:
                self.model = PVModel(
                    self._specs, self.start, self.step_s, site=self.site, profiles=self.profiles,
                    horizon_steps=self.horizon_steps, substep_s=self.substep_s, timezone=self.timezone,
                )
            except PVModelError as exc:
                raise ValueError(f"PV simulator {self.sid}: {exc}") from exc

    def setup_done(self) -> None:
        self._build()

    def prepare(self) -> None:
        self._build()

    def entity_columns(self, eid: str) -> list[int]:
        if eid in self._index:
            return [self._index[eid]]
        if eid in self._plants:
            return list(self._plants[eid])
        raise ValueError(f"unknown entity {eid!r}")


def main() -> None:
    """Entry point for an out-of-process start (``cmd``): ``python -m simulators.pv.mosaik_api``."""
    mosaik_api_v3.start_simulation(PVSimulator(), "ev-grid-cosim PV simulator")


if __name__ == "__main__":
    main()
