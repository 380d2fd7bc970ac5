"""EV catalogue: battery EV models with usable capacity and consumption (seed 003).

Seed 003 (section IV-A-2) assigns each EV owner a model drawn from a probability
mass function of European sales, using "the 10 most popular EVs in Europe for
2024" and their technical characteristics. The shipped catalogue is
``adapters/data/ev_catalogue_2024.csv``; where every number comes from, and which
are WLTP-derived, is in ``docs/ev_catalogue.md``.

>>> cat = load_catalogue()                                  # doctest: +SKIP
>>> cat.models[0].model, cat.pmf()[0]                       # doctest: +SKIP
('Tesla Model Y', 0.2635...)

File format: CSV, ``#`` comment lines first, then a header with at least the
columns of :data:`REQUIRED_COLUMNS`. ``consumption_kwh_per_km`` must equal
``usable_kwh / wltp_range_km`` to 0.5 % (it is derived from them; a typo in any
of the three is caught).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["EVModel", "EVCatalogue", "load_catalogue", "DEFAULT_CATALOGUE", "REQUIRED_COLUMNS"]

DEFAULT_CATALOGUE = Path(__file__).with_name("data") / "ev_catalogue_2024.csv"

REQUIRED_COLUMNS = ("rank", "model", "variant", "registrations", "usable_kwh", "wltp_range_km",
                    "consumption_kwh_per_km", "source_registrations", "source_usable_kwh",
                    "source_range")

#: Plausible ranges (why: a passenger BEV sold in 2024; outside these a number is a typo).
USABLE_KWH_RANGE = (10.0, 200.0)
CONSUMPTION_RANGE = (0.08, 0.40)   # kWh/km
WLTP_RANGE_KM = (50.0, 1000.0)
_CONSISTENCY_REL = 0.005


@dataclass(frozen=True)
class EVModel:
    """One EV model of the catalogue.

    Parameters
    ----------
    model, variant : str
        Model name and the variant whose numbers are given.
    registrations : int
        Registrations in the sales period of the catalogue (weight of the PMF), > 0.
    usable_kwh : float
        Usable battery capacity ``Ebar_ev`` [kWh] (seed 003, eq. (18)).
    wltp_range_km : float
        WLTP combined range [km].
    consumption_kwh_per_km : float
        Average consumption ``eta_ev`` [kWh/km] (seed 003, eq. (19)), here
        ``usable_kwh / wltp_range_km`` (WLTP-derived).
    """

    rank: int
    model: str
    variant: str
    registrations: int
    usable_kwh: float
    wltp_range_km: float
    consumption_kwh_per_km: float


@dataclass(frozen=True)
class EVCatalogue:
    """The models of a catalogue file, in rank order."""

    models: tuple[EVModel, ...]
    path: Path

    def pmf(self) -> np.ndarray:
        """Probability of each model (registrations / total) [-], sums to 1."""
        w = np.array([m.registrations for m in self.models], dtype=float)
        return w / w.sum()

    def sample(self, rng: np.random.Generator, n: int) -> list[EVModel]:
        """``n`` models drawn from :meth:`pmf` with ``rng`` (inverse CDF of one uniform each)."""
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be an int >= 0, got {n!r}")
        cdf = np.cumsum(self.pmf())
        idx = np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), len(self.models) - 1)
        return [self.models[i] for i in idx]


def _number(row: dict, col: str, line: int, problems: list[str], lo: float, hi: float) -> float:
    raw = (row.get(col) or "").strip()
    try:
        value = float(raw)
    except ValueError:
        problems.append(f"row {line}: {col} must be a number, got {raw!r}")
        return math.nan
    if not (math.isfinite(value) and lo <= value <= hi):
        problems.append(f"row {line}: {col} must be in [{lo:g}, {hi:g}], got {raw}")
        return math.nan
    return value


def load_catalogue(path: str | Path = DEFAULT_CATALOGUE) -> EVCatalogue:
    """Read and validate an EV catalogue CSV.

    Raises
    ------
    ValueError
        Listing every problem at once (missing columns, a number outside its
        range, a consumption that is not ``usable_kwh / wltp_range_km``, a
        duplicate model, an empty source), naming the file, data row (1-based) and column.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"EV catalogue {path}: no such file")
    with path.open(newline="", encoding="utf-8") as fh:
        lines = [ln for ln in fh if not ln.lstrip().startswith("#")]
    reader = csv.DictReader(lines)
    missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise ValueError(f"EV catalogue {path}: missing columns {missing}")
    problems: list[str] = []
    models: list[EVModel] = []
    seen: set[tuple[str, str]] = set()
    for line, row in enumerate(reader, start=1):  # data rows, 1-based
        cap = _number(row, "usable_kwh", line, problems, *USABLE_KWH_RANGE)
        rng_km = _number(row, "wltp_range_km", line, problems, *WLTP_RANGE_KM)
        cons = _number(row, "consumption_kwh_per_km", line, problems, *CONSUMPTION_RANGE)
        reg = _number(row, "registrations", line, problems, 1, 1e8)
        rank = _number(row, "rank", line, problems, 1, 1000)
        if math.isfinite(cap) and math.isfinite(rng_km) and math.isfinite(cons):
            derived = cap / rng_km
            if abs(cons - derived) > _CONSISTENCY_REL * derived:
                problems.append(f"row {line}: consumption_kwh_per_km {cons} is not usable_kwh / "
                                f"wltp_range_km = {derived:.4f}")
        name = (row.get("model") or "").strip()
        variant = (row.get("variant") or "").strip()
        if not name:
            problems.append(f"row {line}: model must not be empty")
        if (name, variant) in seen:
            problems.append(f"row {line}: duplicate model {name!r} {variant!r}")
        seen.add((name, variant))
        for col in ("source_registrations", "source_usable_kwh", "source_range"):
            if not (row.get(col) or "").strip():
                problems.append(f"row {line}: {col} must name where the number comes from")
        if not any(p.startswith(f"row {line}:") for p in problems):
            models.append(EVModel(int(rank), name, variant, int(reg), cap, rng_km, cons))
    if not models and not problems:
        problems.append("no models")
    if problems:
        raise ValueError(f"EV catalogue {path}: " + "; ".join(problems))
    models.sort(key=lambda m: m.rank)
    return EVCatalogue(tuple(models), path)
