"""The scheduler's side of real-time flexibility activation (pure, no mosaik).

:class:`RealTime` sits beside a :class:`~simulators.scheduler.controller.Controller`.
Every step ``k``, after the controller has planned (re-solved or reused its plan):

1. it measures what the fleet delivered in step ``k - 1`` for every running
   activation: the actual power of the EVs of the baseline plan (from their SOC
   change, seed 000 eq. (4)) against that baseline;
2. if the controller re-solved (a new EV, a new forecast), the activations still
   running are applied again on the new plan (a re-solve knows nothing of them);
3. every new request is served by :func:`.activation.replan` on the current plan,
   which the controller then replays; a failed re-plan keeps the previous plan
   and is recorded (``status = "solver_failed"``);
4. it offers the flexibility of the plan now (:func:`.activation.envelope`, seed
   003, eqs. (2), (3)), in total and per bus group.

Every activation is one :class:`ActivationRecord`: requested, accepted (what the
re-plan planned), delivered (measured), shortfall and its reason
(:data:`.activation.REASONS`).

Required departure energy: ``min(soc_target, SOC the baseline plan reaches at
departure)`` times the capacity, so an activation never leaves an EV worse off
at departure than the plan without it (seed 003, eq. (19)).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from simulators.scheduler.activation import TOL_KW, GridModel, PlanEVs, envelope, replan
from simulators.scheduler.fleet_view import FleetView

#: Columns of the ``Activation`` records table.
RECORD_COLUMNS = ("direction", "group", "policy", "received_s", "start_s", "end_s", "requested_kw", "offered_kw",
                  "accepted_kw", "requested_kwh", "accepted_kwh", "delivered_kwh", "delivered_min_kw",
                  "shortfall_kwh", "status", "reason", "replan_s", "up_before_kw", "down_before_kw",
                  "up_after_kw", "down_after_kw")


@dataclass
class ActivationRecord:
    """What happened to one request (energies over its interval)."""

    request_id: str
    direction: str
    group: str
    policy: str
    start_s: float
    end_s: float
    requested_kw: float
    offered_kw: float
    steps: np.ndarray                     # absolute step indices of the interval
    accepted: np.ndarray                  # planned change per step [kW]
    baseline: dict = field(default_factory=dict)   # ev_id -> baseline kW per interval step
    delivered: np.ndarray | None = None  # measured change per step [kW] (NaN: not yet)
    status: str = "accepted"
    reason: str = ""
    replan_s: float = 0.0
    envelope_before: tuple = ((), ())     # total (up, down) per step from the request's start
    envelope_after: tuple = ((), ())
    left: set = field(default_factory=set)
    received_s: float = 0.0               # when the scheduler got it (the envelopes start there)

    def row(self, dt_h: float) -> dict:
        d = self.delivered
        done = d[np.isfinite(d)] if d is not None else np.zeros(0)
        req_kwh = self.requested_kw * self.steps.size * dt_h
        acc_kwh = float(self.accepted.sum() * dt_h)
        deliv_kwh = float(done.sum() * dt_h) if done.size else 0.0
        return {
            "direction": self.direction, "group": self.group, "policy": self.policy,
            "received_s": float(self.received_s),
            "start_s": float(self.start_s), "end_s": float(self.end_s),
            "requested_kw": float(self.requested_kw),
            "offered_kw": float(self.offered_kw) if np.isfinite(self.offered_kw) else None,
            "accepted_kw": float(self.accepted.min()) if self.accepted.size else 0.0,
            "requested_kwh": float(req_kwh), "accepted_kwh": acc_kwh, "delivered_kwh": deliv_kwh,
            "delivered_min_kw": float(done.min()) if done.size == self.steps.size and done.size else None,
            "shortfall_kwh": float(max(req_kwh - deliv_kwh, 0.0)) if done.size == self.steps.size else None,
            "status": self.status, "reason": self.reason, "replan_s": float(self.replan_s),
            "up_before_kw": json.dumps([round(float(x), 4) for x in self.envelope_before[0]]),
            "down_before_kw": json.dumps([round(float(x), 4) for x in self.envelope_before[1]]),
            "up_after_kw": json.dumps([round(float(x), 4) for x in self.envelope_after[0]]),
            "down_after_kw": json.dumps([round(float(x), 4) for x in self.envelope_after[1]]),
        }


class RealTime:
    """Activation requests in, re-planned controller and flexibility offer out.

    Parameters
    ----------
    controller : Controller
        Its plan is read and overwritten through ``plan_tail``/``set_plan_tail``.
    groups : mapping name -> sequence of bus indices
        Bus groups of the offer (and of requests that name one).
    time_limit_s : float
        Budget of one re-plan [s].
    """

    def __init__(self, controller, groups: Mapping[str, Sequence[int]] | None = None,
                 time_limit_s: float = 10.0):
        self.ctl = controller
        self.groups = {str(g): np.array(sorted(map(int, b)), dtype=int) for g, b in (groups or {}).items()}
        self.step_s = float(controller.config.step_s)
        self.dt_h = self.step_s / 3600.0
        self.n_steps = int(controller.config.n_steps)
        self.time_limit_s = float(time_limit_s)
        self.records: dict[str, ActivationRecord] = {}
        self._changed: set[str] = set()
        self._soc_prev: dict[str, float] = {}
        self._cap: dict[str, float] = {}
        self.n_replan_failed = 0

    # ------------------------------------------------------------ plan data ---
    def plan_evs(self, k: int, plugged: FleetView) -> PlanEVs | None:
        """The EVs plugged in now that the plan knows, and their plan from step ``k``."""
        tail = self.ctl.plan_tail(k)
        if tail is None:
            return None
        ids, p_tail = tail
        index = {e: i for i, e in enumerate(ids)}
        rows = [i for i, e in enumerate(plugged.ids) if e in index]
        if not rows:
            return None
        view = plugged.select(np.isin(np.arange(len(plugged)), rows))
        cols = np.array([index[e] for e in view.ids], dtype=int)
        t_rows = self.n_steps - k
        p = np.maximum(p_tail[:, cols], 0.0)
        cap = view.col("capacity_kwh")
        eta = view.col("efficiency")
        soc = view.col("soc")
        e0 = soc * cap
        starts = k * self.step_s + np.arange(t_rows)[:, None] * self.step_s
        plugged_mask = starts + self.step_s <= view.col("departure_s")[None, :] + 1e-9
        p = np.where(plugged_mask, p, 0.0)
        e_plan_end = e0 + eta * self.dt_h * p.sum(axis=0)
        e_dep = np.minimum(view.col("soc_target") * cap, e_plan_end)
        sens_col = {int(b): i for i, b in enumerate(self.ctl.sens.bus_ids)}
        bus = view.col("bus").astype(int)
        return PlanEVs(
            ev_ids=np.array(view.ids, dtype=object), bus=bus,
            col=np.array([sens_col.get(int(b), -1) for b in bus], dtype=int),
            p_max_kw=view.col("charger_kva").astype(float), efficiency=eta.astype(float),
            e0_kwh=e0, e_floor_kwh=np.minimum(view.col("soc_min") * cap, e0),
            e_max_kwh=np.maximum(view.col("soc_max") * cap, e0), e_dep_kwh=np.maximum(e_dep, 0.0),
            plugged=plugged_mask, p_kw=p, dt_h=self.dt_h,
        )

    def grid_model(self, k: int, plan: PlanEVs) -> GridModel:
        """Linearised grid at the plan (every EV of the plan, forecast net demand)."""
        ctl = self.ctl
        sens = ctl.sens
        n = len(sens.bus_ids)
        ids, p_all = ctl.plan_tail(k)
        cols = ctl.plan_cols()
        p_ev = np.zeros((p_all.shape[0], n))
        ok = cols >= 0
        np.add.at(p_ev.T, cols[ok], np.maximum(p_all[:, ok], 0.0).T)
        pred = sens.predict(ctl.net_p_kw[k:] + p_ev, ctl.net_q_kvar[k:])
        lim = ctl.config.limits
        pt_max = None
        if len(sens.trafo_ids):
            s_max = np.asarray(sens.st_max_kva, dtype=float) * lim.trafo_loading_max
            pt_max = np.sqrt(np.maximum(s_max ** 2 - np.asarray(pred.trafo_q_kvar) ** 2, 0.0))
        return GridModel(vm_base_pu=np.asarray(pred.vm_pu), dvm_dp=np.asarray(sens.dvm_dp),
                         vm_min_pu=lim.vm_min_pu, vm_max_pu=lim.vm_max_pu,
                         pt_base_kw=np.asarray(pred.trafo_p_kw) if pt_max is not None else None,
                         dpt_dp=np.asarray(sens.dpt_dp) if pt_max is not None else None,
                         pt_max_kw=pt_max)

    def _capacity(self, plan: PlanEVs) -> np.ndarray:
        return np.array([self._cap[str(e)] for e in plan.ev_ids], dtype=float)

    def _movable(self, plan: PlanEVs, group: str) -> np.ndarray:
        if not group:
            return np.ones(plan.ev_ids.size, dtype=bool)
        return np.isin(plan.bus, self.groups.get(group, np.zeros(0, dtype=int)))

    # -------------------------------------------------------------- the step ---
    def on_step(self, k: int, fleet: FleetView, requests: Sequence[Mapping], resolved: bool) -> bool:
        """Measure, re-apply, serve new requests. True when the plan changed."""
        self._measure(k, fleet)
        plugged = fleet.plugged()
        changed = False
        if resolved:
            for rec in self.records.values():
                if rec.status in ("accepted", "partial") and rec.steps.size and rec.steps[-1] >= k:
                    changed |= self._apply(k, plugged, rec, again=True)
        for req in requests:
            rec = self._new_record(k, req)
            if rec is None:
                continue
            changed |= self._apply(k, plugged, rec, again=False)
        return changed

    def _new_record(self, k: int, req: Mapping) -> ActivationRecord | None:
        rid = str(req["request_id"])
        if rid in self.records:
            return None  # the same request seen twice (a re-sent output)
        k0 = int(round(float(req["start_s"]) / self.step_s))
        k1 = int(np.ceil(float(req["end_s"]) / self.step_s - 1e-9))
        steps = np.arange(max(k0, 0), min(k1, self.n_steps))
        off = req.get("offered_kw")
        rec = ActivationRecord(
            request_id=rid, direction=str(req["direction"]), group=str(req.get("group", "")),
            policy=str(req.get("reason", "scheduled")), start_s=float(req["start_s"]), end_s=float(req["end_s"]),
            requested_kw=float(req["p_kw"]), offered_kw=float("nan") if off is None else float(off),
            steps=steps, accepted=np.zeros(steps.size), delivered=np.full(steps.size, np.nan),
            received_s=k * self.step_s)
        self.records[rid] = rec
        self._changed.add(rid)
        if k0 < k:
            rec.status, rec.reason = "refused", "late"  # its interval started before it arrived
            rec.steps = steps[steps >= k]
        elif rec.requested_kw < TOL_KW:
            # the operator capped it at an empty offer: nothing to serve
            rec.status, rec.reason = "refused", "no_offer" if rec.offered_kw < TOL_KW else "nothing_requested"
        return rec

    def _apply(self, k: int, plugged: FleetView, rec: ActivationRecord, again: bool) -> bool:
        """Re-plan for ``rec`` from step ``k``; True when the controller's plan changed."""
        self._changed.add(rec.request_id)
        t0 = time.perf_counter()
        plan = self.plan_evs(k, plugged)
        todo = rec.steps[rec.steps >= k]
        if plan is None or todo.size == 0:
            if not again:
                rec.status, rec.reason = "refused", "no_evs"
            return False
        rows = todo - k
        movable = self._movable(plan, rec.group)
        if rec.status == "refused" and not again:
            return False
        if not again:
            rec.baseline = {str(e): plan.p_kw[rows, i].copy() for i, e in enumerate(plan.ev_ids) if movable[i]}
            up, down = envelope(plan)
            rec.envelope_before = (up.sum(axis=1), down.sum(axis=1))
            amount = rec.requested_kw
        else:
            # after a re-solve: the EVs of the frozen baseline move, per remaining
            # step, so that their total differs from that baseline by what the
            # first re-plan accepted (the new plan may already be part of the way)
            movable &= np.isin(plan.ev_ids.astype(str), list(rec.baseline))
            sigma = 1.0 if rec.direction == "up" else -1.0
            pos = np.searchsorted(rec.steps, todo)
            base = sum(np.asarray(b)[pos] for b in rec.baseline.values())
            now = plan.p_kw[rows][:, movable].sum(axis=1)
            amount = rec.accepted[pos] - sigma * (now - base)
        res = replan(plan, rec.direction, amount, rows, movable, self.grid_model(k, plan), self.time_limit_s)
        rec.replan_s += time.perf_counter() - t0
        if not res.ok:
            self.n_replan_failed += 1
            rec.status, rec.reason = "solver_failed", "solver_failed"
            return False
        if not again:
            rec.accepted[rec.steps >= k] = res.accepted_kw[rows]
            short = res.shortfall_kw[rows].max(initial=0.0)
            rec.status = "accepted" if short <= TOL_KW else ("partial" if res.accepted_kw[rows].max() > TOL_KW
                                                             else "refused")
            rec.reason = res.reason
        self.ctl.set_plan_tail(k, list(plan.ev_ids), res.p_kw, plan.efficiency * self.dt_h / self._capacity(plan))
        up, down = envelope(plan, res.p_kw)
        rec.envelope_after = (up.sum(axis=1), down.sum(axis=1))
        return True

    def _measure(self, k: int, fleet: FleetView) -> None:
        """Delivered change in step ``k - 1`` of every activation running then."""
        soc = dict(zip(fleet.ids, fleet.col("soc").tolist()))
        cap = dict(zip(fleet.ids, fleet.col("capacity_kwh").tolist()))
        eta = dict(zip(fleet.ids, fleet.col("efficiency").tolist()))
        plugged = dict(zip(fleet.ids, fleet.col("plugged").tolist())) if fleet.has("plugged") else {}
        j = k - 1
        for rec in self.records.values():
            if rec.status in ("refused", "solver_failed") or not rec.baseline:
                continue
            pos = np.flatnonzero(rec.steps == j)
            if pos.size == 0:
                continue
            i = int(pos[0])
            total = 0.0
            for ev, base in rec.baseline.items():
                s0, s1 = self._soc_prev.get(ev), soc.get(ev)
                if s0 is None or s1 is None:
                    rec.left.add(ev)
                    p = 0.0
                else:
                    de = (s1 - s0) * cap[ev]
                    p = de / (eta[ev] * self.dt_h) if de >= 0 else de * eta[ev] / self.dt_h
                    if not plugged.get(ev, True) and base[i] > TOL_KW:
                        rec.left.add(ev)
                total += p - base[i]
            sigma = 1.0 if rec.direction == "up" else -1.0
            rec.delivered[i] = sigma * total
            if i == rec.steps.size - 1 and rec.left and not rec.reason:
                short = rec.requested_kw - np.nanmin(rec.delivered)
                if short > 0.01 * max(rec.requested_kw, 1.0):
                    rec.reason = "ev_left"
            self._changed.add(rec.request_id)
        self._soc_prev = soc
        self._cap.update(cap)

    # ---------------------------------------------------------------- outputs ---
    def offer(self, k: int, fleet: FleetView) -> dict:
        """Flexibility of the plan from step ``k`` (``FlexOffer.to_dict`` form)."""
        t_rows = self.n_steps - k
        plan = self.plan_evs(k, fleet.plugged())
        zero = np.zeros(t_rows)
        if plan is None:
            up = down = zero
            groups = {g: (zero, zero) for g in self.groups}
        else:
            u, d = envelope(plan)
            up, down = u.sum(axis=1), d.sum(axis=1)
            groups = {}
            for g in self.groups:
                m = self._movable(plan, g)
                groups[g] = (u[:, m].sum(axis=1), d[:, m].sum(axis=1))
        return {"t0_s": float(k * self.step_s), "step_s": self.step_s,
                "up_kw": [float(x) for x in up], "down_kw": [float(x) for x in down],
                "groups": {g: {"up_kw": [float(x) for x in a], "down_kw": [float(x) for x in b]}
                           for g, (a, b) in groups.items()}}

    def changed_records(self) -> dict | None:
        """``{"Activation": columns}`` of the activations that changed since the last call."""
        if not self._changed:
            return None
        ids = sorted(self._changed)
        self._changed = set()
        rows = [self.records[i].row(self.dt_h) for i in ids]
        out = {"entity": [f"Activation-{i}" for i in ids]}
        for c in RECORD_COLUMNS:
            out[c] = [r[c] for r in rows]
        return {"Activation": out}
