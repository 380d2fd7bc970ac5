"""Fingerprints of the recorded tables of shipped scenarios (the world a scenario builds).

``python -m tests.support.world_hashes [scenario ...]`` writes ``tests/data/world_hashes.json`` from
the checked-out code; ``tests/test_world_identity.py`` compares a fresh run with it.
Wall-time columns (``pf_seconds``, ``solve_s``) are left out; every other column of
every table is hashed bit for bit (Arrow IPC of the table sorted by time and entity).
Hashes hold for one set of package versions (numpy, pandapower, HiGHS, ...): after an
upgrade, regenerate them on the commit before the change being checked.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sys
import tempfile
import tomllib
from pathlib import Path

import pyarrow as pa

ROOT = Path(__file__).resolve().parents[2]
HASHES = ROOT / "tests" / "data" / "world_hashes.json"
TIMING_COLUMNS = ("pf_seconds", "solve_s")
#: scenario file -> end of the window run (the default study's first four hours)
RUNS = {"scenarios/default.toml": dt.datetime(2024, 1, 17, 20, 0),
        # SimBench grid, loads on the net's profiles, DER simulator (first case: uncoordinated)
        "scenarios/simbench_lv.toml": dt.datetime(2016, 1, 14, 20, 0)}


def table_hashes(out_dir: Path) -> dict[str, str]:
    from simulators.recorder.model import read_table, tables

    out = {}
    for name in sorted(tables(out_dir)):
        df = read_table(out_dir, name)
        df = df[[c for c in df.columns if c not in TIMING_COLUMNS]]
        sink = pa.BufferOutputStream()
        table = pa.Table.from_pandas(df, preserve_index=False)
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        out[name] = hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()
    return out


def run_hashes(scenario: str, end: dt.datetime, out_dir: Path) -> dict[str, str]:
    from scenarios.config import parse_scenario
    from scenarios.runner import run_case

    path = ROOT / scenario
    raw = tomllib.loads(path.read_text())
    raw["scenario"]["end"] = end
    case = parse_scenario(raw, path).cases[0]
    run_case(case, out_dir, plots=False)
    return table_hashes(out_dir)


def main() -> int:
    only = sys.argv[1:]  # scenario files to (re)compute; default all
    data = json.loads(HASHES.read_text()) if HASHES.is_file() and only else {}
    with tempfile.TemporaryDirectory() as tmp:
        data.update({s: run_hashes(s, end, Path(tmp) / str(i)) for i, (s, end) in enumerate(RUNS.items())
                     if not only or s in only})
    HASHES.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
