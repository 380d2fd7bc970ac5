"""Figures of a real-time activation study (``scenarios/seed003_realtime.toml``).

Drawn from the recorded runs of its cases (one sub-folder each):

- ``realtime_delivery.png``: requested vs delivered change of the fleet's power
  over time, per case with a DSO. Delivered = recorded EV power of the case minus
  that of the reference case without activation (an independent measure: the
  scheduler's own ``Activation`` records measure against its baseline plan).
- ``realtime_envelope.png``: the aggregate upward/downward flexibility envelope
  (seed 003, eqs. (2), (3)) offered before and after each activation of a case.
- ``realtime_grid.png``: lowest voltage and transformer loading over time, every case.
- ``realtime_soc.png``: fleet energy against the fleet's minimum-energy curve
  (seed 003, eq. (1)), every case.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import matplotlib.dates as mdates  # noqa: E402

from simulators.recorder.model import pivot, read_table, tables  # noqa: E402


def _times(seconds, start: dt.datetime) -> list[dt.datetime]:
    """Clock times of simulation times [s from start]."""
    return [start + dt.timedelta(seconds=int(s)) for s in seconds]


def _format_time_axis(ax) -> None:
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
    ax.grid(True, alpha=0.3)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _last_activations(case_dir: Path):
    if "Activation" not in tables(case_dir):
        return None
    act = read_table(case_dir, "Activation").sort_values("time_s").groupby("entity").tail(1)
    return act.sort_values("start_s")


def plot_realtime(case_dirs: Mapping[str, Path], reference: str, start: dt.datetime, step_s: int,
                  vm_min_pu: float, out_dir: Path, soc_target: float, charger_kw: float,
                  efficiency: float, evs: Mapping[str, Mapping] | None = None,
                  references: Mapping[str, str] | None = None) -> list[Path]:
    """Write the four figures of the module docstring; returns their paths.

    ``soc_target``, ``charger_kw``, ``efficiency`` (and the fleet's ``battery_kwh``
    from each case's metadata) describe every EV unless ``evs`` gives them per EV:
    ev_id -> ``capacity_kwh``, ``charger_kva``, ``efficiency``, ``soc_target``
    (a seed 003 fleet: catalogue batteries, 11/3.7 kW chargers, eq. (19) departure
    energies). ``references`` names, per case with calls, the case without calls
    its delivered power is measured against (default ``reference``: e.g. the
    forecast-error case against the no-call case with the same forecasts).
    """
    out_dir = Path(out_dir)
    written = []
    references = dict(references or {})
    p_refs = {}

    def p_ref_of(name):
        ref = references.get(name, reference)
        if ref not in p_refs:
            p_refs[ref] = pivot(case_dirs[ref], "EV", "p_kw").fillna(0.0).sum(axis=1)
        return ref, p_refs[ref]

    dso_cases = {n: d for n, d in case_dirs.items() if _last_activations(d) is not None}

    # --- requested vs delivered
    if dso_cases:
        fig, axes = plt.subplots(len(dso_cases), 1, figsize=(10, 2.6 * len(dso_cases)), sharex=True, squeeze=False)
        for ax, (name, d) in zip(axes[:, 0], dso_cases.items()):
            p = pivot(d, "EV", "p_kw").fillna(0.0).sum(axis=1)
            idx = p.index
            requested = np.zeros(len(idx))
            accepted = np.zeros(len(idx))
            for _, a in _last_activations(d).iterrows():
                sign = 1.0 if a["direction"] == "up" else -1.0
                on = (idx >= a["start_s"]) & (idx < a["end_s"])
                requested[on] += sign * a["requested_kw"]
                accepted[on] += sign * (a["accepted_kw"] or 0.0)
            times = _times(idx, start)
            ax.step(times, requested, where="post", color="black", linestyle="--", label="requested")
            ax.step(times, accepted, where="post", color="tab:orange", label="accepted (re-plan)")
            ref, p_ref = p_ref_of(name)
            ax.step(times, (p - p_ref.reindex(idx, fill_value=0.0)).to_numpy(), where="post", color="tab:blue",
                    alpha=0.8, label=f"delivered (EV power - {ref})")
            ax.set_ylabel("change [kW]")
            ax.set_title(name, fontsize=9)
            _format_time_axis(ax)
        axes[0, 0].legend(fontsize=7, ncol=3)
        written.append(_save(fig, out_dir / "realtime_delivery.png"))

    # --- envelope before/after each activation (the case with the most activations)
    if dso_cases:
        name = max(dso_cases, key=lambda n: len(_last_activations(dso_cases[n])))
        act = _last_activations(dso_cases[name])
        act = act[act["status"].isin(["accepted", "partial"])].head(4)
        if len(act):
            fig, axes = plt.subplots(len(act), 1, figsize=(10, 2.4 * len(act)), sharex=True, squeeze=False)
            for ax, (_, a) in zip(axes[:, 0], act.iterrows()):
                for key, color, style in (("up_before_kw", "tab:green", "--"), ("up_after_kw", "tab:green", "-"),
                                          ("down_before_kw", "tab:red", "--"), ("down_after_kw", "tab:red", "-")):
                    vals = np.asarray(json.loads(a[key]) or [], dtype=float)
                    sign = -1.0 if key.startswith("down") else 1.0
                    t0 = a["received_s"]  # offered from the step the scheduler got the request
                    times = _times(t0 + np.arange(vals.size) * step_s, start)
                    ax.step(times, sign * vals, where="post", color=color, linestyle=style,
                            label=f"{key.split('_')[0]} {'before' if 'before' in key else 'after'}")
                ax.axvspan(*_times([a["start_s"], a["end_s"]], start), color="grey", alpha=0.2)
                ax.set_title(f"{name}: {a['entity']} {a['direction']} {a['requested_kw']:.1f} kW", fontsize=9)
                ax.set_ylabel("flexibility [kW]")
                _format_time_axis(ax)
            axes[0, 0].legend(fontsize=7, ncol=4)
            written.append(_save(fig, out_dir / "realtime_envelope.png"))

    # --- min voltage and transformer loading
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    for name, d in case_dirs.items():
        vm = pivot(d, "Grid", "vm_min_pu").iloc[:, 0]
        tl = pivot(d, "Grid", "max_trafo_loading_percent").iloc[:, 0]
        ax1.plot(_times(vm.index, start), vm.to_numpy(), label=name, linewidth=1.0)
        ax2.plot(_times(tl.index, start), tl.to_numpy(), label=name, linewidth=1.0)
    ax1.axhline(vm_min_pu, color="black", linewidth=0.6, linestyle=":")
    ax1.set_ylabel("lowest voltage [pu]")
    ax2.set_ylabel("transformer loading [%]")
    ax1.legend(fontsize=7)
    for ax in (ax1, ax2):
        _format_time_axis(ax)
    written.append(_save(fig, out_dir / "realtime_grid.png"))

    # --- fleet energy vs minimum-energy curve
    fig, ax = plt.subplots(figsize=(10, 4))
    for name, d in case_dirs.items():
        ev = read_table(d, "EV")
        soc = ev.pivot(index="time_s", columns="entity", values="soc")
        plugged = ev.pivot(index="time_s", columns="entity", values="plugged").fillna(False).astype(bool)
        fleet_kwh = float(json.loads((d / "metadata.json").read_text())["config"]["fleet"]["battery_kwh"])
        spec = lambda key, default: np.array([float((evs or {}).get(str(c), {}).get(key, default))  # noqa: E731
                                              for c in soc.columns])
        cap = spec("capacity_kwh", fleet_kwh)
        energy = (soc.ffill() * cap).sum(axis=1)
        ax.plot(_times(energy.index, start), energy.to_numpy(), label=f"{name}: fleet energy", linewidth=1.0)
        if name == reference:
            # eq. (1): charging postponed to the last moment, at full power, still
            # reaches the target at departure; before arrival the EV's own energy
            idx = plugged.index.to_numpy()
            dep = np.array([idx[plugged[c].to_numpy()].max() + step_s if plugged[c].any() else idx[-1]
                            for c in plugged.columns])
            e_first = soc.bfill().iloc[0].to_numpy() * cap
            e_dep = spec("soc_target", soc_target) * cap
            rem_h = np.maximum(dep[None, :] - idx[:, None], 0.0) / 3600.0
            e_min = np.maximum(e_dep - spec("efficiency", efficiency) * spec("charger_kva", charger_kw) * rem_h,
                               np.minimum(e_first, e_dep))
            ax.plot(_times(idx, start), e_min.sum(axis=1), color="black", linestyle="--",
                    label="minimum-energy curve (eq. (1))")
    ax.set_ylabel("energy in the batteries [kWh]")
    ax.legend(fontsize=7)
    _format_time_axis(ax)
    written.append(_save(fig, out_dir / "realtime_soc.png"))
    return written
