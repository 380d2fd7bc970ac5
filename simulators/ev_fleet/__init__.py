"""EV fleet simulator: EV specs and sampling, the fleet model, its mosaik adapter.

The mosaik adapter lives in :mod:`simulators.ev_fleet.mosaik_api` (not imported
here, so that the model can be used without mosaik).
"""

from simulators.ev_fleet.model import FleetModel, IntervalResult
from simulators.ev_fleet.population import EVSpec, FleetDistributions, sample_fleet

__all__ = ["EVSpec", "FleetDistributions", "FleetModel", "IntervalResult", "sample_fleet"]
