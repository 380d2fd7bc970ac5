"""Parameter sweeps: one co-simulation per point, run on Dask distributed.

A scenario with a ``[sweep]`` table (validated in ``scenarios/config.py``) expands to
points, the product of its axes or an explicit list (:func:`expand`). Each point is
the scenario's case with the point's values put in (:func:`point_case`) and is run
by :func:`scenarios.runner.run_case` in a Dask worker, its full results in
``OUT/points/<point id>/``. The summaries come back as they finish and are merged
into ``OUT/sweep.parquet``: one row per point, every summary figure, the point's
coordinates, its status and, for a failed point, its error.

Robustness:

- a point whose co-simulation fails is a row with ``status = "failed"`` and its
  error; the sweep goes on;
- a point whose worker dies is re-run by Dask on another worker (the scheduler's
  ``allowed-failures``; ``[sweep] retries`` on the LocalCluster); a point is
  idempotent (its recorder starts its directory afresh), so a half-written first
  attempt leaves nothing behind;
- a point whose directory holds the recorder's completion marker is not run again:
  re-running the same command resumes, and reads the finished points' summaries
  from their ``summary.json`` (JSON: nothing read from disk is unpickled);
- the same seed gives the same results serially and on the cluster (every random
  draw comes from the point's seed; timing figures, listed in
  :data:`TIMING_KEYS`, naturally differ).

Penetration (axis ``penetration_percent``) is EVs per household, in %. Households
are counted per bus by :func:`households`: on a network whose loads carry SimBench
profiles, every load with a household profile (``H0-*``) is one household; on any
other network (CIGRE LV), the scenario's ``[fleet].counts`` is the 100 % fleet,
one EV per household. A point at ``p`` % gives an EV to ``round(p/100 * N)`` of the
``N`` households, the first ones of a permutation drawn from the point's seed, so
that for one seed every EV of a lower penetration is also there at a higher one.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scenarios.config import Case, GridConfig, Scenario

POINTS_DIR = "points"
TABLE_NAME = "sweep.parquet"
#: Summary figures that measure time: they differ between any two runs.
TIMING_KEYS = ("wall_seconds", "world_run_seconds", "setup_seconds", "solve_seconds", "exec_seconds")
#: SimBench's household standard load profiles start with this (H0-A ... H0-L).
HOUSEHOLD_PROFILE_PREFIX = "H"
_SLUG_NAMES = {"network": "", "penetration_percent": "pen", "strategy": "", "soc_target": "soc",
               "seed": "seed"}


@dataclass(frozen=True)
class Point:
    """One point of a sweep: its id (also its folder name), coordinates and case."""

    id: str
    coords: Mapping[str, Any]
    case: Case


# -------------------------------------------------------------- penetration ---


def households(net, reference_counts: Mapping) -> dict[int, int]:
    """Households per bus [-] that the penetration axis gives EVs to.

    Parameters
    ----------
    net : pandapower.pandapowerNet
    reference_counts : mapping
        The scenario's ``[fleet].counts`` (bus reference -> EVs): the 100 % fleet
        on a network without SimBench household profiles.

    Returns
    -------
    dict
        pandapower bus index -> number of households, ascending bus order.
    """
    from scenarios.buses import resolve_bus

    load = net.load[net.load.in_service.astype(bool)]
    if "profile" in load.columns:
        home = load[load["profile"].astype(str).str.startswith(HOUSEHOLD_PROFILE_PREFIX)]
        if len(home):
            return dict(sorted(Counter(int(b) for b in home["bus"]).items()))
    counts: Counter = Counter()
    for ref, n in reference_counts.items():
        counts[resolve_bus(net, ref)] += int(n)
    return dict(sorted((b, n) for b, n in counts.items() if n))


def penetration_counts(homes: Mapping[int, int], percent: float, seed: int) -> dict[int, int]:
    """EVs per bus at ``percent`` % of the households (see the module docstring).

    The households are put in one random order drawn from ``seed`` alone, and the
    first ``round(percent / 100 * N)`` get an EV (halves round up), so the EVs of a
    lower penetration are a subset of a higher one's for the same seed.
    """
    slots = np.repeat(np.fromiter(homes.keys(), dtype=np.int64), np.fromiter(homes.values(), dtype=np.int64))
    n = int(math.floor(percent / 100.0 * len(slots) + 0.5))
    order = np.random.default_rng([seed, 16]).permutation(len(slots))
    chosen = Counter(int(b) for b in slots[order[:n]])
    return dict(sorted(chosen.items()))


# ------------------------------------------------------------------ points ---


def _slug(coords: Mapping[str, Any]) -> str:
    parts = []
    for axis, value in coords.items():
        text = f"{value:g}" if isinstance(value, float) else str(value)
        if axis == "penetration_percent":  # zero-padded: folders sort by penetration
            text = f"{int(value):03d}" if float(value).is_integer() else f"{float(value):05.1f}"
        parts.append(_SLUG_NAMES[axis] + text)
    return re.sub(r"[^A-Za-z0-9._=+-]+", "-", "_".join(parts))


def _network_grid(base: Case, networks: Mapping[str, GridConfig], name: str) -> GridConfig:
    return networks.get(name) or replace(base.grid, network=name)


def point_case(base: Case, coords: Mapping[str, Any], networks: Mapping[str, GridConfig],
               point_id: str, homes: Mapping[str, Mapping[int, int]] | None = None) -> Case:
    """The case of one point: ``base`` with the point's values put in.

    ``homes`` caches :func:`households` per network name (filled as needed).
    """
    from adapters.networks import load_network

    homes = {} if homes is None else homes
    meta = replace(base.scenario, seed=coords.get("seed", base.scenario.seed))
    grid = _network_grid(base, networks, coords.get("network", base.grid.network))
    fleet = base.fleet
    if "soc_target" in coords:
        fleet = replace(fleet, soc_target=float(coords["soc_target"]))
    if "penetration_percent" in coords:
        if grid.network not in homes:
            homes[grid.network] = households(load_network(grid.network, base.base_dir), base.fleet.counts)
        fleet = replace(fleet, counts=penetration_counts(homes[grid.network], coords["penetration_percent"],
                                                         meta.seed))
    sched = replace(base.scheduler, strategy=coords.get("strategy", base.scheduler.strategy))
    return replace(base, name=point_id, scenario=meta, grid=grid, fleet=fleet, scheduler=sched)


def expand(scenario: Scenario) -> list[Point]:
    """Every point of the scenario's sweep, in the order of ``[sweep]``."""
    sweep = scenario.sweep
    if sweep is None:
        raise ValueError(f"{scenario.source}: the scenario has no [sweep]")
    base, networks = scenario.cases[0], dict(sweep.networks)
    out, homes = [], {}
    for pairs in sweep.points:
        coords = dict(pairs)
        pid = _slug(coords)
        out.append(Point(pid, coords, point_case(base, coords, networks, pid, homes)))
    return out


def check_point_networks(base: Case, axes: Sequence[str], points, networks: Mapping[str, GridConfig]) -> list[str]:
    """Problems of the bus references and households on every network of a sweep.

    Called by the scenario validation; loads each network once.
    """
    from adapters.networks import load_network
    from scenarios.buses import resolve_bus

    names = sorted({dict(p).get("network", base.grid.network) for p in points})
    problems = []
    for name in names:
        net = load_network(name, base.base_dir)
        where = f"sweep network {name!r}"
        refs = [("pv.units[%d].bus" % i, u.bus) for i, u in enumerate(base.pv.units)]
        refs += [("fleet.evs[%d].bus" % i, e.bus) for i, e in enumerate(base.fleet.evs)]
        homes_from_counts = True
        if "penetration_percent" in axes:
            load = net.load
            homes_from_counts = not ("profile" in load.columns and load["profile"].astype(str)
                                     .str.startswith(HOUSEHOLD_PROFILE_PREFIX).any())
            if homes_from_counts and not base.fleet.counts:
                problems.append(f"sweep.axes.penetration_percent: {where} has no SimBench household loads "
                                "(H0 profiles); give its 100 % fleet, one EV per household, in [fleet].counts")
        if homes_from_counts:
            refs += [(f"fleet.counts.{b}", b) for b in base.fleet.counts]
        if name == base.grid.network:
            continue  # the shared tables' references were checked on this network already
        for field_name, ref in refs:
            try:
                resolve_bus(net, ref)
            except KeyError as exc:
                problems.append(f"{field_name}: on {where}: {exc.args[0]}")
    return problems


# --------------------------------------------------------------- execution ---


def run_point(case: Case, out_dir: str, plots: bool = False, quiet: bool = True,
              recorder_writer: str = "inline") -> dict:
    """Run one point (in a worker): ``{"status", "summary" | "error", "exec_seconds"}``.

    Never raises for a failing co-simulation: its error is the result, so that one
    bad point does not stop the sweep. The recorder writes inline by default: a
    writer child process per point (a fresh interpreter importing pyarrow, ~0.5 s of
    CPU) cost more than it saves on small points and competes with the other
    workers for the cores (docs/hosting_capacity.md, "Speed").
    """
    from scenarios.runner import run_case

    if quiet:
        from loguru import logger

        logger.remove()  # the client prints the progress; keep workers quiet
    t0 = time.perf_counter()
    try:
        result = run_case(case, Path(out_dir), plots=plots, recorder_writer=recorder_writer)
    except Exception as exc:  # noqa: BLE001 - recorded as the point's result, the sweep goes on
        error = f"{type(exc).__name__}: {exc}"
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "error.txt").write_text(error + "\n")
        return {"status": "failed", "error": error, "exec_seconds": time.perf_counter() - t0}
    return {"status": "ok", "summary": result.summary, "exec_seconds": time.perf_counter() - t0}


def _finished(point_dir: Path) -> dict | None:
    """The result of a point completed by an earlier run (None if it is not)."""
    from simulators.recorder.model import is_complete

    summary = point_dir / "summary.json"
    if is_complete(point_dir) and summary.is_file():
        return {"status": "ok", "summary": json.loads(summary.read_text()), "resumed": True}
    return None


def _cell(value: Any) -> Any:
    """Summary values as Parquet-friendly scalars (nested values as JSON text)."""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True)
    return value


def _row(point: Point, result: Mapping) -> dict:
    row: dict[str, Any] = {"point": point.id}
    row.update(point.coords)
    grid = point.case.grid
    row.update(status=result["status"], error=result.get("error"),
               n_evs=sum(point.case.fleet.counts.values()) + len(point.case.fleet.evs),
               limit_vm_min_pu=grid.vm_min_pu, limit_vm_max_pu=grid.vm_max_pu,
               limit_line_loading_percent=grid.max_line_loading_percent,
               limit_trafo_loading_percent=grid.max_trafo_loading_percent,
               resumed=bool(result.get("resumed", False)),
               exec_seconds=result.get("exec_seconds"))
    for key, value in sorted(result.get("summary", {}).items()):
        if key not in row:
            row[key] = _cell(value)
    return row


def merge_table(rows: Sequence[Mapping]) -> pd.DataFrame:
    """One row per point, in sweep order; coordinates first, then every figure."""
    return pd.DataFrame(list(rows))


class _Progress:
    """tqdm bar: points done, failed, estimated time left (stderr)."""

    def __init__(self, total: int, done: int, enabled: bool):
        from tqdm import tqdm

        self.failed = 0
        self.bar = tqdm(total=total, initial=done, unit="point", desc="sweep", disable=not enabled,
                        dynamic_ncols=True, smoothing=0.1)
        self.bar.set_postfix(failed=0)

    def update(self, status: str) -> None:
        if status != "ok":
            self.failed += 1
            self.bar.set_postfix(failed=self.failed)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, workers: int | None = None,
                allowed_failures: int = 3) -> Iterator[Any]:
    """A Dask client: on ``scheduler`` (an address) or on a new LocalCluster.

    The LocalCluster listens on loopback only (``127.0.0.1``, random ports, the
    scheduler's HTTP endpoint included), runs one single-threaded worker process per core (or ``workers``)
    and is shut down on exit. A point whose worker dies is re-run up to
    ``allowed_failures`` times on a LocalCluster; an existing cluster keeps its own
    setting.
    """
    import logging
    import os

    import dask
    from distributed import Client, LocalCluster

    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    n = workers or os.cpu_count() or 1
    with dask.config.set({"distributed.scheduler.allowed-failures": allowed_failures}):
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                          scheduler_port=0,
                          # the scheduler always serves HTTP; None would mean port 8787
                          dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR,
                          memory_limit=0) as cluster, Client(cluster) as client:
            yield client


@dataclass(frozen=True)
class SweepResult:
    """The merged table of a sweep and where it went."""

    table: pd.DataFrame
    path: Path
    n_failed: int
    n_resumed: int


def run_sweep(scenario: Scenario, out: Path, scheduler: str | None = None, workers: int | None = None,
              serial: bool = False, client: Any = None, plots: bool = True,
              echo: Callable[[str], None] = print, progress: bool = True) -> SweepResult:
    """Run every point of a sweep not already complete under ``out``; merge the table.

    Parameters
    ----------
    scenario : Scenario
        With a ``[sweep]``.
    out : Path
        ``out/points/<id>/`` per point, ``out/sweep.parquet`` the merged table.
    scheduler : str, optional
        Address of an existing Dask scheduler (``tcp://host:8786``); default a
        LocalCluster on loopback with ``workers`` (default ``[sweep] workers``, then
        one per core) worker processes.
    serial : bool
        Run the points one after the other in this process (no Dask).
    client : distributed.Client, optional
        Use this client (tests, notebooks); ``scheduler`` and ``workers`` are ignored.
    plots : bool
        Write the hosting-capacity plot of a penetration sweep (per-point plots
        follow ``[sweep] point_plots``).
    """
    out = Path(out)
    sweep = scenario.sweep
    points = expand(scenario)
    results: dict[str, Mapping] = {}
    todo = []
    for p in points:
        done = _finished(out / POINTS_DIR / p.id)
        if done is None:
            todo.append(p)
        else:
            results[p.id] = done
    n_resumed = len(results)
    echo(f"sweep: {len(points)} points, {n_resumed} already complete, {len(todo)} to run -> {out}")
    bar = _Progress(len(points), n_resumed, progress)
    point_plots = sweep.point_plots and plots
    try:
        if serial or not todo:
            for p in todo:
                results[p.id] = run_point(p.case, str(out / POINTS_DIR / p.id), point_plots, quiet=False)
                bar.update(results[p.id]["status"])
        else:
            with contextlib.ExitStack() as stack:
                if client is None:
                    client = stack.enter_context(dask_client(scheduler, workers or sweep.workers or None,
                                                             sweep.retries))
                _run_on_dask(client, todo, out, point_plots, results, bar)
    finally:
        bar.close()
        rows = [_row(p, results[p.id]) for p in points if p.id in results]
        table = merge_table(rows)
        out.mkdir(parents=True, exist_ok=True)
        path = out / TABLE_NAME
        if len(table):
            table.to_parquet(path, index=False)
    n_failed = int((table["status"] != "ok").sum()) if len(table) else 0
    for _, row in table[table["status"] != "ok"].iterrows() if len(table) else ():
        echo(f"FAILED point {row['point']}: {row['error']}")
    echo(f"sweep: {len(table) - n_failed} points ok, {n_failed} failed; table {path}")
    if "penetration_percent" in sweep.axes and len(table):
        from scenarios.hosting import write_report

        for line in write_report(table, out, plots=plots):
            echo(line)
    return SweepResult(table, path, n_failed, n_resumed)


def _run_on_dask(client, todo: Sequence[Point], out: Path, plots: bool, results: dict, bar: _Progress) -> None:
    """Submit every point, collect results as they finish (failures included)."""
    from distributed import as_completed

    futures = {}
    for p in todo:
        fut = client.submit(run_point, p.case, str(out / POINTS_DIR / p.id), plots,
                            key=f"point-{p.id}-{time.time_ns()}", pure=False)
        futures[fut] = p
    for fut in as_completed(futures):
        p = futures[fut]
        try:
            res = fut.result()
        except Exception as exc:  # noqa: BLE001 - e.g. KilledWorker after every retry: record it
            res = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        results[p.id] = res
        bar.update(res["status"])
        fut.release()


__all__ = ["Point", "SweepResult", "expand", "households", "penetration_counts", "point_case",
           "run_point", "run_sweep", "dask_client", "TIMING_KEYS", "TABLE_NAME", "POINTS_DIR"]
