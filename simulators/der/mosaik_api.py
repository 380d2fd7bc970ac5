"""mosaik adapter for :mod:`simulators.der.model` (time-based).

One ``DER`` entity per network, with one child per sgen (``Sgen-*``) and storage
unit (``Storage-*``), ids equal to the grid's children
(:func:`simulators.grid.naming.element_eids`)::

    der_sim = world.start("DER", start_date="2016-01-01T00:00:00", step_s=900)
    der = der_sim.DER(network="simbench:1-LV-rural1--0-sw", mode="profile")
    for unit in der.children:                     # Sgen-LV1.101_SGen_1, ...
        world.connect(unit, grid_children[unit.eid], "p_kw", "q_kvar")

Outputs (load convention, built-in floats; value at tick ``t`` = mean over
``[t, t + step)``): ``p_kw``, ``q_kvar`` per child (a producing sgen is negative);
the ``DER`` parent publishes the sums, and ``records``: every unit as one table
``"DER"`` (:mod:`simulators.records`), and ``injections``: the same table for the
grid's ``Grid.injections`` input (one connection instead of one per unit).

Run out of process: ``python -m simulators.der.mosaik_api %(addr)s``.
"""

from __future__ import annotations

from pathlib import Path

import mosaik_api_v3

from simulators.der.model import DERModel
from simulators.pq_profile import PQProfileSimulator

OUTPUTS = ("p_kw", "q_kvar")
PARAMS = ("network", "mode", "modes", "align_weekday", "method", "base_dir", "study_case")

META = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {
        "DER": {"public": True, "params": list(PARAMS), "attrs": [*OUTPUTS, "records", "injections"]},
        "Sgen": {"public": False, "params": [], "attrs": list(OUTPUTS)},
        "Storage": {"public": False, "params": [], "attrs": list(OUTPUTS)},
    },
}


class DERSimulator(PQProfileSimulator):
    """The network's sgens and storage units; see the module docstring."""

    kind = "DER"
    records_table = "DER"
    grid_eids = True

    def __init__(self) -> None:
        super().__init__(META)
        self.model: DERModel | None = None
        self._index: dict[str, int] = {}

    def init(self, sid: str, time_resolution: float = 1.0, *, start_date: str, step_s: float,
             horizon_s: float | None = None, numpy_columns: bool = False) -> dict:
        """Set the clock (as the base-load simulator: ``start_date`` ISO 8601 wall
        clock, ``step_s`` [s], ``horizon_s`` precomputed [s], ``numpy_columns``)."""
        self.set_clock(sid, time_resolution, start_date, step_s, horizon_s, numpy_columns)
        return self.meta

    def create(self, num: int, model: str, *, network: str, mode: str = "profile",
               modes: dict[str, str] | None = None, align_weekday: bool = False,
               method: str = "auto", base_dir: str | None = None,
               study_case: str | None = None) -> list[dict]:
        """Create the ``DER`` entity of ``network`` (``num`` must be 1).

        Parameters
        ----------
        network : str
            Network name for :func:`adapters.networks.load_network`.
        mode : {"profile", "off", "static"}
            Every element's mode unless listed in ``modes`` (:mod:`simulators.der.model`).
        modes : dict eid -> mode, optional
            Per-element exceptions.
        align_weekday, method
            See :meth:`simulators.der.model.DERModel.from_net`.
        base_dir : str, optional
            Directory of relative JSON network paths.
        study_case : str, optional
            SimBench study case applied to the network's static values
            (:func:`adapters.networks.load_network`).
        """
        from adapters.networks import load_network

        if model != "DER":
            raise ValueError(f"unknown model {model!r}; this simulator has DER")
        if num != 1 or self.model is not None:
            raise ValueError("exactly one DER entity per simulator")
        net = load_network(network, None if base_dir is None else Path(base_dir), study_case=study_case)
        self.model = DERModel.from_net(net, self.start, self.step_s, mode=mode, modes=modes,
                                       align_weekday=align_weekday, method=method,
                                       horizon_steps=self.horizon_steps)
        self._index = {eid: j for j, eid in enumerate(self.model.ids)}
        children = [{"eid": s.eid, "type": "Sgen" if s.element == "sgen" else "Storage"}
                    for s in self.model.specs]
        return [{"eid": "DER", "type": "DER", "children": children}]

    def entity_columns(self, eid: str) -> list[int]:
        if eid == "DER":
            return list(range(len(self.model.ids)))
        if eid in self._index:
            return [self._index[eid]]
        raise ValueError(f"unknown entity {eid!r}")


def main() -> None:
    """Entry point for an out-of-process start: ``python -m simulators.der.mosaik_api``."""
    mosaik_api_v3.start_simulation(DERSimulator(), "ev-grid-cosim DER simulator")


if __name__ == "__main__":
    main()
