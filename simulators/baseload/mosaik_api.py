"""mosaik adapter for :mod:`simulators.baseload.model` (time-based).

One ``BaseLoad`` entity per network, with one child ``Load`` entity per row of
``net.load``, ids equal to the grid's (``Load-R11``; from
:func:`simulators.grid.naming.element_eids`)::

    bl_sim = world.start("BaseLoad", start_date="2024-05-15T16:00:00", step_s=900)
    bl = bl_sim.BaseLoad(network="cigre_lv", source="simbench", scale=1.0)
    for load in bl.children:                      # Load-R1, Load-R11, ...
        world.connect(load, grid_loads[load.eid], "p_kw", "q_kvar")

Outputs (load convention, built-in floats; value at tick ``t`` = mean over
``[t, t + step)``): ``p_kw``, ``q_kvar`` per ``Load``; the ``BaseLoad`` parent
publishes the sums, and ``records``: every load's values as one table ``"Load"``
(:mod:`simulators.records`; connect it to a recorder instead of every load), and
``injections``: the same table for the grid's ``Grid.injections`` input
(``world.connect(bl, grid, "injections")`` instead of one connection per load).
"""

from __future__ import annotations


import mosaik_api_v3

from simulators.pq_profile import PQProfileSimulator
from simulators.baseload.model import (
    DEFAULT_PROFILE_MAP,
    BaseLoadModel,
    load_specs_from_net,
    simbench_load_options,
)

SOURCES = ("simbench", "csv", "nominal")
OUTPUTS = ("p_kw", "q_kvar")
PARAMS = (
    "network", "source", "csv_path", "csv_delimiter", "scale", "profiles", "reactive", "power_factor",
    "simbench_scenario", "align_weekday", "method", "base_dir", "study_case",
)

META = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {
        "BaseLoad": {"public": True, "params": list(PARAMS), "attrs": [*OUTPUTS, "records", "injections"]},
        "Load": {"public": False, "params": [], "attrs": list(OUTPUTS)},
    },
}


class BaseLoadSimulator(PQProfileSimulator):
    """Base load per network load; see the module docstring."""

    kind = "base-load"
    records_table = "Load"
    grid_eids = True

    def __init__(self) -> None:
        super().__init__(META)
        self.sid: str | None = None
        self.model: BaseLoadModel | None = None
        self._index: dict[str, int] = {}
        self._parent: str | None = None

    def init(
        self,
        sid: str,
        time_resolution: float = 1.0,
        *,
        start_date: str,
        step_s: float,
        horizon_s: float | None = None,
        numpy_columns: bool = False,
    ) -> dict:
        """Set the clock.

        Parameters
        ----------
        start_date : str
            ISO 8601 start of tick 0 (wall-clock; see the model's time alignment).
        step_s : float
            Step length [s]; a whole number of ``time_resolution``.
        horizon_s : float, optional
            Horizon to precompute at creation [s] (default one day; extended on demand).
        numpy_columns : bool, default False
            Publish column-wise outputs (``records``, ``fleet_state``) as numpy
            arrays (only if every consumer runs in mosaik's process;
            :mod:`simulators.records`).
        """
        self.set_clock(sid, time_resolution, start_date, step_s, horizon_s, numpy_columns)
        return self.meta

    def create(
        self,
        num: int,
        model: str,
        *,
        network: str,
        source: str = "simbench",
        csv_path: str | None = None,
        csv_delimiter: str = ",",
        scale: float = 1.0,
        profiles: dict[str, str] | None = None,
        reactive: str | None = None,
        power_factor: float | None = None,
        simbench_scenario: int = 0,
        align_weekday: bool = False,
        method: str = "auto",
        base_dir: str | None = None,
        study_case: str | None = None,
    ) -> list[dict]:
        """Create the ``BaseLoad`` entity of ``network`` (``num`` must be 1).

        Parameters
        ----------
        network : str
            Network name for :func:`adapters.networks.load_network`.
        source : {"simbench", "csv", "nominal"}
            SimBench profiles, a CSV file (``csv_path``), or constant nominal load.
        scale : float
            Multiplier on nominal power [-].
        profiles : dict, optional
            Load-name prefix -> SimBench profile (``{"R": "H0-A", "*": "H0-A"}``).
        reactive : {"power_factor", "profile"}, optional
            Default: ``"profile"`` on SimBench networks (their own load profiles,
            as ``simbench.get_absolute_values``), else ``"power_factor"``.
        power_factor, simbench_scenario, align_weekday, method
            See :meth:`simulators.baseload.model.BaseLoadModel.from_simbench`.
        study_case : str, optional
            SimBench study case applied to the network first (``source="nominal"``
            then gives the study case's loads).
        """
        from pathlib import Path

        from adapters.networks import load_network

        if model != "BaseLoad":
            raise ValueError(f"unknown model {model!r}; this simulator has BaseLoad")
        if num != 1 or self.model is not None:
            raise ValueError("exactly one BaseLoad entity per simulator")
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        net = load_network(network, None if base_dir is None else Path(base_dir), study_case=study_case)
        specs = load_specs_from_net(net, DEFAULT_PROFILE_MAP if profiles is None else profiles)
        if source == "simbench":
            self.model = BaseLoadModel.from_simbench(
                specs, self.start, self.step_s, scale=scale, power_factor=power_factor,
                scenario=simbench_scenario, align_weekday=align_weekday, method=method,
                horizon_steps=self.horizon_steps, **simbench_load_options(net, reactive),
            )
        elif source == "csv":
            if not csv_path:
                raise ValueError("source='csv' needs csv_path")
            path = Path(csv_path) if base_dir is None else Path(base_dir) / csv_path
            self.model = BaseLoadModel.from_csv(
                path, specs, self.start, self.step_s, scale=scale, power_factor=power_factor,
                method=method, delimiter=csv_delimiter, horizon_steps=self.horizon_steps,
            )
        else:
            self.model = BaseLoadModel.constant(specs, self.step_s, scale=scale, horizon_steps=self.horizon_steps)
        self._index = {eid: j for j, eid in enumerate(self.model.ids)}
        self._parent = "BaseLoad"
        children = [{"eid": eid, "type": "Load"} for eid in self.model.ids]
        return [{"eid": self._parent, "type": "BaseLoad", "children": children}]

    def entity_columns(self, eid: str) -> list[int]:
        if eid == self._parent:
            return list(range(len(self.model.ids)))
        if eid in self._index:
            return [self._index[eid]]
        raise ValueError(f"unknown entity {eid!r}")


def main() -> None:
    """Entry point for an out-of-process start: ``python -m simulators.baseload.mosaik_api``."""
    mosaik_api_v3.start_simulation(BaseLoadSimulator(), "ev-grid-cosim base-load simulator")


if __name__ == "__main__":
    main()
