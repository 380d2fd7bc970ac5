"""Grid operator (DSO) that calls the EV fleet's flexibility in real time.

Pure model (no mosaik; the adapter is :mod:`.mosaik_api`). Every step it sees

- the last grid measurement (:class:`GridMeasurement`: bus voltages, largest line
  and transformer loading), and
- the flexibility the scheduler offers (:class:`FlexOffer`: aggregate upward and
  downward power per remaining step, in total and per bus group, seed 003,
  eqs. (2)-(3) summed over the EVs),

and answers with activation requests (:class:`ActivationRequest`: a change of the
fleet's power by ``p_kw`` in direction ``up``/``down`` over ``[start_s, end_s)``,
for the EVs at the buses of one group or the whole fleet).

Policies (any combination; seed 003 section V-C names the real-time activation
its future work, so the sizing rules below are ours)

``scheduled``
    A fixed list of requests, each issued ``lead_s`` before its start (and capped
    at the offer then known).
``voltage``
    When the lowest monitored voltage is below ``vm_min_pu``, request
    *downward* flexibility (less charging raises the voltage); when the highest is
    above ``vm_max_pu``, request *upward* (more charging lowers it). The size is
    the voltage gap plus a margin divided by the sensitivity of that bus's voltage
    to the fleet's power: ``p = (vm_min + margin - vm) / |dvm/dP_fleet|`` [kW].
``congestion``
    When the largest transformer (or line) loading is above ``loading_max_percent``,
    request downward flexibility (upward when that transformer is in reverse flow,
    ``max_trafo_p_hv_kw < 0``: the LV grid exports midday PV, more charging relieves it) ``p = (loading - loading_max + margin) / 100 *
    s_ref_kva`` [kW] (active power stands for apparent power: chargers run at
    unity power factor in the seed 003 study).

A triggered request is capped at the offered flexibility over its interval (the
smallest offer of its steps) unless ``allow_beyond_offer`` is set (to test
shortfalls); a triggered policy issues no new request while its last one is still
running.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

DIRECTIONS = ("up", "down")
#: Smallest triggered request worth sending [kW].
MIN_REQUEST_KW = 1e-3


@dataclass(frozen=True)
class ActivationRequest:
    """One call of flexibility.

    Attributes
    ----------
    request_id : str
        Unique id (``"A-3"``).
    direction : str
        ``"up"`` (charge more) or ``"down"`` (charge less).
    p_kw : float
        Requested change of the fleet's power from its baseline plan [kW], >= 0,
        the same in every step of the interval.
    start_s, end_s : float
        Interval ``[start_s, end_s)`` [s from the start of the run].
    group : str
        Bus group it applies to (``""``: the whole fleet).
    buses : tuple of int
        The group's pandapower bus indices (empty: every bus).
    reason : str
        Policy that issued it (``scheduled``, ``voltage``, ``congestion``).
    offered_kw : float
        Smallest offered flexibility over the interval when it was issued [kW]
        (NaN when no offer was known).
    """

    request_id: str
    direction: str
    p_kw: float
    start_s: float
    end_s: float
    group: str = ""
    buses: tuple[int, ...] = ()
    reason: str = "scheduled"
    offered_kw: float = float("nan")

    def validate(self) -> None:
        """ValueError naming every bad field."""
        problems = []
        if self.direction not in DIRECTIONS:
            problems.append(f"direction must be one of {DIRECTIONS}, got {self.direction!r}")
        if not (np.isfinite(self.p_kw) and self.p_kw >= 0):
            problems.append(f"p_kw must be finite and >= 0, got {self.p_kw!r}")
        if not (np.isfinite(self.start_s) and np.isfinite(self.end_s) and self.end_s > self.start_s):
            problems.append(f"end_s ({self.end_s}) must be after start_s ({self.start_s})")
        if problems:
            raise ValueError(f"request {self.request_id}: " + "; ".join(problems))

    def to_dict(self) -> dict:
        """Plain built-in types (crosses simulator boundaries as JSON)."""
        return {"request_id": self.request_id, "direction": self.direction, "p_kw": float(self.p_kw),
                "start_s": float(self.start_s), "end_s": float(self.end_s), "group": self.group,
                "buses": [int(b) for b in self.buses], "reason": self.reason,
                "offered_kw": None if not np.isfinite(self.offered_kw) else float(self.offered_kw)}

    @classmethod
    def from_dict(cls, d: Mapping) -> ActivationRequest:
        off = d.get("offered_kw")
        return cls(str(d["request_id"]), str(d["direction"]), float(d["p_kw"]), float(d["start_s"]),
                   float(d["end_s"]), str(d.get("group", "")), tuple(int(b) for b in d.get("buses", ())),
                   str(d.get("reason", "scheduled")), float("nan") if off is None else float(off))


@dataclass(frozen=True)
class FlexOffer:
    """Flexibility offered by the scheduler from ``t0_s`` on.

    Attributes
    ----------
    t0_s, step_s : float
        Start of the first offered step and step length [s].
    up_kw, down_kw : ndarray, shape (K,)
        Aggregate upward / downward flexibility of step ``t0_s + k step_s`` [kW]
        (seed 003, eqs. (2), (3), summed over the EVs), >= 0.
    groups : mapping name -> (up_kw, down_kw)
        The same per bus group.
    """

    t0_s: float
    step_s: float
    up_kw: np.ndarray
    down_kw: np.ndarray
    groups: Mapping[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def available_kw(self, direction: str, start_s: float, end_s: float, group: str = "") -> float:
        """Smallest offered power over the steps of ``[start_s, end_s)`` [kW].

        Steps outside the offer count as zero (nothing offered there).
        """
        up, down = (self.up_kw, self.down_kw) if not group else self.groups.get(group, ((), ()))
        arr = np.asarray(up if direction == "up" else down, dtype=float)
        k0 = int(round((start_s - self.t0_s) / self.step_s))
        k1 = int(np.ceil((end_s - self.t0_s) / self.step_s - 1e-9))
        if k0 < 0 or k1 <= k0 or k1 > arr.size:
            return 0.0
        return float(max(0.0, arr[k0:k1].min()))

    def to_dict(self) -> dict:
        return {"t0_s": float(self.t0_s), "step_s": float(self.step_s),
                "up_kw": [float(x) for x in self.up_kw], "down_kw": [float(x) for x in self.down_kw],
                "groups": {g: {"up_kw": [float(x) for x in u], "down_kw": [float(x) for x in d]}
                           for g, (u, d) in self.groups.items()}}

    @classmethod
    def from_dict(cls, d: Mapping) -> FlexOffer:
        groups = {g: (np.asarray(v["up_kw"], dtype=float), np.asarray(v["down_kw"], dtype=float))
                  for g, v in (d.get("groups") or {}).items()}
        up = np.asarray(d["up_kw"], dtype=float)
        down = np.asarray(d["down_kw"], dtype=float)
        for name, arr in [("up_kw", up), ("down_kw", down)] + [
                (f"groups.{g}", np.concatenate(v)) for g, v in groups.items()]:
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"flexibility offer {name} must be finite")
        return cls(float(d["t0_s"]), float(d["step_s"]), up, down, groups)


@dataclass(frozen=True)
class GridMeasurement:
    """What the operator measured at ``t_s``.

    Attributes
    ----------
    t_s : float
        Measurement time [s].
    vm_pu : mapping bus index -> voltage magnitude [pu]
    max_trafo_loading_percent, max_line_loading_percent : float or None
        Largest loading [%] (None: power flow did not converge).
    max_trafo_p_hv_kw : float or None
        HV-side active power of the most loaded transformer [kW], load convention
        (< 0: reverse flow, the LV grid exports); None: not measured (taken as
        forward flow).
    """

    t_s: float
    vm_pu: Mapping[int, float]
    max_trafo_loading_percent: float | None = None
    max_line_loading_percent: float | None = None
    max_trafo_p_hv_kw: float | None = None


@dataclass(frozen=True)
class VoltagePolicy:
    """Voltage-triggered calls (module docstring).

    Attributes
    ----------
    buses : tuple of int
        Monitored buses (pandapower indices).
    vm_min_pu, vm_max_pu : float
        Trigger thresholds [pu], in (0, 2).
    sensitivity_pu_per_kw : mapping bus -> float
        ``d vm_bus / d P_fleet`` [pu/kW], P in load convention (negative: more
        charging lowers the voltage), for the EVs of ``group``.
    duration_s : float
        Length of each request [s].
    margin_pu : float
        Aim this far inside the band [pu].
    group : str
        Bus group the request goes to (``""``: whole fleet).
    """

    buses: tuple[int, ...]
    vm_min_pu: float
    vm_max_pu: float
    sensitivity_pu_per_kw: Mapping[int, float]
    duration_s: float
    margin_pu: float = 0.0
    group: str = ""
    group_buses: tuple[int, ...] = ()


@dataclass(frozen=True)
class CongestionPolicy:
    """Loading-triggered calls (module docstring): downward, upward when the watched
    transformer is in reverse flow.

    Attributes
    ----------
    element : str
        ``"trafo"`` or ``"line"``: which largest loading is watched.
    loading_max_percent : float
        Trigger threshold [%].
    s_ref_kva : float
        Rating that converts a loading excess to power [kVA] (the transformer's).
    duration_s : float
        Length of each request [s].
    margin_percent : float
        Aim this far below the threshold [%].
    group : str
    """

    element: str
    loading_max_percent: float
    s_ref_kva: float
    duration_s: float
    margin_percent: float = 0.0
    group: str = ""
    group_buses: tuple[int, ...] = ()


def fleet_sensitivity(dvm_dp: np.ndarray, bus_ids: Sequence[int], monitored: Sequence[int],
                      ev_buses: Sequence[int], weights: Sequence[float] | None = None) -> dict[int, float]:
    """Sensitivity of monitored voltages to the fleet's total power [pu/kW].

    A change ``dP`` of the fleet's power split over ``ev_buses`` in proportion to
    ``weights`` (e.g. charger ratings) moves bus ``i`` by
    ``sum_j dvm_dp[i, j] w_j / sum w * dP``.

    Parameters
    ----------
    dvm_dp : ndarray, shape (n, n)
        ``Sensitivities.dvm_dp`` [pu/kW], load convention.
    bus_ids : sequence of int, shape (n,)
        Bus index of each row/column.
    monitored, ev_buses : sequences of bus indices
    weights : sequence of float, optional
        One per entry of ``ev_buses`` (default: equal).

    Returns
    -------
    dict bus -> [pu/kW]
    """
    col = {int(b): i for i, b in enumerate(bus_ids)}
    w = np.ones(len(ev_buses)) if weights is None else np.asarray(weights, dtype=float)
    if w.shape != (len(ev_buses),) or not np.all(w >= 0) or w.sum() <= 0:
        raise ValueError("weights must be >= 0, one per EV bus, not all zero")
    cols = np.array([col[int(b)] for b in ev_buses], dtype=int)
    out = {}
    for b in monitored:
        out[int(b)] = float(np.asarray(dvm_dp)[col[int(b)], cols] @ w / w.sum()) if int(b) in col else 0.0
    return out


class DSOModel:
    """The operator: measurements and offers in, activation requests out.

    Parameters
    ----------
    step_s : float
        Step length [s]; a triggered request starts at the next step.
    scheduled : sequence of ActivationRequest
        Policy ``scheduled``.
    voltage : VoltagePolicy, optional
    congestion : CongestionPolicy, optional
    lead_s : float
        Scheduled requests are issued this long before their start [s] (>= one
        step: the scheduler sees a request one step after the operator sends it).
    allow_beyond_offer : bool
        Let triggered requests ask for more than the offered flexibility.
    """

    def __init__(self, step_s: float, scheduled: Sequence[ActivationRequest] = (),
                 voltage: VoltagePolicy | None = None, congestion: CongestionPolicy | None = None,
                 lead_s: float | None = None, allow_beyond_offer: bool = False):
        if step_s <= 0:
            raise ValueError(f"step_s must be > 0, got {step_s}")
        self.step_s = float(step_s)
        self.lead_s = self.step_s if lead_s is None else float(lead_s)
        if self.lead_s < self.step_s:
            raise ValueError(f"lead_s must be >= step_s ({step_s}), got {lead_s}")
        for r in scheduled:
            r.validate()
        self.pending = sorted(scheduled, key=lambda r: (r.start_s, r.request_id))
        self.voltage = voltage
        self.congestion = congestion
        self.allow_beyond_offer = bool(allow_beyond_offer)
        self.issued: list[ActivationRequest] = []
        self._busy_until: dict[str, float] = {}
        self._n = 0

    def step(self, t_s: float, measurement: GridMeasurement | None,
             offer: FlexOffer | None) -> list[ActivationRequest]:
        """Requests issued at ``t_s`` (they reach the scheduler at the next step)."""
        out = []
        while self.pending and self.pending[0].start_s - self.lead_s <= t_s + 1e-9:
            r = self.pending.pop(0)
            if r.start_s < t_s + self.step_s - 1e-9:
                continue  # too late to be served (the run started after its issue time)
            off = offer.available_kw(r.direction, r.start_s, r.end_s, r.group) if offer else float("nan")
            p_kw = r.p_kw if self.allow_beyond_offer or not np.isfinite(off) else min(r.p_kw, off)
            out.append(replace(r, p_kw=float(p_kw), offered_kw=off))
        start = t_s + self.step_s
        if measurement is not None:
            for policy, direction, p_kw in self._triggered(measurement):
                if self._busy_until.get(policy, -np.inf) > start + 1e-9 or p_kw < MIN_REQUEST_KW:
                    continue
                cfg = self.voltage if policy.startswith("voltage") else self.congestion
                end = start + cfg.duration_s
                off = offer.available_kw(direction, start, end, cfg.group) if offer else 0.0
                if not self.allow_beyond_offer:
                    p_kw = min(p_kw, off)
                if p_kw < MIN_REQUEST_KW:
                    continue
                self._n += 1
                out.append(ActivationRequest(f"A-{self._n}", direction, float(p_kw), start, end, cfg.group,
                                             tuple(cfg.group_buses), policy.split("_")[0], off))
                self._busy_until[policy] = end
        self.issued.extend(out)
        return out

    def _triggered(self, m: GridMeasurement) -> list[tuple[str, str, float]]:
        """(policy, direction, unclipped size [kW]) of every policy that fires."""
        out = []
        v = self.voltage
        if v is not None:
            vals = [(float(m.vm_pu[b]), b) for b in v.buses if m.vm_pu.get(b) is not None]
            if vals:
                vmin, bmin = min(vals)
                vmax, bmax = max(vals)
                if vmin < v.vm_min_pu:
                    s = abs(v.sensitivity_pu_per_kw.get(bmin, 0.0))
                    out.append(("voltage_low", "down", (v.vm_min_pu + v.margin_pu - vmin) / s if s > 0 else 0.0))
                elif vmax > v.vm_max_pu:
                    s = abs(v.sensitivity_pu_per_kw.get(bmax, 0.0))
                    out.append(("voltage_high", "up", (vmax - v.vm_max_pu + v.margin_pu) / s if s > 0 else 0.0))
        c = self.congestion
        if c is not None:
            load = m.max_trafo_loading_percent if c.element == "trafo" else m.max_line_loading_percent
            if load is not None and load > c.loading_max_percent:
                # reverse flow through the transformer (PV export): more charging relieves it
                reverse = c.element == "trafo" and (m.max_trafo_p_hv_kw or 0.0) < 0.0
                out.append(("congestion", "up" if reverse else "down",
                            (load - c.loading_max_percent + c.margin_percent) / 100.0 * c.s_ref_kva))
        return out
