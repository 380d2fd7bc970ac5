"""Figures in the style of the papers, drawn from recorded runs.

Voltage quantile bands across buses over time (seed 000 Fig. 2-3, seed 001 Fig. 4),
mean SOC over time (seed 000 Fig. 4), total EV power.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from simulators.recorder.model import pivot  # noqa: E402

QUANTILE_BANDS = ((0.0, 1.0), (0.1, 0.9), (0.25, 0.75))


def _times(index, start: dt.datetime):
    return [start + dt.timedelta(seconds=int(s)) for s in index]


def quantile_bands(ax, times, values: np.ndarray, color: str, label: str) -> None:
    """Shade quantile bands of ``values`` (time x entity) and draw the median."""
    for (lo, hi), alpha in zip(QUANTILE_BANDS, (0.15, 0.3, 0.5)):
        ax.fill_between(times, np.nanquantile(values, lo, axis=1), np.nanquantile(values, hi, axis=1),
                        color=color, alpha=alpha, linewidth=0,
                        label=f"{label} q{lo:g}-q{hi:g}")
    ax.plot(times, np.nanmedian(values, axis=1), color=color, linewidth=1.2, label=f"{label} median")


def _format_time_axis(ax) -> None:
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
    ax.grid(True, alpha=0.3)


def _bus_vm(out_dir: Path, monitor_buses: str):
    vm = pivot(out_dir, "Bus", "vm_pu")
    return vm[[c for c in vm.columns if c.startswith(f"Bus-{monitor_buses}")]] if monitor_buses else vm


def plot_run(out_dir: Path, start: dt.datetime, vm_min_pu: float, vm_max_pu: float,
             title: str = "", monitor_buses: str = "") -> list[Path]:
    """Voltage bands, mean SOC and total EV power of one run; returns the PNG paths."""
    out_dir = Path(out_dir)
    written = []
    vm = _bus_vm(out_dir, monitor_buses)
    fig, ax = plt.subplots(figsize=(8, 3.5))
    quantile_bands(ax, _times(vm.index, start), vm.to_numpy(dtype=float), "tab:blue", "vm")
    ax.axhline(vm_min_pu, color="k", linestyle="--", linewidth=1, label="limits")
    ax.axhline(vm_max_pu, color="k", linestyle="--", linewidth=1)
    ax.set_ylabel("voltage magnitude [pu]")
    ax.set_title(f"{title} nodal voltages (AC grid simulator)".strip())
    _format_time_axis(ax)
    ax.legend(fontsize=7, loc="lower left", ncol=2)
    fig.tight_layout()
    written.append(_save(fig, out_dir / "voltage_bands.png"))

    soc = pivot(out_dir, "EV", "soc")
    p = pivot(out_dir, "EV", "p_kw")
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    times = _times(soc.index, start)
    ax1.plot(times, soc.mean(axis=1), color="tab:green")
    ax1.set_ylabel("mean SOC [-]")
    ax1.set_title(f"{title} EV fleet".strip())
    ax2.step(times, p.sum(axis=1), where="post", color="tab:red")
    ax2.set_ylabel("total EV power [kW]")
    for a in (ax1, ax2):
        _format_time_axis(a)
    fig.tight_layout()
    written.append(_save(fig, out_dir / "fleet.png"))
    return written


def plot_comparison(case_dirs: Mapping[str, Path], start: dt.datetime, vm_min_pu: float,
                    out_path: Path, monitor_buses: str = "") -> Path:
    """Mean SOC of every case on one axis (seed 000 Fig. 4) and minimum voltage."""
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for name, d in case_dirs.items():
        soc = pivot(d, "EV", "soc")
        vm = _bus_vm(d, monitor_buses)
        ax1.plot(_times(soc.index, start), soc.mean(axis=1), label=name)
        ax2.plot(_times(vm.index, start), vm.min(axis=1), label=name)
    ax2.axhline(vm_min_pu, color="k", linestyle="--", linewidth=1)
    ax1.set_ylabel("mean SOC [-]")
    ax2.set_ylabel("lowest voltage [pu]")
    for a in (ax1, ax2):
        _format_time_axis(a)
        a.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, out_path)


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
