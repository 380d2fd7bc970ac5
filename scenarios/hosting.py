"""Hosting capacity from a penetration sweep's merged table (``scenarios/sweep.py``).

A point is *inside the limits* when its co-simulation finished, every power flow
converged, the monitored buses' voltages stayed in ``[limit_vm_min_pu,
limit_vm_max_pu]`` and no line or transformer loading exceeded its limit (the
point's ``[grid]`` limits, recorded in the table's ``limit_*`` columns). The
hosting capacity of a network and strategy is the highest penetration ``p`` such
that every point at every penetration up to ``p``, for every seed, is inside the
limits: one seed that breaks a limit at 40 % caps the capacity below 40 %, even if
50 % happened to pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

#: Numerical slack on the limits [pu] and [%]: power-flow results are exact only to its tolerance.
TOL = 1e-6
GROUP_AXES = ("network", "strategy", "soc_target")


def inside_limits(table: pd.DataFrame) -> pd.Series:
    """Per point: finished, converged and within every voltage and loading limit."""
    def col(name: str, fill: float) -> pd.Series:
        return pd.to_numeric(table[name], errors="coerce").fillna(fill) if name in table else \
            pd.Series(fill, index=table.index)

    ok = table["status"].eq("ok")
    ok &= col("pf_not_converged_steps", 1).eq(0)
    ok &= col("min_voltage_pu", -np.inf) >= table["limit_vm_min_pu"] - TOL
    ok &= col("max_voltage_pu", np.inf) <= table["limit_vm_max_pu"] + TOL
    ok &= col("max_line_loading_percent", 0.0) <= table["limit_line_loading_percent"] + TOL
    ok &= col("max_trafo_loading_percent", 0.0) <= table["limit_trafo_loading_percent"] + TOL
    return ok


def _groups(table: pd.DataFrame) -> list[str]:
    return [a for a in GROUP_AXES if a in table]


def hosting_capacity(table: pd.DataFrame) -> pd.DataFrame:
    """Highest penetration inside the limits per network/strategy (see module docstring).

    Returns
    -------
    pandas.DataFrame
        One row per group: ``hosting_capacity_percent`` (NaN when even the lowest
        penetration breaks a limit), ``first_violation_percent`` (NaN when none),
        the binding limit there (``voltage``, ``line``, ``trafo``, ``failed``), and
        the seeds counted.
    """
    t = table.assign(_ok=inside_limits(table))
    keys = _groups(t)
    rows = []
    for key, g in (t.groupby(keys, sort=False) if keys else [((), t)]):
        key = key if isinstance(key, tuple) else (key,)
        per_pen = g.groupby("penetration_percent")["_ok"].all().sort_index()
        bad = per_pen.index[~per_pen.to_numpy()]
        first_bad = bad.min() if len(bad) else np.nan
        below = per_pen.index[per_pen.index < first_bad] if len(bad) else per_pen.index
        row = dict(zip(keys, key))
        row["hosting_capacity_percent"] = float(below.max()) if len(below) else np.nan
        row["first_violation_percent"] = float(first_bad)
        row["binding_limit"] = _binding(g[g["penetration_percent"] == first_bad]) if len(bad) else ""
        row["seeds"] = int(g["seed"].nunique()) if "seed" in g else 1
        rows.append(row)
    return pd.DataFrame(rows)


def _binding(points: pd.DataFrame) -> str:
    """Which limits the points at the first violating penetration broke."""
    out = []
    num = lambda c: pd.to_numeric(points.get(c), errors="coerce")  # noqa: E731
    if (~points["status"].eq("ok")).any():
        out.append("failed")
    if ((num("min_voltage_pu") < points["limit_vm_min_pu"] - TOL)
            | (num("max_voltage_pu") > points["limit_vm_max_pu"] + TOL)).any():
        out.append("voltage")
    if (num("max_line_loading_percent") > points["limit_line_loading_percent"] + TOL).any():
        out.append("line")
    if (num("max_trafo_loading_percent") > points["limit_trafo_loading_percent"] + TOL).any():
        out.append("trafo")
    if (num("pf_not_converged_steps").fillna(0) > 0).any():
        out.append("power flow")
    return ", ".join(out)


def markdown(hc: pd.DataFrame) -> str:
    """The hosting-capacity table as Markdown."""
    def pct(v: float) -> str:
        return "none" if np.isnan(v) else f"{v:g} %"

    keys = [k for k in GROUP_AXES if k in hc]
    head = "| " + " | ".join(keys) + " | hosting capacity | first violation | binding limit | seeds |\n"
    head += "|" + "---|" * (len(keys) + 4) + "\n"
    lines = []
    for _, r in hc.iterrows():
        first = "none up to the sweep's maximum" if np.isnan(r["first_violation_percent"]) \
            else pct(r["first_violation_percent"])
        cells = [f"`{r[k]}`" if k == "network" else str(r[k]) for k in keys]
        lines.append("| " + " | ".join(cells) + f" | {pct(r['hosting_capacity_percent'])} | {first} | "
                     f"{r['binding_limit']} | {r['seeds']} |")
    return head + "\n".join(lines) + "\n"


def plot(table: pd.DataFrame, path: Path) -> None:
    """Worst voltage and line/transformer loading vs penetration, per network and strategy.

    One column per network; lines are the mean over seeds, bands span the seeds'
    minimum to maximum; dashed lines are the limits.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nets = list(dict.fromkeys(table["network"])) if "network" in table else [None]
    strategies = list(dict.fromkeys(table["strategy"])) if "strategy" in table else [None]
    rows = (("min_voltage_pu", "worst voltage [pu]", "limit_vm_min_pu"),
            ("max_line_loading_percent", "max line loading [%]", "limit_line_loading_percent"),
            ("max_trafo_loading_percent", "max transformer loading [%]", "limit_trafo_loading_percent"))
    fig, axes = plt.subplots(len(rows), len(nets), figsize=(4.2 * len(nets), 8.5), squeeze=False,
                             sharex=True)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    ok = table[table["status"] == "ok"]
    for j, net in enumerate(nets):
        sub = ok if net is None else ok[ok["network"] == net]
        for i, (col, label, limit) in enumerate(rows):
            ax = axes[i][j]
            for k, strat in enumerate(strategies):
                s = sub if strat is None else sub[sub["strategy"] == strat]
                if col not in s or s.empty:
                    continue
                g = pd.to_numeric(s[col], errors="coerce").groupby(s["penetration_percent"])
                stats = pd.DataFrame({"mean": g.mean(), "lo": g.min(), "hi": g.max()}).sort_index()
                ax.plot(stats.index, stats["mean"], marker="o", ms=3, color=colours[k], label=strat)
                ax.fill_between(stats.index, stats["lo"], stats["hi"], color=colours[k], alpha=0.2, lw=0)
            lim = table[limit].iloc[0] if net is None else table.loc[table["network"] == net, limit].iloc[0]
            ax.axhline(lim, color="k", ls="--", lw=0.8)
            if i == 0 and net is not None:
                ax.set_title(str(net).removeprefix("simbench:"), fontsize=9)
            if j == 0:
                ax.set_ylabel(label)
            if i == len(rows) - 1:
                ax.set_xlabel("EV penetration [% of households]")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8, loc="lower left")
    fig.suptitle("Hosting capacity: mean over seeds, band = min..max, dashed = limit", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(table: pd.DataFrame, out: Path, plots: bool = True) -> Sequence[str]:
    """Write ``hosting_capacity.md`` (and ``hosting_capacity.png``) under ``out``; return the lines echoed."""
    hc = hosting_capacity(table)
    text = markdown(hc)
    (Path(out) / "hosting_capacity.md").write_text(text)
    lines = ["", "hosting capacity (highest penetration inside every limit, for every seed):", text]
    if plots:
        plot(table, Path(out) / "hosting_capacity.png")
        lines.append(f"plot: {Path(out) / 'hosting_capacity.png'}")
    return lines
