"""The Python API: load or build a scenario, change it, run it, read the results.

Documented with runnable examples in ``docs/python_api.md`` (executed by
``tests/test_python_api.py``); re-exported as the package ``ev_grid_cosim``.

* Quiet by default: mosaik's INFO lines are held back while a run goes (warnings
  and errors still show) unless you configured loguru yourself.
* Works inside a running event loop (Jupyter, ``asyncio.run``): mosaik's
  ``World`` drives an event loop of its own, which cannot run inside another, so
  :func:`run` then runs the world in a worker thread and waits for it;
  ``await run_async(...)`` does the same without blocking the caller's loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from scenarios.config import Scenario, ScenarioError, parse_scenario
from scenarios.overrides import apply_overrides, out_dir_problem, prepare, shipped_scenarios
from scenarios.runner import CaseResult, RunFailed, run_scenario
from simulators.recorder.model import is_complete, pivot, read_table, tables

__all__ = ["load", "from_dict", "run", "run_async", "open_results", "Results", "shipped_scenarios",
           "Scenario", "ScenarioError", "RunFailed", "CaseResult"]


def load(ref: str | Path = "default", overrides: Mapping[str, Any] | None = None, *, seed: int | None = None,
         steps: int | None = None, until: str | dt.datetime | None = None) -> Scenario:
    """A validated scenario from a TOML file or a shipped study's name.

    Parameters
    ----------
    ref : str or Path
        Path of a TOML file, or a shipped scenario's name (``"seed000_mv"``;
        :func:`shipped_scenarios` lists them).
    overrides : mapping, optional
        ``{"section.key": value}`` changes (``{"scheduler.strategy": "smart"}``),
        validated with the file like ``--set`` on the command line.
    seed : int, optional
        ``scenario.seed``.
    steps, until : optional
        Keep only the first ``steps`` steps, or end at ``until`` (a datetime,
        ``"2024-01-17T20:00"`` or ``"20:00"``).

    Raises
    ------
    ScenarioError
        listing every problem found (its ``problems`` attribute has them one by one).
    """
    return prepare(ref, overrides, seed=seed, steps=steps, until=until)


def from_dict(document: Mapping[str, Any], base_dir: str | Path = ".",
              overrides: Mapping[str, Any] | None = None) -> Scenario:
    """A validated scenario built from a dict shaped like the TOML file.

    ``base_dir`` is where relative paths in it (CSV profiles, network files)
    are resolved.
    """
    raw = apply_overrides(dict(document), overrides or {})
    return parse_scenario(raw, Path(base_dir) / "<dict>.toml")


@dataclass(frozen=True)
class Results:
    """The cases of one run: summaries and result tables as pandas objects.

    ``results["smart"]`` is a case's :class:`CaseResult` (``.summary`` dict,
    ``.out_dir``); iterating gives the case names.
    """

    cases: Mapping[str, CaseResult]
    out_dir: Path
    _order: tuple[str, ...] = field(default=(), repr=False)

    def __getitem__(self, name: str) -> CaseResult:
        return self.cases[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.cases)

    def __len__(self) -> int:
        return len(self.cases)

    def summary(self) -> pd.DataFrame:
        """One row per case, one column per summary figure (``docs/metrics.md``)."""
        rows = {name: {k: v for k, v in r.summary.items() if not isinstance(v, (dict, list))}
                for name, r in self.cases.items()}
        return pd.DataFrame.from_dict(rows, orient="index")

    def _case(self, case: str | None) -> CaseResult:
        if case is None:
            if len(self.cases) != 1:
                raise KeyError(f"name the case: one of {list(self.cases)}")
            return next(iter(self.cases.values()))
        return self.cases[case]

    def tables(self, case: str | None = None) -> list[str]:
        """Names of the recorded tables (``EV``, ``Bus``, ``Line``, ``Trafo``, ``Grid``, ...)."""
        return tables(self._case(case).out_dir)

    def table(self, name: str, case: str | None = None) -> pd.DataFrame:
        """One recorded table, long format: ``time_s``, ``timestamp``, ``entity``, attributes."""
        return read_table(self._case(case).out_dir, name)

    def pivot(self, table: str, attr: str, case: str | None = None) -> pd.DataFrame:
        """One attribute as a time (``time_s``) x entity frame."""
        return pivot(self._case(case).out_dir, table, attr)


def open_results(out_dir: str | Path) -> Results:
    """The results of an earlier run from its output folder (one case, or one
    sub-folder per case); only completed cases (``COMPLETE`` marker) are read."""
    out_dir = Path(out_dir)
    dirs = [out_dir] if is_complete(out_dir) else sorted(d for d in out_dir.iterdir() if is_complete(d))
    cases = {}
    for d in dirs:
        summary = json.loads((d / "summary.json").read_text())
        name = json.loads((d / "metadata.json").read_text()).get("case", d.name)
        cases[name] = CaseResult(name, d, summary)
    return Results(cases, out_dir)


#: loguru's default stderr handler (id 0 at import; re-added under a new id after a run)
_DEFAULT_HANDLER = 0


@contextlib.contextmanager
def _quiet_logs(quiet: bool):
    """Hold back mosaik's INFO lines: replace loguru's *default* stderr handler by a
    WARNING one while the run goes. A loguru set up by the user is left alone."""
    global _DEFAULT_HANDLER
    from loguru import logger

    if not quiet:
        yield
        return
    try:
        logger.remove(_DEFAULT_HANDLER)  # gone if the user configured loguru
    except ValueError:
        yield
        return
    ours = logger.add(sys.stderr, level="WARNING", format="{level}: {message}")
    try:
        yield
    finally:
        logger.remove(ours)
        _DEFAULT_HANDLER = logger.add(sys.stderr)  # loguru's default again (DEBUG, default format)


def _run_blocking(scenario: Scenario, out: Path, cases, plots, jobs, progress, quiet) -> Results:
    with _quiet_logs(quiet):
        mode = progress if isinstance(progress, str) else ("auto" if progress else "off")
        done = run_scenario(scenario, out, only=list(cases) if cases else None, plots=plots,
                            echo=(lambda s: None) if quiet else print, jobs=jobs, progress=mode)
    return Results({r.name: r for r in done}, out)


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def run(scenario: Scenario | str | Path, out: str | Path | None = None, *, cases: Sequence[str] | None = None,
        plots: bool = False, jobs: int | None = 1, progress: bool | str = False,
        quiet: bool = True) -> Results:
    """Run a scenario's cases; returns their :class:`Results`.

    Parameters
    ----------
    scenario : Scenario, str or Path
        From :func:`load` / :func:`from_dict`, or anything :func:`load` accepts.
    out : path, optional
        Output folder (default ``out/<scenario name>``); one sub-folder per case
        when the scenario has several.
    cases : sequence of str, optional
        Run only these cases.
    plots : bool
        Write the PNG/SVG figures (``scenarios/plots.py``).
    jobs : int or None
        Cases run in parallel processes (None: one per CPU core).
    progress : bool or {"auto", "bar", "lines", "off"}
        Progress display per case (``scenarios/progress.py``); True = ``"auto"``.
    quiet : bool
        No summaries printed, mosaik's INFO lines held back.

    Raises
    ------
    RunFailed
        A case could not finish (its completed steps stay on disk).
    KeyError
        A name in ``cases`` is not a case of the scenario.
    """
    if not isinstance(scenario, Scenario):
        scenario = load(scenario)
    names = [c.name for c in scenario.cases]
    unknown = [c for c in cases or () if c not in names]
    if unknown:
        raise KeyError(f"unknown case(s) {unknown}; the scenario has {names}")
    out = Path(out) if out is not None else Path("out") / scenario.cases[0].scenario.name
    if problem := out_dir_problem(out):
        raise ScenarioError(str(scenario.source), [problem.replace("--out: ", "out: ", 1)])
    args = (scenario, out, cases, plots, jobs, progress, quiet)
    if not _in_event_loop():
        return _run_blocking(*args)
    # a loop is running in this thread (Jupyter, asyncio.run): mosaik's World
    # cannot start its own here, so the world runs in a thread of its own
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ev-grid-cosim") as pool:
        return pool.submit(_run_blocking, *args).result()


async def run_async(scenario: Scenario | str | Path, out: str | Path | None = None, **kwargs) -> Results:
    """:func:`run` for ``await`` in a running loop: the caller's loop stays free
    while the world runs in a worker thread."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, lambda: run(scenario, out, **kwargs))
