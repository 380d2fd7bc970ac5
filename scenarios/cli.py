"""The command line: ``ev-grid-cosim`` (console script) and ``python run_cosim.py``.

Exit status (every path ends in one of these):

=====  ==================================================================
0      every case finished and wrote its completion marker
1      a case could not finish (one paragraph printed: component, step, reason;
       its folder gets a ``FAILED`` marker and ``summary.json`` with the error
       and the figures of the completed steps, which stay readable), or an
       internal error (rerun with ``--debug`` for the traceback)
2      usage error: unknown option, invalid scenario file or ``--set`` value,
       ``--steps``/``--until`` out of range, unknown ``--cases`` name, an
       ``--out`` folder that cannot be written (every problem is listed,
       nothing is started)
130    interrupted (Ctrl-C); completed steps stay on disk, ``FAILED`` marker and
       ``summary.json`` (``"status": "interrupted"``) as for 1
=====  ==================================================================
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

EXAMPLES = """\
examples:
  ev-grid-cosim                                  the default study, output in out/default
  ev-grid-cosim --list                           shipped scenarios with a description
  ev-grid-cosim seed000_mv --cases smart v2g     two cases of a shipped study
  ev-grid-cosim seed001_lv --steps 4 --jobs 2    first 4 steps, two cases at a time
  ev-grid-cosim --seed 5 --set fleet.soc_target=0.9 --set scheduler.strategy=smart
  ev-grid-cosim my_study.toml --until 20:00 --out out/mine --no-plots

--set takes section.key=value with the value written as in TOML (0.9, true,
"text", {R1 = 3}, 2024-01-17T20:00:00; a bare word is text) and is validated
like the file; it applies to every case, also those that set the same field.
"""

EXIT_TEXT = """\
exit status:
  0    every case finished (COMPLETE marker written in its folder)
  1    a case could not finish (completed steps stay on disk, FAILED marker and
       summary.json with the error), or an internal error
  2    usage error, invalid scenario or --set value, unknown --cases name, unwritable --out
  130  interrupted with Ctrl-C (completed steps, FAILED marker and summary.json kept)
"""


def build_parser() -> argparse.ArgumentParser:
    from scenarios.provenance import version_text

    parser = argparse.ArgumentParser(
        description="Run an EV-charging co-simulation study (mosaik: pandapower grid, EV fleet, "
                    "PV, base load, scheduler, recorder) from a scenario TOML file.",
        epilog=EXAMPLES + "\n" + EXIT_TEXT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("scenario", nargs="?", default="default",
                        help="scenario TOML file, or the name of a shipped one (--list); default: default")
    parser.add_argument("--list", action="store_true", help="list the shipped scenarios and exit")
    parser.add_argument("--version", action="version", version=version_text())
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="output directory (default: out/<scenario file name>)")
    parser.add_argument("--cases", nargs="+", default=None, metavar="NAME",
                        help="run only these cases of the scenario")
    parser.add_argument("--seed", type=int, default=None, metavar="N",
                        help="random seed of the fleet sampling and forecasts (scenario.seed)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", dest="overrides",
                        help="override one scenario field (repeatable); validated like the file")
    short = parser.add_mutually_exclusive_group()
    short.add_argument("--steps", type=int, default=None, metavar="N",
                       help="run only the first N steps (scenario.end moves)")
    short.add_argument("--until", default=None, metavar="TIME",
                       help="end the run at this step boundary: 2024-01-17T20:00 or 20:00")
    parser.add_argument("--jobs", type=int, default=None, metavar="N",
                        help="cases run in parallel, or a sweep's LocalCluster workers (default: one per CPU core)")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="run a [sweep] on this existing Dask scheduler, e.g. tcp://10.0.0.5:8786 "
                             "(default: a LocalCluster on 127.0.0.1)")
    parser.add_argument("--no-plots", action="store_true", help="skip writing the plots")
    parser.add_argument("--check", action="store_true",
                        help="validate, then build every case's world (inputs, simulators started, "
                             "entities created and connected) without running a step; a [sweep] "
                             "checks its first point; nothing is written to --out")
    noise = parser.add_mutually_exclusive_group()
    noise.add_argument("-q", "--quiet", action="store_true",
                       help="print only warnings and errors (no progress, no summaries)")
    noise.add_argument("-v", "--verbose", action="count", default=0,
                       help="more log output: -v mosaik's INFO lines, -vv DEBUG")
    parser.add_argument("--debug", action="store_true",
                        help="full tracebacks on failures (and DEBUG logging)")
    return parser


def configure_logging(verbosity: int, quiet: bool = False) -> None:
    """loguru (mosaik's logger) to stderr: WARNING by default, ERROR when quiet,
    INFO with -v, DEBUG with -vv."""
    from loguru import logger

    level = "ERROR" if quiet else {0: "WARNING", 1: "INFO"}.get(verbosity, "DEBUG")
    logger.remove()
    logger.add(sys.stderr, level=level, format="{level}: {message}")


def list_scenarios() -> str:
    """The ``--list`` text: one line per shipped study."""
    from scenarios.overrides import shipped_scenarios

    rows = shipped_scenarios()
    width = max(len(name) for name, _, _ in rows)
    lines = ["shipped scenarios (run one with: ev-grid-cosim NAME):"]
    for name, description, n_cases in rows:
        cases = f"{n_cases} cases" if n_cases > 1 else "1 case"
        lines.append(f"  {name:{width}s}  {description} ({cases})")
    return "\n".join(lines)


def _failed_text(exc: BaseException, out: Path) -> str:
    """One paragraph for a run that failed: the case's own message (component,
    step, reason, what stays on disk; ``scenarios/failure.py``), or the reason and
    the output folder for a failure without a record."""
    text = str(exc)
    if getattr(exc, "out_dir", None) is None:
        text += f"; completed steps stay in {out} (no COMPLETE marker)"
    return f"run failed: {text} (rerun with --debug for the traceback)"


def _error(text: str) -> None:
    print(text, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (see the module docstring)."""
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on a usage error, 0 after --help/--version
    if args.list:
        print(list_scenarios())
        return EXIT_OK
    import signal
    import threading

    # mosaik catches a KeyboardInterrupt inside World.run and returns as if the run
    # had ended (it then fails as incomplete): remember the Ctrl-C to exit 130
    interrupted: list[bool] = []

    def on_sigint(signum, frame):
        interrupted.append(True)
        raise KeyboardInterrupt

    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_sigint) if in_main else None
    from scenarios.failure import RunInterrupted

    try:
        status = _run(args)
    except RunInterrupted as exc:  # a case left its FAILED marker and summary.json
        if args.debug:
            import traceback

            traceback.print_exc()
        _error(f"interrupted: {exc}")
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        status = EXIT_INTERRUPTED
        interrupted.append(True)
    except Exception as exc:  # noqa: BLE001 - a bug must still end with a message and status 1
        if args.debug:
            raise
        status = EXIT_FAILED
        if not interrupted:
            _error(f"internal error: {type(exc).__name__}: {exc}\n(rerun with --debug for the traceback)")
    finally:
        if in_main:
            signal.signal(signal.SIGINT, previous)
    return _interrupted() if interrupted else status


def _interrupted() -> int:
    _error("interrupted: completed steps stay in the output folder; every case that was running "
           "has a FAILED marker and summary.json with what it had done (no COMPLETE marker)")
    return EXIT_INTERRUPTED


def _run(args: argparse.Namespace) -> int:
    from scenarios.config import ScenarioError
    from scenarios.overrides import out_dir_problem, parse_assignment, prepare, resolve_scenario_path

    try:
        overrides = dict(parse_assignment(text) for text in args.overrides)
    except ValueError as exc:
        _error(str(exc))
        return EXIT_USAGE
    if args.jobs is not None and args.jobs < 1:
        _error(f"--jobs: must be >= 1, got {args.jobs}")
        return EXIT_USAGE
    try:
        scenario = prepare(args.scenario, overrides, seed=args.seed, steps=args.steps, until=args.until)
    except ScenarioError as exc:
        _error(str(exc))
        return EXIT_USAGE
    names = [c.name for c in scenario.cases]
    if args.cases:
        unknown = [c for c in args.cases if c not in names]
        if unknown:
            _error(f"--cases: unknown case(s) {', '.join(unknown)}; {scenario.source} has: {', '.join(names)}")
            return EXIT_USAGE
    configure_logging(args.verbose + (2 if args.debug else 0), args.quiet)

    from scenarios.runner import RunFailed, run_scenario

    out = args.out or Path("out") / resolve_scenario_path(args.scenario).stem
    problem = out_dir_problem(out)
    if problem:  # before anything starts (it would fail after the set-up)
        _error(problem)
        return EXIT_USAGE
    echo = (lambda s: None) if args.quiet else print
    if args.check:
        return _check(scenario, args.cases, echo)
    try:
        if scenario.sweep is not None:
            from scenarios.sweep import run_sweep

            result = run_sweep(scenario, out, scheduler=args.scheduler, workers=args.jobs,
                               plots=not args.no_plots, echo=echo, progress=not args.quiet)
            return EXIT_FAILED if result.n_failed else EXIT_OK
        run_scenario(scenario, out, only=args.cases, plots=not args.no_plots, echo=echo, jobs=args.jobs,
                     progress="off" if args.quiet else "auto")
    except RunFailed as exc:
        if args.debug:
            raise
        _error(_failed_text(exc, out))
        return EXIT_FAILED
    return EXIT_OK


def _check(scenario, only, echo) -> int:
    """``--check``: every case (a sweep's first point) set up in a scratch folder, not run."""
    import tempfile

    from scenarios.runner import RunFailed, run_case

    if scenario.sweep is not None:
        from scenarios.sweep import expand

        cases = [expand(scenario)[0].case]
    else:
        cases = [c for c in scenario.cases if not only or c.name in only]
    for case in cases:
        with tempfile.TemporaryDirectory(prefix="ev-grid-cosim-check-") as scratch:
            try:
                result = run_case(case, Path(scratch), plots=False, check=True)
            except RunFailed as exc:
                error = exc.error or {}
                where = error.get("component") or "set-up"
                call = f" ({error['call']} call)" if error.get("call") else ""
                _error(f"check failed: case {case.name!r}: set-up failed in {where}{call}: "
                       f"{error.get('reason', exc)}")
                return EXIT_FAILED
        echo(f"{case.name}: set up in {result.summary['setup_seconds']:.1f} s (not run)")
    echo(f"{scenario.source}: {len(cases)} case(s) set up, nothing run")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
