"""Command-line entry: run a scenario (default: ``scenarios/default.toml``).

    python run_cosim.py                          # the default study, output in out/default
    python run_cosim.py scenarios/X.toml --out DIR

Exit status: 0 when every case finished and wrote its completion marker; 1 when a
case could not finish (the reason is printed, completed steps stay on disk); 2 when
the scenario file is invalid (every problem is listed, nothing is started).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scenarios.config import ScenarioError, load_scenario
from scenarios.runner import RunFailed, run_scenario

DEFAULT_SCENARIO = Path(__file__).resolve().parent / "scenarios" / "default.toml"


def quiet_logging() -> None:
    """mosaik logs every simulator start at INFO; keep warnings and errors only."""
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING", format="{level}: {message}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", nargs="?", type=Path, default=DEFAULT_SCENARIO,
                        help="scenario TOML file (default: scenarios/default.toml)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output directory (default: out/<scenario name>)")
    parser.add_argument("--cases", nargs="*", default=None,
                        help="run only these cases of the scenario")
    parser.add_argument("--no-plots", action="store_true", help="skip writing PNG plots")
    parser.add_argument("--jobs", type=int, default=None,
                        help="cases run in parallel (default: one per CPU core)")
    args = parser.parse_args(argv)

    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as exc:
        print(exc, file=sys.stderr)
        return 2
    quiet_logging()
    out = args.out or Path("out") / args.scenario.stem
    try:
        run_scenario(scenario, out, only=args.cases, plots=not args.no_plots, echo=print, jobs=args.jobs)
    except RunFailed as exc:
        print(f"run failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
