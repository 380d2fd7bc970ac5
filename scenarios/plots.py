"""Figures of a recorded run, in the style of the papers, ready for a report.

Everything is read from the run folder (the recorded tables and ``metadata.json``),
so any finished run can be re-plotted: ``plot_run(out_dir)``. Each figure is
written as PNG (150 dpi) and SVG:

``voltage_bands``   quantile bands of the monitored buses' voltages over time
                    (seed 000 Figs. 2-3, seed 001 Fig. 4), limits, worst step marked
``voltage_profile`` voltage along the monitored feeder (distance from its
                    transformer) at the worst step, and at the first step
``loading``         transformer loading per transformer and line loading (the most
                    loaded lines and the maximum over all), with their limits
``feeder_power``    base load, EV and PV active power stacked at the feeder head,
                    with the transformer's measured power; reactive power below
                    when any source uses it
``fleet``           mean SOC (seed 000 Fig. 4) and the fleet's total P (and Q)

Time axes are clock time in the scenario's time zone, dated; every axis has its
unit; legends sit outside the data. ``docs/plots.md`` shows each figure with the
command that made it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from simulators.recorder.model import read_table, tables  # noqa: E402

QUANTILE_BANDS = ((0.0, 1.0), (0.1, 0.9), (0.25, 0.75))
FORMATS = ("png", "svg")
DPI = 150
#: lines drawn one by one in the loading figure (the rest as the maximum)
N_TOP_LINES = 4
#: below this [kvar], a reactive power series counts as unused
Q_EPS_KVAR = 1e-6


class RunView:
    """A run folder's tables and metadata, as the figures need them."""

    def __init__(self, out_dir: Path, net=None):
        self.out_dir = Path(out_dir)
        self.meta = json.loads((self.out_dir / "metadata.json").read_text())
        cfg = self.meta.get("config", {})
        self.grid_cfg = cfg.get("grid", {})
        self.name = self.meta.get("case", self.out_dir.name)
        self.tz = self.meta.get("timezone", "UTC")
        self.step_s = int(self.meta.get("step_s", 900))
        self.monitored = list(self.meta.get("monitored_buses") or [])
        self.present = set(tables(self.out_dir))
        self._net = net

    @property
    def net(self):
        if self._net is None:
            from adapters.networks import load_network

            base_dir = self.meta.get("base_dir")
            self._net = load_network(self.grid_cfg.get("network", "cigre_lv"), base_dir)
        return self._net

    def wide(self, table: str, attr: str) -> pd.DataFrame:
        """``attr`` as a timestamp x entity frame (tz-aware clock time index)."""
        df = read_table(self.out_dir, table)
        return df.pivot(index="timestamp", columns="entity", values=attr).astype(float)

    def has(self, table: str) -> bool:
        return table in self.present

    def bus_vm(self) -> pd.DataFrame:
        vm = self.wide("Bus", "vm_pu")
        cols = [c for c in self.monitored if c in vm.columns] or list(vm.columns)
        return vm[cols]

    def monitored_index(self) -> set[int]:
        names = self.meta.get("bus_names", {})
        by_name = {v: int(k) for k, v in names.items()}
        return {by_name[e] for e in self.monitored if e in by_name} or {int(k) for k in names}

    def date_text(self, index: pd.DatetimeIndex) -> str:
        first, last = index.min(), index.max()
        if first.date() == last.date():
            return first.strftime("%d %b %Y")
        return f"{first.strftime('%d %b')} to {last.strftime('%d %b %Y')}"


def _time_axis(ax, view: RunView, index: pd.DatetimeIndex, label: bool = True) -> None:
    locator = mdates.AutoDateLocator(minticks=4, maxticks=9, tz=index.tz)
    ax.xaxis.set_major_locator(locator)
    # the date is in the axis label: no offset text in the corner
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=index.tz, show_offset=False))
    ax.grid(True, alpha=0.3)
    if label:
        ax.set_xlabel(f"clock time [{view.tz}], {view.date_text(index)}")


def _legend_outside(ax, **kwargs) -> None:
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=8,
              frameon=False, **kwargs)


def _save(fig, stem: Path) -> list[Path]:
    paths = []
    for fmt in FORMATS:
        path = stem.with_suffix(f".{fmt}")
        # SVG text stays text (editable, searchable); no date stamp, so reruns match
        with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": "ev-grid-cosim"}):
            fig.savefig(path, dpi=DPI, bbox_inches="tight", metadata={"Date": None} if fmt == "svg" else None)
        paths.append(path)
    plt.close(fig)
    return paths


def _through_last_step(frame, step_s: int):
    """``frame`` with its last row repeated one step later: a power published at
    ``t`` holds over ``[t, t + step)``, so step plots must reach the horizon's end."""
    end = frame.index[-1:] + pd.Timedelta(seconds=step_s)
    return pd.concat([frame, frame.iloc[-1:].set_axis(end)])


def quantile_bands(ax, times, values: np.ndarray, color: str, label: str) -> None:
    """Shade quantile bands of ``values`` (time x entity) and draw the median."""
    for (lo, hi), alpha in zip(QUANTILE_BANDS, (0.15, 0.3, 0.5)):
        ax.fill_between(times, np.nanquantile(values, lo, axis=1), np.nanquantile(values, hi, axis=1),
                        color=color, alpha=alpha, linewidth=0, label=f"{label} q{lo:g}-q{hi:g}")
    ax.plot(times, np.nanmedian(values, axis=1), color=color, linewidth=1.2, label=f"{label} median")


def _limits(ax, lo: float | None, hi: float | None, label: str) -> None:
    if lo is not None:
        ax.axhline(lo, color="k", linestyle="--", linewidth=1, label=label)
    if hi is not None:
        ax.axhline(hi, color="k", linestyle="--", linewidth=1, label=None if lo is not None else label)


def plot_voltage_bands(view: RunView) -> list[Path]:
    vm = view.bus_vm()
    times = vm.index
    fig, ax = plt.subplots(figsize=(9, 4))
    quantile_bands(ax, times, vm.to_numpy(), "tab:blue", "voltage")
    _limits(ax, view.grid_cfg.get("vm_min_pu"), view.grid_cfg.get("vm_max_pu"), "limits")
    worst_t = vm.min(axis=1).idxmin()
    worst_bus = vm.loc[worst_t].idxmin()
    ax.plot([worst_t], [vm.loc[worst_t, worst_bus]], "v", color="tab:red",
            label=f"lowest: {vm.loc[worst_t, worst_bus]:.3f} pu\n{worst_bus}, {worst_t:%H:%M}")
    ax.set_ylabel("voltage magnitude [pu]")
    ax.set_title(f"{view.name}: voltages of the {vm.shape[1]} monitored buses (AC power flow)")
    _time_axis(ax, view, times)
    _legend_outside(ax)
    return _save(fig, view.out_dir / "voltage_bands")


def _distances_km(net, roots: Sequence[int]) -> dict[int, float]:
    """Line length [km] along the network (open switches respected, transformers
    left out) from the nearest of ``roots``."""
    import networkx as nx
    import pandapower.topology as top

    graph = top.create_nxgraph(net, calc_branch_impedances=False, include_trafos=False)
    return nx.multi_source_dijkstra_path_length(graph, set(roots), weight="weight")


def _lines_in_service(net, buses: set[int]):
    """Lines between ``buses`` that are in service and not opened by a switch."""
    lines = net.line[net.line.in_service.astype(bool) & net.line.from_bus.isin(buses) & net.line.to_bus.isin(buses)]
    sw = net.switch
    opened = set(sw.element[(sw.et == "l") & ~sw.closed.astype(bool)].astype(int))
    return lines[~lines.index.isin(opened)]


def plot_voltage_profile(view: RunView) -> list[Path]:
    net = view.net
    vm = view.bus_vm()
    names = view.meta.get("bus_names", {})
    index_of = {v: int(k) for k, v in names.items()}
    buses = [index_of[c] for c in vm.columns if c in index_of]
    trafo = net.trafo[net.trafo.lv_bus.isin(buses)]
    if not len(trafo):  # a monitored feeder without its busbar: measure from every LV busbar
        trafo = net.trafo
    roots = [int(b) for b in trafo.lv_bus] if len(trafo) else [int(net.ext_grid.bus.iloc[0])]
    dist = _distances_km(net, roots)
    worst_t = vm.min(axis=1).idxmin()
    fig, ax = plt.subplots(figsize=(9, 4))
    lines = _lines_in_service(net, set(buses))
    for t, color, label in ((vm.index[0], "tab:gray", "first step"), (worst_t, "tab:red", "worst step")):
        row = vm.loc[t]
        for k, line in enumerate(lines.itertuples()):
            a, b = int(line.from_bus), int(line.to_bus)
            if a in dist and b in dist:
                ax.plot([dist[a], dist[b]], [row[names[str(a)]], row[names[str(b)]]], color=color, linewidth=1,
                        label=f"{label}, {t:%d %b %H:%M}" if k == 0 else None)
        xs = [dist[i] for i in buses if i in dist]
        ys = [row[names[str(i)]] for i in buses if i in dist]
        ax.plot(xs, ys, "o", color=color, markersize=3)
    lowest = vm.loc[worst_t].idxmin()
    ax.annotate(f"{lowest}: {vm.loc[worst_t, lowest]:.3f} pu", (dist[index_of[lowest]], vm.loc[worst_t, lowest]),
                textcoords="offset points", xytext=(-6, -4), ha="right", va="top", fontsize=8, color="tab:red")
    _limits(ax, view.grid_cfg.get("vm_min_pu"), view.grid_cfg.get("vm_max_pu"), "limits")
    root_names = ", ".join(names.get(str(r), f"bus {r}") for r in roots)
    ax.set_xlabel(f"distance along the lines from the transformer ({root_names}) [km]")
    ax.set_ylabel("voltage magnitude [pu]")
    ax.set_title(f"{view.name}: voltage along the monitored feeder at the worst step")
    ax.margins(y=0.12)  # room for the label of the lowest bus
    ax.grid(True, alpha=0.3)
    _legend_outside(ax)
    return _save(fig, view.out_dir / "voltage_profile")


def plot_loading(view: RunView) -> list[Path]:
    trafo = view.wide("Trafo", "loading_percent") if view.has("Trafo") else None
    line = view.wide("Line", "loading_percent") if view.has("Line") else None
    panels = [p for p in (trafo, line) if p is not None]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.8 * len(panels) + 0.6), sharex=True, squeeze=False)
    axes = axes[:, 0]
    k = 0
    if trafo is not None:
        ax = axes[k]
        k += 1
        for col in trafo.columns:
            ax.plot(trafo.index, trafo[col], linewidth=1.2, label=col)
        _limits(ax, None, view.grid_cfg.get("max_trafo_loading_percent"), "limit")
        ax.set_ylabel("transformer loading [%]")
        ax.set_title(f"{view.name}: transformer and line loading (AC power flow)")
        _legend_outside(ax)
    if line is not None:
        ax = axes[k]
        top = line.max().nlargest(N_TOP_LINES).index
        ax.plot(line.index, line.max(axis=1), color="k", linewidth=1.8, label=f"max over {line.shape[1]} lines")
        for col in top:
            ax.plot(line.index, line[col], linewidth=1, label=col)
        _limits(ax, None, view.grid_cfg.get("max_line_loading_percent"), "limit")
        ax.set_ylabel("line loading [%]")
        if trafo is None:
            ax.set_title(f"{view.name}: line loading (AC power flow)")
        _legend_outside(ax)
    for i, ax in enumerate(axes):
        _time_axis(ax, view, (trafo if trafo is not None else line).index, label=i == len(axes) - 1)
    return _save(fig, view.out_dir / "loading")


def _feeder_sums(view: RunView) -> dict[str, pd.DataFrame]:
    """Base load, PV and EV P and Q summed over the monitored buses [kW], [kvar]."""
    net = view.net
    buses = view.monitored_index()
    from simulators.grid.naming import element_eids

    out: dict[str, pd.DataFrame] = {}
    if view.has("Load"):
        load_eids = element_eids(net, "load")
        cols = [load_eids[i] for i in net.load.index if int(net.load.at[i, "bus"]) in buses]
        p, q = view.wide("Load", "p_kw"), view.wide("Load", "q_kvar")
        cols = [c for c in cols if c in p.columns]
        out["base load"] = pd.DataFrame({"p": p[cols].sum(axis=1), "q": q[cols].sum(axis=1)})
    if view.has("EVBus"):
        ev = read_table(view.out_dir, "EVBus")
        names = view.meta.get("bus_names", {})
        wanted = {names.get(str(b), f"Bus-{b}") for b in buses}
        ev = ev[ev["bus"].isin(wanted)] if "bus" in ev else ev
        g = ev.groupby("timestamp")[["p_kw", "q_kvar"]].sum()
        out["EV"] = pd.DataFrame({"p": g["p_kw"], "q": g["q_kvar"]})
    if view.has("PV"):
        pv = read_table(view.out_dir, "PV")
        bus = pv["entity"].str.split("-").str[1].astype(int)
        pv = pv[bus.isin(buses)]
        g = pv.groupby("timestamp")[["p_kw", "q_kvar"]].sum()
        out["PV"] = pd.DataFrame({"p": g["p_kw"], "q": g["q_kvar"]})
    return out


def plot_feeder_power(view: RunView) -> list[Path]:
    net = view.net
    sums = _feeder_sums(view)
    index = next(iter(sums.values())).index if sums else view.wide("Grid", "vm_min_pu").index
    sums = {k: _through_last_step(v.reindex(index).fillna(0.0), view.step_s) for k, v in sums.items()}
    index = _through_last_step(pd.Series(0.0, index=index), view.step_s).index
    buses = view.monitored_index()
    trafo_cols: list[str] = []
    trafo_p = trafo_q = None
    if view.has("Trafo"):
        from simulators.grid.naming import element_eids

        eids = element_eids(net, "trafo")
        trafo_cols = [eids[i] for i in net.trafo.index if int(net.trafo.at[i, "lv_bus"]) in buses]
        p = view.wide("Trafo", "p_hv_kw")
        q = view.wide("Trafo", "q_hv_kvar")
        trafo_cols = [c for c in trafo_cols if c in p.columns]
        if trafo_cols:
            trafo_p = _through_last_step(p[trafo_cols].sum(axis=1), view.step_s)
            trafo_q = _through_last_step(q[trafo_cols].sum(axis=1), view.step_s)
    uses_q = any(v["q"].abs().max() > Q_EPS_KVAR for k, v in sums.items() if k != "base load")
    n = 2 if uses_q else 1
    fig, axes = plt.subplots(n, 1, figsize=(9, 3.4 * n + 0.4), sharex=True, squeeze=False)
    axes = axes[:, 0]
    colors = {"base load": "tab:gray", "EV": "tab:red", "PV": "gold"}
    for ax, key, unit in zip(axes, ("p", "q"), ("active power [kW]", "reactive power [kvar]")):
        # a series shown (and named in the legend) only if visible: above 0.1 % of the panel's scale
        scale = max([sums[k][key].abs().max() for k in sums] + [Q_EPS_KVAR])
        pos = [k for k in ("base load", "EV") if k in sums and (sums[k][key] > 1e-3 * scale).any()]
        ax.stackplot(index, *[sums[k][key].clip(lower=0) for k in pos], step="post",
                     colors=[colors[k] for k in pos], alpha=0.8, labels=[f"{k} (consumption)" for k in pos])
        neg = [k for k in ("PV", "EV", "base load") if k in sums and (sums[k][key] < -1e-3 * scale).any()]
        if neg:
            ax.stackplot(index, *[sums[k][key].clip(upper=0) for k in neg], step="post",
                         colors=[colors[k] for k in neg], alpha=0.5,
                         labels=[f"{k} ({'generation' if key == 'p' else 'supply'})" for k in neg])
        head = trafo_p if key == "p" else trafo_q
        if head is not None:
            ax.step(index, head.reindex(index), where="post", color="k", linewidth=1.2,
                    label="transformer HV side (measured)")
        ax.axhline(0, color="k", linewidth=0.5)
        ax.set_ylabel(unit)
        _legend_outside(ax)
    head_name = ", ".join(trafo_cols) if trafo_cols else "feeder"
    axes[0].set_title(f"{view.name}: power at the feeder head ({head_name}), load convention")
    for i, ax in enumerate(axes):
        _time_axis(ax, view, index, label=i == n - 1)
    return _save(fig, view.out_dir / "feeder_power")


def plot_fleet(view: RunView) -> list[Path]:
    soc = view.wide("EV", "soc")
    p = _through_last_step(view.wide("EV", "p_kw").fillna(0.0), view.step_s)
    q = _through_last_step(view.wide("EV", "q_kvar").fillna(0.0), view.step_s)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True)
    ax1.plot(soc.index, soc.mean(axis=1), color="tab:green", label=f"mean SOC of {soc.shape[1]} EVs")
    ax1.fill_between(soc.index, soc.quantile(0.1, axis=1), soc.quantile(0.9, axis=1), color="tab:green",
                     alpha=0.2, linewidth=0, label="q0.1-q0.9")
    target = view.meta.get("config", {}).get("fleet", {}).get("soc_target")
    if target is not None:
        ax1.axhline(target, color="k", linestyle="--", linewidth=1, label="target")
    ax1.set_ylabel("state of charge [-]")
    ax1.set_title(f"{view.name}: EV fleet")
    _legend_outside(ax1)
    ax2.step(p.index, p.sum(axis=1), where="post", color="tab:red", label="active power P [kW]")
    if q.abs().to_numpy().max(initial=0.0) > Q_EPS_KVAR:
        ax2.step(q.index, q.sum(axis=1), where="post", color="tab:purple", label="reactive power Q [kvar]")
    ax2.axhline(0, color="k", linewidth=0.5)
    ax2.set_ylabel("fleet total [kW], [kvar]")
    _legend_outside(ax2)
    _time_axis(ax1, view, soc.index, label=False)
    _time_axis(ax2, view, soc.index)
    return _save(fig, view.out_dir / "fleet")


def plot_run(out_dir: Path, net=None) -> list[Path]:
    """Every figure of one run folder (module docstring); returns the files written.

    ``net``: the run's pandapower network if at hand (else loaded from the
    scenario's ``grid.network``).
    """
    view = RunView(out_dir, net)
    written: list[Path] = []
    if view.has("Bus"):
        written += plot_voltage_bands(view)
        written += plot_voltage_profile(view)
    if view.has("Trafo") or view.has("Line"):
        written += plot_loading(view)
    written += plot_feeder_power(view)
    if view.has("EV"):
        written += plot_fleet(view)
    return written


def plot_comparison(case_dirs: Mapping[str, Path], out_path: Path, title: str = "",
                    cases: Sequence[str] | None = None) -> list[Path]:
    """Mean SOC (seed 000 Fig. 4) and lowest monitored voltage of every case, one
    line each; writes ``out_path`` as PNG and SVG."""
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True)
    view = None
    for name in cases or list(case_dirs):
        view = RunView(case_dirs[name])
        if view.has("EV"):
            soc = view.wide("EV", "soc")
            ax1.plot(soc.index, soc.mean(axis=1), label=name)
        vm = view.bus_vm()
        ax2.plot(vm.index, vm.min(axis=1), label=name)
    if view is None:
        raise ValueError("no case to compare")
    _limits(ax2, view.grid_cfg.get("vm_min_pu"), None, "lower limit")
    ax1.set_ylabel("mean state of charge [-]")
    ax2.set_ylabel("lowest monitored voltage [pu]")
    ax1.set_title(f"{title}: mean SOC and lowest voltage per case".strip(": "))
    _legend_outside(ax1, title="case")
    _legend_outside(ax2)
    _time_axis(ax1, view, vm.index, label=False)
    _time_axis(ax2, view, vm.index)
    return _save(fig, Path(out_path).with_suffix(""))
