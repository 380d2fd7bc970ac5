"""Columnar ``records`` outputs: whole tables as one mosaik value per step.

A simulator with thousands of entities publishes every output of every entity
through one ``records`` attribute, ``{table: {"entity": [...], attr: column}}``,
instead of one connection per entity and attribute (mosaik spends ~30 us on each
value it routes). The recorder writes such tables as they are.

Columns are lists by default: mosaik's wire format is JSON, and a consumer may
run in another process even when the producer does not. A simulator started in
mosaik's process with ``numpy_columns=True`` (its ``init`` parameter; the runner
sets it when the recorder and the scheduler run in-process too) publishes numpy
arrays instead, in ``records`` and in the fleet's column-wise ``fleet_state``,
which saves a conversion on either side (~40 us per 1 000 values). Non-finite
floats mean "no value" and are recorded as nulls.
"""

from __future__ import annotations

import mosaik_api_v3
import numpy as np


def over_wire(simulator: mosaik_api_v3.Simulator) -> bool:
    """True if ``simulator`` talks to mosaik over a socket (``cmd``/``connect`` start).

    ``mosaik_api_v3.start_simulation`` gives such a simulator a
    ``RemoteMosaikProxy``; mosaik's in-process starter gives it a local one.
    """
    return isinstance(getattr(simulator, "mosaik", None), mosaik_api_v3.RemoteMosaikProxy)


def as_lists(simulator: mosaik_api_v3.Simulator) -> bool:
    """Whether ``simulator`` must publish column-wise outputs as lists.

    False only for an in-process simulator whose ``numpy_columns`` attribute
    (set from its ``init`` parameter) is true.
    """
    return over_wire(simulator) or not getattr(simulator, "numpy_columns", False)


def column(values: np.ndarray, as_lists: bool) -> np.ndarray | list:
    """One ``records`` column: a private copy of ``values``, or a list for JSON."""
    return values.tolist() if as_lists else np.array(values, copy=True)
