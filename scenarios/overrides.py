"""Change fields of a scenario before it is validated: ``--set``, ``--seed``, ``--steps``.

Every change is applied to the parsed TOML document, and the document is then
validated by :func:`scenarios.config.parse_scenario` exactly like a file: a value
out of range or a misspelt field is reported with the file's other problems.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from scenarios.config import Scenario, ScenarioError, parse_scenario, read_toml

#: The shipped studies (``scenarios/*.toml``), addressable by their file stem.
SHIPPED_DIR = Path(__file__).resolve().parent


def parse_value(text: str) -> Any:
    """A ``--set`` value read as a TOML value (``3``, ``0.9``, ``true``,
    ``2024-01-17T20:00:00``, ``{R1 = 3}``, ``"text"``); anything that is not valid
    TOML is taken as a bare string (``smart``)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_assignment(text: str) -> tuple[str, Any]:
    """``"section.key=value"`` -> ``("section.key", value)``.

    Raises
    ------
    ValueError
        when there is no ``=`` or no dotted field name before it.
    """
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or "." not in key or not all(key.split(".")):
        raise ValueError(f"--set {text!r}: expected section.key=value, e.g. scheduler.strategy=smart")
    return key, parse_value(value.strip())


def apply_overrides(raw: dict, overrides: Mapping[str, Any]) -> dict:
    """A copy of the TOML document ``raw`` with ``{"section.key": value}`` set.

    ``fleet.counts.R1 = 3`` sets one entry of a table. A field that a ``[[cases]]``
    entry also sets is overridden in that case too: an override applies to every
    case, as a user expects of a command-line setting.
    """
    import copy

    out = copy.deepcopy(raw)
    for dotted, value in overrides.items():
        path = dotted.split(".")
        targets = [out]
        if path[0] in ("scheduler", "fleet", "grid"):
            targets += [c for c in out.get("cases", []) if isinstance(c, dict) and _has(c, path)]
        for target in targets:
            node = target
            for part in path[:-1]:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    child = node[part] = {}
                node = child
            node[path[-1]] = value
    return out


def _has(table: dict, path: list[str]) -> bool:
    node: Any = table
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def resolve_scenario_path(ref: str | Path) -> Path:
    """A scenario file: ``ref`` as a path, else the shipped study of that name
    (``seed000_mv`` is ``scenarios/seed000_mv.toml``)."""
    path = Path(ref)
    if path.exists() or path.suffix == ".toml":
        return path
    shipped = SHIPPED_DIR / f"{ref}.toml"
    return shipped if shipped.exists() else path


def read_document(path: Path) -> dict:
    """The parsed TOML of a scenario file (problems raised as :class:`ScenarioError`)."""
    return read_toml(path, not_found=" (shipped scenarios: --list)")


def out_dir_problem(out: Path) -> str | None:
    """What keeps ``out`` from being the output folder (None when it can be one):
    an existing file, a file on the way, or a place where no file can be created
    (tried, not guessed from permission bits: root and read-only mounts differ)."""
    import tempfile

    out = Path(out)
    if out.exists() and not out.is_dir():
        return f"--out: {out} exists and is not a folder"
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"--out: {out} cannot be created: {parent} is a file, not a folder"
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as exc:
        return f"--out: {out} is not writable: cannot create a file in {parent} ({exc.strerror or exc})"
    return None


def shortened_end(scenario: Scenario, steps: int | None = None,
                  until: str | dt.datetime | None = None) -> dt.datetime:
    """The ``scenario.end`` that keeps only the first ``steps`` steps, or ends at ``until``.

    ``until`` is a datetime, an ISO text (``2024-01-17T20:00``) or a clock time
    (``20:00``: its first occurrence after the start). Either must fall on a step
    boundary inside the original horizon.

    Raises
    ------
    ScenarioError
        naming the option and its allowed range.
    """
    meta = scenario.cases[0].scenario
    if steps is not None:
        if not 1 <= steps <= meta.n_steps:
            raise ScenarioError(str(scenario.source), [f"--steps: must be in [1, {meta.n_steps}], got {steps}"])
        return meta.start + dt.timedelta(seconds=steps * meta.step_s)
    if isinstance(until, str):
        until = _parse_until(until, meta.start, str(scenario.source))
    if until is None:
        raise TypeError("shortened_end needs steps or until")
    horizon_s = (until - meta.start).total_seconds()
    if not 0 < horizon_s <= meta.horizon_s or horizon_s % meta.step_s:
        raise ScenarioError(str(scenario.source), [
            f"--until: must be a step boundary ({meta.step_s} s steps) in ({meta.start}, {meta.end}], got {until}"])
    return until


def _parse_until(text: str, start: dt.datetime, source: str) -> dt.datetime:
    try:
        if "T" in text or "-" in text:
            return dt.datetime.fromisoformat(text)
        clock = dt.time.fromisoformat(text)
    except ValueError:
        raise ScenarioError(source, [f"--until: expected 2024-01-17T20:00 or 20:00, got {text!r}"]) from None
    until = dt.datetime.combine(start.date(), clock)
    return until if until > start else until + dt.timedelta(days=1)


def prepare(ref: str | Path, overrides: Mapping[str, Any] | None = None, seed: int | None = None,
            steps: int | None = None, until: str | dt.datetime | None = None) -> Scenario:
    """Load a scenario with command-line style changes, validated like the file.

    Raises
    ------
    ScenarioError
        listing every problem (of the file and of the changes).
    """
    path = resolve_scenario_path(ref)
    raw = read_document(path)
    changes = dict(overrides or {})
    if seed is not None:
        changes["scenario.seed"] = seed
    scenario = parse_scenario(apply_overrides(raw, changes), path)
    if steps is None and until is None:
        return scenario
    changes["scenario.end"] = shortened_end(scenario, steps, until)
    return parse_scenario(apply_overrides(raw, changes), path)


def shipped_scenarios() -> list[tuple[str, str, int]]:
    """``(name, description, number of cases)`` of every shipped study."""
    out = []
    for path in sorted(SHIPPED_DIR.glob("*.toml")):
        try:
            raw = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError:
            continue
        meta = raw.get("scenario", {})
        cases = raw.get("cases", [{}])
        out.append((path.stem, str(meta.get("description", "")), len(cases) if isinstance(cases, list) else 1))
    return out
