"""A run's summary figures, computed from what the recorder wrote to disk.

Everything here reads the recorded tables (``simulators.recorder.model``), so the
same figures can be computed for any finished or interrupted run. Keys carry units.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from simulators.recorder.model import read_table, tables

# An EV counts as "at target" within this SOC tolerance [-] (1e-3 of 16 kWh = 16 Wh).
SOC_TOLERANCE = 1e-3


@dataclass(frozen=True)
class EVInfo:
    """Static EV data the summary needs (from the fleet specs)."""

    ev_id: str
    capacity_kwh: float
    efficiency: float
    soc_target: float
    arrival_s: float
    departure_s: float


def soc_trajectories(ev: pd.DataFrame, infos: Sequence[EVInfo], step_s: int, n_steps: int) -> np.ndarray:
    """SOC of every EV at the step boundaries 0..T, shape (T+1, V) [-].

    The recorded ``soc`` at ``t`` is the state at the start of step ``t``; the
    state after the last step follows from the recorded power with seed 000 eq. (4):
    ``soc += (eta [P]+ - [P]- / eta) dt / E``.
    """
    soc = ev.pivot(index="time_s", columns="entity", values="soc")
    p = ev.pivot(index="time_s", columns="entity", values="p_kw")
    times = np.arange(n_steps) * step_s
    soc = soc.reindex(index=times, columns=[i.ev_id for i in infos]).ffill()
    p = p.reindex(index=times, columns=[i.ev_id for i in infos]).fillna(0.0)
    eta = np.array([i.efficiency for i in infos])
    cap = np.array([i.capacity_kwh for i in infos])
    last_p = p.to_numpy()[-1]
    gain = (eta * np.maximum(last_p, 0) - np.maximum(-last_p, 0) / eta) * (step_s / 3600.0) / cap
    s = soc.to_numpy()
    return np.vstack([s, s[-1] + gain])


def monitored(bus: pd.DataFrame, monitor: str | Collection[str]) -> pd.DataFrame:
    """Rows of the Bus table of the monitored buses: a collection of entity ids
    (:func:`scenarios.buses.monitored_buses`), or a prefix (``Bus-<prefix>...``;
    all buses if empty)."""
    if not isinstance(monitor, str):
        return bus[bus["entity"].isin(list(monitor))]
    return bus if not monitor else bus[bus["entity"].str.startswith(f"Bus-{monitor}")]


def summarize(out_dir, infos: Sequence[EVInfo], step_s: int, n_steps: int,
              vm_min_pu: float, vm_max_pu: float, monitor_buses: str | Collection[str] = "") -> dict:
    """Summary figures of a recorded run (see module docstring for the keys).

    Voltage figures cover the buses selected by ``monitor_buses`` (entity ids, or
    a prefix of the buses' short names; all buses when empty).
    """
    present = set(tables(out_dir))
    out: dict[str, object] = {}
    if "Bus" in present:
        bus = monitored(read_table(out_dir, "Bus"), monitor_buses)
        vm = bus["vm_pu"].dropna() if "vm_pu" in bus else pd.Series(dtype=float)
        out["min_voltage_pu"] = float(vm.min()) if len(vm) else None
        out["max_voltage_pu"] = float(vm.max()) if len(vm) else None
        out["violating_bus_steps"] = int(((vm < vm_min_pu - 1e-9) | (vm > vm_max_pu + 1e-9)).sum())
        worst = max(vm_min_pu - vm.min(), vm.max() - vm_max_pu, 0.0) if len(vm) else 0.0
        out["max_voltage_violation_pu"] = float(worst)
    if "Line" in present:
        line = read_table(out_dir, "Line")
        out["max_line_loading_percent"] = _max(line, "loading_percent")
    if "Trafo" in present:
        trafo = read_table(out_dir, "Trafo")
        out["max_trafo_loading_percent"] = _max(trafo, "loading_percent")
    if "Grid" in present:
        grid = read_table(out_dir, "Grid")
        conv = grid["pf_converged"].fillna(False).astype(bool) if "pf_converged" in grid else pd.Series([], dtype=bool)
        out["pf_not_converged_steps"] = int((~conv).sum())
        out["recorded_steps"] = int(grid["time_s"].nunique())
    if "EV" in present and infos:
        ev = read_table(out_dir, "EV")
        out.update(_ev_figures(ev, infos, step_s, n_steps))
    if "Scheduler" in present:
        sched = read_table(out_dir, "Scheduler")
        out["solve_seconds"] = float(sched["solve_s"].fillna(0).sum()) if "solve_s" in sched else 0.0
        out["fallback_steps"] = int(sched["fallback"].fillna(False).astype(bool).sum()) if "fallback" in sched else 0
        out["soft_limit_violation_max"] = _max(sched, "soft_violation_max") or 0.0
    return out


def _natural(name: str) -> tuple:
    """Sort key putting ``Bus-R2`` before ``Bus-R11``."""
    import re

    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def _max(df: pd.DataFrame, col: str) -> float | None:
    if col not in df or df[col].dropna().empty:
        return None
    return float(df[col].max())


def _ev_figures(ev: pd.DataFrame, infos: Sequence[EVInfo], step_s: int, n_steps: int) -> dict:
    # one info per stay: an EV that comes home every day (fleet.daily_stays) is
    # listed once per stay; trajectories are per EV
    first: dict[str, int] = {}
    for j, info in enumerate(infos):
        first.setdefault(info.ev_id, j)
    evs = [infos[j] for j in first.values()]
    col = {e: c for c, e in enumerate(first)}
    soc = soc_trajectories(ev, evs, step_s, n_steps)
    times_s = np.arange(n_steps + 1) * step_s
    target = np.array([i.soc_target for i in infos])
    dep = np.array([i.departure_s for i in infos])
    # SOC at departure: the state at the first step boundary at or after departure
    # (the end of the horizon for EVs that leave later), per stay.
    dep_idx = np.minimum(np.searchsorted(times_s, dep, side="left"), n_steps)
    soc_dep = soc[dep_idx, [col[i.ev_id] for i in infos]]
    reached = soc >= np.array([i.soc_target for i in evs]) - SOC_TOLERANCE
    frac = reached.mean(axis=1)
    idx95 = np.flatnonzero(frac >= 0.95)
    p = ev.pivot(index="time_s", columns="entity", values="p_kw")
    q = ev.pivot(index="time_s", columns="entity", values="q_kvar") if "q_kvar" in ev else p * 0
    dt_h = step_s / 3600.0
    charging = ev[ev["p_kw"] > 1e-9]
    # the bus where each EV charged most steps, by entity name (EV.bus is derived as
    # the name when the run's metadata names the buses; simulators/recorder/model.py)
    per_bus = charging.groupby("entity")["bus"].agg(lambda b: b.mode().iloc[0]) if len(charging) else []
    counts: dict[str, int] = {}
    for bus in per_bus:
        counts[str(bus)] = counts.get(str(bus), 0) + 1
    stays = {"n_stays": len(infos)} if len(infos) > len(evs) else {}
    return {
        "n_evs": len(evs),
        **stays,
        "evs_charging_per_bus": dict(sorted(counts.items(), key=lambda kv: _natural(kv[0]))),
        "mean_soc_at_departure": float(soc_dep.mean()),
        "evs_below_target_at_departure": int((soc_dep < target - SOC_TOLERANCE).sum()),
        "t95_hours": float(times_s[idx95[0]] / 3600.0) if idx95.size else None,
        "ev_energy_kwh": float(p.clip(lower=0).to_numpy().sum() * dt_h),
        "v2g_discharged_kwh": float((-p.clip(upper=0)).to_numpy().sum() * dt_h),
        "reactive_energy_kvarh": float(q.abs().to_numpy().sum() * dt_h),
        "max_ev_clipping_kw": float(ev["p_clipped_kw"].abs().max()) if "p_clipped_kw" in ev else 0.0,
    }


def activation_summary(out_dir, specs) -> dict:
    """Requested, accepted and delivered flexibility of a run with a DSO.

    From the scheduler's ``Activation`` records (last row of each activation:
    ``simulators/scheduler/realtime.py``) and the EVs' recorded SOC: energy at
    departure below the target per EV [kWh] (what the calls cost the owners).
    """
    present = set(tables(out_dir))
    out: dict[str, object] = {"n_activations": 0, "requested_kwh": 0.0, "accepted_kwh": 0.0,
                              "delivered_kwh": 0.0, "activations": []}
    if "Activation" in present:
        act = read_table(out_dir, "Activation").sort_values("time_s").groupby("entity").tail(1)
        act = act.sort_values("start_s")
        rows = []
        keep = ["entity", "direction", "group", "policy", "start_s", "end_s", "requested_kw", "offered_kw",
                "accepted_kw", "requested_kwh", "accepted_kwh", "delivered_kwh", "delivered_min_kw",
                "shortfall_kwh", "status", "reason", "replan_s"]
        for _, r in act.iterrows():
            rows.append({k: (None if v is None or (isinstance(v, float) and not np.isfinite(v))
                             else (v.item() if hasattr(v, "item") else v))
                         for k, v in r.items() if k in keep})
        out["activations"] = rows
        out["n_activations"] = len(rows)
        out["n_refused"] = int((act["status"] == "refused").sum())
        out["n_partial"] = int((act["status"] == "partial").sum())
        out["n_replan_failed"] = int((act["status"] == "solver_failed").sum())
        for key in ("requested_kwh", "accepted_kwh", "delivered_kwh"):
            out[key] = float(act[key].fillna(0).sum())
        out["delivered_share"] = (out["delivered_kwh"] / out["requested_kwh"]) if out["requested_kwh"] > 0 else None
    if "EV" in present and specs:
        infos = [EVInfo(s.ev_id, s.capacity_kwh, s.efficiency, s.soc_target, s.arrival_s, s.departure_s)
                 for s in specs]
        ev = read_table(out_dir, "EV")
        n_steps = int(ev["time_s"].nunique())
        step_s = int(np.diff(np.sort(ev["time_s"].unique()))[0]) if n_steps > 1 else 1
        soc = soc_trajectories(ev, infos, step_s, n_steps)
        times_s = np.arange(n_steps + 1) * step_s
        dep_idx = np.minimum(np.searchsorted(times_s, [i.departure_s for i in infos], side="left"), n_steps)
        soc_dep = soc[dep_idx, np.arange(len(infos))]
        short = {i.ev_id: round(float((i.soc_target - s) * i.capacity_kwh), 4)
                 for i, s in zip(infos, soc_dep) if s < i.soc_target - SOC_TOLERANCE}
        out["departure_shortfall_kwh"] = short
    return out
