"""The grid's own distributed energy resources (sgens, storage) on SimBench profiles.

Pure model (no mosaik). SimBench grids ship static generators (``net.sgen``: PV,
wind, biomass, hydro, aggregated LV feeders) and, in its future scenarios 1 and 2,
storage units (``net.storage``), each with a relative profile in ``net.profiles``.
``simbench.get_absolute_values`` turns them into absolute power as::

    sgen.p_mw(t)    = sgen.p_mw * rel[sgen.profile](t)       (renewables + powerplants)
    storage.p_mw(t) = storage.p_mw * rel[storage.profile](t)

and gives no reactive profile for either (``q_mvar`` keeps its static value, 0 in
every SimBench grid). `DERModel` computes exactly that on the co-simulation's
clock, in load convention (``p_kw = -1000 * sgen.p_mw`` for generation; storage
as pandapower's ``net.storage``, charging positive) [kW, kvar]. An element
without a profile name keeps its static value, as in ``get_absolute_values``.

Time alignment is the base load's (:mod:`simulators.baseload.model`): the
scenario start's month, day and wall-clock time in SimBench's 2016, read as
German wall-clock time, then absolute time, wrapping at the end of the year;
step means of the 15-min values.

Modes per element (:data:`DER_MODES`):

``profile``
    SimBench's profile as above.
``off``
    Zero P and Q (the element is switched off, or its power is replaced by another
    simulator, e.g. the project's PV model at the same bus).
``static``
    The network file's own value all the time (SimBench study cases, or a network
    without profiles).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from adapters.profiles import ProfileDataError, resample_to_steps, simbench_net_profiles
from simulators.baseload.model import BaseLoadModel, simbench_start

DER_TABLES = ("sgen", "storage")
DER_MODES = ("profile", "off", "static")
_SIGN = {"sgen": -1.0, "storage": 1.0}  # pandapower value -> load convention


class DERError(ValueError):
    """Invalid DER data or parameters; the message names the element."""


@dataclass(frozen=True)
class DERSpec:
    """One sgen or storage unit of the network.

    Attributes
    ----------
    eid : str
        Entity id, the grid's ``Sgen-*`` / ``Storage-*`` id.
    element : {"sgen", "storage"}
    index : int
        pandapower index in ``net[element]``.
    bus : int
        pandapower bus index.
    p_nom_kw : float
        Static active power in load convention [kW] (a generator: negative),
        the factor SimBench's relative profile multiplies.
    q_nom_kvar : float
        Static reactive power in load convention [kvar].
    profile : str or None
        SimBench profile name, None without one.
    kind : str
        ``net[element].type`` (``"PV"``, ``"Wind_MV"``, ...), "" when absent.
    """

    eid: str
    element: str
    index: int
    bus: int
    p_nom_kw: float
    q_nom_kvar: float = 0.0
    profile: str | None = None
    kind: str = ""

    @property
    def is_pv(self) -> bool:
        """A photovoltaic sgen (SimBench's ``type`` contains ``PV``, as its study cases read it)."""
        return self.element == "sgen" and "PV" in self.kind


def der_specs_from_net(net) -> tuple[DERSpec, ...]:
    """One :class:`DERSpec` per row of ``net.sgen`` then ``net.storage``.

    Ids from :func:`simulators.grid.naming.element_eids` (the grid's children).
    Out-of-service elements are listed too (the grid ignores their power).
    """
    from simulators.grid.naming import element_eids

    specs = []
    for element in DER_TABLES:
        table = net[element]
        if not len(table):
            continue
        eids = element_eids(net, element)
        profiles = table["profile"] if "profile" in table.columns else pd.Series(None, index=table.index)
        kinds = table["type"] if "type" in table.columns else pd.Series("", index=table.index)
        for idx, row in table.iterrows():
            prof = profiles.loc[idx]
            kind = kinds.loc[idx]
            specs.append(DERSpec(
                eid=eids[int(idx)], element=element, index=int(idx), bus=int(row["bus"]),
                p_nom_kw=_SIGN[element] * 1000.0 * float(row["p_mw"]),
                q_nom_kvar=_SIGN[element] * 1000.0 * float(row["q_mvar"]),
                profile=prof if isinstance(prof, str) and prof else None,
                kind=kind if isinstance(kind, str) else "",
            ))
    bad = [s.eid for s in specs if not (math.isfinite(s.p_nom_kw) and math.isfinite(s.q_nom_kvar))]
    if bad:
        raise DERError(f"non-finite p_mw/q_mvar of {bad[:5]}")
    return tuple(specs)


def net_has_der_profiles(net) -> bool:
    """Whether every sgen/storage table present has SimBench profiles to drive it."""
    for element in DER_TABLES:
        if len(net[element]):
            try:
                simbench_net_profiles(net, element)
            except ProfileDataError:
                return False
    return True


class DERModel(BaseLoadModel):
    """Power of the network's sgens and storage units per step (module docstring).

    Built with :meth:`from_net`; look-ups as :class:`BaseLoadModel`
    (``step_values``, ``window``; columns in ``specs`` order, load convention).

    Attributes
    ----------
    specs : tuple of DERSpec
    modes : tuple of str
        The mode of each column (:data:`DER_MODES`).
    """

    @classmethod
    def from_net(
        cls,
        net,
        start: dt.datetime,
        step_s: float,
        *,
        mode: str = "profile",
        modes: Mapping[str, str] | None = None,
        align_weekday: bool = False,
        method: str = "auto",
        horizon_steps: int = 1,
    ) -> DERModel:
        """The DER of ``net``.

        Parameters
        ----------
        net : pandapower.pandapowerNet
        start : datetime.datetime
            Start of step 0 (wall clock).
        step_s : float
            Step length [s].
        mode : {"profile", "off", "static"}
            Mode of every element not in ``modes``.
        modes : mapping eid -> mode, optional
            Per-element exceptions (e.g. ``"off"`` for PV sgens replaced by the
            project's PV simulator).
        align_weekday, method, horizon_steps
            As :meth:`BaseLoadModel.from_simbench`.

        Raises
        ------
        DERError
            Unknown mode or element id, or ``profile`` asked of an element type
            the network has no SimBench profiles for (or a profile name missing
            from them).
        """
        specs = der_specs_from_net(net)
        modes = dict(modes or {})
        problems = [f"mode must be one of {DER_MODES}, got {m!r} ({e})"
                    for e, m in [("default", mode), *modes.items()] if m not in DER_MODES]
        known = {s.eid for s in specs}
        problems += [f"unknown DER element {e!r}" for e in modes if e not in known]
        if problems:
            raise DERError("; ".join(problems))
        col_mode = tuple(modes.get(s.eid, mode) for s in specs)
        driven = [j for j, (s, m) in enumerate(zip(specs, col_mode)) if m == "profile" and s.profile]
        relative: dict[str, pd.DataFrame] = {}
        for element in sorted({specs[j].element for j in driven}):
            try:
                relative[element] = simbench_net_profiles(net, element)
            except ProfileDataError as exc:
                raise DERError(f"DER mode 'profile': {exc}") from exc
            missing = sorted({specs[j].profile for j in driven if specs[j].element == element}
                             - set(relative[element].columns))
            if missing:
                raise DERError(f"{element} profiles {missing} are not in the network's SimBench profiles")
        mapped = simbench_start(start, align_weekday)
        n = len(specs)
        p_static = np.array([s.p_nom_kw if m != "off" else 0.0 for s, m in zip(specs, col_mode)])
        q_static = np.array([s.q_nom_kvar if m != "off" else 0.0 for s, m in zip(specs, col_mode)])
        groups = [(element, [j for j in driven if specs[j].element == element]) for element in relative]

        def source(first: int, n_steps: int) -> tuple[np.ndarray, np.ndarray]:
            p = np.tile(p_static, (n_steps, 1))
            t0 = mapped + pd.Timedelta(seconds=first * step_s)
            for element, cols in groups:
                names = sorted({specs[j].profile for j in cols})
                rel = pd.DataFrame(resample_to_steps(relative[element][names], t0, step_s, n_steps,
                                                     method=method, cyclic=True), columns=names)
                p[:, cols] = rel[[specs[j].profile for j in cols]].to_numpy() * p_static[cols]
            return p, np.tile(q_static, (n_steps, 1)).reshape(n_steps, n)

        model = cls(specs, step_s, source, horizon_steps)
        model.specs = specs
        model.modes = col_mode
        return model

    def drivers(self) -> dict[str, list[str]]:
        """What drives each element: ``{"SimBench profile <name>" | "off" | "static": [eids]}``."""
        out: dict[str, list[str]] = {}
        for s, m in zip(self.specs, self.modes):
            if m == "profile" and s.profile:
                key = f"SimBench profile {s.profile}"
            elif m == "off":
                key = "off"
            else:
                key = "static (network value)" + ("" if m == "static" else ": no SimBench profile")
            out.setdefault(key, []).append(s.eid)
        return out


def pv_replacements(specs: Sequence[DERSpec]) -> list[DERSpec]:
    """The PV sgens that the project's PV simulator replaces (``der = "pv"``)."""
    return [s for s in specs if s.is_pv]
