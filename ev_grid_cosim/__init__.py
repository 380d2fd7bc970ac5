"""ev-grid-cosim's one import namespace: the Python API and aliases of its packages.

    import ev_grid_cosim as egc
    results = egc.run(egc.load("default", steps=8))

The project keeps its top-level layout (``simulators/``, ``scenarios/``,
``adapters/``); ``ev_grid_cosim.simulators.grid.model`` *is* the module
``simulators.grid.model`` (the same object, imported under both names), so code
can use the one namespace and never depend on the short top-level names.
See ``docs/python_api.md``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

from scenarios.api import (  # noqa: F401 - the public API
    CaseResult,
    Results,
    RunFailed,
    Scenario,
    ScenarioError,
    from_dict,
    load,
    open_results,
    run,
    run_async,
    shipped_scenarios,
)
from scenarios.provenance import project_version

__version__ = project_version()
__all__ = ["load", "from_dict", "run", "run_async", "open_results", "Results", "CaseResult",
           "Scenario", "ScenarioError", "RunFailed", "shipped_scenarios", "__version__"]

_ALIASED = ("simulators", "scenarios", "adapters")


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Import ``ev_grid_cosim.<package>...`` as the top-level ``<package>...`` module."""

    def find_spec(self, fullname, path=None, target=None):
        head, _, rest = fullname.partition(".")
        if head != __name__ or rest.split(".")[0] not in _ALIASED:
            return None
        return importlib.util.spec_from_loader(fullname, self, is_package=True)

    def create_module(self, spec):
        return importlib.import_module(spec.name.partition(".")[2])

    def exec_module(self, module):
        pass  # already executed under its own name


if not any(isinstance(f, _Alias) for f in sys.meta_path):
    sys.meta_path.insert(0, _Alias())  # before the path finders, which would load a second copy
