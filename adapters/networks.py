"""Grid networks from the outside world: pandapower builders, SimBench, JSON files.

A network is named by one string, the ``network`` field of a scenario:

``cigre_lv``
    CIGRE European LV benchmark (``pandapower.networks.create_cigre_network_lv``).
``cigre_mv``
    CIGRE European MV benchmark without DER
    (``pandapower.networks.create_cigre_network_mv(with_der=False)``).
``simbench:<code>``
    Any SimBench code, e.g. ``simbench:1-LV-rural1--0-sw``; loaded offline from the
    ``simbench`` package, with its load and generation profiles in ``net.profiles``.
``<path>.json``
    A pandapower network saved with ``pandapower.to_json``.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import pandapower as pp
import pandapower.networks as pn

BUILTIN_NETWORKS = ("cigre_lv", "cigre_mv")
SIMBENCH_PREFIX = "simbench:"


class UnknownNetworkError(ValueError):
    """The network name is neither a builder, a SimBench code nor a JSON file."""


def simbench_codes() -> tuple[str, ...]:
    """All SimBench codes the installed ``simbench`` package knows."""
    import simbench

    return tuple(simbench.collect_all_simbench_codes())


def check_network_name(name: str, base_dir: Path | None = None) -> str | None:
    """Return a problem description for ``name``, or None when it can be loaded.

    Cheap: does not build the network (used by scenario validation).
    """
    if name in BUILTIN_NETWORKS:
        return None
    if name.startswith(SIMBENCH_PREFIX):
        code = name[len(SIMBENCH_PREFIX):]
        if code in simbench_codes():
            return None
        return f"unknown SimBench code {code!r} (see simbench.collect_all_simbench_codes())"
    if name.endswith(".json"):
        path = Path(name) if base_dir is None else base_dir / name
        if path.is_file():
            return None
        return f"pandapower JSON file {str(path)!r} does not exist"
    return (
        f"unknown network {name!r}: allowed are {', '.join(BUILTIN_NETWORKS)}, "
        f"'{SIMBENCH_PREFIX}<code>' or a path ending in .json"
    )


@functools.lru_cache(maxsize=8)
def _load_cached(name: str, base_dir: str | None) -> pp.pandapowerNet:
    if name == "cigre_lv":
        return pn.create_cigre_network_lv()
    if name == "cigre_mv":
        return pn.create_cigre_network_mv(with_der=False)
    if name.startswith(SIMBENCH_PREFIX):
        import simbench

        return simbench.get_simbench_net(name[len(SIMBENCH_PREFIX):])
    if name.endswith(".json"):
        path = Path(name) if base_dir is None else Path(base_dir) / name
        return pp.from_json(str(path))
    raise UnknownNetworkError(check_network_name(name))


def load_network(name: str, base_dir: Path | None = None) -> pp.pandapowerNet:
    """Build the pandapower network called ``name`` (see module docstring).

    Returns a fresh deep copy each call, so callers may modify it freely; the
    (slow, ~6 s for SimBench) construction itself is cached per process.
    """
    problem = check_network_name(name, base_dir)
    if problem is not None:
        raise UnknownNetworkError(problem)
    return copy.deepcopy(_load_cached(name, None if base_dir is None else str(base_dir)))
