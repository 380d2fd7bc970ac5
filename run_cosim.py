"""Command-line entry: run a scenario (default: ``scenarios/default.toml``).

    python run_cosim.py                          # the default study, output in out/default
    python run_cosim.py --help                   # every option, examples, exit codes
    python run_cosim.py scenarios/X.toml --out DIR

The same command is installed as ``ev-grid-cosim`` by ``pip install .``; both run
:func:`scenarios.cli.main` (exit codes are documented there and in ``--help``).
"""

from __future__ import annotations

import sys

from scenarios.cli import main

if __name__ == "__main__":
    sys.exit(main())
