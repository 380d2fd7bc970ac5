"""Step-wise result store: one Parquet file per step and table, flushed as the run goes.

A run directory holds::

    metadata.json              written before the first step (scenario, seed, versions)
    results/<table>/step-<t>.parquet
                               one file per recorded step and table, complete on disk
                               as soon as the step is written
    COMPLETE                   written by :meth:`StepWriter.finish` at the very end

Parquet files are only readable once their footer is written, so appending row
groups to one open file would lose everything when a run is killed. One small file
per step keeps every completed step readable; :func:`read_table` joins them back.
Tables are long-format: ``time_s``, ``entity`` and one column per attribute.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

COMPLETE_MARKER = "COMPLETE"
RESULTS_DIR = "results"


class StepWriter:
    """Append recorded values step by step.

    Parameters
    ----------
    out_dir : Path
        Run directory; created if missing. Existing results inside are replaced.
    """

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        self.results_dir = self.out_dir / RESULTS_DIR
        self.results_dir.mkdir(parents=True, exist_ok=True)
        for old in self.results_dir.glob("*/step-*.parquet"):
            old.unlink()
        marker = self.out_dir / COMPLETE_MARKER
        if marker.exists():
            marker.unlink()

    def write_metadata(self, metadata: Mapping) -> None:
        """Write ``metadata.json`` (scenario, seed, package versions)."""
        _atomic_write(self.out_dir / "metadata.json", json.dumps(metadata, indent=2, default=str))

    def append(self, time_s: int, table: str, rows: Mapping[str, Mapping[str, object]]) -> None:
        """Write one step of one table.

        Parameters
        ----------
        time_s : int
            Simulation time of the step [s from start].
        table : str
            Table name (entity type, e.g. ``"EV"``).
        rows : mapping
            entity id -> {attribute: scalar value}. Missing attributes become nulls;
            non-finite floats are stored as nulls (never as stale numbers).
        """
        if not rows:
            return
        entities = sorted(rows)
        attrs = sorted({a for r in rows.values() for a in r})
        columns: dict[str, list] = {"time_s": [int(time_s)] * len(entities), "entity": entities}
        for attr in attrs:
            columns[attr] = [_clean(rows[e].get(attr)) for e in entities]
        tdir = self.results_dir / table
        tdir.mkdir(exist_ok=True)
        path = tdir / f"step-{int(time_s):012d}.parquet"
        tmp = path.with_suffix(".tmp")
        pq.write_table(pa.table(columns), tmp)
        os.replace(tmp, path)

    def finish(self, summary: Mapping | None = None) -> None:
        """Mark the run complete (and store its summary with the marker)."""
        _atomic_write(self.out_dir / COMPLETE_MARKER, json.dumps(summary or {}, default=str))


def _clean(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, dict, tuple)):
        return json.dumps(value)
    return value


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def tables(out_dir: Path) -> list[str]:
    """Names of the tables recorded in a run directory."""
    rdir = Path(out_dir) / RESULTS_DIR
    return sorted(p.name for p in rdir.iterdir() if p.is_dir()) if rdir.exists() else []


def read_table(out_dir: Path, table: str) -> pd.DataFrame:
    """All recorded steps of one table as a long DataFrame (sorted by time, entity).

    Works on runs that died mid-way: every completed step is there.
    """
    files = sorted((Path(out_dir) / RESULTS_DIR / table).glob("step-*.parquet"))
    if not files:
        raise FileNotFoundError(f"no recorded steps for table {table!r} in {out_dir}")
    frames = [pq.read_table(f).to_pandas() for f in files]
    return pd.concat(frames, ignore_index=True).sort_values(["time_s", "entity"], kind="stable")


def pivot(out_dir: Path, table: str, attr: str) -> pd.DataFrame:
    """One attribute of one table as a time x entity frame."""
    df = read_table(out_dir, table)
    return df.pivot(index="time_s", columns="entity", values=attr)


def is_complete(out_dir: Path) -> bool:
    """True if the run wrote its completion marker."""
    return (Path(out_dir) / COMPLETE_MARKER).exists()
