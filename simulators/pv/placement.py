"""Rooftop PV on a grid's customers, by seed 003's rules (section IV-C).

Seed 003 distributes "the installed PV power on the rooftop in each residential
building based on the probability mass function given by Cyprus DSO", with the
DSO's limits of 4.16 kWp for single-phase and 10.4 kWp for three-phase
connections; all units share one generation profile scaled by their size and run
VDE-AR-N 4105 cos phi(P). The DSO's PMF is not published. The stand-in here
(our assumption, documented in docs/pv_baseload.md):

- a customer has PV with probability ``share`` (default 0.5);
- three-phase customers: 3, 5, 8 or 10.4 kWp with probabilities 0.15, 0.35,
  0.30, 0.20; single-phase: 2, 3 or 4.16 kWp with 0.30, 0.40, 0.30 (the
  largest size of each class is the DSO limit);
- the connection from ``net.load["three_phase"]`` where the net has it, else
  drawn with ``three_phase_share`` (0.8, the paper's suburban share).

One unit per customer (not per bus): the VDE 4105 size class (4.6 kVA) is a
property of each inverter. Sizes beyond the class limit are refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["PVPlacement", "sample_rooftop_pv", "MAX_KWP_SINGLE_PHASE", "MAX_KWP_THREE_PHASE"]

#: Cyprus DSO limits quoted by seed 003 (section IV-C) [kWp].
MAX_KWP_SINGLE_PHASE = 4.16
MAX_KWP_THREE_PHASE = 10.4


@dataclass(frozen=True)
class PVPlacement:
    """PMF of rooftop PV sizes per connection type (module docstring).

    Parameters
    ----------
    share : float
        Probability that a customer has PV [-], in [0, 1].
    three_phase_kwp, three_phase_p : tuple of float
        Sizes [kWp] (each in (0, 10.4]) and their probabilities (sum 1).
    single_phase_kwp, single_phase_p : tuple of float
        Sizes [kWp] (each in (0, 4.16]) and their probabilities (sum 1).
    three_phase_share : float
        Share of three-phase customers when the net does not record it [-].
    """

    share: float = 0.5
    three_phase_kwp: tuple = (3.0, 5.0, 8.0, 10.4)
    three_phase_p: tuple = (0.15, 0.35, 0.30, 0.20)
    single_phase_kwp: tuple = (2.0, 3.0, 4.16)
    single_phase_p: tuple = (0.30, 0.40, 0.30)
    three_phase_share: float = 0.8

    def problems(self) -> list[str]:
        """Every invalid field as ``"field: message"`` (empty when valid)."""
        out = []
        for name in ("share", "three_phase_share"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0 <= v <= 1):
                out.append(f"{name}: must be in [0, 1], got {v!r}")
        for kind, limit in (("three_phase", MAX_KWP_THREE_PHASE), ("single_phase", MAX_KWP_SINGLE_PHASE)):
            sizes, p = getattr(self, f"{kind}_kwp"), getattr(self, f"{kind}_p")
            if len(sizes) == 0 or len(sizes) != len(p):
                out.append(f"{kind}_kwp: needs one probability each in {kind}_p, got {len(sizes)} and {len(p)}")
                continue
            bad = [s for s in sizes if not (math.isfinite(s) and 0 < s <= limit)]
            if bad:
                out.append(f"{kind}_kwp: sizes must be in (0, {limit}] kWp (Cyprus DSO limit, seed 003), "
                           f"got {bad}")
            if any(not (math.isfinite(x) and x >= 0) for x in p) or abs(sum(p) - 1) > 1e-9:
                out.append(f"{kind}_p: must be >= 0 and sum to 1, got {list(p)}")
        return out

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError("invalid PVPlacement: " + "; ".join(problems))


def _draw(rng: np.random.Generator, sizes, p, n: int) -> np.ndarray:
    cdf = np.cumsum(p)
    idx = np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), len(sizes) - 1)
    return np.asarray(sizes, dtype=float)[idx]


def sample_rooftop_pv(net, placement: PVPlacement, rng: np.random.Generator) -> list[dict]:
    """PV units on the loads of ``net``: ``[{"bus", "kwp", "load_index", "three_phase"}, ...]``.

    Draw order (fixed): connection (only without ``net.load.three_phase``), who has
    PV, three-phase sizes, single-phase sizes; units in ascending load index.
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    loads = net.load
    n = len(loads)
    if "three_phase" in loads.columns:
        three = loads["three_phase"].to_numpy(dtype=bool)
    else:
        three = rng.random(n) < placement.three_phase_share
    has = rng.random(n) < placement.share
    kwp = np.where(three, _draw(rng, placement.three_phase_kwp, placement.three_phase_p, n),
                   _draw(rng, placement.single_phase_kwp, placement.single_phase_p, n))
    return [{"bus": int(loads.bus.iloc[i]), "kwp": float(kwp[i]), "load_index": int(loads.index[i]),
             "three_phase": bool(three[i])} for i in np.flatnonzero(has)]
