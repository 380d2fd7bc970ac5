"""Fuzzed scenario files through the command line's whole set-up (``--check``).

A document is a shipped scenario with one to three mutations: a key or table
deleted, a value of the wrong type, an out-of-range or huge number (NaN, inf,
1e300, negative), an odd string (empty, very long, unicode, a path, a NUL), an
unknown key or table, a table replaced by a scalar or a list. Each one is written
as TOML and given to ``ev-grid-cosim FILE --check`` (in this process: validation,
then every case's world built, not run). Outcomes (:func:`outcome`):

``ok``         the set-up succeeded (exit 0)
``usage``      a clean error: exit 2 with a message naming a field
``unnamed``    exit 2, but the message names no field
``late``       exit 1: validation passed, the set-up then failed (a validation hole)
``traceback``  an internal error (exit 1 "internal error", or an exception out of ``main``)
``hang``       no answer within the time limit (SIGALRM)

Used by ``tests/test_scenario_fuzz.py`` (a few examples) and
``bench/fuzz_scenarios.py`` (500 and a report).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import math
import re
import shutil
import signal
import tomllib
from pathlib import Path

from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]

#: Shipped scenarios mutated, each twice as often as the sweep (set-up 0.5-2 s each;
#: hosting_capacity's validation alone takes ~10 s; the SimBench ones ~20 s are left out).
BASES = (
    ROOT / "scenarios" / "default.toml",
    ROOT / "scenarios" / "seed001_lv.toml",
    ROOT / "scenarios" / "seed003_flex.toml",
    ROOT / "scenarios" / "seed003_realtime.toml",
    ROOT / "examples" / "home_battery" / "scenario.toml",
) * 2 + (ROOT / "scenarios" / "hosting_capacity.toml",)

#: A message "names a field" if it has a dotted name (``fleet.counts``), a table
#: (``[grid]``), a ``--`` option or the word scenario with a problem list.
FIELD = re.compile(r"[A-Za-z_][\w-]*\.[\w<>'\"-]+|\[[\w.]+\]|--\w+|problem\(s\) in the scenario")

ODD_STRINGS = ("", " ", "ZZZ", "nan", "-1", "1e400", "../../../etc/passwd", "/dev/null", "C:\\x",
               "Mars/Olympus", "é字🚗", "a" * 5000, "\u0000", "line\nbreak", "R1 ", "*", "%(addr)s",
               "2024-13-45T25:61:00", "true", "{R1 = 3}")
ODD_NUMBERS = (0, -1, 1, 2, -1e9, 1e300, 1e17, 2 ** 63 - 1, -2 ** 63, 0.5, 1e-300, math.nan, math.inf,
               -math.inf, 100_001, 527_041, 3.7, 86_400 * 400)


def _characters():
    return st.characters(blacklist_categories=("Cs",))


def scalar_values():
    """Any TOML scalar, odd ones often."""
    return st.one_of(
        st.sampled_from(ODD_NUMBERS),
        st.sampled_from(ODD_STRINGS),
        st.integers(-(2 ** 63), 2 ** 63 - 1),
        st.floats(allow_nan=True, allow_infinity=True),
        st.booleans(),
        st.text(_characters(), max_size=12),
        st.datetimes(dt.datetime(1900, 1, 1), dt.datetime(2200, 1, 1)),
        st.dates(dt.date(1900, 1, 1), dt.date(2200, 1, 1)),
        st.times(),
    )


def values():
    return st.one_of(scalar_values(), st.lists(scalar_values(), max_size=3),
                     st.dictionaries(st.sampled_from(["R1", "x", "bus", "kwp", "name"]), scalar_values(),
                                     max_size=2))


def _paths(node, prefix: str = ""):
    """``(container, key, dotted name)`` of every value and table in a document."""
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in items:
        name = f"{prefix}.{key}" if prefix else str(key)
        yield node, key, name
        if isinstance(value, (dict, list)):
            yield from _paths(value, name)


@st.composite
def mutated_documents(draw, bases=BASES):
    """``(base path, document dict, [what was changed])``."""
    base = draw(st.sampled_from(bases))
    raw = tomllib.loads(base.read_text())
    notes = []
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(raw))
        kind = draw(st.sampled_from(["delete", "type", "number", "string", "unknown_key", "unknown_table",
                                     "missing_table", "container", "scale"]))
        if kind == "unknown_table":
            name = draw(st.sampled_from(["nonsense", "grids", "Fleet", "simulators", "cases", "sweep"]))
            raw[name] = draw(st.one_of(st.dictionaries(st.sampled_from(["a", "starter", "x"]), scalar_values(),
                                                       max_size=2), scalar_values()))
            notes.append(f"{kind} {name}")
            continue
        if kind == "missing_table":
            tables = [k for k, v in raw.items() if isinstance(v, (dict, list))]
            if tables:
                name = draw(st.sampled_from(tables))
                del raw[name]
                notes.append(f"{kind} {name}")
            continue
        if not paths:
            continue
        parent, key, name = draw(st.sampled_from(paths))
        old = parent[key]
        if kind == "delete":
            new = None
        elif kind == "type":
            new = draw(values())
        elif kind == "number":
            new = draw(st.sampled_from(ODD_NUMBERS))
        elif kind == "string":
            new = draw(st.one_of(st.sampled_from(ODD_STRINGS), st.text(_characters(), max_size=30)))
        elif kind == "scale" and isinstance(old, (int, float)) and not isinstance(old, bool):
            factor = draw(st.sampled_from([-1, 0, 10, 1000, 1e6, 1e12]))
            new = type(old)(old * factor) if isinstance(old, float) or abs(old * factor) < 2 ** 63 else old
        elif kind == "container":
            new = draw(st.one_of(scalar_values(), st.just([]), st.just({}), st.just([old])))
        elif kind == "unknown_key" and isinstance(old, dict):
            extra = draw(st.sampled_from(["colour", "vm_min", "Network", "step", "units_kw", "x y"]))
            old[extra] = draw(values())
            notes.append(f"{kind} {name}.{extra}")
            continue
        else:
            new = draw(values())
        if new is None:
            if isinstance(parent, dict):
                del parent[key]
            else:
                parent.pop(key)
            notes.append(f"delete {name}")
        else:
            parent[key] = new
            notes.append(f"{kind} {name} = {_short(new)}")
    return base, raw, notes


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --------------------------------------------------------------------- TOML ---


def _string(text: str) -> str:
    out = json.dumps(text, ensure_ascii=False)
    return out.replace("\x7f", "\\u007f")


def _key(key) -> str:
    return _string(str(key))


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, (dt.datetime, dt.date, dt.time)):
        return v.isoformat()
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"no TOML for {type(v).__name__}")


def to_toml(raw: dict) -> str:
    """A document as TOML: top-level tables as ``[table]``, everything nested inline."""
    head = [f"{_key(k)} = {_value(v)}" for k, v in raw.items() if not isinstance(v, dict)]
    body = []
    for k, v in raw.items():
        if isinstance(v, dict):
            body.append(f"[{_key(k)}]")
            body += [f"{_key(k2)} = {_value(v2)}" for k2, v2 in v.items()]
    return "\n".join(head + body) + "\n"


# ------------------------------------------------------------------ outcome ---


class _Hang(Exception):
    pass


def _alarm(signum, frame):
    raise _Hang


def write_scenario(folder: Path, base: Path, raw: dict) -> Path:
    """The document as ``folder/<base name>``, with the files its base has next to it."""
    folder.mkdir(parents=True, exist_ok=True)
    for extra in base.parent.glob("*.py"):  # external simulators next to their scenario
        if extra.name != "__init__.py":
            shutil.copy(extra, folder / extra.name)
    path = folder / base.name
    path.write_text(to_toml(raw), encoding="utf-8")
    return path


def outcome(path: Path, out: Path, timeout_s: float = 120.0) -> tuple[str, str]:
    """``(outcome, stderr)`` of ``ev-grid-cosim PATH --check --out OUT -q`` run here."""
    from scenarios.cli import main

    err = io.StringIO()
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main([str(path), "--check", "--out", str(out), "-q"])
    except _Hang:
        return "hang", err.getvalue()
    except SystemExit as exc:  # argparse
        code = exc.code
    except BaseException as exc:  # noqa: BLE001 - anything out of main is a traceback
        return "traceback", f"{err.getvalue()}{type(exc).__name__}: {exc}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    text = err.getvalue()
    if code == 0:
        return "ok", text
    if code == 2:
        return ("usage" if FIELD.search(text) else "unnamed"), text
    if "internal error" in text or "Traceback" in text:
        return "traceback", text
    return "late", text
